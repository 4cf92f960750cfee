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
	"github.com/legateproxy/legate/internal/proxy"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/tlsx"
	"github.com/legateproxy/legate/internal/upstream"
	xdsclient "github.com/legateproxy/legate/internal/xds/client"
	"github.com/legateproxy/legate/internal/xds/refs"
	"github.com/legateproxy/legate/internal/xds/source"
)

// dynamic holds what xDS (or watched files, or REST polls) configure. Every
// type follows one path: the transport hands the type's handler the
// complete current set; the handler decodes and validates every resource
// and compiles it into a value with no side effects — any error rejects
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
	l       *proxy.Listener
	raw     []byte
	version string
	warming bool
	deps    []refs.Ref
	gen     uint64
	// warmed is closed when warming ends (serving, or failed to bind).
	warmed chan struct{}
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
	d.rds = source.NewWatches(xdsclient.RouteType, xdsclient.HandlerFunc(d.updateRoutes), nil)
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
func (d *dynamic) start(staticClusters []*upstream.Cluster, staticListeners []*proxy.Listener) {
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
			d.s.log.Warn("initial fetch timed out; continuing without it", "type", shortType(r.TypeURL), "name", r.Name, "initial_fetch_timeout", timeout)
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

func (d *dynamic) stop() { d.sources.Stop() }

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
		t, err := d.sources.Resolve(r.Source, shortType(r.TypeURL)+" "+r.Name, r.TypeURL)
		if err != nil { // checked when the resource compiled
			d.s.log.Error("xDS dependency has a bad config source", "type", shortType(r.TypeURL), "name", r.Name, "error", err)
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
func (d *dynamic) updateClusters(version string, resources map[string]*anypb.Any) error {
	d.serial.Lock()
	defer d.serial.Unlock()
	var next []*dynCluster
	var errs config.ErrorList
	for _, name := range sortedKeys(resources) {
		a := resources[name]
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
		if newest != nil && string(newest.raw) == string(a.GetValue()) {
			continue // unchanged: nothing is rebuilt
		}
		pc := &clusterv3.Cluster{}
		if err := a.UnmarshalTo(pc); err != nil {
			errs = append(errs, config.Errorf("cluster "+name, "decode: %v", err))
			continue
		}
		if err := config.Validate(pc, "cluster "+name); err != nil {
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
		next = append(next, &dynCluster{c: c, raw: a.GetValue(), version: version, deps: clusterDeps(pc)})
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
	if d.warming[dc.c.Name] != dc {
		dc.c.Close()
		return
	}
	delete(d.warming, dc.c.Name)
	d.clusters[dc.c.Name] = dc
	d.s.Clusters.Install(dc.c)
	d.s.Clusters.SetWarming(dc.c.Name, false)
}

// --- EDS ---

func (d *dynamic) updateEndpoints(version string, resources map[string]*anypb.Any) error {
	d.serial.Lock()
	defer d.serial.Unlock()
	las := map[string]*endpointv3.ClusterLoadAssignment{}
	var errs config.ErrorList
	for _, name := range sortedKeys(resources) {
		la := &endpointv3.ClusterLoadAssignment{}
		if err := resources[name].UnmarshalTo(la); err != nil {
			errs = append(errs, config.Errorf("cluster_load_assignment "+name, "decode: %v", err))
			continue
		}
		if err := config.Validate(la, "cluster_load_assignment "+name); err != nil {
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

func (d *dynamic) updateListeners(version string, resources map[string]*anypb.Any) error {
	d.serial.Lock()
	defer d.serial.Unlock()
	var next []*dynListener
	var errs config.ErrorList
	addrs := map[string]string{}
	for _, l := range d.s.staticListeners() {
		addrs[l.Address] = l.Name
	}
	for _, name := range sortedKeys(resources) {
		a := resources[name]
		d.mu.Lock()
		cur := d.listeners[name]
		d.mu.Unlock()
		if cur != nil && string(cur.raw) == string(a.GetValue()) {
			addrs[cur.l.Address] = name
			continue
		}
		pl := &listenerv3.Listener{}
		if err := a.UnmarshalTo(pl); err != nil {
			errs = append(errs, config.Errorf("listener "+name, "decode: %v", err))
			continue
		}
		if err := config.Validate(pl, "listener "+name); err != nil {
			errs = append(errs, err)
			continue
		}
		l, err := proxy.CompileListener(pl, "listener "+name, d.s.deps)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if other, dup := addrs[l.Address]; dup && other != name {
			errs = append(errs, config.Errorf("listener "+name, "address %s is already used by listener %q", l.Address, other))
			continue
		}
		addrs[l.Address] = name
		l.VersionInfo = version
		next = append(next, &dynListener{l: l, raw: a.GetValue(), version: version, deps: refs.Of(pl)})
	}
	if len(errs) > 0 {
		d.mu.Lock()
		d.reconcileLocked() // drops route tables only the rejected listeners named
		d.mu.Unlock()
		return errs
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ldsVersion = version
	var warm []*dynListener
	for _, dl := range next {
		d.generation++
		dl.gen = d.generation
		name := dl.l.Name
		cur := d.listeners[name]
		if cur != nil && cur.l.Address == dl.l.Address && !cur.warming {
			// In-place update: the socket stays; connections on the old
			// filter chains drain.
			go cur.l.Update(dl.l, d.s.opts.DrainTime)
			cur.raw, cur.version, cur.deps, cur.gen = dl.raw, version, dl.deps, dl.gen
			continue
		}
		if cur != nil {
			go cur.l.Drain(d.s.opts.DrainTime)
		}
		dl.warming, dl.warmed = true, make(chan struct{})
		d.listeners[name] = dl
		warm = append(warm, dl)
	}
	for name, dl := range d.listeners {
		if _, ok := resources[name]; !ok {
			delete(d.listeners, name)
			go dl.l.Drain(d.s.opts.DrainTime)
		}
	}
	d.reconcileLocked()
	for _, dl := range warm {
		go d.warmListener(dl)
	}
	return nil
}

// warmListener binds a new listener once its RDS route tables and SDS
// secrets have arrived (or their initial_fetch_timeout passes), as Envoy
// warms listeners.
func (d *dynamic) warmListener(dl *dynListener) {
	defer close(dl.warmed)
	d.waitDeps(dl.deps)
	d.mu.Lock()
	if d.listeners[dl.l.Name] != dl {
		d.mu.Unlock()
		return // replaced or removed while warming
	}
	d.mu.Unlock()
	if err := bindWithRetry(dl.l); err != nil {
		d.s.log.Error("dynamic listener failed to bind", "listener", dl.l.Name, "error", err)
		d.mu.Lock()
		if d.listeners[dl.l.Name] == dl {
			delete(d.listeners, dl.l.Name)
			d.reconcileLocked()
		}
		d.mu.Unlock()
		return
	}
	go dl.l.Serve()
	d.mu.Lock()
	dl.warming = false
	d.mu.Unlock()
	d.s.refreshListenerStats()
}

// bindWithRetry binds, retrying briefly while a draining listener on the
// same address releases it.
func bindWithRetry(l *proxy.Listener) error {
	var err error
	for i := 0; i < 50; i++ {
		if err = l.Bind(); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// --- RDS ---

// rdsProvider returns the route table pointer for an HCM's rds config,
// shared by every HCM that names the route configuration. It only checks
// the config source: the subscription follows once the listener is
// accepted (reconcileLocked).
func (d *dynamic) rdsProvider(rds *hcmv3.Rds, statPrefix, path string) (*atomic.Pointer[route.Table], error) {
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

func (d *dynamic) updateRoutes(version string, resources map[string]*anypb.Any) error {
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
		if string(rs.raw) == string(resources[name].GetValue()) {
			continue // unchanged
		}
		rc := &routev3.RouteConfiguration{}
		if err := resources[name].UnmarshalTo(rc); err != nil {
			errs = append(errs, config.Errorf("route_configuration "+name, "decode: %v", err))
			continue
		}
		if err := config.Validate(rc, "route_configuration "+name); err != nil {
			errs = append(errs, err)
			continue
		}
		t, err := route.Compile(rc, "route_configuration "+name, route.Options{Clusters: d.s.Clusters, CompileValue: d.s.deps.CompileValue, PerFilterConfig: d.s.deps.PerFilterConfig, CompileCors: d.s.deps.CompileCors})
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
			rs.version, rs.updated, rs.raw = version, now, resources[name].GetValue()
		}
		rs.markReady()
	}
	return nil
}

// --- SDS ---

// updateSecrets validates every secret of the update, then installs them.
func (d *dynamic) updateSecrets(version string, resources map[string]*anypb.Any) error {
	d.serial.Lock()
	defer d.serial.Unlock()
	secrets := make(map[string]*tlsv3.Secret, len(resources))
	var errs config.ErrorList
	for _, n := range sortedKeys(resources) {
		sp := &tlsv3.Secret{}
		if err := resources[n].UnmarshalTo(sp); err != nil {
			errs = append(errs, config.Errorf("secret "+n, "decode: %v", err))
			continue
		}
		if err := config.Validate(sp, "secret "+n); err != nil {
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

func shortType(t string) string {
	for i := len(t) - 1; i >= 0; i-- {
		if t[i] == '.' {
			return t[i+1:]
		}
	}
	return t
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
