package upstream

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
)

// Result kinds reported to outlier detection besides HTTP status codes.
const (
	// ResultConnectFailed: the connection to the host could not be made.
	ResultConnectFailed = -1
	// ResultTimeout: the request timed out waiting for the host.
	ResultTimeout = -2
	// ResultReset: the host reset the connection or sent a bad response.
	ResultReset = -3
)

// outlierConfig is a cluster's outlier_detection with Envoy's defaults.
type outlierConfig struct {
	consecutive5xx, consecutiveGateway, consecutiveLocal      uint32
	enforce5xx, enforceGateway, enforceLocal                  uint32 // percent
	enforceSuccessRate, enforceLocalSuccessRate               uint32
	enforceFailurePct, enforceFailurePctLocal                 uint32
	interval, baseEjection, maxEjection, maxEjectionJitter    time.Duration
	maxEjectionPercent                                        uint32
	successRateMinHosts, successRateVolume, successRateStdev  uint32
	failurePctThreshold, failurePctMinHosts, failurePctVolume uint32
	split                                                     bool
}

func u32(v *wrapperspb.UInt32Value, d uint32) uint32 {
	if v == nil {
		return d
	}
	return v.GetValue()
}

func dur(v *durationpb.Duration, d time.Duration) time.Duration {
	if v == nil {
		return d
	}
	return v.AsDuration()
}

func compileOutlier(od *clusterv3.OutlierDetection, path string) (*outlierConfig, error) {
	if err := config.CheckFields(od, path, "consecutive_5xx", "interval", "base_ejection_time", "max_ejection_percent",
		"enforcing_consecutive_5xx", "enforcing_success_rate", "success_rate_minimum_hosts", "success_rate_request_volume",
		"success_rate_stdev_factor", "consecutive_gateway_failure", "enforcing_consecutive_gateway_failure",
		"split_external_local_origin_errors", "consecutive_local_origin_failure", "enforcing_consecutive_local_origin_failure",
		"enforcing_local_origin_success_rate", "failure_percentage_threshold", "enforcing_failure_percentage",
		"enforcing_failure_percentage_local_origin", "failure_percentage_minimum_hosts", "failure_percentage_request_volume",
		"max_ejection_time", "max_ejection_time_jitter"); err != nil {
		return nil, err
	}
	c := &outlierConfig{
		consecutive5xx: u32(od.GetConsecutive_5Xx(), 5), consecutiveGateway: u32(od.GetConsecutiveGatewayFailure(), 5),
		consecutiveLocal: u32(od.GetConsecutiveLocalOriginFailure(), 5),
		enforce5xx:       u32(od.GetEnforcingConsecutive_5Xx(), 100), enforceGateway: u32(od.GetEnforcingConsecutiveGatewayFailure(), 0),
		enforceLocal:       u32(od.GetEnforcingConsecutiveLocalOriginFailure(), 100),
		enforceSuccessRate: u32(od.GetEnforcingSuccessRate(), 100), enforceLocalSuccessRate: u32(od.GetEnforcingLocalOriginSuccessRate(), 100),
		enforceFailurePct: u32(od.GetEnforcingFailurePercentage(), 0), enforceFailurePctLocal: u32(od.GetEnforcingFailurePercentageLocalOrigin(), 0),
		interval: dur(od.GetInterval(), 10*time.Second), baseEjection: dur(od.GetBaseEjectionTime(), 30*time.Second),
		maxEjection: dur(od.GetMaxEjectionTime(), 300*time.Second), maxEjectionJitter: dur(od.GetMaxEjectionTimeJitter(), 0),
		maxEjectionPercent:  u32(od.GetMaxEjectionPercent(), 10),
		successRateMinHosts: u32(od.GetSuccessRateMinimumHosts(), 5), successRateVolume: u32(od.GetSuccessRateRequestVolume(), 100),
		successRateStdev:    u32(od.GetSuccessRateStdevFactor(), 1900),
		failurePctThreshold: u32(od.GetFailurePercentageThreshold(), 85), failurePctMinHosts: u32(od.GetFailurePercentageMinimumHosts(), 5),
		failurePctVolume: u32(od.GetFailurePercentageRequestVolume(), 50),
		split:            od.GetSplitExternalLocalOriginErrors(),
	}
	if c.interval <= 0 {
		return nil, config.Errorf(config.Join(path, "interval"), "must be positive")
	}
	if c.maxEjection < c.baseEjection {
		c.maxEjection = c.baseEjection
	}
	return c, nil
}

