// Forwarded headers: x-forwarded-for/-proto, x-envoy-internal, via,
// x-forwarded-client-cert.

package features_test

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestForwardedHeaders(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	cases := []struct {
		name    string
		hcm     string
		reqHdr  []string
		want    []string
		notWant []string
	}{
		{
			name:   "edge: use_remote_address appends the peer and marks internal",
			hcm:    "use_remote_address: true",
			reqHdr: []string{"x-forwarded-for", "203.0.113.7", "x-envoy-retry-on", "5xx"},
			want:   []string{"header:x-forwarded-for=203.0.113.7,127.0.0.1", "header:x-envoy-internal=true", "header:x-forwarded-proto=http"},
		},
		{
			name:   "edge with trusted hops: the client address comes from XFF",
			hcm:    "use_remote_address: true\nxff_num_trusted_hops: 1\ninternal_address_config: {cidr_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]}",
			reqHdr: []string{"x-forwarded-for", "203.0.113.7", "x-envoy-retry-on", "5xx", "x-request-id", "client-id"},
			want:   []string{"header:x-forwarded-for=203.0.113.7,127.0.0.1", "header:x-envoy-external-address=203.0.113.7"},
			// An external request loses x-envoy-* control headers and its request id.
			notWant: []string{"x-envoy-retry-on", "x-envoy-internal", "client-id"},
		},
		{
			name:   "sidecar: XFF untouched, x-forwarded-proto kept",
			hcm:    "use_remote_address: false",
			reqHdr: []string{"x-forwarded-for", "198.51.100.1", "x-forwarded-proto", "https", "x-request-id", "keep-me"},
			want:   []string{"header:x-forwarded-for=198.51.100.1", "header:x-forwarded-proto=https", "header:x-request-id=keep-me"},
		},
		{
			name:    "skip_xff_append and via",
			hcm:     "use_remote_address: true\nskip_xff_append: true\nvia: legate-edge",
			reqHdr:  []string{"x-forwarded-for", "203.0.113.9"},
			want:    []string{"header:x-forwarded-for=203.0.113.9", "header:via=legate-edge"},
			notWant: []string{"203.0.113.9,127.0.0.1"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, cfg{
				hcm:      tc.hcm,
				vhosts:   vhost("{match: {prefix: /}, route: {cluster: u}}"),
				clusters: "[" + staticCluster("u", "", u.Addr) + "]",
			})
			_, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/"), tc.reqHdr...)
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("upstream request lacks %q:\n%s", w, body)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(body, w) {
					t.Errorf("upstream request has %q:\n%s", w, body)
				}
			}
		})
	}
}

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
