// Package overload is Envoy's overload manager: resource monitors measure
// pressure (0 to 1) every refresh_interval, and overload actions switch
// on when a trigger's threshold is reached — shedding new requests,
// closing keep-alive connections, returning memory to the OS.
//
// Supported: the fixed_heap monitor (the Go heap and goroutine stacks
// against max_heap_size_bytes), cgroup_memory (the cgroup's memory use
// against its limit), cpu_utilization (host or container CPU, smoothed as
// Envoy does), injected_resource (a pressure read from a file, for
// tests), the proactive downstream_connections monitor; threshold and
// scaled triggers; the actions shrink_heap, stop_accepting_requests,
// disable_http_keepalive, stop_accepting_connections,
// reject_incoming_connections, reduce_timeouts (scaled timers) and
// reset_high_memory_stream (buffer_factory_config's stream accounts,
// account.go). The hot path reads one atomic value per action.
package overload

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	downstreamconnectionsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	fixedheapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/stats"
)

// The overload actions Legate implements.
const (
	ShrinkHeap                = "envoy.overload_actions.shrink_heap"
	StopAcceptingRequests     = "envoy.overload_actions.stop_accepting_requests"
	DisableHTTPKeepalive      = "envoy.overload_actions.disable_http_keepalive"
	StopAcceptingConnections  = "envoy.overload_actions.stop_accepting_connections"
	RejectIncomingConnections = "envoy.overload_actions.reject_incoming_connections"
	ReduceTimeouts            = "envoy.overload_actions.reduce_timeouts"
	// ResetHighMemoryStream resets the streams holding the most buffer
	// memory (it needs buffer_factory_config).
	ResetHighMemoryStream = "envoy.overload_actions.reset_high_memory_stream"
	// ResetStreamsCount is Envoy's counter of the streams it reset (a root
	// stat, without the overload. prefix).
	ResetStreamsCount = "envoy.overload_actions.reset_high_memory_stream.count"
	fixedHeap         = "envoy.resource_monitors.fixed_heap"
)

var implemented = []string{ShrinkHeap, StopAcceptingRequests, DisableHTTPKeepalive, StopAcceptingConnections, RejectIncomingConnections, ReduceTimeouts, ResetHighMemoryStream}

// Timer is a timer reduce_timeouts scales (ScaleTimersOverloadActionConfig).
type Timer int

// The timers reduce_timeouts can scale.
const (
	// ConnIdle is the connection manager's idle_timeout.
	ConnIdle Timer = Timer(overloadv3.ScaleTimersOverloadActionConfig_HTTP_DOWNSTREAM_CONNECTION_IDLE)
	// StreamIdle is stream_idle_timeout.
	StreamIdle Timer = Timer(overloadv3.ScaleTimersOverloadActionConfig_HTTP_DOWNSTREAM_STREAM_IDLE)
	// TransportConnect is transport_socket_connect_timeout.
	TransportConnect Timer = Timer(overloadv3.ScaleTimersOverloadActionConfig_TRANSPORT_SOCKET_CONNECT)
	// ConnMax is max_connection_duration.
	ConnMax Timer = Timer(overloadv3.ScaleTimersOverloadActionConfig_HTTP_DOWNSTREAM_CONNECTION_MAX)
)

// timerMin is a scaled timer's minimum: a duration or a percentage of
// the configured one.
type timerMin struct {
	d       time.Duration
	percent float64
	isD     bool
}

// Manager runs the monitors and exposes the actions' state.
type Manager struct {
	refresh time.Duration
	// shrinkEvery and shrinkMax are shrink_heap's ShrinkHeapConfig: how
	// often it may release memory, and how much free heap it keeps.
	shrinkEvery time.Duration
	shrinkMax   uint64
	monitors    []*monitor
	actions     map[string]*action
	log         *slog.Logger
	stop        chan struct{}
	// maxConns is envoy.resource_monitors.global_downstream_max_connections'
	// max_active_downstream_connections (0: none).
	maxConns uint64
	// reduce and stopAccept are the actions read per request and per
	// accept, resolved once (nil: not configured).
	reduce, stopAccept *action
	// tracker holds the streams' buffer accounts (buffer_factory_config;
	// nil: no accounting), resetStreams the reset_high_memory_stream
	// action and resetCount its counter.
	tracker      *Tracker
	resetStreams *action
	resetCount   *stats.Counter
}

