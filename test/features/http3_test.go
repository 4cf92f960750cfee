// HTTP/3: a QUIC listener (udp_listener_config.quic_options, transport
// socket envoy.transport_sockets.quic, codec_type HTTP3) served through
// the same connection manager and router as HTTP/1 and HTTP/2; HTTP/3
// clusters (explicit_http_config) and auto_config learning HTTP/3 from an
// upstream's alt-svc (alternate_protocols_cache_options); alt-svc
// advertised on a TCP listener as Envoy's users configure it.

package features_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/legateproxy/legate/internal/testutil"
)

// h3Client is quic-go's HTTP/3 client trusting ca.
func h3Client(t *testing.T, ca *testutil.CA) *http.Client {
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "h3.example.com"}}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func quicListener(name, certs, hcmExtra, routes string) string {
	return fmt.Sprintf(`
  - name: %s
    address: {socket_address: {protocol: UDP, address: 127.0.0.1, port_value: 0}}
    udp_listener_config: {quic_options: {}, downstream_socket_config: {prefer_gro: true}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.quic
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport
          downstream_tls_context: {common_tls_context: {tls_certificates: [%s]}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %s
          codec_type: HTTP3
          http3_protocol_options: {}
          %s
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config: {virtual_hosts: [{name: v, domains: ['*'], routes: [%s]}]}
`, name, certs, name, hcmExtra, routes)
}

func certEntryOf(l *testutil.Leaf) string {
	return fmt.Sprintf("{certificate_chain: %s, private_key: %s}", pemInline(l.CertPEM), pemInline(l.KeyPEM))
}

func TestHTTP3Downstream(t *testing.T) {
	ca := testutil.NewCA(t, "h3-ca")
	cert := ca.Issue(t, "h3.example.com", "h3.example.com")
	// An HTTP/1.1 upstream that reports what it got, and trailers it saw.
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "x-up-trailer")
		fmt.Fprintf(w, "proto=%s method=%s path=%s host=%s xfp=%s body=%s trailer=%s te=%v cl=%d", r.Proto, r.Method, r.URL.Path, r.Host,
			r.Header.Get("x-forwarded-proto"), body, r.Trailer.Get("x-client-trailer"), r.TransferEncoding, r.ContentLength)
		w.Header().Set("x-up-trailer", "done")
	}))
	uh, upo := up.Host()
	y := `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:` + quicListener("h3", certEntryOf(cert), "", `{match: {prefix: /direct}, direct_response: {status: 201, body: {inline_string: hello-h3}}}, {match: {prefix: /}, route: {cluster: backend}}`) + fmt.Sprintf(`
  clusters:
  - name: backend
    type: STATIC
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http_protocol_options: {enable_trailers: true}}
`, uh, upo)
	p := testutil.StartProxy(t, y, nil)
	addr := p.Addr("h3")
	c := h3Client(t, ca)
	base := "https://" + addr

	resp, err := c.Get(base + "/direct")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || string(b) != "hello-h3" || resp.Proto != "HTTP/3.0" {
		t.Fatalf("direct response: %d %q %s", resp.StatusCode, b, resp.Proto)
	}

	// A GET has no body upstream (neither chunked nor a length).
	resp, err = c.Get(base + "/get")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(b), "proto=HTTP/1.1 method=GET path=/get") || !strings.Contains(string(b), "te=[] cl=0") {
		t.Fatalf("routed GET: %d %q", resp.StatusCode, b)
	}

	resp, err = c.Post(base+"/echo", "text/plain", strings.NewReader("posted body"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	want := "proto=HTTP/1.1 method=POST path=/echo host=" + addr + " xfp=https body=posted body"
	if resp.StatusCode != 200 || !strings.HasPrefix(string(b), want) {
		t.Fatalf("routed POST: %d %q, want prefix %q", resp.StatusCode, b, want)
	}
	if resp.Header.Get("x-envoy-upstream-service-time") == "" {
		t.Errorf("no x-envoy-upstream-service-time on the routed response: %v", resp.Header)
	}

	// Request trailers reach the upstream; response trailers come back.
	req, _ := http.NewRequest("POST", base+"/trailers", io.NopCloser(strings.NewReader("with trailers")))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Client-Trailer": {"sent"}}
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "trailer=sent") {
		t.Errorf("request trailer not forwarded: %q", b)
	}
	if got := resp.Trailer.Get("x-up-trailer"); got != "done" {
		t.Errorf("response trailer x-up-trailer = %q, want done (trailers %v)", got, resp.Trailer)
	}

	if n := p.Stat(t, "http.h3.downstream_cx_http3_total"); n != 1 {
		t.Errorf("downstream_cx_http3_total = %d, want 1 (one QUIC connection)", n)
	}
	if n := p.Stat(t, "http.h3.downstream_rq_http3_total"); n != 4 {
		t.Errorf("downstream_rq_http3_total = %d, want 4", n)
	}
}

