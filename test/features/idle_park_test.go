// Idle parking: an HTTP/1 keep-alive connection that waits for its next
// request gives up its goroutine (internal/netx.Parker) and resumes where
// it was — the next request served, the idle timeout,
// max_connection_duration and drains honoured, the peer's close noticed,
// the listener's and the network filters' end-of-connection work done,
// nothing left behind.

package features_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/netx"
	"github.com/legateproxy/legate/internal/testutil"
)

// parkSoon makes the proxies this test starts park idle connections
// after 10 ms (the connection manager reads it when it compiles).
func parkSoon(t *testing.T) *netx.Parker {
	t.Helper()
	t.Setenv("LEGATE_TEST_IDLE_PARK_DELAY", "10ms")
	p := netx.SharedParker()
	if p == nil {
		t.Skip("no idle parking on this platform")
	}
	return p
}

// waitParked waits until the process's parker holds n connections.
func waitParked(t *testing.T, pk *netx.Parker, n int) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() bool { return pk.Len() == n }, "parked connections: %d, want %d", pk.Len(), n)
}

// h1Client is one raw HTTP/1.1 keep-alive connection.
type h1Client struct {
	c  net.Conn
	br *bufio.Reader
}

func dialH1(t *testing.T, addr string) *h1Client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &h1Client{c: c, br: bufio.NewReader(c)}
}

// do writes raw (one or more requests) and reads n responses.
func (h *h1Client) do(t *testing.T, raw string, n int) []string {
	t.Helper()
	h.c.SetDeadline(time.Now().Add(10 * time.Second))
	defer h.c.SetDeadline(time.Time{})
	if _, err := io.WriteString(h.c, raw); err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := 0; i < n; i++ {
		resp, err := http.ReadResponse(h.br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i+1, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out = append(out, fmt.Sprintf("%d %s", resp.StatusCode, b))
	}
	return out
}

func (h *h1Client) get(t *testing.T, path string) string {
	t.Helper()
	return h.do(t, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n", 1)[0]
}

// closedByProxy waits for the proxy to close the connection and reports
// when it did.
func (h *h1Client) closedByProxy(t *testing.T) time.Time {
	t.Helper()
	h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(h.br)
	if err != nil || len(b) > 0 {
		t.Fatalf("waiting for the proxy to close: read %q, %v", b, err)
	}
	return time.Now()
}

// idleProxy is a proxy with one listener ("http") answering /echo from an
// echo upstream and everything else directly.
func idleProxy(t *testing.T, hcm string) *testutil.Proxy {
	t.Helper()
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	return start(t, cfg{
		hcm:      hcm,
		vhosts:   vhost("{match: {prefix: /echo}, route: {cluster: u}}", "{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: ok}}}"),
		clusters: "[" + staticCluster("u", "", u.Addr) + "]",
	})
}

// goroutinesSettle waits until the process has at most max goroutines.
// Each upstream connection has a goroutine of the (in-process) upstream
// server's: upstreams are counted apart (extra, from the cluster's
// upstream_cx_active).
func goroutinesSettle(t *testing.T, max int, extra func() int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > max+extra() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%s: %d goroutines, want at most %d:\n%s", what, runtime.NumGoroutine(), max+extra(), buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestIdleParkNextRequest(t *testing.T) {
	pk := parkSoon(t)
	p := idleProxy(t, "")
	// A first connection parks once, so that everything started on the
	// way (the parker, the upstream pool) is in the baseline.
	warm := dialH1(t, p.Addr("http"))
	warm.get(t, "/echo")
	waitParked(t, pk, 1)
	warm.c.Close()
	waitParked(t, pk, 0)
	base := runtime.NumGoroutine()
	up0 := p.Stat(t, "cluster.u.upstream_cx_active")
	ups := func() int { return int(p.Stat(t, "cluster.u.upstream_cx_active") - up0) }

	const n = 20
	conns := make([]*h1Client, n)
	for i := range conns {
		conns[i] = dialH1(t, p.Addr("http"))
		if got := conns[i].get(t, "/echo"); !strings.HasPrefix(got, "200 ") {
			t.Fatalf("first request: %q", got)
		}
	}
	waitParked(t, pk, n)
	// Parked connections hold no goroutine (with one each there would be
	// n more).
	goroutinesSettle(t, base+n/4, ups, "with the connections parked")
	for round := 0; round < 3; round++ {
		for i, h := range conns {
			switch round {
			case 0:
				if got := h.get(t, "/echo"); !strings.HasPrefix(got, "200 ") {
					t.Fatalf("connection %d, request after a park: %q", i, got)
				}
			case 1:
				// Two pipelined requests, the second with a body.
				got := h.do(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", 2)
				if got[0] != "200 ok" || !strings.HasPrefix(got[1], "200 ") {
					t.Fatalf("connection %d, pipelined after a park: %q", i, got)
				}
			case 2:
				// A request head in two writes: the first resumes the
				// parked connection, which then waits for the rest on
				// its goroutine.
				io.WriteString(h.c, "GET / HTTP/1.1\r\n")
				if got := h.do(t, "Host: a\r\n\r\n", 1); got[0] != "200 ok" {
					t.Fatalf("connection %d, split head after a park: %q", i, got)
				}
			}
		}
		waitParked(t, pk, n)
	}
	if got := p.Stat(t, "http.ingress.downstream_cx_total"); got != n+1 {
		t.Errorf("downstream_cx_total = %d, want %d (each connection kept)", got, n+1)
	}
	if got := p.Stat(t, "http.ingress.downstream_rq_total"); got != 1+5*n {
		t.Errorf("downstream_rq_total = %d, want %d", got, 1+5*n)
	}
	for _, h := range conns {
		h.c.Close()
	}
	waitParked(t, pk, 0)
	testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "http.ingress.downstream_cx_active") == 0 }, "downstream_cx_active after the clients closed")
	goroutinesSettle(t, base, ups, "after the connections closed")
}

