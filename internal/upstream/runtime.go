package upstream

import (
	"math"
	"time"

	"github.com/legateproxy/legate/internal/runtime"
)

// The runtime keys Envoy reads in place of cluster settings; each
// defaults to the cluster's configured value.
const (
	// rtHealthyPanic overrides common_lb_config.healthy_panic_threshold
	// (Envoy's LoadBalancerBase reads it whenever host health changes).
	rtHealthyPanic = "upstream.healthy_panic_threshold"
	// rtHCMinInterval and rtHCMaxInterval clamp every health-check
	// interval, in milliseconds, after jitter (Envoy's
	// HealthCheckerImplBase::intervalWithJitter).
	rtHCMinInterval = "health_check.min_interval"
	rtHCMaxInterval = "health_check.max_interval"
)

// liveOutlier is an outlier configuration with one runtime snapshot's
// overrides applied.
type liveOutlier struct {
	snap *runtime.Snapshot
	cfg  outlierConfig
}

// conf is the outlier configuration in force: the compiled one with the
// current runtime's outlier_detection.* overrides, recomputed only when
// the runtime publishes a new snapshot (Envoy reads each key on use).
func (od *outlierDetector) conf() *outlierConfig {
	if od.rt == nil {
		return od.cfg
	}
	snap := od.rt.Snapshot()
	if l := od.live.Load(); l != nil && l.snap == snap {
		return &l.cfg
	}
	l := &liveOutlier{snap: snap, cfg: od.cfg.withRuntime(snap)}
	od.live.Store(l)
	return &l.cfg
}

// withRuntime applies Envoy's outlier_detection.* runtime keys
// (source/common/upstream/outlier_detection_impl.h) to a copy of c.
func (c *outlierConfig) withRuntime(s *runtime.Snapshot) outlierConfig {
	o := *c
	u := func(key string, v *uint32) {
		*v = uint32(min(s.Integer("outlier_detection."+key, uint64(*v)), math.MaxUint32))
	}
	ms := func(key string, v *time.Duration) {
		*v = time.Duration(min(s.Integer("outlier_detection."+key, uint64(v.Milliseconds())), math.MaxInt64/uint64(time.Millisecond))) * time.Millisecond
	}
	u("consecutive_5xx", &o.consecutive5xx)
	u("consecutive_gateway_failure", &o.consecutiveGateway)
	u("consecutive_local_origin_failure", &o.consecutiveLocal)
	u("enforcing_consecutive_5xx", &o.enforce5xx)
	u("enforcing_consecutive_gateway_failure", &o.enforceGateway)
	u("enforcing_consecutive_local_origin_failure", &o.enforceLocal)
	u("enforcing_success_rate", &o.enforceSuccessRate)
	u("enforcing_local_origin_success_rate", &o.enforceLocalSuccessRate)
	u("enforcing_failure_percentage", &o.enforceFailurePct)
	u("enforcing_failure_percentage_local_origin", &o.enforceFailurePctLocal)
	u("max_ejection_percent", &o.maxEjectionPercent)
	u("success_rate_minimum_hosts", &o.successRateMinHosts)
	u("success_rate_request_volume", &o.successRateVolume)
	u("success_rate_stdev_factor", &o.successRateStdev)
	u("failure_percentage_threshold", &o.failurePctThreshold)
	u("failure_percentage_minimum_hosts", &o.failurePctMinHosts)
	u("failure_percentage_request_volume", &o.failurePctVolume)
	ms("interval_ms", &o.interval)
	ms("base_ejection_time_ms", &o.baseEjection)
	ms("max_ejection_time_ms", &o.maxEjection)
	ms("max_ejection_time_jitter_ms", &o.maxEjectionJitter)
	if o.interval <= 0 {
		// A timer armed for 0 would spin; Envoy's timers fire at once
		// too, but its loop yields between them.
		o.interval = time.Millisecond
	}
	return o
}

// panicPercent is healthy_panic_threshold with the runtime's override.
func (cfg *lbConfig) panicPercent() float64 {
	if cfg.rt == nil {
		return cfg.panicThreshold
	}
	return float64(min(cfg.rt.Snapshot().Integer(rtHealthyPanic, uint64(math.Round(cfg.panicThreshold))), 100))
}

// clampInterval bounds a health-check interval by the runtime's
// health_check.min_interval and max_interval (milliseconds), and keeps
// it at least a millisecond, as Envoy does against a live lock.
func clampInterval(rt *runtime.Loader, d time.Duration) time.Duration {
	if rt != nil {
		s := rt.Snapshot()
		if v, ok := s.Get(rtHCMaxInterval); ok && v != "" {
			if mx := s.Integer(rtHCMaxInterval, math.MaxUint64); mx < uint64(math.MaxInt64/time.Millisecond) {
				d = min(d, time.Duration(mx)*time.Millisecond)
			}
		}
		if mn := s.Integer(rtHCMinInterval, 0); mn > 0 && mn < uint64(math.MaxInt64/time.Millisecond) {
			d = max(d, time.Duration(mn)*time.Millisecond)
		}
	}
	return max(d, time.Millisecond)
}