// Tracker is the streams' buffer memory tracker, nil when the bootstrap
// has no overload_manager.buffer_factory_config. Safe on a nil Manager.
func (m *Manager) Tracker() *Tracker {
	// Accounts only serve reset_high_memory_stream: without the action,
	// streams pay nothing for buffer_factory_config.
	if m == nil || m.resetStreams == nil {
		return nil
	}
	return m.tracker
}

// MaxDownstreamConnections is the global downstream connection limit of
// the downstream_connections monitor (0: none). Safe on a nil Manager.
func (m *Manager) MaxDownstreamConnections() uint64 {
	if m == nil {
		return 0
	}
	return m.maxConns
}

type monitor struct {
	name string
	// read measures the pressure, 0 (idle) to 1 (at the limit) or beyond.
	read     func() (float64, error)
	pressure atomic.Uint64 // pressure × 1e6
	gauge    *stats.Gauge  // overload.<name>.pressure, percent
	failed   *stats.Counter
}

type trigger struct {
	monitor *monitor
	// threshold (a threshold trigger) or scaling..saturation (scaled).
	threshold, scaling, saturation float64
	scaled                         bool
}

// value is the trigger's state for pressure p, 0 to 1: a threshold
// trigger is 0 or 1; a scaled one rises linearly from its scaling to its
// saturation threshold.
func (t trigger) value(p float64) float64 {
	switch {
	case !t.scaled:
		if p >= t.threshold {
			return 1
		}
		return 0
	case p >= t.saturation:
		return 1
	case p <= t.scaling:
		return 0
	}
	return (p - t.scaling) / (t.saturation - t.scaling)
}

type action struct {
	name     string
	triggers []trigger
	// value is the action's state × 1e6 (the largest of its triggers'):
	// binary actions are active at 1 (saturated), scaled timers shrink
	// with it.
	value  atomic.Uint64
	timers map[Timer]timerMin
	gauge  *stats.Gauge // overload.<name>.active
	scale  *stats.Gauge // overload.<name>.scale_percent
}

