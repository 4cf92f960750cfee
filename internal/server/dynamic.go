package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/hcm"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/tlsx"
	"github.com/legateproxy/legate/internal/upstream"
	xdsclient "github.com/legateproxy/legate/internal/xds/client"
	"github.com/legateproxy/legate/internal/xds/refs"
	"github.com/legateproxy/legate/internal/xds/resource"
	"github.com/legateproxy/legate/internal/xds/source"
)

// dynamic holds what xDS (or watched files, or REST polls) configure. Every
// type follows one path: the transport decodes and validates every
// resource once (package resource) and hands the type's handler the
// complete current set; the handler compiles every changed resource into a
// value with no side effects — any error rejects
// the whole update (NACK) and nothing changes; only then is the update
// applied, and the subscriptions it implies (RDS for the accepted
// listeners, EDS and SDS for the accepted clusters and listeners) follow
// the accepted set: added, changed and removed (see reconcileLocked).
type dynamic struct {
	s       *Server
	sources *source.Manager
	// serial runs one handler at a time (compile and apply), as Envoy's
	// main thread does: a compile never races another update's apply.
	serial sync.Mutex

	cdsSource, ldsSource *corev3.ConfigSource
	ready                []<-chan struct{} // first CDS and LDS responses
	initialFetch         time.Duration     // bound on the initial CDS/LDS fetch

	eds, rds, sds *source.Watches

	mu         sync.Mutex
	generation uint64
	// static are the dependencies of static_resources (RDS of static
	// listeners, EDS of static EDS clusters, SDS of both).
	static []refs.Ref
	// CDS
	clusters   map[string]*dynCluster // active dynamic clusters by name
	warming    map[string]*dynCluster // warming, by name (newest only)
	edsLast    map[string]*endpointv3.ClusterLoadAssignment
	cdsVersion string
	// LDS
	listeners  map[string]*dynListener
	ldsVersion string
	// stopped is set at shutdown: no listener starts serving after it.
	stopped bool
	// RDS: route tables by route configuration name, shared by every HCM
	// that names it.
	routes map[string]*routeSub
}

// dynCluster is one accepted dynamic cluster, warming or active.
type dynCluster struct {
	c       *upstream.Cluster
	raw     []byte // serialized proto, to skip unchanged clusters
	version string
	deps    []refs.Ref
	gen     uint64 // when it was accepted
}

// dynListener is one accepted dynamic listener, warming or active.
type dynListener struct {
	l       *listener.Listener
	raw     []byte
	version string
	warming bool
	deps    []refs.Ref
	gen     uint64
	// warmed is closed when warming ends (serving, or replaced or removed
	// first).
	warmed chan struct{}
	// replaces is, while l warms, the active listener of the same name it
	// will replace: it keeps serving until l is warm, then drains (Envoy's
	// full listener update).
	replaces *listener.Listener
}

// routeSub is one route configuration's table and its RDS state.
type routeSub struct {
	ptr     *atomic.Pointer[route.Table]
	stats   *xdsclient.Stats
	version string
	updated time.Time
	raw     []byte
	ready   chan struct{} // closed at the first accepted table
	once    sync.Once
}

func (rs *routeSub) markReady() { rs.once.Do(func() { close(rs.ready) }) }

// newDynamic creates the xDS state of a server; staticClusters are the
// names of static_resources.clusters (xDS servers are reached through
// them).
func newDynamic(s *Server, staticClusters map[string]bool) *dynamic {
	d := &dynamic{s: s, clusters: map[string]*dynCluster{}, warming: map[string]*dynCluster{},
		edsLast: map[string]*endpointv3.ClusterLoadAssignment{}, listeners: map[string]*dynListener{},
		routes: map[string]*routeSub{}, initialFetch: source.DefaultInitialFetchTimeout}
	d.sources = source.New(source.Options{Node: s.Bootstrap.GetNode(), Stats: s.Stats, Log: s.log,
		Clusters: clusterAccess{s, &sync.Map{}}, StaticCluster: func(n string) bool { return staticClusters[n] }})
	d.eds = source.NewWatches(xdsclient.EndpointType, xdsclient.HandlerFunc(d.updateEndpoints), nil)
	d.rds = source.NewWatches(xdsclient.RouteType, routesHandler{d}, nil)
	d.sds = source.NewWatches(xdsclient.SecretType, xdsclient.HandlerFunc(d.updateSecrets), nil)
	return d
}