// outlierStats are cluster.<name>.outlier_detection.* as Envoy names them.
type outlierStats struct {
	enforcedTotal, overflow *stats.Counter
	active                  *stats.Gauge
	detected, enforced      map[string]*stats.Counter
}

var outlierKinds = []string{"consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure",
	"success_rate", "local_origin_success_rate", "failure_percentage", "failure_percentage_local_origin"}

func newOutlierStats(s stats.Scope) outlierStats {
	o := outlierStats{enforcedTotal: s.Counter("ejections_enforced_total"), overflow: s.Counter("ejections_overflow"),
		active: s.Gauge("ejections_active"), detected: map[string]*stats.Counter{}, enforced: map[string]*stats.Counter{}}
	for _, k := range outlierKinds {
		o.detected[k] = s.Counter("ejections_detected_" + k)
		o.enforced[k] = s.Counter("ejections_enforced_" + k)
	}
	return o
}

// outlierHost is a host's outlier-detection state.
type outlierHost struct {
	consec5xx, consecGateway, consecLocal atomic.Uint32
	// Counts for the current interval (success rate, failure percentage).
	extTotal, extFail, localTotal, localFail atomic.Uint64

	// Guarded by the detector's mutex.
	ejected     bool
	ejectedAt   time.Time
	ejectFor    time.Duration
	numEjection uint32
	// lastAction and lastKind are the last ejection or return and the
	// detector that ejected, for the event log.
	lastAction time.Time
	lastKind   string
}

// outlierDetector ejects hosts that fail, as Envoy's outlier detection.
type outlierDetector struct {
	// cfg is the compiled configuration; conf() applies the runtime's
	// overrides to it.
	cfg *outlierConfig
	// rt is the server's runtime (nil: none); live caches cfg with its
	// overrides for rt's current snapshot.
	rt    *runtime.Loader
	live  atomic.Pointer[liveOutlier]
	c     *Cluster
	stats outlierStats
	mu    sync.Mutex
	now   func() time.Time
}

func (od *outlierDetector) state(h *Host) *outlierHost {
	if s := h.outlier.Load(); s != nil {
		return s
	}
	h.outlier.CompareAndSwap(nil, &outlierHost{})
	return h.outlier.Load()
}

// report records the outcome of one request to h: an HTTP status, or a
// Result* local-origin failure.
func (od *outlierDetector) report(h *Host, code int) {
	s := od.state(h)
	cfg := od.conf()
	local := code < 0
	if local && cfg.split {
		s.localTotal.Add(1)
		s.localFail.Add(1)
		if s.consecLocal.Add(1) == cfg.consecutiveLocal {
			od.detect(h, s, "consecutive_local_origin_failure", cfg.enforceLocal)
		}
		return
	}
	if local {
		code = 503 // local-origin errors count as 503 when not split
	} else if cfg.split {
		// An HTTP response means the connection worked: local origin success.
		s.localTotal.Add(1)
		s.consecLocal.Store(0)
	}
	s.extTotal.Add(1)
	if code >= 500 {
		s.extFail.Add(1)
		gw := code == 502 || code == 503 || code == 504
		if gw {
			if s.consecGateway.Add(1) == cfg.consecutiveGateway {
				od.detect(h, s, "consecutive_gateway_failure", cfg.enforceGateway)
			}
		} else {
			s.consecGateway.Store(0)
		}
		if s.consec5xx.Add(1) == cfg.consecutive5xx {
			od.detect(h, s, "consecutive_5xx", cfg.enforce5xx)
		}
		return
	}
	s.consec5xx.Store(0)
	s.consecGateway.Store(0)
}

