package proxy_test

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/legateproxy/legate/internal/testutil"
)

func pemInline(b []byte) string { return fmt.Sprintf("{inline_string: %q}", string(b)) }

const hcmPrefix = `{name: envoy.filters.network.http_connection_manager, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: %s, codec_type: AUTO,
  http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}],
  route_config: {virtual_hosts: [{name: v, domains: ['*'], routes: [%s]}]}}}`

func downstreamTLS(certs string, extra string) string {
	return fmt.Sprintf(`{name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, common_tls_context: {alpn_protocols: [h2, http/1.1], tls_certificates: [%s] %s}}}`, certs, extra)
}

func TestSNIRoutingMTLSAndPassthrough(t *testing.T) {
	ca := testutil.NewCA(t, "test-ca")
	other := testutil.NewCA(t, "other-ca")
	certA := ca.Issue(t, "a.example.com", "a.example.com", "mtls.a.example.com")
	certB := ca.Issue(t, "b.example.com", "*.b.example.com", "b.example.com")
	client := ca.Issue(t, "client", "spiffe://cluster.local/ns/default/sa/frontend")
	rogue := other.Issue(t, "rogue", "spiffe://cluster.local/ns/default/sa/frontend")
	// The passthrough backend terminates TLS itself and reports the SNI.
	backendCert := ca.Issue(t, "c.example.com", "c.example.com")
	bln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{backendCert.TLS}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer bln.Close()
	go http.Serve(bln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend saw SNI %s", r.TLS.ServerName)
	}))
	certEntry := func(l *testutil.Leaf) string {
		return fmt.Sprintf("{certificate_chain: %s, private_key: %s}", pemInline(l.CertPEM), pemInline(l.KeyPEM))
	}
	mtlsValidation := fmt.Sprintf(`, validation_context: {trusted_ca: %s, match_typed_subject_alt_names: [{san_type: URI, matcher: {prefix: "spiffe://cluster.local/"}}]}`, pemInline(ca.CertPEM))
	bh, bp, _ := net.SplitHostPort(bln.Addr().String())
	y := fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: https
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    listener_filters: [{name: envoy.filters.listener.tls_inspector, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}]
    filter_chains:
    - filter_chain_match: {server_names: [a.example.com]}
      filters: [%s]
      transport_socket: %s
    - filter_chain_match: {server_names: ["*.b.example.com", b.example.com]}
      filters: [%s]
      transport_socket: %s
    - filter_chain_match: {server_names: [mtls.a.example.com]}
      filters: [%s]
      transport_socket: {name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, require_client_certificate: true, common_tls_context: {tls_certificates: [%s] %s}}}
    - filter_chain_match: {server_names: [c.example.com]}
      filters: [{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: passthrough, cluster: backend}}]
  clusters:
  - {name: backend, type: STATIC, load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}}
