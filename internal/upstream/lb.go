package upstream

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// LBPolicy is a cluster's load-balancing policy.
type LBPolicy uint8

// Load-balancing policies.
const (
	RoundRobin LBPolicy = iota
	LeastRequest
	Random
	RingHash
	Maglev
)

// LBContext carries what a pick may depend on.
type LBContext struct {
	// HashKey is the request's hash (hash_policy) when HasHash is set.
	HashKey uint64
	HasHash bool
	// Exclude lists hosts already tried (retry_host_predicate previous_hosts);
	// MaxSelectAttempts bounds re-picks that avoid them.
	Exclude           []*Host
	MaxSelectAttempts int
	// Reject is the route's omit_canary_hosts / omit_host_metadata retry
	// host predicates: a pick it rejects is made again, as one in Exclude.
	Reject *HostFilter
	// AvoidLevels are hosts whose priority levels the pick avoids
	// (retry_priority previous_priorities): the load of those levels goes
	// to the others while any of them has health left.
	AvoidLevels []*Host
	// OriginalDst is the downstream connection's (restored) destination and
	// OriginalDstHeader the request's original-destination header, for
	// ORIGINAL_DST clusters.
	OriginalDst       netip.AddrPort
	OriginalDstHeader string
	// Authority is the upstream host[:port], for dynamic forward proxy
	// clusters.
	Authority string
	// MetadataMatch is the route's (or weighted cluster's) metadata_match,
	// which selects the subset of clusters with lb_subset_config.
	MetadataMatch *MetadataMatch
	// Override is the host a filter asked for (stateful_session), tried
	// before the load balancer (override.go); OverrideNotFound is set by
	// the pick when a strict override failed because the cluster has no
	// such host (the router then answers with Override.NotFoundStatus).
	Override         *streaminfo.OverrideHost
	OverrideNotFound bool
}

func (c *LBContext) excluded(h *Host) bool {
	if c == nil {
		return false
	}
	if c.Reject.Rejects(h) {
		return true
	}
	for _, e := range c.Exclude {
		if e == h {
			return true
		}
	}
	return false
}

// lbConfig is the immutable balancing configuration of a cluster.
type lbConfig struct {
	policy         LBPolicy
	choiceCount    int     // least request
	activeRqBias   float64 // least request
	panicThreshold float64 // percent; 0 disables panic mode
	// panicStat is the cluster's lb_healthy_panic (nil: not counted).
	panicStat *stats.Counter
	// rt is the server's runtime, which may override panicThreshold
	// (upstream.healthy_panic_threshold); nil: none.
	rt            *runtime.Loader
	overprovision float64 // 1.4 by default
	ringMin       uint64
	ringMax       uint64
	maglevSize    uint64
	// localityWeighted picks a locality by its weight × availability first
	// (common_lb_config.locality_weighted_lb_config).
	localityWeighted bool
	// Slow start: hosts younger than the window get a reduced weight.
	slowStart    time.Duration
	aggression   float64
	minWeightPct float64
	// overrideStatuses is the set of health statuses (bit 1<<HealthStatus)
	// an override host may have (common_lb_config.override_host_status).
	overrideStatuses uint32
	// cswrr is client_side_weighted_round_robin's state (lb_cswrr.go):
	// round robin by the weights hosts' ORCA reports give (nil: none).
	cswrr *cswrr
}

// slowStartFactor is the share of its weight a host gets now (1 outside
// slow start).
func (cfg *lbConfig) slowStartFactor(h *Host, now time.Time) float64 {
	if cfg.slowStart <= 0 {
		return 1
	}
	since := h.slowStartFrom.Load()
	if since == 0 {
		return 1
	}
	elapsed := now.Sub(time.Unix(0, since))
	if elapsed >= cfg.slowStart {
		return 1
	}
	f := math.Max(float64(elapsed), float64(time.Millisecond)) / float64(cfg.slowStart)
	return math.Max(cfg.minWeightPct/100, math.Pow(f, 1/cfg.aggression))
}

// inSlowStart reports whether any host is still ramping up.
func (cfg *lbConfig) inSlowStart(hosts []*Host, now time.Time) bool {
	if cfg.slowStart <= 0 {
		return false
	}
	for _, h := range hosts {
		if cfg.slowStartFactor(h, now) < 1 {
			return true
		}
	}
	return false
}

