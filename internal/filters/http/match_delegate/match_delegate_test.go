package match_delegate_test

import (
	"fmt"
	"testing"

	_ "github.com/legateproxy/legate/internal/filters/all"
	"github.com/legateproxy/legate/internal/testutil"
)

// TestSkipFilterByMatcher: ExtensionWithMatcher wraps a fault filter that
// aborts every request; its matcher skips the filter for requests with
// x-skip: yes.
func TestSkipFilterByMatcher(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	h, port := u.Host()
	p := testutil.StartProxy(t, fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
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
          http_filters:
          - name: with-matcher
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher
              extension_config:
                name: envoy.filters.http.fault
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                  abort: {http_status: 503, percentage: {numerator: 100}}
              xds_matcher:
                matcher_tree:
                  input:
                    name: request-headers
                    typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: x-skip}
                  exact_match_map:
                    map:
                      "yes":
                        action:
                          name: skip
                          typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: backend}}]}]
  clusters:
  - {name: backend, type: STATIC, load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}}
`, h, port), nil)
	c := testutil.Client()
	if code, _, _ := testutil.Get(t, c, p.URL("main", "/")); code != 503 {
		t.Errorf("the wrapped fault filter did not run: %d", code)
	}
	if code, _, _ := testutil.Get(t, c, p.URL("main", "/"), "x-skip", "yes"); code != 200 {
		t.Errorf("the matcher did not skip the filter: %d", code)
	}
	if code, _, _ := testutil.Get(t, c, p.URL("main", "/"), "x-skip", "no"); code != 503 {
		t.Errorf("x-skip: no should not skip: %d", code)
	}
}