`,
		fmt.Sprintf(hcmPrefix, "a", "{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: chain-a}}}"), downstreamTLS(certEntry(certA), ""),
		fmt.Sprintf(hcmPrefix, "b", "{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: chain-b}}}"), downstreamTLS(certEntry(certB), ""),
		fmt.Sprintf(hcmPrefix, "m", "{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: mtls}}, response_headers_to_add: [{header: {key: x-peer, value: \"%DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_TLS_VERSION%\"}}]}"), certEntry(certA), mtlsValidation,
		bh, bp)
	p := testutil.StartProxy(t, y, nil)
	addr := p.Addr("https")
	var lastPeer string
	get := func(sni string, h2 bool, certs ...tls.Certificate) (string, *tls.ConnectionState, error) {
		cfg := &tls.Config{ServerName: sni, RootCAs: ca.Pool}
		if len(certs) > 0 {
			// Send the certificate whatever CAs the server asks for.
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
		}
		if h2 {
			cfg.NextProtos = []string{"h2"}
		}
		var st *tls.ConnectionState
		tr := &http.Transport{DialTLS: func(network, a string) (net.Conn, error) {
			c, err := tls.Dial("tcp", addr, cfg)
			if err == nil {
				s := c.ConnectionState()
				st = &s
			}
			return c, err
		}}
		var rt http.RoundTripper = tr
		if h2 {
			rt = &http2.Transport{DialTLS: func(network, a string, _ *tls.Config) (net.Conn, error) {
				c, err := tls.Dial("tcp", addr, cfg)
				if err == nil {
					s := c.ConnectionState()
					st = &s
				}
				return c, err
			}}
		}
		c := &http.Client{Transport: rt, Timeout: 5 * time.Second}
		resp, err := c.Get("https://" + sni + "/")
		if err != nil {
			return "", st, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		lastPeer = resp.Header.Get("x-peer")
		return resp.Proto + " " + string(b), st, nil
	}
	cases := []struct {
		sni, want, cn string
		h2            bool
	}{
		{"a.example.com", "HTTP/1.1 chain-a", "a.example.com", false},
		{"x.b.example.com", "HTTP/1.1 chain-b", "b.example.com", false},
		{"b.example.com", "HTTP/2.0 chain-b", "b.example.com", true},
	}
	for _, tc := range cases {
		body, st, err := get(tc.sni, tc.h2)
		if err != nil || body != tc.want {
			t.Errorf("SNI %s: %q %v, want %q", tc.sni, body, err, tc.want)
			continue
		}
		if st.PeerCertificates[0].Subject.CommonName != tc.cn {
			t.Errorf("SNI %s served certificate %s", tc.sni, st.PeerCertificates[0].Subject.CommonName)
		}
	}
	// Unknown SNI and no default chain: the connection is refused.
	if _, _, err := get("nomatch.example.org", false); err == nil {
		t.Errorf("a connection that matches no filter chain must be closed")
	}
	// mTLS: no certificate, an untrusted one, then a good one.
	if _, _, err := get("mtls.a.example.com", false); err == nil {
		t.Errorf("mTLS without a client certificate must fail")
	}
	if _, _, err := get("mtls.a.example.com", false, rogue.TLS); err == nil {
		t.Errorf("mTLS with an untrusted client certificate must fail")
	}
	if body, _, err := get("mtls.a.example.com", false, client.TLS); err != nil || body != "HTTP/1.1 mtls" || lastPeer != "spiffe://cluster.local/ns/default/sa/frontend TLSv1.3" {
		t.Errorf("mTLS with a good certificate: %q %v (x-peer %q)", body, err, lastPeer)
	}
	// Passthrough: the backend terminates TLS with its own certificate and
	// sees the original SNI.
	body, st, err := get("c.example.com", false)
	if err != nil || body != "HTTP/1.1 backend saw SNI c.example.com" || st.PeerCertificates[0].Subject.CommonName != "c.example.com" {
		t.Errorf("passthrough: %q %v", body, err)
	}
	if n := p.Stat(t, "listener.127.0.0.1_0.ssl.handshake"); n < 4 {
		t.Errorf("ssl.handshake = %d", n)
	}
	if n := p.Stat(t, "listener.127.0.0.1_0.ssl.fail_verify_error"); n < 1 {
		t.Errorf("ssl.fail_verify_error = %d", n)
	}
	// Real clients: curl --resolve and openssl s_client.
	if _, err := exec.LookPath("curl"); err == nil {
		caFile := t.TempDir() + "/ca.pem"
		os.WriteFile(caFile, ca.CertPEM, 0o644)
		out, err := exec.Command("curl", "-s", "--cacert", caFile, "--resolve", "a.example.com:"+portOf(addr)+":127.0.0.1", "https://a.example.com:"+portOf(addr)+"/").CombinedOutput()
		if err != nil || string(out) != "chain-a" {
			t.Errorf("curl --resolve: %q %v", out, err)
		}
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		cmd := exec.Command("openssl", "s_client", "-connect", addr, "-servername", "x.b.example.com", "-brief")
		cmd.Stdin = strings.NewReader("")
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), "b.example.com") {
			t.Errorf("openssl s_client did not see the b certificate:\n%s", out)
		}
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func TestCertificateRotationFromFiles(t *testing.T) {
	ca := testutil.NewCA(t, "ca")
	dir := t.TempDir()
	first := ca.Issue(t, "first", "rot.example.com")
	crt, key := first.WriteFiles(t, dir, "server")
	y := fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: https
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters: [%s]
      transport_socket: %s
`, fmt.Sprintf(hcmPrefix, "r", "{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: ok}}}"),
		downstreamTLS(fmt.Sprintf("{certificate_chain: {filename: %s}, private_key: {filename: %s}}", crt, key), ""))
	p := testutil.StartProxy(t, y, nil)
	dial := func() *tls.Conn {
		c, err := tls.Dial("tcp", p.Addr("https"), &tls.Config{ServerName: "rot.example.com", RootCAs: ca.Pool, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	old := dial()
	defer old.Close()
	if got := old.ConnectionState().PeerCertificates[0].Subject.CommonName; got != "first" {
		t.Fatalf("initial certificate %s", got)
	}
	second := ca.Issue(t, "second", "rot.example.com")
	second.WriteFiles(t, dir, "server")
	testutil.Eventually(t, 5*time.Second, func() bool {
		c := dial()
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName == "second"
	}, "rotated certificate not served on new handshakes")
	// The connection made before the rotation still works.
	fmt.Fprintf(old, "GET / HTTP/1.1\r\nHost: rot.example.com\r\n\r\n")
	resp, err := http.ReadResponse(bufioReader(old), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("old connection after rotation: %v %v", resp, err)
	}
}

func TestUpstreamTLS(t *testing.T) {
	ca := testutil.NewCA(t, "ca")
	serverCert := ca.Issue(t, "backend", "backend.internal")
	clientCert := ca.Issue(t, "proxy", "spiffe://legate/proxy")
	var mu sync.Mutex
	var sawSNI, sawClient string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sawSNI = r.TLS.ServerName
		if len(r.TLS.PeerCertificates) > 0 {
			sawClient = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		mu.Unlock()
		fmt.Fprintf(w, "tls %s %s", r.Proto, r.TLS.NegotiatedProtocol)
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{serverCert.TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool}}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()
	bh, bp, _ := net.SplitHostPort(ln.Addr().String())
	wrongCA := testutil.NewCA(t, "wrong")
	upTLS := func(caPEM []byte, san string) string {
		return fmt.Sprintf(`transport_socket: {name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, sni: backend.internal,
		  common_tls_context: {tls_certificates: [{certificate_chain: %s, private_key: %s}], validation_context: {trusted_ca: %s, match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: %s}}]}}}}`,
			pemInline(clientCert.CertPEM), pemInline(clientCert.KeyPEM), pemInline(caPEM), san)
	}
	h2 := "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}"
	autoSNI := `transport_socket: {name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext,
		  common_tls_context: {tls_certificates: [{certificate_chain: ` + pemInline(clientCert.CertPEM) + `, private_key: ` + pemInline(clientCert.KeyPEM) + `}], validation_context: {trusted_ca: ` + pemInline(ca.CertPEM) + `}}}},
		  typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions,
		    upstream_http_protocol_options: {auto_sni: true, auto_san_validation: true}, explicit_http_config: {http_protocol_options: {}}}}`
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /good}, route: {cluster: good}}", "{match: {prefix: /h2}, route: {cluster: h2}}", "{match: {prefix: /auto}, route: {cluster: auto}}",
			"{match: {prefix: /badca}, route: {cluster: badca}}", "{match: {prefix: /badsan}, route: {cluster: badsan}}"),
		clusters: "[" + staticCluster("good", upTLS(ca.CertPEM, "backend.internal"), ln.Addr().String()) + ", " +
			staticCluster("h2", upTLS(ca.CertPEM, "backend.internal")+", "+h2, ln.Addr().String()) + ", " +
			staticCluster("badca", upTLS(wrongCA.CertPEM, "backend.internal"), ln.Addr().String()) + ", " +
			staticCluster("badsan", upTLS(ca.CertPEM, "other.internal"), ln.Addr().String()) + ", " +
			staticCluster("auto", autoSNI, ln.Addr().String()) + "]",
	})
	_ = bh
	_ = bp
	c := testutil.Client()
	if code, _, body := testutil.Get(t, c, p.URL("http", "/good")); code != 200 || body != "tls HTTP/1.1 http/1.1" {
		t.Fatalf("upstream TLS: %d %q", code, body)
	}
	mu.Lock()
	if sawSNI != "backend.internal" || sawClient != "proxy" {
		t.Errorf("backend saw SNI %q and client certificate %q", sawSNI, sawClient)
	}
	mu.Unlock()
	if code, _, body := testutil.Get(t, c, p.URL("http", "/h2")); code != 200 || body != "tls HTTP/2.0 h2" {
		t.Fatalf("upstream TLS with ALPN h2: %d %q", code, body)
	}
	for _, path := range []string{"/badca", "/badsan"} {
		if code, _, body := testutil.Get(t, c, p.URL("http", path)); code != 503 || !strings.Contains(body, "upstream connect error") {
			t.Errorf("%s: %d %q, want 503 connection failure", path, code, body)
		}
	}
	// auto_sni: the request's host is the server name; auto_san_validation
	// checks the certificate against it.
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/auto"), "host", "backend.internal:8080"); code != 200 {
		t.Errorf("auto_sni: %d", code)
	}
	mu.Lock()
	if sawSNI != "backend.internal" {
		t.Errorf("auto_sni: backend saw SNI %q", sawSNI)
	}
	mu.Unlock()
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/auto"), "host", "evil.example"); code != 503 {
		t.Errorf("auto_san_validation must refuse a certificate not valid for the SNI: %d", code)
	}
	if n := p.Stat(t, "cluster.badsan.ssl.fail_verify_san"); n < 1 {
		t.Errorf("cluster.badsan.ssl.fail_verify_san = %d", n)
	}
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }

// TestForwardClientCert: x-forwarded-client-cert as Envoy — stripped by
// default (SANITIZE) so clients cannot forge it, and set from the verified
// client certificate with SANITIZE_SET and set_current_client_cert_details.
func TestForwardClientCert(t *testing.T) {
	ca := testutil.NewCA(t, "xfcc-ca")
	server := ca.Issue(t, "srv.example.com", "srv.example.com")
	client := ca.Issue(t, "client", "spiffe://cluster.local/ns/default/sa/frontend", "client.example.com")
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	uh, upp, _ := net.SplitHostPort(up.Addr)
	hcm := func(prefix, extra string) string {
		return fmt.Sprintf(`{name: envoy.filters.network.http_connection_manager, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: %s, %s
  http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}],
  route_config: {virtual_hosts: [{name: v, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: up}}]}]}}}`, prefix, extra)
	}
	y := fmt.Sprintf(`
static_resources:
  listeners:
  - name: plain
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [%s]}]
  - name: mtls
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters: [%s]
      transport_socket: {name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, require_client_certificate: true, common_tls_context: {tls_certificates: [{certificate_chain: %s, private_key: %s}], validation_context: {trusted_ca: %s}}}}
  clusters:
  - {name: up, type: STATIC, load_assignment: {cluster_name: up, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}}
`, hcm("plain", ""), hcm("mtls", "forward_client_cert_details: SANITIZE_SET, set_current_client_cert_details: {subject: true, uri: true, dns: true},"),
		pemInline(server.CertPEM), pemInline(server.KeyPEM), pemInline(ca.CertPEM), uh, upp)
	p := testutil.StartProxy(t, y, nil)
	forged := "Hash=forged;Subject=\"CN=admin\""
	_, _, body := testutil.Get(t, testutil.Client(), "http://"+p.Addr("plain")+"/", "x-forwarded-client-cert", forged)
	if strings.Contains(body, "x-forwarded-client-cert") {
		t.Errorf("a forged x-forwarded-client-cert reached the upstream on a plain listener:\n%s", body)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: "srv.example.com", RootCAs: ca.Pool, Certificates: []tls.Certificate{client.TLS}}}}
	req, _ := http.NewRequest("GET", "https://"+p.Addr("mtls")+"/", nil)
	req.Header.Set("x-forwarded-client-cert", forged)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	sum := sha256.Sum256(client.Cert.Raw)
	want := fmt.Sprintf(`header:x-forwarded-client-cert=Hash=%s;Subject="CN=client";URI=spiffe://cluster.local/ns/default/sa/frontend;DNS=client.example.com`, hex.EncodeToString(sum[:]))
	if !strings.Contains(string(b), want+"\n") {
		t.Errorf("upstream saw:\n%s\nwant the line %s", b, want)
	}
}
