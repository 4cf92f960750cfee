package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestAccessLogFilesPerServer: each server owns its access-log writers
// (Envoy's access log manager is per server): two servers in one process
// writing the same path each count their own entries and each flush on
// shutdown.
func TestAccessLogFilesPerServer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	y := `
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
          access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: {{.}}, log_format: {text_format: "%RESPONSE_CODE% %REQ(X-WHO)%\n"}}}]
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200}}]}]}
`
	t.Cleanup(func() {
		// Registered before the servers start, so it runs after both
		// have shut down (cleanups run last-in first-out): every entry
		// is in the file.
		b, _ := os.ReadFile(path)
		if got := strings.Count(string(b), "200 two\n") + strings.Count(string(b), "200 one\n"); got != 3 {
			t.Errorf("after shutdown the file holds %d of 3 entries:\n%s", got, b)
		}
	})
	p1 := testutil.StartProxy(t, y, path)
	p2 := testutil.StartProxy(t, y, path)
	testutil.Get(t, testutil.Client(), p2.URL("main", "/"), "x-who", "two")
	testutil.Get(t, testutil.Client(), p2.URL("main", "/"), "x-who", "two")
	testutil.Get(t, testutil.Client(), p1.URL("main", "/"), "x-who", "one")
	// The entry is written as the stream ends, just after the response.
	testutil.Eventually(t, 5*time.Second, func() bool {
		return p2.Stat(t, "access_log_file.write_buffered") == 2 && p1.Stat(t, "access_log_file.write_buffered") == 1
	}, "each server should count its own entries (want 2 and 1): got %d and %d",
		p2.Stat(t, "access_log_file.write_buffered"), p1.Stat(t, "access_log_file.write_buffered"))
	time.Sleep(100 * time.Millisecond)
	if n := p1.Stat(t, "access_log_file.write_buffered"); n != 1 {
		t.Errorf("server one: access_log_file.write_buffered = %d, want its own 1", n)
	}
}
