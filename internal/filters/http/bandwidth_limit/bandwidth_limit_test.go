package bandwidth_limit

import (
	"strings"
	"testing"
	"time"

	bwv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/bandwidth_limit/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
)

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		js       string
		perRoute bool
		err      string
	}{
		{`{"stat_prefix": "s", "enable_mode": "REQUEST"}`, true, "r.limit_kbps: bandwidthlimitfilter: limit must be set for per route filter config"},
		{`{"stat_prefix": "s", "limit_kbps": 1, "enable_response_trailers": true}`, false, "r.enable_response_trailers"},
	} {
		var c bwv3.BandwidthLimit
		if err := protojson.Unmarshal([]byte(tc.js), &c); err != nil {
			t.Fatal(err)
		}
		_, err := build(&httpfilter.Context{Stats: stats.NewStore()}, &c, "r", tc.perRoute)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want %q", tc.js, err, tc.err)
		}
	}
}

func TestBucket(t *testing.T) {
	b := &bucket{max: 1000, rate: 1000, tokens: 1000, last: time.Now()}
	if got := b.consume(600); got != 600 {
		t.Errorf("first consume %d, want 600", got)
	}
	if got := b.consume(600); got < 400 || got > 410 {
		t.Errorf("partial consume %d, want the ~400 left", got)
	}
	time.Sleep(100 * time.Millisecond)
	if got := b.consume(1000); got < 90 || got > 200 {
		t.Errorf("after 100ms at 1000/s: %d tokens, want ~100", got)
	}
	b.last = time.Now().Add(-time.Hour)
	if got := b.consume(5000); got != 1000 {
		t.Errorf("a long wait refills to the max only: %d", got)
	}
}
