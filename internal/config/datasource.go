package config

import (
	"os"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// ReadDataSource reads an envoy.config.core.v3.DataSource (inline string
// or bytes, a file, an environment variable) at path; file is the file's
// name when it came from one (for watching). An empty source is an error.
func ReadDataSource(ds *corev3.DataSource, path string) (data []byte, file string, err error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), "", nil
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, "", nil
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return nil, "", Errorf(Join(path, "filename"), "read %s: %v", s.Filename, err)
		}
		return b, s.Filename, nil
	case *corev3.DataSource_EnvironmentVariable:
		v, ok := os.LookupEnv(s.EnvironmentVariable)
		if !ok {
			return nil, "", Errorf(Join(path, "environment_variable"), "environment variable %s is not set", s.EnvironmentVariable)
		}
		return []byte(v), "", nil
	}
	return nil, "", Errorf(path, "empty data source")
}
