package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/server"
)

// quiet is a logger that writes nothing.
func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The configurations benchrun writes are what each proxy accepts: Legate
// compiles its bootstrap (an ordinary Envoy config, TLS contexts with the
// generated certificate included), `nginx -t` and `haproxy -c` check
// theirs, for every variant.
func TestConfigs(t *testing.T) {
	dir := t.TempDir()
	certs, err := makeCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{H1: 18101, H2: 18102, TLS: 18103, TLS13: 18104, TLS12: 18105, Admin: 18106, dir: dir, upstream: 18100,
		accessLog: filepath.Join(dir, "access.log"), certs: certs}
	for _, v := range []variant{{Workers: 1}, {Log: true, Workers: 1}, {Workers: 2}} {
		data := map[string]any{"H1": p.H1, "H2": p.H2, "TLS": p.tlsListeners(), "Cert": certs.Cert, "Key": certs.Key, "PEM": certs.PEM,
			"Upstream": p.upstream, "Log": v.Log, "AccessLog": p.accessLog, "Dir": dir, "Workers": v.Workers, "Admin": p.Admin,
			"Listeners": append([]tlsListener{{Port: p.H1}, {Port: p.H2}}, p.tlsListeners()...)}
		vname := fmt.Sprintf("log=%v,workers=%d", v.Log, v.Workers)
		t.Run("legate/"+vname, func(t *testing.T) {
			cfg := filepath.Join(dir, "legate.yaml")
			if err := render(cfg, legateConf, data); err != nil {
				t.Fatal(err)
			}
			srv, err := server.Load(server.Options{ConfigPath: cfg, Log: quiet(), LogLevel: new(slog.LevelVar)})
			if err != nil {
				b, _ := os.ReadFile(cfg)
				t.Fatalf("%+v: %v\n%s", v, err, b)
			}
			defer srv.Shutdown(context.Background())
			if n := len(srv.Bootstrap.GetStaticResources().GetListeners()); n != 5 {
				t.Errorf("%+v: %d listeners, want 5", v, n)
			}
		})
		for _, tc := range []struct{ name, tmpl, file string }{
			{"nginx", nginxConf, "nginx.conf"},
			{"haproxy", haproxyConf, "haproxy.cfg"},
		} {
			t.Run(tc.name+"/"+vname, func(t *testing.T) {
				bin, err := exec.LookPath(tc.name)
				if err != nil {
					for _, d := range []string{"/usr/sbin", "/sbin"} {
						if _, e := os.Stat(filepath.Join(d, tc.name)); e == nil {
							bin, err = filepath.Join(d, tc.name), nil
						}
					}
				}
				if err != nil {
					t.Skipf("%s is not installed (bench/run.sh installs it)", tc.name)
				}
				cfg := filepath.Join(dir, tc.file)
				if err := render(cfg, tc.tmpl, data); err != nil {
					t.Fatal(err)
				}
				args := []string{"-c", "-f", cfg}
				if tc.name == "nginx" {
					args = []string{"-t", "-q", "-c", cfg, "-e", filepath.Join(dir, "nginx-error.log")}
				}
				if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
					b, _ := os.ReadFile(cfg)
					t.Errorf("%+v: %s %v: %v\n%s\n%s", v, tc.name, args, err, out, b)
				}
			})
		}
	}
}

// The start-up measurement serves the quickstart's own YAML with only its
// addresses changed: everything on 127.0.0.1, on the given ports, and the
// result loads.
func TestQuickstartConfig(t *testing.T) {
	cfg, changes, err := quickstartConfig(18201, 18202, 18200)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 4 {
		t.Errorf("changes: %q", changes)
	}
	for _, want := range []string{"port_value: 18201 }", "port_value: 18202 }", "port_value: 18200 }"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("no %q in\n%s", want, cfg)
		}
	}
	for _, gone := range []string{"0.0.0.0", "9901", "10000", "18081", "18082"} {
		if strings.Contains(strings.SplitN(cfg, "admin:", 2)[1], gone) {
			t.Errorf("%q is left in\n%s", gone, cfg)
		}
	}
	srv, err := server.Load(server.Options{ConfigYAML: cfg, Log: quiet(), LogLevel: new(slog.LevelVar)})
	if err != nil {
		t.Fatalf("%v\n%s", err, cfg)
	}
	srv.Shutdown(context.Background())
}
