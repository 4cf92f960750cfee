package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/proxy"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/upstream"
	xdsclient "github.com/legateproxy/legate/internal/xds/client"
)

// dynamic holds what xDS (or watched files) configure: the subscriptions,
// the handlers that compile and apply each type, and the warming state.
type dynamic struct {
	s   *Server
	ads *xdsclient.Client
	// clients by config source, for non-ADS gRPC sources.
	clients []*xdsclient.Client
	files   []*fileWatch

	mu sync.Mutex
	// CDS
	clusters      map[string]*dynCluster // active dynamic clusters by name
	warming       map[string]*upstream.Cluster
	edsSubscriber func(names []string)
	edsLast       map[string]*endpointv3.ClusterLoadAssignment // by service name
	cdsVersion    string
	// LDS
	listeners  map[string]*dynListener
	ldsVersion string
	// RDS
	routes        map[string]*routeSub // by route config name
	rdsSubscriber func(names []string)

	initialFetch time.Duration
	ready        []<-chan struct{}
	secretNames  map[string]bool
}

type dynCluster struct {
	c       *upstream.Cluster
	raw     []byte // serialized proto, to skip unchanged clusters
	version string
}

type dynListener struct {
	l       *proxy.Listener
	raw     []byte
	version string
	warming bool
}

type routeSub struct {
	ptr     *atomic.Pointer[route.Table]
	stats   *xdsclient.Stats
	version string
	updated time.Time
	raw     []byte
}

// setupDynamic validates dynamic_resources and prepares the subscriptions
// (they start with Start).
func (s *Server) setupDynamic(dr *bootstrapv3.Bootstrap_DynamicResources) error {
	if err := config.CheckFields(dr, "dynamic_resources", "lds_config", "cds_config", "ads_config"); err != nil {
		return err
	}
	d := &dynamic{s: s, clusters: map[string]*dynCluster{}, warming: map[string]*upstream.Cluster{},
		edsLast: map[string]*endpointv3.ClusterLoadAssignment{}, listeners: map[string]*dynListener{},
		routes: map[string]*routeSub{}, initialFetch: 15 * time.Second}
	s.dyn = d
	s.deps.RDS = d.rdsProvider
	if ac := dr.GetAdsConfig(); ac != nil {
		c, err := d.newClient(ac, "dynamic_resources.ads_config", "")
		if err != nil {
			return err
		}
		d.ads = c
	}
	cdsHandler := xdsclient.HandlerFunc(d.updateClusters)
	ldsHandler := xdsclient.HandlerFunc(d.updateListeners)
	if cs := dr.GetCdsConfig(); cs != nil {
		sub, err := d.source(cs, "dynamic_resources.cds_config", xdsclient.ClusterType)
		if err != nil {
			return err
		}
		sub(nil, cdsHandler, xdsclient.NewStats(s.Stats.Scope("cluster_manager.cds.")))
	}
	if d.ads != nil {
		// EDS clusters take their endpoints from the ADS stream (their
		// eds_config is checked when they are compiled).
		d.ads.Subscribe(xdsclient.EndpointType, []string{}, xdsclient.HandlerFunc(d.updateEndpoints), nil)
		d.edsSubscriber = func(names []string) { d.ads.SetNames(xdsclient.EndpointType, names) }
	}
	if ls := dr.GetLdsConfig(); ls != nil {
		sub, err := d.source(ls, "dynamic_resources.lds_config", xdsclient.ListenerType)
		if err != nil {
			return err
		}
		sub(nil, ldsHandler, xdsclient.NewStats(s.Stats.Scope("listener_manager.lds.")))
	}
	return nil
}

// subscribeFunc subscribes a type on a config source (nil names: wildcard).
type subscribeFunc func(names []string, h xdsclient.Handler, st *xdsclient.Stats)

func (d *dynamic) allClients() []*xdsclient.Client {
	out := append([]*xdsclient.Client(nil), d.clients...)
	if d.ads != nil {
		out = append(out, d.ads)
	}
	return out
}

