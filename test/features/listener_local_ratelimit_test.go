// Listener local rate limit: envoy.filters.listener.local_ratelimit admits
// new connections from a token bucket and closes the rest before reading
// a byte.

package features_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// lrlFilter renders the listener filter with a token bucket and extra
// fields.
func lrlFilter(maxTokens int, fill, extra string) string {
	return fmt.Sprintf(`{name: envoy.filters.listener.local_ratelimit, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.local_ratelimit.v3.LocalRateLimit,
	  stat_prefix: lrl, token_bucket: {max_tokens: %d, tokens_per_fill: 1, fill_interval: %s}%s}}`, maxTokens, fill, extra)
}

const lrlRequest = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

// TestListenerLocalRateLimit: two tokens admit two connections; the third
// is closed unanswered and counted in listener_local_ratelimit.lrl.
// rate_limited; a refill admits again.
func TestListenerLocalRateLimit(t *testing.T) {
	p := testutil.StartProxy(t, ppBootstrap(lrlFilter(2, "2s", ""), "    stat_prefix: limited\n", directChain("", "served"), ""), nil)
	for i := 0; i < 2; i++ {
		if resp := ppSend(t, p.Addr("pp"), []byte(lrlRequest)); !strings.HasSuffix(resp, "served") {
			t.Fatalf("connection %d within the bucket: %q", i, resp)
		}
	}
	if resp := ppSend(t, p.Addr("pp"), []byte(lrlRequest)); resp != "" {
		t.Fatalf("connection over the limit answered %q; want it closed", resp)
	}
	if n := p.Stat(t, "listener_local_ratelimit.lrl.rate_limited"); n != 1 {
		t.Fatalf("listener_local_ratelimit.lrl.rate_limited = %d; want 1", n)
	}
	// The listener still counts the refused connection as accepted, as
	// Envoy (the filter runs on an accepted socket).
	if n := p.Stat(t, "listener.limited.downstream_cx_total"); n != 3 {
		t.Fatalf("downstream_cx_total = %d; want 3", n)
	}
	time.Sleep(2100 * time.Millisecond) // one fill: one token
	if resp := ppSend(t, p.Addr("pp"), []byte(lrlRequest)); !strings.HasSuffix(resp, "served") {
		t.Fatalf("after a refill: %q", resp)
	}
	if resp := ppSend(t, p.Addr("pp"), []byte(lrlRequest)); resp != "" {
		t.Fatalf("the refill added more than tokens_per_fill: %q", resp)
	}
	if n := p.Stat(t, "listener_local_ratelimit.lrl.rate_limited"); n != 2 {
		t.Fatalf("rate_limited = %d; want 2", n)
	}
}

// TestListenerLocalRateLimitRuntimeDisabled: runtime_enabled off admits
// every connection and counts nothing.
func TestListenerLocalRateLimitRuntimeDisabled(t *testing.T) {
	p := testutil.StartProxy(t, ppBootstrap(lrlFilter(1, "60s", ", runtime_enabled: {default_value: false, runtime_key: lrl.enabled}"), "", directChain("", "served"), ""), nil)
	for i := 0; i < 3; i++ {
		if resp := ppSend(t, p.Addr("pp"), []byte(lrlRequest)); !strings.HasSuffix(resp, "served") {
			t.Fatalf("connection %d with the filter disabled: %q", i, resp)
		}
	}
	if n := p.Stat(t, "listener_local_ratelimit.lrl.rate_limited"); n > 0 {
		t.Fatalf("rate_limited = %d with the filter disabled", n)
	}
}

// TestListenerLocalRateLimitConfig: Envoy's refusals.
func TestListenerLocalRateLimitConfig(t *testing.T) {
	for _, c := range []struct{ filter, want string }{
		{lrlFilter(1, "0.01s", ""), "fill_interval"},
		{lrlFilter(0, "1s", ""), "max_tokens"},
	} {
		if _, err := testutil.TryStartProxy(t, ppBootstrap(c.filter, "", directChain("", "x"), ""), nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error at %s", c.filter, err, c.want)
		}
	}
}
