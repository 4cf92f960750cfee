// Internal listeners (listener internal_listener, cluster endpoints with
// an envoy_internal_address, the envoy.bootstrap.internal_listener
// bootstrap extension) and the envoy.transport_sockets.internal_upstream
// transport socket, as Envoy's internal_listener and internal_upstream
// integration tests drive them.

package features_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// internalBootstrapExt enables internal listeners.
const internalBootstrapExt = `bootstrap_extensions:
- name: envoy.bootstrap.internal_listener
  typed_config: {"@type": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener, buffer_size_kb: 64}
`

const routerFilter = `[{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`

// hcmTo renders an HTTP connection manager routing everything to cluster,
// with extra fields (flow-style, comma-led) added.
func hcmTo(statPrefix, cluster, extra string) string {
	return hcmToRC(statPrefix, cluster, "", extra)
}

// hcmToRC is hcmTo with extra route configuration fields (comma-led).
func hcmToRC(statPrefix, cluster, rcExtra, extra string) string {
	return fmt.Sprintf(`{name: envoy.filters.network.http_connection_manager, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager,
      stat_prefix: %s, http_filters: %s,
      route_config: {virtual_hosts: [{name: all, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: %s}}]}]%s}%s}}`, statPrefix, routerFilter, cluster, rcExtra, extra)
}

// internalCluster renders a STATIC cluster of one envoy_internal_address
// endpoint.
func internalCluster(name, listener, endpointID, extra string) string {
	return fmt.Sprintf(`{name: %s, connect_timeout: 1s, type: STATIC%s,
      load_assignment: {cluster_name: %s, endpoints: [{lb_endpoints: [{endpoint: {address: {envoy_internal_address: {server_listener_name: %s, endpoint_id: %s}}}}]}]}}`,
		name, extra, name, listener, endpointID)
}

// setFS stores the internal-header request header as filter state
// internal_state, shared with the upstream connection.
const setFS = `{name: envoy.filters.http.set_filter_state, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config,
        on_request_headers: [{object_key: internal_state, factory_key: envoy.string, shared_with_upstream: ONCE, skip_if_empty: true,
          format_string: {text_format_source: {inline_string: "%REQ(internal-header)%"}, omit_empty_values: true}}]}}`

// waitLogLines waits for the access log at path to have n lines and returns them.
func waitLogLines(t *testing.T, path string, n int) []string {
	t.Helper()
	var lines []string
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(path)
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		return len(b) > 0 && len(lines) >= n
	}, "access log %s has fewer than %d lines", path, n)
	return lines
}

