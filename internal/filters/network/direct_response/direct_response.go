// Package direct_response is envoy.filters.network.direct_response: a
// terminal network filter that writes a fixed response (a DataSource) to
// every new connection and closes it after the write.
package direct_response

import (
	"os"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	drv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/direct_response/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/listener"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.filters.network.direct_response", Category: extension.NetworkFilter,
		Config: &drv3.Config{},
		Factory: listener.NetworkFilterFactory(func(_ *listener.Context, cfg proto.Message, _ listener.ChainOptions, path string) (listener.NetworkFilter, error) {
			return compile(cfg.(*drv3.Config), path)
		})})
}

// filter is a compiled direct_response.
type filter struct {
	response []byte
}

func compile(c *drv3.Config, path string) (*filter, error) {
	if err := config.CheckFields(c, path, "response"); err != nil {
		return nil, err
	}
	b, err := read(c.GetResponse(), config.Join(path, "response"))
	if err != nil {
		return nil, err
	}
	return &filter{response: b}, nil
}

// read reads a DataSource as Envoy's Config::DataSource::read with
// allow_empty: an unset source is an empty response.
func read(ds *corev3.DataSource, path string) ([]byte, error) {
	if ds == nil {
		return nil, nil
	}
	if err := config.CheckFields(ds, path, "filename", "inline_bytes", "inline_string", "environment_variable"); err != nil {
		return nil, err
	}
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return nil, config.Errorf(config.Join(path, "filename"), "reading the response: %v", err)
		}
		return b, nil
	case *corev3.DataSource_EnvironmentVariable:
		v, ok := os.LookupEnv(s.EnvironmentVariable)
		if !ok {
			return nil, config.Errorf(config.Join(path, "environment_variable"), "Environment variable doesn't exist: %s", s.EnvironmentVariable)
		}
		return []byte(v), nil
	}
	return nil, nil
}

// ServeConn writes the response, ends the write side (Envoy writes it with
// end_stream on a half-close connection) and returns: the listener closes
// the connection. What the client sends is never read.
func (f *filter) ServeConn(tc *listener.Conn) {
	if len(f.response) > 0 {
		if _, err := tc.Conn.Write(f.response); err != nil {
			return
		}
	}
	if cw, ok := tc.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}
