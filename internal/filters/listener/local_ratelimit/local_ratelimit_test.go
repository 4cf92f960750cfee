package local_ratelimit

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/stats"
)

func TestBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := &bucket{tokens: 2, max: 2, perFill: 1, interval: time.Second, last: t0}
	steps := []struct {
		at   time.Duration
		want bool
	}{
		{0, true}, {100 * time.Millisecond, true}, {200 * time.Millisecond, false}, // starts full, then empty
		{999 * time.Millisecond, false},           // no refill before a whole interval
		{time.Second, true}, {time.Second, false}, // one token per fill
		{10 * time.Second, true}, {10 * time.Second, true}, {10 * time.Second, false}, // capped at max_tokens
	}
	for i, s := range steps {
		if got := b.take(t0.Add(s.at)); got != s.want {
			t.Fatalf("step %d at %v: %v; want %v", i, s.at, got, s.want)
		}
	}
}

func cfg(max uint32, fill time.Duration) *lrlv3.LocalRateLimit {
	return &lrlv3.LocalRateLimit{StatPrefix: "p", TokenBucket: &typev3.TokenBucket{MaxTokens: max, TokensPerFill: wrapperspb.UInt32(1), FillInterval: durationpb.New(fill)}}
}

func TestAccept(t *testing.T) {
	st := stats.NewStore()
	af, err := compile(&listener.Context{Stats: st}, cfg(1, time.Hour), 0, "lf")
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	if err := af.Accept(&listener.Conn{Conn: c1}); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	if err := af.Accept(&listener.Conn{Conn: c1}); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("second connection: %v", err)
	}
	if v, _ := st.Value("listener_local_ratelimit.p.rate_limited"); v != 1 {
		t.Fatalf("rate_limited = %d", v)
	}

	off := cfg(1, time.Hour)
	off.RuntimeEnabled = &corev3.RuntimeFeatureFlag{DefaultValue: wrapperspb.Bool(false), RuntimeKey: "k"}
	af, err = compile(&listener.Context{Stats: st}, off, 0, "lf")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := af.Accept(&listener.Conn{Conn: c1}); err != nil {
			t.Fatalf("disabled filter refused connection %d: %v", i, err)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  *lrlv3.LocalRateLimit
		want string
	}{
		{cfg(1, 10*time.Millisecond), "lf.token_bucket.fill_interval"},
		{cfg(0, time.Second), "lf.token_bucket.max_tokens"},
		{&lrlv3.LocalRateLimit{StatPrefix: "p"}, "lf.token_bucket"},
		{&lrlv3.LocalRateLimit{TokenBucket: cfg(1, time.Second).TokenBucket}, "lf.stat_prefix"},
	} {
		if _, err := compile(&listener.Context{Stats: stats.NewStore()}, c.cfg, 0, "lf"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v; want an error at %s", c.cfg, err, c.want)
		}
	}
}
