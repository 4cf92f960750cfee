// Package local_ratelimit is envoy.filters.http.local_ratelimit: token
// buckets per filter config (or per downstream connection, or per route
// through typed_per_filter_config) that answer 429 when they are empty.
//
// With descriptors, the request's rate limit descriptors — made by the
// filter's own rate_limits or else by the route's and virtual host's
// rate_limits actions of the filter's stage (internal/route, as the global
// rate limit filter) — select per-descriptor token buckets, as Envoy's
// LocalRateLimiterImpl: every descriptor that matches one configured
// exactly (same entries in the same order) takes a token, the slowest
// filling bucket first, and the first empty one limits the request; the
// default bucket takes a token when none matched or when
// always_consume_default_token_bucket (true by default) says so.
// enable_x_ratelimit_headers DRAFT_VERSION_03 adds x-ratelimit-limit,
// -remaining and -reset of the bucket that decided (the matched
// descriptor's, else the default one).
package local_ratelimit

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func init() {
	httpfilter.Register("envoy.filters.http.local_ratelimit", nil, &localrlv3.LocalRateLimit{}, &localrlv3.LocalRateLimit{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"descriptors (exact entries), the filter's rate_limits or the route's and virtual host's of its stage, vh_rate_limits, "+
			"always_consume_default_token_bucket, x-ratelimit-* headers; dynamic descriptors (an entry without a value), "+
			"local_cluster_rate_limit and enable_retry_after_header are not implemented")
}

// tokenBucket is one configured bucket: the default one or a descriptor's.
type tokenBucket struct {
	maxTokens, perFill int64
	interval           time.Duration
	// fillRate is tokens per second, which orders the matched descriptors
	// (Envoy's fillRate()).
	fillRate float64
}

// descriptor is one configured LocalRateLimitDescriptor.
type descriptor struct {
	key string // the entries, joined by keyOf
	tb  tokenBucket
	// index is the descriptor's bucket in a buckets value.
	index int
}

// limiter is one compiled LocalRateLimit.
type limiter struct {
	status            int
	def               tokenBucket
	enabled, enforced runtime.Fractional
	perConnection     bool
	// newBuckets makes a connection's buckets; made once at compile so a
	// request allocates nothing (a closure per request escaped before).
	newBuckets             func() any
	respHeaders, reqHeader []httpfilter.HeaderValue
	buckets                *buckets
	stEnabled, stEnforced  *stats.Counter
	stLimited, stOK        *stats.Counter
	// configured is false for a filter without a token bucket, which
	// limits only on routes that configure one.
	configured bool

	// descriptors, sorted by fill rate (slowest first), and by key.
	descriptors   []*descriptor
	byKey         map[string]*descriptor
	alwaysDefault bool
	stage         uint32
	vh            rlcommonv3.VhRateLimitsOptions
	rateLimits    *route.RateLimitPolicy
	localCluster  string
	xHeaders      bool
	grpcStatus    *int
}

func headerValues(hs []*corev3.HeaderValueOption) []httpfilter.HeaderValue {
	out := make([]httpfilter.HeaderValue, 0, len(hs))
	for _, h := range hs {
		// append (deprecated) wins when set; else append_action, whose
		// default appends.
		app := h.GetAppendAction() == corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		if h.GetAppend() != nil {
			app = h.GetAppend().GetValue()
		}
		out = append(out, httpfilter.HeaderValue{Key: headers.Lower(h.GetHeader().GetKey()), Value: h.GetHeader().GetValue(), Append: app})
	}
	return out
}

// keyOf joins descriptor entries into a map key (NUL and SOH never occur
// in header-derived values that reach here as separators).
func keyOf(n int, entry func(int) (string, string)) string {
	var b strings.Builder
	for i := range n {
		k, v := entry(i)
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(v)
		b.WriteByte(1)
	}
	return b.String()
}

func newTokenBucket(max, perFill int64, interval time.Duration) tokenBucket {
	return tokenBucket{maxTokens: max, perFill: perFill, interval: interval, fillRate: float64(perFill) / interval.Seconds()}
}

func build(ctx *httpfilter.Context, msg proto.Message, path string) (*limiter, error) {
	cfg := msg.(*localrlv3.LocalRateLimit)
	if err := config.CheckFields(cfg, path, "stat_prefix", "status", "token_bucket", "filter_enabled", "filter_enforced",
		"request_headers_to_add_when_not_enforced", "response_headers_to_add", "local_rate_limit_per_downstream_connection",
		"descriptors", "stage", "always_consume_default_token_bucket", "rate_limited_as_resource_exhausted",
		"enable_x_ratelimit_headers", "vh_rate_limits", "rate_limits",
		// no behavioural effect without dynamic descriptors, which are refused.
		"max_dynamic_descriptors"); err != nil {
		return nil, err
	}
	f := &limiter{
		status:  429,
		enabled: runtime.NewFractional(ctx.Runtime, cfg.GetFilterEnabled()), enforced: runtime.NewFractional(ctx.Runtime, cfg.GetFilterEnforced()),
		perConnection: cfg.GetLocalRateLimitPerDownstreamConnection(),
		respHeaders:   headerValues(cfg.GetResponseHeadersToAdd()), reqHeader: headerValues(cfg.GetRequestHeadersToAddWhenNotEnforced()),
		alwaysDefault: true, stage: cfg.GetStage(), vh: cfg.GetVhRateLimits(), localCluster: ctx.NodeCluster,
		xHeaders: cfg.GetEnableXRatelimitHeaders() == rlcommonv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03,
	}
	if v := cfg.GetAlwaysConsumeDefaultTokenBucket(); v != nil {
		f.alwaysDefault = v.GetValue()
	}
	if cfg.GetRateLimitedAsResourceExhausted() {
		code := 8 // RESOURCE_EXHAUSTED instead of UNAVAILABLE, the gRPC status of a 429
		f.grpcStatus = &code
	}
	if s := cfg.GetStatus(); s != nil && s.GetCode() != 0 {
		f.status = int(s.GetCode())
	}
	if f.stage > route.MaxRateLimitStage {
		return nil, config.Errorf(config.Join(path, "stage"), "stage %d is over the maximum %d", f.stage, route.MaxRateLimitStage)
	}
	if cfg.GetLocalClusterRateLimit() != nil {
		return nil, config.Unsupported(config.Join(path, "local_cluster_rate_limit"), "sharing the token bucket over the local cluster's hosts")
	}
	if cfg.GetEnableRetryAfterHeader() {
		return nil, config.Unsupported(config.Join(path, "enable_retry_after_header"), "the retry-after header of local rate limiting", "enable_x_ratelimit_headers")
	}
	var err error
	// The filter's own rate_limits (Envoy's RateLimitConfig) replace the
	// route's; like the rate limit filter's list, no stage or disable_key.
	if f.rateLimits, err = route.CompileRateLimits(cfg.GetRateLimits(), config.Join(path, "rate_limits"), route.RateLimitOptions{Filter: true}); err != nil {
		return nil, err
	}
	// As Envoy, the stats are <stat_prefix>.http_local_rate_limit.* at the
	// root of the stats tree.
	sc := ctx.Stats.Scope(cfg.GetStatPrefix() + ".http_local_rate_limit.")
	f.stEnabled, f.stEnforced, f.stLimited, f.stOK = sc.Counter("enabled"), sc.Counter("enforced"), sc.Counter("rate_limited"), sc.Counter("ok")
	tb := cfg.GetTokenBucket()
	if tb == nil {
		if len(cfg.GetDescriptors()) > 0 {
			return nil, config.Errorf(config.Join(path, "token_bucket"), "descriptors need the filter's token_bucket too "+
				"(their fill intervals are multiples of its fill interval, as Envoy)")
		}
		return f, nil
	}
	f.configured = true
	perFill := int64(1)
	if v := tb.GetTokensPerFill(); v != nil {
		perFill = int64(v.GetValue())
	}
	if tb.GetFillInterval().AsDuration() < 50*time.Millisecond {
		return nil, config.Errorf(config.Join(path, "token_bucket.fill_interval"), "must be at least 50ms (as Envoy)")
	}
	f.def = newTokenBucket(int64(tb.GetMaxTokens()), perFill, tb.GetFillInterval().AsDuration())
	if err := f.compileDescriptors(cfg, path); err != nil {
		return nil, err
	}
	f.buckets = f.makeBuckets()
	f.newBuckets = func() any { return f.makeBuckets() }
	return f, nil
}

func (f *limiter) compileDescriptors(cfg *localrlv3.LocalRateLimit, path string) error {
	f.byKey = map[string]*descriptor{}
	for i, d := range cfg.GetDescriptors() {
		p := config.Index(config.Join(path, "descriptors"), i)
		if err := config.CheckFields(d, p, "entries", "token_bucket"); err != nil {
			return err
		}
		for j, e := range d.GetEntries() {
			if e.GetValue() == "" {
				return config.Unsupported(config.Index(config.Join(p, "entries"), j)+".value",
					"dynamic descriptors (an entry without a value, a bucket per distinct value)", "a descriptor per value")
			}
		}
		tb := d.GetTokenBucket()
		interval := tb.GetFillInterval().AsDuration()
		if interval%f.def.interval != 0 {
			return config.Errorf(config.Join(p, "token_bucket.fill_interval"), "local rate descriptor limit is not a multiple of token bucket fill timer "+
				"(%s is not a multiple of the filter's %s)", interval, f.def.interval)
		}
		perFill := int64(1)
		if v := tb.GetTokensPerFill(); v != nil {
			perFill = int64(v.GetValue())
		}
		es := d.GetEntries()
		nd := &descriptor{key: keyOf(len(es), func(j int) (string, string) { return es[j].GetKey(), es[j].GetValue() }),
			tb: newTokenBucket(int64(tb.GetMaxTokens()), perFill, interval), index: i}
		if _, dup := f.byKey[nd.key]; dup {
			return config.Errorf(p, "duplicate descriptor in the local rate descriptor (as Envoy)")
		}
		f.byKey[nd.key] = nd
		f.descriptors = append(f.descriptors, nd)
	}
	// The slowest-filling descriptor takes its token first, so a request
	// it limits takes none from the others (Envoy sorts the matched ones).
	slices.SortStableFunc(f.descriptors, func(a, b *descriptor) int { return cmp.Compare(a.tb.fillRate, b.tb.fillRate) })
	return nil
}

// buckets are the token states of one limiter (or one connection's).
type buckets struct {
	def  *bucket
	desc []*bucket // by descriptor index
}

func (f *limiter) makeBuckets() *buckets {
	b := &buckets{def: newBucket(f.def.maxTokens), desc: make([]*bucket, len(f.descriptors))}
	for _, d := range f.descriptors {
		b.desc[d.index] = newBucket(d.tb.maxTokens)
	}
	return b
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	f, err := build(ctx, msg, path)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func compilePerRoute(ctx *httpfilter.Context, msg proto.Message, path string) (any, error) {
	f, err := build(ctx, msg, path)
	if err != nil {
		return nil, err
	}
	if !f.configured {
		return nil, config.Errorf(config.Join(path, "token_bucket"), "a per-route local rate limit needs a token bucket")
	}
	return f, nil
}

// NewFilter makes the filter of one stream.
func (f *limiter) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: f, cb: cb}
}

