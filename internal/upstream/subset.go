package upstream

// Subset load balancing (Cluster.lb_subset_config), after Envoy's
// SubsetLoadBalancer: hosts are grouped into subsets by the values of
// their envoy.lb endpoint metadata for each selector's keys, and a
// request's metadata_match criteria pick the subset whose hosts the
// cluster's own lb_policy balances over.

import (
	"sort"
	"strings"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/stats"
)

// envoyLB is the metadata namespace subsets and metadata_match use.
const envoyLB = "envoy.lb"

// MetadataMatch is a compiled metadata_match: the criteria of its
// filter_metadata["envoy.lb"], sorted by key as Envoy's
// MetadataMatchCriteriaImpl keeps them (subset lookup relies on the order).
type MetadataMatch struct {
	crit []criterion
	// key and nameKey are subsetKey and names, built once when the
	// criteria are (at config compile time, not per pick).
	key, nameKey string
}

type criterion struct {
	name  string
	value *structpb.Value
	key   string // canonical encoding of value, for map lookups
}

// NewMetadataMatch compiles the envoy.lb criteria of a metadata_match
// struct; nil s gives nil.
func NewMetadataMatch(s *structpb.Struct) *MetadataMatch {
	if s == nil {
		return nil
	}
	return (*MetadataMatch)(nil).Merge(s)
}

// Merge returns m with the criteria of s added; for a key both have, the
// value of s wins, as Envoy's mergeMatchCriteria (a weighted cluster's
// metadata_match overrides its route's).
func (m *MetadataMatch) Merge(s *structpb.Struct) *MetadataMatch {
	out := &MetadataMatch{}
	byName := map[string]criterion{}
	if m != nil {
		for _, c := range m.crit {
			byName[c.name] = c
		}
	}
	for k, v := range s.GetFields() {
		byName[k] = criterion{name: k, value: v, key: valueKey(v)}
	}
	for _, c := range byName {
		out.crit = append(out.crit, c)
	}
	sort.Slice(out.crit, func(i, j int) bool { return out.crit[i].name < out.crit[j].name })
	return out.seal()
}

// Len returns the number of criteria.
func (m *MetadataMatch) Len() int {
	if m == nil {
		return 0
	}
	return len(m.crit)
}

// String renders the criteria as "key=value" pairs (values in JSON), in
// key order, for logs and tests.
func (m *MetadataMatch) String() string {
	if m == nil {
		return ""
	}
	parts := make([]string, len(m.crit))
	for i, c := range m.crit {
		b, _ := protojson.Marshal(c.value)
		parts[i] = c.name + "=" + string(b)
	}
	return strings.Join(parts, ",")
}

// only returns the criteria whose keys are in keys (KEYS_SUBSET fallback).
func (m *MetadataMatch) only(keys map[string]bool) *MetadataMatch {
	out := &MetadataMatch{}
	for _, c := range m.crit {
		if keys[c.name] {
			out.crit = append(out.crit, c)
		}
	}
	return out.seal()
}

// seal builds the lookup keys of m's criteria: the subset's (sorted
// key/value pairs) and its selector's (the keys).
func (m *MetadataMatch) seal() *MetadataMatch {
	var k, n strings.Builder
	for _, c := range m.crit {
		k.WriteString(c.name)
		k.WriteByte(0)
		k.WriteString(c.key)
		k.WriteByte(0)
		n.WriteString(c.name)
		n.WriteByte(0)
	}
	m.key, m.nameKey = k.String(), n.String()
	return m
}

// subsetKey is the lookup key of a subset: sorted key/value pairs.
func (m *MetadataMatch) subsetKey() string { return m.key }

// names is the lookup key of the selector over m's keys.
func (m *MetadataMatch) names() string { return m.nameKey }

// valueKey encodes a metadata value so that equal values (Envoy's
// HashedValue equality) get equal keys.
func valueKey(v *structpb.Value) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(v)
	return string(b)
}

