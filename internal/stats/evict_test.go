package stats

import "testing"

// Envoy's stats_eviction_interval: a metric unused for a whole round
// leaves the output at the next round and comes back when used.
func TestEvict(t *testing.T) {
	s := NewStore()
	busy, idle := s.Counter("busy"), s.Counter("idle")
	g := s.Gauge("level")
	h := s.Histogram("time")
	names := func() map[string]bool {
		out := map[string]bool{}
		snap := s.Snapshot()
		for _, c := range snap.Counters {
			out[c.Name()] = true
		}
		for _, x := range snap.Gauges {
			out[x.Name()] = true
		}
		for _, x := range snap.Histograms {
			out[x.Name()] = true
		}
		return out
	}
	idle.Inc()
	s.Evict() // marks everything unused
	if n := names(); len(n) != 4 {
		t.Fatalf("after the first round: %v, want all four", n)
	}
	busy.Inc()
	g.Set(3)
	h.Record(1)
	s.Evict() // idle was not used for a round: evicted
	if n := names(); n["idle"] || !n["busy"] || !n["level"] || !n["time"] {
		t.Fatalf("after the second round: %v, want all but idle", n)
	}
	idle.Inc() // used again: back at once
	if n := names(); !n["idle"] {
		t.Fatalf("idle not back after use: %v", n)
	}
	s.Evict()
	s.Evict() // nothing used for a round
	if n := names(); len(n) != 0 {
		t.Fatalf("after two idle rounds: %v, want none", n)
	}
	if v, ok := s.Value("idle"); !ok || v != 2 {
		t.Fatalf("an evicted counter keeps counting: %d %v", v, ok)
	}
}
