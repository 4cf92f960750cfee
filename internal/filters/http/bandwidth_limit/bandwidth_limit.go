// Package bandwidth_limit is envoy.filters.http.bandwidth_limit: request
// and/or response bodies (enable_mode) pass at most limit_kbps KiB/s,
// drawn from a token bucket that holds one second of bytes, refills
// continuously and is shared by the streams of the filter (or of the
// route, for a per-route config); when it is empty the body waits
// fill_interval and tries again, as Envoy's StreamRateLimiter. Stats are
// <stat_prefix>.http_bandwidth_limit.* at the root, as Envoy's.
//
// Legate runs each stream on its own goroutine, so the filter waits in
// its data callback and then passes the chunk on whole, where Envoy
// writes the part it has tokens for at each interval: the rate is the
// same, the chunks larger. enable_response_trailers (trailers the filter
// would add to a response) is not implemented and is refused.
package bandwidth_limit

import (
	"math"
	"sync"
	"time"

	bwv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/bandwidth_limit/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
)

// Name is the filter's name.
const Name = "envoy.filters.http.bandwidth_limit"

// defaultFillInterval is Envoy's StreamRateLimiter::DefaultFillInterval.
const defaultFillInterval = 50 * time.Millisecond

func init() {
	httpfilter.Register(Name, nil, &bwv3.BandwidthLimit{}, &bwv3.BandwidthLimit{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute}, "enable_response_trailers is not implemented")
}

// direction is one side's stats.
type direction struct {
	enabled, enforced, incomingTotal, allowedTotal *stats.Counter
	pending, incoming, allowed                     *stats.Gauge
	duration                                       *stats.Histogram
}

func newDirection(sc stats.Scope, side string) direction {
	return direction{
		enabled: sc.Counter(side + "_enabled"), enforced: sc.Counter(side + "_enforced"),
		incomingTotal: sc.Counter(side + "_incoming_total_size"), allowedTotal: sc.Counter(side + "_allowed_total_size"),
		pending: sc.Gauge(side + "_pending"), incoming: sc.Gauge(side + "_incoming_size"), allowed: sc.Gauge(side + "_allowed_size"),
		duration: sc.Histogram(side + "_transfer_duration"),
	}
}

// limiter is a compiled BandwidthLimit.
type limiter struct {
	mode         bwv3.BandwidthLimit_EnableMode
	limitKbps    uint64
	fillInterval time.Duration
	enabled      runtime.FeatureFlag
	bucket       *bucket
	req, resp    direction
}

func build(ctx *httpfilter.Context, c *bwv3.BandwidthLimit, path string, perRoute bool) (*limiter, error) {
	if err := config.CheckFields(c, path, "stat_prefix", "enable_mode", "limit_kbps", "fill_interval", "runtime_enabled",
		"response_trailer_prefix"); err != nil {
		return nil, err
	}
	if perRoute && c.GetLimitKbps() == nil {
		return nil, config.Errorf(config.Join(path, "limit_kbps"), "bandwidthlimitfilter: limit must be set for per route filter config")
	}
	l := &limiter{mode: c.GetEnableMode(), limitKbps: c.GetLimitKbps().GetValue(), fillInterval: defaultFillInterval,
		enabled: runtime.NewFeatureFlag(ctx.Runtime, c.GetRuntimeEnabled())}
	if fi := c.GetFillInterval(); fi != nil {
		l.fillInterval = fi.AsDuration()
	}
	// As Envoy, the bucket holds a second of bytes and refills at that
	// rate.
	bytes := float64(l.limitKbps * 1024)
	l.bucket = &bucket{max: bytes, rate: bytes, tokens: bytes, last: time.Now()}
	sc := ctx.Stats.Scope(c.GetStatPrefix() + ".http_bandwidth_limit.")
	l.req, l.resp = newDirection(sc, "request"), newDirection(sc, "response")
	return l, nil
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	l, err := build(ctx, msg.(*bwv3.BandwidthLimit), path, false)
	if err != nil {
		return nil, err
	}
	return l, nil
}