// Compile validates an overload_manager and builds a (not started)
// Manager; nil when the bootstrap has none.
func Compile(om *overloadv3.OverloadManager, st *stats.Store, log *slog.Logger) (*Manager, error) {
	if om == nil || (len(om.GetResourceMonitors()) == 0 && len(om.GetActions()) == 0) {
		return nil, nil
	}
	const path = "overload_manager"
	if err := config.CheckFields(om, path, "refresh_interval", "resource_monitors", "actions", "buffer_factory_config"); err != nil {
		return nil, err
	}
	m := &Manager{refresh: time.Second, shrinkEvery: 10 * time.Second, shrinkMax: 104857600, actions: map[string]*action{}, log: log, stop: make(chan struct{})}
	if bf := om.GetBufferFactoryConfig(); bf != nil {
		bp := config.Join(path, "buffer_factory_config")
		if err := config.CheckFields(bf, bp, "minimum_account_to_track_power_of_two"); err != nil {
			return nil, err
		}
		// As Envoy: 0 (unset) tracks nothing; validation bounds it to
		// [10, 56] otherwise.
		if p := bf.GetMinimumAccountToTrackPowerOfTwo(); p > 0 {
			m.tracker = NewTracker(p, log)
		}
	}
	if d := om.GetRefreshInterval(); d != nil {
		m.refresh = d.AsDuration()
	}
	byName := map[string]*monitor{}
	proactive := map[string]bool{}
	for i, rm := range om.GetResourceMonitors() {
		p := config.Index(config.Join(path, "resource_monitors"), i)
		if err := config.CheckFields(rm, p, "name", "typed_config"); err != nil {
			return nil, err
		}
		r, err := extension.Lookup(extension.ResourceMonitor, rm.GetTypedConfig(), config.Join(p, "typed_config"))
		if err != nil {
			return nil, err
		}
		mon, err := r.Ext.Factory.(monitorFactory)(m, rm.GetName(), r.Config, config.Join(p, "typed_config"), st)
		if err != nil {
			return nil, err
		}
		if mon == nil {
			proactive[rm.GetName()] = true
			continue
		}
		byName[rm.GetName()] = mon
		m.monitors = append(m.monitors, mon)
	}
	for i, a := range om.GetActions() {
		p := config.Index(config.Join(path, "actions"), i)
		if err := config.CheckFields(a, p, "name", "triggers", "typed_config"); err != nil {
			return nil, err
		}
		if !slices.Contains(implemented, a.GetName()) {
			return nil, config.Errorf(config.Join(p, "name"), "unsupported overload action %q (Legate implements %s)", a.GetName(), strings.Join(implemented, ", "))
		}
		act := &action{name: a.GetName(), gauge: st.Gauge("overload." + a.GetName() + ".active"), scale: st.Gauge("overload." + a.GetName() + ".scale_percent")}
		if a.GetName() == ResetHighMemoryStream {
			if om.GetBufferFactoryConfig() == nil {
				return nil, config.Errorf(config.Join(p, "name"), "overload action %q requires buffer_factory_config (set overload_manager.buffer_factory_config.minimum_account_to_track_power_of_two)", a.GetName())
			}
			m.resetCount = st.Counter(ResetStreamsCount)
		}
		if a.GetName() == ShrinkHeap {
			every, max, err := shrinkHeapConfig(a, p)
			if err != nil {
				return nil, err
			}
			m.shrinkEvery, m.shrinkMax = every, max
		} else if err := act.compileConfig(a, p); err != nil {
			return nil, err
		}
		for j, tr := range a.GetTriggers() {
			tp := config.Index(config.Join(p, "triggers"), j)
			mon := byName[tr.GetName()]
			if proactive[tr.GetName()] {
				return nil, config.Unsupported(config.Join(tp, "name"), "triggers on the downstream_connections monitor (it limits connections itself)")
			}
			if mon == nil {
				return nil, config.Errorf(config.Join(tp, "name"), "no resource monitor named %q", tr.GetName())
			}
			t := trigger{monitor: mon}
			switch x := tr.GetTriggerOneof().(type) {
			case *overloadv3.Trigger_Threshold:
				t.threshold = x.Threshold.GetValue()
			case *overloadv3.Trigger_Scaled:
				t.scaled, t.scaling, t.saturation = true, x.Scaled.GetScalingThreshold(), x.Scaled.GetSaturationThreshold()
				if t.scaling >= t.saturation {
					return nil, config.Errorf(config.Join(tp, "scaled"), "scaling_threshold (%g) must be below saturation_threshold (%g)", t.scaling, t.saturation)
				}
			default:
				return nil, config.Errorf(tp, "a trigger needs threshold or scaled")
			}
			act.triggers = append(act.triggers, t)
		}
		m.actions[a.GetName()] = act
	}
	m.reduce, m.stopAccept = m.actions[ReduceTimeouts], m.actions[StopAcceptingConnections]
	m.resetStreams = m.actions[ResetHighMemoryStream]
	return m, nil
}

// monitorFactory compiles a resource monitor (the Factory of an
// extension.ResourceMonitor registration); a proactive monitor, which
// limits as resources are taken rather than being sampled, returns nil.
type monitorFactory func(m *Manager, name string, cfg proto.Message, path string, st *stats.Store) (*monitor, error)

// shrinkHeapConfig reads shrink_heap's optional ShrinkHeapConfig, with
// Envoy's defaults: a release at most every 10 s, of the free heap above
// 100 MiB (tcmalloc's ReleaseMemoryToSystem threshold; here the Go heap's
// free, unreleased spans).
func shrinkHeapConfig(oa *overloadv3.OverloadAction, path string) (time.Duration, uint64, error) {
	every, max := 10*time.Second, uint64(104857600)
	tc := oa.GetTypedConfig()
	if tc == nil {
		return every, max, nil
	}
	var sc overloadv3.ShrinkHeapConfig
	if err := tc.UnmarshalTo(&sc); err != nil {
		return 0, 0, config.Errorf(config.Join(path, "typed_config"), "%s takes an envoy.config.overload.v3.ShrinkHeapConfig: %v", oa.GetName(), err)
	}
	if d := sc.GetTimerInterval(); d != nil {
		every = d.AsDuration()
		if every <= 0 {
			return 0, 0, config.Errorf(config.Join(path, "typed_config.timer_interval"), "must be greater than 0")
		}
	}
	if v := sc.GetMaxUnfreedMemoryBytes(); v != nil {
		max = v.GetValue()
	}
	return every, max, nil
}

