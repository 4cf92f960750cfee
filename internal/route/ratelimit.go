package route

import (
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// MaxRateLimitStage is the highest rate limit stage (Envoy's
// RateLimitPolicyImpl::MAX_STAGE_NUMBER): stages are 0 to 10.
const MaxRateLimitStage = 10

// RateLimitPolicy is a compiled rate_limits list (VirtualHost.rate_limits,
// RouteAction.rate_limits, or the global rate limit filter's own and
// per-route lists): its entries in order, and by stage.
type RateLimitPolicy struct {
	entries []*RateLimitEntry
	byStage [MaxRateLimitStage + 1][]*RateLimitEntry
}

// Empty reports whether the policy has no entry (a nil policy is empty).
func (p *RateLimitPolicy) Empty() bool { return p == nil || len(p.entries) == 0 }

// Entries returns every entry, in configuration order.
func (p *RateLimitPolicy) Entries() []*RateLimitEntry {
	if p == nil {
		return nil
	}
	return p.entries
}

// Stage returns the entries of one stage (Envoy's getApplicableRateLimit),
// none for a stage above MaxRateLimitStage.
func (p *RateLimitPolicy) Stage(stage uint32) []*RateLimitEntry {
	if p == nil || stage > MaxRateLimitStage {
		return nil
	}
	return p.byStage[stage]
}

// XRateLimitOption is a rate limit's descriptor-level x_ratelimit_option.
type XRateLimitOption uint8

// Descriptor-level X-RateLimit header options.
const (
	// XRateLimitUnspecified inherits the filter's enable_x_ratelimit_headers.
	XRateLimitUnspecified XRateLimitOption = iota
	// XRateLimitOff disables the headers for this descriptor.
	XRateLimitOff
	// XRateLimitDraft03 enables draft 03 headers for this descriptor.
	XRateLimitDraft03
)

// RateLimitEntry is one compiled RateLimit: the actions that build a
// descriptor, and the settings the filter reads (stage, disable_key,
// apply_on_stream_done).
type RateLimitEntry struct {
	// Stage is the stage the entry applies to (0 to 10).
	Stage uint32
	// DisableKey, when set, turns the entry off unless the runtime key
	// ratelimit.<DisableKey>.http_filter_enabled enables it.
	DisableKey string
	// DisableRuntimeKey is that runtime key, built once.
	DisableRuntimeKey string
	// ApplyOnStreamDone sends the descriptor when the stream completes
	// (fire and forget) instead of before the request goes on.
	ApplyOnStreamDone bool
	// XRateLimit is the descriptor-level x_ratelimit_option.
	XRateLimit XRateLimitOption
	actions    []rateLimitAction
	// limitKey is limit.dynamic_metadata.metadata_key (nil: no override).
	limitKey *metadatav3.MetadataKey
	// hits is hits_addend (nil: none).
	hits *hitsAddend
}

// DescriptorEntry is one key/value pair of a descriptor.
type DescriptorEntry struct{ Key, Value string }

// LimitOverride is a descriptor's limit override (requests per unit).
type LimitOverride struct {
	RequestsPerUnit uint32
	Unit            typev3.RateLimitUnit
}

// Descriptor is one rate limit descriptor sent to the rate limit service.
type Descriptor struct {
	Entries []DescriptorEntry
	// Limit overrides the service's limit for the descriptor (nil: none).
	Limit *LimitOverride
	// HitsAddend is the descriptor's hits_addend (nil: the request's).
	HitsAddend *uint64
	// NegativeHits makes HitsAddend refill the budget (is_negative_hits).
	NegativeHits bool
	// XRateLimit is the x_ratelimit_option of the entry that made it.
	XRateLimit XRateLimitOption
}

// DescriptorInput is what rate limit actions read from a request.
type DescriptorInput struct {
	// LocalCluster is the proxy's service cluster (node.cluster,
	// --service-cluster): the source_cluster action's value.
	LocalCluster string
	Request      *headers.Request
	Info         *streaminfo.Info
	// Route is the matched route (route-entry metadata).
	Route *Route
	// Cluster is the cluster the route sends the request to (the
	// destination_cluster action's value); "" when there is none.
	Cluster string
}

// rateLimitAction is one compiled action: it returns the entry to append
// (an empty key appends nothing) and false when no descriptor may be made.
type rateLimitAction interface {
	populate(in *DescriptorInput) (DescriptorEntry, bool)
}

// Populate appends the entry's descriptor to dst when every action
// produced its part (Envoy's RateLimitPolicyEntryImpl::populateDescriptors).
func (e *RateLimitEntry) Populate(dst []Descriptor, in *DescriptorInput) []Descriptor {
	d := Descriptor{XRateLimit: e.XRateLimit}
	for _, a := range e.actions {
		ent, ok := a.populate(in)
		if !ok {
			return dst
		}
		if ent.Key != "" {
			d.Entries = append(d.Entries, ent)
		}
	}
	if e.limitKey != nil && in.Info != nil {
		d.Limit = limitOverride(in.Info.DynamicMetadata, e.limitKey)
	}
	if e.hits != nil {
		n, ok := e.hits.value(in.Info)
		if !ok {
			// As Envoy: a hits_addend format that yields no valid number
			// drops the descriptor.
			return dst
		}
		d.HitsAddend, d.NegativeHits = &n, e.hits.negative
	}
	return append(dst, d)
}

// RateLimitOptions say where a rate_limits list is compiled.
type RateLimitOptions struct {
	// Filter marks a list in the rate limit filter's config or its
	// RateLimitPerRoute, where Envoy does not support stage, disable_key
	// and the dynamic_metadata action, and does support hits_addend.
	Filter bool
	// CompileValue compiles hits_addend.format (nil refuses it).
	CompileValue func(text string) (Value, error)
}

// CompileRateLimits compiles a rate_limits list at path.
func CompileRateLimits(list []*routev3.RateLimit, path string, opts RateLimitOptions) (*RateLimitPolicy, error) {
	if len(list) == 0 {
		return nil, nil
	}
	p := &RateLimitPolicy{}
	for i, rl := range list {
		e, err := compileRateLimit(rl, config.Index(path, i), opts)
		if err != nil {
			return nil, err
		}
		p.entries = append(p.entries, e)
		p.byStage[e.Stage] = append(p.byStage[e.Stage], e)
	}
	return p, nil
}

func compileRateLimit(rl *routev3.RateLimit, path string, opts RateLimitOptions) (*RateLimitEntry, error) {
	if err := config.CheckFields(rl, path, "stage", "disable_key", "actions", "limit", "hits_addend",
		"apply_on_stream_done", "x_ratelimit_option"); err != nil {
		return nil, err
	}
	e := &RateLimitEntry{DisableKey: rl.GetDisableKey(), ApplyOnStreamDone: rl.GetApplyOnStreamDone()}
	if e.DisableKey != "" {
		e.DisableRuntimeKey = "ratelimit." + e.DisableKey + ".http_filter_enabled"
	}
	switch rl.GetXRatelimitOption() {
	case routev3.RateLimit_OFF:
		e.XRateLimit = XRateLimitOff
	case routev3.RateLimit_DRAFT_VERSION_03:
		e.XRateLimit = XRateLimitDraft03
	}
	if s := rl.GetStage(); s != nil {
		if opts.Filter {
			return nil, config.Errorf(config.Join(path, "stage"), "stage is not supported in the rate limit filter's rate_limits (as Envoy)")
		}
		if s.GetValue() > MaxRateLimitStage {
			return nil, config.Errorf(config.Join(path, "stage"), "stage %d is over the maximum %d", s.GetValue(), MaxRateLimitStage)
		}
		e.Stage = s.GetValue()
	}
	if opts.Filter && e.DisableKey != "" {
		return nil, config.Errorf(config.Join(path, "disable_key"), "disable_key is not supported in the rate limit filter's rate_limits (as Envoy)")
	}
	if len(rl.GetActions()) == 0 {
		return nil, config.Errorf(config.Join(path, "actions"), "a rate limit needs at least one action")
	}
	for i, a := range rl.GetActions() {
		act, err := compileRateLimitAction(a, config.Index(config.Join(path, "actions"), i), opts)
		if err != nil {
			return nil, err
		}
		e.actions = append(e.actions, act)
	}
	if l := rl.GetLimit(); l != nil {
		lp := config.Join(path, "limit")
		if err := config.CheckFields(l, lp, "dynamic_metadata"); err != nil {
			return nil, err
		}
		dm := l.GetDynamicMetadata()
		if dm == nil {
			return nil, config.Errorf(lp, "limit needs dynamic_metadata")
		}
		if err := config.CheckFields(dm, config.Join(lp, "dynamic_metadata"), "metadata_key"); err != nil {
			return nil, err
		}
		e.limitKey = dm.GetMetadataKey()
	}
	if h := rl.GetHitsAddend(); h != nil {
		hp := config.Join(path, "hits_addend")
		if !opts.Filter {
			// Envoy documents hits_addend as supported only in the filter's
			// own or per-route rate_limits; here it would do nothing.
			return nil, config.Errorf(hp, "hits_addend is only supported in the rate limit filter's rate_limits or RateLimitPerRoute (as Envoy)")
		}
		ha, err := compileHitsAddend(h, hp, opts.CompileValue)
		if err != nil {
			return nil, err
		}
		e.hits = ha
	}
	return e, nil
}

func compileRateLimitAction(a *routev3.RateLimit_Action, path string, opts RateLimitOptions) (rateLimitAction, error) {
	if err := config.CheckFields(a, path, "source_cluster", "destination_cluster", "request_headers", "query_parameters",
		"remote_address", "generic_key", "header_value_match", "dynamic_metadata", "metadata", "masked_remote_address",
		"query_parameter_value_match"); err != nil {
		return nil, err
	}
	switch s := a.GetActionSpecifier().(type) {
	case *routev3.RateLimit_Action_SourceCluster_:
		return sourceClusterAction{}, nil
	case *routev3.RateLimit_Action_DestinationCluster_:
		return destinationClusterAction{}, nil
	case *routev3.RateLimit_Action_RequestHeaders_:
		rh := s.RequestHeaders
		if err := config.CheckFields(rh, config.Join(path, "request_headers"), "header_name", "descriptor_key", "skip_if_absent"); err != nil {
			return nil, err
		}
		return requestHeadersAction{name: headers.Lower(rh.GetHeaderName()), key: rh.GetDescriptorKey(), skipIfAbsent: rh.GetSkipIfAbsent()}, nil
	case *routev3.RateLimit_Action_QueryParameters_:
		qp := s.QueryParameters
		if err := config.CheckFields(qp, config.Join(path, "query_parameters"), "query_parameter_name", "descriptor_key", "skip_if_absent"); err != nil {
			return nil, err
		}
		return queryParametersAction{name: qp.GetQueryParameterName(), key: qp.GetDescriptorKey(), skipIfAbsent: qp.GetSkipIfAbsent()}, nil
	case *routev3.RateLimit_Action_RemoteAddress_:
		return remoteAddressAction{}, nil
	case *routev3.RateLimit_Action_MaskedRemoteAddress_:
		m := s.MaskedRemoteAddress
		if err := config.CheckFields(m, config.Join(path, "masked_remote_address"), "v4_prefix_mask_len", "v6_prefix_mask_len"); err != nil {
			return nil, err
		}
		act := maskedRemoteAddressAction{v4: 32, v6: 128}
		if v := m.GetV4PrefixMaskLen(); v != nil {
			act.v4 = int(v.GetValue())
		}
		if v := m.GetV6PrefixMaskLen(); v != nil {
			act.v6 = int(v.GetValue())
		}
		if act.v4 > 32 || act.v6 > 128 {
			return nil, config.Errorf(config.Join(path, "masked_remote_address"), "prefix mask lengths are at most 32 (IPv4) and 128 (IPv6)")
		}
		return act, nil
	case *routev3.RateLimit_Action_GenericKey_:
		g := s.GenericKey
		gp := config.Join(path, "generic_key")
		if err := config.CheckFields(g, gp, "descriptor_value", "descriptor_key", "default_value"); err != nil {
			return nil, err
		}
		if g.GetDefaultValue() != "" {
			// default_value applies only with formatter parsing, which
			// Envoy keeps behind a runtime flag that is off by default.
			return nil, config.Unsupported(config.Join(gp, "default_value"), "default_value (it needs descriptor_value formatting, off by default in Envoy)")
		}
		key := g.GetDescriptorKey()
		if key == "" {
			key = "generic_key"
		}
		// descriptor_value is literal: Envoy parses it as a format string only
		// with envoy.reloadable_features.enable_formatter_for_ratelimit_action_descriptor_value,
		// which is off by default.
		return literalAction{DescriptorEntry{key, g.GetDescriptorValue()}}, nil
	case *routev3.RateLimit_Action_HeaderValueMatch_:
		hv := s.HeaderValueMatch
		hp := config.Join(path, "header_value_match")
		if err := config.CheckFields(hv, hp, "descriptor_value", "descriptor_key", "expect_match", "headers"); err != nil {
			return nil, err
		}
		act := headerValueMatchAction{entry: DescriptorEntry{hv.GetDescriptorKey(), hv.GetDescriptorValue()}, expect: true}
		if act.entry.Key == "" {
			act.entry.Key = "header_match"
		}
		if hv.GetExpectMatch() != nil {
			act.expect = hv.GetExpectMatch().GetValue()
		}
		for i, h := range hv.GetHeaders() {
			hm, err := compileHeaderMatcher(h, config.Index(config.Join(hp, "headers"), i))
			if err != nil {
				return nil, err
			}
			act.headers = append(act.headers, hm)
		}
		return act, nil
	case *routev3.RateLimit_Action_QueryParameterValueMatch_:
		qv := s.QueryParameterValueMatch
		qp := config.Join(path, "query_parameter_value_match")
		if err := config.CheckFields(qv, qp, "descriptor_value", "descriptor_key", "expect_match", "query_parameters"); err != nil {
			return nil, err
		}
		act := queryValueMatchAction{entry: DescriptorEntry{qv.GetDescriptorKey(), qv.GetDescriptorValue()}, expect: true}
		if act.entry.Key == "" {
			act.entry.Key = "query_match"
		}
		if qv.GetExpectMatch() != nil {
			act.expect = qv.GetExpectMatch().GetValue()
		}
		m, err := (&compiler{}).match(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			QueryParameters: qv.GetQueryParameters()}, qp)
		if err != nil {
			return nil, err
		}
		act.query = m.query
		return act, nil
	case *routev3.RateLimit_Action_DynamicMetadata:
		if opts.Filter {
			return nil, config.Errorf(config.Join(path, "dynamic_metadata"), "the dynamic_metadata action is not supported in the rate limit filter's rate_limits (as Envoy); use metadata")
		}
		dm := s.DynamicMetadata
		if err := config.CheckFields(dm, config.Join(path, "dynamic_metadata"), "descriptor_key", "metadata_key", "default_value"); err != nil {
			return nil, err
		}
		return metadataAction{key: dm.GetDescriptorKey(), mdKey: dm.GetMetadataKey(), def: dm.GetDefaultValue()}, nil
	case *routev3.RateLimit_Action_Metadata:
		md := s.Metadata
		mp := config.Join(path, "metadata")
		if err := config.CheckFields(md, mp, "descriptor_key", "metadata_key", "default_value", "source", "skip_if_absent"); err != nil {
			return nil, err
		}
		act := metadataAction{key: md.GetDescriptorKey(), mdKey: md.GetMetadataKey(), def: md.GetDefaultValue(), skipIfAbsent: md.GetSkipIfAbsent()}
		switch md.GetSource() {
		case routev3.RateLimit_Action_MetaData_DYNAMIC:
		case routev3.RateLimit_Action_MetaData_ROUTE_ENTRY:
			act.routeEntry = true
		default:
			return nil, config.Unsupported(config.Join(mp, "source"), "metadata source "+md.GetSource().String(), "DYNAMIC", "ROUTE_ENTRY")
		}
		return act, nil
	case nil:
		return nil, config.Errorf(path, "rate limit action has no action specifier")
	}
	return nil, config.Unsupported(path, "this rate limit action", "source_cluster", "destination_cluster", "request_headers",
		"query_parameters", "remote_address", "generic_key", "header_value_match", "metadata", "dynamic_metadata",
		"masked_remote_address", "query_parameter_value_match")
}

