package upstream

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	orcav3 "github.com/cncf/xds/go/xds/data/orca/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	cswrrv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/client_side_weighted_round_robin/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/stats"
)

// weightedLBFactory is the Factory of a typed load-balancing policy whose
// host weights are computed while the cluster runs
// (client_side_weighted_round_robin, and wrr_locality over it): like an
// lbFactory it applies the static part to out, and it returns the policy's
// run-time state.
type weightedLBFactory func(out *clusterv3.Cluster, cfg proto.Message, path string, d Deps) (*cswrr, error)

func init() {
	extension.Register(extension.Extension{Name: "envoy.load_balancing_policies.client_side_weighted_round_robin", Category: extension.LoadBalancingPolicy,
		Config: &cswrrv3.ClientSideWeightedRoundRobin{}, Factory: weightedLBFactory(cswrrPolicy),
		Notes: "weights from ORCA reports in responses (endpoint-load-metrics, endpoint-load-metrics-bin headers or trailers) and, with enable_oob_load_report, from OpenRcaService streams"})
}

// cswrrConfig is a compiled ClientSideWeightedRoundRobin.
type cswrrConfig struct {
	blackout, expiration, update time.Duration
	penalty                      float64
	metrics                      []string
	// oob: weights come from out-of-band ORCA streams (OpenRcaService)
	// every oobPeriod instead of from responses.
	oob       bool
	oobPeriod time.Duration
	// oobAuthority overrides the streams' :authority
	// (oob_reporting_config.authority; "": the host's name, else address).
	oobAuthority string
}

// cswrr is the run-time state of client_side_weighted_round_robin in one
// cluster, as Envoy's ClientSideWeightedRoundRobinLoadBalancer: ORCA
// reports update a host's weight (qps / (utilization + eps/qps ×
// error_utilization_penalty)); every weight_update_period the weights a
// host has reported for longer than blackout_period and more recently
// than weight_expiration_period are used, and hosts without such a weight
// get the median of the others (1 if none has one).
type cswrr struct {
	cfg cswrrConfig
	// data is each host's reported weight (*orcaWeight), by *Host.
	data sync.Map
	// weights are the weights the balancer uses now, by host; a host
	// absent from it has its configured weight (before the first update).
	weights atomic.Pointer[map[*Host]uint64]
	// invalid counts reports that could not be parsed or gave no weight
	// (lb_orca_report_invalid).
	invalid *stats.Counter
	oob     *orcaOOB
}

// orcaWeight is what one host last reported (ClientSideHostLbPolicyData).
type orcaWeight struct {
	mu            sync.Mutex
	weight        uint64
	nonEmptySince time.Time // zero: no report since the weight expired
	lastUpdate    time.Time
}

func (w *orcaWeight) update(weight uint64, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.weight, w.lastUpdate = weight, now
	if w.nonEmptySince.IsZero() {
		w.nonEmptySince = now
	}
}

// valid returns the weight if it has been reported since before
// maxNonEmptySince and last updated after minLastUpdate; an expired
// weight restarts the blackout period.
func (w *orcaWeight) valid(maxNonEmptySince, minLastUpdate time.Time) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.nonEmptySince.IsZero() || w.nonEmptySince.After(maxNonEmptySince) {
		return 0, false
	}
	if w.lastUpdate.Before(minLastUpdate) {
		w.nonEmptySince = time.Time{}
		return 0, false
	}
	return w.weight, true
}

