// Aggregate clusters (envoy.clusters.aggregate): failover across child
// clusters in their configured order, by health and on retries.

package features_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func aggregateCluster(name string, children ...string) string {
	return fmt.Sprintf(`{name: %s, connect_timeout: 1s, lb_policy: CLUSTER_PROVIDED, cluster_type: {name: envoy.clusters.aggregate, typed_config: {"@type": type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig, clusters: [%s]}}}`,
		name, strings.Join(children, ", "))
}

// TestAggregateClusterHealthFailover: traffic goes to the first child
// while its host passes health checks, to the second when it fails them,
// and back when it recovers; each child counts its own requests.
func TestAggregateClusterHealthFailover(t *testing.T) {
	var sick atomic.Bool
	primary := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if sick.Load() {
				w.WriteHeader(503)
			}
			return
		}
		testutil.EchoHandler("primary").ServeHTTP(w, r)
	}))
	secondary := testutil.StartUpstream(t, testutil.EchoHandler("secondary"))
	hc := "health_checks: [{timeout: 1s, interval: 0.05s, no_traffic_interval: 0.05s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /healthz}}]"
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /}, route: {cluster: agg}}"),
		clusters: "[" + aggregateCluster("agg", "primary", "secondary") + ", " +
			staticCluster("primary", hc, primary.Addr) + ", " + staticCluster("secondary", "", secondary.Addr) + "]",
	})
	c := testutil.Client()
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.primary.membership_healthy") == 1 }, "primary never healthy")
	expect := func(want string, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			code, hdr, _ := testutil.Get(t, c, p.URL("http", "/"))
			if code != 200 || hdr.Get("x-upstream") != want {
				t.Fatalf("request %d: %d from %q, want 200 from %q", i, code, hdr.Get("x-upstream"), want)
			}
		}
	}
	expect("primary", 10)
	if v := p.Stat(t, "cluster.primary.upstream_rq_total"); v != 10 {
		t.Errorf("cluster.primary.upstream_rq_total = %d, want 10", v)
	}
	sick.Store(true)
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.primary.membership_healthy") == 0 }, "primary not ejected")
	expect("secondary", 10)
	if v := p.Stat(t, "cluster.secondary.upstream_rq_total"); v != 10 {
		t.Errorf("cluster.secondary.upstream_rq_total = %d, want 10", v)
	}
	sick.Store(false)
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.primary.membership_healthy") == 1 }, "primary not restored")
	expect("primary", 5)
	if v := p.Stat(t, "cluster.primary.upstream_rq_200"); v != 15 {
		t.Errorf("cluster.primary.upstream_rq_200 = %d, want 15", v)
	}
}

// TestAggregateClusterRetryFailover: an unreachable first child (no
// health checks, so its host still counts as healthy) fails the first
// attempt; the retry, excluding the host already tried (previous_hosts),
// moves on to the second child. The retry is the aggregate's, the
// connect failure the first child's. A child that does not exist is
// skipped.
func TestAggregateClusterRetryFailover(t *testing.T) {
	secondary := testutil.StartUpstream(t, testutil.EchoHandler("secondary"))
	dead := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /}, route: {cluster: agg, retry_policy: {retry_on: connect-failure, num_retries: 2, " +
			"retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {'@type': type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}], " +
			"retry_back_off: {base_interval: 0.005s, max_interval: 0.01s}}}}"),
		clusters: "[" + aggregateCluster("agg", "missing", "primary", "secondary") + ", " +
			staticCluster("primary", "", dead) + ", " + staticCluster("secondary", "", secondary.Addr) + "]",
	})
	c := testutil.Client()
	for i := 0; i < 3; i++ {
		code, hdr, _ := testutil.Get(t, c, p.URL("http", "/"))
		if code != 200 || hdr.Get("x-upstream") != "secondary" {
			t.Fatalf("request %d: %d from %q, want 200 from secondary", i, code, hdr.Get("x-upstream"))
		}
	}
	for name, want := range map[string]int64{
		"cluster.agg.upstream_rq_retry":            3,
		"cluster.agg.upstream_rq_retry_success":    3,
		"cluster.primary.upstream_cx_connect_fail": 3,
		"cluster.secondary.upstream_rq_total":      3,
		"cluster.secondary.upstream_rq_200":        3,
	} {
		if v := p.Stat(t, name); v != want {
			t.Errorf("%s = %d, want %d", name, v, want)
		}
	}
}

// TestAggregateClusterNoChild: with no child cluster defined, a request
// finds no healthy upstream (503 UH), counted on the aggregate.
func TestAggregateClusterNoChild(t *testing.T) {
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: agg}}"),
		clusters: "[" + aggregateCluster("agg", "later") + "]",
	})
	code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/"))
	if code != 503 || !strings.Contains(body, "no healthy upstream") {
		t.Fatalf("got %d %q, want 503 no healthy upstream", code, body)
	}
	if v := p.Stat(t, "cluster.agg.upstream_cx_none_healthy"); v != 1 {
		t.Errorf("cluster.agg.upstream_cx_none_healthy = %d, want 1", v)
	}
}

// TestAggregateClusterConfigErrors: bad aggregate configurations are
// refused at load, naming the field.
func TestAggregateClusterConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, cluster, want string }{
		{"empty", `{name: agg, cluster_type: {name: envoy.clusters.aggregate, typed_config: {"@type": type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig}}}`, "clusters"},
		{"self", aggregateCluster("agg", "agg"), "clusters[0]"},
		{"twice", aggregateCluster("agg", "a", "a"), "clusters[1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testutil.TryStartProxy(t, cfg{vhosts: vhost("{match: {prefix: /}, route: {cluster: agg}}"), clusters: "[" + tc.cluster + "]"}.String(), nil)
			if err == nil || !strings.Contains(err.Error(), "cluster_type.typed_config."+tc.want) {
				t.Fatalf("err = %v, want one naming cluster_type.typed_config.%s", err, tc.want)
			}
		})
	}
}