type sourceClusterAction struct{}

func (sourceClusterAction) populate(in *DescriptorInput) (DescriptorEntry, bool) {
	return DescriptorEntry{"source_cluster", in.LocalCluster}, true
}

type destinationClusterAction struct{}

func (destinationClusterAction) populate(in *DescriptorInput) (DescriptorEntry, bool) {
	if in.Route == nil || in.Route.Kind != Forward {
		return DescriptorEntry{}, false
	}
	return DescriptorEntry{"destination_cluster", in.Cluster}, true
}

type requestHeadersAction struct {
	name, key    string
	skipIfAbsent bool
}

func (a requestHeadersAction) populate(in *DescriptorInput) (DescriptorEntry, bool) {
	// Only the first value, as Envoy (envoyproxy/envoy#13454).
	v, ok := in.Request.Lookup(a.name)
	if !ok {
		// Absent: skip the entry (skip_if_absent) or make no descriptor.
		return DescriptorEntry{}, a.skipIfAbsent
	}
	return DescriptorEntry{a.key, v}, true
}

type queryParametersAction struct {
	name, key    string
	skipIfAbsent bool
}

func (a queryParametersAction) populate(in *DescriptorInput) (DescriptorEntry, bool) {
	q := rawQuery(in.Request.Path)
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if k != a.name {
			continue
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		}
		return DescriptorEntry{a.key, v}, true
	}
	return DescriptorEntry{}, a.skipIfAbsent
}