// TestInternalListenerHTTP: a client → a normal listener whose route goes
// to a cluster with an envoy_internal_address endpoint → an internal
// listener running its own connection manager → a real upstream.
func TestInternalListenerHTTP(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	logPath := filepath.Join(t.TempDir(), "inner.log")
	p := testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
`+internalBootstrapExt+`static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [{name: envoy.filters.network.http_connection_manager, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager,
      stat_prefix: outer, http_filters: `+routerFilter+`,
      route_config: {virtual_hosts: [{name: all, domains: ['*'], routes: [{match: {prefix: /h2}, route: {cluster: to_inner_h2}}, {match: {prefix: /}, route: {cluster: to_inner}}]}]}}}]}]
  - name: inner
    internal_listener: {}
    filter_chains: [{filters: [`+hcmToRC("inner", "backend", `, request_headers_to_add: [{header: {key: x-via-internal, value: "yes"}}]`, `, codec_type: AUTO,
      access_log: [{name: envoy.access_loggers.file, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog,
        path: `+logPath+`, log_format: {text_format_source: {inline_string: "%REQ(:PATH)% %RESPONSE_CODE% %UPSTREAM_HOST%\n"}}}}]`)+`]}]
  clusters:
  - `+internalCluster("to_inner", "inner", "ep1", "")+`
  - `+internalCluster("to_inner_h2", "inner", "ep2", `, typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions,
        explicit_http_config: {http2_protocol_options: {}}}}`)+`
  - `+staticCluster("backend", "", u.Addr)+"\n", nil)
	c := testutil.Client()
	// HTTP/2 over an internal connection (prior knowledge; the internal
	// listener's connection manager detects the preface).
	if code, _, body := testutil.Get(t, c, p.URL("http", "/h2")); code != 200 || !strings.Contains(body, "upstream=backend") {
		t.Fatalf("HTTP/2 to the internal listener: %d %q", code, body)
	}
	if got, got2 := p.Stat(t, "cluster.to_inner_h2.upstream_cx_http2_total"), p.Stat(t, "http.inner.downstream_cx_http2_total"); got != 1 || got2 != 1 {
		t.Errorf("HTTP/2 connections: cluster %d, internal listener %d; want 1 and 1", got, got2)
	}
	for i := 0; i < 2; i++ {
		code, _, body := testutil.Get(t, c, p.URL("http", fmt.Sprintf("/req%d", i)), "x-client", "yes")
		if code != 200 || !strings.Contains(body, "upstream=backend") {
			t.Fatalf("request %d through the internal listener: %d %q", i, code, body)
		}
		// The internal listener's connection manager ran: it added its
		// header; the client's header passed both hops.
		if !strings.Contains(body, "header:x-via-internal=yes") || !strings.Contains(body, "header:x-client=yes") ||
			!strings.Contains(body, fmt.Sprintf("path=/req%d", i)) {
			t.Fatalf("the upstream did not see what the internal listener forwards:\n%s", body)
		}
	}
	// Named by the configured address (port 0), as Envoy names it.
	outer := "listener.127.0.0.1_0.downstream_cx_total"
	testutil.Eventually(t, 3*time.Second, func() bool {
		return p.Stat(t, "http.outer.downstream_rq_total") == 3 && p.Stat(t, "http.inner.downstream_rq_total") == 3
	}, "both connection managers count 3 requests (outer %d, inner %d)", p.Stat(t, "http.outer.downstream_rq_total"), p.Stat(t, "http.inner.downstream_rq_total"))
	// The internal connection is pooled like a TCP one: one connection
	// for both requests, counted on the internal listener's own stats
	// (listener.envoy_internal_<name>., as Envoy names them).
	if got := p.Stat(t, "listener.envoy_internal_inner.downstream_cx_total"); got != 2 {
		t.Errorf("listener.envoy_internal_inner.downstream_cx_total = %d, want 2 (one HTTP/2, one HTTP/1.1)", got)
	}
	if got := p.Stat(t, "cluster.to_inner.upstream_cx_total"); got != 1 {
		t.Errorf("cluster.to_inner.upstream_cx_total = %d, want 1 (reused)", got)
	}
	if got := p.Stat(t, outer); got < 1 {
		t.Errorf("%s = %d", outer, got)
	}
	if got := p.Stat(t, "cluster.to_inner.upstream_rq_200"); got != 2 {
		t.Errorf("cluster.to_inner.upstream_rq_200 = %d, want 2", got)
	}
	lines := waitLogLines(t, logPath, 3)
	if lines[0] != "/h2 200 "+u.Addr || lines[1] != "/req0 200 "+u.Addr || lines[2] != "/req1 200 "+u.Addr {
		t.Errorf("internal listener access log:\n%s", strings.Join(lines, "\n"))
	}
	// /listeners and /clusters show the internal addresses as Envoy writes them.
	if code, _, body := testutil.Get(t, c, "http://"+p.Admin+"/listeners"); code != 200 || !strings.Contains(body, "inner::envoy://inner/") {
		t.Errorf("/listeners: %d %q", code, body)
	}
	if code, _, body := testutil.Get(t, c, "http://"+p.Admin+"/clusters"); code != 200 || !strings.Contains(body, "to_inner::envoy://inner/ep1::cx_total::1") {
		t.Errorf("/clusters does not list the internal host:\n%s", body)
	}
}

// TestInternalListenerPassthroughMetadata is Envoy's internal_upstream
// BasicFlow: the host's and the cluster's metadata and the request's
// filter state shared with upstream reach the internal listener's
// connection, where its tcp_proxy access log reads them.
func TestInternalListenerPassthroughMetadata(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	dir := t.TempDir()
	inner := func(name, logPath string) string {
		return fmt.Sprintf(`  - name: %s
    internal_listener: {}
    filter_chains: [{filters: [{name: tcp, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: %s, cluster: backend,
      access_log: [{name: envoy.access_loggers.file, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: %s,
        log_format: {text_format_source: {inline_string: "%%DYNAMIC_METADATA(host_metadata:value)%%,%%DYNAMIC_METADATA(cluster_metadata:value)%%,%%FILTER_STATE(internal_state:PLAIN)%%\n"}}}}]}}]}]
