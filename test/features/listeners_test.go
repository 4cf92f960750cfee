// Listeners: addresses (IPv6) and the connection manager's server name.

package features_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestIPv6ListenerAndServerName(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback on this machine")
	}
	ln.Close()
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	h, port := u.Host()
	p := testutil.StartProxy(t, fmt.Sprintf(`
static_resources:
  listeners:
  - name: v6
    address: {socket_address: {address: "::1", port_value: 0}}
    filter_chains: [{filters: [%s]}]
  clusters: [%s]
`, (`{name: hcm, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: v6, server_name: legate-edge,
  route_config: {virtual_hosts: [{name: v, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: u}}]}]},
  http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]}}`),
		staticCluster("u", "", net.JoinHostPort(h, port))), nil)
	code, hdr, body := testutil.Get(t, testutil.Client(), "http://"+p.Addr("v6")+"/six")
	if code != 200 || !strings.Contains(body, "path=/six") || hdr.Get("server") != "legate-edge" {
		t.Fatalf("IPv6 listener: %d server=%q\n%s", code, hdr.Get("server"), body)
	}
	if a, _ := netip.ParseAddrPort(p.Addr("v6")); !a.Addr().Is6() {
		t.Fatalf("bound %s, want IPv6", p.Addr("v6"))
	}
}
