package proxy

import (
	healthcheckv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/route"
	"math/rand/v2"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// httpFilter is an HTTP filter that runs before the router, in
// http_filters order. decode returns true when it answered the request.
type httpFilter interface {
	decode(s *stream) bool
}

const localRateLimitTypeURL = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"

// compileHTTPFilter compiles one non-router HTTP filter by @type.
func compileHTTPFilter(tc *anypb.Any, path string, d *Deps) (httpFilter, bool, error) {
	switch tc.GetTypeUrl() {
	case localRateLimitTypeURL:
		f, err := compileLocalRateLimit(tc, path, d.Stats)
		return f, true, err
	case healthCheckTypeURL:
		f, err := compileHealthCheck(tc, path, d)
		return f, true, err
	}
	return nil, false, nil
}

// localRateLimit is envoy.filters.http.local_ratelimit: a token bucket per
// filter (or per downstream connection) that answers with 429 when empty.
type localRateLimit struct {
	status                 int
	maxTokens, perFill     int64
	fillInterval           time.Duration
	enabled, enforced      fraction
	perConnection          bool
	respHeaders, reqHeader []*corev3.HeaderValueOption
	bucket                 *tokenBucket
	stEnabled, stEnforced  *stats.Counter
	stLimited, stOK        *stats.Counter
}

// fraction is a RuntimeFractionalPercent's default value (runtime
// overrides are not read).
type fraction struct{ num, den uint32 }

func fractionOf(p *corev3.RuntimeFractionalPercent) fraction {
	if p == nil {
		return fraction{0, 100} // Envoy: unset means 0 %, for safety
	}
	d := p.GetDefaultValue()
	den := uint32(100)
	switch d.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		den = 10000
	case typev3.FractionalPercent_MILLION:
		den = 1000000
	}
	return fraction{d.GetNumerator(), den}
}

func (f fraction) roll() bool {
	if f.num >= f.den {
		return true
	}
	return f.num > 0 && rand.Uint32N(f.den) < f.num
}

func compileLocalRateLimit(tc *anypb.Any, path string, st *stats.Store) (*localRateLimit, error) {
	cfg := &localrlv3.LocalRateLimit{}
	if err := tc.UnmarshalTo(cfg); err != nil {
		return nil, config.Errorf(path, "decode LocalRateLimit: %v", err)
	}
	if err := cfg.ValidateAll(); err != nil {
		return nil, config.Errorf(path, "%v", err)
	}
	if err := config.CheckFields(cfg, path, "stat_prefix", "status", "token_bucket", "filter_enabled", "filter_enforced",
		"request_headers_to_add_when_not_enforced", "response_headers_to_add", "local_rate_limit_per_downstream_connection"); err != nil {
		return nil, err
	}
	tb := cfg.GetTokenBucket()
	if tb == nil {
		return nil, config.Errorf(config.Join(path, "token_bucket"), "a token bucket is required (descriptors are not supported by legate)")
	}
	f := &localRateLimit{
		status: 429, maxTokens: int64(tb.GetMaxTokens()), perFill: 1, fillInterval: tb.GetFillInterval().AsDuration(),
		enabled: fractionOf(cfg.GetFilterEnabled()), enforced: fractionOf(cfg.GetFilterEnforced()),
		perConnection: cfg.GetLocalRateLimitPerDownstreamConnection(),
		respHeaders:   cfg.GetResponseHeadersToAdd(), reqHeader: cfg.GetRequestHeadersToAddWhenNotEnforced(),
	}
	if v := tb.GetTokensPerFill(); v != nil {
		f.perFill = int64(v.GetValue())
	}
	if s := cfg.GetStatus(); s != nil && s.GetCode() != 0 {
		f.status = int(s.GetCode())
	}
	if f.fillInterval < 50*time.Millisecond {
		return nil, config.Errorf(config.Join(path, "token_bucket.fill_interval"), "must be at least 50ms (as Envoy)")
	}
	sc := st.Scope(cfg.GetStatPrefix() + ".http_local_rate_limit.")
	f.stEnabled, f.stEnforced, f.stLimited, f.stOK = sc.Counter("enabled"), sc.Counter("enforced"), sc.Counter("rate_limited"), sc.Counter("ok")
	f.bucket = newTokenBucket(f.maxTokens)
	return f, nil
}