// detect counts an outlier and ejects it if enforcement allows, as
// Envoy's onConsecutiveErrorWorker: a host already ejected is skipped,
// and the consecutive counter of kind restarts after each detection,
// enforced or not, so that a further bout of errors is detected again.
func (od *outlierDetector) detect(h *Host, s *outlierHost, kind string, enforcing uint32) {
	od.mu.Lock()
	if s.ejected {
		od.mu.Unlock()
		return
	}
	od.stats.detected[kind].Inc()
	ejected := false
	if enforcing == 0 || (enforcing < 100 && rand.Uint32N(100) >= enforcing) {
		if od.c.eventLog != nil {
			od.logEvent(h, s, outlierEvent{kind: kind})
		}
	} else {
		ejected = od.eject(h, s, kind)
	}
	switch kind {
	case "consecutive_5xx":
		s.consec5xx.Store(0)
	case "consecutive_gateway_failure":
		s.consecGateway.Store(0)
	case "consecutive_local_origin_failure":
		s.consecLocal.Store(0)
	}
	od.mu.Unlock()
	if ejected {
		od.c.healthChanged()
	}
}

// eject marks h ejected unless max_ejection_percent forbids it. Called
// with od.mu held; reports whether h was ejected.
func (od *outlierDetector) eject(h *Host, s *outlierHost, kind string) bool {
	return od.ejectWith(h, s, outlierEvent{kind: kind, enforced: true})
}

// ejectWith is eject with what the event log records of the detection.
func (od *outlierDetector) ejectWith(h *Host, s *outlierHost, ev outlierEvent) bool {
	cfg := od.conf()
	kind := ev.kind
	if s.ejected {
		return false
	}
	hosts := od.c.hosts.Load().all
	ejected := 0
	for _, x := range hosts {
		if xs := x.outlier.Load(); xs != nil && xs.ejected {
			ejected++
		}
	}
	// As Envoy: eject at least one host, then keep below max_ejection_percent.
	if ejected > 0 && len(hosts) > 0 && float64(ejected+1)*100/float64(len(hosts)) > float64(cfg.maxEjectionPercent) {
		od.stats.overflow.Inc()
		return false
	}
	s.numEjection++
	s.ejected = true
	s.ejectedAt = od.now()
	d := cfg.baseEjection * time.Duration(s.numEjection)
	if d > cfg.maxEjection {
		d = cfg.maxEjection
	}
	if cfg.maxEjectionJitter > 0 {
		d += time.Duration(rand.Int64N(int64(cfg.maxEjectionJitter) + 1))
	}
	s.ejectFor = d
	s.consec5xx.Store(0)
	s.consecGateway.Store(0)
	s.consecLocal.Store(0)
	h.setFlag(FlagFailedOutlier, true)
	od.stats.enforced[kind].Inc()
	od.stats.enforcedTotal.Inc()
	od.stats.active.Inc()
	od.c.log.Warn("host ejected by outlier detection", "cluster", od.c.Name, "host", h.Address, "reason", kind, "for", d)
	s.lastKind = kind
	od.logEvent(h, s, ev)
	return true
}

// run ticks every interval: un-ejects hosts whose time is up, lowers the
// ejection multiplier of hosts that stayed healthy, and runs the
// success-rate and failure-percentage detectors.
func (od *outlierDetector) run() {
	// A timer re-armed each time: the interval may change with the
	// runtime (Envoy's armIntervalTimer reads interval_ms each time).
	t := time.NewTimer(od.conf().interval)
	defer t.Stop()
	for {
		select {
		case <-od.c.stop:
			return
		case <-t.C:
			od.tick()
			t.Reset(od.conf().interval)
		}
	}
}

type hostRates struct {
	h            *Host
	s            *outlierHost
	ext, local   float64 // success rate (percent)
	extN, localN uint64
}