// source returns how to subscribe to a ConfigSource: on the ADS stream,
// on its own gRPC stream, or by watching a file.
func (d *dynamic) source(cs *corev3.ConfigSource, path, typeURL string) (subscribeFunc, error) {
	if err := config.CheckFields(cs, path, "ads", "path", "path_config_source", "api_config_source", "initial_fetch_timeout", "resource_api_version", "self", "authorities"); err != nil {
		return nil, err
	}
	if cs.GetResourceApiVersion() != corev3.ApiVersion_V3 && cs.GetResourceApiVersion() != corev3.ApiVersion_AUTO {
		return nil, config.Unsupported(config.Join(path, "resource_api_version"), cs.GetResourceApiVersion().String(), "V3")
	}
	if cs.GetInitialFetchTimeout() != nil {
		d.initialFetch = cs.GetInitialFetchTimeout().AsDuration()
	}
	switch spec := cs.GetConfigSourceSpecifier().(type) {
	case *corev3.ConfigSource_Ads:
		if d.ads == nil {
			return nil, config.Errorf(config.Join(path, "ads"), "ads: {} needs dynamic_resources.ads_config")
		}
		return func(names []string, h xdsclient.Handler, st *xdsclient.Stats) {
			d.ads.Subscribe(typeURL, names, h, st)
			d.ready = append(d.ready, d.ads.Received(typeURL))
		}, nil
	case *corev3.ConfigSource_Self:
		if d.ads == nil {
			return nil, config.Errorf(config.Join(path, "self"), "self: {} is only supported on an ADS connection")
		}
		return func(names []string, h xdsclient.Handler, st *xdsclient.Stats) {
			d.ads.Subscribe(typeURL, names, h, st)
		}, nil
	case *corev3.ConfigSource_Path:
		return d.fileSource(spec.Path, 0, path), nil
	case *corev3.ConfigSource_PathConfigSource:
		p := config.Join(path, "path_config_source")
		if err := config.CheckFields(spec.PathConfigSource, p, "path", "watched_directory", "poll_interval"); err != nil {
			return nil, err
		}
		poll := time.Duration(0)
		if spec.PathConfigSource.GetPollInterval() != nil {
			poll = spec.PathConfigSource.GetPollInterval().AsDuration()
		}
		return d.fileSource(spec.PathConfigSource.GetPath(), poll, p), nil
	case *corev3.ConfigSource_ApiConfigSource:
		c, err := d.newClient(spec.ApiConfigSource, config.Join(path, "api_config_source"), typeURL)
		if err != nil {
			return nil, err
		}
		return func(names []string, h xdsclient.Handler, st *xdsclient.Stats) {
			c.Subscribe(typeURL, names, h, st)
			if names == nil {
				d.ready = append(d.ready, c.Received(typeURL))
			}
		}, nil
	}
	return nil, config.Errorf(path, "config source has no specifier (ads, path_config_source or api_config_source)")
}

// newClient builds an xDS client for an ApiConfigSource (GRPC or DELTA_GRPC).
func (d *dynamic) newClient(ac *corev3.ApiConfigSource, path, service string) (*xdsclient.Client, error) {
	if err := config.CheckFields(ac, path, "api_type", "transport_api_version", "grpc_services", "set_node_on_first_message_only", "refresh_delay", "request_timeout", "rate_limit_settings"); err != nil {
		return nil, err
	}
	delta := false
	switch ac.GetApiType() {
	case corev3.ApiConfigSource_GRPC, corev3.ApiConfigSource_AGGREGATED_GRPC:
	case corev3.ApiConfigSource_DELTA_GRPC, corev3.ApiConfigSource_AGGREGATED_DELTA_GRPC:
		delta = true
	default:
		return nil, config.Unsupported(config.Join(path, "api_type"), ac.GetApiType().String(), "GRPC", "DELTA_GRPC")
	}
	if len(ac.GetGrpcServices()) != 1 {
		return nil, config.Errorf(config.Join(path, "grpc_services"), "exactly one grpc_services entry is supported, got %d", len(ac.GetGrpcServices()))
	}
	gs := ac.GetGrpcServices()[0]
	gp := config.Index(config.Join(path, "grpc_services"), 0)
	if err := config.CheckFields(gs, gp, "envoy_grpc", "google_grpc", "timeout", "initial_metadata"); err != nil {
		return nil, err
	}
	var conn *grpc.ClientConn
	var err error
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if len(gs.GetInitialMetadata()) > 0 {
		md := []string{}
		for _, kv := range gs.GetInitialMetadata() {
			md = append(md, kv.GetKey(), kv.GetValue())
		}
		opts = append(opts, grpc.WithStreamInterceptor(metadataInterceptor(md)))
	}
	switch {
	case gs.GetEnvoyGrpc() != nil:
		name := gs.GetEnvoyGrpc().GetClusterName()
		cl := d.s.Clusters.Get(name)
		if cl == nil {
			return nil, config.Errorf(config.Join(gp, "envoy_grpc.cluster_name"), "xDS cluster %q must be a static cluster", name)
		}
		if cl.Protocol == upstream.HTTP1 {
			d.s.log.Warn("xDS cluster does not configure HTTP/2; gRPC needs it (using HTTP/2 anyway)", "cluster", name)
		}
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			h := cl.Pick(nil)
			if h == nil {
				return nil, fmt.Errorf("xDS cluster %q has no healthy host", name)
			}
			var dl net.Dialer
			return dl.DialContext(ctx, "tcp", h.Address)
		}))
		conn, err = grpc.NewClient("passthrough:///"+name, opts...)
	case gs.GetGoogleGrpc() != nil:
		g := gs.GetGoogleGrpc()
		if g.GetChannelCredentials() != nil || len(g.GetCallCredentials()) > 0 {
			return nil, config.Unsupported(config.Join(gp, "google_grpc.channel_credentials"), "google_grpc credentials")
		}
		conn, err = grpc.NewClient(g.GetTargetUri(), opts...)
	default:
		return nil, config.Errorf(gp, "grpc service needs envoy_grpc or google_grpc")
	}
	if err != nil {
		return nil, config.Errorf(gp, "gRPC client: %v", err)
	}
	c := xdsclient.New(xdsclient.Options{Conn: conn, Node: d.s.Bootstrap.GetNode(), Delta: delta, Service: service, Stats: d.s.Stats, Log: d.s.log})
	if service != "" {
		d.clients = append(d.clients, c)
	}
	return c, nil
}