// setupDynamic validates dynamic_resources: the ADS stream (created now,
// so static clusters can take SDS over it) and the CDS and LDS sources
// (subscribed by start).
func (d *dynamic) setupDynamic(dr *bootstrapv3.Bootstrap_DynamicResources) error {
	if err := config.CheckFields(dr, "dynamic_resources", "lds_config", "cds_config", "ads_config"); err != nil {
		return err
	}
	if ac := dr.GetAdsConfig(); ac != nil {
		if err := d.sources.SetADS(ac, "dynamic_resources.ads_config"); err != nil {
			return err
		}
	}
	if cs := dr.GetCdsConfig(); cs != nil {
		if err := d.sources.Check(cs, "dynamic_resources.cds_config", xdsclient.ClusterType); err != nil {
			return err
		}
		d.cdsSource = cs
		d.initialFetch = source.InitialFetchTimeout(cs)
	}
	if cs := dr.GetLdsConfig(); cs != nil {
		if err := d.sources.Check(cs, "dynamic_resources.lds_config", xdsclient.ListenerType); err != nil {
			return err
		}
		d.ldsSource = cs
		if cs.GetInitialFetchTimeout() != nil {
			d.initialFetch = source.InitialFetchTimeout(cs)
		}
	}
	return nil
}

// start subscribes the static resources' dependencies and CDS then LDS
// (Envoy's initialization order), then connects every transport.
func (d *dynamic) start(staticClusters []*upstream.Cluster, staticListeners []*listener.Listener) {
	d.mu.Lock()
	for _, c := range staticClusters {
		d.static = append(d.static, clusterDeps(c.Proto)...)
	}
	for _, l := range staticListeners {
		pl, _, _ := l.Current()
		d.static = append(d.static, refs.Of(pl)...)
	}
	d.reconcileLocked()
	d.mu.Unlock()
	d.s.startRTDS() // before CDS, as Envoy
	if d.cdsSource != nil {
		d.subscribeWildcard(d.cdsSource, "dynamic_resources.cds_config", xdsclient.ClusterType, d.updateClusters, "cluster_manager.cds.")
	}
	if d.ldsSource != nil {
		d.subscribeWildcard(d.ldsSource, "dynamic_resources.lds_config", xdsclient.ListenerType, d.updateListeners, "listener_manager.lds.")
	}
	d.sources.Start()
}

func (d *dynamic) subscribeWildcard(cs *corev3.ConfigSource, path, typeURL string, h xdsclient.HandlerFunc, statPrefix string) {
	t, err := d.sources.Resolve(cs, path, typeURL)
	if err != nil { // checked by setupDynamic
		d.s.log.Error("xDS source", "path", path, "error", err)
		return
	}
	t.Subscribe(typeURL, nil, h, xdsclient.NewStats(d.s.Stats.Scope(statPrefix)))
	d.ready = append(d.ready, t.Received(typeURL))
}

// waitStatic waits, bounded by each source's initial_fetch_timeout, for
// what static listeners need before they accept: their RDS route tables
// and SDS secrets (Envoy's init manager holds them likewise).
func (d *dynamic) waitStatic() {
	d.mu.Lock()
	deps := append([]refs.Ref(nil), d.static...)
	d.mu.Unlock()
	d.waitDeps(deps)
}

