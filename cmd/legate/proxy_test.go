// legate proxy: signals and draining, the worker count.

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
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

// --concurrency is Envoy's worker count: the proxy serves with that many
// Ps (GOMAXPROCS), 0 runs one, and without the flag the count is what Go
// runs with (GOMAXPROCS from the environment here) or --cpuset-threads'.
// The admin's /server_info (command_line_options.concurrency) and /stats
// (server.concurrency) report it.
func TestConcurrency(t *testing.T) {
	cpuset := cpusetCPUs()
	if cpuset < 1 {
		t.Fatal("no CPUs in the process's affinity")
	}
	for _, tc := range []struct {
		name       string
		args       []string
		gomaxprocs int // GOMAXPROCS in the environment
		want       int
	}{
		{"the flag wins over the environment", []string{"--concurrency", "3"}, 1, 3},
		{"zero runs one worker", []string{"--concurrency", "0"}, 4, 1},
		{"without the flag, what Go runs with", nil, 5, 5},
		{"--cpuset-threads, the cpuset's CPUs", []string{"--cpuset-threads"}, cpuset + 1, cpuset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeFile(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [{name: envoy.filters.network.http_connection_manager, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s, route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200}}]}]}, http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]}}]}]
`)
			addrFile := filepath.Join(t.TempDir(), "admin")
			cmd := exec.Command(legateBin, append([]string{"proxy", "-c", cfg, "--admin-address-path", addrFile, "--drain-time-s", "0"}, tc.args...)...)
			cmd.Env = append(slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "GOMAXPROCS=") }),
				"GOMAXPROCS="+strconv.Itoa(tc.gomaxprocs))
			logFile := filepath.Join(t.TempDir(), "stderr")
			lf, err := os.Create(logFile)
			if err != nil {
				t.Fatal(err)
			}
			defer lf.Close()
			cmd.Stderr = lf
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				cmd.Process.Signal(syscall.SIGTERM)
				cmd.Wait()
			}()
			var admin string
			testutil.Eventually(t, 20*time.Second, func() bool {
				b, err := os.ReadFile(addrFile)
				admin = string(b)
				return err == nil && admin != ""
			}, "no admin address file; stderr:\n%s", fileText(logFile))
			get := func(path string) string {
				t.Helper()
				resp, err := http.Get("http://" + admin + path)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("GET %s: %d %s %v", path, resp.StatusCode, b, err)
				}
				return string(b)
			}
			var info struct {
				Options struct {
					Concurrency *int `json:"concurrency"`
				} `json:"command_line_options"`
			}
			body := get("/server_info")
			if err := json.Unmarshal([]byte(body), &info); err != nil {
				t.Fatalf("/server_info: %v\n%s", err, body)
			}
			if c := info.Options.Concurrency; c == nil || *c != tc.want {
				t.Errorf("/server_info command_line_options.concurrency: %v, want %d\n%s", c, tc.want, body)
			}
			if got, want := strings.TrimSpace(get("/stats?filter=^server%5C.concurrency$")), fmt.Sprintf("server.concurrency: %d", tc.want); got != want {
				t.Errorf("/stats: %q, want %q", got, want)
			}
		})
	}
}

// fileText prints a file's content (read when printed).
type fileText string

func (f fileText) String() string {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return err.Error()
	}
	return string(b)
}