`, name, name, logPath)
	}
	transport := `, transport_socket: {name: envoy.transport_sockets.internal_upstream, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport,
        passthrough_metadata: [{name: host_metadata, kind: {host: {}}}, {name: cluster_metadata, kind: {cluster: {}}}],
        transport_socket: {name: envoy.transport_sockets.raw_buffer, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}}}`
	withMeta := func(name, listener, extra string) string {
		return fmt.Sprintf(`{name: %s, connect_timeout: 1s, type: STATIC%s, metadata: {filter_metadata: {cluster_metadata: {value: CLUSTER}}},
      load_assignment: {cluster_name: %s, endpoints: [{lb_endpoints: [{endpoint: {address: {envoy_internal_address: {server_listener_name: %s, endpoint_id: lorem_ipsum}}},
        metadata: {filter_metadata: {host_metadata: {value: HOST}}}}]}]}}`, name, extra, name, listener)
	}
	p := testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
`+internalBootstrapExt+`static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [{name: envoy.filters.network.http_connection_manager, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager,
      stat_prefix: outer, http_filters: [`+setFS+`, {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}],
      route_config: {virtual_hosts: [{name: all, domains: ['*'], routes: [
        {match: {prefix: /plain}, route: {cluster: plain}},
        {match: {prefix: /}, route: {cluster: passthrough}}]}]}}}]}]
`+inner("inner", filepath.Join(dir, "inner.log"))+inner("inner_plain", filepath.Join(dir, "plain.log"))+`  clusters:
  - `+withMeta("passthrough", "inner", transport)+`
  - `+withMeta("plain", "inner_plain", "")+`
  - `+staticCluster("backend", "", u.Addr)+"\n", nil)
	c := testutil.Client()
	get := func(path string, hdr ...string) {
		t.Helper()
		if code, _, body := testutil.Get(t, c, p.URL("http", path), hdr...); code != 200 || !strings.Contains(body, "upstream=backend") {
			t.Fatalf("%s: %d %q", path, code, body)
		}
	}
	get("/", "internal-header", "FOO")
	// Filter state shared with upstream keys the pool, as Envoy hashes it
	// into the pool key: another value needs another internal connection
	// (whose connection carries that value), the same value reuses one.
	get("/", "internal-header", "BAR")
	get("/", "internal-header", "FOO")
	// Without the transport socket nothing is passed.
	get("/plain", "internal-header", "FOO")
	testutil.Eventually(t, 3*time.Second, func() bool {
		return p.Stat(t, "cluster.passthrough.upstream_cx_total") == 2
	}, "cluster.passthrough.upstream_cx_total = %d, want 2 (one per shared filter-state value)", p.Stat(t, "cluster.passthrough.upstream_cx_total"))
	// The tcp_proxy access logs are written when the internal connections
	// end: at shutdown of the pooled upstream connections.
	p.Srv.Clusters.CloseAll()
	lines := waitLogLines(t, filepath.Join(dir, "inner.log"), 2)
	got := strings.Join(lines, "|")
	if !strings.Contains(got, "HOST,CLUSTER,FOO") || !strings.Contains(got, "HOST,CLUSTER,BAR") || len(lines) != 2 {
		t.Errorf("internal listener access log = %q, want one HOST,CLUSTER,FOO and one HOST,CLUSTER,BAR line", got)
	}
	if plain := waitLogLines(t, filepath.Join(dir, "plain.log"), 1); plain[0] != "-,-,-" {
		t.Errorf("without internal_upstream the internal listener saw %q, want -,-,-", plain[0])
	}
	if got := p.Stat(t, "cluster.passthrough.internal_upstream.no_metadata"); got != 0 {
		t.Errorf("internal_upstream.no_metadata = %d with both namespaces present", got)
	}
}