// waitDeps waits for RDS tables and SDS secrets to arrive, each bounded by
// its source's initial_fetch_timeout (0: no bound... as Envoy, which then
// waits forever; Legate caps it at 15 s so a typo cannot hang start-up).
func (d *dynamic) waitDeps(deps []refs.Ref) {
	for _, r := range deps {
		var ch <-chan struct{}
		switch r.TypeURL {
		case xdsclient.RouteType:
			d.mu.Lock()
			if rs := d.routes[r.Name]; rs != nil {
				ch = rs.ready
			}
			d.mu.Unlock()
		case xdsclient.SecretType:
			ch = d.s.secrets.Get(r.Name).Ready()
		}
		if ch == nil {
			continue
		}
		timeout := source.InitialFetchTimeout(r.Source)
		if timeout <= 0 {
			timeout = source.DefaultInitialFetchTimeout
		}
		t := time.NewTimer(timeout)
		select {
		case <-ch:
		case <-t.C:
			d.s.log.Warn("initial fetch timed out; continuing without it", "type", resource.ShortType(r.TypeURL), "name", r.Name, "initial_fetch_timeout", timeout)
		}
		t.Stop()
	}
}

// waitInitial waits for the first CDS and LDS responses, then for the
// listeners they brought to warm, bounded by initial_fetch_timeout, as
// Envoy's initialization does.
func (d *dynamic) waitInitial() {
	var deadline *time.Timer
	if d.initialFetch > 0 {
		deadline = time.NewTimer(d.initialFetch)
	} else {
		deadline = time.NewTimer(time.Duration(1<<63 - 1)) // 0s: no bound
	}
	defer deadline.Stop()
	for _, ch := range d.ready {
		select {
		case <-ch:
		case <-deadline.C:
			d.s.log.Warn("initial xDS fetch timed out; continuing without it", "initial_fetch_timeout", d.initialFetch)
			return
		}
	}
	d.mu.Lock()
	var warming []*dynListener
	for _, dl := range d.listeners {
		if dl.warming {
			warming = append(warming, dl)
		}
	}
	d.mu.Unlock()
	for _, dl := range warming {
		select {
		case <-dl.warmed:
		case <-deadline.C:
			return
		}
	}
}

// stop ends the xDS subscriptions and releases the sockets of warming
// listeners; no listener starts serving after it.
func (d *dynamic) stop() {
	d.sources.Stop()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopped = true
	for _, dl := range d.listeners {
		if dl.warming {
			dl.l.StopAccepting()
		}
	}
}

// reconcileLocked makes the RDS, EDS and SDS subscriptions exactly those
// the static resources and the accepted (active or warming) dynamic
// listeners and clusters depend on, and drops route tables no listener
// names any more. Called after every accepted update.
func (d *dynamic) reconcileLocked() {
	deps := append([]refs.Ref(nil), d.static...)
	for _, dl := range d.listeners {
		deps = append(deps, dl.deps...)
	}
	for _, dc := range d.clusters {
		deps = append(deps, dc.deps...)
	}
	for _, dc := range d.warming {
		deps = append(deps, dc.deps...)
	}
	want := map[string]map[source.Transport][]string{}
	routes := map[string]bool{}
	for _, r := range deps {
		t, err := d.sources.Resolve(r.Source, resource.ShortType(r.TypeURL)+" "+r.Name, r.TypeURL)
		if err != nil { // checked when the resource compiled
			d.s.log.Error("xDS dependency has a bad config source", "type", resource.ShortType(r.TypeURL), "name", r.Name, "error", err)
			continue
		}
		if want[r.TypeURL] == nil {
			want[r.TypeURL] = map[source.Transport][]string{}
		}
		want[r.TypeURL][t] = append(want[r.TypeURL][t], r.Name)
		if r.TypeURL == xdsclient.RouteType {
			routes[r.Name] = true
		}
	}
	for name := range d.routes {
		if !routes[name] {
			delete(d.routes, name)
		}
	}
	d.rds.Set(want[xdsclient.RouteType])
	d.eds.Set(want[xdsclient.EndpointType])
	d.sds.Set(want[xdsclient.SecretType])
}

// clusterDeps are a cluster's EDS and SDS dependencies.
func clusterDeps(pc *clusterv3.Cluster) []refs.Ref {
	deps := refs.Of(pc)
	if r, ok := refs.EDS(pc); ok {
		deps = append(deps, r)
	}
	return deps
}

// --- CDS ---

