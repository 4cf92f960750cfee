// Package local_ratelimit is envoy.filters.listener.local_ratelimit: a
// listener filter that admits new connections from a token bucket shared
// by the listener (each connection takes a token; the bucket refills
// tokens_per_fill every fill_interval, up to max_tokens, and starts full).
// A connection that finds the bucket empty is closed at once, before any
// byte is read, and counted in listener_local_ratelimit.<stat_prefix>.
// rate_limited. runtime_enabled turns the filter off.
package local_ratelimit

import (
	"errors"
	"sync"
	"time"

	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/local_ratelimit/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.filters.listener.local_ratelimit",
		Category: extension.ListenerFilter, Config: &lrlv3.LocalRateLimit{}, Factory: listener.AcceptFilterFactory(compile)})
}

// ErrRateLimited is the error a rate-limited connection is closed with.
var ErrRateLimited = errors.New("local_ratelimit: connection rate limited")

// filter is a compiled LocalRateLimit.
type filter struct {
	enabled runtime.FeatureFlag
	limited *stats.Counter
	bucket  *bucket
}

func compile(ctx *listener.Context, msg proto.Message, _ time.Duration, path string) (listener.AcceptFilter, error) {
	cfg := msg.(*lrlv3.LocalRateLimit)
	if err := config.CheckFields(cfg, path, "stat_prefix", "token_bucket", "runtime_enabled"); err != nil {
		return nil, err
	}
	if cfg.GetStatPrefix() == "" {
		return nil, config.Errorf(config.Join(path, "stat_prefix"), "stat_prefix is required")
	}
	tb := cfg.GetTokenBucket()
	tp := config.Join(path, "token_bucket")
	if tb == nil {
		return nil, config.Errorf(tp, "token_bucket is required")
	}
	if err := config.CheckFields(tb, tp, "max_tokens", "tokens_per_fill", "fill_interval"); err != nil {
		return nil, err
	}
	if tb.GetMaxTokens() == 0 {
		return nil, config.Errorf(config.Join(tp, "max_tokens"), "max_tokens must be greater than 0")
	}
	interval := tb.GetFillInterval().AsDuration()
	if tb.GetFillInterval() == nil || interval < 50*time.Millisecond {
		// Envoy's LocalRateLimiterImpl refuses a faster refill timer.
		return nil, config.Errorf(config.Join(tp, "fill_interval"), "local rate limit token bucket fill timer must be >= 50ms")
	}
	perFill := int64(1)
	if v := tb.GetTokensPerFill(); v != nil {
		perFill = int64(v.GetValue())
	}
	// As Envoy, the stat is rooted at the server's scope:
	// listener_local_ratelimit.<stat_prefix>.rate_limited.
	s := ctx.Stats.Scope("listener_local_ratelimit." + cfg.GetStatPrefix() + ".")
	return &filter{
		enabled: runtime.NewFeatureFlag(ctx.Runtime, cfg.GetRuntimeEnabled()),
		limited: s.Counter("rate_limited"),
		bucket:  &bucket{tokens: int64(tb.GetMaxTokens()), max: int64(tb.GetMaxTokens()), perFill: perFill, interval: interval, last: time.Now()},
	}, nil
}

// Accept takes a token or closes the connection.
func (f *filter) Accept(c *listener.Conn) error {
	if !f.enabled.Enabled() {
		return nil
	}
	if !f.bucket.take(time.Now()) {
		f.limited.Inc()
		return ErrRateLimited
	}
	return nil
}

// bucket is Envoy's local rate limiter's token bucket: it starts full and
// gains perFill tokens at every whole interval since the last refill, up
// to max.
type bucket struct {
	mu          sync.Mutex
	tokens, max int64
	perFill     int64
	interval    time.Duration
	last        time.Time
}

func (b *bucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n := int64(now.Sub(b.last) / b.interval); n > 0 {
		b.tokens = min(b.max, b.tokens+n*b.perFill)
		b.last = b.last.Add(time.Duration(n) * b.interval)
	}
	if b.tokens <= 0 {
		return false
	}
	b.tokens--
	return true
}