// TestInternalListenerPassthroughToHCM: the filter state passed through
// becomes the internal connection's, which the internal listener's
// connection manager starts every stream with; a metadata namespace the
// host lacks is counted and not passed.
func TestInternalListenerPassthroughToHCM(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	logPath := filepath.Join(t.TempDir(), "inner.log")
	p := testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
`+internalBootstrapExt+`static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [{name: envoy.filters.network.http_connection_manager, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager,
      stat_prefix: outer, http_filters: [`+setFS+`, {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}],
      route_config: {virtual_hosts: [{name: all, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: passthrough}}]}]}}}]}]
  - name: inner
    internal_listener: {}
    filter_chains: [{filters: [`+hcmTo("inner", "backend", `, access_log: [{name: envoy.access_loggers.file, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: `+logPath+`,
        log_format: {text_format_source: {inline_string: "%FILTER_STATE(internal_state:PLAIN)% %DYNAMIC_METADATA(host_metadata)%\n"}}}}]`)+`]}]
  clusters:
  - `+internalCluster("passthrough", "inner", "e", `, transport_socket: {name: envoy.transport_sockets.internal_upstream, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport,
        passthrough_metadata: [{name: host_metadata, kind: {host: {}}}],
        transport_socket: {name: envoy.transport_sockets.raw_buffer, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}}}`)+`
  - `+staticCluster("backend", "", u.Addr)+"\n", nil)
	if code, _, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/"), "internal-header", "FOO"); code != 200 {
		t.Fatalf("through internal_upstream: %d", code)
	}
	if got := p.Stat(t, "cluster.passthrough.internal_upstream.no_metadata"); got != 1 {
		t.Errorf("cluster.passthrough.internal_upstream.no_metadata = %d, want 1", got)
	}
	if lines := waitLogLines(t, logPath, 1); lines[0] != "FOO -" {
		t.Errorf("internal listener's connection manager logged %q, want \"FOO -\"", lines[0])
	}
}

// TestInternalListenerTCPProxyHalfClose: tcp_proxy into an internal
// listener whose own tcp_proxy goes to a real server: bytes both ways,
// and the client's half-close reaches the server through both hops while
// the server's answer still comes back.
func TestInternalListenerTCPProxyHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// Greet, then read everything until the client's FIN.
				io.WriteString(c, "hello\n")
				b, err := io.ReadAll(c)
				fmt.Fprintf(c, "got %d bytes (%v): %s", len(b), err, b)
			}()
		}
	}()
	tcp := func(stat, cluster string) string {
		return fmt.Sprintf(`{name: tcp, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: %s, cluster: %s}}`, stat, cluster)
	}
	p := testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
`+internalBootstrapExt+`static_resources:
  listeners:
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [`+tcp("outer", "to_inner")+`]}]
  - name: inner
    internal_listener: {}
    filter_chains: [{filters: [`+tcp("inner", "backend")+`]}]
  clusters:
  - `+internalCluster("to_inner", "inner", "x", "")+`
  - `+staticCluster("backend", "", ln.Addr().String())+"\n", nil)
	conn, err := net.Dial("tcp", p.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	if line, err := r.ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("server's greeting through both hops: %q, %v", line, err)
	}
	payload := strings.Repeat("x", 200*1024) // more than the internal buffers hold
	if _, err := io.WriteString(conn, payload); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("got %d bytes (<nil>): %s", len(payload), payload); string(rest) != want {
		t.Fatalf("after the half-close the server answered %.80q…, want %.80q…", rest, want)
	}
	testutil.Eventually(t, 3*time.Second, func() bool {
		return p.Stat(t, "tcp.inner.downstream_cx_total") == 1 && p.Stat(t, "tcp.outer.downstream_cx_total") == 1 &&
			p.Stat(t, "listener.envoy_internal_inner.downstream_cx_total") == 1
	}, "tcp_proxy and internal listener stats")
}