// compileConfig reads an action's typed_config: only reduce_timeouts has
// one (ScaleTimersOverloadActionConfig).
func (a *action) compileConfig(oa *overloadv3.OverloadAction, path string) error {
	tc := oa.GetTypedConfig()
	if a.name != ReduceTimeouts {
		if tc != nil {
			return config.Errorf(config.Join(path, "typed_config"), "%s takes no typed_config", a.name)
		}
		return nil
	}
	if tc == nil {
		return config.Errorf(config.Join(path, "typed_config"), "%s needs a ScaleTimersOverloadActionConfig", a.name)
	}
	var sc overloadv3.ScaleTimersOverloadActionConfig
	if err := tc.UnmarshalTo(&sc); err != nil {
		return config.Errorf(config.Join(path, "typed_config"), "%s needs a envoy.config.overload.v3.ScaleTimersOverloadActionConfig: %v", a.name, err)
	}
	if err := config.Validate(&sc, config.Join(path, "typed_config")); err != nil {
		return err
	}
	a.timers = map[Timer]timerMin{}
	for i, t := range sc.GetTimerScaleFactors() {
		tp := config.Index(config.Join(path, "typed_config.timer_scale_factors"), i)
		tm := Timer(t.GetTimer())
		switch tm {
		case ConnIdle, StreamIdle, TransportConnect, ConnMax:
		default:
			return config.Unsupported(config.Join(tp, "timer"), "scaling "+t.GetTimer().String(), "HTTP_DOWNSTREAM_CONNECTION_IDLE", "HTTP_DOWNSTREAM_STREAM_IDLE", "TRANSPORT_SOCKET_CONNECT", "HTTP_DOWNSTREAM_CONNECTION_MAX")
		}
		var m timerMin
		switch x := t.GetOverloadAdjust().(type) {
		case *overloadv3.ScaleTimersOverloadActionConfig_ScaleTimer_MinTimeout:
			m = timerMin{d: x.MinTimeout.AsDuration(), isD: true}
		case *overloadv3.ScaleTimersOverloadActionConfig_ScaleTimer_MinScale:
			m = timerMin{percent: x.MinScale.GetValue()}
		}
		a.timers[tm] = m
	}
	return nil
}

// Scale is d under the reduce_timeouts action, as Envoy's scaled timers:
// the configured duration at scale 0, the timer's minimum when saturated,
// linear between. Safe on a nil Manager.
func (m *Manager) Scale(t Timer, d time.Duration) time.Duration {
	if m == nil || d <= 0 {
		return d
	}
	a := m.reduce
	if a == nil {
		return d
	}
	mn, ok := a.timers[t]
	v := float64(a.value.Load()) / 1e6
	if !ok || v == 0 {
		return d
	}
	lo := mn.d
	if !mn.isD {
		lo = time.Duration(float64(d) * mn.percent / 100)
	}
	if lo >= d {
		return d
	}
	return lo + time.Duration(float64(d-lo)*(1-v))
}

func fixedHeapMonitor(_ *Manager, name string, cfg proto.Message, path string, st *stats.Store) (*monitor, error) {
	fh := cfg.(*fixedheapv3.FixedHeapConfig)
	if fh.GetMaxHeapSizeBytes() == 0 {
		return nil, config.Errorf(config.Join(path, "max_heap_size_bytes"), "must be positive")
	}
	max := float64(fh.GetMaxHeapSizeBytes())
	return newMonitor(name, st, func() (float64, error) {
		used, err := heapBytes()
		return float64(used) / max, err
	}), nil
}

func newMonitor(name string, st *stats.Store, read func() (float64, error)) *monitor {
	// Envoy's skipped_updates counts updates skipped while the monitor's
	// previous one is pending; Legate's monitors answer synchronously, so
	// it stays 0.
	st.Counter("overload." + name + ".skipped_updates")
	return &monitor{name: name, read: read,
		gauge: st.Gauge("overload." + name + ".pressure"), failed: st.Counter("overload." + name + ".failed_updates")}
}

