// Network local rate limit: envoy.filters.network.local_ratelimit — a
// token bucket of connections per filter config or shared by share_key,
// refills, runtime_enabled and local_rate_limit.<stat_prefix>.rate_limited.

package features_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func netRateLimitFilter(fields string) string {
	return fmt.Sprintf(`{name: envoy.filters.network.local_ratelimit, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit, %s}}`, fields)
}

// rejectedAtOnce reports whether the proxy closes a new connection to addr
// without proxying a byte.
func rejectedAtOnce(t *testing.T, addr, data string) bool {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(data))
	got, closed := waitClosed(c)
	return closed && got == ""
}

func TestNetworkLocalRateLimit(t *testing.T) {
	up := startTCPEcho(t)
	bucket := func(max int, fill string) string {
		return fmt.Sprintf("token_bucket: {max_tokens: %d, tokens_per_fill: 1, fill_interval: %s}", max, fill)
	}
	listeners := netListener("rl", netRateLimitFilter("stat_prefix: rl, "+bucket(1, "3600s")), "up", "") +
		netListener("refill", netRateLimitFilter("stat_prefix: refill, "+bucket(1, "0.2s")), "up", "") +
		netListener("s1", netRateLimitFilter("stat_prefix: s1, share_key: k, "+bucket(1, "3600s")), "up", "") +
		netListener("s2", netRateLimitFilter("stat_prefix: s2, share_key: k, "+bucket(1, "3600s")), "up", "") +
		// Same key, another bucket: not shared (Envoy compares both).
		netListener("s3", netRateLimitFilter("stat_prefix: s3, share_key: k, "+bucket(2, "3600s")), "up", "") +
		netListener("off", netRateLimitFilter("stat_prefix: off, runtime_enabled: {default_value: false, runtime_key: rl.off}, "+bucket(1, "3600s")), "up", "")
	p := testutil.StartProxy(t, netBootstrap(listeners, "", up.Cluster("up")), nil)

	t.Run("one token", func(t *testing.T) {
		if got := tcpSend(t, p.Addr("rl"), "first"); got != "first" {
			t.Fatalf("first connection got %q", got)
		}
		if !rejectedAtOnce(t, p.Addr("rl"), "second") {
			t.Fatal("the second connection was not closed")
		}
		if v := p.Stat(t, "local_rate_limit.rl.rate_limited"); v != 1 {
			t.Errorf("local_rate_limit.rl.rate_limited = %d, want 1", v)
		}
		if strings.Contains(up.Received(), "second") {
			t.Error("a rate-limited connection reached the upstream")
		}
	})

	t.Run("refill", func(t *testing.T) {
		if got := tcpSend(t, p.Addr("refill"), "a"); got != "a" {
			t.Fatalf("got %q", got)
		}
		if !rejectedAtOnce(t, p.Addr("refill"), "b") {
			t.Fatal("the bucket did not run out")
		}
		time.Sleep(250 * time.Millisecond)
		if got := tcpSend(t, p.Addr("refill"), "c"); got != "c" {
			t.Fatalf("after a fill interval: got %q", got)
		}
	})

	t.Run("share_key", func(t *testing.T) {
		if got := tcpSend(t, p.Addr("s1"), "x"); got != "x" {
			t.Fatalf("s1: got %q", got)
		}
		if !rejectedAtOnce(t, p.Addr("s2"), "y") {
			t.Fatal("s2 did not share s1's bucket")
		}
		if got := tcpSend(t, p.Addr("s3"), "z"); got != "z" {
			t.Fatalf("s3 (another token_bucket) shared the bucket: got %q", got)
		}
		if v := p.Stat(t, "local_rate_limit.s2.rate_limited"); v != 1 {
			t.Errorf("local_rate_limit.s2.rate_limited = %d", v)
		}
	})

	t.Run("runtime disabled", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			if got := tcpSend(t, p.Addr("off"), "o"); got != "o" {
				t.Fatalf("disabled filter: connection %d got %q", i, got)
			}
		}
	})
}

func TestNetworkLocalRateLimitConfigErrors(t *testing.T) {
	up := startTCPEcho(t)
	_, err := testutil.TryStartProxy(t, netBootstrap(netListener("l",
		netRateLimitFilter("stat_prefix: l, token_bucket: {max_tokens: 1, fill_interval: 0.01s}"), "up", ""), "", up.Cluster("up")), nil)
	if err == nil || !strings.Contains(err.Error(), "token_bucket.fill_interval") {
		t.Errorf("fill_interval 10ms: %v, want an error naming token_bucket.fill_interval", err)
	}
}