// TestInternalListenerTLS: the cluster speaks TLS to the internal
// listener, whose filter chain terminates it: TLS works over internal
// connections.
func TestInternalListenerTLS(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	ca := testutil.NewCA(t, "ca")
	leaf := ca.Issue(t, "inner", "inner.internal")
	p := testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
`+internalBootstrapExt+`static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [`+hcmTo("outer", "to_inner", "")+`]}]
  - name: inner
    internal_listener: {}
    filter_chains:
    - transport_socket: {name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext,
        common_tls_context: {tls_certificates: [{certificate_chain: `+pemInline(leaf.CertPEM)+`, private_key: `+pemInline(leaf.KeyPEM)+`}]}}}
      filters: [`+hcmToRC("inner", "backend", `, request_headers_to_add: [{header: {key: x-inner-tls, value: "%DOWNSTREAM_TLS_VERSION% %REQUESTED_SERVER_NAME%"}}]`, "")+`]
  clusters:
  - `+internalCluster("to_inner", "inner", "tls", `, transport_socket: {name: envoy.transport_sockets.internal_upstream, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport,
        transport_socket: {name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, sni: inner.internal,
          common_tls_context: {validation_context: {trusted_ca: `+pemInline(ca.CertPEM)+`}}}}}}`)+`
  - `+staticCluster("backend", "", u.Addr)+"\n", nil)
	code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/tls"))
	if code != 200 || !strings.Contains(body, "header:x-inner-tls=TLSv1.3 inner.internal") {
		t.Fatalf("TLS over the internal connection: %d\n%s", code, body)
	}
	if got := p.Stat(t, "listener.envoy_internal_inner.ssl.handshake"); got != 1 {
		t.Errorf("listener.envoy_internal_inner.ssl.handshake = %d, want 1", got)
	}
}

// TestInternalListenerMissingIsConnectFailure: an endpoint naming no
// internal listener fails to connect at once (Envoy closes the user space
// socket's peer), as does any internal endpoint on a server without the
// bootstrap extension.
func TestInternalListenerMissingIsConnectFailure(t *testing.T) {
	for _, tc := range []struct {
		name, ext string
	}{{"unknown server_listener_name", internalBootstrapExt}, {"no bootstrap extension", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			p := testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
`+tc.ext+`static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [`+hcmTo("outer", "to_nowhere", "")+`]}]
  clusters:
  - `+internalCluster("to_nowhere", "nope", "", "")+"\n", nil)
			start := time.Now()
			code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/"))
			if code != 503 || !strings.Contains(body, "upstream connect error") {
				t.Fatalf("to a missing internal listener: %d %q, want 503 connection failure", code, body)
			}
			if d := time.Since(start); d > 900*time.Millisecond {
				t.Errorf("the failure took %v: it must not wait for the connect timeout", d)
			}
			if got := p.Stat(t, "cluster.to_nowhere.upstream_cx_connect_fail"); got < 1 {
				t.Errorf("cluster.to_nowhere.upstream_cx_connect_fail = %d", got)
			}
		})
	}
}