// TestIdleParkNeverWithBufferedInput: a response followed by the start
// of the next request in the same read keeps the connection on its
// goroutine (the bytes are buffered, not in the socket): the rest of the
// request, sent after the park delay, completes it.
func TestIdleParkNeverWithBufferedInput(t *testing.T) {
	pk := parkSoon(t)
	p := idleProxy(t, "")
	h := dialH1(t, p.Addr("http"))
	h.get(t, "/")
	waitParked(t, pk, 1)
	got := h.do(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /echo HTTP/1.1\r\n", 1)
	if got[0] != "200 ok" {
		t.Fatalf("first request: %q", got)
	}
	time.Sleep(100 * time.Millisecond) // ten park delays
	if n := pk.Len(); n != 0 {
		t.Fatalf("%d connections parked with a partial request buffered", n)
	}
	if got := h.do(t, "Host: a\r\n\r\n", 1); !strings.HasPrefix(got[0], "200 ") || !strings.Contains(got[0], "upstream=u") {
		t.Fatalf("the request completed after the delay: %q", got)
	}
}

func TestIdleParkIdleTimeout(t *testing.T) {
	tests := []struct {
		name, hcm string
		// from is what the timeout runs from: the last response, or the
		// connection's start (max_connection_duration).
		fromStart bool
		timeout   time.Duration
	}{
		{name: "idle_timeout", hcm: "common_http_protocol_options: {idle_timeout: 0.5s}", timeout: 500 * time.Millisecond},
		{name: "max_connection_duration", hcm: "common_http_protocol_options: {max_connection_duration: 0.6s}", fromStart: true, timeout: 600 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pk := parkSoon(t)
			p := idleProxy(t, tt.hcm)
			start := time.Now()
			h := dialH1(t, p.Addr("http"))
			h.get(t, "/")
			last := time.Now()
			waitParked(t, pk, 1)
			closed := h.closedByProxy(t)
			from := last
			if tt.fromStart {
				from = start
			}
			// Never before its time (an upper bound would be timing).
			if d := closed.Sub(from); d < tt.timeout {
				t.Errorf("closed %v after the %s started, before its %v", d, tt.name, tt.timeout)
			}
			if got := p.Stat(t, "http.ingress.downstream_cx_idle_timeout"); got != 1 {
				t.Errorf("downstream_cx_idle_timeout = %d, want 1", got)
			}
			testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "http.ingress.downstream_cx_active") == 0 }, "downstream_cx_active after the timeout")
			waitParked(t, pk, 0)
		})
	}
}

// listenerActive is the downstream_cx_active gauge of the "http"
// listener of cfg (its stats are named by its configured address).
func listenerActive(t *testing.T, p *testutil.Proxy) int64 {
	t.Helper()
	return p.Stat(t, "listener.127.0.0.1_0.downstream_cx_active")
}

func TestIdleParkPeerClose(t *testing.T) {
	pk := parkSoon(t)
	p := idleProxy(t, "")
	for _, how := range []string{"close", "half-close"} {
		h := dialH1(t, p.Addr("http"))
		h.get(t, "/")
		waitParked(t, pk, 1)
		if got := listenerActive(t, p); got != 1 {
			t.Fatalf("listener downstream_cx_active = %d with one parked connection", got)
		}
		if how == "close" {
			h.c.Close()
		} else {
			h.c.(*net.TCPConn).CloseWrite()
		}
		waitParked(t, pk, 0)
		testutil.Eventually(t, 5*time.Second, func() bool {
			return p.Stat(t, "http.ingress.downstream_cx_active") == 0 && listenerActive(t, p) == 0
		}, "%s: downstream_cx_active %d, listener's %d", how, p.Stat(t, "http.ingress.downstream_cx_active"), listenerActive(t, p))
		if how == "half-close" {
			h.closedByProxy(t)
		}
	}
	if got := p.Stat(t, "http.ingress.downstream_cx_idle_timeout") + p.Stat(t, "http.ingress.downstream_cx_drain_close"); got != 0 {
		t.Errorf("a peer's close counted as an idle timeout or a drain (%d)", got)
	}
}

