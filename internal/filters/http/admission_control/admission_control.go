// Package admission_control is envoy.filters.http.admission_control:
// client-side throttling (Google SRE book, "Handling Overload") in front
// of the upstreams. It counts requests and successes over a sliding
// sampling_window (1-second buckets) and rejects a request with an empty
// 503 (details denied_by_admission_control) with probability
//
//	min(max_rejection_probability,
//	    max(0, (n - s/sr_threshold) / (n + 1)) ^ (1/aggression))
//
// unless the window's average RPS is below rps_threshold. What counts as
// a success is success_criteria's: HTTP status ranges (default: below
// 500) and gRPC status codes (default: the codes sending less traffic
// would not change). Rejected requests are not sampled, so the
// probability falls back to 0 once the upstreams succeed again. As
// Envoy's admission_control.cc, thread_local_controller.cc and
// success_criteria_evaluator.cc; stats are
// http.<stat_prefix>.admission_control.{rq_rejected,rq_success,rq_failure}.
//
// One difference: Envoy keeps one window per worker thread; Legate keeps
// one per filter config, shared by every stream.
package admission_control

import (
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	acv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/admission_control/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
)

// Name is the filter's name.
const Name = "envoy.filters.http.admission_control"

// Envoy's defaults.
const (
	defaultWindow         = 30 * time.Second
	defaultAggression     = 1.0
	defaultSRThreshold    = 95.0
	defaultMaxRejectionPc = 80.0
)

func init() {
	httpfilter.Register(Name, nil, &acv3.AdmissionControl{}, nil, httpfilter.Factory{Compile: compile},
		"one sampling window per filter config, shared by all streams (Envoy: one per worker thread)")
}

// runtimeDouble is a RuntimeDouble / RuntimePercent / RuntimeUInt32: a
// default the runtime key overrides. Percentages outside [0, 100] and
// integers beyond uint32 fall back to the default, as Envoy's
// Runtime::Percentage and Runtime::UInt32.
type runtimeDouble struct {
	rt       *runtime.Loader
	key      string
	def      float64
	min, max float64
	set      bool
}

func (r runtimeDouble) value(fallback float64) float64 {
	if !r.set {
		return fallback
	}
	if r.key != "" {
		if v, ok := r.rt.Snapshot().Get(r.key); ok {
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && f >= r.min && f <= r.max {
				return f
			}
		}
	}
	return r.def
}

type filterConfig struct {
	enabled runtime.FeatureFlag
	window  time.Duration
	// aggression, srThreshold (percent), rps and maxReject (percent).
	aggression, srThreshold, rps, maxReject runtimeDouble
	eval                                    evaluator
	ctl                                     *controller
	rejected, success, failure              *stats.Counter
	// rand draws in [0, n); nil is math/rand (tests fix it).
	rand func(n uint64) uint64
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*acv3.AdmissionControl)
	if err := config.CheckFields(c, path, "enabled", "success_criteria", "sampling_window", "aggression",
		"sr_threshold", "rps_threshold", "max_rejection_probability"); err != nil {
		return nil, err
	}
	if c.GetSrThreshold() != nil && c.GetSrThreshold().GetDefaultValue().GetValue() < 1.0 {
		return nil, config.Errorf(config.Join(path, "sr_threshold"), "Success rate threshold cannot be less than 1.0%%.")
	}
	sc := c.GetSuccessCriteria()
	if sc == nil {
		return nil, config.Errorf(path, "success_criteria is required (an empty one uses the default criteria)")
	}
	eval, err := compileCriteria(sc, config.Join(path, "success_criteria"))
	if err != nil {
		return nil, err
	}
	// Envoy truncates the window to whole seconds.
	window := defaultWindow
	if w := c.GetSamplingWindow(); w != nil {
		window = time.Duration(w.AsDuration().Milliseconds()/1000) * time.Second
	}
	rt := ctx.Runtime
	fc := &filterConfig{
		enabled:     runtime.NewFeatureFlag(rt, c.GetEnabled()),
		window:      window,
		aggression:  compileDouble(rt, c.GetAggression()),
		srThreshold: compilePercent(rt, c.GetSrThreshold()),
		rps:         compileUInt32(rt, c.GetRpsThreshold()),
		maxReject:   compilePercent(rt, c.GetMaxRejectionProbability()),
		eval:        eval,
		ctl:         &controller{window: window, now: time.Now},
	}
	s := ctx.Scope("admission_control.")
	fc.rejected, fc.success, fc.failure = s.Counter("rq_rejected"), s.Counter("rq_success"), s.Counter("rq_failure")
	return fc, nil
}

func compileDouble(rt *runtime.Loader, d *corev3.RuntimeDouble) runtimeDouble {
	if d == nil {
		return runtimeDouble{}
	}
	return runtimeDouble{rt: rt, key: d.GetRuntimeKey(), def: d.GetDefaultValue(), min: math.Inf(-1), max: math.Inf(1), set: true}
}

func compilePercent(rt *runtime.Loader, p *corev3.RuntimePercent) runtimeDouble {
	if p == nil {
		return runtimeDouble{}
	}
	return runtimeDouble{rt: rt, key: p.GetRuntimeKey(), def: p.GetDefaultValue().GetValue(), min: 0, max: 100, set: true}
}

