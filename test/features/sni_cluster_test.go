// SNI cluster: envoy.filters.network.sni_cluster names the upstream
// cluster after the connection's SNI, through the envoy.tcp_proxy.cluster
// filter state that tcp_proxy honours over its configured cluster.

package features_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestSNICluster(t *testing.T) {
	named, fallback := startTCPEcho(t), startTCPEcho(t)
	ca := testutil.NewCA(t, "sni-ca")
	cert := ca.Issue(t, "sni", "a.example.com", "unknown.example.com")
	ts := fmt.Sprintf(`, transport_socket: {name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext,
		common_tls_context: {tls_certificates: [{certificate_chain: %s, private_key: %s}]}}}`, pemInline(cert.CertPEM), pemInline(cert.KeyPEM))
	sni := `{name: envoy.filters.network.sni_cluster, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.sni_cluster.v3.SniCluster}}`
	p := testutil.StartProxy(t, netBootstrap(netListener("sni", sni, "fallback", ts), "",
		named.Cluster("a.example.com"), fallback.Cluster("fallback")), nil)

	send := func(serverName, data string) string {
		t.Helper()
		c, err := tls.Dial("tcp", p.Addr("sni"), &tls.Config{RootCAs: ca.Pool, ServerName: serverName, InsecureSkipVerify: serverName == ""})
		if err != nil {
			t.Fatalf("handshake (SNI %q): %v", serverName, err)
		}
		return tcpEchoExchange(t, c, data)
	}
	if got := send("a.example.com", "to-a"); got != "to-a" {
		t.Fatalf("SNI a.example.com: got %q", got)
	}
	if named.Received() != "to-a" || fallback.Received() != "" {
		t.Fatalf("SNI a.example.com went to named=%q fallback=%q", named.Received(), fallback.Received())
	}
	// No SNI (an IP address): the configured cluster.
	if got := send("", "no-sni"); got != "no-sni" {
		t.Fatalf("without SNI: got %q", got)
	}
	if fallback.Received() != "no-sni" {
		t.Fatalf("without SNI the fallback cluster got %q", fallback.Received())
	}
	// An SNI that names no cluster: no route, as Envoy.
	if got := send("unknown.example.com", "lost"); got != "" {
		t.Fatalf("unknown cluster: got %q", got)
	}
	testutil.Eventually(t, 3*time.Second, func() bool { return p.Stat(t, "tcp.sni.downstream_cx_no_route") == 1 },
		"tcp.sni.downstream_cx_no_route = %d", p.Stat(t, "tcp.sni.downstream_cx_no_route"))
	if named.Conns() != 1 || fallback.Conns() != 1 {
		t.Errorf("upstream connections: named %d, fallback %d", named.Conns(), fallback.Conns())
	}
}

// With weighted_clusters tcp_proxy ignores the per-connection cluster, as
// Envoy's getRouteFromEntries.
func TestSNIClusterWeightedClustersWin(t *testing.T) {
	named, weighted := startTCPEcho(t), startTCPEcho(t)
	ca := testutil.NewCA(t, "sni-ca")
	cert := ca.Issue(t, "sni", "a.example.com")
	y := fmt.Sprintf(`admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: sni
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - {name: envoy.filters.network.sni_cluster, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.sni_cluster.v3.SniCluster}}
      - {name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: w,
          weighted_clusters: {clusters: [{name: weighted, weight: 1}]}}}
      transport_socket: {name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext,
        common_tls_context: {tls_certificates: [{certificate_chain: %s, private_key: %s}]}}}
  clusters: [%s, %s]
`, pemInline(cert.CertPEM), pemInline(cert.KeyPEM), named.Cluster("a.example.com"), weighted.Cluster("weighted"))
	p := testutil.StartProxy(t, y, nil)
	c, err := tls.Dial("tcp", p.Addr("sni"), &tls.Config{RootCAs: ca.Pool, ServerName: "a.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if got := tcpEchoExchange(t, c, "w"); got != "w" {
		t.Fatalf("got %q", got)
	}
	if weighted.Received() != "w" || named.Received() != "" {
		t.Errorf("weighted=%q named=%q", weighted.Received(), named.Received())
	}
}

// On a chain that passes TLS through (no transport_socket), the SNI the
// TLS inspector read picks the cluster: sni_cluster's main use.
func TestSNIClusterTLSPassthrough(t *testing.T) {
	named, fallback := startTCPEcho(t), startTCPEcho(t)
	y := fmt.Sprintf(`admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: sni
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    listener_filters: [{name: envoy.filters.listener.tls_inspector, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}]
    filter_chains:
    - filters:
      - {name: envoy.filters.network.sni_cluster, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.sni_cluster.v3.SniCluster}}
      - {name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: p, cluster: fallback}}
  clusters: [%s, %s]
`, named.Cluster("a.example.com"), fallback.Cluster("fallback"))
	p := testutil.StartProxy(t, y, nil)
	c, err := net.Dial("tcp", p.Addr("sni"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	// The echo upstream is not TLS: the handshake fails, but the
	// ClientHello must have reached the cluster its SNI names.
	tls.Client(c, &tls.Config{ServerName: "a.example.com", InsecureSkipVerify: true}).Handshake()
	testutil.Eventually(t, 3*time.Second, func() bool { return named.Conns() == 1 }, "the SNI's cluster got %d connections", named.Conns())
	if fallback.Conns() != 0 {
		t.Errorf("the configured cluster got %d connections", fallback.Conns())
	}
}
