// Local rate limiting: envoy.filters.http.local_ratelimit.

package features_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestLocalRateLimit: envoy.filters.http.local_ratelimit — a token bucket
// of 2 answers the third request with 429 local_rate_limited (flag RL)
// and response_headers_to_add, counts ok/rate_limited/enforced, refills,
// and per-connection buckets are independent.
func TestLocalRateLimit(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	filter := func(perConn bool) string {
		return fmt.Sprintf(`http_filters: [{name: envoy.filters.http.local_ratelimit, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: rl, token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 0.5s}, filter_enabled: {runtime_key: rl_enabled, default_value: {numerator: 100, denominator: HUNDRED}}, filter_enforced: {runtime_key: rl_enforced, default_value: {numerator: 100, denominator: HUNDRED}}, response_headers_to_add: [{append_action: OVERWRITE_IF_EXISTS_OR_ADD, header: {key: x-local-rate-limit, value: 'true'}}], local_rate_limit_per_downstream_connection: %v}}, {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`, perConn)
	}
	p := start(t, cfg{
		hcm:      filter(false),
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()
	var codes []int
	var limited http.Header
	for i := 0; i < 3; i++ {
		code, h, body := testutil.Get(t, c, p.URL("http", "/"))
		codes = append(codes, code)
		if code == 429 {
			limited = h
			if body != "local_rate_limited" {
				t.Errorf("429 body %q", body)
			}
		}
	}
	if fmt.Sprint(codes) != "[200 200 429]" || limited.Get("x-local-rate-limit") != "true" {
		t.Fatalf("codes %v, limited headers %v", codes, limited)
	}
	for name, want := range map[string]int64{"rl.http_local_rate_limit.ok": 2, "rl.http_local_rate_limit.rate_limited": 1, "rl.http_local_rate_limit.enforced": 1, "rl.http_local_rate_limit.enabled": 3} {
		if got := p.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	testutil.Eventually(t, 3*time.Second, func() bool {
		code, _, _ := testutil.Get(t, c, p.URL("http", "/"))
		return code == 200
	}, "the bucket never refilled")

	// Per downstream connection: a new connection has its own bucket.
	pc := start(t, cfg{
		hcm:      filter(true),
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c1 := testutil.Client()
	codes = nil
	for i := 0; i < 3; i++ {
		code, _, _ := testutil.Get(t, c1, pc.URL("http", "/"))
		codes = append(codes, code)
	}
	if code, _, _ := testutil.Get(t, testutil.Client(), pc.URL("http", "/")); fmt.Sprint(codes) != "[200 200 429]" || code != 200 {
		t.Errorf("per-connection buckets: first connection %v, a second connection %d", codes, code)
	}
}
