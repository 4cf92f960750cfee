// Package controller tests legate controller end to end: objects from a
// manifests folder or a real kube-apiserver, the xDS it serves, and real
// proxies (Legate's, and grpc-go's xDS client) that follow it.
package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/legateproxy/legate/internal/certgen"
	"github.com/legateproxy/legate/internal/controller"
	"github.com/legateproxy/legate/internal/controller/contourconfig"
	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/controller/status"
	"github.com/legateproxy/legate/internal/controller/xdsgen"
	"github.com/legateproxy/legate/internal/testutil"
	xdsserver "github.com/legateproxy/legate/internal/xds/server"
)

// cp is a controller running in the test process.
type cp struct {
	c         *controller.Controller
	xds       *xdsserver.Server
	xdsAddr   string
	httpAddr  string
	httpPort  int
	httpsPort int
	store     *source.Store
	reg       *prometheus.Registry
	// tls, when set, is the certificate set xDS is served with (mTLS).
	tls *certgen.Set
	dir string // where tls's files are
}

type cpOptions struct {
	model  model.Options
	status *status.Writer
	listen string // address the proxies' listeners bind (default 127.0.0.1)
	// isLeader gates status writes (leader election); nil writes always.
	isLeader func() bool
	// mtls serves xDS over TLS with client authentication, with a fresh
	// certificate set (as `legate controller` does by default).
	mtls bool
	// sidecar configures mesh sidecars' resources (sidecar_test.go).
	sidecar xdsgen.SidecarOptions
	// contour is Contour's configuration file (contourconfig_test.go),
	// applied as legate controller --config-path does (default: Contour's
	// defaults, as without the flag); accessLog, if set, is the access
	// log file of both listeners (default /dev/stdout).
	contour   *contourconfig.Config
	accessLog string
}

func freePort(t testing.TB) int { return testutil.FreePort(t) }

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startCP wires store → controller → xDS server as `legate controller` does.
func startCP(t testing.TB, st *source.Store, o cpOptions) *cp {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if o.listen == "" {
		o.listen = "127.0.0.1"
	}
	reg := prometheus.NewRegistry()
	log := testLogger(t)
	x := &cp{store: st, httpPort: freePort(t), httpsPort: freePort(t), reg: reg}
	x.xds = xdsserver.New(log, xdsserver.NewMetrics(reg))
	xo := xdsgen.Options{HTTPAddress: o.listen, HTTPPort: uint32(x.httpPort), HTTPSPort: uint32(x.httpsPort)}
	if o.contour == nil {
		o.contour = contourconfig.Default() // as legate controller without --config-path
	}
	o.model.Config = o.contour.Model()
	if ref := o.contour.GatewayRef(); ref != nil {
		o.model.Gateway.GatewayRef = ref
	}
	o.contour.ApplyXDS(&xo)
	xo.AccessLog.HTTPPath, xo.AccessLog.HTTPSPath = o.accessLog, o.accessLog
	x.c = controller.New(st, x.xds, controller.Options{
		Model: o.model, Status: o.status, IsLeader: o.isLeader, Log: log, Registry: reg, Sidecar: o.sidecar, XDS: xo,
	})
	xl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	x.xdsAddr, x.httpAddr = xl.Addr().String(), hl.Addr().String()
	if o.mtls {
		set, err := certgen.Generate(certgen.Options{})
		if err != nil {
			t.Fatal(err)
		}
		x.tls, x.dir = set, t.TempDir()
		if err := set.Write(x.dir); err != nil {
			t.Fatal(err)
		}
		files := xdsserver.TLSFiles{CA: filepath.Join(x.dir, certgen.CAFile), Cert: filepath.Join(x.dir, certgen.ControllerCertFile), Key: filepath.Join(x.dir, certgen.ControllerKeyFile)}
		go x.xds.ServeTLS(ctx, xl, files)
	} else {
		go x.xds.Serve(ctx, xl)
	}
	go x.c.ServeHTTP(ctx, hl, reg)
	go x.c.Run(ctx)
	testutil.Eventually(t, 10*time.Second, x.c.Ready, "controller never built its first configuration")
	return x
}

// startProxy runs Legate's proxy on the bootstrap `legate bootstrap` prints.
func startProxy(t testing.TB, x *cp) *testutil.Proxy { return startProxyWith(t, x, false) }

// startProxyWith is startProxy with incremental (delta) xDS when delta is set.
func startProxyWith(t testing.TB, x *cp, delta bool) *testutil.Proxy {
	t.Helper()
	h, p, _ := net.SplitHostPort(x.xdsAddr)
	var port int
	fmt.Sscan(p, &port)
	o := controller.BootstrapOptions{XDSHost: h, XDSPort: port, AdminHost: "127.0.0.1", NodeID: "test-proxy", Cluster: "legate", Delta: delta}
	if x.tls != nil {
		o.TLS = &controller.BootstrapTLS{CAFile: filepath.Join(x.dir, certgen.CAFile), CertFile: filepath.Join(x.dir, certgen.ProxyCertFile),
			KeyFile: filepath.Join(x.dir, certgen.ProxyKeyFile), ServerName: certgen.ServerName}
	}
	y := controller.Bootstrap(o)
	return testutil.StartProxy(t, y, nil)
}

// writeFile writes a manifest atomically (rename), as a ConfigMap mount
// or an editor would.
func writeFile(t testing.TB, dir, name, content string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// startManifests serves the manifests of dir through a controller in
// manifests mode and a Legate proxy it feeds, and returns both with the
// proxy's HTTP base URL.
func startManifests(t *testing.T, dir string) (*cp, *testutil.Proxy, string) {
	t.Helper()
	st := source.NewStore()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := source.WatchManifests(ctx, dir, st, testLogger(t), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	x := startCP(t, st, cpOptions{})
	p := startProxy(t, x)
	return x, p, fmt.Sprintf("http://127.0.0.1:%d", x.httpPort)
}