// durOr is d, or def when d is not set.
func durOr(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

// cswrrPolicy compiles ClientSideWeightedRoundRobin: a round robin (with
// its slow start) over weights the cluster computes from ORCA reports.
func cswrrPolicy(out *clusterv3.Cluster, cfg proto.Message, path string, _ Deps) (*cswrr, error) {
	c := cfg.(*cswrrv3.ClientSideWeightedRoundRobin)
	if err := config.CheckFields(c, path, "enable_oob_load_report", "oob_reporting_period", "blackout_period",
		"weight_expiration_period", "weight_update_period", "error_utilization_penalty",
		"metric_names_for_computing_utilization", "slow_start_config", "oob_reporting_config"); err != nil {
		return nil, err
	}
	cc := cswrrConfig{
		blackout:   durOr(c.GetBlackoutPeriod(), 10*time.Second),
		expiration: durOr(c.GetWeightExpirationPeriod(), 3*time.Minute),
		update:     durOr(c.GetWeightUpdatePeriod(), time.Second),
		penalty:    1,
		metrics:    slices.Clone(c.GetMetricNamesForComputingUtilization()),
		oob:        c.GetEnableOobLoadReport().GetValue(),
		oobPeriod:  durOr(c.GetOobReportingPeriod(), 10*time.Second),
	}
	// As Envoy: periods under 100ms are raised to 100ms.
	cc.update = max(cc.update, 100*time.Millisecond)
	if v := c.GetErrorUtilizationPenalty(); v != nil {
		cc.penalty = float64(v.GetValue())
		if cc.penalty < 0 {
			return nil, config.Errorf(config.Join(path, "error_utilization_penalty"), "must not be negative, got %v", cc.penalty)
		}
	}
	// oob_reporting_config applies only with OOB reporting (as Envoy); of
	// it, the :authority override is implemented: the streams go to the
	// host's own address over the cluster's transport socket.
	if rc := c.GetOobReportingConfig(); rc != nil && cc.oob {
		if err := config.CheckFields(rc, config.Join(path, "oob_reporting_config"), "authority"); err != nil {
			return nil, err
		}
		cc.oobAuthority = rc.GetAuthority()
	}
	if cc.oob && cc.oobPeriod <= 0 {
		return nil, config.Errorf(config.Join(path, "oob_reporting_period"), "must be positive")
	}
	out.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	if c.GetSlowStartConfig() != nil {
		out.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{SlowStartConfig: slowStart(c.GetSlowStartConfig())}}
	}
	return &cswrr{cfg: cc}, nil
}

// attach gives the policy its stats and, for OOB reporting, its streams.
func (s *cswrr) attach(c *Cluster, scope stats.Scope) {
	s.invalid = scope.Counter("lb_orca_report_invalid")
	if s.cfg.oob {
		s.oob = &orcaOOB{s: s, c: c, streams: map[*Host]func(){}}
	}
}

// weightOf is the weight the balancer gives h now.
func (s *cswrr) weightOf(h *Host) uint64 {
	if m := s.weights.Load(); m != nil {
		if w, ok := (*m)[h]; ok {
			return w
		}
	}
	return uint64(max(h.Weight(), 1))
}

// lbWeight is the weight /clusters shows for h: as Envoy, the weight
// client_side_weighted_round_robin gave it, else its configured one.
func (c *Cluster) lbWeight(h *Host) uint32 {
	if c.lb.cswrr == nil {
		return h.Weight()
	}
	return uint32(c.lb.cswrr.weightOf(h))
}

// report takes one ORCA report from h (per request or out of band).
func (s *cswrr) report(c *Cluster, h *Host, r *orcav3.OrcaLoadReport) {
	w, ok := s.weightFrom(r)
	if !ok {
		s.invalid.Inc()
		c.log.Debug("ORCA load report gives no weight: rps_fractional and utilization must be positive", "cluster", c.Name, "host", h.Address)
		return
	}
	d, _ := s.data.LoadOrStore(h, &orcaWeight{})
	d.(*orcaWeight).update(w, time.Now())
}

// weightFrom computes a weight from a report, as Envoy's
// OrcaLoadReportHandler: qps is rps_fractional; utilization is the largest
// of metric_names_for_computing_utilization, else
// application_utilization, else cpu_utilization, plus the error penalty.
func (s *cswrr) weightFrom(r *orcav3.OrcaLoadReport) (uint64, bool) {
	qps := r.GetRpsFractional()
	if qps <= 0 {
		return 0, false
	}
	util := orcaMaxUtilization(s.cfg.metrics, r)
	if util <= 0 {
		util = r.GetApplicationUtilization()
	}
	if util <= 0 {
		util = r.GetCpuUtilization()
	}
	util += s.cfg.penalty * r.GetEps() / qps
	if util <= 0 {
		return 0, false
	}
	w := qps / util
	// Envoy keeps weights in a uint32, and a host's weight is at least 1.
	return uint64(math.Max(1, math.Min(w, math.MaxUint32))), true
}