type filter struct {
	cfg *limiter
	cb  httpfilter.Callbacks
	// decided is the bucket that decided the request, for the x-ratelimit
	// headers (nil: none).
	decided   *bucket
	decidedTB *tokenBucket
	xHeaders  bool
}

// routeCluster is implemented by the connection manager's callbacks: the
// cluster the stream's route picked (the destination_cluster action).
type routeCluster interface {
	RouteCluster() string
}

// DecodeHeaders takes a token from the route's buckets (per-route config)
// or the filter's.
func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	l := f.cfg
	if pr, ok := f.cb.PerRouteConfig().(*limiter); ok {
		l = pr
	}
	if !l.configured || !l.enabled.Roll() {
		return httpfilter.Continue
	}
	l.stEnabled.Inc()
	bs := l.buckets
	if l.perConnection {
		bs = f.cb.ConnectionState(l, l.newBuckets).(*buckets)
	}
	var ds []route.Descriptor
	if len(l.descriptors) > 0 {
		ds = f.descriptors(l, h)
	}
	allowed := l.allow(bs, ds, f)
	f.xHeaders = l.xHeaders
	if allowed {
		l.stOK.Inc()
		return httpfilter.Continue
	}
	l.stLimited.Inc()
	if !l.enforced.Roll() {
		for _, hv := range l.reqHeader {
			h.Map.Add(hv.Key, hv.Value)
		}
		return httpfilter.Continue
	}
	l.stEnforced.Inc()
	f.cb.SendLocalReply(l.status, "local_rate_limited", httpfilter.LocalReply{
		Details: "local_rate_limited", Flag: streaminfo.RateLimited, Headers: l.respHeaders, GRPCStatus: l.grpcStatus})
	return httpfilter.StopIteration
}

