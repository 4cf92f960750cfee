// Client faults: malformed bodies and clients leaving mid-body are not
// upstream host faults.

package features_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestClientFaultsAreNotHostFaults: a malformed chunked body is the
// client's fault — 400 with flag DPE, the connection closed — and a
// client that closes mid-body gets nothing back (flag DC); neither is a
// 503, and neither counts against the upstream host, even with outlier
// detection ejecting after one 5xx. Leading zeros in a chunk size are
// valid.
func TestClientFaultsAreNotHostFaults(t *testing.T) {
	// A security test: raw inputs and faults, in a network namespace of its own.
	if !testutil.InNetns(t) {
		return
	}
	got := make(chan string, 64)
	u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		got <- string(b)
		w.Write([]byte("ok"))
	}))
	h, port := u.Host()
	logPath := filepath.Join(t.TempDir(), "access.log")
	p := testutil.StartProxy(t, fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: main
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: %s, log_format: {text_format: "%%RESPONSE_CODE%% %%RESPONSE_FLAGS%%\n"}}}]
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              # /stream streams the body upstream; / buffers it for retries.
              - {match: {prefix: /stream}, route: {cluster: backend}}
              - {match: {prefix: /}, route: {cluster: backend, retry_policy: {retry_on: "5xx,reset", num_retries: 3}}}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    outlier_detection: {consecutive_5xx: 1, consecutive_gateway_failure: 1, base_ejection_time: 30s, max_ejection_percent: 100}
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
`, logPath, h, port), nil)
	addr := p.Addr("main")
	head := "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	streamed := "POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

	// Leading zeros: a valid body, forwarded whole.
	if resp := rawExchange(t, addr, head+"00000000000000000003\r\nabc\r\n0\r\n\r\n"); !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("a chunk size with leading zeros: %q", resp)
	}
	if b := <-got; b != "abc" {
		t.Fatalf("upstream got %q", b)
	}
	for i := 0; i < 4; i++ {
		head := head
		if i%2 == 1 {
			head = streamed
		}
		// A chunk size beyond 60 bits, after a good first chunk: when
		// streamed, the request head and first chunk are already upstream.
		resp := rawExchange(t, addr, head+"3\r\nabc\r\nFFFFFFFFFFFFFFFFF1\r\n")
		if !strings.HasPrefix(resp, "HTTP/1.1 400") || !strings.Contains(resp, "Connection: close") && !strings.Contains(resp, "connection: close") {
			t.Fatalf("malformed chunked body: want 400 and a closed connection, got %q", resp)
		}
		// A client that goes away mid-body.
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, head+"5\r\nhel")
		time.Sleep(50 * time.Millisecond)
		c.Close()
	}
	time.Sleep(200 * time.Millisecond)
	if n := p.Stat(t, "cluster.backend.outlier_detection.ejections_enforced_total"); n != 0 {
		t.Errorf("client faults ejected the host (%d ejections)", n)
	}
	if n := p.Stat(t, "cluster.backend.upstream_rq_retry"); n != 0 {
		t.Errorf("client faults were retried %d times", n)
	}
	// The host still serves.
	if resp := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("after client faults the healthy host does not serve: %q", resp)
	}
	p.Srv.Shutdown(t.Context())
	b, _ := os.ReadFile(logPath)
	log := string(b)
	if strings.Count(log, "400 DPE") != 4 || strings.Count(log, " DC") != 4 || strings.Contains(log, "503") {
		t.Errorf("access log should show 4 × 400 DPE and 4 × DC, no 503:\n%s", log)
	}
}
