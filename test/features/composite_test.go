// The composite filter: envoy.filters.http.composite under
// envoy.filters.http.match_delegate's ExtensionWithMatcher, or with its own
// matcher.

package features_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// compositeFilters is an ExtensionWithMatcher around a composite filter
// whose x-action header selects a fault abort (418), a local rate limit
// with a bucket of one, or a header_mutation that adds a request header.
const compositeFilters = `http_filters: [{name: composite, typed_config: {"@type": type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher,
  extension_config: {name: composite, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite}},
  xds_matcher: {matcher_tree: {input: {name: request-headers, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: x-action}},
  exact_match_map: {map: {
    abort: {action: {name: composite-action, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction, typed_config: {name: fault, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, abort: {http_status: 418, percentage: {numerator: 100}}}}}}},
    limit: {action: {name: composite-action, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction, typed_config: {name: rl, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: composite_rl, token_bucket: {max_tokens: 1, fill_interval: 60s}, filter_enabled: {default_value: {numerator: 100}}, filter_enforced: {default_value: {numerator: 100}}}}}}},
    mutate: {action: {name: composite-action, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction, typed_config: {name: hm, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation, mutations: {request_mutations: [{append: {header: {key: x-mutated, value: by-composite}}}]}}}}}},
    never: {action: {name: composite-action, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction, sample_percent: {default_value: {numerator: 0}}, typed_config: {name: fault, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, abort: {http_status: 503, percentage: {numerator: 100}}}}}}},
    skip: {action: {name: skip, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter}}}}}}}}},
  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`