// hostSet is an immutable view of a cluster's hosts with the structures
// the balancer needs; it is rebuilt (and swapped atomically) when
// membership or health changes.
type hostSet struct {
	all    []*Host
	prios  []*prioSet
	load   []int // cumulative percent per priority, healthy mode
	panicL []int // cumulative percent per priority, panic mode
	// addrIndex maps addresses to hosts in sets of more than 16 hosts
	// (byAddress); nil for smaller ones.
	addrIndex map[string]*Host
	// health is each priority's health in percent (overprovisioned,
	// capped at 100), for the previous_priorities retry priority.
	health []float64
	// panic is total panic: every priority is in panic, and priorities
	// take load by host counts (panicL), as Envoy's
	// recalculateLoadInTotalPanic.
	panic bool
	// prioPanic is each priority's panic (Envoy's per_priority_panic_):
	// a chosen priority in panic balances over all of its hosts.
	prioPanic    []bool
	healthyCount int
}

type prioSet struct {
	hosts   []*Host
	healthy []*Host
	rrAll   wrr
	rrOK    wrr
	hashAll hashTable
	hashOK  hashTable
	// Locality-weighted balancing: localities and the weighted sequences
	// that pick one (healthy mode and panic mode).
	locs          []*localitySet
	locOK, locAll wrr
}

// localitySet is the hosts of one locality within a priority.
type localitySet struct {
	hosts, healthy []*Host
	rrAll, rrOK    wrr
	weight         uint32
}

func buildHostSet(hosts []*Host, cfg *lbConfig) *hostSet {
	hs := &hostSet{all: hosts}
	if len(hosts) > 16 {
		hs.addrIndex = make(map[string]*Host, len(hosts))
		for _, h := range hosts {
			if _, dup := hs.addrIndex[h.Address]; !dup {
				hs.addrIndex[h.Address] = h
			}
		}
	}
	maxP := uint32(0)
	for _, h := range hosts {
		if h.Priority() > maxP {
			maxP = h.Priority()
		}
	}
	if len(hosts) == 0 {
		return hs
	}
	hs.prios = make([]*prioSet, maxP+1)
	for i := range hs.prios {
		hs.prios[i] = &prioSet{}
	}
	for _, h := range hosts {
		p := hs.prios[h.Priority()]
		p.hosts = append(p.hosts, h)
		if h.Healthy() {
			p.healthy = append(p.healthy, h)
			hs.healthyCount++
		}
	}
	health := make([]float64, len(hs.prios))
	total := 0.0
	for i, p := range hs.prios {
		p.rrAll = newWRRFor(p.hosts, cfg)
		p.rrOK = newWRRFor(p.healthy, cfg)
		if cfg.policy == RingHash || cfg.policy == Maglev {
			p.hashAll = newHashTable(p.hosts, cfg)
			p.hashOK = newHashTable(p.healthy, cfg)
		}
		if cfg.localityWeighted {
			p.buildLocalities(cfg)
		}
		if len(p.hosts) > 0 {
			health[i] = math.Min(100, cfg.overprovision*100*float64(len(p.healthy))/float64(len(p.hosts)))
		}
		total += health[i]
	}
	hs.health = health
	// Priority load: each level takes what its health allows of what is left;
	// when the levels together are not fully healthy, loads are normalized.
	hs.load = make([]int, len(hs.prios))
	hs.panicL = make([]int, len(hs.prios))
	remaining := 100.0
	cum := 0.0
	norm := math.Min(total, 100)
	for i := range hs.prios {
		share := 0.0
		if norm > 0 {
			share = math.Min(remaining, health[i]*100/norm)
		}
		remaining -= share
		cum += share
		hs.load[i] = int(math.Round(cum))
	}
	if total > 0 && hs.load[len(hs.load)-1] < 100 {
		hs.load[len(hs.load)-1] = 100
	}
	// Panic mode spreads over priorities by host counts.
	n := 0
	for i, p := range hs.prios {
		n += len(p.hosts)
		hs.panicL[i] = n * 100 / len(hosts)
	}
	// As Envoy's recalculatePerPriorityPanic: nothing is in panic when the
	// priorities together are fully available; otherwise a priority is
	// in panic when its share of healthy hosts (not overprovisioned) is
	// below the threshold. A threshold of 0 disables panic, so a cluster
	// with no healthy host then has no host to give.
	pt := cfg.panicPercent()
	hs.prioPanic = make([]bool, len(hs.prios))
	all := true
	for i, p := range hs.prios {
		if math.Min(total, 100) < 100 && len(p.hosts) > 0 {
			hs.prioPanic[i] = 100*float64(len(p.healthy))/float64(len(p.hosts)) < pt
		}
		// A priority without hosts takes no load; Envoy's host set of it
		// counts as in panic (0 < threshold).
		if len(p.hosts) == 0 {
			hs.prioPanic[i] = pt > 0
		}
		all = all && hs.prioPanic[i]
	}
	hs.panic = all
	return hs
}