func (f *localRateLimit) decode(s *stream) bool {
	if !f.enabled.roll() {
		return false
	}
	f.stEnabled.Inc()
	b := f.bucket
	if f.perConnection {
		v, _ := s.conn.buckets.LoadOrStore(f, newTokenBucket(f.maxTokens))
		b = v.(*tokenBucket)
	}
	if b.take(f.maxTokens, f.perFill, f.fillInterval) {
		f.stOK.Inc()
		return false
	}
	f.stLimited.Inc()
	if !f.enforced.roll() {
		for _, h := range f.reqHeader {
			s.req.Map.Add(h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		return false
	}
	f.stEnforced.Inc()
	s.replyHeaders = f.respHeaders
	s.localReply(f.status, "local_rate_limited", "local_rate_limited", streaminfo.RateLimited)
	return true
}

// tokenBucket refills tokens_per_fill every fill_interval up to max_tokens;
// it starts full.
type tokenBucket struct {
	mu     sync.Mutex
	tokens int64
	last   time.Time
}

func newTokenBucket(max int64) *tokenBucket { return &tokenBucket{tokens: max, last: time.Now()} }

func (b *tokenBucket) take(max, perFill int64, interval time.Duration) bool {
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

const healthCheckTypeURL = "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck"

// healthCheckFilter is envoy.filters.http.health_check: requests matching
// its headers are answered by the proxy itself — 200 while the server
// passes health checks (and the listed clusters have enough healthy
// hosts), 503 once /healthcheck/fail was called or the server drains. In
// pass_through_mode they go upstream unless the server is failing.
type healthCheckFilter struct {
	passThrough bool
	matchers    []func(*headers.Request) bool
	minHealthy  map[string]float64
	d           *Deps
}

func compileHealthCheck(tc *anypb.Any, path string, d *Deps) (*healthCheckFilter, error) {
	cfg := &healthcheckv3.HealthCheck{}
	if err := tc.UnmarshalTo(cfg); err != nil {
		return nil, config.Errorf(path, "decode HealthCheck: %v", err)
	}
	if err := cfg.ValidateAll(); err != nil {
		return nil, config.Errorf(path, "%v", err)
	}
	if err := config.CheckFields(cfg, path, "pass_through_mode", "headers", "cluster_min_healthy_percentages", "cache_time"); err != nil {
		return nil, err
	}
	if cfg.GetCacheTime() != nil {
		return nil, config.Unsupported(config.Join(path, "cache_time"), "cache_time (caching pass-through health check responses)")
	}
	f := &healthCheckFilter{passThrough: cfg.GetPassThroughMode().GetValue(), minHealthy: map[string]float64{}, d: d}
	for i, h := range cfg.GetHeaders() {
		m, err := route.CompileHeaderMatcher(h, config.Index(config.Join(path, "headers"), i))
		if err != nil {
			return nil, err
		}
		f.matchers = append(f.matchers, m)
	}
	for name, p := range cfg.GetClusterMinHealthyPercentages() {
		f.minHealthy[name] = p.GetValue()
	}
	return f, nil
}

func (f *healthCheckFilter) decode(s *stream) bool {
	for _, m := range f.matchers {
		if !m(&s.req) {
			return false
		}
	}
	failing := f.d.HealthCheckFailing != nil && f.d.HealthCheckFailing()
	if failing {
		s.replyHeaders = immediateHCFail
		s.localReply(503, "", "health_check_failed", streaminfo.FailedLocalHealthCheck)
		return true
	}
	if f.passThrough {
		return false
	}
	for name, min := range f.minHealthy {
		c := f.d.Clusters.Get(name)
		if c == nil {
			s.localReply(503, "", "health_check_cluster_missing", 0)
			return true
		}
		total := len(c.Hosts())
		if total == 0 || float64(c.HealthyCount())*100/float64(total) < min {
			s.localReply(503, "", "health_check_cluster_unhealthy", 0)
			return true
		}
	}
	s.localReply(200, "", "health_check_ok", 0)
	return true
}

var immediateHCFail = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-envoy-immediate-health-check-fail", Value: "true"}}}
