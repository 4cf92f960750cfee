// Upstream TLS: UpstreamTlsContext (SNI, client certificates, SAN
// validation, ALPN, auto_sni).

package features_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

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
