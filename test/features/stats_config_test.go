// stats_config: histogram_bucket_settings gives matching histograms
// their own bucket bounds in /stats/prometheus (others keep Envoy's
// defaults); invalid bounds are refused.
package features_test

import (
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestHistogramBucketSettings: the cluster's upstream_rq_time takes the
// first matching rule's buckets, the connection manager's
// downstream_rq_time keeps the defaults.
func TestHistogramBucketSettings(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	c := cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: u}}"),
		clusters: "[" + staticCluster("u", "", u.Addr) + "]",
		extra: `stats_config:
  histogram_bucket_settings:
  - {match: {prefix: cluster.u.upstream_rq_time}, buckets: [60000, 1, 10000]}
  - {match: {prefix: cluster.}, buckets: [42]}
`,
	}
	p := start(t, c)
	cl := testutil.Client()
	if code, _, _ := testutil.Get(t, cl, p.URL("http", "/")); code != 200 {
		t.Fatalf("status %d", code)
	}
	var body string
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, _, body = testutil.Get(t, cl, "http://"+p.Admin+"/stats/prometheus")
		return strings.Contains(body, `envoy_cluster_upstream_rq_time_count{envoy_cluster_name="u"} 1`)
	}, "upstream_rq_time recorded")
	for _, want := range []string{
		`envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="u",le="1"}`,
		`envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="u",le="10000"} 1`,
		`envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="u",le="60000"} 1`,
		`envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="u",le="+Inf"} 1`,
		// The second rule matches other cluster histograms.
		`envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name="u",le="42"}`,
		// No rule: Envoy's default bounds.
		`envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix="ingress",le="0.5"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/stats/prometheus lacks %s", want)
		}
	}
	if strings.Contains(body, `envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="u",le="0.5"}`) {
		t.Error("upstream_rq_time still has the default bounds")
	}
	for _, bad := range []string{"[0]", "[5, 5]", "[]"} {
		c.extra = "stats_config: {histogram_bucket_settings: [{match: {prefix: cluster.}, buckets: " + bad + "}]}\n"
		if _, err := testutil.TryStartProxy(t, c.String(), nil); err == nil {
			t.Errorf("buckets %s accepted; Envoy wants at least one unique bound above 0", bad)
		}
	}
}
