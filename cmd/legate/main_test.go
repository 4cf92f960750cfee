package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

var legateBin string

// TestMain builds the legate binary once for the command-line tests.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "legate-bin")
	if err != nil {
		panic(err)
	}
	legateBin = filepath.Join(dir, "legate")
	out, err := exec.Command("go", "build", "-race", "-o", legateBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build legate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateExitCodes(t *testing.T) {
	good := writeFile(t, `static_resources: {clusters: [{name: a, type: STATIC, load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}}]}`)
	bad := writeFile(t, `static_resources: {clusters: [{name: a, type: STATIC, outlier_detectionn: {}}]}`)
	cases := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"proxy", "--mode", "validate", "-c", good}, 0, "configuration '" + good + "' OK", ""},
		{[]string{"proxy", "--mode", "validate", "-c", bad}, 1, "", `static_resources.clusters[0].outlier_detectionn (line 1): unknown field "outlier_detectionn"`},
		{[]string{"validate", good, bad}, 1, good + ": OK", bad + ": error:"},
		{[]string{"version"}, 0, "legate ", ""},
	}
	for _, tc := range cases {
		cmd := exec.Command(legateBin, tc.args...)
		var so, se strings.Builder
		cmd.Stdout, cmd.Stderr = &so, &se
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code || !strings.Contains(so.String(), tc.stdout) || !strings.Contains(se.String(), tc.stderr) {
			t.Errorf("legate %v: exit %d (want %d)\nstdout: %s\nstderr: %s", tc.args, code, tc.code, so.String(), se.String())
		}
	}
}

func TestConfigUpgradePrintsValidV3(t *testing.T) {
	seed := filepath.Join(testutil.SharedDir(t), "conformance", "seed-configs", "seed001__envoy-v2-nginx-comparison.yaml")
	out, err := exec.Command(legateBin, "config", "upgrade", seed).Output()
	if err != nil {
		t.Fatalf("config upgrade: %v", err)
	}
	s := string(out)
	for _, want := range []string{"typed_config:", "'@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", "load_assignment:"} {
		if !strings.Contains(s, want) {
			t.Errorf("upgraded config lacks %q:\n%s", want, s)
		}
	}
	if regexp.MustCompile(`(?m)^\s+(hosts|config):`).MatchString(s) {
		t.Errorf("upgraded config still has v2 fields:\n%s", s)
	}
	// The printed config validates without any upgrade warning.
	p := writeFile(t, s)
	cmd := exec.Command(legateBin, "validate", p)
	var se strings.Builder
	cmd.Stderr = &se
	if err := cmd.Run(); err != nil || strings.Contains(se.String(), "warning") {
		t.Fatalf("upgraded config: %v\n%s", err, se.String())
	}
}

// TestSIGTERMDrains starts the binary, holds a slow request in flight,
// sends SIGTERM and checks that the request completes, new connections are
// refused, and the process exits 0.
func TestSIGTERMDrains(t *testing.T) {
	release := make(chan struct{})
	u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		w.Write([]byte("done"))
	}))
	host, port := u.Host()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	lh, lp, _ := net.SplitHostPort(addr)
	cfgPath := writeFile(t, fmt.Sprintf(`
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: %s, port_value: %s}}
    filter_chains: [{filters: [{name: envoy.filters.network.http_connection_manager, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s, route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: u}}]}]}, http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]}}]}]
  clusters: [{name: u, type: STATIC, load_assignment: {cluster_name: u, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}}]
`, lh, lp, host, port))
	cmd := exec.Command(legateBin, "proxy", "-c", cfgPath, "--drain-time-s", "10")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs <- sc.Text()
		}
		close(logs)
	}()
	testutil.Eventually(t, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "proxy did not start")
	result := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err != nil {
			result <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		result <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	time.Sleep(200 * time.Millisecond) // the request is now waiting on the upstream
	cmd.Process.Signal(syscall.SIGTERM)
	testutil.Eventually(t, 5*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, "listener still accepting after SIGTERM")
	close(release)
	if got := <-result; got != "200 done" {
		t.Fatalf("in-flight request during drain: %s", got)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatal("proxy did not exit after draining")
	}
	var all []string
	for l := range logs {
		all = append(all, l)
	}
	if !regexp.MustCompile(`caught signal; draining`).MatchString(strings.Join(all, "\n")) {
		t.Errorf("no drain log line:\n%s", strings.Join(all, "\n"))
	}
}

func freePort(t *testing.T) int { return testutil.FreePort(t) }

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
