// Package local_ratelimit is envoy.filters.http.local_ratelimit: a token
// bucket per filter config (or per downstream connection, or per route
// through typed_per_filter_config) that answers 429 when it is empty.
package local_ratelimit

import (
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func init() {
	httpfilter.Register("envoy.filters.http.local_ratelimit", nil, &localrlv3.LocalRateLimit{}, &localrlv3.LocalRateLimit{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"descriptors, rate_limits and runtime overrides are not implemented")
}

// limiter is one compiled LocalRateLimit.
type limiter struct {
	status             int
	maxTokens, perFill int64
	fillInterval       time.Duration
	enabled, enforced  runtime.Fractional
	perConnection      bool
	// newBucket makes a connection's bucket; made once at compile so a
	// request allocates nothing (a closure per request escaped before).
	newBucket              func() any
	respHeaders, reqHeader []httpfilter.HeaderValue
	bucket                 *bucket
	stEnabled, stEnforced  *stats.Counter
	stLimited, stOK        *stats.Counter
	// configured is false for a filter without a token bucket, which
	// limits only on routes that configure one.
	configured bool
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

func build(ctx *httpfilter.Context, msg proto.Message, path string) (*limiter, error) {
	cfg := msg.(*localrlv3.LocalRateLimit)
	if err := config.CheckFields(cfg, path, "stat_prefix", "status", "token_bucket", "filter_enabled", "filter_enforced",
		"request_headers_to_add_when_not_enforced", "response_headers_to_add", "local_rate_limit_per_downstream_connection"); err != nil {
		return nil, err
	}
	f := &limiter{
		status: 429, perFill: 1,
		enabled: runtime.NewFractional(ctx.Runtime, cfg.GetFilterEnabled()), enforced: runtime.NewFractional(ctx.Runtime, cfg.GetFilterEnforced()),
		perConnection: cfg.GetLocalRateLimitPerDownstreamConnection(),
		respHeaders:   headerValues(cfg.GetResponseHeadersToAdd()), reqHeader: headerValues(cfg.GetRequestHeadersToAddWhenNotEnforced()),
	}
	if s := cfg.GetStatus(); s != nil && s.GetCode() != 0 {
		f.status = int(s.GetCode())
	}
	// As Envoy, the stats are <stat_prefix>.http_local_rate_limit.* at the
	// root of the stats tree.
	sc := ctx.Stats.Scope(cfg.GetStatPrefix() + ".http_local_rate_limit.")
	f.stEnabled, f.stEnforced, f.stLimited, f.stOK = sc.Counter("enabled"), sc.Counter("enforced"), sc.Counter("rate_limited"), sc.Counter("ok")
	tb := cfg.GetTokenBucket()
	if tb == nil {
		return f, nil
	}
	f.configured = true
	f.maxTokens, f.fillInterval = int64(tb.GetMaxTokens()), tb.GetFillInterval().AsDuration()
	if v := tb.GetTokensPerFill(); v != nil {
		f.perFill = int64(v.GetValue())
	}
	if f.fillInterval < 50*time.Millisecond {
		return nil, config.Errorf(config.Join(path, "token_bucket.fill_interval"), "must be at least 50ms (as Envoy)")
	}
	f.bucket = newBucket(f.maxTokens)
	n := f.maxTokens
	f.newBucket = func() any { return newBucket(n) }
	return f, nil
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

// NewFilter: the filter has no per-stream state beyond its callbacks.
func (f *limiter) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: f, cb: cb}
}

type filter struct {
	cfg *limiter
	cb  httpfilter.Callbacks
}

// DecodeHeaders takes a token from the route's bucket (per-route config)
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
	b := l.bucket
	if l.perConnection {
		b = f.cb.ConnectionState(l, l.newBucket).(*bucket)
	}
	if b.take(l.maxTokens, l.perFill, l.fillInterval) {
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
		Details: "local_rate_limited", Flag: streaminfo.RateLimited, Headers: l.respHeaders})
	return httpfilter.StopIteration
}

// bucket refills tokens_per_fill every fill_interval up to max_tokens; it
// starts full.
type bucket struct {
	mu     sync.Mutex
	tokens int64
	last   time.Time
}

func newBucket(max int64) *bucket { return &bucket{tokens: max, last: time.Now()} }

func (b *bucket) take(max, perFill int64, interval time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n := int64(time.Since(b.last) / interval); n > 0 {
		b.tokens = min(max, b.tokens+n*perFill)
		b.last = b.last.Add(time.Duration(n) * interval)
	}
	if b.tokens <= 0 {
		return false
	}
	b.tokens--
	return true
}
