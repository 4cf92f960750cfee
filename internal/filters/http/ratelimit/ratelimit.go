// Package ratelimit is envoy.filters.http.ratelimit, Envoy's global rate
// limiting: for a request whose route (or virtual host, or the filter's
// own rate_limits) yields descriptors for the filter's stage, the filter
// asks the Rate Limit Service through the cluster manager and answers 429
// (rate_limited_status) when a descriptor is over its limit. It adds the
// service's headers to the request and the response, publishes its
// dynamic metadata, emits the draft-03 x-ratelimit-* headers, follows
// failure_mode_deny when the service fails, and counts
// cluster.<route target cluster>.ratelimit.{ok,over_limit,error,failure_mode_allowed}
// as Envoy's source/extensions/filters/http/ratelimit does.
package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/proto"

	rlcommon "github.com/legateproxy/legate/internal/filters/common/ratelimit"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/format"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

// Name is the filter's name and its default dynamic-metadata namespace.
const Name = "envoy.filters.http.ratelimit"

func init() {
	httpfilter.Register(Name, nil, &rlv3.RateLimit{}, &rlv3.RateLimitPerRoute{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"envoy_grpc or google_grpc (ssl or local channel credentials, access_token call credentials) rate limit service; RateLimitPerRoute.override_option is accepted and ignored, as by Envoy")
}

// requestType is request_type: which requests the filter applies to.
type requestType uint8

const (
	requestBoth requestType = iota
	requestInternal
	requestExternal
)

// filterConfig is a compiled RateLimit.
type filterConfig struct {
	service                *rlcommon.Service
	clusters               *upstream.Manager
	runtime                *runtime.Loader
	log                    *slog.Logger
	store                  *stats.Store
	localCluster           string
	domain                 string
	stage                  uint32
	reqType                requestType
	timeout                time.Duration
	failureModeDeny        bool
	failureDenyPct         *runtime.Fractional
	xRateLimitHeaders      bool
	envoyRateLimitedHeader bool
	retryAfter             bool
	rateLimitedStatus      int
	statusOnError          int
	resourceExhausted      bool
	respHeaders            []route.HeaderOp
	statPrefix             string
	enabled, enforced      *runtime.Fractional
	rateLimits             *route.RateLimitPolicy
	mdNamespace            string
	// clusterStats caches each target cluster's counters by name.
	clusterStats sync.Map // string → *clusterStats
}

// clusterStats are the filter's counters in one route target cluster's
// scope: cluster.<name>.ratelimit[.<stat_prefix>].*, and the 429 response
// codes Envoy charges there on over-limit (as an internal request's).
// Like Envoy's counterFromStatName, a counter exists once it is counted.
type clusterStats struct {
	store                                      *stats.Store
	ok, overLimit, errored, failureModeAllowed string
	// internal is the cluster's internal. prefix.
	internal string
}

func (cs *clusterStats) inc(name string) { cs.store.Counter(name).Inc() }

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*rlv3.RateLimit)
	if err := config.CheckFields(c, path, "domain", "stage", "request_type", "timeout", "failure_mode_deny",
		"rate_limited_as_resource_exhausted", "rate_limit_service", "enable_x_ratelimit_headers",
		"disable_x_envoy_ratelimited_header", "rate_limited_status", "response_headers_to_add", "status_on_error",
		"stat_prefix", "filter_enabled", "filter_enforced", "failure_mode_deny_percent", "rate_limits",
		"metadata_namespace", "enable_retry_after_header"); err != nil {
		return nil, err
	}
	svc, err := rlcommon.CompileService(c.GetRateLimitService(), config.Join(path, "rate_limit_service"), ctx.Async)
	if err != nil {
		return nil, err
	}
	f := &filterConfig{
		service: svc, clusters: ctx.Clusters, runtime: ctx.Runtime, log: ctx.Log, store: ctx.Stats,
		localCluster: ctx.NodeCluster, domain: c.GetDomain(), stage: c.GetStage(), timeout: rlcommon.DefaultTimeout,
		failureModeDeny:        c.GetFailureModeDeny(),
		xRateLimitHeaders:      c.GetEnableXRatelimitHeaders() == rlv3.RateLimit_DRAFT_VERSION_03,
		envoyRateLimitedHeader: !c.GetDisableXEnvoyRatelimitedHeader(),
		retryAfter:             c.GetEnableRetryAfterHeader(),
		rateLimitedStatus:      429, statusOnError: 500,
		resourceExhausted: c.GetRateLimitedAsResourceExhausted(),
		statPrefix:        c.GetStatPrefix(), mdNamespace: c.GetMetadataNamespace(),
	}
	if f.mdNamespace == "" {
		f.mdNamespace = Name
	}
	if f.stage > route.MaxRateLimitStage {
		return nil, config.Errorf(config.Join(path, "stage"), "stage %d is over the maximum %d", f.stage, route.MaxRateLimitStage)
	}
	switch c.GetRequestType() {
	case "", "both":
	case "internal":
		f.reqType = requestInternal
	case "external":
		f.reqType = requestExternal
	default:
		return nil, config.Errorf(config.Join(path, "request_type"), "request_type must be internal, external or both, not %q", c.GetRequestType())
	}
	if t := c.GetTimeout(); t != nil {
		// 0 disables the timeout.
		f.timeout = t.AsDuration()
	}
	if s := c.GetRateLimitedStatus(); s != nil && s.GetCode() >= 400 {
		// As Envoy: a status under 400 means 429.
		f.rateLimitedStatus = int(s.GetCode())
	}
	if s := c.GetStatusOnError(); s != nil && s.GetCode() >= 100 && s.GetCode() <= 511 {
		f.statusOnError = int(s.GetCode())
	}
	if p := c.GetFilterEnabled(); p != nil {
		fr := runtime.NewFractional(ctx.Runtime, p)
		f.enabled = &fr
	}
	if p := c.GetFilterEnforced(); p != nil {
		fr := runtime.NewFractional(ctx.Runtime, p)
		f.enforced = &fr
	}
	if p := c.GetFailureModeDenyPercent(); p != nil {
		fr := runtime.NewFractional(ctx.Runtime, p)
		f.failureDenyPct = &fr
	}
	if f.respHeaders, err = route.CompileHeaderOps(c.GetResponseHeadersToAdd(), config.Join(path, "response_headers_to_add"), compileValue); err != nil {
		return nil, err
	}
	if f.rateLimits, err = route.CompileRateLimits(c.GetRateLimits(), config.Join(path, "rate_limits"),
		route.RateLimitOptions{Filter: true, CompileValue: compileValue}); err != nil {
		return nil, err
	}
	return f, nil
}

