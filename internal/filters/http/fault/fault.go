// Package fault is envoy.filters.http.fault: delays and aborts injected
// into a share of requests (fixed or chosen by x-envoy-fault-* request
// headers), response bandwidth limits, bounded by max_active_faults, with
// the percentages, durations and statuses overridable at runtime under
// Envoy's keys (fault.http.delay.fixed_delay_percent, …), per route
// through typed_per_filter_config, and Envoy's stats and response flags.
package fault

import (
	"strconv"
	"sync/atomic"
	"time"

	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"math/rand/v2"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func init() {
	httpfilter.Register("envoy.filters.http.fault", []string{"envoy.fault"}, &faultv3.HTTPFault{}, &faultv3.HTTPFault{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute}, "")
}

// settings is a compiled HTTPFault.
type settings struct {
	delay        *time.Duration // fixed delay; nil: none
	headerDelay  bool
	delayPct     *typev3.FractionalPercent
	abortStatus  int
	abortGRPC    *int
	headerAbort  bool
	abortPct     *typev3.FractionalPercent
	limitKbps    uint64
	headerLimit  bool
	limitPct     *typev3.FractionalPercent
	matchers     []func(*headers.Request) bool
	nodes        map[string]bool
	upstream     string
	maxActive    uint64 // 0: unlimited
	hasMaxActive bool
	keys         runtimeKeys
	noDownstream bool
}

type runtimeKeys struct {
	delayPct, delayMs, abortPct, abortHTTP, abortGRPC, maxActive, limitPct string
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func build(msg proto.Message, path string) (*settings, error) {
	c := msg.(*faultv3.HTTPFault)
	if err := config.CheckFields(c, path, "delay", "abort", "upstream_cluster", "headers", "downstream_nodes", "max_active_faults",
		"response_rate_limit", "delay_percent_runtime", "abort_percent_runtime", "delay_duration_runtime", "abort_http_status_runtime",
		"max_active_faults_runtime", "response_rate_limit_percent_runtime", "abort_grpc_status_runtime", "disable_downstream_cluster_stats"); err != nil {
		return nil, err
	}
	s := &settings{upstream: c.GetUpstreamCluster(), noDownstream: c.GetDisableDownstreamClusterStats(),
		keys: runtimeKeys{
			delayPct: or(c.GetDelayPercentRuntime(), "fault.http.delay.fixed_delay_percent"), delayMs: or(c.GetDelayDurationRuntime(), "fault.http.delay.fixed_duration_ms"),
			abortPct: or(c.GetAbortPercentRuntime(), "fault.http.abort.abort_percent"), abortHTTP: or(c.GetAbortHttpStatusRuntime(), "fault.http.abort.http_status"),
			abortGRPC: or(c.GetAbortGrpcStatusRuntime(), "fault.http.abort.grpc_status"), maxActive: or(c.GetMaxActiveFaultsRuntime(), "fault.http.max_active_faults"),
			limitPct: or(c.GetResponseRateLimitPercentRuntime(), "fault.http.rate_limit.response_percent")}}
	if d := c.GetDelay(); d != nil {
		dp := config.Join(path, "delay")
		if err := config.CheckFields(d, dp, "fixed_delay", "header_delay", "percentage"); err != nil {
			return nil, err
		}
		s.delayPct = pctOr(d.GetPercentage())
		switch {
		case d.GetFixedDelay() != nil:
			v := d.GetFixedDelay().AsDuration()
			s.delay = &v
		case d.GetHeaderDelay() != nil:
			s.headerDelay = true
		}
	}
	if a := c.GetAbort(); a != nil {
		ap := config.Join(path, "abort")
		if err := config.CheckFields(a, ap, "http_status", "grpc_status", "header_abort", "percentage"); err != nil {
			return nil, err
		}
		s.abortPct = pctOr(a.GetPercentage())
		switch t := a.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			s.abortStatus = int(t.HttpStatus)
		case *faultv3.FaultAbort_GrpcStatus:
			g := int(t.GrpcStatus)
			s.abortGRPC = &g
		case *faultv3.FaultAbort_HeaderAbort_:
			s.headerAbort = true
		}
	}
	if rl := c.GetResponseRateLimit(); rl != nil {
		rp := config.Join(path, "response_rate_limit")
		if err := config.CheckFields(rl, rp, "fixed_limit", "header_limit", "percentage"); err != nil {
			return nil, err
		}
		s.limitPct = pctOr(rl.GetPercentage())
		if fl := rl.GetFixedLimit(); fl != nil {
			s.limitKbps = fl.GetLimitKbps()
		} else {
			s.headerLimit = rl.GetHeaderLimit() != nil
		}
	}
	for i, h := range c.GetHeaders() {
		m, err := route.CompileHeaderMatcher(h, config.Index(config.Join(path, "headers"), i))
		if err != nil {
			return nil, err
		}
		s.matchers = append(s.matchers, m)
	}
	if len(c.GetDownstreamNodes()) > 0 {
		s.nodes = map[string]bool{}
		for _, n := range c.GetDownstreamNodes() {
			s.nodes[n] = true
		}
	}
	if c.GetMaxActiveFaults() != nil {
		s.maxActive, s.hasMaxActive = uint64(c.GetMaxActiveFaults().GetValue()), true
	}
	return s, nil
}

func pctOr(p *typev3.FractionalPercent) *typev3.FractionalPercent {
	if p == nil {
		// As Envoy: an unset percentage is 100 %.
		return &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}
	}
	return p
}

