// Package local_ratelimit is envoy.filters.network.local_ratelimit: a
// token bucket of connections per filter config (or shared between the
// configs with the same share_key and token_bucket); a connection that
// finds it empty is closed at once and counted in Envoy's
// local_rate_limit.<stat_prefix>.rate_limited. A runtime_enabled flag can
// switch it off.
package local_ratelimit

import (
	"errors"
	"sync"
	"time"
	"weak"

	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/local_ratelimit/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.filters.network.local_ratelimit", Category: extension.NetworkFilter,
		Config: &localrlv3.LocalRateLimit{},
		Factory: listener.ConnFilterFactory(func(ctx *listener.Context, cfg proto.Message, _ listener.ChainOptions, path string) (listener.ConnFilter, error) {
			return compile(ctx, cfg.(*localrlv3.LocalRateLimit), path)
		})})
}

// ErrRateLimited is why a connection was closed (Envoy's
// "local_ratelimit_close_over_limit").
var ErrRateLimited = errors.New("local_ratelimit: local_ratelimit_close_over_limit")

// filterConfig is a compiled network local rate limit.
type filterConfig struct {
	bucket  *bucket
	enabled runtime.FeatureFlag
	limited *stats.Counter
}

func compile(ctx *listener.Context, c *localrlv3.LocalRateLimit, path string) (*filterConfig, error) {
	if err := config.CheckFields(c, path, "stat_prefix", "token_bucket", "runtime_enabled", "share_key"); err != nil {
		return nil, err
	}
	if c.GetStatPrefix() == "" {
		return nil, config.Errorf(config.Join(path, "stat_prefix"), "stat_prefix is required")
	}
	tb := c.GetTokenBucket()
	if tb == nil {
		return nil, config.Errorf(config.Join(path, "token_bucket"), "token_bucket is required")
	}
	tbPath := config.Join(path, "token_bucket")
	if err := config.CheckFields(tb, tbPath, "max_tokens", "tokens_per_fill", "fill_interval"); err != nil {
		return nil, err
	}
	if tb.GetMaxTokens() == 0 {
		// The proto's rule (max_tokens > 0): an empty bucket that never
		// fills would refuse every connection.
		return nil, config.Errorf(config.Join(tbPath, "max_tokens"), "max_tokens must be greater than 0")
	}
	interval := tb.GetFillInterval().AsDuration()
	if interval < 50*time.Millisecond {
		return nil, config.Errorf(config.Join(tbPath, "fill_interval"), "local rate limit token bucket fill timer must be >= 50ms")
	}
	perFill := int64(1)
	if v := tb.GetTokensPerFill(); v != nil {
		perFill = int64(v.GetValue())
	}
	spec := bucketSpec{max: int64(tb.GetMaxTokens()), perFill: perFill, interval: interval}
	// Envoy: POOL_COUNTER_PREFIX(scope, "local_rate_limit." + stat_prefix),
	// joined with a dot. (Envoy's docs say local_ratelimit.; its code, and
	// so its stats, say local_rate_limit.)
	prefix := stats.JoinPrefix("local_rate_limit."+c.GetStatPrefix(), "")
	return &filterConfig{bucket: shared(c.GetShareKey(), spec), enabled: runtime.NewFeatureFlag(ctx.Runtime, c.GetRuntimeEnabled()),
		limited: ctx.Stats.Counter(prefix + "rate_limited")}, nil
}

// OnNewConnection takes a token for the connection, or closes it.
func (f *filterConfig) OnNewConnection(*listener.Conn) error {
	if !f.enabled.Enabled() {
		return nil
	}
	if f.bucket.take() {
		return nil
	}
	f.limited.Inc()
	return ErrRateLimited
}

// bucketSpec is a token bucket's configuration; with the share key it
// names a shared bucket (Envoy compares the whole token_bucket message).
type bucketSpec struct {
	max, perFill int64
	interval     time.Duration
}

type shareKey struct {
	key  string
	spec bucketSpec
}

// registry holds the shared buckets for as long as a filter config uses
// them, as Envoy's SharedRateLimitSingleton: a listener update that keeps
// the share_key keeps the bucket (the old config still holds it while the
// new one compiles); once no config holds it, it goes.
var registry = struct {
	sync.Mutex
	m map[shareKey]weak.Pointer[bucket]
}{m: map[shareKey]weak.Pointer[bucket]{}}

// shared returns the bucket for key and spec: a new one without a key.
func shared(key string, spec bucketSpec) *bucket {
	if key == "" {
		return newBucket(spec)
	}
	k := shareKey{key, spec}
	registry.Lock()
	defer registry.Unlock()
	if b := registry.m[k].Value(); b != nil {
		return b
	}
	for o, w := range registry.m {
		if w.Value() == nil {
			delete(registry.m, o)
		}
	}
	b := newBucket(spec)
	registry.m[k] = weak.Make(b)
	return b
}

// bucket refills tokens_per_fill every fill_interval up to max_tokens; it
// starts full.
type bucket struct {
	spec   bucketSpec
	mu     sync.Mutex
	tokens int64
	last   time.Time
}

func newBucket(s bucketSpec) *bucket { return &bucket{spec: s, tokens: s.max, last: time.Now()} }

func (b *bucket) take() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n := int64(time.Since(b.last) / b.spec.interval); n > 0 {
		b.tokens = min(b.spec.max, b.tokens+n*b.spec.perFill)
		b.last = b.last.Add(time.Duration(n) * b.spec.interval)
	}
	if b.tokens <= 0 {
		return false
	}
	b.tokens--
	return true
}
