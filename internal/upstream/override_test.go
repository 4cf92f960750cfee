package upstream

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/legateproxy/legate/internal/streaminfo"
)

// TestPickOverride: an override host is used when the cluster has it with
// an allowed health status; otherwise a strict override picks nothing
// (and says whether the host was missing) and a lenient one falls back.
func TestPickOverride(t *testing.T) {
	hosts := testHosts(3)
	hosts[1].setFlag(FlagFailedActiveHC, true)
	hosts[2].setFlag(FlagDegradedEDS, true)
	only := func(s ...corev3.HealthStatus) uint32 {
		return compileOverrideStatuses(&corev3.HealthStatusSet{Statuses: s})
	}
	for _, tc := range []struct {
		name         string
		statuses     uint32
		addr         string
		strict       bool
		want         *Host // nil: none; fallback: any host but from the LB
		fallback     bool
		wantNotFound bool
	}{
		{"healthy", 0, hosts[0].Address, false, hosts[0], false, false},
		{"degraded by default", 0, hosts[2].Address, true, hosts[2], false, false},
		{"unhealthy lenient", 0, hosts[1].Address, false, nil, true, false},
		{"unhealthy strict", 0, hosts[1].Address, true, nil, false, false},
		{"unhealthy allowed", only(corev3.HealthStatus_UNHEALTHY), hosts[1].Address, true, hosts[1], false, false},
		{"healthy not allowed", only(corev3.HealthStatus_UNHEALTHY), hosts[0].Address, true, nil, false, false},
		{"unknown counts as healthy", only(corev3.HealthStatus_UNKNOWN), hosts[0].Address, true, hosts[0], false, false},
		{"empty set", only(), hosts[0].Address, true, nil, false, false},
		{"missing strict", 0, "10.9.9.9:1", true, nil, false, true},
		{"missing lenient", 0, "10.9.9.9:1", false, nil, true, false},
	} {
		c := &Cluster{}
		c.lb = lbConfig{policy: RoundRobin, panicThreshold: 50, overprovision: 1.4, overrideStatuses: tc.statuses}
		c.hosts.Store(buildHostSet(hosts, &c.lb))
		ctx := &LBContext{Override: &streaminfo.OverrideHost{Address: tc.addr, Strict: tc.strict}}
		h, ok := c.pickOverride(ctx)
		if tc.fallback {
			if ok {
				t.Errorf("%s: picked %v, want the load balancer to pick", tc.name, h)
			}
			continue
		}
		if !ok || h != tc.want {
			t.Errorf("%s: %v %v, want %v", tc.name, h, ok, tc.want)
		}
		if ctx.OverrideNotFound != tc.wantNotFound {
			t.Errorf("%s: OverrideNotFound %v", tc.name, ctx.OverrideNotFound)
		}
	}
}

// TestHostSetByAddress: the address lookup of sticky sessions, indexed in
// large sets and scanned in small ones, finds the same hosts.
func TestHostSetByAddress(t *testing.T) {
	for _, n := range []int{3, 40} {
		hosts := testHosts(n)
		hs := buildHostSet(hosts, &lbConfig{overprovision: 1.4})
		if (hs.addrIndex != nil) != (n > 16) {
			t.Errorf("%d hosts: index %v", n, hs.addrIndex != nil)
		}
		if got := hs.byAddress(hosts[n-1].Address); got != hosts[n-1] {
			t.Errorf("%d hosts: byAddress(last) = %v", n, got)
		}
		if got := hs.byAddress("192.0.2.1:1"); got != nil {
			t.Errorf("%d hosts: an unknown address found %v", n, got)
		}
	}
}