func metadataInterceptor(kv []string) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		ctx = metadataAppend(ctx, kv)
		return streamer(ctx, desc, cc, method, opts...)
	}
}

// start connects the clients and file watchers.
func (d *dynamic) start() {
	for _, c := range d.allClients() {
		c.Start()
	}
	// Files load once, in order — clusters before listeners, as Envoy
	// initializes CDS before LDS — so a listener whose routes name a
	// file-defined cluster is not rejected at start-up; then they are watched.
	for _, f := range d.files {
		f.check()
	}
	for _, f := range d.files {
		f.start()
	}
}

// waitInitial waits for the first CDS and LDS responses, bounded by
// initial_fetch_timeout, as Envoy's initialization does.
func (d *dynamic) waitInitial() {
	deadline := time.After(d.initialFetch)
	for _, ch := range d.ready {
		select {
		case <-ch:
		case <-deadline:
			d.s.log.Warn("initial xDS fetch timed out; continuing without it", "initial_fetch_timeout", d.initialFetch)
			return
		}
	}
	// Listeners warming for their routes get the same bound.
	end := time.Now().Add(d.initialFetch)
	for time.Now().Before(end) {
		d.mu.Lock()
		warming := 0
		for _, dl := range d.listeners {
			if dl.warming {
				warming++
			}
		}
		d.mu.Unlock()
		if warming == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (d *dynamic) stop() {
	for _, c := range d.allClients() {
		c.Stop()
	}
	for _, f := range d.files {
		f.stop()
	}
}

// --- CDS ---

// updateClusters applies a complete set of dynamic clusters: compile all
// (rejecting the whole update on any error), then add or replace changed
// ones — EDS clusters warm until their endpoints arrive — and remove the
// ones that are gone.
func (d *dynamic) updateClusters(version string, resources map[string]*anypb.Any) error {
	type compiled struct {
		c   *upstream.Cluster
		raw []byte
	}
	var next []compiled
	var errs config.ErrorList
	names := sortedKeys(resources)
	// What is known of each name, read under the lock (warmCluster
	// changes it concurrently).
	type known struct {
		dynamic bool
		raw     []byte
	}
	state := make(map[string]known, len(names))
	d.mu.Lock()
	for _, name := range names {
		k := known{dynamic: d.clusters[name] != nil || d.warming[name] != nil}
		if cur := d.clusters[name]; cur != nil {
			k.raw = cur.raw
		}
		state[name] = k
	}
	d.mu.Unlock()
	for _, name := range names {
		a := resources[name]
		if d.s.Clusters.Get(name) != nil && !state[name].dynamic {
			errs = append(errs, config.Errorf("cluster "+name, "a static cluster of that name exists"))
			continue
		}
		if raw := state[name].raw; raw != nil && string(raw) == string(a.GetValue()) {
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
		next = append(next, compiled{c, a.GetValue()})
	}
	if len(errs) > 0 {
		return errs
	}
	d.mu.Lock()
	d.cdsVersion = version
	for _, n := range next {
		name := n.c.Name
		d.clusters[name] = &dynCluster{c: n.c, raw: n.raw, version: version}
		if n.c.EDS {
			if la := d.edsLast[edsServiceName(n.c.Proto)]; la != nil {
				n.c.SetLoadAssignment(la)
			}
		}
		// Every new or changed cluster warms (EDS endpoints, first DNS
		// resolution, first health-check round) before it replaces the
		// running one, so no request meets an empty cluster.
		d.warming[name] = n.c
		d.s.Clusters.SetWarming(name, true)
		go d.warmCluster(n.c)
	}
	for name, dc := range d.clusters {
		if _, ok := resources[name]; !ok {
			delete(d.clusters, name)
			delete(d.warming, name)
			d.s.Clusters.SetWarming(name, false)
			d.s.Clusters.Remove(name)
			_ = dc
		}
	}
	eds := d.edsNames()
	d.mu.Unlock()
	if d.edsSubscriber != nil {
		d.edsSubscriber(eds)
	}
	return nil
}

// checkEDSConfig accepts eds_config sources that go where CDS goes.
func (d *dynamic) checkEDSConfig(pc *clusterv3.Cluster, path string) error {
	ec := pc.GetEdsClusterConfig()
	if ec == nil {
		return nil
	}
	if err := config.CheckFields(ec, config.Join(path, "eds_cluster_config"), "eds_config", "service_name"); err != nil {
		return err
	}
	cs := ec.GetEdsConfig()
	if cs.GetAds() == nil && cs.GetSelf() == nil {
		return config.Unsupported(config.Join(path, "eds_cluster_config.eds_config"), "this EDS config source", "ads: {}")
	}
	if d.ads == nil {
		return config.Errorf(config.Join(path, "eds_cluster_config.eds_config"), "EDS over ads needs dynamic_resources.ads_config")
	}
	return nil
}

func edsServiceName(pc *clusterv3.Cluster) string {
	if n := pc.GetEdsClusterConfig().GetServiceName(); n != "" {
		return n
	}
	return pc.GetName()
}

// edsNames lists the service names of every EDS cluster (active or warming).
func (d *dynamic) edsNames() []string {
	set := map[string]bool{}
	for _, dc := range d.clusters {
		if dc.c.EDS {
			set[edsServiceName(dc.c.Proto)] = true
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// warmCluster starts a cluster and makes it active once it is initialized
// (or initial_fetch_timeout passes); the previous cluster of that name
// keeps serving until then.
func (d *dynamic) warmCluster(c *upstream.Cluster) {
	upstream.Warm(c, d.initialFetch)
	d.mu.Lock()
	defer d.mu.Unlock()
	// Only the newest version of a cluster that is still wanted goes in: a
	// cluster removed while it warmed, or replaced by a later update that
	// warmed faster, is dropped (it would otherwise come back, or undo the
	// newer update).
	if d.warming[c.Name] != c {
		c.Close()
		return
	}
	delete(d.warming, c.Name)
	d.s.Clusters.Install(c)
	d.s.Clusters.SetWarming(c.Name, false)
}

// --- EDS ---

func (d *dynamic) updateEndpoints(version string, resources map[string]*anypb.Any) error {
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
	d.mu.Lock()
	var targets []struct {
		c  *upstream.Cluster
		la *endpointv3.ClusterLoadAssignment
	}
	for name, la := range las {
		if prev := d.edsLast[name]; prev != nil && proto.Equal(prev, la) {
			continue // unchanged endpoints: nothing to rebuild
		}
		d.edsLast[name] = la
		for _, dc := range d.clusters {
			if dc.c.EDS && edsServiceName(dc.c.Proto) == name {
				targets = append(targets, struct {
					c  *upstream.Cluster
					la *endpointv3.ClusterLoadAssignment
				}{dc.c, la})
			}
		}
	}
	d.mu.Unlock()
	for _, t := range targets {
		if err := t.c.SetLoadAssignment(t.la); err != nil {
			return config.Errorf("cluster_load_assignment "+t.la.GetClusterName(), "%v", err)
		}
	}
	return nil
}

// --- LDS ---

func (d *dynamic) updateListeners(version string, resources map[string]*anypb.Any) error {
	type compiled struct {
		l   *proxy.Listener
		raw []byte
	}
	var next []compiled
	var errs config.ErrorList
	addrs := map[string]string{}
	for _, l := range d.s.staticListeners() {
		addrs[l.Address] = l.Name
	}
	for _, name := range sortedKeys(resources) {
		a := resources[name]
		pl := &listenerv3.Listener{}
		if err := a.UnmarshalTo(pl); err != nil {
			errs = append(errs, config.Errorf("listener "+name, "decode: %v", err))
			continue
		}
		if cur := d.listeners[name]; cur != nil && string(cur.raw) == string(a.GetValue()) {
			addrs[cur.l.Address] = name
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
		next = append(next, compiled{l, a.GetValue()})
	}
	if len(errs) > 0 {
		return errs
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ldsVersion = version
	for _, n := range next {
		name := n.l.Name
		cur := d.listeners[name]
		if cur != nil && cur.l.Address == n.l.Address && !cur.warming {
			// In-place update: the socket stays; connections on the old
			// filter chains drain.
			go cur.l.Update(n.l, d.s.opts.DrainTime)
			cur.raw, cur.version = n.raw, version
			continue
		}
		if cur != nil {
			go cur.l.Drain(d.s.opts.DrainTime)
		}
		dl := &dynListener{l: n.l, raw: n.raw, version: version, warming: true}
		d.listeners[name] = dl
		go d.warmListener(dl)
	}
	for name, dl := range d.listeners {
		if _, ok := resources[name]; !ok {
			delete(d.listeners, name)
			go dl.l.Drain(d.s.opts.DrainTime)
		}
	}
	d.updateRDSNamesLocked()
	return nil
}

// warmListener binds a new listener once its routes have arrived (or
// initial_fetch_timeout passes), as Envoy warms listeners.
func (d *dynamic) warmListener(dl *dynListener) {
	end := time.Now().Add(d.initialFetch)
	for time.Now().Before(end) && !dl.l.RoutesReady() {
		time.Sleep(5 * time.Millisecond)
	}
	d.mu.Lock()
	if d.listeners[dl.l.Name] != dl {
		d.mu.Unlock()
		return // replaced while warming
	}
	d.mu.Unlock()
	if err := bindWithRetry(dl.l); err != nil {
		d.s.log.Error("dynamic listener failed to bind", "listener", dl.l.Name, "error", err)
		d.mu.Lock()
		if d.listeners[dl.l.Name] == dl {
			delete(d.listeners, dl.l.Name)
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

// rdsProvider returns the shared route table pointer for an HCM's rds
// config, creating the subscription for its name.
func (d *dynamic) rdsProvider(rds *hcmv3.Rds, statPrefix, path string) (*atomic.Pointer[route.Table], error) {
	if err := config.CheckFields(rds, path, "config_source", "route_config_name"); err != nil {
		return nil, err
	}
	cs := rds.GetConfigSource()
	if cs.GetAds() == nil && cs.GetSelf() == nil {
		if cs.GetPathConfigSource() == nil && cs.GetPath() == "" && cs.GetApiConfigSource() == nil {
			return nil, config.Errorf(config.Join(path, "config_source"), "RDS config source needs ads, path_config_source or api_config_source")
		}
	}
	name := rds.GetRouteConfigName()
	d.mu.Lock()
	defer d.mu.Unlock()
	if rs := d.routes[name]; rs != nil {
		return rs.ptr, nil
	}
	rs := &routeSub{ptr: &atomic.Pointer[route.Table]{}, stats: xdsclient.NewStats(d.s.Stats.Scope("http." + stats.SanitizeName(statPrefix) + ".rds." + stats.SanitizeName(name) + "."))}
	d.routes[name] = rs
	if cs.GetAds() == nil && cs.GetSelf() == nil {
		// A file or its own gRPC stream for this route config.
		sub, err := d.source(cs, config.Join(path, "config_source"), xdsclient.RouteType)
		if err != nil {
			return nil, err
		}
		sub([]string{name}, xdsclient.HandlerFunc(d.updateRoutes), rs.stats)
		return rs.ptr, nil
	}
	if d.rdsSubscriber == nil && d.ads != nil {
		d.ads.Subscribe(xdsclient.RouteType, []string{}, xdsclient.HandlerFunc(d.updateRoutes), rs.stats)
		d.rdsSubscriber = func(names []string) { d.ads.SetNames(xdsclient.RouteType, names) }
	}
	return rs.ptr, nil
}

// updateRDSNamesLocked subscribes to exactly the route configs that the
// current listeners use.
func (d *dynamic) updateRDSNamesLocked() {
	if d.rdsSubscriber == nil {
		return
	}
	names := make([]string, 0, len(d.routes))
	for n := range d.routes {
		names = append(names, n)
	}
	sort.Strings(names)
	go d.rdsSubscriber(names)
}

func (d *dynamic) updateRoutes(version string, resources map[string]*anypb.Any) error {
	tables := map[string]*route.Table{}
	var errs config.ErrorList
	for _, name := range sortedKeys(resources) {
		rc := &routev3.RouteConfiguration{}
		if err := resources[name].UnmarshalTo(rc); err != nil {
			errs = append(errs, config.Errorf("route_configuration "+name, "decode: %v", err))
			continue
		}
		if err := config.Validate(rc, "route_configuration "+name); err != nil {
			errs = append(errs, err)
			continue
		}
		d.mu.Lock()
		rs := d.routes[name]
		unchanged := rs != nil && string(rs.raw) == string(resources[name].GetValue())
		d.mu.Unlock()
		if unchanged {
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
		return errs
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, t := range tables {
		rs := d.routes[name]
		if rs == nil {
			continue
		}
		rs.ptr.Store(t)
		rs.version, rs.updated, rs.raw = version, time.Now(), resources[name].GetValue()
	}
	return nil
}

// --- files ---

// fileWatch delivers an xDS resource file (a DiscoveryResponse) to a
// handler whenever the file changes, as Envoy's path_config_source: an
// atomic move into place is the expected way to update it.
type fileWatch struct {
	path    string
	poll    time.Duration
	handler xdsclient.Handler
	stats   *xdsclient.Stats
	log     func(msg string, args ...any)
	stopCh  chan struct{}
	last    string
	first   chan struct{}
	once    sync.Once
}

func (d *dynamic) fileSource(path string, poll time.Duration, cfgPath string) subscribeFunc {
	return func(names []string, h xdsclient.Handler, st *xdsclient.Stats) {
		if poll <= 0 {
			poll = 200 * time.Millisecond
		}
		fw := &fileWatch{path: path, poll: poll, handler: h, stats: st, log: d.s.log.Warn, stopCh: make(chan struct{}), first: make(chan struct{})}
		d.files = append(d.files, fw)
		d.ready = append(d.ready, fw.first)
	}
}

func (f *fileWatch) start() { go f.run() }

func (f *fileWatch) stop() { close(f.stopCh) }

func (f *fileWatch) run() {
	for {
		f.check()
		select {
		case <-f.stopCh:
			return
		case <-time.After(f.poll):
		}
	}
}

// check reloads the file when its identity (inode, size, mtime) changed.
func (f *fileWatch) check() {
	fi, err := os.Stat(f.path)
	if err != nil {
		f.once.Do(func() { close(f.first) })
		return
	}
	id := fmt.Sprintf("%v/%d/%d", fileIdentity(fi), fi.Size(), fi.ModTime().UnixNano())
	if id == f.last {
		return
	}
	f.last = id
	if f.stats != nil {
		f.stats.Attempt.Inc()
	}
	dr := &discoveryv3.DiscoveryResponse{}
	if _, err := config.DecodeResourceFile(f.path, dr); err != nil {
		f.reject(err)
		return
	}
	res := map[string]*anypb.Any{}
	for _, a := range dr.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			f.reject(err)
			return
		}
		name, err := xdsclient.NameOf(m)
		if err != nil {
			f.reject(err)
			return
		}
		res[name] = a
	}
	if err := f.handler.Update(dr.GetVersionInfo(), res); err != nil {
		f.reject(err)
		return
	}
	if f.stats != nil {
		f.stats.Success.Inc()
	}
	f.once.Do(func() { close(f.first) })
}

func (f *fileWatch) reject(err error) {
	if f.stats != nil {
		f.stats.Rejected.Inc()
	}
	f.log("config file update rejected; the last good config keeps serving", "path", f.path, "error", err)
	f.once.Do(func() { close(f.first) })
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func metadataAppend(ctx context.Context, kv []string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

func fileIdentity(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

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
		c := d.warming[name]
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
