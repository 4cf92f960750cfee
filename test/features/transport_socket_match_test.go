// transport_socket_matches: one cluster, a transport socket per endpoint
// chosen by its envoy.transport_socket_match metadata (Istio's tlsMode
// during a sidecar rollout: mTLS to meshed pods, plaintext to the rest).

package features_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestTransportSocketMatches(t *testing.T) {
	ca := testutil.NewCA(t, "mesh")
	serverCert := ca.Issue(t, "b", "b.internal")
	clientCert := ca.Issue(t, "a", "a.internal")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls client=%s", r.TLS.PeerCertificates[0].Subject.CommonName)
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{serverCert.TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()
	plain := testutil.StartUpstream(t, testutil.EchoHandler("plain"))

	endpoint := func(addr, md string) string {
		h, port, _ := net.SplitHostPort(addr)
		return fmt.Sprintf(`{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}%s}`, h, port, md)
	}
	tlsSocket := fmt.Sprintf(`{name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, sni: b.internal,
	  common_tls_context: {tls_certificates: [{certificate_chain: %s, private_key: %s}], validation_context: {trusted_ca: %s}}}}`,
		pemInline(clientCert.CertPEM), pemInline(clientCert.KeyPEM), pemInline(ca.CertPEM))
	cluster := fmt.Sprintf(`[{name: m, type: STATIC, connect_timeout: 1s, lb_policy: ROUND_ROBIN,
	  transport_socket_matches: [{name: tlsMode-istio, match: {tlsMode: istio}, transport_socket: %s}],
	  load_assignment: {cluster_name: m, endpoints: [{lb_endpoints: [%s, %s]}]}}]`, tlsSocket,
		endpoint(ln.Addr().String(), `, metadata: {filter_metadata: {envoy.transport_socket_match: {tlsMode: istio}}}`),
		endpoint(plain.Addr, ""))
	p := start(t, cfg{vhosts: vhost(`{match: {prefix: /}, route: {cluster: m}}`), clusters: cluster})

	seen := map[string]int{}
	c := testutil.Client()
	for range 10 {
		code, _, body := testutil.Get(t, c, p.URL("http", "/"))
		if code != 200 {
			t.Fatalf("request: %d %q", code, body)
		}
		switch {
		case body == "tls client=a":
			seen["tls"]++
		case strings.Contains(body, "upstream=plain"):
			seen["plain"]++
		default:
			t.Fatalf("unexpected answer %q", body)
		}
	}
	if seen["tls"] != 5 || seen["plain"] != 5 {
		t.Errorf("round robin over both endpoints, each over its own socket: %v", seen)
	}
	// Envoy counts the hosts resolved to each socket.
	if n := p.Stat(t, "cluster.m.tlsMode-istio.total_match_count"); n != 1 {
		t.Errorf("tlsMode-istio.total_match_count = %d, want 1", n)
	}
	if n := p.Stat(t, "cluster.m.default.total_match_count"); n != 1 {
		t.Errorf("default.total_match_count = %d, want 1", n)
	}
}

func TestTransportSocketMatchesConfigErrors(t *testing.T) {
	for _, c := range []struct{ matches, want string }{
		{`[{match: {tlsMode: istio}, transport_socket: {name: envoy.transport_sockets.raw_buffer, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}}]`, "transport_socket_matches[0].name"},
		{`[{name: x, match: {tlsMode: istio}}]`, "transport_socket_matches[0].transport_socket"},
	} {
		clusters := `[{name: m, type: STATIC, connect_timeout: 1s, transport_socket_matches: ` + c.matches + `, load_assignment: {cluster_name: m, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}}]`
		_, err := testutil.TryStartProxy(t, cfg{vhosts: vhost(`{match: {prefix: /}, route: {cluster: m}}`), clusters: clusters}.String(), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %s", c.matches, err, c.want)
		}
	}
}
