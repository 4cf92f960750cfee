// Body bandwidth limits: envoy.filters.http.bandwidth_limit.

package features_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestBandwidthLimit: envoy.filters.http.bandwidth_limit — at 1 KiB/s a
// 2 KiB response body takes about a second (the bucket starts with one
// second of bytes) and arrives whole; a route's config with a higher
// limit is fast, one limiting requests slows a 2 KiB upload;
// the <stat_prefix>.http_bandwidth_limit.* stats count.
func TestBandwidthLimit(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", 128) // 2 KiB
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(body))
	}))
	p := start(t, cfg{
		hcm: `http_filters: [{name: envoy.filters.http.bandwidth_limit, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.bandwidth_limit.v3.BandwidthLimit, stat_prefix: bw, enable_mode: REQUEST_AND_RESPONSE, limit_kbps: 1, fill_interval: 0.02s}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts: vhost(
			`{match: {prefix: /upload}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.bandwidth_limit: {"@type": type.googleapis.com/envoy.extensions.filters.http.bandwidth_limit.v3.BandwidthLimit, stat_prefix: upl, enable_mode: REQUEST, limit_kbps: 1}}}`,
			`{match: {prefix: /fast}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.bandwidth_limit: {"@type": type.googleapis.com/envoy.extensions.filters.http.bandwidth_limit.v3.BandwidthLimit, stat_prefix: fast, enable_mode: RESPONSE, limit_kbps: 10000}}}`,
			"{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()

	t0 := time.Now()
	code, _, got := testutil.Get(t, c, p.URL("http", "/slow"))
	slow := time.Since(t0)
	if code != 200 || got != body {
		t.Fatalf("slow: %d, %d bytes", code, len(got))
	}
	if slow < 800*time.Millisecond || slow > 5*time.Second {
		t.Errorf("2 KiB at 1 KiB/s took %v, want about 1s", slow)
	}

	t0 = time.Now()
	code, _, got = testutil.Get(t, c, p.URL("http", "/fast"))
	if fast := time.Since(t0); code != 200 || got != body || fast > 500*time.Millisecond {
		t.Errorf("fast route: %d, %d bytes in %v", code, len(got), fast)
	}

	for name, want := range map[string]int64{
		"bw.http_bandwidth_limit.response_enabled": 1, "bw.http_bandwidth_limit.request_enabled": 1,
		"bw.http_bandwidth_limit.response_allowed_total_size": 2048, "bw.http_bandwidth_limit.response_incoming_total_size": 2048,
		"bw.http_bandwidth_limit.response_pending":   0,
		"fast.http_bandwidth_limit.response_enabled": 1, "fast.http_bandwidth_limit.request_enabled": 0,
		"fast.http_bandwidth_limit.response_enforced": 0,
	} {
		if got := p.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	if n := p.Stat(t, "bw.http_bandwidth_limit.response_enforced"); n < 1 {
		t.Errorf("response_enforced = %d, want the body held at least once", n)
	}

	// The request side (a route limiting uploads only, with its own
	// bucket): a 2 KiB upload takes about a second.
	t0 = time.Now()
	if code, _, _ := testutil.Do(t, c, "POST", p.URL("http", "/upload"), body); code != 200 {
		t.Fatalf("upload: %d", code)
	}
	if up := time.Since(t0); up < 800*time.Millisecond || up > 5*time.Second {
		t.Errorf("a 2 KiB upload at 1 KiB/s took %v, want about 1s", up)
	}
	for name, want := range map[string]int64{
		"upl.http_bandwidth_limit.request_allowed_total_size": 2048, "upl.http_bandwidth_limit.request_enabled": 1,
		"upl.http_bandwidth_limit.response_enabled": 0, "upl.http_bandwidth_limit.request_pending": 0,
	} {
		if got := p.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}
