// Package stats holds Legate's counters, gauges and histograms under
// Envoy's names (cluster.<name>.upstream_rq_total, http.<prefix>.
// downstream_rq_2xx, ...) and renders them as Envoy's admin endpoints do:
// plain text, JSON, and Prometheus with Envoy's default tag extraction, so
// dashboards built for Envoy work unchanged.
//
// Metrics are created when config is compiled (never on the request path)
// and live as long as the process: a cluster or listener that is replaced by
// a config update keeps its counters, as in Envoy. Updating a metric is one
// atomic operation.
package stats

import (
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Counter is a monotonically increasing count.
type Counter struct {
	v    atomic.Uint64
	name string
}

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Value returns the current count.
func (c *Counter) Value() uint64 { return c.v.Load() }

// Name returns the full stat name.
func (c *Counter) Name() string { return c.name }

// Gauge is a value that goes up and down.
type Gauge struct {
	v    atomic.Int64
	name string
}

// Inc adds one.
func (g *Gauge) Inc() { g.v.Add(1) }

// Dec subtracts one.
func (g *Gauge) Dec() { g.v.Add(-1) }

// Add adds n (which may be negative).
func (g *Gauge) Add(n int64) { g.v.Add(n) }

// Set sets the value.
func (g *Gauge) Set(n int64) { g.v.Store(n) }

// Value returns the current value.
func (g *Gauge) Value() int64 { return g.v.Load() }

// Name returns the full stat name.
func (g *Gauge) Name() string { return g.name }

// DefaultBuckets are Envoy's default histogram bucket bounds (in the
// histogram's unit, milliseconds for timings).
var DefaultBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// Histogram records a distribution of values in buckets: Envoy's default
// ones unless stats_config.histogram_bucket_settings gives its name others.
type Histogram struct {
	name    string
	bounds  []float64       // ascending upper bounds, fixed at creation
	counts  []atomic.Uint64 // len(bounds)+1, the last one is +Inf
	count   atomic.Uint64
	sumBits atomic.Uint64 // float64 sum, updated by CAS
}

// Record adds one value.
func (h *Histogram) Record(v float64) {
	i := sort.SearchFloat64s(h.bounds, v)
	h.counts[i].Add(1)
	h.count.Add(1)
	for {
		old := h.sumBits.Load()
		if h.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// Name returns the full stat name.
func (h *Histogram) Name() string { return h.name }

// Count returns how many values were recorded.
func (h *Histogram) Count() uint64 { return h.count.Load() }

// Sum returns the sum of the recorded values.
func (h *Histogram) Sum() float64 { return math.Float64frombits(h.sumBits.Load()) }

// Buckets returns the histogram's bucket upper bounds, ascending (the
// caller must not modify them).
func (h *Histogram) Buckets() []float64 { return h.bounds }

// Cumulative returns the cumulative count for each bound of Buckets.
func (h *Histogram) Cumulative() []uint64 {
	out := make([]uint64, len(h.bounds))
	var c uint64
	for i := range h.bounds {
		c += h.counts[i].Load()
		out[i] = c
	}
	return out
}

// Quantile estimates the q-quantile (0..1) by interpolating in buckets.
func (h *Histogram) Quantile(q float64) float64 {
	total := h.count.Load()
	if total == 0 {
		return math.NaN()
	}
	rank := q * float64(total)
	var c float64
	lower := 0.0
	for i := range h.counts {
		n := float64(h.counts[i].Load())
		upper := math.Inf(1)
		if i < len(h.bounds) {
			upper = h.bounds[i]
		}
		if c+n >= rank && n > 0 {
			if math.IsInf(upper, 1) {
				return lower
			}
			return lower + (upper-lower)*(rank-c)/n
		}
		c += n
		lower = upper
	}
	return lower
}

// Store is the registry of every metric, by full name.
type Store struct {
	mu         sync.Mutex
	counters   map[string]*Counter
	gauges     map[string]*Gauge
	histograms map[string]*Histogram
	// buckets is stats_config.histogram_bucket_settings, under mu.
	buckets []BucketRule
	// tags is stats_config (tag rules, stats_matcher); nil: Envoy's
	// default tags, every stat exposed.
	tags atomic.Pointer[tagConfig]
	// seen and evicted are stats_eviction_interval's state (Evict), under
	// mu: each metric's value at the last eviction, and the metrics found
	// unused then, hidden until their value changes.
	seen, evicted map[any]uint64
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{counters: map[string]*Counter{}, gauges: map[string]*Gauge{}, histograms: map[string]*Histogram{}}
}

// Counter returns the counter called name, creating it at zero.
func (s *Store) Counter(name string) *Counter {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.counters[name]
	if c == nil {
		c = &Counter{name: name}
		s.counters[name] = c
	}
	return c
}

// Gauge returns the gauge called name, creating it at zero.
func (s *Store) Gauge(name string) *Gauge {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.gauges[name]
	if g == nil {
		g = &Gauge{name: name}
		s.gauges[name] = g
	}
	return g
}

// Histogram returns the histogram called name, creating it empty.
func (s *Store) Histogram(name string) *Histogram {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.histograms[name]
	if h == nil {
		b := s.bucketsFor(name)
		h = &Histogram{name: name, bounds: b, counts: make([]atomic.Uint64, len(b)+1)}
		s.histograms[name] = h
	}
	return h
}

// Scope returns a view of the store that prefixes every name.
func (s *Store) Scope(prefix string) Scope { return Scope{store: s, prefix: prefix} }

// Snapshot is a point-in-time copy of every metric, sorted by name.
type Snapshot struct {
	Counters   []*Counter
	Gauges     []*Gauge
	Histograms []*Histogram
}

// Snapshot lists every metric sorted by name.
func (s *Store) Snapshot() Snapshot {
	s.mu.Lock()
	var snap Snapshot
	// Stats the stats_matcher rejects are not exposed anywhere (Envoy
	// does not create them).
	for _, c := range s.counters {
		if s.included(c.name) && !s.hidden(c, c.v.Load()) {
			snap.Counters = append(snap.Counters, c)
		}
	}
	for _, g := range s.gauges {
		if s.included(g.name) && !s.hidden(g, uint64(g.v.Load())) {
			snap.Gauges = append(snap.Gauges, g)
		}
	}
	for _, h := range s.histograms {
		if s.included(h.name) && !s.hidden(h, h.count.Load()) {
			snap.Histograms = append(snap.Histograms, h)
		}
	}
	s.mu.Unlock()
	sort.Slice(snap.Counters, func(i, j int) bool { return snap.Counters[i].name < snap.Counters[j].name })
	sort.Slice(snap.Gauges, func(i, j int) bool { return snap.Gauges[i].name < snap.Gauges[j].name })
	sort.Slice(snap.Histograms, func(i, j int) bool { return snap.Histograms[i].name < snap.Histograms[j].name })
	return snap
}

// hidden reports whether a metric was evicted and has not been used since
// (its value is the one it was evicted with); s.mu is held.
func (s *Store) hidden(m any, v uint64) bool {
	ev, ok := s.evicted[m]
	return ok && ev == v
}

// Evict is one round of stats_eviction_interval, Envoy's metric eviction:
// metrics not used since the previous round are removed from the output
// (/stats, Prometheus, sinks) until they are used again; the others are
// marked unused. "Used" is read from the values — a counter or histogram
// that recorded nothing, a gauge whose value did not change — so the hot
// path pays nothing for it. Metrics stay allocated: components keep
// their handles, as Envoy's keep their references.
func (s *Store) Evict() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen, s.evicted = map[any]uint64{}, map[any]uint64{}
	}
	round := func(m any, v uint64) {
		if last, ok := s.seen[m]; ok && last == v {
			s.evicted[m] = v
		} else {
			delete(s.evicted, m)
		}
		s.seen[m] = v
	}
	for _, c := range s.counters {
		round(c, c.v.Load())
	}
	for _, g := range s.gauges {
		round(g, uint64(g.v.Load()))
	}
	for _, h := range s.histograms {
		round(h, h.count.Load())
	}
}

// Scope creates metrics under a common prefix, such as "cluster.web.".
type Scope struct {
	store  *Store
	prefix string
}

// Counter returns the counter prefix+name.
func (s Scope) Counter(name string) *Counter { return s.store.Counter(s.prefix + name) }

// Gauge returns the gauge prefix+name.
func (s Scope) Gauge(name string) *Gauge { return s.store.Gauge(s.prefix + name) }

// Histogram returns the histogram prefix+name.
func (s Scope) Histogram(name string) *Histogram { return s.store.Histogram(s.prefix + name) }

// Scope returns a nested scope.
func (s Scope) Scope(prefix string) Scope { return Scope{store: s.store, prefix: s.prefix + prefix} }

// Store returns the underlying store.
func (s Scope) Store() *Store { return s.store }

// Prefix returns the scope's prefix.
func (s Scope) Prefix() string { return s.prefix }

// JoinPrefix joins a stat prefix and a name as Envoy's statPrefixJoin:
// with a dot between them unless the prefix is empty or ends in one.
func JoinPrefix(prefix, token string) string {
	switch {
	case prefix == "":
		return token
	case prefix[len(prefix)-1] == '.':
		return prefix + token
	}
	return prefix + "." + token
}

// SanitizeName makes a user-given name safe inside a stat name, as Envoy
// does: ':' becomes '_' (so listener addresses read 0.0.0.0_8080).
func SanitizeName(s string) string {
	if !strings.ContainsAny(s, ":\x00") {
		return s
	}
	return strings.NewReplacer(":", "_", "\x00", "_").Replace(s)
}

// StatusCounters is the set of per-status-code counters Envoy keeps for a
// request stream: <prefix>_1xx.._5xx and, when perCode is set, <prefix>_<code>.
type StatusCounters struct {
	scope   Scope
	prefix  string
	classes [6]*Counter
	perCode bool
	// codes holds the per-code counters, indexed by status-100; allocated
	// on first use (no boxing of status codes per request).
	codes atomic.Pointer[[900]atomic.Pointer[Counter]]
}

// NewStatusCounters creates the class counters under scope+prefix.
func NewStatusCounters(scope Scope, prefix string, perCode bool) *StatusCounters {
	sc := &StatusCounters{scope: scope, prefix: prefix, perCode: perCode}
	for i := 1; i <= 5; i++ {
		sc.classes[i] = scope.Counter(prefix + "_" + string(rune('0'+i)) + "xx")
	}
	return sc
}

// Inc counts one response with the given status.
func (sc *StatusCounters) Inc(status int) {
	if c := status / 100; c >= 1 && c <= 5 {
		sc.classes[c].Inc()
	}
	if !sc.perCode || status < 100 || status > 999 {
		return
	}
	tab := sc.codes.Load()
	if tab == nil {
		sc.codes.CompareAndSwap(nil, new([900]atomic.Pointer[Counter]))
		tab = sc.codes.Load()
	}
	slot := &tab[status-100]
	c := slot.Load()
	if c == nil {
		// Store's Counter is idempotent by name: racing callers get the same.
		c = sc.scope.Counter(sc.prefix + "_" + itoa3(status))
		slot.Store(c)
	}
	c.Inc()
}

func itoa3(n int) string {
	return string([]byte{byte('0' + n/100), byte('0' + n/10%10), byte('0' + n%10)})
}

// ResetCounters sets every counter to zero (admin /reset_counters).
func (s *Store) ResetCounters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.counters {
		c.v.Store(0)
	}
}