func compilePerRoute(ctx *httpfilter.Context, msg proto.Message, path string) (any, error) {
	return build(ctx, msg.(*bwv3.BandwidthLimit), path, true)
}

// NewFilter makes the stream's filter.
func (l *limiter) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{def: l, cb: cb}
}

// stream is one direction of one stream being limited.
type stream struct {
	on      bool
	started time.Time
}

type filter struct {
	def, cfg  *limiter
	cb        httpfilter.Callbacks
	req, resp stream
}

// config is the route's BandwidthLimit, else the filter's.
func (f *filter) config() *limiter {
	if f.cfg == nil {
		f.cfg = f.def
		if pr, ok := f.cb.PerRouteConfig().(*limiter); ok {
			f.cfg = pr
		}
	}
	return f.cfg
}

// DecodeHeaders starts limiting the request body.
func (f *filter) DecodeHeaders(_ *headers.Request, _ bool) httpfilter.Status {
	l := f.config()
	if l.enabled.Enabled() && l.mode&bwv3.BandwidthLimit_REQUEST != 0 {
		l.req.enabled.Inc()
		f.req.on = true
	}
	return httpfilter.Continue
}

// DecodeData passes the request body at the limit.
func (f *filter) DecodeData(b *httpfilter.Buffer, endStream bool) httpfilter.Status {
	if f.req.on {
		f.pace(&f.req, &f.cfg.req, b.Len(), endStream)
	}
	return httpfilter.Continue
}

// EncodeHeaders starts limiting the response body.
func (f *filter) EncodeHeaders(_ *headers.Response, _ bool) httpfilter.Status {
	l := f.config()
	if l.enabled.Enabled() && l.mode&bwv3.BandwidthLimit_RESPONSE != 0 {
		l.resp.enabled.Inc()
		f.resp.on = true
	}
	return httpfilter.Continue
}

// EncodeData passes the response body at the limit.
func (f *filter) EncodeData(b *httpfilter.Buffer, endStream bool) httpfilter.Status {
	if f.resp.on {
		f.pace(&f.resp, &f.cfg.resp, b.Len(), endStream)
	}
	return httpfilter.Continue
}

// OnDestroy ends a transfer the stream did not finish.
func (f *filter) OnDestroy() {
	if f.cfg == nil {
		return
	}
	f.finish(&f.req, &f.cfg.req)
	f.finish(&f.resp, &f.cfg.resp)
}

func (f *filter) finish(s *stream, d *direction) {
	if s.started.IsZero() {
		return
	}
	d.duration.Record(float64(time.Since(s.started).Milliseconds()))
	d.pending.Dec()
	s.started = time.Time{}
}

// pace waits until the bucket gave n bytes of tokens, taking what it has
// every fill_interval, as Envoy's StreamRateLimiter::onTokenTimer.
func (f *filter) pace(s *stream, d *direction, n int, end bool) {
	if s.started.IsZero() && (n > 0 || end) {
		s.started = time.Now()
		d.pending.Inc()
	}
	d.incoming.Set(int64(n))
	d.incomingTotal.Add(uint64(n))
	left := uint64(n)
	l := f.cfg
	// Without limit_kbps (a filter-level config that leaves the limit to
	// routes) Envoy's bucket holds no token and the body would never
	// pass; Legate lets it through instead of stalling the stream.
	for l.bucket.max > 0 {
		got := l.bucket.consume(left)
		left -= got
		d.allowed.Set(int64(got))
		d.allowedTotal.Add(got)
		if left == 0 {
			break
		}
		d.enforced.Inc()
		time.Sleep(l.fillInterval)
	}
	if end {
		f.finish(s, d)
	}
}

// bucket is Envoy's TokenBucketImpl (shared): max tokens, refilled
// continuously at rate per second; a partial consume takes what there is.
type bucket struct {
	mu                sync.Mutex
	max, rate, tokens float64
	last              time.Time
}

func (b *bucket) consume(n uint64) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = math.Min(b.max, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	got := math.Min(float64(n), math.Floor(b.tokens))
	if got < 0 {
		got = 0
	}
	b.tokens -= got
	return uint64(got)
}
