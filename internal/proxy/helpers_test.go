package proxy_test

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

// cfg builds a bootstrap with one HTTP listener ("http"): hcm holds extra
// HttpConnectionManager fields (flow-style YAML lines), vhosts the
// virtual_hosts list and clusters the clusters list.
type cfg struct {
	hcm      string
	vhosts   string
	clusters string
	extra    string // more top-level YAML
}

func (c cfg) String() string {
	hcm := ""
	for _, l := range strings.Split(strings.TrimSpace(c.hcm), "\n") {
		if l != "" {
			hcm += "          " + strings.TrimSpace(l) + "\n"
		}
	}
	filters := `          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
`
	if strings.Contains(c.hcm, "http_filters:") {
		filters = "" // the test gives its own chain
	}
	return fmt.Sprintf(`admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
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
%s          route_config: {name: local, virtual_hosts: %s}
%s  clusters: %s
%s`, hcm, c.vhosts, filters, c.clusters, c.extra)
}

// staticCluster renders a STATIC cluster over the given host:port addresses.
func staticCluster(name string, extra string, addrs ...string) string {
	var eps []string
	for _, a := range addrs {
		h, p, _ := net.SplitHostPort(a)
		eps = append(eps, fmt.Sprintf("{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}", h, p))
	}
	if extra != "" {
		extra = ", " + extra
	}
	return fmt.Sprintf("{name: %s, connect_timeout: 1s, type: STATIC, load_assignment: {cluster_name: %s, endpoints: [{lb_endpoints: [%s]}]}%s}",
		name, name, strings.Join(eps, ", "), extra)
}

// vhost renders one virtual host matching every domain with the routes.
func vhost(routes ...string) string {
	return fmt.Sprintf("[{name: all, domains: ['*'], routes: [%s]}]", strings.Join(routes, ", "))
}

func start(t *testing.T, c cfg) *testutil.Proxy {
	t.Helper()
	return testutil.StartProxy(t, c.String(), nil)
}