// Selector fallback policies (LbSubsetSelector.fallback_policy).
const (
	selNotDefined = iota
	selNoFallback
	selAnyEndpoint
	selDefaultSubset
	selKeysSubset
)

type subsetSelector struct {
	keys       []string // sorted
	singleHost bool
	fallback   int
	keysSubset map[string]bool
}

type selectorParams struct {
	fallback   int
	keysSubset map[string]bool
}

// subsetConfig is a cluster's compiled lb_subset_config.
type subsetConfig struct {
	fallback      clusterv3.Cluster_LbSubsetConfig_LbSubsetFallbackPolicy
	defaultSubset map[string]string // key → valueKey
	defaultRaw    map[string]*structpb.Value
	selectors     []subsetSelector
	// selectorParams is the selector trie of Envoy flattened: every prefix
	// of every selector's sorted keys, with the fallback parameters Envoy
	// records only on the node created for a selector's last key.
	selectorParams map[string]selectorParams
	panicModeAny   bool
	listAsAny      bool
	// lb is the balancing configuration of the subsets: the cluster's,
	// with locality weighting only when locality_weight_aware is set (as
	// Envoy, whose subsets have no locality weights otherwise).
	lb lbConfig

	active, duplicates                      *stats.Gauge
	created, removed, selected, fb, fbPanic *stats.Counter

	state atomic.Pointer[subsetState]
}

// subsetState is an immutable snapshot of the subsets, rebuilt with the
// cluster's host set.
type subsetState struct {
	subsets map[string]*hostSet
	any     *hostSet // all hosts (ANY_ENDPOINT, panic_mode_any)
	def     *hostSet // hosts matching default_subset
}