// compileValue compiles a %VARIABLE% header value or hits_addend format.
func compileValue(text string) (route.Value, error) {
	v, err := format.CompileHeaderValue(text)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// perRoute is a compiled RateLimitPerRoute.
type perRoute struct {
	vh         rlv3.RateLimitPerRoute_VhRateLimitsOptions
	domain     string
	rateLimits *route.RateLimitPolicy
}

func compilePerRoute(ctx *httpfilter.Context, msg proto.Message, path string) (any, error) {
	p := msg.(*rlv3.RateLimitPerRoute)
	if err := config.CheckFields(p, path, "vh_rate_limits", "override_option", "rate_limits", "domain"); err != nil {
		return nil, err
	}
	if w, ok := overrideOptionWarning(p, path); ok && ctx != nil && ctx.Log != nil {
		ctx.Log.Warn("ratelimit: "+w.Message, "path", w.Path)
	}
	rls, err := route.CompileRateLimits(p.GetRateLimits(), config.Join(path, "rate_limits"),
		route.RateLimitOptions{Filter: true, CompileValue: compileValue})
	if err != nil {
		return nil, err
	}
	return &perRoute{vh: p.GetVhRateLimits(), domain: p.GetDomain(), rateLimits: rls}, nil
}

// overrideOptionWarning is the warning a set override_option gets: the
// field is hidden as not implemented in Envoy's API, and Envoy's per-route
// config (FilterConfigPerRoute) accepts it and never reads it, so Legate
// accepts it too, with no effect, and says so.
func overrideOptionWarning(p *rlv3.RateLimitPerRoute, path string) (config.Warning, bool) {
	o := p.GetOverrideOption()
	if o == rlv3.RateLimitPerRoute_DEFAULT {
		return config.Warning{}, false
	}
	return config.Warning{Path: config.Join(path, "override_option"),
		Message: fmt.Sprintf("override_option %s is ignored, as by Envoy (not implemented there); remove it", o)}, true
}

// statsFor returns the counters of the route target cluster name.
func (c *filterConfig) statsFor(name string) *clusterStats {
	if v, ok := c.clusterStats.Load(name); ok {
		return v.(*clusterStats)
	}
	// As Envoy's StatNames: ratelimit.<optional stat_prefix>.<name> in the
	// cluster's scope.
	p := "cluster." + stats.SanitizeName(name) + ".ratelimit."
	if c.statPrefix != "" {
		p += c.statPrefix + "."
	}
	cs := &clusterStats{store: c.store, ok: p + "ok", overLimit: p + "over_limit", errored: p + "error",
		failureModeAllowed: p + "failure_mode_allowed", internal: "cluster." + stats.SanitizeName(name) + ".internal."}
	v, _ := c.clusterStats.LoadOrStore(name, cs)
	return v.(*clusterStats)
}

func (c *filterConfig) isEnabled() bool {
	if c.enabled != nil {
		return c.enabled.Roll()
	}
	return runtime.FeatureEnabled(c.runtime, "ratelimit.http_filter_enabled", 100)
}

func (c *filterConfig) isEnforced() bool {
	if c.enforced != nil {
		return c.enforced.Roll()
	}
	return runtime.FeatureEnabled(c.runtime, "ratelimit.http_filter_enforcing", 100)
}

func (c *filterConfig) failureAllowed() bool {
	if c.failureDenyPct != nil {
		return !c.failureDenyPct.Roll()
	}
	return !c.failureModeDeny
}

func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

// routeCluster is implemented by the connection manager's callbacks: the
// cluster the stream's route picked (a weighted cluster is picked once
// per stream, before the filters run), as Envoy's clusterInfo().
type routeCluster interface {
	RouteCluster() string
}

type filter struct {
	cfg *filterConfig
	cb  httpfilter.Callbacks
	// Kept from the request for the descriptors sent when the stream is
	// done (apply_on_stream_done), as Envoy saves the route and config.
	rt      *route.Route
	cluster string
	pr      *perRoute
	vh      rlv3.RateLimitPerRoute_VhRateLimitsOptions
	started bool
	// respAdd are headers for the response (the service's, x-envoy-
	// ratelimited, x-ratelimit-*); limited marks the filter's own 429.
	respAdd        []headers.Field
	respContentSet bool
	limited        bool
	retryAfter     string
}

func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	c := f.cfg
	if !c.isEnabled() {
		return httpfilter.Continue
	}
	internal := h.Map.Get("x-envoy-internal") == "true"
	if internal && c.reqType == requestExternal || !internal && c.reqType == requestInternal {
		return httpfilter.Continue
	}
	ds := f.descriptors(h, false)
	if len(ds) == 0 {
		return httpfilter.Continue
	}
	res := c.service.Limit(context.Background(), c.timeout, rlcommon.Request(f.domain(), ds, f.hitsAddend()))
	return f.complete(h, ds, res)
}