type remoteAddressAction struct{}

func (remoteAddressAction) populate(in *DescriptorInput) (DescriptorEntry, bool) {
	if in.Info == nil || !in.Info.DownstreamRemote.Addr().IsValid() {
		// Not an IP peer (a pipe): no descriptor, as Envoy.
		return DescriptorEntry{}, false
	}
	return DescriptorEntry{"remote_address", in.Info.DownstreamRemote.Addr().String()}, true
}

type maskedRemoteAddressAction struct{ v4, v6 int }

func (a maskedRemoteAddressAction) populate(in *DescriptorInput) (DescriptorEntry, bool) {
	if in.Info == nil || !in.Info.DownstreamRemote.Addr().IsValid() {
		return DescriptorEntry{}, false
	}
	addr := in.Info.DownstreamRemote.Addr()
	bits := a.v4
	if addr.Is6() {
		bits = a.v6
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return DescriptorEntry{}, false
	}
	return DescriptorEntry{"masked_remote_address", netip.PrefixFrom(p.Addr(), bits).String()}, true
}

type literalAction struct{ entry DescriptorEntry }

func (a literalAction) populate(*DescriptorInput) (DescriptorEntry, bool) { return a.entry, true }

type headerValueMatchAction struct {
	entry   DescriptorEntry
	expect  bool
	headers []headerMatcher
}

