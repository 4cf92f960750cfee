// legate controller --manifests and legate bootstrap, with a proxy fed by
// them.

package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestControllerAndBootstrap runs the commands a user runs without
// Kubernetes: legate controller --manifests, legate bootstrap, legate
// validate on its output, and legate proxy on it, then a request through.
func TestControllerAndBootstrap(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("demo"))
	host, port := up.Host()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "app.yaml"), []byte(fmt.Sprintf(`
apiVersion: v1
kind: Service
metadata: {name: demo}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: demo-1, labels: {kubernetes.io/service-name: demo}}
addressType: IPv4
ports: [{name: http, port: %s}]
endpoints: [{addresses: [%q]}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: demo}
spec:
  virtualhost: {fqdn: demo.example.com}
  routes: [{services: [{name: demo, port: 80}]}]
`, port, host)), 0o644)

	xdsPort, httpPort, listenPort := freePort(t), freePort(t), freePort(t)
	ctl := exec.Command(legateBin, "controller", "--manifests", dir,
		"--xds-address", fmt.Sprintf("127.0.0.1:%d", xdsPort), "--http-address", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--envoy-listen-address", "127.0.0.1", "--http-port", fmt.Sprint(listenPort))
	// The state directory where the controller creates the xDS mTLS
	// certificates and where `legate bootstrap` finds them (the same
	// commands as the walk-through; only the directory is private).
	state := t.TempDir()
	env := append(os.Environ(), "LEGATE_STATE_DIR="+state)
	bootCmd := func(args ...string) *exec.Cmd {
		c := exec.Command(legateBin, append([]string{"bootstrap", "--xds-address", fmt.Sprintf("127.0.0.1:%d", xdsPort),
			"--admin-address", "127.0.0.1:0", "--node-id", "cli-test"}, args...)...)
		c.Env = env
		return c
	}
	if out, err := bootCmd().CombinedOutput(); err == nil || !strings.Contains(string(out), "no xDS client certificate") {
		t.Errorf("legate bootstrap before any certificate exists should say how to get one: %v\n%s", err, out)
	}
	ctl.Env = env
	ctl.Stderr = os.Stderr
	if err := ctl.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { ctl.Process.Signal(syscall.SIGTERM); ctl.Wait() }()

	boot := filepath.Join(t.TempDir(), "envoy.yaml")
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(state, "xds-certs", "proxy.key"))
		return err == nil
	}, "the controller did not create its xDS certificates in the state directory")
	if out, err := bootCmd(boot).CombinedOutput(); err != nil {
		t.Fatalf("legate bootstrap: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(boot); !strings.Contains(string(b), "UpstreamTlsContext") || !strings.Contains(string(b), "proxy.crt") {
		t.Errorf("the bootstrap does not use the proxy's xDS client certificate:\n%s", b)
	}
	if out, err := exec.Command(legateBin, "validate", boot).CombinedOutput(); err != nil {
		t.Fatalf("legate validate on the bootstrap: %v\n%s", err, out)
	}
	px := exec.Command(legateBin, "proxy", "-c", boot, "--drain-time-s", "1")
	px.Stderr = os.Stderr
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { px.Process.Signal(syscall.SIGTERM); px.Wait() }()

	testutil.Eventually(t, 15*time.Second, func() bool {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", listenPort), nil)
		req.Host = "demo.example.com"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200 && resp.Header.Get("x-upstream") == "demo"
	}, "request through controller-fed proxy never succeeded")
	for path, want := range map[string]string{"/readyz": "ok", "/metrics": "legate_xds_pushes_total", "/debug/model": `"Status": "valid"`} {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", httpPort, path))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), want) {
			t.Errorf("controller %s lacks %q:\n%.500s", path, want, b)
		}
	}
	if out, err := exec.Command(legateBin, "controller", "--manifests", dir, "--kubeconfig", "x").CombinedOutput(); err == nil || !strings.Contains(string(out), "exclusive") {
		t.Errorf("--manifests with --kubeconfig: %v %s", err, out)
	}
}