// descriptors builds the request's descriptors (or, with onDone, those
// sent when the stream completes), as Envoy's populateRateLimitDescriptors.
func (f *filter) descriptors(h *headers.Request, onDone bool) []route.Descriptor {
	c := f.cfg
	if !onDone {
		f.started = true
		f.rt = f.cb.Route()
		if f.rt == nil || f.rt.Kind != route.Forward {
			return nil
		}
		if rc, ok := f.cb.(routeCluster); ok {
			f.cluster = rc.RouteCluster()
		} else {
			_, f.cluster, _ = f.rt.Action.PickCluster(h)
		}
		f.pr, _ = f.cb.PerRouteConfig().(*perRoute)
		// include_vh_rate_limits (deprecated) wins over vh_rate_limits.
		f.vh = rlv3.RateLimitPerRoute_OVERRIDE
		if f.rt.Action.IncludeVHRateLimits {
			f.vh = rlv3.RateLimitPerRoute_INCLUDE
		} else if f.pr != nil {
			f.vh = f.pr.vh
		}
	}
	if f.rt == nil || f.rt.Kind != route.Forward || f.cluster == "" || c.clusters.Get(f.cluster) == nil {
		// No route entry or no target cluster: Envoy makes no call.
		return nil
	}
	in := &route.DescriptorInput{LocalCluster: c.localCluster, Request: h, Info: f.cb.StreamInfo(), Route: f.rt, Cluster: f.cluster}
	var ds []route.Descriptor
	// The per-route rate_limits come first, then the filter's own; either
	// replaces the route and virtual host ones.
	if f.pr != nil && !f.pr.rateLimits.Empty() {
		return populate(ds, f.pr.rateLimits.Entries(), in, onDone, nil)
	}
	if !c.rateLimits.Empty() {
		return populate(ds, c.rateLimits.Entries(), in, onDone, nil)
	}
	ds = populate(ds, f.rt.Action.RateLimits.Stage(c.stage), in, onDone, c.runtime)
	switch f.vh {
	case rlv3.RateLimitPerRoute_INCLUDE:
		ds = populate(ds, f.rt.VHost.RateLimits.Stage(c.stage), in, onDone, c.runtime)
	case rlv3.RateLimitPerRoute_OVERRIDE:
		if f.rt.Action.RateLimits.Empty() {
			ds = populate(ds, f.rt.VHost.RateLimits.Stage(c.stage), in, onDone, c.runtime)
		}
	}
	return ds
}

