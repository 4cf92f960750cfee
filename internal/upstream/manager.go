package upstream

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/stats"
)

// Ref is a stable handle on a cluster by name. Routes hold Refs, so a
// cluster can be added, replaced or removed without recompiling routes;
// Get returns nil while no cluster has the name (503 NC).
type Ref struct {
	name string
	p    atomic.Pointer[Cluster]
}

// Name returns the referenced cluster name.
func (r *Ref) Name() string { return r.name }

// Get returns the current cluster, or nil.
func (r *Ref) Get() *Cluster { return r.p.Load() }

// Manager owns the running clusters.
type Manager struct {
	deps     Deps
	mu       sync.RWMutex
	clusters map[string]*Cluster
	// byName mirrors clusters for Get without a lock: cluster_header
	// routes and side calls look clusters up per request.
	byName sync.Map // string → *Cluster
	refs   map[string]*Ref
	// warming are clusters accepted over CDS that are not active yet:
	// routes may name them (Envoy validates against warming clusters too).
	warming map[string]bool
	st      *managerStats
}

// managerStats are Envoy's cluster_manager.* statistics: clusters added
// (static or CDS), modified and removed (CDS), and the active and warming
// ones now.
type managerStats struct {
	added, modified, removed *stats.Counter
	active, warming          *stats.Gauge
}

// NewManager returns an empty cluster manager.
func NewManager(deps Deps) *Manager {
	m := &Manager{deps: deps, clusters: map[string]*Cluster{}, refs: map[string]*Ref{}, warming: map[string]bool{}}
	if deps.Stats != nil {
		sc := deps.Stats.Scope("cluster_manager.")
		m.st = &managerStats{added: sc.Counter("cluster_added"), modified: sc.Counter("cluster_modified"), removed: sc.Counter("cluster_removed"),
			active: sc.Gauge("active_clusters"), warming: sc.Gauge("warming_clusters")}
		// Updates reach the balancers at once (update_merge_window's
		// merging is not done): none is merged, cancelled, or out of a
		// window; cluster_updated counts them (Cluster.rebuild).
		sc.Counter("cluster_updated")
		sc.Counter("cluster_updated_via_merge")
		sc.Counter("update_merge_cancelled")
		sc.Counter("update_out_of_merge_window")
	}
	return m
}

// counted updates the cluster_manager gauges (m.mu held).
func (m *Manager) counted() {
	if m.st != nil {
		m.st.active.Set(int64(len(m.clusters)))
		m.st.warming.Set(int64(len(m.warming)))
	}
}

// count adds to one of the cluster_manager counters (nil without stats).
func (m *Manager) count(pick func(*managerStats) *stats.Counter) {
	if m.st != nil {
		pick(m.st).Inc()
	}
}

// Deps returns the dependencies clusters are compiled with.
func (m *Manager) Deps() Deps { return m.deps }

// Ref returns the handle for name, creating it if needed.
func (m *Manager) Ref(name string) *Ref {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.refs[name]
	if r == nil {
		r = &Ref{name: name}
		r.p.Store(m.clusters[name])
		m.refs[name] = r
	}
	return r
}

// Get returns the running cluster called name, or nil.
func (m *Manager) Get(name string) *Cluster {
	if m == nil {
		return nil
	}
	if c, ok := m.byName.Load(name); ok {
		return c.(*Cluster)
	}
	return nil
}

// Has reports whether a cluster called name exists.
func (m *Manager) Has(name string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.clusters[name] != nil || m.warming[name]
}

// SetWarming marks a name as accepted and warming (or not any more).
func (m *Manager) SetWarming(name string, warming bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if warming {
		m.warming[name] = true
	} else {
		delete(m.warming, name)
	}
	m.counted()
}

