// Package features_test holds the proxy's black-box feature tests: each
// test starts a real Legate proxy from bootstrap YAML (internal/testutil)
// in front of real upstreams, all on loopback, and checks what a client
// and the upstreams see, the stats and the admin API — as Envoy's own
// integration tests do.
//
// One file per capability, named <capability>_test.go: routing_test.go
// (virtual hosts, routes, rewrites, header mutations, redirects),
// retries_test.go, timeouts_test.go, load_balancing_test.go,
// outlier_detection_test.go, tls_test.go, http2_test.go, … A new test goes
// in the file of the capability its name points to; a new capability gets
// a new file. Test-only filters are registered in the file of the tests
// that use them (filter_manager_test.go, upstream_filters_test.go), each on
// its own @type.
//
// Helpers (this file): cfg renders a bootstrap with one HTTP listener
// named "http" (stat prefix ingress, the router as the only HTTP filter
// unless hcm gives http_filters), staticCluster a STATIC cluster,
// vhost a catch-all virtual host, start a proxy from a cfg; rawExchange
// and firstLine send raw bytes and read the answer; upstreamOf reads an
// echo upstream's name; pemInline and hcmPrefix build TLS listeners.
// internal/testutil has the rest: StartUpstream, EchoHandler, StartProxy,
// TryStartProxy, Client, H2CClient, Get, Do, Eventually, FreePort, NewCA,
// Proxy.Stat, RepoRoot and SharedDir (for files relative to the repository,
// never to this directory).
package features_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// cfg builds a bootstrap with one HTTP listener ("http"): hcm holds extra
// HttpConnectionManager fields (flow-style YAML lines), vhosts the
// virtual_hosts list and clusters the clusters list.
type cfg struct {
	hcm      string
	vhosts   string
	clusters string
	extra    string // more top-level YAML
}

func (c cfg) String() string {
	hcm := ""
	for _, l := range strings.Split(strings.TrimSpace(c.hcm), "\n") {
		if l != "" {
			hcm += "          " + strings.TrimSpace(l) + "\n"
		}
	}
	filters := `          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
`
	if strings.Contains(c.hcm, "http_filters:") {
		filters = "" // the test gives its own chain
	}
	return fmt.Sprintf(`admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
%s          route_config: {name: local, virtual_hosts: %s}
%s  clusters: %s
%s`, hcm, c.vhosts, filters, c.clusters, c.extra)
}

// staticCluster renders a STATIC cluster over the given host:port addresses.
func staticCluster(name string, extra string, addrs ...string) string {
	var eps []string
	for _, a := range addrs {
		h, p, _ := net.SplitHostPort(a)
		eps = append(eps, fmt.Sprintf("{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}", h, p))
	}
	if extra != "" {
		extra = ", " + extra
	}
	return fmt.Sprintf("{name: %s, connect_timeout: 1s, type: STATIC, load_assignment: {cluster_name: %s, endpoints: [{lb_endpoints: [%s]}]}%s}",
		name, name, strings.Join(eps, ", "), extra)
}

// vhost renders one virtual host matching every domain with the routes.
func vhost(routes ...string) string {
	return fmt.Sprintf("[{name: all, domains: ['*'], routes: [%s]}]", strings.Join(routes, ", "))
}

func start(t *testing.T, c cfg) *testutil.Proxy {
	t.Helper()
	return testutil.StartProxy(t, c.String(), nil)
}

// rawExchange writes raw bytes to the proxy and returns everything it
// answers until it closes the connection (or 2 s pass).
func rawExchange(t *testing.T, addr, raw string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(conn)
	return string(b)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

// upstreamOf returns the "upstream=<name>" line of an echo response.
func upstreamOf(body string) string {
	l, _, _ := strings.Cut(body, "\n")
	return l
}

func pemInline(b []byte) string { return fmt.Sprintf("{inline_string: %q}", string(b)) }

const hcmPrefix = `{name: envoy.filters.network.http_connection_manager, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: %s, codec_type: AUTO,
  http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}],
  route_config: {virtual_hosts: [{name: v, domains: ['*'], routes: [%s]}]}}}`

// tcpEchoUpstream is a raw TCP upstream: it writes back every byte it
// reads, records what it received, counts its connections and the
// half-closes it read (a FIN before anything failed), and closes a
// connection when the peer half-closes.
type tcpEchoUpstream struct {
	// Addr is the upstream's address.
	Addr  string
	ln    net.Listener
	mu    sync.Mutex
	got   bytes.Buffer
	conns int
	eofs  int
}

func startTCPEcho(t *testing.T) *tcpEchoUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &tcpEchoUpstream{ln: ln, Addr: ln.Addr().String()}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns++
			u.mu.Unlock()
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						u.mu.Lock()
						u.got.Write(buf[:n])
						u.mu.Unlock()
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err == io.EOF {
						u.mu.Lock()
						u.eofs++
						u.mu.Unlock()
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return u
}

// Received is everything the upstream read, over all connections.
func (u *tcpEchoUpstream) Received() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.got.String()
}

// Conns is how many connections the upstream accepted.
func (u *tcpEchoUpstream) Conns() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.conns
}

// HalfClosed is how many connections the peer half-closed.
func (u *tcpEchoUpstream) HalfClosed() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.eofs
}

// Cluster renders a STATIC cluster called name over the upstream.
func (u *tcpEchoUpstream) Cluster(name string) string {
	return staticCluster(name, "", u.Addr)
}