type filterConfig struct {
	*settings
	rt                                *runtime.Loader
	st                                stats.Scope
	delays, aborts, limited, overflow *stats.Counter
	activeG                           *stats.Gauge
	active                            *atomic.Int64
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	s, err := build(msg, path)
	if err != nil {
		return nil, err
	}
	sc := ctx.Scope("fault.")
	return &filterConfig{settings: s, rt: ctx.Runtime, st: sc,
		delays: sc.Counter("delays_injected"), aborts: sc.Counter("aborts_injected"), limited: sc.Counter("response_rl_injected"),
		overflow: sc.Counter("faults_overflow"), activeG: sc.Gauge("active_faults"), active: new(atomic.Int64)}, nil
}

func compilePerRoute(_ *httpfilter.Context, msg proto.Message, path string) (any, error) {
	return build(msg, path)
}

func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

type filter struct {
	cfg     *filterConfig
	cb      httpfilter.Callbacks
	s       *settings
	active  bool
	kbps    uint64
	started time.Time
	sent    uint64
}

// enabled draws against a percentage that the runtime may override and a
// request header may lower (never raise), as Envoy.
func enabled(snap *runtime.Snapshot, key string, p *typev3.FractionalPercent, hdr string, useHeader bool) bool {
	num, den := snap.Fraction(key, p)
	if useHeader && hdr != "" {
		if n, err := strconv.ParseUint(hdr, 10, 32); err == nil && uint32(n) < num {
			num = uint32(n)
		}
	}
	if num >= den {
		return true
	}
	return num > 0 && rand.Uint32N(den) < num
}