func (a headerValueMatchAction) populate(in *DescriptorInput) (DescriptorEntry, bool) {
	match := true
	for i := range a.headers {
		if !a.headers[i].matches(in.Request) {
			match = false
			break
		}
	}
	if match != a.expect {
		return DescriptorEntry{}, false
	}
	return a.entry, true
}

type queryValueMatchAction struct {
	entry  DescriptorEntry
	expect bool
	query  []queryMatcher
}

func (a queryValueMatchAction) populate(in *DescriptorInput) (DescriptorEntry, bool) {
	q := rawQuery(in.Request.Path)
	match := true
	for i := range a.query {
		if !a.query[i].matches(q) {
			match = false
			break
		}
	}
	if match != a.expect {
		return DescriptorEntry{}, false
	}
	return a.entry, true
}

type metadataAction struct {
	key, def     string
	mdKey        *metadatav3.MetadataKey
	routeEntry   bool
	skipIfAbsent bool
}

func (a metadataAction) populate(in *DescriptorInput) (DescriptorEntry, bool) {
	var md map[string]*structpb.Struct
	if a.routeEntry {
		if in.Route != nil {
			md = in.Route.Metadata.GetFilterMetadata()
		}
	} else if in.Info != nil {
		md = in.Info.DynamicMetadata
	}
	// Only a string value counts, as Envoy's string_value().
	if v := MetadataValue(md, a.mdKey).GetStringValue(); v != "" {
		return DescriptorEntry{a.key, v}, true
	}
	if a.def != "" {
		return DescriptorEntry{a.key, a.def}, true
	}
	return DescriptorEntry{}, a.skipIfAbsent
}

