package stats

import "testing"

// Regression: per-code counters were kept in a sync.Map keyed by the
// status, which boxed (allocated) codes ≥ 256 on every response.
func TestStatusCountersDoNotAllocate(t *testing.T) {
	sc := NewStatusCounters(NewStore().Scope("cluster.c."), "upstream_rq", true)
	sc.Inc(503)
	if n := testing.AllocsPerRun(1000, func() { sc.Inc(503); sc.Inc(200) }); n != 0 {
		t.Errorf("Inc allocates %.1f times per call", n)
	}
	if v, _ := sc.scope.store.Value("cluster.c.upstream_rq_503"); v != 1002 {
		t.Errorf("upstream_rq_503 = %d, want 1002 (1 + AllocsPerRun's warm-up and 1000 runs)", v)
	}
}
