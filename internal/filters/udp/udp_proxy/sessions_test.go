package udp_proxy

import (
	"net/netip"
	"testing"

	"github.com/cespare/xxhash/v2"
)

func TestSessionTable(t *testing.T) {
	k := func(port uint16, host string) sessionKey {
		return sessionKey{cluster: "c", local: netip.MustParseAddrPort("127.0.0.1:53"), peer: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port), host: host}
	}
	type op struct {
		add    bool
		key    sessionKey
		val    int
		wantOK bool
	}
	for _, tc := range []struct {
		name    string
		max     int
		ops     []op
		wantLen int
	}{
		{"bounded", 2, []op{{true, k(1, ""), 1, true}, {true, k(2, ""), 2, true}, {true, k(3, ""), 3, false}}, 2},
		{"replace existing key when full", 1, []op{{true, k(1, ""), 1, true}, {true, k(1, ""), 2, true}}, 1},
		{"per host keys are distinct", 3, []op{{true, k(1, "a:1"), 1, true}, {true, k(1, "b:1"), 2, true}, {true, k(1, ""), 3, true}}, 3},
		{"remove only the same session", 2, []op{{true, k(1, ""), 1, true}, {false, k(1, ""), 9, false}, {false, k(1, ""), 1, true}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := newSessionTable[int](tc.max)
			for i, o := range tc.ops {
				var ok bool
				if o.add {
					ok = tb.add(o.key, o.val)
				} else {
					v := o.val
					ok = tb.remove(o.key, func(x int) bool { return x == v })
				}
				if ok != o.wantOK {
					t.Fatalf("op %d: ok = %v, want %v", i, ok, o.wantOK)
				}
			}
			if tb.len() != tc.wantLen {
				t.Errorf("len = %d, want %d", tb.len(), tc.wantLen)
			}
			if got := len(tb.drain()); got != tc.wantLen || tb.len() != 0 {
				t.Errorf("drain returned %d, left %d", got, tb.len())
			}
		})
	}
}

func TestHashPolicy(t *testing.T) {
	a := netip.MustParseAddrPort("10.0.0.1:1000")
	b := netip.MustParseAddrPort("10.0.0.1:2000")
	c := netip.MustParseAddrPort("10.0.0.2:1000")
	for _, tc := range []struct {
		name     string
		h        *hashPolicy
		peer     netip.AddrPort
		want     uint64
		wantHash bool
	}{
		{"none", nil, a, 0, false},
		// Envoy hashes the IP's text, not the port: xxHash64("10.0.0.1").
		{"source_ip", &hashPolicy{sourceIP: true}, a, xxhash.Sum64String("10.0.0.1"), true},
		{"source_ip ignores the port", &hashPolicy{sourceIP: true}, b, xxhash.Sum64String("10.0.0.1"), true},
		{"source_ip other IP", &hashPolicy{sourceIP: true}, c, xxhash.Sum64String("10.0.0.2"), true},
		{"key is fixed", &hashPolicy{key: xxhash.Sum64String("k")}, c, xxhash.Sum64String("k"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, ok := tc.h.hash(tc.peer)
			if v != tc.want || ok != tc.wantHash {
				t.Errorf("hash = %d, %v; want %d, %v", v, ok, tc.want, tc.wantHash)
			}
		})
	}
}