// MetadataValue returns the value at key (a namespace and a path of
// struct keys) in metadata by namespace, nil when there is none.
func MetadataValue(md map[string]*structpb.Struct, key *metadatav3.MetadataKey) *structpb.Value {
	st := md[key.GetKey()]
	if st == nil || len(key.GetPath()) == 0 {
		return nil
	}
	var v *structpb.Value
	for i, seg := range key.GetPath() {
		if i > 0 {
			st = v.GetStructValue()
			if st == nil {
				return nil
			}
		}
		v = st.GetFields()[seg.GetKey()]
		if v == nil {
			return nil
		}
	}
	return v
}

// limitOverride reads a limit override from dynamic metadata: a struct
// with a number requests_per_unit and a string unit that names a
// RateLimitUnit (Envoy's DynamicMetadataRateLimitOverride).
func limitOverride(md map[string]*structpb.Struct, key *metadatav3.MetadataKey) *LimitOverride {
	st := MetadataValue(md, key).GetStructValue()
	if st == nil {
		return nil
	}
	rpu, unit := st.GetFields()["requests_per_unit"], st.GetFields()["unit"]
	if _, ok := rpu.GetKind().(*structpb.Value_NumberValue); !ok {
		return nil
	}
	if _, ok := unit.GetKind().(*structpb.Value_StringValue); !ok {
		return nil
	}
	u, ok := typev3.RateLimitUnit_value[unit.GetStringValue()]
	if !ok {
		return nil
	}
	return &LimitOverride{RequestsPerUnit: uint32(rpu.GetNumberValue()), Unit: typev3.RateLimitUnit(u)}
}