// populate appends the descriptors of entries whose apply_on_stream_done
// is onDone; with rt, an entry's disable_key turns it off unless the
// runtime key ratelimit.<disable_key>.http_filter_enabled allows it.
func populate(ds []route.Descriptor, entries []*route.RateLimitEntry, in *route.DescriptorInput, onDone bool, rt *runtime.Loader) []route.Descriptor {
	for _, e := range entries {
		if e.ApplyOnStreamDone != onDone {
			continue
		}
		if e.DisableKey != "" && !runtime.FeatureEnabled(rt, e.DisableRuntimeKey, 100) {
			continue
		}
		ds = e.Populate(ds, in)
	}
	return ds
}

func (f *filter) domain() string {
	if f.pr != nil && f.pr.domain != "" {
		return f.pr.domain
	}
	return f.cfg.domain
}

// hitsAddend reads the envoy.ratelimit.hits_addend filter state (0: the
// service's default of 1).
func (f *filter) hitsAddend() uint32 {
	v, ok := f.cb.StreamInfo().FilterState["envoy.ratelimit.hits_addend"]
	if !ok || v == nil {
		return 0
	}
	n, err := strconv.ParseUint(v.String(), 10, 32)
	if err != nil {
		return 0
	}
	return uint32(n)
}

// complete acts on the service's answer, as Envoy's Filter::complete.
func (f *filter) complete(h *headers.Request, ds []route.Descriptor, res rlcommon.Result) httpfilter.Status {
	c := f.cfg
	info := f.cb.StreamInfo()
	cs := c.statsFor(f.cluster)
	f.respAdd = res.ResponseHeaders
	if res.Metadata != nil && len(res.Metadata.GetFields()) > 0 {
		info.SetDynamicMetadata(c.mdNamespace, res.Metadata.GetFields())
	}
	switch res.Status {
	case rlcommon.OK:
		cs.inc(cs.ok)
		if res.Err != nil {
			f.cb.Log().Debug("rate limit service", "error", res.Err)
		}
	case rlcommon.Error:
		cs.inc(cs.errored)
		f.cb.Log().Debug("rate limit service failed", "error", res.Err)
	case rlcommon.OverLimit:
		cs.inc(cs.overLimit)
		// Envoy charges the response code to the target cluster as an
		// internal request's (CodeStats::chargeResponseStat).
		if cl := c.clusters.Get(f.cluster); cl != nil {
			cl.Stats.ChargeCode(c.rateLimitedStatus)
		}
		code := strconv.Itoa(c.rateLimitedStatus)
		cs.inc(cs.internal + "upstream_rq_" + code)
		cs.inc(cs.internal + "upstream_rq_" + code[:1] + "xx")
		cs.inc(cs.internal + "upstream_rq_completed")
		if c.envoyRateLimitedHeader {
			f.respAdd = append(f.respAdd, headers.Field{Name: "x-envoy-ratelimited", Value: "true"})
		}
	}
	if c.xRateLimitHeaders || anyXRateLimit(ds) {
		f.respAdd = appendXRateLimit(f.respAdd, ds, c.xRateLimitHeaders, res.Statuses)
	}
	for _, hf := range res.ResponseHeaders {
		if hf.Name == "content-type" {
			f.respContentSet = true
		}
	}
	switch {
	case res.Status == rlcommon.OverLimit && c.isEnforced():
		f.limited = true
		info.SetFlag(streaminfo.RateLimited)
		if c.retryAfter && c.rateLimitedStatus == 429 {
			f.retryAfter = retryAfter(res.Statuses)
		}
		lr := httpfilter.LocalReply{Details: "request_rate_limited"}
		if c.resourceExhausted {
			code := 8 // RESOURCE_EXHAUSTED instead of the default UNAVAILABLE
			lr.GRPCStatus = &code
		}
		f.cb.SendLocalReply(c.rateLimitedStatus, res.Body, lr)
		return httpfilter.StopIteration
	case res.Status == rlcommon.Error:
		if c.failureAllowed() {
			cs.inc(cs.failureModeAllowed)
			return httpfilter.Continue
		}
		info.SetFlag(streaminfo.RateLimitServiceError)
		// The service's headers are only for a response it gave.
		f.respAdd = nil
		f.cb.SendLocalReply(c.statusOnError, res.Body, httpfilter.LocalReply{Details: "rate_limiter_error"})
		return httpfilter.StopIteration
	}
	// OK, or over the limit but not enforced: the service's request
	// headers go upstream (appended, as Envoy's copyFrom).
	for _, hf := range res.RequestHeaders {
		h.Map.Add(hf.Name, hf.Value)
	}
	return httpfilter.Continue
}