func (od *outlierDetector) tick() {
	cfg := od.conf()
	now := od.now()
	changed := false
	hosts := od.c.hosts.Load().all
	var rates []hostRates
	od.mu.Lock()
	for _, h := range hosts {
		s := od.state(h)
		if s.ejected {
			if now.Sub(s.ejectedAt) >= s.ejectFor {
				s.ejected = false
				h.setFlag(FlagFailedOutlier, false)
				od.stats.active.Dec()
				changed = true
				od.logEvent(h, s, outlierEvent{})
				od.c.log.Info("host returned from outlier ejection", "cluster", od.c.Name, "host", h.Address)
			}
		} else if s.numEjection > 0 && now.Sub(s.ejectedAt) >= s.ejectFor+cfg.interval {
			// Envoy lowers the multiplier for each interval a host stays healthy.
			s.numEjection--
		}
		et, ef, lt, lf := s.extTotal.Swap(0), s.extFail.Swap(0), s.localTotal.Swap(0), s.localFail.Swap(0)
		if s.ejected {
			continue
		}
		r := hostRates{h: h, s: s, extN: et, localN: lt}
		if et > 0 {
			r.ext = 100 * float64(et-ef) / float64(et)
		}
		if lt > 0 {
			r.local = 100 * float64(lt-lf) / float64(lt)
		}
		rates = append(rates, r)
	}
	type detector struct {
		kind, fpKind       string
		enforce, enforceFP uint32
		rate               func(r hostRates) (float64, uint64)
	}
	dets := []detector{{"success_rate", "failure_percentage", cfg.enforceSuccessRate, cfg.enforceFailurePct,
		func(r hostRates) (float64, uint64) { return r.ext, r.extN }}}
	if cfg.split {
		dets = append(dets, detector{"local_origin_success_rate", "failure_percentage_local_origin", cfg.enforceLocalSuccessRate, cfg.enforceFailurePctLocal,
			func(r hostRates) (float64, uint64) { return r.local, r.localN }})
	}
	enforce := func(p uint32) bool { return p >= 100 || (p > 0 && rand.Uint32N(100) < p) }
	for _, d := range dets {
		// Success rate: outliers are below mean - stdev × factor/1000.
		var vals []hostRates
		for _, r := range rates {
			if _, n := d.rate(r); n >= uint64(cfg.successRateVolume) {
				vals = append(vals, r)
			}
		}
		if len(vals) >= int(cfg.successRateMinHosts) && len(vals) > 0 {
			mean := 0.0
			for _, r := range vals {
				v, _ := d.rate(r)
				mean += v
			}
			mean /= float64(len(vals))
			variance := 0.0
			for _, r := range vals {
				v, _ := d.rate(r)
				variance += (v - mean) * (v - mean)
			}
			stdev := math.Sqrt(variance / float64(len(vals)))
			limit := mean - stdev*float64(cfg.successRateStdev)/1000
			for _, r := range vals {
				if v, _ := d.rate(r); v < limit {
					od.stats.detected[d.kind].Inc()
					ev := outlierEvent{kind: d.kind, hostRate: v, clusterAvg: mean, threshold: limit}
					if !enforce(d.enforce) {
						od.logEvent(r.h, r.s, ev)
					} else if ev.enforced = true; od.ejectWith(r.h, r.s, ev) {
						changed = true
					}
				}
			}
		}
		// Failure percentage: outliers fail at least the threshold.
		vals = vals[:0]
		for _, r := range rates {
			if _, n := d.rate(r); n >= uint64(cfg.failurePctVolume) {
				vals = append(vals, r)
			}
		}
		if len(vals) >= int(cfg.failurePctMinHosts) {
			for _, r := range vals {
				if v, _ := d.rate(r); 100-v >= float64(cfg.failurePctThreshold) && !r.s.ejected {
					od.stats.detected[d.fpKind].Inc()
					ev := outlierEvent{kind: d.fpKind, hostRate: v}
					if !enforce(d.enforceFP) {
						od.logEvent(r.h, r.s, ev)
					} else if ev.enforced = true; od.ejectWith(r.h, r.s, ev) {
						changed = true
					}
				}
			}
		}
	}
	od.mu.Unlock()
	if changed {
		od.c.healthChanged()
	}
}

// OutlierResult reports the outcome of a request to h: the HTTP status of
// its response, or one of the Result* local-origin failures. Hosts of
// clusters without outlier_detection ignore it.
func (h *Host) OutlierResult(code int) {
	if od := h.od; od != nil {
		od.report(h, code)
	}
}

// removed forgets a host that left the cluster while ejected.
func (od *outlierDetector) removed(h *Host) {
	od.mu.Lock()
	defer od.mu.Unlock()
	if s := h.outlier.Load(); s != nil && s.ejected {
		s.ejected = false
		od.stats.active.Dec()
	}
}
