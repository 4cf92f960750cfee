// Downstream TLS: SNI filter chain selection, mTLS, passthrough,
// certificate and CA rotation, session resumption.

package features_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/legateproxy/legate/internal/testutil"
)

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

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }

// TestClientCARotationEndsResumption: with fixed session_ticket_keys, a
// client whose CA the listener no longer trusts must not get back in by
// resuming a session from before the rotation (Go skips certificate
// verification on resumption unless VerifyConnection checks it).
func TestClientCARotationEndsResumption(t *testing.T) {
	ca1, ca2 := testutil.NewCA(t, "ca-one"), testutil.NewCA(t, "ca-two")
	server := ca1.Issue(t, "server", "mtls.example.com")
	client := ca1.Issue(t, "client", "spiffe://cluster.local/ns/default/sa/client")
	dir := t.TempDir()
	sdsFile := filepath.Join(dir, "ca.yaml")
	writeCA := func(pem []byte) {
		tmp := sdsFile + ".tmp"
		os.WriteFile(tmp, []byte(fmt.Sprintf(`resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: client_ca
  validation_context: {trusted_ca: {inline_bytes: %s}}
`, base64.StdEncoding.EncodeToString(pem))), 0o644)
		if err := os.Rename(tmp, sdsFile); err != nil {
			t.Fatal(err)
		}
	}
	writeCA(ca1.CertPEM)
	ticketKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 80))
	y := fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: https
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters: [%s]
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          session_ticket_keys: {keys: [{inline_bytes: %s}]}
          common_tls_context:
            tls_certificates: [{certificate_chain: %s, private_key: %s}]
            validation_context_sds_secret_config:
              name: client_ca
              sds_config: {path_config_source: {path: %s}, resource_api_version: V3}
`, fmt.Sprintf(hcmPrefix, "s", "{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: ok}}}"),
		ticketKey, pemInline(server.CertPEM), pemInline(server.KeyPEM), sdsFile)
	p := testutil.StartProxy(t, y, nil)
	sessions := tls.NewLRUClientSessionCache(8)
	// get makes one request on a new connection; it reports whether the
	// TLS session was resumed.
	get := func(cache tls.ClientSessionCache) (resumed bool, err error) {
		cfg := &tls.Config{ServerName: "mtls.example.com", RootCAs: ca1.Pool, Certificates: []tls.Certificate{client.TLS},
			ClientSessionCache: cache, MaxVersion: tls.VersionTLS12}
		c, err := tls.Dial("tcp", p.Addr("https"), cfg)
		if err != nil {
			return false, err
		}
		defer c.Close()
		resumed = c.ConnectionState().DidResume
		c.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		b, err := io.ReadAll(c)
		if err != nil {
			return resumed, err
		}
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 200")) {
			return resumed, fmt.Errorf("response %q", b)
		}
		return resumed, nil
	}
	if _, err := get(sessions); err != nil {
		t.Fatalf("first handshake: %v", err)
	}
	if resumed, err := get(sessions); err != nil || !resumed {
		t.Fatalf("second connection should resume the session: resumed=%v err=%v", resumed, err)
	}
	// The listener now trusts only ca2.
	writeCA(ca2.CertPEM)
	testutil.Eventually(t, 5*time.Second, func() bool { _, err := get(nil); return err != nil }, "the rotated CA does not refuse new handshakes")
	if resumed, err := get(sessions); err == nil {
		t.Fatalf("a client the new CA refuses got in by resuming a session (resumed=%v)", resumed)
	}
}
