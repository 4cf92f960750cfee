package upstream

import (
	"fmt"
	"testing"

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