// EncodeHeaders adds the rate limit headers to the response: the upstream
// one, or the filter's own 429, where the service's content-type replaces
// the local reply's and response_headers_to_add apply.
func (f *filter) EncodeHeaders(h *headers.Response, _ bool) httpfilter.Status {
	if f.limited && f.respContentSet {
		h.Map.Del("content-type")
	}
	for _, hf := range f.respAdd {
		h.Map.Add(hf.Name, hf.Value)
	}
	f.respAdd = nil
	if f.limited {
		f.limited = false
		if f.retryAfter != "" && !h.Map.Has("retry-after") {
			h.Map.Set("retry-after", f.retryAfter)
		}
		route.ApplyHeaderOps(&h.Map, f.cfg.respHeaders, f.cb.StreamInfo())
	}
	return httpfilter.Continue
}

// OnDestroy sends the apply_on_stream_done descriptors, fire and forget,
// as Envoy does when the stream ends.
func (f *filter) OnDestroy() {
	if !f.started {
		return
	}
	f.started = false
	ds := f.descriptors(f.cb.RequestHeaders(), true)
	if len(ds) == 0 {
		return
	}
	req := rlcommon.Request(f.domain(), ds, f.hitsAddend())
	svc, timeout, log := f.cfg.service, f.cfg.timeout, f.cb.Log()
	go func() {
		if res := svc.Limit(context.Background(), timeout, req); res.Status == rlcommon.Error {
			log.Debug("rate limit on stream done failed", "error", res.Err)
		}
	}()
}

