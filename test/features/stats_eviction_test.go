// stats_eviction_interval: metrics unused for a round leave /stats until
// they are used again (Envoy's metric eviction).

package features_test

import (
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestStatsEviction(t *testing.T) {
	a := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	b := testutil.StartUpstream(t, testutil.EchoHandler("b"))
	p := start(t, cfg{
		vhosts:   vhost(`{match: {prefix: /a}, route: {cluster: a}}`, `{match: {prefix: /b}, route: {cluster: b}}`),
		clusters: "[" + staticCluster("a", "", a.Addr) + ", " + staticCluster("b", "", b.Addr) + "]",
		extra:    "stats_flush_interval: 0.1s\nstats_eviction_interval: 0.2s\n",
	})
	stats := func() string {
		_, _, body := testutil.Get(t, testutil.Client(), "http://"+p.Admin+"/stats")
		return body
	}
	testutil.Get(t, testutil.Client(), p.URL("http", "/b"))
	// Only cluster a is used from now on: b's counters leave /stats.
	testutil.Eventually(t, 5*time.Second, func() bool {
		testutil.Get(t, testutil.Client(), p.URL("http", "/a"))
		s := stats()
		return strings.Contains(s, "cluster.a.upstream_rq_total:") && !strings.Contains(s, "cluster.b.upstream_rq_total:")
	}, "cluster b's unused counters never evicted:\n%s", stats())
	// Used again: back, with its value kept.
	testutil.Get(t, testutil.Client(), p.URL("http", "/b"))
	if s := stats(); !strings.Contains(s, "cluster.b.upstream_rq_total: 2") {
		t.Errorf("cluster b's counter not back after use:\n%s", s)
	}

	// Envoy requires a multiple of stats_flush_interval.
	_, err := testutil.TryStartProxy(t, cfg{vhosts: vhost(`{match: {prefix: /}, route: {cluster: a}}`), clusters: "[" + staticCluster("a", "", a.Addr) + "]",
		extra: "stats_flush_interval: 2s\nstats_eviction_interval: 3s\n"}.String(), nil)
	if err == nil || !strings.Contains(err.Error(), "stats_eviction_interval") {
		t.Errorf("an interval that is not a multiple of the flush interval: %v", err)
	}
}