// Value returns the current value of a counter or gauge called name, and
// whether it exists (without creating it).
func (s *Store) Value(name string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.counters[name]; c != nil {
		return int64(c.Value()), true
	}
	if g := s.gauges[name]; g != nil {
		return g.Value(), true
	}
	return 0, false
}

// BucketRule is one stats_config.histogram_bucket_settings entry: the
// histograms whose (untagged) name Match accepts get Buckets.
type BucketRule struct {
	Match   func(name string) bool
	Buckets []float64
}

// SetHistogramBuckets applies histogram_bucket_settings: as Envoy, the
// first rule matching a histogram's name (before tag extraction) gives
// its bucket bounds (sorted here, since their order does not matter);
// others keep DefaultBuckets. It affects histograms created afterwards:
// the server calls it before anything records.
func (s *Store) SetHistogramBuckets(rules []BucketRule) {
	out := make([]BucketRule, len(rules))
	for i, r := range rules {
		b := append([]float64(nil), r.Buckets...)
		sort.Float64s(b)
		out[i] = BucketRule{Match: r.Match, Buckets: b}
	}
	s.mu.Lock()
	s.buckets = out
	s.mu.Unlock()
}

// bucketsFor returns the bounds of a new histogram (s.mu held).
func (s *Store) bucketsFor(name string) []float64 {
	for _, r := range s.buckets {
		if r.Match(name) {
			return r.Buckets
		}
	}
	return DefaultBuckets
}
