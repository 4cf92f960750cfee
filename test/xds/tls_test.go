package xds

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestXDSOverMutualTLS: the xDS stream goes through the xds cluster's
// transport socket, as in Envoy, so an UpstreamTlsContext with a client
// certificate gives an authenticated, encrypted control-plane channel to a
// management server that requires client certificates. A proxy without
// the certificate gets nothing.
func TestXDSOverMutualTLS(t *testing.T) {
	ca := testutil.NewCA(t, "mesh-ca")
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	os.WriteFile(caFile, ca.CertPEM, 0o644)
	clientCrt, clientKey := ca.Issue(t, "legate", "spiffe://cluster.local/ns/default/sa/legate").WriteFiles(t, dir, "client")
	serverLeaf := ca.Issue(t, "xds", "xds.example.com")

	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var peers []string
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serverLeaf.TLS}, ClientCAs: ca.Pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				peers = append(peers, cs.PeerCertificates[0].Subject.CommonName)
			}
			return nil
		}})
	srv := grpc.NewServer(grpc.Creds(creds))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, serverv3.NewServer(context.Background(), cache, nil))
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	backends := upstreams(t, 1)
	w := &world{listen: freeAddr(t), endpoints: backends}
	if err := cache.SetSnapshot(context.Background(), nodeID, w.snapshot(t)); err != nil {
		t.Fatal(err)
	}
	h, port, _ := net.SplitHostPort(ln.Addr().String())
	boot := func(withCert bool) string {
		cert := ""
		if withCert {
			cert = fmt.Sprintf("tls_certificates: [{certificate_chain: {filename: %s}, private_key: {filename: %s}}]", clientCrt, clientKey)
		}
		return fmt.Sprintf(`
node: {id: %s, cluster: test}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  ads_config: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: xds}}]}
  cds_config: {ads: {}, resource_api_version: V3, initial_fetch_timeout: 1s}
  lds_config: {ads: {}, resource_api_version: V3, initial_fetch_timeout: 1s}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: xds.example.com
        common_tls_context:
          %s
          validation_context:
            trusted_ca: {filename: %s}
            match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: xds.example.com}}]
    load_assignment: {cluster_name: xds, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
`, nodeID, cert, caFile, h, port)
	}
	p := testutil.StartProxy(t, boot(true), nil)
	url := "http://" + w.listen + "/"
	testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(url); return b == "b0" }, "no config over the mTLS xDS channel")
	if len(peers) == 0 || peers[0] != "legate" {
		t.Errorf("management server saw client certificates %v, want legate", peers)
	}
	if n := p.Stat(t, "cluster.xds.ssl.handshake"); n < 1 {
		t.Errorf("cluster.xds.ssl.handshake = %d", n)
	}

	// Without a client certificate the server refuses the stream.
	w2 := &world{listen: freeAddr(t), endpoints: backends}
	cache.SetSnapshot(context.Background(), nodeID, w2.snapshot(t))
	time.Sleep(200 * time.Millisecond)
	p2 := testutil.StartProxy(t, strings.Replace(boot(false), "id: "+nodeID, "id: other", 1), nil)
	time.Sleep(500 * time.Millisecond)
	if n := p2.Stat(t, "control_plane.connected_state"); n != 0 {
		t.Errorf("a proxy without a client certificate connected (connected_state %d)", n)
	}
	if n := p2.Stat(t, "listener_manager.lds.update_success"); n != 0 {
		t.Errorf("a proxy without a client certificate got listeners")
	}
}

// TestSDSOverADSForStaticCluster: a static cluster's upstream TLS
// validation context comes over SDS on the ADS stream (static clusters
// compile after the ADS stream is set up); a secret with another CA then
// makes the upstream handshake fail, so the secret is what verifies.
func TestSDSOverADSForStaticCluster(t *testing.T) {
	ca := testutil.NewCA(t, "backend-ca")
	other := testutil.NewCA(t, "other-ca")
	// Each response closes its connection, so every request is a new
	// upstream handshake with the secret of the moment.
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.Write([]byte("tls-backend"))
	}))
	backend.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "backend", "backend.example.com").TLS}}
	backend.StartTLS()
	t.Cleanup(backend.Close)
	bh, bp, _ := net.SplitHostPort(backend.Listener.Addr().String())

	cp := startControlPlane(t, "")
	version := 0
	pushCA := func(pem []byte) {
		version++
		sec := &tlsv3.Secret{Name: "backend_ca", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: pem}}}}}
		if err := cp.cache.SetSnapshot(context.Background(), nodeID, snapshotOf(t, version, map[resourcev3.Type][]types.Resource{
			resourcev3.SecretType: {sec}})); err != nil {
			t.Fatal(err)
		}
	}
	pushCA(ca.CertPEM)
	h, port, _ := net.SplitHostPort(cp.addr)
	p := testutil.StartProxy(t, fmt.Sprintf(`
node: {id: %s, cluster: test}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  ads_config: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: xds}}]}
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
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: backend}}]}]
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: backend.example.com
        common_tls_context:
          validation_context_sds_secret_config:
            name: backend_ca
            sds_config: {ads: {}, resource_api_version: V3}
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: xds, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
`, nodeID, bh, bp, h, port), nil)
	if c, body := get(t, p.URL("main", "/")); c != 200 || body != "tls-backend" {
		t.Fatalf("upstream TLS verified by an SDS-over-ADS CA: %d %q", c, body)
	}
	pushCA(other.CertPEM)
	testutil.Eventually(t, 10*time.Second, func() bool {
		c, _, _ := getQuiet(p.URL("main", "/"))
		return c == 503
	}, "a CA that did not sign the backend still verifies it: the SDS secret is not what verifies")
}
