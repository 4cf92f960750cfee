// An endpoint's health_check_config.port_value: active health checks go
// to that port, traffic to the endpoint's (Contour's healthPort).

package features_test

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestHealthCheckPort(t *testing.T) {
	traffic := testutil.StartUpstream(t, testutil.EchoHandler("app"))
	var healthy atomic.Bool
	var checks atomic.Int64
	health := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		checks.Add(1)
		if !healthy.Load() {
			w.WriteHeader(503)
		}
	}))
	host, port, _ := net.SplitHostPort(traffic.Addr)
	_, hport, _ := net.SplitHostPort(health.Addr)
	cluster := fmt.Sprintf(`[{name: hc, type: STATIC, connect_timeout: 1s,
	  health_checks: [{timeout: 1s, interval: 0.05s, no_traffic_interval: 0.05s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /healthz}}],
	  load_assignment: {cluster_name: hc, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}, health_check_config: {port_value: %s}}}]}]}}]`,
		host, port, hport)
	p := start(t, cfg{vhosts: vhost(`{match: {prefix: /}, route: {cluster: hc}}`), clusters: cluster})
	// The traffic port answers 200 to /healthz too: only checks on the
	// health port see 503.
	testutil.Eventually(t, 5*time.Second, func() bool { return checks.Load() >= 2 && p.Stat(t, "cluster.hc.membership_healthy") == 0 },
		"checks on the health port (%d) never marked the host unhealthy", checks.Load())
	healthy.Store(true)
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.hc.membership_healthy") == 1 }, "host never healthy")
	if code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/")); code != 200 || !strings.Contains(body, "upstream=app") {
		t.Fatalf("traffic goes to the endpoint's port: %d %q", code, body)
	}

	// Fields of health_check_config Legate does not run are refused.
	bad := strings.Replace(cluster, "health_check_config: {port_value: "+hport+"}", "health_check_config: {port_value: "+hport+", hostname: other}", 1)
	if _, err := testutil.TryStartProxy(t, cfg{vhosts: vhost(`{match: {prefix: /}, route: {cluster: hc}}`), clusters: bad}.String(), nil); err == nil || !strings.Contains(err.Error(), "health_check_config.hostname") {
		t.Errorf("health_check_config.hostname: %v", err)
	}
}