// pick chooses a host; nil means no host is available.
func (hs *hostSet) pick(cfg *lbConfig, ctx *LBContext) *Host {
	if len(hs.all) == 0 {
		return nil
	}
	attempts := 1
	if ctx != nil && ctx.MaxSelectAttempts > 1 && (len(ctx.Exclude) > 0 || ctx.Reject != nil) {
		attempts = ctx.MaxSelectAttempts
	}
	var h *Host
	for a := 0; a < attempts; a++ {
		h = hs.pickOnce(cfg, ctx, uint64(a))
		if h == nil || !ctx.excluded(h) {
			return h
		}
	}
	return h
}

func (hs *hostSet) pickOnce(cfg *lbConfig, ctx *LBContext, attempt uint64) *Host {
	loads := hs.load
	if hs.panic {
		loads = hs.panicL
	}
	if mask := hs.avoidMask(ctx); mask != 0 {
		var buf [8]int
		if l, ok := hs.avoidingLoad(mask, buf[:0]); ok {
			loads = l
		}
	}
	pi := 0
	if len(hs.prios) > 1 {
		var r int
		if ctx != nil && ctx.HasHash {
			r = int((ctx.HashKey + attempt) % 100)
		} else {
			r = rand.IntN(100)
		}
		for i, l := range loads {
			if r < l {
				pi = i
				break
			}
		}
	}
	p, inPanic := hs.prios[pi], hs.prioPanic[pi]
	if inPanic && cfg.panicStat != nil {
		// lb_healthy_panic: Envoy counts each pick from a priority in panic.
		cfg.panicStat.Inc()
	}
	hosts, rr, ht := p.healthy, &p.rrOK, &p.hashOK
	if inPanic {
		hosts, rr, ht = p.hosts, &p.rrAll, &p.hashAll
	}
	if cfg.localityWeighted && len(p.locs) > 0 {
		seq, healthy := &p.locOK, true
		if inPanic || len(p.healthy) == 0 {
			seq, healthy = &p.locAll, false
		}
		if seq.total > 0 {
			l := p.locs[seq.nextIndex()]
			hosts, rr = l.healthy, &l.rrOK
			if !healthy {
				hosts, rr = l.hosts, &l.rrAll
			}
		}
	}
	if len(hosts) == 0 {
		return nil
	}
	switch cfg.policy {
	case LeastRequest:
		return leastRequest(hosts, cfg)
	case Random:
		return hosts[rand.IntN(len(hosts))]
	case RingHash, Maglev:
		key := rand.Uint64()
		if ctx != nil && ctx.HasHash {
			key = ctx.HashKey
		}
		return ht.lookup(key, attempt)
	default:
		return rr.next(hosts)
	}
}

// leastRequest picks as Envoy's LEAST_REQUEST: with equal weights, the
// host with fewer active requests among choice_count random ones (P2C);
// with unequal weights (or hosts in slow start), a weighted choice by
// weight / (active requests + 1)^active_request_bias.
func leastRequest(hosts []*Host, cfg *lbConfig) *Host {
	if len(hosts) == 1 {
		return hosts[0]
	}
	equal := cfg.slowStart <= 0
	for _, h := range hosts[1:] {
		if !equal {
			break
		}
		equal = h.Weight() == hosts[0].Weight()
	}
	if equal {
		var best *Host
		for i := 0; i < cfg.choiceCount; i++ {
			h := hosts[rand.IntN(len(hosts))]
			if best == nil || h.activeRq.Load() < best.activeRq.Load() {
				best = h
			}
		}
		return best
	}
	now := time.Now()
	score := func(h *Host) float64 {
		w := float64(max(h.Weight(), 1)) * cfg.slowStartFactor(h, now)
		return w / math.Pow(float64(h.activeRq.Load()+1), cfg.activeRqBias)
	}
	total := 0.0
	for _, h := range hosts {
		total += score(h)
	}
	r := rand.Float64() * total
	for _, h := range hosts {
		if r -= score(h); r < 0 {
			return h
		}
	}
	return hosts[len(hosts)-1]
}

// wrr is a lock-free weighted round robin: hosts of equal weight are
// visited in turn; unequal weights use a precomputed smooth weighted
// sequence (as nginx's) so the pick is one atomic increment.
type wrr struct {
	ctr   *atomic.Uint64
	seq   []uint16 // indexes into hosts; nil when all weights are equal
	total int      // for weight sequences built by newWeightSeq: the sum of weights (0: nothing to pick)
}

const maxSeq = 1 << 14