func TestHTTP3ConfigErrors(t *testing.T) {
	ca := testutil.NewCA(t, "h3-ca")
	cert := ca.Issue(t, "h3.example.com", "h3.example.com")
	tcpHCM := fmt.Sprintf(`
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [%s]}]
`, strings.Replace(fmt.Sprintf(hcmPrefix, "tcp", "{match: {prefix: /}, direct_response: {status: 200}}"), "codec_type: AUTO", "codec_type: HTTP3", 1))
	cases := []struct{ name, listeners, want string }{
		{"HTTP3 codec on TCP", tcpHCM, "codec_type HTTP3 needs a QUIC listener"},
		{"QUIC listener with an HTTP/2 codec", strings.Replace(quicListener("q", certEntryOf(cert), "", "{match: {prefix: /}, direct_response: {status: 200}}"), "codec_type: HTTP3", "codec_type: HTTP2", 1),
			"needs codec_type HTTP3"},
		{"early data", strings.Replace(quicListener("q", certEntryOf(cert), "", "{match: {prefix: /}, direct_response: {status: 200}}"), "          downstream_tls_context:", "          enable_early_data: true\n          downstream_tls_context:", 1),
			"enable_early_data"},
		{"QUIC options on the HCM", strings.Replace(quicListener("q", certEntryOf(cert), "", "{match: {prefix: /}, direct_response: {status: 200}}"), "http3_protocol_options: {}", "http3_protocol_options: {quic_protocol_options: {max_concurrent_streams: 10}}", 1),
			"http3_protocol_options.quic_protocol_options"},
		{"two filter chains", strings.Replace(quicListener("q", certEntryOf(cert), "", "{match: {prefix: /}, direct_response: {status: 200}}"), "    filter_chains:\n", "    filter_chains:\n    - {filter_chain_match: {server_names: [a.example.com]}, filters: [{name: e, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo}}]}\n", 1),
			"filter_chains[1]"},
		{"SNI filter chain match", strings.Replace(quicListener("q", certEntryOf(cert), "", "{match: {prefix: /}, direct_response: {status: 200}}"), "    - transport_socket:", "    - filter_chain_match: {server_names: [h3.example.com]}\n      transport_socket:", 1),
			"filter_chain_match on a QUIC listener"},
		{"network filter before the HCM", strings.Replace(quicListener("q", certEntryOf(cert), "", "{match: {prefix: /}, direct_response: {status: 200}}"), "      filters:\n", "      filters:\n      - {name: cl, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit, stat_prefix: cl, max_connections: 5}}\n", 1),
			"network filters before the connection manager on a QUIC listener"},
		{"TLS transport on a QUIC listener", strings.NewReplacer("name: envoy.transport_sockets.quic", "name: envoy.transport_sockets.tls",
			"quic.v3.QuicDownstreamTransport\n          downstream_tls_context: {common_tls_context:", "tls.v3.DownstreamTlsContext\n          common_tls_context:",
			"]}}\n      filters:", "]}\n      filters:").Replace(quicListener("q", certEntryOf(cert), "", "{match: {prefix: /}, direct_response: {status: 200}}")),
			"needs transport_socket envoy.transport_sockets.quic"},
		{"QUIC transport on TCP", fmt.Sprintf(`
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - transport_socket: {name: envoy.transport_sockets.quic, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport, downstream_tls_context: {common_tls_context: {tls_certificates: [%s]}}}}
      filters: [%s]
`, certEntryOf(cert), fmt.Sprintf(hcmPrefix, "tcp", "{match: {prefix: /}, direct_response: {status: 200}}")), "envoy.transport_sockets.quic is for QUIC listeners"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			y := "static_resources:\n  listeners:" + tc.listeners
			_, err := testutil.TryStartProxy(t, y, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// h3Upstream is a quic-go HTTP/3 server on loopback answering with what
// it got; it returns its UDP address.
func h3Upstream(t *testing.T, cert *testutil.Leaf, name string) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http3.Server{
		TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert.TLS}}),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("x-upstream", name)
			w.Header().Set("Trailer", "x-h3-trailer")
			fmt.Fprintf(w, "%s proto=%s method=%s path=%s host=%s body=%s", name, r.Proto, r.Method, r.URL.Path, r.Host, body)
			w.Header().Set("x-h3-trailer", "t-"+name)
		}),
	}
	go srv.Serve(pc)
	t.Cleanup(func() { srv.Close(); pc.Close() })
	return pc.LocalAddr().String()
}