func compileSubset(sc *clusterv3.Cluster_LbSubsetConfig, path string, cluster lbConfig, scope stats.Scope) (*subsetConfig, error) {
	if err := config.CheckFields(sc, path, "fallback_policy", "default_subset", "subset_selectors",
		"locality_weight_aware", "panic_mode_any", "list_as_any", "metadata_fallback_policy"); err != nil {
		return nil, err
	}
	if sc.GetMetadataFallbackPolicy() != clusterv3.Cluster_LbSubsetConfig_METADATA_NO_FALLBACK {
		return nil, config.Unsupported(config.Join(path, "metadata_fallback_policy"), sc.GetMetadataFallbackPolicy().String(), "METADATA_NO_FALLBACK")
	}
	s := &subsetConfig{
		fallback:       sc.GetFallbackPolicy(),
		defaultSubset:  map[string]string{},
		defaultRaw:     map[string]*structpb.Value{},
		selectorParams: map[string]selectorParams{},
		panicModeAny:   sc.GetPanicModeAny(),
		listAsAny:      sc.GetListAsAny(),
		lb:             cluster,
	}
	s.lb.localityWeighted = cluster.localityWeighted && sc.GetLocalityWeightAware()
	for k, v := range sc.GetDefaultSubset().GetFields() {
		s.defaultSubset[k] = valueKey(v)
		s.defaultRaw[k] = v
	}
	for i, sel := range sc.GetSubsetSelectors() {
		p := config.Index(config.Join(path, "subset_selectors"), i)
		if err := config.CheckFields(sel, p, "keys", "single_host_per_subset", "fallback_policy", "fallback_keys_subset"); err != nil {
			return nil, err
		}
		ss := subsetSelector{singleHost: sel.GetSingleHostPerSubset()}
		seen := map[string]bool{}
		for _, k := range sel.GetKeys() {
			if !seen[k] {
				seen[k] = true
				ss.keys = append(ss.keys, k)
			}
		}
		sort.Strings(ss.keys)
		switch sel.GetFallbackPolicy() {
		case clusterv3.Cluster_LbSubsetConfig_LbSubsetSelector_NOT_DEFINED:
			ss.fallback = selNotDefined
		case clusterv3.Cluster_LbSubsetConfig_LbSubsetSelector_NO_FALLBACK:
			ss.fallback = selNoFallback
		case clusterv3.Cluster_LbSubsetConfig_LbSubsetSelector_ANY_ENDPOINT:
			ss.fallback = selAnyEndpoint
		case clusterv3.Cluster_LbSubsetConfig_LbSubsetSelector_DEFAULT_SUBSET:
			ss.fallback = selDefaultSubset
		case clusterv3.Cluster_LbSubsetConfig_LbSubsetSelector_KEYS_SUBSET:
			ss.fallback = selKeysSubset
		}
		// Envoy's SubsetSelectorImpl validation.
		if ss.fallback != selKeysSubset {
			if len(sel.GetFallbackKeysSubset()) > 0 {
				return nil, config.Errorf(config.Join(p, "fallback_keys_subset"), "fallback_keys_subset can be set only for KEYS_SUBSET fallback_policy")
			}
		} else {
			if len(sel.GetFallbackKeysSubset()) == 0 {
				return nil, config.Errorf(config.Join(p, "fallback_keys_subset"), "fallback_keys_subset cannot be empty")
			}
			ss.keysSubset = map[string]bool{}
			for _, k := range sel.GetFallbackKeysSubset() {
				if !seen[k] {
					return nil, config.Errorf(config.Join(p, "fallback_keys_subset"), "fallback_keys_subset must be a subset of selector keys")
				}
				ss.keysSubset[k] = true
			}
			if len(ss.keysSubset) == len(ss.keys) {
				return nil, config.Errorf(config.Join(p, "fallback_keys_subset"), "fallback_keys_subset cannot be equal to keys")
			}
		}
		s.selectors = append(s.selectors, ss)
		prefix := ""
		for j, k := range ss.keys {
			prefix += k + "\x00"
			if _, ok := s.selectorParams[prefix]; !ok {
				var sp selectorParams
				if j == len(ss.keys)-1 {
					sp = selectorParams{fallback: ss.fallback, keysSubset: ss.keysSubset}
				}
				s.selectorParams[prefix] = sp
			}
		}
	}
	s.active = scope.Gauge("lb_subsets_active")
	s.duplicates = scope.Gauge("lb_subsets_single_host_per_subset_duplicate")
	s.created = scope.Counter("lb_subsets_created")
	s.removed = scope.Counter("lb_subsets_removed")
	s.selected = scope.Counter("lb_subsets_selected")
	s.fb = scope.Counter("lb_subsets_fallback")
	s.fbPanic = scope.Counter("lb_subsets_fallback_panic")
	s.state.Store(&subsetState{subsets: map[string]*hostSet{}})
	return s, nil
}

// hostValues returns, per key, the host's envoy.lb values: one, or with
// list_as_any each element of a list value; nil when a key is missing.
func (s *subsetConfig) hostValues(h *Host, keys []string) [][]string {
	fields := h.Config().Metadata.GetFilterMetadata()[envoyLB].GetFields()
	out := make([][]string, len(keys))
	for i, k := range keys {
		v, ok := fields[k]
		if !ok {
			return nil
		}
		if lv := v.GetListValue(); s.listAsAny && lv != nil {
			for _, e := range lv.GetValues() {
				out[i] = append(out[i], valueKey(e))
			}
		} else {
			out[i] = []string{valueKey(v)}
		}
	}
	return out
}