// newWRRFor builds the round robin of hosts, with slow-start weights when
// some host is ramping up.
func newWRRFor(hosts []*Host, cfg *lbConfig) wrr {
	if cfg.cswrr != nil {
		return cfg.cswrr.wrrFor(hosts, cfg)
	}
	now := time.Now()
	if !cfg.inSlowStart(hosts, now) {
		return newWRR(hosts)
	}
	ws := make([]float64, len(hosts))
	for i, h := range hosts {
		ws[i] = float64(max(h.Weight(), 1)) * cfg.slowStartFactor(h, now)
	}
	return newWeightSeq(ws)
}

func newWRR(hosts []*Host) wrr {
	w := wrr{ctr: new(atomic.Uint64)}
	// Start at a random offset so several proxies do not all hit the first host.
	w.ctr.Store(rand.Uint64N(uint64(len(hosts) + 1)))
	if len(hosts) < 2 || len(hosts) > 1<<16 {
		return w
	}
	equal := true
	g := uint64(0)
	for _, h := range hosts {
		if h.Weight() != hosts[0].Weight() {
			equal = false
		}
		g = gcd(g, uint64(max(h.Weight(), 1)))
	}
	if equal {
		return w
	}
	weights := make([]int64, len(hosts))
	var total int64
	for i, h := range hosts {
		weights[i] = int64(uint64(max(h.Weight(), 1)) / g)
		total += weights[i]
	}
	if total > maxSeq { // scale down, keeping every host at least once
		for i := range weights {
			weights[i] = max(1, weights[i]*maxSeq/total)
		}
		total = 0
		for _, x := range weights {
			total += x
		}
	}
	cur := make([]int64, len(hosts))
	w.seq = make([]uint16, total)
	for s := range w.seq {
		best := 0
		for i := range hosts {
			cur[i] += weights[i]
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		w.seq[s] = uint16(best)
	}
	return w
}

func (w *wrr) next(hosts []*Host) *Host {
	if w.total > 0 {
		return hosts[w.nextIndex()]
	}
	n := w.ctr.Add(1)
	if w.seq == nil {
		return hosts[n%uint64(len(hosts))]
	}
	return hosts[w.seq[n%uint64(len(w.seq))]]
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// buildLocalities groups a priority's hosts by locality and prepares the
// locality choice as Envoy's locality-weighted balancing: each locality's
// effective weight is its load_balancing_weight × min(1, overprovisioning
// × healthy/total); localities without a weight are not used.
func (p *prioSet) buildLocalities(cfg *lbConfig) {
	byKey := map[string]*localitySet{}
	var keys []string
	for _, h := range p.hosts {
		hc := h.Config()
		k := hc.Locality.GetRegion() + "/" + hc.Locality.GetZone() + "/" + hc.Locality.GetSubZone()
		l := byKey[k]
		if l == nil {
			l = &localitySet{weight: hc.LocalityWeight}
			byKey[k] = l
			keys = append(keys, k)
		}
		l.hosts = append(l.hosts, h)
		if h.Healthy() {
			l.healthy = append(l.healthy, h)
		}
	}
	var ok, all []float64
	for _, k := range keys {
		l := byKey[k]
		l.rrAll, l.rrOK = newWRR(l.hosts), newWRR(l.healthy)
		if cfg.cswrr != nil {
			l.rrAll, l.rrOK = cfg.cswrr.wrrFor(l.hosts, cfg), cfg.cswrr.wrrFor(l.healthy, cfg)
		}
		p.locs = append(p.locs, l)
		avail := math.Min(1, cfg.overprovision*float64(len(l.healthy))/float64(len(l.hosts)))
		ok = append(ok, float64(l.weight)*avail)
		all = append(all, float64(l.weight))
	}
	p.locOK, p.locAll = newWeightSeq(ok), newWeightSeq(all)
}

// newWeightSeq builds a smooth weighted sequence over indexes by weight
// (weights are scaled to integers); zero weights are never picked.
func newWeightSeq(weights []float64) wrr {
	w := wrr{ctr: new(atomic.Uint64)}
	sum := 0.0
	for _, x := range weights {
		sum += x
	}
	if sum <= 0 {
		return w
	}
	iw := make([]int64, len(weights))
	var total int64
	for i, x := range weights {
		iw[i] = int64(math.Round(x * 1000 / sum))
		total += iw[i]
	}
	if total == 0 {
		return w
	}
	cur := make([]int64, len(weights))
	w.seq = make([]uint16, total)
	for s := range w.seq {
		best := -1
		for i := range weights {
			if iw[i] == 0 {
				continue
			}
			cur[i] += iw[i]
			if best < 0 || cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		w.seq[s] = uint16(best)
	}
	w.total = int(total)
	w.ctr.Store(rand.Uint64N(uint64(total)))
	return w
}

// nextIndex returns the next index of a weight sequence.
func (w *wrr) nextIndex() int {
	return int(w.seq[w.ctr.Add(1)%uint64(len(w.seq))])
}