// TestInternalListenerConfigErrors: Envoy's config-time refusals.
func TestInternalListenerConfigErrors(t *testing.T) {
	listener := func(l string) string {
		return `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
%s
static_resources:
  listeners:
  - ` + strings.TrimSuffix(l, "}") + `, filter_chains: [{filters: [{name: echo, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo}}]}]}
`
	}
	for _, tc := range []struct{ name, cfg, want string }{
		{"no bootstrap extension", fmt.Sprintf(listener("{name: inner, internal_listener: {}}"), ""),
			"error adding listener named 'inner': InternalListener bootstrap extension is mandatory"},
		{"internal listener with an address", fmt.Sprintf(listener("{name: inner, internal_listener: {}, address: {socket_address: {address: 127.0.0.1, port_value: 0}}}"), internalBootstrapExt),
			"error adding listener 'inner': address should not be used when an internal listener config is provided"},
		{"internal address without internal_listener", fmt.Sprintf(listener("{name: inner, address: {envoy_internal_address: {server_listener_name: inner}}}"), internalBootstrapExt),
			"error adding listener named 'inner': use internal_listener field instead of address for internal listeners"},
		{"TCP-only setting", fmt.Sprintf(listener("{name: inner, internal_listener: {}, tcp_backlog_size: 10}"), internalBootstrapExt),
			"error adding listener named 'inner': has unsupported tcp listener feature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testutil.TryStartProxy(t, tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestInternalListenerLDS: an internal listener added and removed over
// file-based LDS, like any other: before it exists and after it is
// removed, connecting to it is a connect failure.
func TestInternalListenerLDS(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	dir := t.TempDir()
	lds := filepath.Join(dir, "lds.yaml")
	write := func(content string) {
		tmp := filepath.Join(dir, ".lds.tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, lds); err != nil {
			t.Fatal(err)
		}
	}
	innerRes := `resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: inner
  internal_listener: {}
  filter_chains: [{filters: [` + hcmTo("inner_v%d", "backend", "") + `]}]
`
	write("resources: []\n")
	p := testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
`+internalBootstrapExt+`dynamic_resources:
  lds_config: {resource_api_version: V3, path_config_source: {path: `+lds+`}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [`+hcmTo("outer", "to_inner", "")+`]}]
  clusters:
  - `+internalCluster("to_inner", "inner", "", "")+`
  - `+staticCluster("backend", "", u.Addr)+"\n", nil)
	c := testutil.Client()
	status := func() int {
		code, _, _ := testutil.Get(t, c, p.URL("http", "/"), "connection", "close")
		return code
	}
	if code := status(); code != 503 {
		t.Fatalf("before LDS adds the internal listener: %d, want 503", code)
	}
	fails := p.Stat(t, "cluster.to_inner.upstream_cx_connect_fail")
	if fails < 1 {
		t.Errorf("upstream_cx_connect_fail = %d before the listener exists", fails)
	}
	write(fmt.Sprintf(innerRes, 1))
	testutil.Eventually(t, 10*time.Second, func() bool { return status() == 200 }, "the internal listener added over LDS does not serve")
	if got := p.Stat(t, "http.inner_v1.downstream_rq_total"); got < 1 {
		t.Errorf("http.inner_v1.downstream_rq_total = %d", got)
	}
	// A full update (another stat prefix) replaces it without a gap.
	write(fmt.Sprintf(innerRes, 2))
	testutil.Eventually(t, 10*time.Second, func() bool {
		return status() == 200 && p.Stat(t, "http.inner_v2.downstream_rq_total") >= 1
	}, "the updated internal listener does not serve")
	write("resources: []\n")
	testutil.Eventually(t, 10*time.Second, func() bool { return status() == 503 }, "the internal listener removed over LDS still serves")
	if got := p.Stat(t, "cluster.to_inner.upstream_cx_connect_fail"); got <= fails {
		t.Errorf("upstream_cx_connect_fail = %d after removal, want more than %d", got, fails)
	}
}
