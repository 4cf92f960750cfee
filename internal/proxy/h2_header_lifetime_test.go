package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestHTTP2ResponseHeadersOutliveUpstreamBuffer: response headers from an
// HTTP/1 upstream (parsed in place in the upstream connection's buffer)
// reach HTTP/2 clients intact even though x/net/http2 encodes them when
// the stream's handler ends, after the upstream connection went back to
// the pool and read the next response into that buffer. Before, clients
// saw corrupted values and the proxy could panic in the HPACK encoder.
func TestHTTP2ResponseHeadersOutliveUpstreamBuffer(t *testing.T) {
	u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "type/"+r.URL.Query().Get("id"))
		w.Header().Set("X-Echo", r.URL.Query().Get("id"))
		w.Write([]byte(r.URL.Query().Get("id")))
	}))
	h, port := u.Host()
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
          codec_type: AUTO
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: backend}}]}]}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    # Two upstream connections for many streams: each is reused at once.
    circuit_breakers: {thresholds: [{max_connections: 2, max_pending_requests: 10000}]}
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
`, h, port), nil)
	c := testutil.H2CClient()
	var wg sync.WaitGroup
	var mu sync.Mutex
	bad := 0
	var first string
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				id := fmt.Sprintf("w%02d-%03d-%s", w, i, "abcdefghijklmnopqrstuvwxyz"[i%26:])
				resp, err := c.Get(p.URL("main", "/?id="+id))
				if err != nil {
					mu.Lock()
					bad++
					first = err.Error()
					mu.Unlock()
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.Header.Get("Content-Type") != "type/"+id || resp.Header.Get("X-Echo") != id || string(b) != id {
					mu.Lock()
					bad++
					first = fmt.Sprintf("want %s, got content-type %q x-echo %q body %q", id, resp.Header.Get("Content-Type"), resp.Header.Get("X-Echo"), b)
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	if bad > 0 {
		t.Fatalf("%d of 1600 responses had wrong headers, e.g. %s", bad, first)
	}
}
