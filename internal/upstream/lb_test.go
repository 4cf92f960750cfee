package upstream

import (
	"fmt"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/cespare/xxhash/v2"
)

func testHosts(n int) []*Host {
	hosts := make([]*Host, n)
	for i := range hosts {
		hosts[i] = newHost(fmt.Sprintf("10.0.0.%d:8080", i+1), HostConfig{Weight: 1})
	}
	return hosts
}

// TestHashConsistency checks the hashing balancers as Envoy users rely on
// them: keys spread evenly and deterministically, and removing one of N
// hosts moves about 1/N of the keys (up to 2/N for the ring, whose size
// per host follows Envoy's min_ring_size/N rule).
func TestHashConsistency(t *testing.T) {
	const n, keys = 10, 10000
	for _, tc := range []struct {
		name     string
		policy   LBPolicy
		maxMoved float64 // fraction of all keys
	}{
		// Envoy sizes the ring so each host has about min_ring_size/N
		// points: with one host fewer, the others get more points, which
		// moves some keys between them too (Envoy does the same).
		{"ring_hash", RingHash, 2.0 / n},
		{"maglev", Maglev, 1.35 / n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := lbConfig{policy: tc.policy, panicThreshold: 50, overprovision: 1.4, ringMin: 1024, ringMax: 8 << 20, maglevSize: 65537}
			hosts := testHosts(n)
			before := buildHostSet(hosts, &cfg)
			removed := hosts[3]
			after := buildHostSet(append(append([]*Host{}, hosts[:3]...), hosts[4:]...), &cfg)
			spread := map[*Host]int{}
			moved, onRemoved := 0, 0
			for i := 0; i < keys; i++ {
				k := xxhash.Sum64String(fmt.Sprintf("user-%d", i))
				a := before.pick(&cfg, &LBContext{HashKey: k, HasHash: true})
				b := after.pick(&cfg, &LBContext{HashKey: k, HasHash: true})
				if again := before.pick(&cfg, &LBContext{HashKey: k, HasHash: true}); again != a {
					t.Fatalf("key %d picked %s then %s: not deterministic", i, a.Address, again.Address)
				}
				spread[a]++
				if a == removed {
					onRemoved++
				}
				if a != b {
					moved++
				}
				if b == removed {
					t.Fatalf("a removed host was picked")
				}
			}
			for _, h := range hosts {
				if c := spread[h]; c < keys/n*6/10 || c > keys/n*14/10 {
					t.Errorf("host %s got %d of %d keys: uneven spread", h.Address, c, keys)
				}
			}
			if float64(moved) > tc.maxMoved*keys {
				t.Errorf("removing 1 of %d hosts moved %d of %d keys (%d were on it); want at most about 1/N", n, moved, keys, onRemoved)
			}
			t.Logf("%s: %d of %d keys moved after removing 1 of %d hosts (%d were on it)", tc.name, moved, keys, n, onRemoved)
		})
	}
}

// TestLocalityWeighted checks Envoy's locality-weighted balancing: a
// locality's share is its weight × min(1, 1.4 × healthy/total).
func TestLocalityWeighted(t *testing.T) {
	mk := func(i int, zone string, w uint32) *Host {
		return newHost(fmt.Sprintf("10.0.1.%d:80", i), HostConfig{Weight: 1, Locality: &corev3.Locality{Zone: zone}, LocalityWeight: w})
	}
	hosts := []*Host{mk(1, "a", 3), mk(2, "a", 3), mk(3, "b", 1), mk(4, "b", 1), mk(5, "c", 0)}
	cfg := lbConfig{policy: RoundRobin, panicThreshold: 50, overprovision: 1.4, localityWeighted: true}
	share := func(hs *hostSet) map[string]float64 {
		n := map[string]int{}
		const picks = 10000
		for i := 0; i < picks; i++ {
			n[hs.pick(&cfg, nil).Config().Locality.GetZone()]++
		}
		out := map[string]float64{}
		for k, v := range n {
			out[k] = float64(v) / picks
		}
		return out
	}
	got := share(buildHostSet(hosts, &cfg))
	if d := got["a"] - 0.75; d > 0.02 || d < -0.02 || got["c"] != 0 {
		t.Errorf("shares %v, want a 0.75, b 0.25, c (no weight) 0", got)
	}
	hosts[0].setFlag(FlagFailedActiveHC, true)
	got = share(buildHostSet(hosts, &cfg))
	// a: 3 × min(1, 1.4 × 1/2) = 2.1; b: 1 → a gets 2.1/3.1.
	if d := got["a"] - 2.1/3.1; d > 0.02 || d < -0.02 {
		t.Errorf("with one of a's hosts unhealthy: shares %v, want a %.3f", got, 2.1/3.1)
	}
}

