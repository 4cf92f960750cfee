package upstream

import (
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	orcav3 "github.com/cncf/xds/go/xds/data/orca/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/stats"
)

// TestCSWRRWeightFromReport checks Envoy's weight formula: qps /
// (utilization + eps/qps × penalty), utilization from the named metrics,
// else application_utilization, else cpu_utilization.
func TestCSWRRWeightFromReport(t *testing.T) {
	for _, tc := range []struct {
		name    string
		metrics []string
		penalty float64
		r       *orcav3.OrcaLoadReport
		want    uint64
		ok      bool
	}{
		{name: "cpu", penalty: 1, r: &orcav3.OrcaLoadReport{RpsFractional: 100, CpuUtilization: 0.5}, want: 200, ok: true},
		{name: "application over cpu", penalty: 1, r: &orcav3.OrcaLoadReport{RpsFractional: 100, CpuUtilization: 0.5, ApplicationUtilization: 0.25}, want: 400, ok: true},
		{name: "named metrics first", penalty: 1, metrics: []string{"named_metrics.a", "named_metrics.b"},
			r: &orcav3.OrcaLoadReport{RpsFractional: 100, ApplicationUtilization: 0.25, NamedMetrics: map[string]float64{"a": 0.1, "b": 0.8}}, want: 125, ok: true},
		{name: "error penalty", penalty: 1, r: &orcav3.OrcaLoadReport{RpsFractional: 100, CpuUtilization: 0.5, Eps: 50}, want: 100, ok: true},
		{name: "penalty scaled", penalty: 2, r: &orcav3.OrcaLoadReport{RpsFractional: 100, CpuUtilization: 0.5, Eps: 25}, want: 100, ok: true},
		{name: "no qps", penalty: 1, r: &orcav3.OrcaLoadReport{CpuUtilization: 0.5}},
		{name: "no utilization", penalty: 1, r: &orcav3.OrcaLoadReport{RpsFractional: 10}},
		{name: "errors alone count", penalty: 1, r: &orcav3.OrcaLoadReport{RpsFractional: 10, Eps: 10}, want: 10, ok: true},
		{name: "at least 1", penalty: 1, r: &orcav3.OrcaLoadReport{RpsFractional: 0.5, CpuUtilization: 1}, want: 1, ok: true},
		{name: "capped", penalty: 1, r: &orcav3.OrcaLoadReport{RpsFractional: 1e12, CpuUtilization: 1e-6}, want: math.MaxUint32, ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &cswrr{cfg: cswrrConfig{penalty: tc.penalty, metrics: tc.metrics}}
			w, ok := s.weightFrom(tc.r)
			if ok != tc.ok || w != tc.want {
				t.Fatalf("weight %d, %v; want %d, %v", w, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestCSWRRRecompute checks the weight update: blackout, expiration (which
// restarts the blackout) and the median weight of hosts without one.
func TestCSWRRRecompute(t *testing.T) {
	t0 := time.Unix(1000, 0)
	hosts := testHosts(4)
	s := &cswrr{cfg: cswrrConfig{blackout: 10 * time.Second, expiration: time.Minute}}
	report := func(h *Host, w uint64, at time.Time) {
		d, _ := s.data.LoadOrStore(h, &orcaWeight{})
		d.(*orcaWeight).update(w, at)
	}
	check := func(step string, want ...uint64) {
		t.Helper()
		for i, h := range hosts {
			if got := s.weightOf(h); got != want[i] {
				t.Errorf("%s: host %d weight %d, want %d", step, i, got, want[i])
			}
		}
	}
	check("before any update: configured weights", 1, 1, 1, 1)
	report(hosts[0], 100, t0)
	report(hosts[1], 300, t0)
	report(hosts[2], 200, t0)
	s.recompute(hosts, t0.Add(5*time.Second))
	check("in blackout: every host gets the default", 1, 1, 1, 1)
	report(hosts[0], 100, t0.Add(11*time.Second))
	s.recompute(hosts, t0.Add(11*time.Second))
	check("after blackout", 100, 300, 200, 200)
	s.recompute(hosts, t0.Add(65*time.Second))
	check("hosts 1 and 2 expired: median of the one left", 100, 100, 100, 100)
	// Host 1 reports again: its blackout starts over.
	report(hosts[1], 300, t0.Add(66*time.Second))
	report(hosts[0], 100, t0.Add(66*time.Second))
	s.recompute(hosts, t0.Add(70*time.Second))
	check("expired host in a new blackout", 100, 100, 100, 100)
	report(hosts[1], 300, t0.Add(77*time.Second))
	report(hosts[0], 100, t0.Add(77*time.Second))
	s.recompute(hosts, t0.Add(77*time.Second))
	check("even count: mean of the middle two", 100, 300, 200, 200)
	if s.recompute(hosts, t0.Add(77*time.Second)) {
		t.Error("recompute without a change reported one")
	}
	// A removed host's report is dropped.
	s.recompute(hosts[:1], t0.Add(78*time.Second))
	if _, ok := s.data.Load(hosts[1]); ok {
		t.Error("a host that left kept its report")
	}
}

// TestCSWRRPickProportions checks that picks follow the weights.
func TestCSWRRPickProportions(t *testing.T) {
	hosts := testHosts(3)
	s := &cswrr{}
	s.weights.Store(&map[*Host]uint64{hosts[0]: 500, hosts[1]: 250, hosts[2]: 125})
	cfg := lbConfig{policy: RoundRobin, panicThreshold: 50, overprovision: 1.4, cswrr: s}
	hs := buildHostSet(hosts, &cfg)
	got := map[*Host]int{}
	for i := 0; i < 7000; i++ {
		got[hs.pick(&cfg, nil)]++
	}
	for i, want := range []int{4000, 2000, 1000} {
		if got[hosts[i]] != want {
			t.Errorf("host %d: %d picks, want %d", i, got[hosts[i]], want)
		}
	}
	// Huge spreads scale down but keep every host.
	ws := []uint64{math.MaxUint32, 1, 1}
	w := newIntWRR(ws)
	seen := map[uint16]int{}
	for _, x := range w.seq {
		seen[x]++
	}
	if len(w.seq) > maxSeq+2 || seen[1] == 0 || seen[2] == 0 {
		t.Errorf("scaled sequence of %d entries picks %v", len(w.seq), seen)
	}
}

// TestCSWRRWithLocalities checks wrr_locality over CSWRR: localities by
// their weights, hosts within by their reported weights.
func TestCSWRRWithLocalities(t *testing.T) {
	mk := func(addr, zone string, lw uint32) *Host {
		return newHost(addr, HostConfig{Weight: 1, Locality: &corev3.Locality{Zone: zone}, LocalityWeight: lw})
	}
	a1, a2, b1 := mk("10.0.0.1:80", "a", 3), mk("10.0.0.2:80", "a", 3), mk("10.0.0.3:80", "b", 1)
	s := &cswrr{}
	s.weights.Store(&map[*Host]uint64{a1: 300, a2: 100, b1: 7})
	cfg := lbConfig{policy: RoundRobin, panicThreshold: 50, overprovision: 1.4, localityWeighted: true, cswrr: s}
	hs := buildHostSet([]*Host{a1, a2, b1}, &cfg)
	got := map[*Host]int{}
	const n = 8000
	for i := 0; i < n; i++ {
		got[hs.pick(&cfg, nil)]++
	}
	// Locality a gets 3/4, split 3:1; b gets 1/4.
	for h, want := range map[*Host]float64{a1: 0.5625, a2: 0.1875, b1: 0.25} {
		if f := float64(got[h]) / n; math.Abs(f-want) > 0.02 {
			t.Errorf("%s: share %.3f, want %.3f", h.Address, f, want)
		}
	}
}

func TestCSWRRConfig(t *testing.T) {
	const base = `
name: web
type: STATIC
load_assignment: {cluster_name: web, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}
`
	const cswrrType = `"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin`
	const wrrType = `"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.wrr_locality.v3.WrrLocality`
	for _, tc := range []struct {
		name, yaml string
		err        string
		want       cswrrConfig
		policy     LBPolicy
		locality   bool
		noCSWRR    bool
	}{
		{name: "defaults", yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: c, typed_config: {` + cswrrType + `}}}]}`,
			want: cswrrConfig{blackout: 10 * time.Second, expiration: 3 * time.Minute, update: time.Second, penalty: 1, oobPeriod: 10 * time.Second}},
		{name: "set", yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: c, typed_config: {` + cswrrType + `, blackout_period: 0s, weight_expiration_period: 5s, weight_update_period: 0.01s, error_utilization_penalty: 2.5, metric_names_for_computing_utilization: [named_metrics.q]}}}]}`,
			want: cswrrConfig{blackout: 0, expiration: 5 * time.Second, update: 100 * time.Millisecond, penalty: 2.5, metrics: []string{"named_metrics.q"}, oobPeriod: 10 * time.Second}},
		{name: "oob", yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: c, typed_config: {` + cswrrType + `, enable_oob_load_report: true, oob_reporting_period: 2s}}}]}`,
			want: cswrrConfig{blackout: 10 * time.Second, expiration: 3 * time.Minute, update: time.Second, penalty: 1, oob: true, oobPeriod: 2 * time.Second}},
		{name: "oob authority", yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: c, typed_config: {` + cswrrType + `, enable_oob_load_report: true, oob_reporting_config: {authority: orca.example}}}}]}`,
			want: cswrrConfig{blackout: 10 * time.Second, expiration: 3 * time.Minute, update: time.Second, penalty: 1, oob: true, oobPeriod: 10 * time.Second, oobAuthority: "orca.example"}},
		{name: "oob reporting config without oob has no effect", yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: c, typed_config: {` + cswrrType + `, oob_reporting_config: {port_value: 9000}}}}]}`,
			want: cswrrConfig{blackout: 10 * time.Second, expiration: 3 * time.Minute, update: time.Second, penalty: 1, oobPeriod: 10 * time.Second}},
		{name: "oob port override", err: "oob_reporting_config.port_value: field OrcaOobReportingConfig.port_value is not supported by legate", yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: c, typed_config: {` + cswrrType + `, enable_oob_load_report: true, oob_reporting_config: {port_value: 9000}}}}]}`},
		{name: "negative penalty", err: "error_utilization_penalty", yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: c, typed_config: {` + cswrrType + `, error_utilization_penalty: -1}}}]}`},
		{name: "wrr_locality over cswrr", locality: true, yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: w, typed_config: {` + wrrType + `, endpoint_picking_policy: {policies: [{typed_extension_config: {name: c, typed_config: {` + cswrrType + `, blackout_period: 1s}}}]}}}}]}`,
			want: cswrrConfig{blackout: time.Second, expiration: 3 * time.Minute, update: time.Second, penalty: 1, oobPeriod: 10 * time.Second}},
		{name: "wrr_locality over round robin", locality: true, noCSWRR: true, yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: w, typed_config: {` + wrrType + `, endpoint_picking_policy: {policies: [
  {typed_extension_config: {name: pf, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.pick_first.v3.PickFirst}}},
  {typed_extension_config: {name: rr, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin}}}]}}}}]}`},
		{name: "wrr_locality over least request", locality: true, noCSWRR: true, policy: LeastRequest, yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: w, typed_config: {` + wrrType + `, endpoint_picking_policy: {policies: [
  {typed_extension_config: {name: lr, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest}}}]}}}}]}`},
		{name: "wrr_locality over maglev", err: "cannot pick endpoints within a locality", yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: w, typed_config: {` + wrrType + `, endpoint_picking_policy: {policies: [
  {typed_extension_config: {name: m, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev}}}]}}}}]}`},
		{name: "wrr_locality nested", err: "cannot pick endpoints within a locality", yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: w, typed_config: {` + wrrType + `, endpoint_picking_policy: {policies: [
  {typed_extension_config: {name: w2, typed_config: {` + wrrType + `, endpoint_picking_policy: {policies: [{typed_extension_config: {name: c, typed_config: {` + cswrrType + `}}}]}}}}]}}}}]}`},
		{name: "wrr_locality with nothing known", err: "is not implemented by legate", yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: w, typed_config: {` + wrrType + `, endpoint_picking_policy: {policies: [
  {typed_extension_config: {name: pf, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.pick_first.v3.PickFirst}}}]}}}}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc := &clusterv3.Cluster{}
			if _, err := config.Decode([]byte(base+tc.yaml), pc, "cluster"); err != nil {
				t.Fatal(err)
			}
			c, err := Compile(pc, "cluster", Deps{Stats: stats.NewStore()})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.lb.policy != tc.policy || c.lb.localityWeighted != tc.locality {
				t.Errorf("policy %v locality %v, want %v %v", c.lb.policy, c.lb.localityWeighted, tc.policy, tc.locality)
			}
			if tc.noCSWRR {
				if c.lb.cswrr != nil {
					t.Error("cswrr state without client_side_weighted_round_robin")
				}
				return
			}
			if c.lb.cswrr == nil {
				t.Fatal("no cswrr state")
			}
			got := c.lb.cswrr.cfg
			if got.blackout != tc.want.blackout || got.expiration != tc.want.expiration || got.update != tc.want.update ||
				got.penalty != tc.want.penalty || strings.Join(got.metrics, ",") != strings.Join(tc.want.metrics, ",") ||
				got.oob != tc.want.oob || got.oobPeriod != tc.want.oobPeriod || got.oobAuthority != tc.want.oobAuthority {
				t.Errorf("config %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestObserveOrca checks the per-response path: a report in headers
// updates the host's data; a malformed one is counted.
func TestObserveOrca(t *testing.T) {
	st := stats.NewStore()
	c := &Cluster{Name: "web", log: slog.New(slog.DiscardHandler)}
	c.lb.cswrr = &cswrr{cfg: cswrrConfig{penalty: 1}}
	c.lb.cswrr.attach(c, st.Scope("cluster.web."))
	h := testHosts(1)[0]
	var hd headers.Map
	hd.Add(OrcaHeader, "TEXT rps_fractional=10, cpu_utilization=0.5")
	if !c.observeOrca(h, &hd) {
		t.Fatal("report not seen")
	}
	d, ok := c.lb.cswrr.data.Load(h)
	if !ok || d.(*orcaWeight).weight != 20 {
		t.Fatalf("host data %v", d)
	}
	var bad headers.Map
	bad.Add(OrcaHeader, "TEXT cpu_utilization=x")
	c.observeOrca(h, &bad)
	var none headers.Map
	none.Add(OrcaHeader, "TEXT cpu_utilization=0.5") // no qps: no weight
	c.observeOrca(h, &none)
	if got := st.Counter("cluster.web.lb_orca_report_invalid").Value(); got != 2 {
		t.Errorf("lb_orca_report_invalid %d, want 2", got)
	}
}
