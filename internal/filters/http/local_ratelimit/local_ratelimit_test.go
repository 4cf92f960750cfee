package local_ratelimit

import (
	"strings"
	"testing"
	"time"

	rlcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/stats"
)

func tb(max uint32, interval time.Duration) *typev3.TokenBucket {
	return &typev3.TokenBucket{MaxTokens: max, TokensPerFill: wrapperspb.UInt32(max), FillInterval: durationpb.New(interval)}
}

func desc(max uint32, interval time.Duration, kv ...string) *rlcommonv3.LocalRateLimitDescriptor {
	d := &rlcommonv3.LocalRateLimitDescriptor{TokenBucket: tb(max, interval)}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &rlcommonv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

func ctx() *httpfilter.Context { return &httpfilter.Context{Stats: stats.NewStore()} }

// TestCompileErrors: what Envoy refuses, and what Legate does not
// implement, is an error at its path.
func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  *localrlv3.LocalRateLimit
		want string
	}{
		{"descriptors without a bucket", &localrlv3.LocalRateLimit{StatPrefix: "x", Descriptors: []*rlcommonv3.LocalRateLimitDescriptor{desc(1, time.Second, "k", "v")}}, "descriptors need the filter's token_bucket"},
		{"not a multiple", &localrlv3.LocalRateLimit{StatPrefix: "x", TokenBucket: tb(1, time.Second), Descriptors: []*rlcommonv3.LocalRateLimitDescriptor{desc(1, 1500*time.Millisecond, "k", "v")}}, "not a multiple of token bucket fill timer"},
		{"duplicate", &localrlv3.LocalRateLimit{StatPrefix: "x", TokenBucket: tb(1, time.Second), Descriptors: []*rlcommonv3.LocalRateLimitDescriptor{desc(1, time.Second, "k", "v"), desc(2, time.Second, "k", "v")}}, "duplicate descriptor"},
		{"dynamic", &localrlv3.LocalRateLimit{StatPrefix: "x", TokenBucket: tb(1, time.Second), Descriptors: []*rlcommonv3.LocalRateLimitDescriptor{desc(1, time.Second, "k", "")}}, "descriptors[0].entries[0].value: dynamic descriptors"},
		{"stage", &localrlv3.LocalRateLimit{StatPrefix: "x", Stage: 11}, "stage 11 is over the maximum 10"},
		{"retry-after", &localrlv3.LocalRateLimit{StatPrefix: "x", EnableRetryAfterHeader: true}, "enable_retry_after_header"},
		{"cluster share", &localrlv3.LocalRateLimit{StatPrefix: "x", LocalClusterRateLimit: &rlcommonv3.LocalClusterRateLimit{}}, "local_cluster_rate_limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := build(ctx(), tc.cfg, "f")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func reqDesc(kv ...string) route.Descriptor {
	var d route.Descriptor
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, route.DescriptorEntry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

// TestAllow: Envoy's requestAllowed — matched descriptors take a token,
// the slowest first; the default bucket takes one when nothing matched or
// always_consume_default_token_bucket (the default) is true.
func TestAllow(t *testing.T) {
	for _, tc := range []struct {
		name          string
		def           uint32
		alwaysDefault *bool
		descs         []*rlcommonv3.LocalRateLimitDescriptor
		req           []route.Descriptor
		want          string // one letter per request: y allowed, n limited
		wantMax       int64  // x-ratelimit-limit of the last request
	}{
		{"no descriptors: default bucket", 2, nil, nil, nil, "yyn", 2},
		{"unmatched descriptors: default bucket", 2, nil, []*rlcommonv3.LocalRateLimitDescriptor{desc(1, time.Minute, "k", "v")},
			[]route.Descriptor{reqDesc("k", "other")}, "yyn", 2},
		{"matched descriptor limits first", 5, nil, []*rlcommonv3.LocalRateLimitDescriptor{desc(1, time.Minute, "k", "v")},
			[]route.Descriptor{reqDesc("k", "v")}, "yn", 1},
		{"default bucket still consumed", 1, nil, []*rlcommonv3.LocalRateLimitDescriptor{desc(5, time.Minute, "k", "v")},
			[]route.Descriptor{reqDesc("k", "v")}, "yn", 1},
		{"default bucket not consumed", 1, boolp(false), []*rlcommonv3.LocalRateLimitDescriptor{desc(3, time.Minute, "k", "v")},
			[]route.Descriptor{reqDesc("k", "v")}, "yyyn", 3},
		{"entries must match in full", 1, boolp(false), []*rlcommonv3.LocalRateLimitDescriptor{desc(3, time.Minute, "a", "1", "b", "2")},
			[]route.Descriptor{reqDesc("a", "1")}, "yn", 1},
		{"most restrictive of two matched", 10, boolp(false), []*rlcommonv3.LocalRateLimitDescriptor{
			desc(5, time.Minute, "a", "1"), desc(2, time.Minute, "b", "2")},
			[]route.Descriptor{reqDesc("a", "1"), reqDesc("b", "2")}, "yyn", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &localrlv3.LocalRateLimit{StatPrefix: "x", TokenBucket: tb(tc.def, time.Minute), Descriptors: tc.descs}
			if tc.alwaysDefault != nil {
				cfg.AlwaysConsumeDefaultTokenBucket = wrapperspb.Bool(*tc.alwaysDefault)
			}
			l, err := build(ctx(), cfg, "f")
			if err != nil {
				t.Fatal(err)
			}
			var got string
			var f *filter
			for range tc.want {
				f = &filter{}
				if l.allow(l.buckets, tc.req, f) {
					got += "y"
				} else {
					got += "n"
				}
			}
			if got != tc.want || f.decidedTB.maxTokens != tc.wantMax {
				t.Errorf("got %s (deciding bucket of %d), want %s (%d)", got, f.decidedTB.maxTokens, tc.want, tc.wantMax)
			}
		})
	}
}

func boolp(b bool) *bool { return &b }

// TestBucketState: remaining tokens and the seconds to the next fill.
func TestBucketState(t *testing.T) {
	b := newBucket(3)
	tbk := newTokenBucket(3, 3, 10*time.Second)
	b.take(tbk)
	rem, reset := b.state(tbk)
	if rem != 2 || reset < 9 || reset > 10 {
		t.Errorf("remaining %d reset %d, want 2 and about 10", rem, reset)
	}
}