// downstreamConnectionsMonitor is proactive: the limit applies as
// connections are accepted (listeners with ignore_global_conn_limit
// excepted), counted in downstream_cx_overflow.
func downstreamConnectionsMonitor(m *Manager, _ string, cfg proto.Message, path string, _ *stats.Store) (*monitor, error) {
	dc := cfg.(*downstreamconnectionsv3.DownstreamConnectionsConfig)
	if dc.GetMaxActiveDownstreamConnections() <= 0 {
		return nil, config.Errorf(config.Join(path, "max_active_downstream_connections"), "must be positive")
	}
	m.maxConns = uint64(dc.GetMaxActiveDownstreamConnections())
	return nil, nil
}

// Active reports whether an action is on (saturated). Safe on a nil
// Manager.
func (m *Manager) Active(name string) bool {
	if m == nil {
		return false
	}
	a := m.actions[name]
	return a != nil && a.value.Load() >= 1e6
}

// StopAccepting reports whether listeners should stop accepting
// connections (stop_accepting_connections). Safe on a nil Manager.
func (m *Manager) StopAccepting() bool {
	return m != nil && m.stopAccept != nil && m.stopAccept.value.Load() >= 1e6
}

// Start samples the monitors every refresh_interval until Stop.
func (m *Manager) Start() {
	if m == nil {
		return
	}
	m.update()
	go func() {
		t := time.NewTicker(m.refresh)
		defer t.Stop()
		lastShrink := time.Time{}
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
			m.update()
			if m.Active(ShrinkHeap) && time.Since(lastShrink) >= m.shrinkEvery {
				// As Envoy: release free memory to the OS, at most every
				// timer_interval, when more than max_unfreed_memory_bytes of
				// it is held.
				if heapFreeBytes() > m.shrinkMax {
					debug.FreeOSMemory()
				}
				lastShrink = time.Now()
			}
		}
	}()
}

// heapFreeBytes is the Go heap's free memory not yet returned to the OS.
func heapFreeBytes() uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return sample[0].Value.Uint64()
}

// Stop ends sampling.
func (m *Manager) Stop() {
	if m != nil {
		close(m.stop)
	}
}

func init() {
	extension.Register(extension.Extension{Name: fixedHeap, Category: extension.ResourceMonitor,
		Config: &fixedheapv3.FixedHeapConfig{}, Factory: monitorFactory(fixedHeapMonitor)})
	extension.Register(extension.Extension{Name: "envoy.resource_monitors.global_downstream_max_connections",
		Aliases: []string{"envoy.resource_monitors.downstream_connections"}, Category: extension.ResourceMonitor,
		Config: &downstreamconnectionsv3.DownstreamConnectionsConfig{}, Factory: monitorFactory(downstreamConnectionsMonitor)})
}

var samples = []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}

// heapBytes is the memory the fixed_heap monitor counts: live heap
// objects and goroutine stacks.
func heapBytes() (uint64, error) {
	s := append([]metrics.Sample(nil), samples...)
	metrics.Read(s)
	var total uint64
	for _, x := range s {
		if x.Value.Kind() != metrics.KindUint64 {
			return 0, fmt.Errorf("runtime metric %s unavailable", x.Name)
		}
		total += x.Value.Uint64()
	}
	return total, nil
}

func (m *Manager) update() {
	for _, mon := range m.monitors {
		p, err := mon.read()
		if err != nil {
			// As Envoy: a failed update keeps the last pressure.
			mon.failed.Inc()
			m.log.Debug("resource monitor update failed", "monitor", mon.name, "error", err)
			continue
		}
		mon.pressure.Store(uint64(max(p, 0) * 1e6))
		mon.gauge.Set(int64(min(p, 1) * 100))
	}
	for _, a := range m.actions {
		v := 0.0
		for _, t := range a.triggers {
			v = max(v, t.value(float64(t.monitor.pressure.Load())/1e6))
		}
		nv := uint64(v * 1e6)
		old := a.value.Swap(nv)
		if a == m.resetStreams && old != nv {
			// As Envoy's worker callback: every change of the action's
			// state (a fall to 0 included, which still clears the top
			// bucket) resets the streams its value makes eligible.
			m.resetCount.Add(uint64(m.tracker.ResetGivenPressure(v)))
		}
		was := old >= 1e6
		on := nv >= 1e6
		if was != on {
			if on {
				m.log.Warn("overload action on", "action", a.name)
			} else {
				m.log.Info("overload action off", "action", a.name)
			}
		}
		active := int64(0)
		if on {
			active = 1
		}
		a.gauge.Set(active)
		a.scale.Set(int64(v * 100))
	}
}
