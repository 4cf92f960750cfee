// Outlier detection: passive health (consecutive 5xx, success rate,
// local-origin failures), ejection and return.

package features_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestOutlierDetection covers passive health: consecutive 5xx eject a
// host (stats, /clusters flag, traffic avoids it), it returns after the
// ejection time; success-rate ejection; local-origin failures counted
// separately with split_external_local_origin_errors.
func TestOutlierDetection(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	mk := func(name string, flaky bool) *testutil.Upstream {
		return testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if flaky && failing.Load() {
				w.WriteHeader(500)
				return
			}
			w.Write([]byte(name))
		}))
	}
	a, b, bad := mk("a", false), mk("b", false), mk("bad", true)
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /}, route: {cluster: od}}"),
		clusters: "[" + staticCluster("od", "outlier_detection: {consecutive_5xx: 3, interval: 0.2s, base_ejection_time: 3s, max_ejection_percent: 50}",
			a.Addr, b.Addr, bad.Addr) + "]",
	})
	c := testutil.Client()
	fails := 0
	for i := 0; i < 30; i++ {
		if code, _, _ := testutil.Get(t, c, p.URL("http", "/")); code == 500 {
			fails++
		}
	}
	if fails != 3 {
		t.Errorf("%d requests failed before the ejection, want exactly consecutive_5xx = 3", fails)
	}
	if got := p.Stat(t, "cluster.od.outlier_detection.ejections_enforced_consecutive_5xx"); got != 1 {
		t.Errorf("ejections_enforced_consecutive_5xx = %d, want 1", got)
	}
	if got := p.Stat(t, "cluster.od.outlier_detection.ejections_active"); got != 1 {
		t.Errorf("ejections_active = %d, want 1", got)
	}
	_, _, clusters := testutil.Get(t, c, "http://"+p.Admin+"/clusters")
	if !strings.Contains(clusters, bad.Addr+"::health_flags::/failed_outlier_check") {
		t.Errorf("/clusters does not flag the ejected host:\n%s", clusters)
	}
	// Recovered: back after base_ejection_time, traffic returns.
	failing.Store(false)
	testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "cluster.od.outlier_detection.ejections_active") == 0 }, "host never returned from ejection")
	hits := bad.Hits()
	for i := 0; i < 9; i++ {
		testutil.Get(t, c, p.URL("http", "/"))
	}
	if bad.Hits() == hits {
		t.Error("the returned host gets no traffic")
	}
}

func TestOutlierSuccessRateAndLocalOrigin(t *testing.T) {
	var n atomic.Int64
	ok := func(name string) *testutil.Upstream { return testutil.StartUpstream(t, testutil.EchoHandler(name)) }
	a, b := ok("a"), ok("b")
	half := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			w.WriteHeader(503)
			return
		}
		w.Write([]byte("half"))
	}))
	// A port nothing listens on: connection refused (local origin).
	dead := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /sr}, route: {cluster: sr}}", "{match: {prefix: /lo}, route: {cluster: lo, retry_policy: {retry_on: connect-failure, num_retries: 3}}}"),
		clusters: "[" + staticCluster("sr", "outlier_detection: {interval: 0.5s, base_ejection_time: 30s, max_ejection_percent: 50, enforcing_consecutive_5xx: 0, "+
			"success_rate_minimum_hosts: 3, success_rate_request_volume: 20, success_rate_stdev_factor: 1000}", a.Addr, b.Addr, half.Addr) + ", " +
			staticCluster("lo", "outlier_detection: {split_external_local_origin_errors: true, consecutive_local_origin_failure: 2, interval: 1s, base_ejection_time: 30s, max_ejection_percent: 50}", a.Addr, dead) + "]",
	})
	c := testutil.Client()
	// Success rate: keep sending (about 30 requests per host per round)
	// until an interval has seen enough volume on every host.
	testutil.Eventually(t, 15*time.Second, func() bool {
		for i := 0; i < 90; i++ {
			testutil.Get(t, c, p.URL("http", "/sr"))
		}
		return p.Stat(t, "cluster.sr.outlier_detection.ejections_enforced_success_rate") == 1
	}, "the host failing half its requests was not ejected by success rate")
	for i := 0; i < 20; i++ {
		if code, _, body := testutil.Get(t, c, p.URL("http", "/sr")); code != 200 || body == "half" {
			t.Fatalf("request after success-rate ejection = %d %q", code, body)
		}
	}
	// Local origin: connection refusals eject the dead host; retries hide them.
	for i := 0; i < 10; i++ {
		if code, _, _ := testutil.Get(t, c, p.URL("http", "/lo")); code != 200 {
			t.Fatalf("request %d = %d; connect-failure retries should reach the live host", i, code)
		}
	}
	if got := p.Stat(t, "cluster.lo.outlier_detection.ejections_enforced_consecutive_local_origin_failure"); got != 1 {
		t.Errorf("ejections_enforced_consecutive_local_origin_failure = %d, want 1", got)
	}
	if got := p.Stat(t, "cluster.lo.outlier_detection.ejections_enforced_consecutive_5xx"); got != 0 {
		t.Errorf("split local-origin errors were counted as 5xx: %d", got)
	}
}

// TestOutlierEventLog: cluster_manager.outlier_detection.event_log_path
// gets one OutlierDetectionEvent per line in proto JSON: the ejection
// (type, action EJECT, enforced, cluster, host) and the host's return
// (UNEJECT), as Envoy's event logger writes them (Istio's bootstrap sets
// /dev/stdout). enable_deferred_cluster_creation is accepted.
func TestOutlierEventLog(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	bad := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.WriteHeader(503)
		}
	}))
	good := testutil.StartUpstream(t, testutil.EchoHandler("good"))
	logPath := filepath.Join(t.TempDir(), "outlier.log")
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /}, route: {cluster: od}}"),
		clusters: "[" + staticCluster("od", "outlier_detection: {consecutive_5xx: 2, interval: 0.1s, base_ejection_time: 0.3s, max_ejection_percent: 50}",
			bad.Addr, good.Addr) + "]",
		extra: "cluster_manager: {outlier_detection: {event_log_path: " + logPath + "}, enable_deferred_cluster_creation: true}\n",
	})
	c := testutil.Client()
	for i := 0; i < 10; i++ {
		testutil.Get(t, c, p.URL("http", "/"))
	}
	failing.Store(false)
	var events []map[string]any
	testutil.Eventually(t, 10*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		events = events[:0]
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var e map[string]any
			if json.Unmarshal([]byte(l), &e) == nil {
				events = append(events, e)
			}
		}
		return len(events) >= 2
	}, "no ejection and return in the event log")
	ej, un := events[0], events[1]
	if ej["type"] != "CONSECUTIVE_5XX" || ej["action"] != "EJECT" || ej["enforced"] != true || ej["cluster_name"] != "od" ||
		ej["upstream_url"] != bad.Addr || ej["eject_consecutive_event"] == nil || ej["timestamp"] == nil {
		t.Errorf("ejection event = %v", ej)
	}
	if un["action"] != "UNEJECT" || un["upstream_url"] != bad.Addr || un["secs_since_last_action"] == nil {
		t.Errorf("return event = %v", un)
	}
}