// recompute sets the weights the balancer uses from what hosts reported
// (Envoy's updateWeightsOnHosts, per priority) and reports whether any
// changed.
func (s *cswrr) recompute(hosts []*Host, now time.Time) bool {
	maxNonEmptySince, minLastUpdate := now.Add(-s.cfg.blackout), now.Add(-s.cfg.expiration)
	next := make(map[*Host]uint64, len(hosts))
	byPrio := map[uint32][]*Host{}
	for _, h := range hosts {
		byPrio[h.Priority()] = append(byPrio[h.Priority()], h)
	}
	for _, hs := range byPrio {
		var valid []uint64
		var missing []*Host
		for _, h := range hs {
			if d, ok := s.data.Load(h); ok {
				if w, ok := d.(*orcaWeight).valid(maxNonEmptySince, minLastUpdate); ok {
					next[h] = w
					valid = append(valid, w)
					continue
				}
			}
			missing = append(missing, h)
		}
		def := uint64(1)
		if len(valid) > 0 {
			slices.Sort(valid)
			m := len(valid) / 2
			def = valid[m]
			if len(valid)%2 == 0 {
				def = (valid[m-1] + valid[m]) / 2
			}
		}
		for _, h := range missing {
			next[h] = def
		}
	}
	// Hosts that left the cluster drop their reports.
	s.data.Range(func(k, _ any) bool {
		if _, ok := next[k.(*Host)]; !ok {
			s.data.Delete(k)
		}
		return true
	})
	if old := s.weights.Load(); old != nil && len(*old) == len(next) {
		same := true
		for h, w := range next {
			if (*old)[h] != w {
				same = false
				break
			}
		}
		if same {
			return false
		}
	}
	s.weights.Store(&next)
	return true
}

// run recomputes the weights every weight_update_period until the cluster
// stops, rebuilding its host set when they changed.
func (s *cswrr) run(c *Cluster) {
	t := time.NewTicker(s.cfg.update)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			if s.oob != nil {
				s.oob.closeAll()
			}
			return
		case <-t.C:
		}
		hosts := c.hosts.Load().all
		if s.oob != nil {
			s.oob.sync(hosts)
		}
		if s.recompute(hosts, time.Now()) {
			c.healthChanged()
		}
	}
}

// wrrFor builds the round robin of hosts by their current weights (with
// slow start's factor while some host ramps up).
func (s *cswrr) wrrFor(hosts []*Host, cfg *lbConfig) wrr {
	if cfg.inSlowStart(hosts, time.Now()) {
		now := time.Now()
		ws := make([]float64, len(hosts))
		for i, h := range hosts {
			ws[i] = float64(s.weightOf(h)) * cfg.slowStartFactor(h, now)
		}
		return newWeightSeq(ws)
	}
	ws := make([]uint64, len(hosts))
	for i, h := range hosts {
		ws[i] = s.weightOf(h)
	}
	return newIntWRR(ws)
}

// newIntWRR is the smooth weighted round robin over integer weights
// (indexes of the hosts slice), scaled down to at most maxSeq picks.
func newIntWRR(ws []uint64) wrr {
	w := wrr{ctr: new(atomic.Uint64)}
	w.ctr.Store(rand.Uint64N(uint64(len(ws) + 1)))
	if len(ws) < 2 || len(ws) > 1<<16 {
		return w
	}
	g := uint64(0)
	equal := true
	for _, x := range ws {
		equal = equal && x == ws[0]
		g = gcd(g, max(x, 1))
	}
	if equal {
		return w
	}
	weights := make([]float64, len(ws))
	total := 0.0
	for i, x := range ws {
		weights[i] = float64(max(x, 1) / g)
		total += weights[i]
	}
	iw := make([]int64, len(ws))
	var sum int64
	for i, x := range weights {
		if total > maxSeq { // scale down, keeping every host at least once
			x = x * maxSeq / total
		}
		iw[i] = max(1, int64(math.Round(x)))
		sum += iw[i]
	}
	cur := make([]int64, len(ws))
	w.seq = make([]uint16, sum)
	for k := range w.seq {
		best := 0
		for i := range iw {
			cur[i] += iw[i]
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= sum
		w.seq[k] = uint16(best)
	}
	return w
}

// observeOrca passes the ORCA report of a response's headers or trailers
// to the cluster's client_side_weighted_round_robin, and reports whether
// there was one (Envoy reads one report per response: the headers', else
// the trailers'). Clusters with another policy ignore reports, as Envoy.
func (c *Cluster) observeOrca(h *Host, hdrs *headers.Map) bool {
	s := c.lb.cswrr
	if s == nil || h == nil || s.cfg.oob || hdrs == nil {
		return false
	}
	r, err := ParseOrcaLoadReport(hdrs)
	if err == errNoOrca {
		return false
	}
	if err != nil {
		s.invalid.Inc()
		c.log.Debug("invalid ORCA load report from upstream", "cluster", c.Name, "host", h.Address, "error", err)
		return true
	}
	s.report(c, h, r)
	return true
}
