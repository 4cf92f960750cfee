package upstream

import (
	"math"
	"math/rand/v2"
	"sync/atomic"
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
}

func (c *LBContext) excluded(h *Host) bool {
	if c == nil {
		return false
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
	overprovision  float64 // 1.4 by default
	ringMin        uint64
	ringMax        uint64
	maglevSize     uint64
}

// hostSet is an immutable view of a cluster's hosts with the structures
// the balancer needs; it is rebuilt (and swapped atomically) when
// membership or health changes.
type hostSet struct {
	all          []*Host
	prios        []*prioSet
	load         []int // cumulative percent per priority, healthy mode
	panicL       []int // cumulative percent per priority, panic mode
	panic        bool
	healthyCount int
}

type prioSet struct {
	hosts   []*Host
	healthy []*Host
	rrAll   wrr
	rrOK    wrr
	hashAll hashTable
	hashOK  hashTable
}

func buildHostSet(hosts []*Host, cfg *lbConfig) *hostSet {
	hs := &hostSet{all: hosts}
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
		p.rrAll = newWRR(p.hosts)
		p.rrOK = newWRR(p.healthy)
		if cfg.policy == RingHash || cfg.policy == Maglev {
			p.hashAll = newHashTable(p.hosts, cfg)
			p.hashOK = newHashTable(p.healthy, cfg)
		}
		if len(p.hosts) > 0 {
			health[i] = math.Min(100, cfg.overprovision*100*float64(len(p.healthy))/float64(len(p.hosts)))
		}
		total += health[i]
	}
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
	hs.panic = cfg.panicThreshold > 0 && math.Min(total, 100) < cfg.panicThreshold
	if hs.healthyCount == 0 {
		hs.panic = true
	}
	return hs
}

// pick chooses a host; nil means no host is available.
func (hs *hostSet) pick(cfg *lbConfig, ctx *LBContext) *Host {
	if len(hs.all) == 0 {
		return nil
	}
	attempts := 1
	if ctx != nil && ctx.MaxSelectAttempts > 1 && len(ctx.Exclude) > 0 {
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
	p := hs.prios[0]
	if len(hs.prios) > 1 {
		var r int
		if ctx != nil && ctx.HasHash {
			r = int((ctx.HashKey + attempt) % 100)
		} else {
			r = rand.IntN(100)
		}
		for i, l := range loads {
			if r < l {
				p = hs.prios[i]
				break
			}
		}
	}
	hosts, rr, ht := p.healthy, &p.rrOK, &p.hashOK
	if hs.panic || len(hosts) == 0 {
		hosts, rr, ht = p.hosts, &p.rrAll, &p.hashAll
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

func leastRequest(hosts []*Host, cfg *lbConfig) *Host {
	if len(hosts) == 1 {
		return hosts[0]
	}
	var best *Host
	bestScore := -1.0
	for i := 0; i < cfg.choiceCount; i++ {
		h := hosts[rand.IntN(len(hosts))]
		// Envoy: with equal weights the fewest active requests wins; with
		// unequal weights the weight is divided by (active+1)^bias.
		score := float64(h.Weight()) / math.Pow(float64(h.activeRq.Load()+1), cfg.activeRqBias)
		if score > bestScore {
			best, bestScore = h, score
		}
	}
	return best
}

// wrr is a lock-free weighted round robin: hosts of equal weight are
// visited in turn; unequal weights use a precomputed smooth weighted
// sequence (as nginx's) so the pick is one atomic increment.
type wrr struct {
	ctr *atomic.Uint64
	seq []uint16 // indexes into hosts; nil when all weights are equal
}

const maxSeq = 1 << 14

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
