package dynamic_forward_proxy_test

import (
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

const cfg = `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/rewritten"}
                route: {cluster: dfp}
                typed_per_filter_config:
                  envoy.filters.http.dynamic_forward_proxy:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.PerRouteConfig
                    host_rewrite_literal: "{{.B}}"
              - match: {prefix: "/"}
                route: {cluster: dfp}
          http_filters:
          - name: envoy.filters.http.dynamic_forward_proxy
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig
              dns_cache_config: {name: cache, dns_lookup_family: V4_ONLY, dns_query_timeout: 1s,
                # A resolver on loopback that does not answer: names outside
                # /etc/hosts fail without leaving the machine.
                typed_dns_resolver_config: {name: envoy.network.dns_resolver.cares, typed_config: {"@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig,
                  resolvers: [{socket_address: {address: 127.0.0.1, port_value: 9}}]}}}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: dfp
    lb_policy: CLUSTER_PROVIDED
    cluster_type:
      name: envoy.clusters.dynamic_forward_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig
        dns_cache_config: {name: cache, dns_lookup_family: V4_ONLY}
`

// A forward proxy: each request goes to the host its authority names
// (localhost resolves through the cache; IP literals need no lookup).
func TestDynamicForwardProxy(t *testing.T) {
	a := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	b := testutil.StartUpstream(t, testutil.EchoHandler("b"))
	_, bport := b.Host()
	p := testutil.StartProxy(t, cfg, map[string]string{"B": "localhost:" + bport})
	for _, c := range []struct{ host, path, want string }{
		{a.Addr, "/", "upstream=a"},
		{b.Addr, "/", "upstream=b"},
		{a.Addr, "/rewritten", "upstream=b"}, // host_rewrite_literal, resolved by name
	} {
		code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", c.path), "Host", c.host)
		if code != 200 || !strings.Contains(body, c.want) {
			t.Errorf("Host %s %s: %d %q", c.host, c.path, code, body)
		}
	}
	if code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/"), "Host", "no-such-host.invalid:80"); code != 503 || body != "DNS resolution failure" {
		t.Errorf("unresolvable host: %d %q", code, body)
	}
}