// matchesDefault is Envoy's metadataLabelMatch of default_subset against
// a host: every key present with an equal value (with list_as_any, equal
// to an element of a list value).
func (s *subsetConfig) matchesDefault(h *Host) bool {
	fields := h.Config().Metadata.GetFilterMetadata()[envoyLB].GetFields()
	for k, want := range s.defaultSubset {
		v, ok := fields[k]
		if !ok {
			return false
		}
		if valueKey(v) == want {
			continue
		}
		found := false
		if lv := v.GetListValue(); s.listAsAny && lv != nil {
			for _, e := range lv.GetValues() {
				if valueKey(e) == want {
					found = true
					break
				}
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// rebuild regroups hosts into subsets. Subsets that appear count as
// created (and active), those left without hosts as removed, as Envoy's
// initLbSubsetEntryOnce and purgeEmptySubsets.
func (s *subsetConfig) rebuild(hosts []*Host) {
	members := map[string][]*Host{}
	single := map[string]bool{}
	var order []string
	dups := 0
	for _, h := range hosts {
		for _, sel := range s.selectors {
			vals := s.hostValues(h, sel.keys)
			if vals == nil || len(sel.keys) == 0 {
				continue
			}
			for _, key := range combine(sel.keys, vals) {
				if _, ok := members[key]; !ok {
					order = append(order, key)
					single[key] = sel.singleHost
				} else if single[key] {
					// single_host_per_subset keeps the first host only.
					dups++
					continue
				}
				members[key] = append(members[key], h)
			}
		}
	}
	st := &subsetState{subsets: make(map[string]*hostSet, len(members))}
	for _, key := range order {
		st.subsets[key] = buildHostSet(members[key], &s.lb)
	}
	st.any = buildHostSet(hosts, &s.lb)
	var def []*Host
	for _, h := range hosts {
		if s.matchesDefault(h) {
			def = append(def, h)
		}
	}
	st.def = buildHostSet(def, &s.lb)
	old := s.state.Swap(st)
	for key := range st.subsets {
		if _, ok := old.subsets[key]; !ok {
			s.created.Inc()
			s.active.Inc()
		}
	}
	for key := range old.subsets {
		if _, ok := st.subsets[key]; !ok {
			s.removed.Inc()
			s.active.Dec()
		}
	}
	s.duplicates.Set(int64(dups))
}

// combine returns the subset keys of every combination of values.
func combine(keys []string, vals [][]string) []string {
	out := []string{""}
	for i, k := range keys {
		var next []string
		for _, prefix := range out {
			for _, v := range vals[i] {
				next = append(next, prefix+k+"\x00"+v+"\x00")
			}
		}
		out = next
	}
	return out
}

// pick is Envoy's chooseHostIteration.
func (s *subsetConfig) pick(c *Cluster, ctx *LBContext) *Host {
	st := s.state.Load()
	var mm *MetadataMatch
	if ctx != nil {
		mm = ctx.MetadataMatch
	}
	return s.pickWith(c, st, ctx, mm)
}

func (s *subsetConfig) pickWith(c *Cluster, st *subsetState, ctx *LBContext, mm *MetadataMatch) *Host {
	if mm.Len() > 0 {
		// A subset with hosts (healthy or not) matching every criterion:
		// its answer is final, even nil.
		if hs, ok := st.subsets[mm.subsetKey()]; ok && len(hs.all) > 0 {
			s.selected.Inc()
			return s.pickFrom(c, hs, ctx)
		}
		if sp, ok := s.selectorParams[mm.names()]; ok && sp.fallback != selNotDefined {
			switch sp.fallback {
			case selAnyEndpoint:
				return s.pickFrom(c, st.any, ctx)
			case selDefaultSubset:
				return s.pickFrom(c, st.def, ctx)
			case selKeysSubset:
				return s.pickWith(c, st, ctx, mm.only(sp.keysSubset))
			}
			return nil
		}
	}
	var fb *hostSet
	switch s.fallback {
	case clusterv3.Cluster_LbSubsetConfig_ANY_ENDPOINT:
		fb = st.any
	case clusterv3.Cluster_LbSubsetConfig_DEFAULT_SUBSET:
		fb = st.def
	default:
		return nil
	}
	if h := s.pickFrom(c, fb, ctx); h != nil {
		s.fb.Inc()
		return h
	}
	if s.panicModeAny {
		if h := s.pickFrom(c, st.any, ctx); h != nil {
			s.fbPanic.Inc()
			return h
		}
	}
	return nil
}

func (s *subsetConfig) pickFrom(c *Cluster, hs *hostSet, ctx *LBContext) *Host {
	if hs == nil {
		return nil
	}
	return hs.pick(&s.lb, ctx)
}
