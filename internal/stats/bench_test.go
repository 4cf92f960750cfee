package stats

import "testing"

// BenchmarkStats measures the hot-path stat updates.
func BenchmarkStats(b *testing.B) {
	s := NewStore().Scope("cluster.bench.")
	c, g, h := s.Counter("upstream_rq_total"), s.Gauge("upstream_rq_active"), s.Histogram("upstream_rq_time")
	b.Run("counter_inc", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			c.Inc()
		}
	})
	b.Run("gauge_inc_dec", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			g.Inc()
			g.Dec()
		}
	})
	b.Run("histogram_record", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			h.Record(float64(i % 1000))
		}
	})
	if c.Value() == 0 {
		b.Fatal("counter not incremented")
	}
}
