// Runtime keys that override cluster settings where Envoy reads them:
// outlier_detection.*, health_check.min_interval/max_interval and
// upstream.healthy_panic_threshold.

package features_test

import (
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestOutlierRuntimeOverrides: an admin-layer outlier_detection.consecutive_5xx
// replaces the cluster's consecutive_5xx from the next report on, and
// enforcing_consecutive_5xx 0 turns enforcement off (detected, not
// enforced), as Envoy reads both keys on every failure.
func TestOutlierRuntimeOverrides(t *testing.T) {
	bad := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	good := testutil.StartUpstream(t, testutil.EchoHandler("good"))
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /}, route: {cluster: od}}"),
		// Round robin over two hosts: every other request reaches bad.
		clusters: "[" + staticCluster("od", "outlier_detection: {consecutive_5xx: 50, interval: 0.2s, base_ejection_time: 30s, max_ejection_percent: 50}", bad.Addr, good.Addr) + "]",
	})
	c := testutil.Client()
	modify := func(kv url.Values) {
		t.Helper()
		resp, err := c.PostForm("http://"+p.Admin+"/runtime_modify", kv)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/runtime_modify = %d", resp.StatusCode)
		}
	}
	send := func(n int) (fails int) {
		for i := 0; i < n; i++ {
			if code, _, _ := testutil.Get(t, c, p.URL("http", "/")); code == 500 {
				fails++
			}
		}
		return fails
	}
	// Not enforced: detected on the third failure, the host stays in.
	modify(url.Values{"outlier_detection.consecutive_5xx": {"3"}, "outlier_detection.enforcing_consecutive_5xx": {"0"}})
	if f := send(6); f != 3 {
		t.Fatalf("%d of 6 requests failed, want 3 (every other one)", f)
	}
	if d, e := p.Stat(t, "cluster.od.outlier_detection.ejections_detected_consecutive_5xx"), p.Stat(t, "cluster.od.outlier_detection.ejections_enforced_consecutive_5xx"); d != 1 || e != 0 {
		t.Fatalf("detected %d, enforced %d: want the runtime's consecutive_5xx 3 detected and not enforced", d, e)
	}
	// Enforced again with consecutive_5xx 2: the next two failures eject.
	modify(url.Values{"outlier_detection.consecutive_5xx": {"2"}, "outlier_detection.enforcing_consecutive_5xx": {""}})
	if f := send(40); f != 2 {
		t.Errorf("%d requests failed, want exactly the runtime's consecutive_5xx = 2 before the ejection", f)
	}
	if got := p.Stat(t, "cluster.od.outlier_detection.ejections_enforced_consecutive_5xx"); got != 1 {
		t.Errorf("ejections_enforced_consecutive_5xx = %d, want 1", got)
	}
}

// TestHealthCheckRuntimeInterval: health_check.max_interval (ms) caps an
// hour-long interval, so checks keep coming; without it one check would
// be all an hour gives.
func TestHealthCheckRuntimeInterval(t *testing.T) {
	var checks atomic.Int64
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			checks.Add(1)
		}
		w.Write([]byte("ok"))
	}))
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: hc}}"),
		clusters: "[" + staticCluster("hc", "health_checks: [{timeout: 1s, interval: 3600s, no_traffic_interval: 3600s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /healthz}}]", up.Addr) + "]",
		extra: `layered_runtime:
  layers:
  - name: static
    static_layer: {health_check.max_interval: 50}
  - name: admin
    admin_layer: {}
`,
	})
	testutil.Eventually(t, 10*time.Second, func() bool { return checks.Load() >= 4 }, "health checks did not follow health_check.max_interval")
	if got := p.Stat(t, "cluster.hc.health_check.attempt"); got < 4 {
		t.Errorf("health_check.attempt = %d, want at least 4", got)
	}
}

// TestHealthyPanicThresholdRuntime: upstream.healthy_panic_threshold
// raises the panic threshold above a cluster's 50 % healthy hosts, so
// the cluster is in panic and sends to every host, the unhealthy too.
func TestHealthyPanicThresholdRuntime(t *testing.T) {
	for _, tc := range []struct {
		name      string
		threshold string
		panic     bool
	}{
		{name: "default", threshold: "", panic: false},
		{name: "runtime 60", threshold: "60", panic: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			healthy := testutil.StartUpstream(t, testutil.EchoHandler("healthy"))
			sick := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/healthz" {
					w.WriteHeader(503)
					return
				}
				w.Write([]byte("sick"))
			}))
			layer := "{}"
			if tc.threshold != "" {
				layer = "{upstream.healthy_panic_threshold: " + tc.threshold + "}"
			}
			p := start(t, cfg{
				vhosts: vhost("{match: {prefix: /}, route: {cluster: pt}}"),
				clusters: "[" + staticCluster("pt", "health_checks: [{timeout: 1s, interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /healthz}}]",
					healthy.Addr, sick.Addr) + "]",
				extra: "layered_runtime:\n  layers:\n  - name: static\n    static_layer: " + layer + "\n",
			})
			testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "cluster.pt.membership_healthy") == 1 }, "the sick host never failed its health check")
			c := testutil.Client()
			seen := map[string]int{}
			for i := 0; i < 20; i++ {
				_, _, body := testutil.Get(t, c, p.URL("http", "/"))
				seen[body]++
			}
			if got := seen["sick"] > 0; got != tc.panic {
				t.Errorf("requests per host %v: panic routing = %v, want %v", seen, got, tc.panic)
			}
			if got := p.Stat(t, "cluster.pt.lb_healthy_panic") > 0; got != tc.panic {
				t.Errorf("lb_healthy_panic counted = %v, want %v", got, tc.panic)
			}
		})
	}
}
