// SNI dynamic forward proxy: tls_inspector reads the SNI,
// envoy.filters.network.sni_dynamic_forward_proxy resolves it through the
// DNS cache (here against a test DNS server), and tcp_proxy passes the
// TLS connection through to a dynamic forward proxy cluster, which
// connects to the resolved address on port_value.

package features_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestSNIDynamicForwardProxy(t *testing.T) {
	ca := testutil.NewCA(t, "sni-dfp-ca")
	leaf := ca.Issue(t, "svc", "svc.test")
	cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	// The TLS upstream: it answers "upstream:<SNI>:<line>" to a line.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c *tls.Conn) {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if c.Handshake() != nil {
					return
				}
				b := make([]byte, 64)
				n, _ := c.Read(b)
				fmt.Fprintf(c, "upstream:%s:%s", c.ConnectionState().ServerName, b[:n])
			}(c.(*tls.Conn))
		}
	}()
	_, upPort, _ := net.SplitHostPort(ln.Addr().String())
	dns := startDNS(t, [4]byte{127, 0, 0, 1}, 60)
	dh, dp, _ := net.SplitHostPort(dns.addr)
	logPath := t.TempDir() + "/access.log"
	// DNS caches are shared by name within a process: one of its own per
	// test DNS server (a repeated run has another).
	cache := fmt.Sprintf(`{name: sni_dfp_test_cache_%s, dns_lookup_family: V4_ONLY, typed_dns_resolver_config: {name: envoy.network.dns_resolver.cares,
	  typed_config: {"@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig, resolvers: [{socket_address: {address: %s, port_value: %s}}]}}}`, dp, dh, dp)
	yaml := fmt.Sprintf(`admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: sni
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    listener_filters: [{name: envoy.filters.listener.tls_inspector, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}]
    filter_chains:
    - filters:
      - {name: envoy.filters.network.sni_dynamic_forward_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.sni_dynamic_forward_proxy.v3.FilterConfig,
          port_value: %s, save_upstream_address: true, dns_cache_config: %s}}
      - {name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: sni, cluster: dfp,
          access_log: [{name: envoy.access_loggers.file, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: %s,
            log_format: {text_format_source: {inline_string: "%%REQUESTED_SERVER_NAME%% %%UPSTREAM_HOST%% %%FILTER_STATE(envoy.stream.upstream_address:PLAIN)%%\n"}}}}]}}
  clusters:
  - name: dfp
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 2s
    cluster_type: {name: envoy.clusters.dynamic_forward_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig, dns_cache_config: %s}}
`, upPort, cache, logPath, cache)
	p := testutil.StartProxy(t, yaml, nil)

	dial := func(serverName string) (string, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", p.Addr("sni"), &tls.Config{RootCAs: ca.Pool, ServerName: serverName})
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "ping")
		b, err := io.ReadAll(c)
		return string(b), err
	}
	got, err := dial("svc.test")
	if err != nil || got != "upstream:svc.test:ping" {
		t.Fatalf("SNI svc.test: %q, %v", got, err)
	}
	if dns.hits.Load() == 0 {
		t.Fatalf("the DNS cache did not ask the test DNS server")
	}
	// A second connection is served from the cache.
	hits := dns.hits.Load()
	if got, err := dial("svc.test"); err != nil || got != "upstream:svc.test:ping" {
		t.Fatalf("second connection: %q, %v", got, err)
	}
	if dns.hits.Load() != hits {
		t.Errorf("the second connection resolved again (%d DNS queries, then %d)", hits, dns.hits.Load())
	}
	// A name that does not resolve: the cluster has no host, the
	// connection closes before the TLS handshake completes.
	if got, err := dial("nowhere.test"); err == nil {
		t.Errorf("unresolvable SNI: connected (%q)", got)
	}
	want := "svc.test 127.0.0.1:" + upPort + " 127.0.0.1:" + upPort
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), want)
	}, "access log lacks %q", want)
}

// TestSNIDynamicForwardProxyDocsExample loads Envoy's documentation
// example of the filter.
func TestSNIDynamicForwardProxyDocsExample(t *testing.T) {
	yaml := `admin: {address: {socket_address: {protocol: TCP, address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: listener_0
    address: {socket_address: {protocol: TCP, address: 127.0.0.1, port_value: 0}}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
    filter_chains:
    - filters:
      - name: envoy.filters.network.sni_dynamic_forward_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.sni_dynamic_forward_proxy.v3.FilterConfig
          port_value: 443
          dns_cache_config: {name: dynamic_forward_proxy_cache_config, dns_lookup_family: V4_ONLY}
      - name: envoy.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: tcp, cluster: dynamic_forward_proxy_cluster}
  clusters:
  - name: dynamic_forward_proxy_cluster
    lb_policy: CLUSTER_PROVIDED
    cluster_type:
      name: envoy.clusters.dynamic_forward_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig
        dns_cache_config: {name: dynamic_forward_proxy_cache_config, dns_lookup_family: V4_ONLY}
`
	testutil.StartProxy(t, yaml, nil)
}
