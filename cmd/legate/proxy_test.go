// legate proxy: signals and draining.

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

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
