// Network echo: envoy.filters.network.echo writes back what it reads.

package features_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestNetworkEcho(t *testing.T) {
	echo := `{name: envoy.filters.network.echo, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo}}`
	rl := `{name: envoy.filters.network.local_ratelimit, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit, stat_prefix: e, token_bucket: {max_tokens: 5, fill_interval: 60s}}}`
	p := testutil.StartProxy(t, netBootstrap(terminalListener("echo", rl+", "+echo), ""), nil)
	c, err := net.Dial("tcp", p.Addr("echo"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	for _, msg := range []string{"ping", "a longer second message"} {
		io.WriteString(c, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo of %q: %q, %v", msg, buf, err)
		}
	}
	// The client's end of stream ends the connection.
	c.(*net.TCPConn).CloseWrite()
	if got, closed := waitClosed(c); !closed || got != "" {
		t.Errorf("after half-close: read %q, closed=%v", got, closed)
	}
}