func quicCluster(name, addr, protocol, tlsCtx string) string {
	h, p, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`
  - name: %s
    type: STATIC
    connect_timeout: 2s
    load_assignment: {cluster_name: %s, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        %s
    transport_socket:
      name: envoy.transport_sockets.quic
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicUpstreamTransport
        upstream_tls_context: %s
`, name, name, h, p, protocol, tlsCtx)
}

func TestHTTP3Upstream(t *testing.T) {
	ca := testutil.NewCA(t, "h3-up-ca")
	cert := ca.Issue(t, "backend.example.com", "backend.example.com")
	addr := h3Upstream(t, cert, "h3-backend")
	tlsCtx := fmt.Sprintf(`{sni: backend.example.com, common_tls_context: {validation_context: {trusted_ca: %s, match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: backend.example.com}}]}}}`, pemInline(ca.CertPEM))
	y := fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [%s]}]
  clusters:`, fmt.Sprintf(hcmPrefix, "ingress", "{match: {prefix: /}, route: {cluster: h3}}")) +
		quicCluster("h3", addr, "explicit_http_config: {http3_protocol_options: {}}", tlsCtx)
	p := testutil.StartProxy(t, y, nil)
	c := testutil.Client()
	for i := range 2 {
		code, hdr, body := testutil.Do(t, c, "POST", p.URL("http", "/up"), fmt.Sprintf("req-%d", i))
		want := fmt.Sprintf("h3-backend proto=HTTP/3.0 method=POST path=/up host=%s body=req-%d", p.Addr("http"), i)
		if code != 200 || body != want || hdr.Get("x-upstream") != "h3-backend" {
			t.Fatalf("request %d: %d %q (headers %v), want %q", i, code, body, hdr, want)
		}
	}
	// One multiplexed QUIC connection served both.
	if n := p.Stat(t, "cluster.h3.upstream_cx_http3_total"); n != 1 {
		t.Errorf("upstream_cx_http3_total = %d, want 1", n)
	}
	if n := p.Stat(t, "cluster.h3.upstream_rq_total"); n != 2 {
		t.Errorf("upstream_rq_total = %d, want 2", n)
	}

	// A certificate the validation context refuses fails the handshake: 503.
	other := testutil.NewCA(t, "other").Issue(t, "backend.example.com", "backend.example.com")
	bad := h3Upstream(t, other, "rogue")
	y2 := fmt.Sprintf(`
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [%s]}]
  clusters:`, fmt.Sprintf(hcmPrefix, "ingress", "{match: {prefix: /}, route: {cluster: h3}}")) +
		quicCluster("h3", bad, "explicit_http_config: {http3_protocol_options: {}}", tlsCtx)
	p2 := testutil.StartProxy(t, y2, nil)
	if code, _, body := testutil.Get(t, c, p2.URL("http", "/")); code != 503 {
		t.Fatalf("untrusted HTTP/3 upstream: %d %q, want 503", code, body)
	}
}

// TestHTTP3AltSvcDownstream: a TCP listener advertises the QUIC listener
// in alt-svc (response_headers_to_add, as Envoy's HTTP/3 examples do); a
// client follows it to HTTP/3.
func TestHTTP3AltSvcDownstream(t *testing.T) {
	ca := testutil.NewCA(t, "h3-ca")
	cert := ca.Issue(t, "h3.example.com", "h3.example.com")
	// The QUIC port must be known to write the advertisement: a free one.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
	pc.Close()
	routes := fmt.Sprintf(`{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: served}}, response_headers_to_add: [{header: {key: alt-svc, value: 'h3=":%s"; ma=86400'}}]}`, port)
	y := `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:` + strings.Replace(quicListener("h3", certEntryOf(cert), "", routes), "port_value: 0", "port_value: "+port, 1) + fmt.Sprintf(`
  - name: https
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [%s], transport_socket: %s}]
`, fmt.Sprintf(hcmPrefix, "tcp", routes), downstreamTLS(certEntryOf(cert), ""))
	p := testutil.StartProxy(t, y, nil)
	tc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "h3.example.com"}}}
	resp, err := tc.Get("https://" + p.Addr("https") + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	as := resp.Header.Get("alt-svc")
	if as != fmt.Sprintf(`h3=":%s"; ma=86400`, port) {
		t.Fatalf("alt-svc over TCP = %q", as)
	}
	// Follow the advertisement: the same host, the advertised UDP port.
	c := h3Client(t, ca)
	resp, err = c.Get("https://127.0.0.1:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Proto != "HTTP/3.0" || string(b) != "served" {
		t.Fatalf("HTTP/3 after alt-svc: %s %q", resp.Proto, b)
	}
}

// TestHTTP3AutoConfigLearnsAltSvc: auto_config with http3_protocol_options
// and an alternate protocols cache sends the first request over TCP, learns
// the upstream's alt-svc, and sends the next ones over HTTP/3.
func TestHTTP3AutoConfigLearnsAltSvc(t *testing.T) {
	ca := testutil.NewCA(t, "h3-up-ca")
	cert := ca.Issue(t, "backend.example.com", "backend.example.com")
	h3addr := h3Upstream(t, cert, "over-h3")
	_, h3port, _ := net.SplitHostPort(h3addr)
	// The TCP side: HTTP/1.1 over TLS, advertising the HTTP/3 endpoint.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert.TLS}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("alt-svc", fmt.Sprintf(`h3=":%s"; ma=3600, h3-29=":%s"`, h3port, h3port))
		fmt.Fprintf(w, "over-tcp proto=%s", r.Proto)
	}))
	tlsCtx := fmt.Sprintf(`{sni: backend.example.com, common_tls_context: {validation_context: {trusted_ca: %s}}}`, pemInline(ca.CertPEM))
	y := fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [%s]}]
  clusters:`, fmt.Sprintf(hcmPrefix, "ingress", "{match: {prefix: /}, route: {cluster: auto}}")) +
		quicCluster("auto", ln.Addr().String(), "auto_config: {http3_protocol_options: {}, alternate_protocols_cache_options: {name: default, max_entries: 10}}", tlsCtx)
	p := testutil.StartProxy(t, y, nil)
	c := testutil.Client()
	code, _, body := testutil.Get(t, c, p.URL("http", "/"))
	if code != 200 || body != "over-tcp proto=HTTP/1.1" {
		t.Fatalf("first request: %d %q, want it over TCP", code, body)
	}
	code, _, body = testutil.Get(t, c, p.URL("http", "/second"))
	if code != 200 || !strings.HasPrefix(body, "over-h3 proto=HTTP/3.0 method=GET path=/second") {
		t.Fatalf("second request: %d %q, want it over HTTP/3", code, body)
	}
	if n := p.Stat(t, "cluster.auto.upstream_cx_http3_total"); n != 1 {
		t.Errorf("upstream_cx_http3_total = %d, want 1", n)
	}
}