// TestSlowStart: a new host's round-robin and least-request weight ramps
// from min_weight_percent, following (elapsed/window)^(1/aggression).
func TestSlowStart(t *testing.T) {
	hosts := testHosts(2)
	old, young := hosts[0], hosts[1]
	for _, policy := range []LBPolicy{RoundRobin, LeastRequest} {
		cfg := lbConfig{policy: policy, choiceCount: 2, activeRqBias: 1, panicThreshold: 50, overprovision: 1.4,
			slowStart: 10 * time.Second, aggression: 1, minWeightPct: 10}
		share := func() float64 {
			hs := buildHostSet(hosts, &cfg)
			n := 0
			const picks = 20000
			for i := 0; i < picks; i++ {
				if hs.pick(&cfg, nil) == young {
					n++
				}
			}
			return float64(n) / picks
		}
		young.slowStartFrom.Store(time.Now().UnixNano())
		// Just added: min_weight_percent 10% → 0.1/(1+0.1).
		if s := share(); s < 0.06 || s > 0.13 {
			t.Errorf("policy %d: a just-added host gets %.3f of picks, want about 0.09", policy, s)
		}
		young.slowStartFrom.Store(time.Now().Add(-5 * time.Second).UnixNano())
		// Half the window: 0.5/(1+0.5).
		if s := share(); s < 0.28 || s > 0.39 {
			t.Errorf("policy %d: a host halfway through slow start gets %.3f, want about 0.33", policy, s)
		}
		young.slowStartFrom.Store(time.Now().Add(-11 * time.Second).UnixNano())
		if s := share(); s < 0.45 || s > 0.55 {
			t.Errorf("policy %d: after the window the host gets %.3f, want 0.5", policy, s)
		}
		_ = old
	}
}

// BenchmarkPick is one load-balancer pick per policy over 10 hosts.
func BenchmarkPick(b *testing.B) {
	for _, tc := range []struct {
		name   string
		policy LBPolicy
	}{{"round_robin", RoundRobin}, {"least_request", LeastRequest}, {"random", Random}, {"ring_hash", RingHash}, {"maglev", Maglev}} {
		cfg := lbConfig{policy: tc.policy, choiceCount: 2, activeRqBias: 1, panicThreshold: 50, overprovision: 1.4, ringMin: 1024, ringMax: 8 << 20, maglevSize: 65537}
		hs := buildHostSet(testHosts(10), &cfg)
		ctx := &LBContext{HashKey: 12345, HasHash: true}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				ctx.HashKey++
				if hs.pick(&cfg, ctx) == nil {
					b.Fatal("no host")
				}
			}
		})
	}
}

// TestPanicMode follows Envoy's recalculatePerPriorityPanic: no panic
// while the priorities together are fully available (overprovisioned);
// otherwise a priority whose healthy share (not overprovisioned) is
// below the threshold balances over all its hosts; threshold 0 disables
// panic, leaving a cluster without healthy hosts with none to give.
func TestPanicMode(t *testing.T) {
	cases := []struct {
		name      string
		prios     [][2]int // per priority: hosts, healthy
		threshold float64
		wantPanic []bool
		total     bool // every priority in panic
		noHost    bool
	}{
		{name: "half healthy, default 50", prios: [][2]int{{2, 1}}, threshold: 50, wantPanic: []bool{false}},
		{name: "half healthy, threshold 60", prios: [][2]int{{2, 1}}, threshold: 60, wantPanic: []bool{true}, total: true},
		{name: "none healthy", prios: [][2]int{{2, 0}}, threshold: 50, wantPanic: []bool{true}, total: true},
		{name: "none healthy, panic disabled", prios: [][2]int{{2, 0}}, threshold: 0, wantPanic: []bool{false}, noHost: true},
		{name: "P1 makes up for P0", prios: [][2]int{{4, 1}, {2, 2}}, threshold: 50, wantPanic: []bool{false, false}},
		{name: "both in panic", prios: [][2]int{{4, 1}, {4, 1}}, threshold: 50, wantPanic: []bool{true, true}, total: true},
		{name: "P0 at the threshold, P1 below", prios: [][2]int{{10, 5}, {10, 1}}, threshold: 50, wantPanic: []bool{false, true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var hosts []*Host
			for p, ph := range tc.prios {
				for i := 0; i < ph[0]; i++ {
					h := newHost(fmt.Sprintf("10.0.%d.%d:80", p, i+1), HostConfig{Weight: 1, Priority: uint32(p)})
					if i >= ph[1] {
						h.setFlag(FlagFailedActiveHC, true)
					}
					hosts = append(hosts, h)
				}
			}
			cfg := lbConfig{policy: RoundRobin, panicThreshold: tc.threshold, overprovision: 1.4}
			hs := buildHostSet(hosts, &cfg)
			for i, want := range tc.wantPanic {
				if hs.prioPanic[i] != want {
					t.Errorf("priority %d panic = %v, want %v", i, hs.prioPanic[i], want)
				}
			}
			if hs.panic != tc.total {
				t.Errorf("total panic = %v, want %v", hs.panic, tc.total)
			}
			if got := hs.pick(&cfg, nil); (got == nil) != tc.noHost {
				t.Errorf("pick = %v, want none: %v", got, tc.noHost)
			}
		})
	}
}