// updateClusters applies a complete set of dynamic clusters: compile all
// (rejecting the whole update on any error), then add or replace changed
// ones — each warms (EDS endpoints, SDS secrets, first DNS resolution and
// health check round) before it replaces the running one — and remove the
// ones that are gone.
func (d *dynamic) updateClusters(version string, resources map[string]*resource.Decoded) error {
	d.serial.Lock()
	defer d.serial.Unlock()
	var next []*dynCluster
	var errs config.ErrorList
	for _, name := range sortedKeys(resources) {
		r := resources[name]
		// The newest accepted version of the name: warming, else active.
		d.mu.Lock()
		newest := d.warming[name]
		if newest == nil {
			newest = d.clusters[name]
		}
		d.mu.Unlock()
		if d.s.Clusters.Get(name) != nil && newest == nil {
			errs = append(errs, config.Errorf("cluster "+name, "a static cluster of that name exists"))
			continue
		}
		if newest != nil && string(newest.raw) == string(r.Raw) {
			continue // unchanged: nothing is rebuilt
		}
		pc, err := resource.As[*clusterv3.Cluster](r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := d.checkEDSConfig(pc, "cluster "+name); err != nil {
			errs = append(errs, err)
			continue
		}
		c, err := upstream.Compile(pc, "cluster "+name, d.s.Clusters.Deps())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.AddedViaAPI, c.VersionInfo = true, version
		next = append(next, &dynCluster{c: c, raw: r.Raw, version: version, deps: clusterDeps(pc)})
	}
	if len(errs) > 0 {
		return errs
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cdsVersion = version
	for _, dc := range next {
		d.generation++
		dc.gen = d.generation
		name := dc.c.Name
		if dc.c.EDS {
			if la := d.edsLast[edsServiceName(dc.c.Proto)]; la != nil {
				dc.c.SetLoadAssignment(la)
			}
		}
		// Every new or changed cluster warms before it replaces the
		// running one, so no request meets an empty cluster; a newer
		// version replaces one still warming (which warmCluster then
		// closes).
		d.warming[name] = dc
		d.s.Clusters.SetWarming(name, true)
	}
	for name := range d.clusters {
		if _, ok := resources[name]; !ok {
			delete(d.clusters, name)
			d.s.Clusters.Remove(name)
		}
	}
	for name := range d.warming {
		if _, ok := resources[name]; !ok {
			delete(d.warming, name)
			d.s.Clusters.SetWarming(name, false)
		}
	}
	d.reconcileLocked()
	for _, dc := range next {
		go d.warmCluster(dc)
	}
	return nil
}

// checkEDSConfig checks an EDS cluster's eds_config source.
func (d *dynamic) checkEDSConfig(pc *clusterv3.Cluster, path string) error {
	ec := pc.GetEdsClusterConfig()
	if pc.GetType() != clusterv3.Cluster_EDS {
		return nil
	}
	p := config.Join(path, "eds_cluster_config")
	if ec == nil || ec.GetEdsConfig() == nil {
		return config.Errorf(config.Join(p, "eds_config"), "an EDS cluster needs eds_cluster_config.eds_config")
	}
	if err := config.CheckFields(ec, p, "eds_config", "service_name"); err != nil {
		return err
	}
	return d.sources.Check(ec.GetEdsConfig(), config.Join(p, "eds_config"), xdsclient.EndpointType)
}

func edsServiceName(pc *clusterv3.Cluster) string {
	if n := pc.GetEdsClusterConfig().GetServiceName(); n != "" {
		return n
	}
	return pc.GetName()
}

// warmCluster starts a cluster and makes it active once it is initialized
// — its SDS secrets and EDS endpoints arrived, or each source's
// initial_fetch_timeout passed — while the previous cluster of that name
// keeps serving.
func (d *dynamic) warmCluster(dc *dynCluster) {
	d.waitDeps(dc.deps)
	timeout := d.initialFetch
	if r, ok := refs.EDS(dc.c.Proto); ok {
		timeout = source.InitialFetchTimeout(r.Source)
	}
	upstream.Warm(dc.c, timeout)
	d.mu.Lock()
	defer d.mu.Unlock()
	// Only the newest accepted version of a cluster that is still wanted
	// goes in: one removed or replaced while it warmed is dropped (it
	// would otherwise come back, or undo the newer update).
	if cur := d.warming[dc.c.Name]; cur == nil || cur.gen != dc.gen {
		dc.c.Close()
		return
	}
	delete(d.warming, dc.c.Name)
	d.clusters[dc.c.Name] = dc
	d.s.Clusters.Install(dc.c)
	d.s.Clusters.SetWarming(dc.c.Name, false)
}

// --- EDS ---

func (d *dynamic) updateEndpoints(version string, resources map[string]*resource.Decoded) error {
	d.serial.Lock()
	defer d.serial.Unlock()
	las := map[string]*endpointv3.ClusterLoadAssignment{}
	var errs config.ErrorList
	for _, name := range sortedKeys(resources) {
		la, err := resource.As[*endpointv3.ClusterLoadAssignment](resources[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Validated whole before anything applies: a bad assignment NACKs
		// the update without a partial apply.
		if err := upstream.ValidateLoadAssignment(la, "cluster_load_assignment "+name); err != nil {
			errs = append(errs, err)
			continue
		}
		las[name] = la
	}
	if len(errs) > 0 {
		return errs
	}
	type target struct {
		c  *upstream.Cluster
		la *endpointv3.ClusterLoadAssignment
	}
	var targets []target
	d.mu.Lock()
	for name, la := range las {
		if prev := d.edsLast[name]; prev != nil && proto.Equal(prev, la) {
			continue // unchanged endpoints: nothing to rebuild
		}
		d.edsLast[name] = la
		for _, c := range d.edsClustersLocked(name) {
			targets = append(targets, target{c, la})
		}
	}
	d.mu.Unlock()
	for _, t := range targets {
		if err := t.c.SetLoadAssignment(t.la); err != nil {
			// Validated above; a failure here is a bug, not bad input.
			d.s.log.Error("EDS assignment failed to apply", "cluster", t.c.Name, "error", err)
		}
	}
	return nil
}

// edsClustersLocked returns the EDS clusters (static, active and warming
// dynamic) fed by a service name.
func (d *dynamic) edsClustersLocked(service string) []*upstream.Cluster {
	var out []*upstream.Cluster
	for _, c := range d.s.staticClusters {
		if c.EDS && edsServiceName(c.Proto) == service {
			out = append(out, c)
		}
	}
	for _, m := range []map[string]*dynCluster{d.clusters, d.warming} {
		for _, dc := range m {
			if dc.c.EDS && edsServiceName(dc.c.Proto) == service {
				out = append(out, dc.c)
			}
		}
	}
	return out
}

// --- LDS ---

func (d *dynamic) updateListeners(version string, resources map[string]*resource.Decoded) error {
	d.serial.Lock()
	defer d.serial.Unlock()
	var next []*dynListener
	var errs config.ErrorList
	addrs := map[string]string{}
	for _, l := range d.s.staticListeners() {
		addrs[l.AddressKey()] = l.Name
	}
	for _, name := range sortedKeys(resources) {
		r := resources[name]
		d.mu.Lock()
		cur := d.listeners[name]
		d.mu.Unlock()
		if cur != nil && string(cur.raw) == string(r.Raw) {
			addrs[cur.l.AddressKey()] = name
			continue
		}
		pl, err := resource.As[*listenerv3.Listener](r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		l, err := listener.Compile(pl, "listener "+name, d.s.deps)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Port 0 binds a new port for each listener: no conflict.
		if other, dup := addrs[l.AddressKey()]; dup && other != name && !portZero(l.Address) {
			errs = append(errs, config.Errorf("listener "+name, "address %s is already used by listener %q", l.Address, other))
			continue
		}
		addrs[l.AddressKey()] = name
		l.VersionInfo = version
		next = append(next, &dynListener{l: l, raw: r.Raw, version: version, deps: refs.Of(pl)})
	}
	if len(errs) > 0 {
		d.mu.Lock()
		d.reconcileLocked() // drops route tables only the rejected listeners named
		d.mu.Unlock()
		return errs
	}
	defer d.s.refreshListenerStats() // after the unlock below
	d.mu.Lock()
	defer d.mu.Unlock()
	// Only a change of the filter chains of an active listener is applied
	// in place (Envoy's "filter chain only update"); any other change — a
	// listener-level setting, a listener still warming, a new name —
	// makes a new listener, which warms and then takes over the socket.
	inPlace := map[*dynListener]*dynListener{}
	var bound []*listener.Listener
	for _, dl := range next {
		cur := d.listeners[dl.l.Name]
		if cur != nil && !cur.warming {
			if pl, _, _ := cur.l.Current(); listener.FilterChainOnlyChange(pl, dl.l.Proto) {
				inPlace[dl] = cur
				continue
			}
		}
		// As Envoy, the socket is taken when the listener is added, before
		// it warms: the one already open on the address (held by the
		// listener this one replaces, or by one this update removes — a
		// rename), else a new one. A bind error rejects the update with
		// nothing changed.
		var prev *listener.Listener
		if cur != nil {
			prev = cur.l
		}
		if err := dl.l.BindReplacing(prev); err != nil {
			errs = append(errs, fmt.Errorf("listener %s: %w", dl.l.Name, err))
			continue
		}
		bound = append(bound, dl.l)
	}
	if len(errs) > 0 {
		for _, l := range bound {
			l.StopAccepting()
		}
		d.reconcileLocked()
		return errs
	}
	d.ldsVersion = version
	var warm []*dynListener
	for _, dl := range next {
		d.generation++
		dl.gen = d.generation
		name := dl.l.Name
		if cur := inPlace[dl]; cur != nil {
			// The socket and the listener stay; connections on chains that
			// changed drain. Swapped now, in the order updates are accepted.
			cur.l.Update(dl.l, d.s.opts.DrainTime)
			cur.raw, cur.version, cur.deps, cur.gen = dl.raw, version, dl.deps, dl.gen
			continue
		}
		if cur := d.listeners[name]; cur != nil {
			if cur.warming {
				// A newer version replaces one still warming, which never
				// served: it lets go of its socket (dl holds it now); the
				// active one it was to replace serves until dl is warm.
				dl.replaces = cur.replaces
				cur.l.StopAccepting()
			} else {
				dl.replaces = cur.l
			}
		}
		dl.warming, dl.warmed = true, make(chan struct{})
		d.listeners[name] = dl
		warm = append(warm, dl)
	}
	for name, dl := range d.listeners {
		if _, ok := resources[name]; !ok {
			// Removed: it stops accepting now and drains. Its socket closes
			// unless a listener added in this update took it (a rename).
			delete(d.listeners, name)
			go dl.l.Drain(d.s.opts.DrainTime)
			if dl.replaces != nil {
				go dl.replaces.Drain(d.s.opts.DrainTime)
			}
		}
	}
	d.reconcileLocked()
	for _, dl := range warm {
		go d.warmListener(dl)
	}
	return nil
}

// warmListener starts a new listener once its RDS route tables and SDS
// secrets have arrived (or their initial_fetch_timeout passes), as Envoy
// warms listeners. Its socket was taken when it was accepted; from now on
// new connections on it go to this listener, and the listener it replaces
// (attached to the same socket when the address is the same) stops
// accepting and drains: no connection is refused in between.
func (d *dynamic) warmListener(dl *dynListener) {
	defer close(dl.warmed)
	d.waitDeps(dl.deps)
	d.mu.Lock()
	if cur := d.listeners[dl.l.Name]; cur == nil || cur.gen != dl.gen || d.stopped {
		d.mu.Unlock()
		return // replaced or removed while warming (its socket is released)
	}
	if !dl.l.Start() {
		d.s.log.Error("dynamic listener could not start: its socket is closed", "listener", dl.l.Name)
	}
	old := dl.replaces
	dl.warming, dl.replaces = false, nil
	d.mu.Unlock()
	if old != nil {
		go old.Drain(d.s.opts.DrainTime)
	}
	d.s.refreshListenerStats()
}

// portZero reports whether a host:port address asks for any free port.
func portZero(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port == "0"
}

// --- RDS ---

// RouteTable returns the route table pointer for an HCM's rds config,
// shared by every HCM that names the route configuration. It only checks
// the config source: the subscription follows once the listener is
// accepted (reconcileLocked).
func (d *dynamic) RouteTable(rds *hcmv3.Rds, statPrefix, path string) (*atomic.Pointer[route.Table], error) {
	if err := config.CheckFields(rds, path, "config_source", "route_config_name"); err != nil {
		return nil, err
	}
	if rds.GetConfigSource() == nil {
		return nil, config.Errorf(config.Join(path, "config_source"), "rds needs a config_source")
	}
	if err := d.sources.Check(rds.GetConfigSource(), config.Join(path, "config_source"), xdsclient.RouteType); err != nil {
		return nil, err
	}
	name := rds.GetRouteConfigName()
	d.mu.Lock()
	defer d.mu.Unlock()
	if rs := d.routes[name]; rs != nil {
		return rs.ptr, nil
	}
	// Envoy's RDS statistics: http.<stat_prefix>.rds.<route_config_name>.*
	rs := &routeSub{ptr: &atomic.Pointer[route.Table]{}, ready: make(chan struct{}),
		stats: xdsclient.NewStats(d.s.Stats.Scope("http." + stats.SanitizeName(statPrefix) + ".rds." + stats.SanitizeName(name) + "."))}
	d.routes[name] = rs
	return rs.ptr, nil
}

// routesHandler is the RDS handler: updateRoutes, and the per-route
// statistics of updates the transport refused before it (a route
// configuration that failed to decode).
type routesHandler struct{ d *dynamic }

// Update applies an RDS update (updateRoutes).
func (h routesHandler) Update(version string, resources map[string]*resource.Decoded) error {
	return h.d.updateRoutes(version, resources)
}

// Rejected counts a refused update in the statistics of each route
// configuration it carried, as updateRoutes counts one it rejects.
func (h routesHandler) Rejected(names []string) {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	for _, name := range names {
		if rs := h.d.routes[name]; rs != nil {
			rs.stats.Attempt.Inc()
			rs.stats.Rejected.Inc()
		}
	}
}

func (d *dynamic) updateRoutes(version string, resources map[string]*resource.Decoded) error {
	d.serial.Lock()
	defer d.serial.Unlock()
	d.mu.Lock()
	subs := map[string]*routeSub{}
	for name := range resources {
		if rs := d.routes[name]; rs != nil {
			subs[name] = rs
			rs.stats.Attempt.Inc()
		}
	}
	d.mu.Unlock()
	tables := map[string]*route.Table{}
	var errs config.ErrorList
	for _, name := range sortedKeys(subs) {
		rs := subs[name]
		if string(rs.raw) == string(resources[name].Raw) {
			continue // unchanged
		}
		rc, err := resource.As[*routev3.RouteConfiguration](resources[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		t, err := route.Compile(rc, "route_configuration "+name, hcm.RouteOptions(d.s.deps))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		tables[name] = t
	}
	if len(errs) > 0 {
		for _, rs := range subs {
			rs.stats.Rejected.Inc()
		}
		return errs
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	for name, rs := range subs {
		rs.stats.Success.Inc()
		if t := tables[name]; t != nil {
			rs.ptr.Store(t)
			rs.version, rs.updated, rs.raw = version, now, resources[name].Raw
		}
		rs.markReady()
	}
	return nil
}

// --- SDS ---

// updateSecrets validates every secret of the update, then installs them.
func (d *dynamic) updateSecrets(version string, resources map[string]*resource.Decoded) error {
	d.serial.Lock()
	defer d.serial.Unlock()
	secrets := make(map[string]*tlsv3.Secret, len(resources))
	var errs config.ErrorList
	for _, n := range sortedKeys(resources) {
		sp, err := resource.As[*tlsv3.Secret](resources[n])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := tlsx.Validate(sp, "secret "+n); err != nil {
			errs = append(errs, err)
			continue
		}
		secrets[n] = sp
	}
	if len(errs) > 0 {
		return errs
	}
	for _, n := range sortedKeys(secrets) {
		if err := d.s.secrets.Set(secrets[n], version, "secret "+n); err != nil {
			return err
		}
	}
	return nil
}

// checkSDS checks an SDS secret's config source (the subscription follows
// once the listener or cluster is accepted).
func (d *dynamic) checkSDS(cs *corev3.ConfigSource, path string) error {
	return d.sources.Check(cs, path, xdsclient.SecretType)
}

// --- helpers ---

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// --- config dump ---

// dumpListeners adds the dynamic listeners to a config dump.
func (d *dynamic) dumpListeners(lcd *adminv3.ListenersConfigDump) {
	d.mu.Lock()
	defer d.mu.Unlock()
	lcd.VersionInfo = d.ldsVersion
	for _, name := range sortedKeys(d.listeners) {
		dl := d.listeners[name]
		pl, _, updated := dl.l.Current()
		a, _ := anypb.New(pl)
		st := &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: dl.version, Listener: a, LastUpdated: timestamppb.New(updated)}
		e := &adminv3.ListenersConfigDump_DynamicListener{Name: name}
		if dl.warming {
			e.WarmingState = st
			// As Envoy, a listener being replaced shows both states.
			if old := dl.replaces; old != nil {
				pl, version, updated := old.Current()
				a, _ := anypb.New(pl)
				e.ActiveState = &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: version, Listener: a, LastUpdated: timestamppb.New(updated)}
			}
		} else {
			e.ActiveState = st
		}
		lcd.DynamicListeners = append(lcd.DynamicListeners, e)
	}
}

// dumpClusters adds warming clusters and the CDS version.
func (d *dynamic) dumpClusters(ccd *adminv3.ClustersConfigDump) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ccd.VersionInfo = d.cdsVersion
	for _, name := range sortedKeys(d.warming) {
		c := d.warming[name].c
		a, _ := anypb.New(c.Proto)
		ccd.DynamicWarmingClusters = append(ccd.DynamicWarmingClusters, &adminv3.ClustersConfigDump_DynamicCluster{
			VersionInfo: c.VersionInfo, Cluster: a, LastUpdated: timestamppb.New(c.LastUpdated)})
	}
}

// dumpRoutes adds the RDS route configurations.
func (d *dynamic) dumpRoutes(rcd *adminv3.RoutesConfigDump) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, name := range sortedKeys(d.routes) {
		rs := d.routes[name]
		t := rs.ptr.Load()
		if t == nil {
			continue
		}
		a, _ := anypb.New(t.Proto)
		rcd.DynamicRouteConfigs = append(rcd.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
			VersionInfo: rs.version, RouteConfig: a, LastUpdated: timestamppb.New(rs.updated)})
	}
}

// dumpEndpoints renders the EDS assignments (config_dump?include_eds).
func (d *dynamic) dumpEndpoints() *adminv3.EndpointsConfigDump {
	d.mu.Lock()
	defer d.mu.Unlock()
	ecd := &adminv3.EndpointsConfigDump{}
	for _, name := range sortedKeys(d.edsLast) {
		a, _ := anypb.New(d.edsLast[name])
		ecd.DynamicEndpointConfigs = append(ecd.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{EndpointConfig: a})
	}
	return ecd
}

// clusterAccess gives xDS transports the cluster manager: gRPC streams
// and REST polls go to a host of a static cluster over its transport
// socket.
type clusterAccess struct {
	s *Server
	// warned holds the xDS clusters warned about for lacking HTTP/2.
	warned *sync.Map
}

func (a clusterAccess) DialCluster(ctx context.Context, name string) (net.Conn, error) {
	cl := a.s.Clusters.Get(name)
	if cl == nil {
		return nil, fmt.Errorf("xDS cluster %q does not exist", name)
	}
	if cl.Protocol != upstream.HTTP2 {
		if _, warned := a.warned.LoadOrStore(cl, true); !warned {
			a.s.log.Warn("xDS cluster does not configure HTTP/2; gRPC needs it (using HTTP/2 anyway)", "cluster", name)
		}
	}
	h := cl.Pick(&upstream.LBContext{})
	if h == nil {
		cl.Stats.CxNoneHealthy.Inc()
		return nil, fmt.Errorf("xDS cluster %q has no healthy host", name)
	}
	return cl.DialHost(ctx, h.Address)
}

func (a clusterAccess) Do(ctx context.Context, cluster string, req *http.Request) (*http.Response, error) {
	return a.s.deps.Async.Do(ctx, cluster, req)
}