// TestIdleParkConnectionLimit: a parked connection still holds its place
// under the connection_limit network filter, and gives it back (the
// filter's OnClose work) when it closes while parked.
func TestIdleParkConnectionLimit(t *testing.T) {
	pk := parkSoon(t)
	p := testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - `+connLimitFilter(`stat_prefix: cl, max_connections: 1`)+`
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config: {virtual_hosts: [{name: all, domains: ['*'], routes: [{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: ok}}}]}]}
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
`, nil)
	a := dialH1(t, p.Addr("http"))
	a.get(t, "/")
	waitParked(t, pk, 1)
	b := dialH1(t, p.Addr("http"))
	b.closedByProxy(t) // over the limit while a is parked
	if got := p.Stat(t, "connection_limit.cl.limited_connections"); got != 1 {
		t.Fatalf("limited_connections = %d, want 1", got)
	}
	a.c.Close()
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "connection_limit.cl.active_connections") == 0 },
		"connection_limit's active_connections after the parked connection closed: %d", p.Stat(t, "connection_limit.cl.active_connections"))
	c := dialH1(t, p.Addr("http"))
	if got := c.get(t, "/"); got != "200 ok" {
		t.Fatalf("a connection after the parked one closed: %q", got)
	}
}

func TestIdleParkDrain(t *testing.T) {
	const n = 5
	tests := []struct {
		name string
		// drain drains the proxy's connections.
		drain func(t *testing.T, p *testutil.Proxy)
	}{
		{name: "healthcheck fail", drain: func(t *testing.T, p *testutil.Proxy) { adminPost(t, p, "/healthcheck/fail") }},
		{name: "drain_listeners graceful", drain: func(t *testing.T, p *testutil.Proxy) { adminPost(t, p, "/drain_listeners?graceful") }},
		{name: "drain_listeners", drain: func(t *testing.T, p *testutil.Proxy) { adminPost(t, p, "/drain_listeners") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pk := parkSoon(t)
			p := idleProxy(t, "")
			var conns []*h1Client
			for i := 0; i < n; i++ {
				h := dialH1(t, p.Addr("http"))
				h.get(t, "/")
				conns = append(conns, h)
			}
			waitParked(t, pk, n)
			tt.drain(t, p)
			for _, h := range conns {
				h.closedByProxy(t)
			}
			waitParked(t, pk, 0)
			// Counted as drained (a parked connection closed under it
			// would not be counted, and would stay active).
			if got := p.Stat(t, "http.ingress.downstream_cx_drain_close"); got != n {
				t.Errorf("downstream_cx_drain_close = %d, want %d", got, n)
			}
			testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "http.ingress.downstream_cx_active") == 0 }, "downstream_cx_active after the drain")
		})
	}
}

// TestIdleParkDrainFilterChainUpdate: a filter-chain-only listener update
// drains the parked connections of the chain it replaces; a connection
// made after it is served by the new chain.
func TestIdleParkDrainFilterChainUpdate(t *testing.T) {
	pk := parkSoon(t)
	dir := t.TempDir()
	lds := filepath.Join(dir, "lds.yaml")
	port := testutil.FreePort(t)
	write := func(body string) {
		tmp := filepath.Join(dir, ".lds.tmp")
		content := fmt.Sprintf(`resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: http
  address: {socket_address: {address: 127.0.0.1, port_value: %d}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: ingress
        route_config: {virtual_hosts: [{name: all, domains: ['*'], routes: [{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: %s}}}]}]}
        http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
`, port, body)
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, lds); err != nil {
			t.Fatal(err)
		}
	}
	write("v1")
	p := testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  lds_config: {resource_api_version: V3, path_config_source: {path: `+lds+`}}
`, nil)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var conns []*h1Client
	for i := 0; i < 3; i++ {
		h := dialH1(t, addr)
		if got := h.get(t, "/"); got != "200 v1" {
			t.Fatalf("before the update: %q", got)
		}
		conns = append(conns, h)
	}
	waitParked(t, pk, 3)
	write("v2")
	for _, h := range conns {
		h.closedByProxy(t)
	}
	waitParked(t, pk, 0)
	if got := p.Stat(t, "http.ingress.downstream_cx_drain_close"); got != 3 {
		t.Errorf("downstream_cx_drain_close = %d, want 3", got)
	}
	if got := dialH1(t, addr).get(t, "/"); got != "200 v2" {
		t.Errorf("after the update: %q", got)
	}
}

func adminPost(t *testing.T, p *testutil.Proxy, path string) {
	t.Helper()
	resp, err := http.Post("http://"+p.Admin+path, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %d", path, resp.StatusCode)
	}
}