func anyXRateLimit(ds []route.Descriptor) bool {
	for _, d := range ds {
		if d.XRateLimit == route.XRateLimitDraft03 {
			return true
		}
	}
	return false
}

// xEnabled reports whether descriptor i shows x-ratelimit headers: its own
// option, or the filter's when it has none (or the answer has more
// statuses than descriptors were sent).
func xEnabled(ds []route.Descriptor, i int, def bool) bool {
	if i >= len(ds) || ds[i].XRateLimit == route.XRateLimitUnspecified {
		return def
	}
	return ds[i].XRateLimit == route.XRateLimitDraft03
}

// appendXRateLimit appends the draft-03 X-RateLimit headers of the status
// closest to its limit (Envoy's XRateLimitHeaderUtils::populateHeaders):
// x-ratelimit-limit is its limit followed by every enabled status's
// quota policy (", <limit>;w=<window seconds>[;name="<name>"]").
func appendXRateLimit(dst []headers.Field, ds []route.Descriptor, def bool, statuses []*rlsv3.RateLimitResponse_DescriptorStatus) []headers.Field {
	minI := -1
	for i, s := range statuses {
		if s.GetCurrentLimit() == nil {
			continue
		}
		if minI < 0 || s.GetLimitRemaining() < statuses[minI].GetLimitRemaining() {
			minI = i
		}
	}
	if minI < 0 || !xEnabled(ds, minI, def) {
		return dst
	}
	limit := strconv.FormatUint(uint64(statuses[minI].GetCurrentLimit().GetRequestsPerUnit()), 10)
	for i, s := range statuses {
		if s.GetCurrentLimit() == nil || !xEnabled(ds, i, def) {
			continue
		}
		w := window(s.GetCurrentLimit().GetUnit())
		if w == 0 {
			continue
		}
		limit += ", " + strconv.FormatUint(uint64(s.GetCurrentLimit().GetRequestsPerUnit()), 10) + ";w=" + strconv.FormatUint(uint64(w), 10)
		if n := s.GetCurrentLimit().GetName(); n != "" {
			limit += `;name="` + n + `"`
		}
	}
	m := statuses[minI]
	return append(dst,
		headers.Field{Name: "x-ratelimit-limit", Value: limit},
		headers.Field{Name: "x-ratelimit-remaining", Value: strconv.FormatUint(uint64(m.GetLimitRemaining()), 10)},
		headers.Field{Name: "x-ratelimit-reset", Value: strconv.FormatInt(m.GetDurationUntilReset().GetSeconds(), 10)})
}

// window is a rate limit unit in seconds (0: unknown).
func window(u rlsv3.RateLimitResponse_RateLimit_Unit) uint32 {
	switch u {
	case rlsv3.RateLimitResponse_RateLimit_SECOND:
		return 1
	case rlsv3.RateLimitResponse_RateLimit_MINUTE:
		return 60
	case rlsv3.RateLimitResponse_RateLimit_HOUR:
		return 60 * 60
	case rlsv3.RateLimitResponse_RateLimit_DAY:
		return 24 * 60 * 60
	case rlsv3.RateLimitResponse_RateLimit_WEEK:
		return 7 * 24 * 60 * 60
	case rlsv3.RateLimitResponse_RateLimit_MONTH:
		return 30 * 24 * 60 * 60
	case rlsv3.RateLimitResponse_RateLimit_YEAR:
		return 365 * 24 * 60 * 60
	}
	return 0
}

// retryAfter is the Retry-After value: the longest duration_until_reset
// of the over-limit statuses in seconds, at least 1 ("" when none).
func retryAfter(statuses []*rlsv3.RateLimitResponse_DescriptorStatus) string {
	var longest int64 = -1
	for _, s := range statuses {
		if s.GetCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
			continue
		}
		if d := s.GetDurationUntilReset().GetSeconds(); d > longest {
			longest = d
		}
	}
	if longest < 0 {
		return ""
	}
	return strconv.FormatInt(max(longest, 1), 10)
}
