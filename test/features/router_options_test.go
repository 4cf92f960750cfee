// The router filter's own options: dynamic_stats and
// respect_expected_rq_timeout.

package features_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// routerHCM is a connection manager whose router has the given options.
func routerHCM(opts string) string {
	return fmt.Sprintf(`use_remote_address: true
http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router, %s}}]`, opts)
}

// TestRouterDynamicStats: with dynamic_stats false the cluster's
// upstream_rq_<code>, upstream_rq_<class>xx and upstream_rq_time are not
// recorded; by default they are.
func TestRouterDynamicStats(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	for _, tc := range []struct {
		opts string
		want int64
	}{{"dynamic_stats: true", 1}, {"dynamic_stats: false", 0}} {
		t.Run(tc.opts, func(t *testing.T) {
			p := start(t, cfg{hcm: routerHCM(tc.opts), vhosts: vhost(`{match: {prefix: /}, route: {cluster: a}}`), clusters: "[" + staticCluster("a", "", up.Addr) + "]"})
			if code, _, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/")); code != 200 {
				t.Fatalf("status %d", code)
			}
			// Codes are counted as the response headers pass, before the
			// client has them.
			for _, name := range []string{"cluster.a.upstream_rq_200", "cluster.a.upstream_rq_2xx", "cluster.a.upstream_rq_completed"} {
				if got := max(p.Stat(t, name), 0); got != tc.want {
					t.Errorf("%s = %d, want %d", name, got, tc.want)
				}
			}
			if got := p.Stat(t, "cluster.a.upstream_rq_total"); got != 1 {
				t.Errorf("upstream_rq_total = %d: not a dynamic stat, it counts either way", got)
			}
		})
	}
}

// TestRespectExpectedRqTimeout: an internal request's
// x-envoy-expected-rq-timeout-ms (set by an egress Envoy) is the route's
// timeout when the router respects it, and ignored otherwise.
func TestRespectExpectedRqTimeout(t *testing.T) {
	slow := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
		w.Write([]byte("slow"))
	}))
	for _, tc := range []struct {
		opts string
		want int
	}{{"respect_expected_rq_timeout: true", 504}, {"respect_expected_rq_timeout: false", 200}} {
		t.Run(tc.opts, func(t *testing.T) {
			p := start(t, cfg{hcm: routerHCM(tc.opts), vhosts: vhost(`{match: {prefix: /}, route: {cluster: a, timeout: 10s}}`), clusters: "[" + staticCluster("a", "", slow.Addr) + "]"})
			req, _ := http.NewRequest("GET", p.URL("http", "/"), nil)
			req.Header.Set("x-envoy-expected-rq-timeout-ms", "100")
			resp, err := testutil.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}
