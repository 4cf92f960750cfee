// Package connection_limit is envoy.filters.network.connection_limit: it
// caps the connections open at once on a filter chain (each filter config
// keeps its own count, as Envoy's), closing those over max_connections —
// at once, or after delay — with Envoy's connection_limit.<stat_prefix>.*
// stats. A runtime_enabled flag can switch it off.
package connection_limit

import (
	"errors"
	"sync/atomic"
	"time"

	climitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/connection_limit/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.filters.network.connection_limit", Category: extension.NetworkFilter,
		Config: &climitv3.ConnectionLimit{},
		Factory: listener.ConnFilterFactory(func(ctx *listener.Context, cfg proto.Message, _ listener.ChainOptions, path string) (listener.ConnFilter, error) {
			return compile(ctx, cfg.(*climitv3.ConnectionLimit), path)
		})})
}

// ErrOverLimit is why a connection over the limit was closed (Envoy's
// "over_connection_limit").
var ErrOverLimit = errors.New("connection_limit: over_connection_limit")

// filterConfig is a compiled connection_limit: shared by every connection
// of its filter chain.
type filterConfig struct {
	max     uint64
	delay   time.Duration
	enabled runtime.FeatureFlag
	// conns counts the connections the filter has seen and not yet seen
	// close, rejected ones included (Envoy counts those too until they
	// close, so a flood of rejected connections keeps the count high).
	conns   atomic.Uint64
	limited *stats.Counter
	active  *stats.Gauge
}

func compile(ctx *listener.Context, c *climitv3.ConnectionLimit, path string) (*filterConfig, error) {
	if err := config.CheckFields(c, path, "stat_prefix", "max_connections", "delay", "runtime_enabled"); err != nil {
		return nil, err
	}
	if c.GetStatPrefix() == "" {
		return nil, config.Errorf(config.Join(path, "stat_prefix"), "stat_prefix is required")
	}
	if c.GetMaxConnections() == nil || c.GetMaxConnections().GetValue() < 1 {
		return nil, config.Errorf(config.Join(path, "max_connections"), "max_connections is required and must be at least 1")
	}
	f := &filterConfig{max: c.GetMaxConnections().GetValue(), enabled: runtime.NewFeatureFlag(ctx.Runtime, c.GetRuntimeEnabled())}
	if d := c.GetDelay(); d != nil {
		f.delay = d.AsDuration()
	}
	// Envoy: POOL_COUNTER_PREFIX(scope, "connection_limit." + stat_prefix),
	// which joins the name with a dot.
	prefix := stats.JoinPrefix("connection_limit."+c.GetStatPrefix(), "")
	f.limited = ctx.Stats.Counter(prefix + "limited_connections")
	f.active = ctx.Stats.Gauge(prefix + "active_connections")
	return f, nil
}

// withinLimit takes a place under the limit, if one is free.
func (f *filterConfig) withinLimit() bool {
	for {
		n := f.conns.Load()
		if n >= f.max {
			return false
		}
		if f.conns.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// OnNewConnection counts the connection and closes it when the chain
// already has max_connections open. With a delay the connection is held
// (its bytes read and dropped, nothing passed on) until the delay is over
// or the client goes away, as Envoy's delayed rejection.
func (f *filterConfig) OnNewConnection(tc *listener.Conn) error {
	if !f.enabled.Enabled() {
		return nil
	}
	f.active.Inc()
	tc.OnClose(func() {
		f.conns.Add(^uint64(0))
		f.active.Dec()
	})
	if f.withinLimit() {
		return nil
	}
	f.limited.Inc()
	f.conns.Add(1) // released by the close, as an admitted one
	if f.delay > 0 {
		hold(tc, f.delay)
	}
	return ErrOverLimit
}

// hold reads and drops what the client sends for d, or until it closes.
func hold(tc *listener.Conn, d time.Duration) {
	tc.Conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	for {
		if _, err := tc.Conn.Read(buf); err != nil {
			return
		}
	}
}