func compileUInt32(rt *runtime.Loader, u *corev3.RuntimeUInt32) runtimeDouble {
	if u == nil {
		return runtimeDouble{}
	}
	return runtimeDouble{rt: rt, key: u.GetRuntimeKey(), def: float64(u.GetDefaultValue()), min: 0, max: math.MaxUint32, set: true}
}

// The current parameters, as AdmissionControlFilterConfig's accessors.
func (c *filterConfig) aggressionValue() float64 {
	return max(1.0, c.aggression.value(defaultAggression))
}

func (c *filterConfig) srThresholdValue() float64 {
	return min(c.srThreshold.value(defaultSRThreshold), 100) / 100
}

func (c *filterConfig) rpsThreshold() uint32 { return uint32(c.rps.value(0)) }

func (c *filterConfig) maxRejection() float64 { return c.maxReject.value(defaultMaxRejectionPc) / 100 }

// rejectionProbability is the documented formula over the window's counts.
func (c *filterConfig) rejectionProbability(total, successes uint64) float64 {
	p := (float64(total) - float64(successes)/c.srThresholdValue()) / (float64(total) + 1)
	if p <= 0 {
		return 0
	}
	if a := c.aggressionValue(); a != 1.0 {
		p = math.Pow(p, 1/a)
	}
	return min(p, c.maxRejection())
}

// shouldReject draws against the probability with Envoy's 4 significant
// figures.
func (c *filterConfig) shouldReject() bool {
	total, successes := c.ctl.counts()
	p := c.rejectionProbability(total, successes)
	if p <= 0 {
		return false
	}
	const accuracy = 10000
	r := c.rand
	if r == nil {
		r = rand.Uint64N
	}
	return accuracy*p > float64(r(accuracy))
}

// NewFilter makes the stream's filter.
func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb, record: true}
}

type filter struct {
	cfg *filterConfig
	cb  httpfilter.Callbacks
	// record says the response is to be sampled (not when disabled or
	// rejected here).
	record bool
	// grpcTrailers says a gRPC response's status is due in the trailers.
	grpcTrailers bool
}

// DecodeHeaders admits or rejects the request.
func (f *filter) DecodeHeaders(_ *headers.Request, _ bool) httpfilter.Status {
	c := f.cfg
	if !c.enabled.Enabled() || f.cb.StreamInfo().HealthCheck {
		// As Envoy: health checks (marked by an earlier health_check
		// filter) are neither rejected nor sampled.
		f.record = false
		return httpfilter.Continue
	}
	if c.ctl.averageRPS() < c.rpsThreshold() {
		return httpfilter.Continue
	}
	if c.shouldReject() {
		// Rejected requests would taint the upstreams' success rate and
		// keep the probability from returning to 0: not sampled.
		f.record = false
		c.rejected.Inc()
		f.cb.SendLocalReply(503, "", httpfilter.LocalReply{Details: "denied_by_admission_control"})
		return httpfilter.StopIteration
	}
	return httpfilter.Continue
}

// EncodeHeaders samples the response.
func (f *filter) EncodeHeaders(h *headers.Response, endStream bool) httpfilter.Status {
	if !f.record {
		return httpfilter.Continue
	}
	if isGRPCResponse(h, endStream) {
		code, ok := grpcStatus(&h.Map)
		if !ok {
			// Envoy's Grpc::Common::getGrpcStatus: no status in the
			// headers means it comes in the trailers.
			f.grpcTrailers = true
			return httpfilter.Continue
		}
		f.sample(f.cfg.eval.grpcSuccess(code))
		return httpfilter.Continue
	}
	f.sample(f.cfg.eval.httpSuccess(h.Status))
	return httpfilter.Continue
}

// EncodeTrailers samples a gRPC response by its trailers' grpc-status; a
// missing or invalid one is a failure.
func (f *filter) EncodeTrailers(t *headers.Map) httpfilter.Status {
	if f.grpcTrailers {
		f.grpcTrailers = false
		code, ok := grpcStatus(t)
		f.sample(ok && f.cfg.eval.grpcSuccess(code))
	}
	return httpfilter.Continue
}

func (f *filter) sample(ok bool) {
	f.cfg.ctl.record(ok)
	if ok {
		f.cfg.success.Inc()
	} else {
		f.cfg.failure.Inc()
	}
}

// isGRPCResponse is Envoy's Grpc::Common::isGrpcResponseHeaders: a
// trailers-only response (end of stream) is gRPC when it has grpc-status;
// otherwise a 200 with a gRPC content-type.
func isGRPCResponse(h *headers.Response, endStream bool) bool {
	if endStream {
		return h.Map.Has("grpc-status")
	}
	if h.Status != 200 {
		return false
	}
	return headers.IsGRPC(h.Map.Get("content-type"))
}

// invalidGRPC stands for a grpc-status that is not a known code (Envoy's
// InvalidCode): never a success.
const invalidGRPC = math.MaxUint32

// grpcStatus reads grpc-status; ok is false when there is none.
func grpcStatus(m *headers.Map) (uint32, bool) {
	v, _ := m.Lookup("grpc-status")
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n > 16 {
		return invalidGRPC, true
	}
	return uint32(n), true
}
