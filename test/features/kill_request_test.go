// Fault injection by process kill: envoy.filters.http.kill_request.

package features_test

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/filters/http/kill_request"
	"github.com/legateproxy/legate/internal/testutil"
)

// The kill_request filter ends the process, so these tests run `legate
// proxy` as a child process (testutil.StartProxy runs the proxy inside the
// test binary), built once into the test's temporary directory.
func legateBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "legate")
	// -race shares the package cache with this test binary's build.
	cmd := exec.Command("go", "build", "-race", "-o", bin, "./cmd/legate")
	cmd.Dir = testutil.RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/legate: %v\n%s", err, out)
	}
	return bin
}

// childProxy is `legate proxy` running as a child process.
type childProxy struct {
	addr   string
	cmd    *exec.Cmd
	stderr *testutil.LogBuffer
	done   chan struct{}
	err    error // Wait's, once done is closed
}

// startChildProxy runs `legate proxy -c` on the bootstrap c (its listener
// "http" is moved to a free port) and waits until the listener accepts.
func startChildProxy(t *testing.T, bin string, c cfg) *childProxy {
	t.Helper()
	port := testutil.FreePort(t)
	y := strings.Replace(c.String(), "port_value: 0}}\n    filter_chains", fmt.Sprintf("port_value: %d}}\n    filter_chains", port), 1)
	if y == c.String() {
		t.Fatal("the bootstrap's listener address was not found")
	}
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	cp := &childProxy{addr: fmt.Sprintf("127.0.0.1:%d", port), stderr: &testutil.LogBuffer{}, done: make(chan struct{})}
	cp.cmd = exec.Command(bin, "proxy", "-c", path, "--drain-time-s", "0")
	cp.cmd.Stderr = cp.stderr
	if err := cp.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cp.err = cp.cmd.Wait(); close(cp.done) }()
	t.Cleanup(func() {
		select {
		case <-cp.done:
		default:
			cp.cmd.Process.Kill()
			<-cp.done
		}
		if t.Failed() {
			t.Logf("proxy stderr:\n%s", cp.stderr.String())
		}
	})
	c2 := testutil.Client()
	testutil.Eventually(t, 30*time.Second, func() bool {
		select {
		case <-cp.done:
			t.Fatalf("the proxy exited at start: %v\n%s", cp.err, cp.stderr.String())
		default:
		}
		resp, err := c2.Get("http://" + cp.addr + "/ready-probe")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	}, "the child proxy's listener never answered")
	return cp
}

// exited waits for the process to end and returns its exit code (-1 while
// it still runs after the timeout).
func (cp *childProxy) exited(timeout time.Duration) int {
	select {
	case <-cp.done:
		var ee *exec.ExitError
		if errors.As(cp.err, &ee) {
			return ee.ExitCode()
		}
		return 0
	case <-time.After(timeout):
		return -1
	}
}

// TestKillRequest: envoy.filters.http.kill_request, on `legate proxy`
// child processes.
func TestKillRequest(t *testing.T) {
	bin := legateBinary(t)
	t.Run("request", func(t *testing.T) { testKillOnRequest(t, bin) })
	t.Run("response", func(t *testing.T) { testKillOnResponse(t, bin) })
}

// testKillOnRequest: requests without the kill header, or with a false
// one, are served; one with `x-envoy-kill-request: true` ends the process
// at once (exit status 134, as Envoy's abort) after logging Envoy's
// "KillRequestFilter is crashing Envoy!!!".
func testKillOnRequest(t *testing.T, bin string) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	cp := startChildProxy(t, bin, cfg{
		hcm: `http_filters: [{name: envoy.filters.http.kill_request, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.kill_request.v3.KillRequest, probability: {numerator: 100}}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()
	for _, hdr := range [][]string{nil, {"x-envoy-kill-request", "false"}, {"x-envoy-kill-request", "maybe"}} {
		if code, _, _ := testutil.Get(t, c, "http://"+cp.addr+"/", hdr...); code != 200 {
			t.Fatalf("%v: status %d, want 200", hdr, code)
		}
	}
	if code := cp.exited(0); code != -1 {
		t.Fatalf("the proxy exited (%d) without a kill request", code)
	}
	req, _ := http.NewRequest("GET", "http://"+cp.addr+"/", nil)
	req.Header.Set("x-envoy-kill-request", "true")
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("a kill request was answered %d", resp.StatusCode)
	}
	if code := cp.exited(20 * time.Second); code != kill_request.ExitCode {
		t.Fatalf("exit code %d after a kill request, want %d", code, kill_request.ExitCode)
	}
	if !strings.Contains(cp.stderr.String(), kill_request.Message) {
		t.Errorf("stderr lacks %q:\n%s", kill_request.Message, cp.stderr.String())
	}
}

// testKillOnResponse: direction RESPONSE with a custom header — the
// request's header is not looked at; an upstream response carrying
// x-chaos: yes kills the process.
func testKillOnResponse(t *testing.T, bin string) {
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/boom" {
			w.Header().Set("x-chaos", "yes")
		}
		w.Write([]byte("ok"))
	}))
	cp := startChildProxy(t, bin, cfg{
		hcm: `http_filters: [{name: envoy.filters.http.kill_request, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.kill_request.v3.KillRequest,
		    probability: {numerator: 1, denominator: TEN_THOUSAND}, kill_request_header: X-Chaos, direction: RESPONSE}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		// The route raises the probability to 100 %.
		vhosts:   vhost(`{match: {prefix: /}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.kill_request: {"@type": type.googleapis.com/envoy.extensions.filters.http.kill_request.v3.KillRequest, probability: {numerator: 100}, direction: RESPONSE}}}`),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()
	// The route's probability applies once a request carries the header (as Envoy).
	if code, _, _ := testutil.Get(t, c, "http://"+cp.addr+"/fine", "x-chaos", "yes"); code != 200 {
		t.Fatalf("a request with the header: status %d, want 200 (direction RESPONSE)", code)
	}
	if code := cp.exited(0); code != -1 {
		t.Fatalf("the proxy exited (%d) on a request header", code)
	}
	req, _ := http.NewRequest("GET", "http://"+cp.addr+"/boom", nil)
	req.Header.Set("x-chaos", "yes")
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("a kill response was forwarded: %d", resp.StatusCode)
	}
	if code := cp.exited(20 * time.Second); code != kill_request.ExitCode {
		t.Fatalf("exit code %d after a kill response, want %d", code, kill_request.ExitCode)
	}
}
