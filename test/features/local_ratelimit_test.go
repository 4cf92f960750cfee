// Local rate limiting: envoy.filters.http.local_ratelimit.

package features_test

import (
	"fmt"
	"net/http"
	"strings"
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

// TestLocalRateLimitDescriptors: descriptors of the route's rate_limits
// actions select per-descriptor token buckets (Envoy's
// LocalRateLimiterImpl): the client foo has a bucket of 1, others use the
// default bucket of 3; the x-ratelimit-* headers report the bucket that
// decided; a rate limit entry of another stage makes no descriptor; with
// always_consume_default_token_bucket false a matched descriptor spares
// the default bucket; the filter's own rate_limits replace the route's.
func TestLocalRateLimitDescriptors(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	const enabled = `filter_enabled: {runtime_key: e, default_value: {numerator: 100}}, filter_enforced: {runtime_key: f, default_value: {numerator: 100}}`
	filter := func() string {
		return `http_filters: [{name: envoy.filters.http.local_ratelimit, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: rl}}, {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`
	}
	perRoute := func(extra string) string {
		return `typed_per_filter_config: {envoy.filters.http.local_ratelimit: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: route_rl, ` + enabled + `,
			token_bucket: {max_tokens: 3, tokens_per_fill: 3, fill_interval: 60s}, enable_x_ratelimit_headers: DRAFT_VERSION_03,
			response_headers_to_add: [{append_action: OVERWRITE_IF_EXISTS_OR_ADD, header: {key: x-test-rate-limit, value: 'true'}}],
			descriptors: [{entries: [{key: client_cluster, value: foo}, {key: path, value: /foo/bar}], token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s}},
			              {entries: [{key: client_cluster, value: foo}, {key: path, value: /foo/bar2}], token_bucket: {max_tokens: 100, tokens_per_fill: 100, fill_interval: 60s}},
			              {entries: [{key: generic_key, value: other-stage}], token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s}}]` + extra + `}}`
	}
	actions := `rate_limits: [{actions: [{request_headers: {header_name: x-client, descriptor_key: client_cluster}}, {request_headers: {header_name: ":path", descriptor_key: path}}]},
		{stage: 1, actions: [{generic_key: {descriptor_value: other-stage}}]}]`
	p := start(t, cfg{
		hcm: filter(),
		vhosts: vhost(
			`{match: {prefix: /foo}, route: {cluster: up, `+actions+`}, `+perRoute("")+`}`,
			`{match: {prefix: /spare}, route: {cluster: up, rate_limits: [{actions: [{request_headers: {header_name: x-client, descriptor_key: client_cluster}}]}]}, `+
				`typed_per_filter_config: {envoy.filters.http.local_ratelimit: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: spare, `+enabled+`,
				token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s}, always_consume_default_token_bucket: false,
				descriptors: [{entries: [{key: client_cluster, value: foo}], token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 60s}}]}}}`,
			`{match: {prefix: /own}, route: {cluster: up, rate_limits: [{actions: [{generic_key: {descriptor_value: route-level}}]}]}, `+
				`typed_per_filter_config: {envoy.filters.http.local_ratelimit: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: own, `+enabled+`,
				token_bucket: {max_tokens: 5, tokens_per_fill: 5, fill_interval: 60s},
				rate_limits: [{actions: [{request_headers: {header_name: x-user, descriptor_key: user}}]}],
				descriptors: [{entries: [{key: user, value: alice}], token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s}},
				              {entries: [{key: generic_key, value: route-level}], token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s}}]}}}`),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()

	// foo on /foo/bar: its descriptor's bucket of 1 decides.
	code, h, _ := testutil.Get(t, c, p.URL("http", "/foo/bar"), "x-client", "foo")
	if code != 200 || h.Get("x-ratelimit-limit") != "1" || h.Get("x-ratelimit-remaining") != "0" || h.Get("x-ratelimit-reset") == "" {
		t.Fatalf("first foo request: %d, x-ratelimit %q %q %q", code, h.Get("x-ratelimit-limit"), h.Get("x-ratelimit-remaining"), h.Get("x-ratelimit-reset"))
	}
	code, h, body := testutil.Get(t, c, p.URL("http", "/foo/bar"), "x-client", "foo")
	if code != 429 || body != "local_rate_limited" || h.Get("x-test-rate-limit") != "true" || h.Get("x-ratelimit-limit") != "1" {
		t.Fatalf("second foo request: %d %q, headers %v", code, body, h)
	}
	// bar matches no descriptor: the default bucket (3, one taken by the
	// first foo request as always_consume_default_token_bucket is true).
	var codes []int
	for i := 0; i < 3; i++ {
		code, h, _ := testutil.Get(t, c, p.URL("http", "/foo/bar"), "x-client", "bar")
		codes = append(codes, code)
		if i == 0 && h.Get("x-ratelimit-limit") != "3" {
			t.Errorf("default bucket x-ratelimit-limit %q, want 3", h.Get("x-ratelimit-limit"))
		}
	}
	if fmt.Sprint(codes) != "[200 200 429]" {
		t.Errorf("requests on the default bucket: %v, want [200 200 429]", codes)
	}
	if got := p.Stat(t, "route_rl.http_local_rate_limit.rate_limited"); got != 2 {
		t.Errorf("route_rl rate_limited = %d, want 2", got)
	}

	// always_consume_default_token_bucket false: foo's bucket of 2 serves
	// two requests though the default bucket holds 1.
	codes = nil
	for i := 0; i < 3; i++ {
		code, _, _ := testutil.Get(t, c, p.URL("http", "/spare"), "x-client", "foo")
		codes = append(codes, code)
	}
	if fmt.Sprint(codes) != "[200 200 429]" {
		t.Errorf("spared default bucket: %v, want [200 200 429]", codes)
	}

	// The filter's rate_limits replace the route's: the route's
	// generic_key descriptor (a bucket of 1) is never made.
	codes = nil
	for i := 0; i < 3; i++ {
		code, _, _ := testutil.Get(t, c, p.URL("http", "/own"), "x-user", "bob")
		codes = append(codes, code)
	}
	code, _, _ = testutil.Get(t, c, p.URL("http", "/own"), "x-user", "alice")
	code2, _, _ := testutil.Get(t, c, p.URL("http", "/own"), "x-user", "alice")
	if fmt.Sprint(codes) != "[200 200 200]" || code != 200 || code2 != 429 {
		t.Errorf("own rate_limits: bob %v, alice %d then %d; want all 200, then 200 and 429", codes, code, code2)
	}
}

// TestLocalRateLimitDescriptorsRefused: what Legate does not implement is
// an error naming its field.
func TestLocalRateLimitDescriptorsRefused(t *testing.T) {
	_, err := testutil.TryStartProxy(t, cfg{
		hcm: `http_filters: [{name: envoy.filters.http.local_ratelimit, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: rl,
			token_bucket: {max_tokens: 3, fill_interval: 1s}, descriptors: [{entries: [{key: user}], token_bucket: {max_tokens: 1, fill_interval: 1s}}]}},
			{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts:   vhost("{match: {prefix: /}, direct_response: {status: 200}}"),
		clusters: "[]",
	}.String(), nil)
	if err == nil || !strings.Contains(err.Error(), "descriptors[0].entries[0].value") {
		t.Fatalf("error %v, want one at descriptors[0].entries[0].value", err)
	}
}
