// legate controller --config-path: Contour's configuration file, with
// flags given on the command line winning over it, as in Contour.

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/controller"
)

func TestControllerConfigPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "contour.yaml")
	os.WriteFile(path, []byte(`
ingress-status-address: 192.0.2.1
tls:
  fallback-certificate: {name: fallback, namespace: projectcontour}
accesslog-format: json
disablePermitInsecure: true
timeouts: {request-timeout: 30s}
`), 0o644)
	for _, tc := range []struct {
		name       string
		args       []string
		status     string
		fallback   string
		format     string
		wantErr    string
		accessLogs string
	}{
		{name: "file values", args: []string{"--config-path", path}, status: "192.0.2.1", fallback: "projectcontour/fallback", format: "json", accessLogs: "/dev/stdout"},
		{name: "flags win", args: []string{"--config-path", path, "--ingress-status-address", "198.51.100.1", "--accesslog-format", "envoy", "--envoy-http-access-log", "/tmp/h.log"},
			status: "198.51.100.1", fallback: "projectcontour/fallback", format: "envoy", accessLogs: "/tmp/h.log"},
		{name: "bad flag value", args: []string{"--config-path", path, "--accesslog-format", "text"}, wantErr: `--accesslog-format: accesslog-format "text": use envoy or json`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, f := newControllerFlags()
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if err := f.loadConfigFile(fs); err != nil {
				t.Fatal(err)
			}
			var opt controller.Options
			err := f.contourSettings(&opt)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.statusAddress != tc.status || f.fallbackCert != tc.fallback || opt.XDS.AccessLog.Format != tc.format || opt.XDS.AccessLog.HTTPPath != tc.accessLogs {
				t.Errorf("status %q fallback %q format %q log %q", f.statusAddress, f.fallbackCert, opt.XDS.AccessLog.Format, opt.XDS.AccessLog.HTTPPath)
			}
			if !opt.Model.Config.DisablePermitInsecure || opt.XDS.Timeouts.Request == nil || opt.XDS.Timeouts.Request.Seconds() != 30 {
				t.Errorf("model %+v timeouts %+v", opt.Model.Config, opt.XDS.Timeouts)
			}
		})
	}

	t.Run("refused key", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "contour.yaml")
		os.WriteFile(bad, []byte("globalExtAuth: {extensionRef: {name: authz, namespace: projectcontour}}\n"), 0o644)
		fs, f := newControllerFlags()
		fs.Parse([]string{"--config-path", bad})
		if err := f.loadConfigFile(fs); err == nil || !strings.Contains(err.Error(), "globalExtAuth: not implemented by Legate") {
			t.Errorf("error %v", err)
		}
	})

	t.Run("no file: Contour's defaults", func(t *testing.T) {
		fs, f := newControllerFlags()
		fs.Parse(nil)
		var opt controller.Options
		if err := f.contourSettings(&opt); err != nil {
			t.Fatal(err)
		}
		if opt.XDS.Timeouts.ConnectionIdle == nil || opt.XDS.Timeouts.ConnectionIdle.Seconds() != 60 || opt.XDS.AccessLog.HTTPSPath != "/dev/stdout" || opt.Model.Config.EnableExternalNameService {
			t.Errorf("defaults: %+v %+v", opt.XDS, opt.Model.Config)
		}
	})
}
