package xds

import (
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestInvalidRouteConfigurationNACK: a route configuration that fails
// validation is refused by the xDS client while decoding, before the RDS
// handler: the NACK names the field, the route configuration's own
// statistics count the rejection, and the last good routes keep serving.
func TestInvalidRouteConfigurationNACK(t *testing.T) {
	cp := startControlPlane(t, "")
	backends := upstreams(t, 1)
	w := &world{listen: freeAddr(t), endpoints: backends}
	cp.push(t, w)
	p := testutil.StartProxy(t, bootstrap(cp.addr, false), nil)
	url := "http://" + w.listen + "/"
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, _, _ := getQuiet(url)
		return code == 200
	}, "proxy never served")
	// A route without its required match.
	w.routes = []*routev3.Route{{Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "backend"}}}}}
	cp.push(t, w)
	testutil.Eventually(t, 10*time.Second, func() bool { return len(cp.nackMessages()) > 0 }, "no NACK reached the control plane")
	if msg := cp.nackMessages()[0]; !strings.Contains(msg, "route_configuration local.virtual_hosts[0].routes[0].match: value is required") {
		t.Errorf("NACK error_detail does not name the field: %q", msg)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "http.main.rds.local.update_rejected") >= 1 }, "http.main.rds.local.update_rejected was not counted")
	if code, body, _ := getQuiet(url); code != 200 || body != "b0" {
		t.Fatalf("after a NACK: %d %q", code, body)
	}
}
