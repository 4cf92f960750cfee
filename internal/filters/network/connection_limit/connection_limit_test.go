package connection_limit

import (
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	climitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/connection_limit/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/stats"
)

func compileYAML(t *testing.T, y string) (*filterConfig, *stats.Store, error) {
	t.Helper()
	c := &climitv3.ConnectionLimit{}
	if _, err := config.Decode([]byte(y), c, "cl"); err != nil {
		t.Fatal(err)
	}
	st := stats.NewStore()
	f, err := compile(&listener.Context{Stats: st, Log: slog.Default()}, c, "cl")
	return f, st, err
}

func TestConfig(t *testing.T) {
	for _, c := range []struct{ cfg, errPath string }{
		{`{stat_prefix: x, max_connections: 1}`, ""},
		{`{stat_prefix: x, max_connections: 1, delay: 1s, runtime_enabled: {default_value: true, runtime_key: k}}`, ""},
		{`{stat_prefix: x}`, "cl.max_connections"},
		{`{stat_prefix: x, max_connections: 0}`, "cl.max_connections"},
		{`{max_connections: 1}`, "cl.stat_prefix"},
	} {
		_, _, err := compileYAML(t, c.cfg)
		switch {
		case c.errPath == "" && err != nil:
			t.Errorf("%s: %v", c.cfg, err)
		case c.errPath != "" && (err == nil || !strings.Contains(err.Error(), c.errPath)):
			t.Errorf("%s: error %v, want one naming %s", c.cfg, err, c.errPath)
		}
	}
}

func conn() *listener.Conn {
	a, b := net.Pipe()
	go func() { // the client: sends nothing, closes when the server does
		b.Read(make([]byte, 1))
		b.Close()
	}()
	return &listener.Conn{Conn: a}
}

func TestLimit(t *testing.T) {
	f, st, err := compileYAML(t, `{stat_prefix: "x.", max_connections: 2}`)
	if err != nil {
		t.Fatal(err)
	}
	open := func() error { return f.OnNewConnection(conn()) }
	for i := 0; i < 2; i++ {
		if err := open(); err != nil {
			t.Fatalf("connection %d refused: %v", i+1, err)
		}
	}
	if err := open(); !errors.Is(err, ErrOverLimit) {
		t.Fatalf("third connection: %v", err)
	}
	if v, _ := st.Value("connection_limit.x.limited_connections"); v != 1 {
		t.Errorf("limited_connections = %d", v)
	}
	if v, _ := st.Value("connection_limit.x.active_connections"); v != 3 {
		t.Errorf("active_connections = %d, want 3 (the rejected one counts until it closes)", v)
	}
}

func TestDelay(t *testing.T) {
	f, _, _ := compileYAML(t, `{stat_prefix: x, max_connections: 1, delay: 0.2s}`)
	f.OnNewConnection(conn())
	start := time.Now()
	if err := f.OnNewConnection(conn()); !errors.Is(err, ErrOverLimit) {
		t.Fatalf("%v", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("rejected after %v, want the 200ms delay", d)
	}
}