// hitsAddend is a compiled hits_addend.
type hitsAddend struct {
	number   uint64
	format   Value // nil: number
	negative bool
}

// maxHitsAddend is the largest hits_addend Envoy accepts (1e9).
const maxHitsAddend = 1_000_000_000

func compileHitsAddend(h *routev3.RateLimit_HitsAddend, path string, compileValue func(string) (Value, error)) (*hitsAddend, error) {
	if err := config.CheckFields(h, path, "number", "format", "is_negative_hits"); err != nil {
		return nil, err
	}
	out := &hitsAddend{negative: h.GetIsNegativeHits()}
	switch {
	case h.GetNumber() != nil && h.GetFormat() != "":
		return nil, config.Errorf(path, "only one of number and format may be set")
	case h.GetNumber() != nil:
		if h.GetNumber().GetValue() > maxHitsAddend {
			return nil, config.Errorf(config.Join(path, "number"), "must be at most %d", maxHitsAddend)
		}
		out.number = h.GetNumber().GetValue()
	case h.GetFormat() != "":
		if compileValue == nil {
			return nil, config.Errorf(config.Join(path, "format"), "substitution formats are not available here")
		}
		if strings.Count(h.GetFormat(), "%") != 2 || !strings.HasPrefix(h.GetFormat(), "%") || !strings.HasSuffix(h.GetFormat(), "%") {
			return nil, config.Errorf(config.Join(path, "format"), "the format must be a single substitution field, such as %%BYTES_RECEIVED%%")
		}
		v, err := compileValue(h.GetFormat())
		if err != nil {
			return nil, config.Errorf(config.Join(path, "format"), "%v", err)
		}
		out.format = v
	default:
		return nil, config.Errorf(path, "hits_addend needs number or format")
	}
	return out, nil
}

func (h *hitsAddend) value(info *streaminfo.Info) (uint64, bool) {
	if h.format == nil {
		return h.number, true
	}
	if info == nil {
		return 0, false
	}
	s := strings.TrimSpace(string(h.format.Append(nil, info)))
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > maxHitsAddend {
		return 0, false
	}
	return n, true
}

// routeMetadata keeps a route's metadata for ROUTE_ENTRY rate limit
// actions (nil when the route has none).
func routeMetadata(m *corev3.Metadata) *corev3.Metadata {
	if len(m.GetFilterMetadata()) == 0 {
		return nil
	}
	return m
}
