// Package ratelimit is envoy.filters.network.ratelimit: a non-terminal
// network filter that asks the global Rate Limit Service about its fixed
// descriptors once per new connection, before any byte goes on, and
// closes the connection when it is over the limit (or when the service
// fails and failure_mode_deny is set), with Envoy's
// ratelimit.<stat_prefix>.* stats.
package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	netrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	rlcommon "github.com/legateproxy/legate/internal/filters/common/ratelimit"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
)

// Name is the filter's name and its dynamic-metadata namespace.
const Name = "envoy.filters.network.ratelimit"

func init() {
	extension.Register(extension.Extension{Name: Name, Category: extension.NetworkFilter, Config: &netrlv3.RateLimit{},
		Factory: listener.ConnFilterFactory(compile),
		Notes:   "literal descriptor values; substitution formatters and hits_addend in descriptors are not implemented"})
}

// filter is a compiled network RateLimit, shared by the connections.
type filter struct {
	service  *rlcommon.Service
	runtime  *runtime.Loader
	log      *slog.Logger
	timeout  time.Duration
	failDeny bool
	req      *rlsv3.RateLimitRequest
	st       filterStats
}

// filterStats are ratelimit.<stat_prefix>.*.
type filterStats struct {
	total, ok, overLimit, errored, cxClosed, failureModeAllowed *stats.Counter
	active                                                      *stats.Gauge
}

// errClosed is the error that closes a connection the filter refused.
var errClosed = errors.New("closed by the rate limit filter")

func compile(ctx *listener.Context, msg proto.Message, _ listener.ChainOptions, path string) (listener.ConnFilter, error) {
	c := msg.(*netrlv3.RateLimit)
	if err := config.CheckFields(c, path, "stat_prefix", "domain", "descriptors", "timeout", "failure_mode_deny", "rate_limit_service"); err != nil {
		return nil, err
	}
	svc, err := rlcommon.CompileService(c.GetRateLimitService(), config.Join(path, "rate_limit_service"), ctx.Async)
	if err != nil {
		return nil, err
	}
	f := &filter{service: svc, runtime: ctx.Runtime, log: ctx.Log, timeout: rlcommon.DefaultTimeout, failDeny: c.GetFailureModeDeny()}
	if t := c.GetTimeout(); t != nil {
		f.timeout = t.AsDuration()
	}
	var ds []route.Descriptor
	for i, d := range c.GetDescriptors() {
		dp := config.Index(config.Join(path, "descriptors"), i)
		if err := config.CheckFields(d, dp, "entries", "limit"); err != nil {
			return nil, err
		}
		var rd route.Descriptor
		for j, e := range d.GetEntries() {
			if strings.Contains(e.GetValue(), "%") {
				return nil, config.Unsupported(config.Index(config.Join(dp, "entries"), j)+".value", "substitution formatters in descriptor values")
			}
			rd.Entries = append(rd.Entries, route.DescriptorEntry{Key: e.GetKey(), Value: e.GetValue()})
		}
		if l := d.GetLimit(); l != nil {
			if err := config.CheckFields(l, config.Join(dp, "limit"), "requests_per_unit", "unit"); err != nil {
				return nil, err
			}
			rd.Limit = &route.LimitOverride{RequestsPerUnit: l.GetRequestsPerUnit(), Unit: l.GetUnit()}
		}
		ds = append(ds, rd)
	}
	f.req = rlcommon.Request(c.GetDomain(), ds, 0)
	sc := ctx.Stats.Scope("ratelimit." + c.GetStatPrefix() + ".")
	f.st = filterStats{total: sc.Counter("total"), ok: sc.Counter("ok"), overLimit: sc.Counter("over_limit"),
		errored: sc.Counter("error"), cxClosed: sc.Counter("cx_closed"), failureModeAllowed: sc.Counter("failure_mode_allowed"),
		active: sc.Gauge("active")}
	return f, nil
}

// OnNewConnection calls the service and lets the connection go on, or
// closes it, as Envoy's Filter::onNewConnection and complete.
func (f *filter) OnNewConnection(c *listener.Conn) error {
	if !runtime.FeatureEnabled(f.runtime, "ratelimit.tcp_filter_enabled", 100) {
		return nil
	}
	f.st.active.Inc()
	f.st.total.Inc()
	res := f.service.Limit(context.Background(), f.timeout, f.req)
	f.st.active.Dec()
	if res.Metadata != nil && len(res.Metadata.GetFields()) > 0 {
		c.SetMetadata(Name, res.Metadata.GetFields())
	}
	switch res.Status {
	case rlcommon.OK:
		f.st.ok.Inc()
		return nil
	case rlcommon.OverLimit:
		f.st.overLimit.Inc()
		if !runtime.FeatureEnabled(f.runtime, "ratelimit.tcp_filter_enforcing", 100) {
			return nil
		}
		f.st.cxClosed.Inc()
		f.log.Debug("connection over the rate limit", "remote", c.Remote, "reason", "ratelimit_close_over_limit")
		return errClosed
	}
	f.st.errored.Inc()
	if !f.failDeny {
		f.st.failureModeAllowed.Inc()
		return nil
	}
	f.st.cxClosed.Inc()
	f.log.Debug("rate limit service failed: connection closed", "remote", c.Remote, "error", res.Err,
		"reason", "ratelimit_error_failure_mode_connection_close")
	return errClosed
}