// Clusters returns the running clusters sorted by name.
func (m *Manager) Clusters() []*Cluster {
	m.mu.RLock()
	out := make([]*Cluster, 0, len(m.clusters))
	for _, c := range m.clusters {
		out = append(out, c)
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Put starts c and makes it the cluster for its name, replacing (and
// closing) any previous one once c is initialized or warmTimeout passes.
// In-flight requests on the old cluster finish on their connections.
func (m *Manager) Put(c *Cluster, warmTimeout time.Duration) {
	Warm(c, warmTimeout)
	m.Install(c)
}

// Warm starts c and waits until it is initialized or warmTimeout passes
// (0: no wait).
func Warm(c *Cluster, warmTimeout time.Duration) {
	c.Start()
	if warmTimeout > 0 {
		select {
		case <-c.Ready():
		case <-time.After(warmTimeout):
		}
	}
}

// Install makes a started cluster the one of its name (closing the one it
// replaces).
func (m *Manager) Install(c *Cluster) {
	m.mu.Lock()
	old := m.clusters[c.Name]
	m.clusters[c.Name] = c
	m.byName.Store(c.Name, c)
	if r := m.refs[c.Name]; r != nil {
		r.p.Store(c)
	}
	if old == nil {
		m.count(func(s *managerStats) *stats.Counter { return s.added })
	} else if old != c {
		m.count(func(s *managerStats) *stats.Counter { return s.modified })
	}
	m.counted()
	m.mu.Unlock()
	if old != nil && old != c {
		old.Close()
	}
}

// Remove stops and removes the cluster called name.
func (m *Manager) Remove(name string) {
	m.mu.Lock()
	old := m.clusters[name]
	delete(m.clusters, name)
	m.byName.Delete(name)
	if r := m.refs[name]; r != nil {
		r.p.Store(nil)
	}
	if old != nil {
		m.count(func(s *managerStats) *stats.Counter { return s.removed })
	}
	m.counted()
	m.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

// CloseAll stops every cluster.
func (m *Manager) CloseAll() {
	for _, c := range m.Clusters() {
		c.Close()
	}
}

func (c *Cluster) closed() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// edsDiscovery waits for SetLoadAssignment.
type edsDiscovery struct{}

func (edsDiscovery) run(*Cluster) {}

// SetLoadAssignment replaces an EDS cluster's endpoints. Only this
// cluster's host set is rebuilt.
// ValidateLoadAssignment checks an EDS assignment as SetLoadAssignment
// would, without applying it: an xDS update is validated whole before any
// of it applies.
func ValidateLoadAssignment(la *endpointv3.ClusterLoadAssignment, path string) error {
	specs, err := hostsFromAssignment(la, path)
	if err != nil {
		return err
	}
	if err := config.CheckFields(la, path, "cluster_name", "endpoints", "policy"); err != nil {
		return err
	}
	_, err = staticHosts(specs, path)
	return err
}

func (c *Cluster) SetLoadAssignment(la *endpointv3.ClusterLoadAssignment) error {
	if !c.EDS {
		return fmt.Errorf("cluster %s is not an EDS cluster", c.Name)
	}
	specs, err := hostsFromAssignment(la, "cluster_load_assignment")
	if err != nil {
		return err
	}
	if err := config.CheckFields(la, "cluster_load_assignment", "cluster_name", "endpoints", "policy"); err != nil {
		return err
	}
	hosts, err := staticHosts(specs, "cluster_load_assignment")
	if err != nil {
		return err
	}
	c.Stats.updateAttempt.Inc()
	c.Stats.updateSuccess.Inc()
	c.mu.Lock()
	c.setHosts(hosts)
	c.mu.Unlock()
	if c.health == nil {
		c.markReady()
	}
	return nil
}

// Register adds a compiled cluster without starting it (static clusters
// are started together by the server, which then waits for them).
func (m *Manager) Register(c *Cluster) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.clusters[c.Name] == nil {
		m.count(func(s *managerStats) *stats.Counter { return s.added })
	}
	m.clusters[c.Name] = c
	m.byName.Store(c.Name, c)
	if r := m.refs[c.Name]; r != nil {
		r.p.Store(c)
	}
	m.counted()
}