// TestComposite: the matched ExecuteFilterAction's filter handles the
// stream; no match (or a SkipFilter match, or an action not drawn by its
// sample_percent) passes it through; delegations count in
// http.<prefix>.composite.filter_delegation_success.
func TestComposite(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	p := start(t, cfg{
		hcm:      compositeFilters,
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/"), "x-action", "abort"); code != 418 {
		t.Errorf("x-action abort: %d, want the fault filter's 418", code)
	}
	var codes []int
	for i := 0; i < 2; i++ {
		code, _, _ := testutil.Get(t, c, p.URL("http", "/"), "x-action", "limit")
		codes = append(codes, code)
	}
	if fmt.Sprint(codes) != "[200 429]" || p.Stat(t, "composite_rl.http_local_rate_limit.rate_limited") != 1 {
		t.Errorf("x-action limit: %v (rate_limited %d), want [200 429] and 1", codes, p.Stat(t, "composite_rl.http_local_rate_limit.rate_limited"))
	}
	code, _, body := testutil.Get(t, c, p.URL("http", "/"), "x-action", "mutate")
	if code != 200 || !strings.Contains(body, "header:x-mutated=by-composite") {
		t.Errorf("x-action mutate: %d, upstream saw %q", code, body)
	}
	for _, h := range []string{"none", "never", "skip"} {
		code, _, body := testutil.Get(t, c, p.URL("http", "/"), "x-action", h)
		if code != 200 || strings.Contains(body, "x-mutated") {
			t.Errorf("x-action %s: %d %q, want a plain pass-through", h, code, body)
		}
	}
	if got := p.Stat(t, "http.ingress.composite.filter_delegation_success"); got != 4 {
		t.Errorf("filter_delegation_success = %d, want 4", got)
	}
}

// TestCompositeOwnMatcher: Composite.matcher (the filter in http_filters
// without ExtensionWithMatcher), replaced on one route by
// CompositePerRoute.matcher.
func TestCompositeOwnMatcher(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	action := func(status int) string {
		return fmt.Sprintf(`{action: {name: composite-action, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction, typed_config: {name: fault, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, abort: {http_status: %d, percentage: {numerator: 100}}}}}}}`, status)
	}
	m := func(status int) string {
		return `{matcher_tree: {input: {name: h, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: x-action}}, exact_match_map: {map: {abort: ` + action(status) + `}}}}`
	}
	p := start(t, cfg{
		hcm: `http_filters: [{name: envoy.filters.http.composite, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite, matcher: ` + m(418) + `}},
			{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts: vhost(`{match: {prefix: /override}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.composite: {"@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.CompositePerRoute, matcher: `+m(451)+`}}}`,
			"{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()
	for _, tc := range []struct {
		path, action string
		want         int
	}{{"/", "abort", 418}, {"/", "none", 200}, {"/override", "abort", 451}, {"/override", "none", 200}} {
		if code, _, _ := testutil.Get(t, c, p.URL("http", tc.path), "x-action", tc.action); code != tc.want {
			t.Errorf("%s with x-action %s: %d, want %d", tc.path, tc.action, code, tc.want)
		}
	}
}

// TestCompositeDocsExample: Envoy's docs example
// (docs/root/configuration/http/http_filters/_include/composite.yaml)
// with loopback addresses: the x-fault-category header picks a delay
// injected by the delegated fault filter, toward an HTTP/2 upstream.
func TestCompositeDocsExample(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("grpc"))
	_, port := up.Host()
	yaml := strings.NewReplacer("0.0.0.0, port_value: 9901", "127.0.0.1, port_value: 0",
		"0.0.0.0, port_value: 51051", "127.0.0.1, port_value: 0", "port_value: 50051", "port_value: "+port,
		"fixed_delay: 1s", "fixed_delay: 0.3s").Replace(compositeDocsYAML)
	p := testutil.StartProxy(t, yaml, nil)
	c := testutil.Client()
	start := time.Now()
	code, _, body := testutil.Get(t, c, p.URL("listener1", "/helloworld.Greeter/SayHello"), "x-fault-category", "tiny fault")
	if elapsed := time.Since(start); code != 200 || upstreamOf(body) != "upstream=grpc" || elapsed < 300*time.Millisecond {
		t.Errorf("tiny fault: %d %q after %s, want 200 from the upstream after the 0.3s delay", code, body, elapsed)
	}
	if code, _, body := testutil.Get(t, c, p.URL("listener1", "/helloworld.Greeter/SayHello")); code != 200 || !strings.Contains(body, "proto=HTTP/2.0") {
		t.Errorf("no category: %d %q, want 200 over HTTP/2", code, body)
	}
	if got := p.Stat(t, "fault.delays_injected"); got != 1 {
		// The fault filter's stats are http.grpc_json.fault.*.
		if got := p.Stat(t, "http.grpc_json.fault.delays_injected"); got != 1 {
			t.Errorf("http.grpc_json.fault.delays_injected = %d, want 1", got)
		}
	}
}

// compositeDocsYAML is Envoy's composite.yaml docs example, as published.
const compositeDocsYAML = `admin:
  address:
    socket_address: {address: 0.0.0.0, port_value: 9901}

static_resources:
  listeners:
  - name: listener1
    address:
      socket_address: {address: 0.0.0.0, port_value: 51051}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: grpc_json
          codec_type: AUTO
          route_config:
            name: local_route
            virtual_hosts:
            - name: local_service
              domains: ["*"]
              routes:
              # NOTE: by default, matching happens based on the gRPC route, and not on the incoming request path.
              # Reference: https://envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/grpc_json_transcoder_filter#route-configs-for-transcoded-requests
              - match: {prefix: "/helloworld.Greeter"}
                route: {cluster: grpc, timeout: 60s}
          http_filters:
          - name: composite
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher
              extension_config:
                name: composite
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite
              xds_matcher:
                matcher_tree:
                  input:
                    name: request-headers
                    typed_config:
                      "@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput
                      header_name: x-fault-category
                  exact_match_map:
                    map:
                      "huge fault":  # inject 10s latency into all requests
                        action:
                          name: composite-action
                          typed_config:
                            "@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction
                            typed_config:
                              name: http-fault
                              typed_config:
                                "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                                delay:
                                  fixed_delay: 10s
                                  percentage:
                                    numerator: 100
                                    denominator: HUNDRED
                      "tiny fault":  # inject 1s latency into all requests
                        action:
                          name: composite-action
                          typed_config:
                            "@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction
                            typed_config:
                              name: http-fault
                              typed_config:
                                "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                                delay:
                                  fixed_delay: 1s
                                  percentage:
                                    numerator: 100
                                    denominator: HUNDRED
          - name: envoy.filters.http.router

  clusters:
  - name: grpc
    type: LOGICAL_DNS
    lb_policy: ROUND_ROBIN
    dns_lookup_family: V4_ONLY
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
    load_assignment:
      cluster_name: grpc
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address:
                address: 127.0.0.1
                port_value: 50051
`