// allow is Envoy's LocalRateLimiterImpl::requestAllowed; it records the
// deciding bucket in f.
func (l *limiter) allow(bs *buckets, ds []route.Descriptor, f *filter) bool {
	var first *descriptor
	matched := false
	var keys []string
	for i := range ds {
		es := ds[i].Entries
		keys = append(keys, keyOf(len(es), func(j int) (string, string) { return es[j].Key, es[j].Value }))
	}
	for _, d := range l.descriptors {
		if !slices.Contains(keys, d.key) {
			continue
		}
		b := bs.desc[d.index]
		if !b.take(d.tb) {
			f.decided, f.decidedTB = b, &d.tb
			return false
		}
		if !matched {
			first, matched = d, true
		}
	}
	if !matched || l.alwaysDefault {
		if !bs.def.take(l.def) {
			f.decided, f.decidedTB = bs.def, &l.def
			return false
		}
	}
	if matched {
		// As Envoy: the matched descriptor's bucket is reported first.
		f.decided, f.decidedTB = bs.desc[first.index], &first.tb
	} else {
		f.decided, f.decidedTB = bs.def, &l.def
	}
	return true
}

// descriptors builds the request's descriptors: the filter's rate_limits,
// else the route's (and, as vh_rate_limits says, the virtual host's)
// entries of the filter's stage, without those with a disable_key (as
// Envoy's local rate limit filter).
func (f *filter) descriptors(l *limiter, h *headers.Request) []route.Descriptor {
	rt := f.cb.Route()
	in := &route.DescriptorInput{LocalCluster: l.localCluster, Request: h, Info: f.cb.StreamInfo(), Route: rt}
	if rc, ok := f.cb.(routeCluster); ok {
		in.Cluster = rc.RouteCluster()
	}
	var ds []route.Descriptor
	if !l.rateLimits.Empty() {
		for _, e := range l.rateLimits.Entries() {
			ds = e.Populate(ds, in)
		}
		return ds
	}
	if rt == nil || rt.Kind != route.Forward {
		return nil
	}
	ds = populate(ds, rt.Action.RateLimits.Stage(l.stage), in)
	vh := l.vh
	if rt.Action.IncludeVHRateLimits {
		vh = rlcommonv3.VhRateLimitsOptions_INCLUDE
	}
	switch vh {
	case rlcommonv3.VhRateLimitsOptions_INCLUDE:
		ds = populate(ds, rt.VHost.RateLimits.Stage(l.stage), in)
	case rlcommonv3.VhRateLimitsOptions_OVERRIDE:
		if rt.Action.RateLimits.Empty() {
			ds = populate(ds, rt.VHost.RateLimits.Stage(l.stage), in)
		}
	}
	return ds
}