func TestHTTP3UpstreamConfigErrors(t *testing.T) {
	tlsCtx := `{common_tls_context: {}}`
	hcm := fmt.Sprintf(hcmPrefix, "ingress", "{match: {prefix: /}, route: {cluster: c}}")
	base := fmt.Sprintf(`
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [%s]}]
  clusters:`, hcm)
	cases := []struct{ name, cluster, want string }{
		{"auto without a cache", quicCluster("c", "127.0.0.1:1", "auto_config: {http3_protocol_options: {}}", tlsCtx), "alternate_protocols_cache_options"},
		{"HTTP/3 over TLS", strings.Replace(strings.Replace(quicCluster("c", "127.0.0.1:1", "explicit_http_config: {http3_protocol_options: {}}", tlsCtx),
			"envoy.transport_sockets.quic", "envoy.transport_sockets.tls", 1), "quic.v3.QuicUpstreamTransport\n        upstream_tls_context: "+tlsCtx, "tls.v3.UpstreamTlsContext\n        common_tls_context: {}", 1),
			"needs transport_socket envoy.transport_sockets.quic"},
		{"QUIC transport on HTTP/1", quicCluster("c", "127.0.0.1:1", "explicit_http_config: {http_protocol_options: {}}", tlsCtx), "envoy.transport_sockets.quic needs"},
		{"cache key-value store", quicCluster("c", "127.0.0.1:1", "auto_config: {http3_protocol_options: {}, alternate_protocols_cache_options: {name: x, canonical_suffixes: [.example.com]}}", tlsCtx), "canonical_suffixes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testutil.TryStartProxy(t, base+tc.cluster, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestHTTP3HeaderLimit: max_headers_count applies to HTTP/3 requests (the
// stream is reset), as to HTTP/1 and HTTP/2 ones.
func TestHTTP3HeaderLimit(t *testing.T) {
	ca := testutil.NewCA(t, "h3-ca")
	cert := ca.Issue(t, "h3.example.com", "h3.example.com")
	y := `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:` + quicListener("h3", certEntryOf(cert), "common_http_protocol_options: {max_headers_count: 8}", `{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: ok}}}`)
	p := testutil.StartProxy(t, y, nil)
	c := h3Client(t, ca)
	resp, err := c.Get("https://" + p.Addr("h3") + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("a request within the limit: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", "https://"+p.Addr("h3")+"/", nil)
	for i := range 12 {
		req.Header.Set(fmt.Sprintf("x-h%d", i), "v")
	}
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a request over max_headers_count was answered: %d", resp.StatusCode)
	}
	if n := p.Stat(t, "http.h3.downstream_rq_header_too_large"); n != 1 {
		t.Errorf("downstream_rq_header_too_large = %d, want 1", n)
	}
}

// TestHTTP3ListenerUpdates: a QUIC listener over file-based LDS serves; a
// filter-chain-only update swaps its chain in place (new connections get
// the new routes); a full update takes the socket over; removing it stops
// HTTP/3 on the port.
func TestHTTP3ListenerUpdates(t *testing.T) {
	ca := testutil.NewCA(t, "h3-ca")
	cert := ca.Issue(t, "h3.example.com", "h3.example.com")
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
	port := testutil.FreePort(t)
	resource := func(statPrefix, body string) string {
		l := quicListener("h3", certEntryOf(cert), "", fmt.Sprintf("{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: %s}}}", body))
		l = strings.Replace(l, "port_value: 0}}", fmt.Sprintf("port_value: %d}}\n    stat_prefix: %s", port, statPrefix), 1)
		l = strings.Replace(l, "  - name: h3", "  - \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n    name: h3", 1)
		return "resources:" + l
	}
	write(resource("q1", "v1"))
	p := testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  lds_config: {resource_api_version: V3, path_config_source: {path: `+lds+`}}
`, nil)
	url := fmt.Sprintf("https://127.0.0.1:%d/", port)
	get := func() string {
		// A new client each time: a new QUIC connection.
		tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "h3.example.com"}}
		defer tr.Close()
		c := &http.Client{Transport: tr, Timeout: 2 * time.Second}
		resp, err := c.Get(url)
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return get() == "v1" }, "the LDS QUIC listener does not serve")
	write(resource("q1", "v2")) // only the filter chain changes
	testutil.Eventually(t, 10*time.Second, func() bool { return get() == "v2" }, "the in-place update is not served")
	write(resource("q2", "v3")) // a listener-level change: a new listener
	testutil.Eventually(t, 10*time.Second, func() bool { return get() == "v3" }, "the full update is not served")
	if n := p.Stat(t, "listener.q2.downstream_cx_total"); n < 1 {
		t.Errorf("listener.q2.downstream_cx_total = %d, want the new listener to count connections", n)
	}
	write("resources: []\n")
	testutil.Eventually(t, 10*time.Second, func() bool { return strings.HasPrefix(get(), "error: ") }, "the removed QUIC listener still serves")
}
