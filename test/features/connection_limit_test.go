// Connection limit: envoy.filters.network.connection_limit — at most
// max_connections open on a filter chain, the rest closed (after delay),
// runtime_enabled, and Envoy's connection_limit.<stat_prefix>.* stats.

package features_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func connLimitFilter(fields string) string {
	return fmt.Sprintf(`{name: envoy.filters.network.connection_limit, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit, %s}}`, fields)
}

// openEcho dials addr and checks that the connection proxies (an echo
// round trip), so that it went through the filter chain.
func openEcho(t *testing.T, addr, data string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	io.WriteString(c, data)
	buf := make([]byte, len(data))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != data {
		c.Close()
		t.Fatalf("connection to %s did not proxy: %q, %v", addr, buf, err)
	}
	c.SetDeadline(time.Time{})
	return c
}

func TestConnectionLimit(t *testing.T) {
	up := startTCPEcho(t)
	listeners := netListener("cl", connLimitFilter(`stat_prefix: cl, max_connections: 2`), "up", "") +
		netListener("delayed", connLimitFilter(`stat_prefix: "delayed.", max_connections: 1, delay: 0.3s`), "up", "") +
		netListener("off", connLimitFilter(`stat_prefix: off, max_connections: 1, runtime_enabled: {default_value: true, runtime_key: climit.off}`), "up", "")
	rt := `layered_runtime: {layers: [{name: static, static_layer: {climit.off: false}}]}`
	p := testutil.StartProxy(t, netBootstrap(listeners, rt, up.Cluster("up")), nil)

	t.Run("max_connections", func(t *testing.T) {
		c1 := openEcho(t, p.Addr("cl"), "one")
		c2 := openEcho(t, p.Addr("cl"), "two")
		defer c2.Close()
		if v := p.Stat(t, "connection_limit.cl.active_connections"); v != 2 {
			t.Errorf("active_connections = %d, want 2", v)
		}
		c3, err := net.Dial("tcp", p.Addr("cl"))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c3, "three")
		if got, closed := waitClosed(c3); !closed || got != "" {
			t.Fatalf("third connection: read %q, closed=%v", got, closed)
		}
		c3.Close()
		testutil.Eventually(t, 3*time.Second, func() bool { return p.Stat(t, "connection_limit.cl.limited_connections") == 1 },
			"limited_connections = %d", p.Stat(t, "connection_limit.cl.limited_connections"))
		// The rejected connection counted while open, and no more.
		testutil.Eventually(t, 3*time.Second, func() bool { return p.Stat(t, "connection_limit.cl.active_connections") == 2 },
			"active_connections = %d after the rejected one closed", p.Stat(t, "connection_limit.cl.active_connections"))
		if strings.Contains(up.Received(), "three") {
			t.Errorf("the rejected connection reached the upstream")
		}
		// A place frees when a connection closes.
		c1.Close()
		testutil.Eventually(t, 3*time.Second, func() bool { return p.Stat(t, "connection_limit.cl.active_connections") == 1 }, "active after close")
		openEcho(t, p.Addr("cl"), "four").Close()
		if v := p.Stat(t, "connection_limit.cl.limited_connections"); v != 1 {
			t.Errorf("limited_connections = %d, want 1", v)
		}
	})

	t.Run("delay", func(t *testing.T) {
		c1 := openEcho(t, p.Addr("delayed"), "first")
		defer c1.Close()
		c2, err := net.Dial("tcp", p.Addr("delayed"))
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		start := time.Now()
		io.WriteString(c2, "held")
		if got, closed := waitClosed(c2); !closed || got != "" {
			t.Fatalf("delayed rejection: read %q, closed=%v", got, closed)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Errorf("rejected after %v, want the 300ms delay", d)
		}
		if strings.Contains(up.Received(), "held") {
			t.Errorf("the held connection's bytes reached the upstream")
		}
		if v := p.Stat(t, "connection_limit.delayed.limited_connections"); v != 1 {
			t.Errorf("connection_limit.delayed.limited_connections = %d, want 1", v)
		}
	})

	t.Run("runtime disabled", func(t *testing.T) {
		c1 := openEcho(t, p.Addr("off"), "a")
		defer c1.Close()
		c2 := openEcho(t, p.Addr("off"), "b")
		c2.Close()
		if v := p.Stat(t, "connection_limit.off.limited_connections"); v != 0 {
			t.Errorf("a disabled filter limited %d connections", v)
		}
		if v := p.Stat(t, "connection_limit.off.active_connections"); v != 0 {
			t.Errorf("a disabled filter counted %d connections", v)
		}
	})
}

func TestConnectionLimitConfigErrors(t *testing.T) {
	up := startTCPEcho(t)
	for _, c := range []struct{ fields, path string }{
		{`stat_prefix: x`, "max_connections"},
		{`stat_prefix: x, max_connections: 0`, "max_connections"},
	} {
		_, err := testutil.TryStartProxy(t, netBootstrap(netListener("l", connLimitFilter(c.fields), "up", ""), "", up.Cluster("up")), nil)
		if err == nil || !strings.Contains(err.Error(), c.path) {
			t.Errorf("%s: error %v, want one naming %s", c.fields, err, c.path)
		}
	}
}
