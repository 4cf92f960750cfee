// Package overload is Envoy's overload manager: resource monitors measure
// pressure (0 to 1) every refresh_interval, and overload actions switch
// on when a trigger's threshold is reached — shedding new requests,
// closing keep-alive connections, returning memory to the OS.
//
// Supported: the fixed_heap monitor (the Go heap and goroutine stacks
// against max_heap_size_bytes), threshold and scaled triggers (a scaled
// trigger counts as active from its saturation threshold), and the actions
// shrink_heap, stop_accepting_requests and disable_http_keepalive. The hot
// path reads one atomic flag per action.
package overload

import (
	"fmt"
	"google.golang.org/protobuf/proto"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"

	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	downstreamconnectionsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	fixedheapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/stats"
)

// The overload actions Legate implements.
const (
	ShrinkHeap            = "envoy.overload_actions.shrink_heap"
	StopAcceptingRequests = "envoy.overload_actions.stop_accepting_requests"
	DisableHTTPKeepalive  = "envoy.overload_actions.disable_http_keepalive"
	fixedHeap             = "envoy.resource_monitors.fixed_heap"
)

// Manager runs the monitors and exposes the actions' state.
type Manager struct {
	refresh  time.Duration
	monitors []*monitor
	actions  map[string]*action
	log      *slog.Logger
	stop     chan struct{}
	// maxConns is envoy.resource_monitors.global_downstream_max_connections'
	// max_active_downstream_connections (0: none).
	maxConns uint64
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
	name     string
	maxBytes uint64
	pressure atomic.Uint64 // math.Float64bits
	gauge    *stats.Gauge  // overload.<name>.pressure, percent
	failed   *stats.Counter
}

type trigger struct {
	monitor   *monitor
	threshold float64
}

type action struct {
	name     string
	triggers []trigger
	active   atomic.Bool
	gauge    *stats.Gauge // overload.<name>.active
	scale    *stats.Gauge // overload.<name>.scale_percent
}

// Compile validates an overload_manager and builds a (not started)
// Manager; nil when the bootstrap has none.
func Compile(om *overloadv3.OverloadManager, st *stats.Store, log *slog.Logger) (*Manager, error) {
	if om == nil || (len(om.GetResourceMonitors()) == 0 && len(om.GetActions()) == 0) {
		return nil, nil
	}
	const path = "overload_manager"
	if err := config.CheckFields(om, path, "refresh_interval", "resource_monitors", "actions"); err != nil {
		return nil, err
	}
	m := &Manager{refresh: time.Second, actions: map[string]*action{}, log: log, stop: make(chan struct{})}
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
		if err := config.CheckFields(a, p, "name", "triggers"); err != nil {
			return nil, err
		}
		switch a.GetName() {
		case ShrinkHeap, StopAcceptingRequests, DisableHTTPKeepalive:
		default:
			return nil, config.Errorf(config.Join(p, "name"), "unsupported overload action %q (Legate implements %s, %s, %s)", a.GetName(), ShrinkHeap, StopAcceptingRequests, DisableHTTPKeepalive)
		}
		act := &action{name: a.GetName(), gauge: st.Gauge("overload." + a.GetName() + ".active"), scale: st.Gauge("overload." + a.GetName() + ".scale_percent")}
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
				// Binary actions: active from the saturation threshold.
				t.threshold = x.Scaled.GetSaturationThreshold()
			default:
				return nil, config.Errorf(tp, "a trigger needs threshold or scaled")
			}
			act.triggers = append(act.triggers, t)
		}
		m.actions[a.GetName()] = act
	}
	return m, nil
}

// monitorFactory compiles a resource monitor (the Factory of an
// extension.ResourceMonitor registration); a proactive monitor, which
// limits as resources are taken rather than being sampled, returns nil.
type monitorFactory func(m *Manager, name string, cfg proto.Message, path string, st *stats.Store) (*monitor, error)

func fixedHeapMonitor(_ *Manager, name string, cfg proto.Message, path string, st *stats.Store) (*monitor, error) {
	fh := cfg.(*fixedheapv3.FixedHeapConfig)
	if fh.GetMaxHeapSizeBytes() == 0 {
		return nil, config.Errorf(config.Join(path, "max_heap_size_bytes"), "must be positive")
	}
	return &monitor{name: name, maxBytes: fh.GetMaxHeapSizeBytes(),
		gauge: st.Gauge("overload." + name + ".pressure"), failed: st.Counter("overload." + name + ".failed_updates")}, nil
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

// Active reports whether an action is on. Safe on a nil Manager.
func (m *Manager) Active(name string) bool {
	if m == nil {
		return false
	}
	a := m.actions[name]
	return a != nil && a.active.Load()
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
			if m.Active(ShrinkHeap) && time.Since(lastShrink) >= 10*time.Second {
				// As Envoy: release free memory to the OS, at most every 10 s.
				debug.FreeOSMemory()
				lastShrink = time.Now()
			}
		}
	}()
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
	used, err := heapBytes()
	for _, mon := range m.monitors {
		if err != nil {
			mon.failed.Inc()
			continue
		}
		p := float64(used) / float64(mon.maxBytes)
		mon.pressure.Store(uint64(p * 1e6))
		mon.gauge.Set(int64(min(p, 1) * 100))
	}
	for _, a := range m.actions {
		on := false
		for _, t := range a.triggers {
			if float64(t.monitor.pressure.Load())/1e6 >= t.threshold {
				on = true
			}
		}
		if a.active.Swap(on) != on {
			if on {
				m.log.Warn("overload action on", "action", a.name)
			} else {
				m.log.Info("overload action off", "action", a.name)
			}
		}
		v := int64(0)
		if on {
			v = 1
		}
		a.gauge.Set(v)
		a.scale.Set(v * 100)
	}
}