func populate(ds []route.Descriptor, entries []*route.RateLimitEntry, in *route.DescriptorInput) []route.Descriptor {
	for _, e := range entries {
		if e.DisableKey != "" {
			continue // as Envoy's local filter: an entry with a disable_key is skipped
		}
		ds = e.Populate(ds, in)
	}
	return ds
}

// EncodeHeaders adds the x-ratelimit-* headers of the bucket that decided
// (draft 03 of the RateLimit header fields, as Envoy), to the upstream's
// response or the filter's 429.
func (f *filter) EncodeHeaders(h *headers.Response, _ bool) httpfilter.Status {
	if !f.xHeaders || f.decided == nil {
		return httpfilter.Continue
	}
	remaining, reset := f.decided.state(*f.decidedTB)
	h.Map.Add("x-ratelimit-limit", strconv.FormatInt(f.decidedTB.maxTokens, 10))
	h.Map.Add("x-ratelimit-remaining", strconv.FormatInt(remaining, 10))
	h.Map.Add("x-ratelimit-reset", strconv.FormatInt(reset, 10))
	return httpfilter.Continue
}

// bucket refills tokens_per_fill every fill_interval up to max_tokens; it
// starts full.
type bucket struct {
	mu     sync.Mutex
	tokens int64
	last   time.Time
}

func newBucket(max int64) *bucket { return &bucket{tokens: max, last: time.Now()} }

// refill adds the fills due since the last one; b.mu is held.
func (b *bucket) refill(tb tokenBucket, now time.Time) {
	if n := int64(now.Sub(b.last) / tb.interval); n > 0 {
		b.tokens = min(tb.maxTokens, b.tokens+n*tb.perFill)
		b.last = b.last.Add(time.Duration(n) * tb.interval)
	}
}

func (b *bucket) take(tb tokenBucket) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(tb, time.Now())
	if b.tokens <= 0 {
		return false
	}
	b.tokens--
	return true
}

// state is the remaining tokens and the whole seconds to the next fill
// (Envoy's remainingFillInterval: the interval less the whole seconds
// since the last fill).
func (b *bucket) state(tb tokenBucket) (remaining, reset int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.refill(tb, now)
	since := now.Sub(b.last).Truncate(time.Second)
	return b.tokens, int64((tb.interval - since) / time.Second)
}
