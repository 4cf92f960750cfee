// Client disconnects: a client that goes away ends its upstream request
// and its retries.

package features_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestHTTP1ClientCloseCancelsUpstream: an HTTP/1 client that closes its
// connection while its request waits ends the request, as Envoy does:
// the upstream request is reset at once (the upstream sees the
// cancellation), and a retry chain stops; counted as
// downstream_cx_destroy_remote_active_rq / upstream_cx_destroy_local_with_active_rq.
func TestHTTP1ClientCloseCancelsUpstream(t *testing.T) {
	// A security test: raw inputs and faults, in a network namespace of its own.
	if !testutil.InNetns(t) {
		return
	}
	var hits, cancelled atomic.Int64
	u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/wait" {
			time.Sleep(150 * time.Millisecond)
			w.Write([]byte("waited"))
			return
		}
		if r.URL.Path == "/retry" {
			time.Sleep(50 * time.Millisecond)
			w.WriteHeader(503)
			return
		}
		select {
		case <-r.Context().Done():
			cancelled.Add(1)
		case <-time.After(5 * time.Second):
			w.Write([]byte("late"))
		}
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
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /retry}
                route: {cluster: backend, timeout: 30s, retry_policy: {retry_on: 5xx, num_retries: 50, retry_back_off: {base_interval: 0.1s, max_interval: 0.1s}}}
              - match: {prefix: /}
                route: {cluster: backend, timeout: 30s}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
`, h, port), nil)
	send := func(path string) net.Conn {
		c, err := net.Dial("tcp", p.Addr("main"))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		return c
	}

	// A slow upstream: the client leaves after 200 ms.
	c := send("/slow")
	time.Sleep(200 * time.Millisecond)
	c.Close()
	testutil.Eventually(t, 2*time.Second, func() bool { return cancelled.Load() == 1 }, "the upstream request was not reset when the client left")
	testutil.Eventually(t, 2*time.Second, func() bool {
		return p.Stat(t, "http.main.downstream_cx_destroy_remote_active_rq") == 1 && p.Stat(t, "cluster.backend.upstream_cx_destroy_local_with_active_rq") == 1
	}, "not counted")

	// A retry chain (each try a 503 after 50 ms, 100 ms back-off): it
	// stops when the client leaves.
	hits.Store(0)
	c = send("/retry")
	time.Sleep(400 * time.Millisecond)
	c.Close()
	time.Sleep(100 * time.Millisecond)
	at := hits.Load()
	time.Sleep(1 * time.Second)
	if after := hits.Load(); after > at+1 {
		t.Errorf("the retry chain went on after the client left: %d upstream requests then %d a second later", at, after)
	}
	if at == 0 {
		t.Fatal("no upstream request at all: the test did not run")
	}
	// Keep-alive still works, and a request sent while the previous one
	// waits (so the watcher reads its first byte) is served whole.
	conn, err := net.Dial("tcp", p.Addr("main"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(60 * time.Millisecond)
	io.WriteString(conn, "GET /wait HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(conn)
	if n := countStatus(string(b), "HTTP/1.1 200"); n != 2 {
		t.Errorf("two requests on one connection: %d responses:\n%s", n, b)
	}
}

func countStatus(s, line string) int {
	n := 0
	for i := 0; i+len(line) <= len(s); i++ {
		if s[i:i+len(line)] == line {
			n++
		}
	}
	return n
}

// Regression: when the client went away (an HTTP/2 stream reset) the
// retry chain went on upstream; now the back-off ends and no retry goes out.
func TestClientResetCancelsRetries(t *testing.T) {
	// A security test: raw inputs and faults, in a network namespace of its own.
	if !testutil.InNetns(t) {
		return
	}
	var hits atomic.Int64
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(503)
	}))
	p := start(t, cfg{
		vhosts: vhost(`{match: {prefix: /}, route: {cluster: c, timeout: 30s, retry_policy: {retry_on: 5xx, num_retries: 20,
			retry_back_off: {base_interval: 0.3s, max_interval: 0.3s}}}}`),
		clusters: "[" + staticCluster("c", "", up.Addr) + "]",
	})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", p.URL("http", "/"), nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := testutil.H2CClient().Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	testutil.Eventually(t, 5*time.Second, func() bool { return hits.Load() >= 2 }, "no retries started")
	cancel() // RST_STREAM
	<-done
	at := hits.Load()
	time.Sleep(time.Second) // three more back-offs would have passed
	if n := hits.Load(); n > at+1 {
		t.Errorf("upstream got %d requests after the client reset (at %d)", n-at, at)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "http.ingress.downstream_rq_rx_reset") >= 1 }, "downstream_rq_rx_reset not counted")
}