func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	s := f.cfg.settings
	if pr, ok := f.cb.PerRouteConfig().(*settings); ok {
		s = pr
	}
	f.s = s
	for _, m := range s.matchers {
		if !m(h) {
			return httpfilter.Continue
		}
	}
	if s.nodes != nil && !s.nodes[h.Map.Get("x-envoy-downstream-service-node")] {
		return httpfilter.Continue
	}
	if s.upstream != "" {
		if rt := f.cb.Route(); rt == nil || rt.Action == nil || rt.Action.Cluster == nil || rt.Action.Cluster.Name() != s.upstream {
			return httpfilter.Continue
		}
	}
	snap := f.cfg.rt.Snapshot()
	// Decide every fault first: max_active_faults applies to any.
	var delay time.Duration
	doDelay := false
	if s.delay != nil || s.headerDelay {
		d := time.Duration(0)
		if s.delay != nil {
			d = time.Duration(snap.Integer(s.keys.delayMs, uint64(s.delay.Milliseconds()))) * time.Millisecond
		} else if v, err := strconv.ParseUint(h.Map.Get("x-envoy-fault-delay-request"), 10, 64); err == nil {
			d = time.Duration(v) * time.Millisecond
		}
		if d > 0 && enabled(snap, s.keys.delayPct, s.delayPct, h.Map.Get("x-envoy-fault-delay-request-percentage"), s.headerDelay) {
			delay, doDelay = d, true
		}
	}
	status, grpcStatus := 0, (*int)(nil)
	if s.abortStatus != 0 || s.abortGRPC != nil || s.headerAbort {
		st, gs := s.abortStatus, s.abortGRPC
		if s.headerAbort {
			st = 0
			if v, err := strconv.Atoi(h.Map.Get("x-envoy-fault-abort-request")); err == nil && v >= 200 && v < 600 {
				st = v
			}
			if v, err := strconv.Atoi(h.Map.Get("x-envoy-fault-abort-grpc-request")); err == nil && v >= 0 {
				gs = &v
			}
		} else if st != 0 {
			if v := snap.Integer(s.keys.abortHTTP, uint64(st)); v >= 200 && v < 600 {
				st = int(v)
			}
		}
		if (st != 0 || gs != nil) && enabled(snap, s.keys.abortPct, s.abortPct, h.Map.Get("x-envoy-fault-abort-request-percentage"), s.headerAbort) {
			status, grpcStatus = st, gs
		}
	}
	kbps := uint64(0)
	if s.limitKbps > 0 || s.headerLimit {
		k := s.limitKbps
		if s.headerLimit {
			k, _ = strconv.ParseUint(h.Map.Get("x-envoy-fault-throughput-response"), 10, 64)
		}
		if k > 0 && enabled(snap, s.keys.limitPct, s.limitPct, h.Map.Get("x-envoy-fault-throughput-response-percentage"), s.headerLimit) {
			kbps = k
		}
	}
	if !doDelay && status == 0 && grpcStatus == nil && kbps == 0 {
		return httpfilter.Continue
	}
	if max := snap.Integer(s.keys.maxActive, s.maxActive); (s.hasMaxActive || max > 0) && uint64(f.cfg.active.Load()) >= max {
		f.cfg.overflow.Inc()
		return httpfilter.Continue
	}
	f.active = true
	f.cfg.activeG.Set(f.cfg.active.Add(1))
	downstream := ""
	if !s.noDownstream {
		downstream = h.Map.Get("x-envoy-downstream-service-cluster")
	}
	if doDelay {
		f.cfg.delays.Inc()
		if downstream != "" {
			f.cfg.st.Counter(downstream + ".delays_injected").Inc()
		}
		f.cb.StreamInfo().SetFlag(streaminfo.DelayInjected)
		time.Sleep(delay)
	}
	if status != 0 || grpcStatus != nil {
		f.cfg.aborts.Inc()
		if downstream != "" {
			f.cfg.st.Counter(downstream + ".aborts_injected").Inc()
		}
		if status == 0 {
			status = 200
		}
		f.cb.SendLocalReply(status, "fault filter abort", httpfilter.LocalReply{Details: "fault_filter_abort", Flag: streaminfo.FaultInjected, GRPCStatus: grpcStatus})
		return httpfilter.StopIteration
	}
	if kbps > 0 {
		f.cfg.limited.Inc()
		f.kbps = kbps
	}
	return httpfilter.Continue
}

// EncodeData paces the response body at the limit (KiB per second).
func (f *filter) EncodeData(b *httpfilter.Buffer, _ bool) httpfilter.Status {
	if f.kbps == 0 || b.Len() == 0 {
		return httpfilter.Continue
	}
	if f.started.IsZero() {
		f.started = time.Now()
	}
	f.sent += uint64(b.Len())
	due := time.Duration(float64(f.sent) / float64(f.kbps*1024) * float64(time.Second))
	if wait := due - time.Since(f.started); wait > 0 {
		time.Sleep(wait)
	}
	return httpfilter.Continue
}

func (f *filter) OnDestroy() {
	if f.active {
		f.cfg.activeG.Set(f.cfg.active.Add(-1))
	}
}
