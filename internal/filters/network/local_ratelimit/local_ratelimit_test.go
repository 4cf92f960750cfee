package local_ratelimit

import (
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/local_ratelimit/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/stats"
)

func compileYAML(t *testing.T, y string) (*filterConfig, *stats.Store, error) {
	t.Helper()
	c := &localrlv3.LocalRateLimit{}
	if _, err := config.Decode([]byte(y), c, "rl"); err != nil {
		t.Fatal(err)
	}
	st := stats.NewStore()
	f, err := compile(&listener.Context{Stats: st, Log: slog.Default()}, c, "rl")
	return f, st, err
}

func TestConfig(t *testing.T) {
	for _, c := range []struct{ cfg, errPath string }{
		{`{stat_prefix: x, token_bucket: {max_tokens: 1, fill_interval: 1s}}`, ""},
		{`{stat_prefix: x, token_bucket: {max_tokens: 1, fill_interval: 0.049s}}`, "rl.token_bucket.fill_interval"},
		{`{stat_prefix: x}`, "rl.token_bucket"},
		{`{token_bucket: {max_tokens: 1, fill_interval: 1s}}`, "rl.stat_prefix"},
	} {
		_, _, err := compileYAML(t, c.cfg)
		switch {
		case c.errPath == "" && err != nil:
			t.Errorf("%s: %v", c.cfg, err)
		case c.errPath != "" && (err == nil || !strings.Contains(err.Error(), c.errPath)):
			t.Errorf("%s: error %v, want one naming %s", c.cfg, err, c.errPath)
		}
	}
}

func TestBucket(t *testing.T) {
	f, st, err := compileYAML(t, `{stat_prefix: x, token_bucket: {max_tokens: 2, tokens_per_fill: 1, fill_interval: 0.1s}}`)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := f.OnNewConnection(&listener.Conn{}); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	if err := f.OnNewConnection(&listener.Conn{}); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("third connection: %v", err)
	}
	if v, _ := st.Value("local_rate_limit.x.rate_limited"); v != 1 {
		t.Errorf("local_rate_limit.x.rate_limited = %d", v)
	}
	time.Sleep(120 * time.Millisecond)
	if err := f.OnNewConnection(&listener.Conn{}); err != nil {
		t.Fatalf("after a refill: %v", err)
	}
	if err := f.OnNewConnection(&listener.Conn{}); err == nil {
		t.Fatal("one refill gave two tokens")
	}
}

func TestShareKey(t *testing.T) {
	a, _, _ := compileYAML(t, `{stat_prefix: a, share_key: k1, token_bucket: {max_tokens: 1, fill_interval: 60s}}`)
	b, _, _ := compileYAML(t, `{stat_prefix: b, share_key: k1, token_bucket: {max_tokens: 1, fill_interval: 60s}}`)
	c, _, _ := compileYAML(t, `{stat_prefix: c, share_key: k1, token_bucket: {max_tokens: 1, fill_interval: 30s}}`)
	d, _, _ := compileYAML(t, `{stat_prefix: d, token_bucket: {max_tokens: 1, fill_interval: 60s}}`)
	e, _, _ := compileYAML(t, `{stat_prefix: e, token_bucket: {max_tokens: 1, fill_interval: 60s}}`)
	if a.bucket != b.bucket {
		t.Error("the same share_key and token_bucket did not share")
	}
	if a.bucket == c.bucket || d.bucket == e.bucket {
		t.Error("different buckets, or no share_key, shared")
	}
	// Once no config holds it, the bucket goes: a new config starts full.
	a.bucket.take()
	a, b = nil, nil
	runtime.GC()
	runtime.GC()
	n, _, _ := compileYAML(t, `{stat_prefix: n, share_key: k1, token_bucket: {max_tokens: 1, fill_interval: 60s}}`)
	if !n.bucket.take() {
		t.Error("a new config got the drained bucket of configs that are gone")
	}
}
