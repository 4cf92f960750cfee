// Package source turns Envoy ConfigSources into subscriptions. Every xDS
// type — LDS, RDS, CDS, EDS, SDS — goes through the same path: a
// ConfigSource is checked (Check, at compile time, with no side effects)
// and, once the resource that names it is accepted, resolved (Resolve) to a
// Transport: the ADS stream, a gRPC stream of its own (state of the world
// or delta), a watched file (path, path_config_source) or a REST poller
// (api_type: REST). Transports are shared: two route configurations on
// the same api_config_source use one stream, as Envoy's subscription
// factory does. Transports created after Start start at once, so a source
// that first appears in an LDS update works like one in the bootstrap.
package source

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/stats"
	xdsclient "github.com/legateproxy/legate/internal/xds/client"
)

// DefaultInitialFetchTimeout is Envoy's initial_fetch_timeout default.
const DefaultInitialFetchTimeout = 15 * time.Second

// Transport delivers the resources of the types subscribed on it to their
// handlers. *xdsclient.Client is the gRPC transport.
type Transport interface {
	// Subscribe registers the handler of a type; nil names is a wildcard
	// subscription (LDS, CDS).
	Subscribe(typeURL string, names []string, h xdsclient.Handler, st *xdsclient.Stats)
	// SetNames changes the names of a non-wildcard subscription.
	SetNames(typeURL string, names []string)
	// Received is closed once the first response for the type arrived.
	Received(typeURL string) <-chan struct{}
	Start()
	Stop()
}

// Clusters is what transports need of the cluster manager: connections to
// a host of a static cluster (over its transport socket, so a TLS
// xds_cluster secures the control-plane channel) and HTTP requests through
// it (REST).
type Clusters interface {
	// DialCluster connects to a host picked from the named cluster.
	DialCluster(ctx context.Context, cluster string) (net.Conn, error)
	// Do sends an HTTP request to a host of the cluster.
	Do(ctx context.Context, cluster string, req *http.Request) (*http.Response, error)
}

// Options configure a Manager.
type Options struct {
	Node  *corev3.Node
	Stats *stats.Store
	Log   *slog.Logger
	// Clusters reaches the management servers' clusters.
	Clusters Clusters
	// StaticCluster reports whether a name is a cluster of
	// static_resources: xDS servers must be reached through one, as in
	// Envoy (a dynamic cluster could depend on the very stream it feeds).
	StaticCluster func(name string) bool
}

// Manager owns the transports of one server.
type Manager struct {
	opts Options
	log  *slog.Logger

	mu         sync.Mutex
	ads        *xdsclient.Client
	adsPath    string
	transports map[string]Transport
	order      []string // creation order: files load in it at Start
	started    bool
	stopped    bool
}

// New returns a manager with no transports.
func New(opts Options) *Manager {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	return &Manager{opts: opts, log: opts.Log, transports: map[string]Transport{}}
}

// SetADS configures the aggregated stream (dynamic_resources.ads_config).
func (m *Manager) SetADS(ac *corev3.ApiConfigSource, path string) error {
	if err := m.checkAPI(ac, path, true); err != nil {
		return err
	}
	c, err := m.grpcClient(ac, "")
	if err != nil {
		return config.Errorf(path, "%v", err)
	}
	m.mu.Lock()
	m.ads, m.adsPath = c, path
	m.transports["ads"] = c
	m.order = append(m.order, "ads")
	m.mu.Unlock()
	return nil
}

// ADS returns the aggregated stream's client (nil without ads_config).
func (m *Manager) ADS() *xdsclient.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ads
}

// InitialFetchTimeout is the source's initial_fetch_timeout (Envoy's
// default 15 s; 0 disables the bound).
func InitialFetchTimeout(cs *corev3.ConfigSource) time.Duration {
	if d := cs.GetInitialFetchTimeout(); d != nil {
		return d.AsDuration()
	}
	return DefaultInitialFetchTimeout
}

// Check validates a ConfigSource for a resource type without creating
// anything: compiling a resource that names a source calls it, resolving
// happens once the resource is accepted.
func (m *Manager) Check(cs *corev3.ConfigSource, path, typeURL string) error {
	if err := config.CheckFields(cs, path, "ads", "path", "path_config_source", "api_config_source", "initial_fetch_timeout", "resource_api_version", "self", "authorities"); err != nil {
		return err
	}
	if v := cs.GetResourceApiVersion(); v != corev3.ApiVersion_V3 && v != corev3.ApiVersion_AUTO {
		return config.Unsupported(config.Join(path, "resource_api_version"), v.String(), "V3")
	}
	switch spec := cs.GetConfigSourceSpecifier().(type) {
	case *corev3.ConfigSource_Ads:
		if m.ADS() == nil {
			return config.Errorf(config.Join(path, "ads"), "ads: {} needs dynamic_resources.ads_config")
		}
	case *corev3.ConfigSource_Self:
		// "self" is the stream that delivered the resource; Legate's only
		// stream that carries more than one type is ADS.
		if m.ADS() == nil {
			return config.Errorf(config.Join(path, "self"), "self: {} is only supported on an ADS connection")
		}
	case *corev3.ConfigSource_Path:
		if spec.Path == "" {
			return config.Errorf(config.Join(path, "path"), "path is empty")
		}
	case *corev3.ConfigSource_PathConfigSource:
		p := config.Join(path, "path_config_source")
		if err := config.CheckFields(spec.PathConfigSource, p, "path", "watched_directory", "poll_interval"); err != nil {
			return err
		}
		if spec.PathConfigSource.GetPath() == "" {
			return config.Errorf(config.Join(p, "path"), "path is empty")
		}
	case *corev3.ConfigSource_ApiConfigSource:
		if err := m.checkAPI(spec.ApiConfigSource, config.Join(path, "api_config_source"), false); err != nil {
			return err
		}
		if spec.ApiConfigSource.GetApiType() == corev3.ApiConfigSource_REST {
			if _, ok := restPaths[typeURL]; !ok {
				return config.Unsupported(config.Join(path, "api_config_source.api_type"), "REST for "+typeURL)
			}
		}
	default:
		return config.Errorf(path, "config source has no specifier (ads, path, path_config_source or api_config_source)")
	}
	return nil
}

// Resolve returns the transport for a checked ConfigSource, creating (and,
// after Start, starting) it on first use.
func (m *Manager) Resolve(cs *corev3.ConfigSource, path, typeURL string) (Transport, error) {
	if err := m.Check(cs, path, typeURL); err != nil {
		return nil, err
	}
	switch spec := cs.GetConfigSourceSpecifier().(type) {
	case *corev3.ConfigSource_Ads, *corev3.ConfigSource_Self:
		return m.ADS(), nil
	case *corev3.ConfigSource_Path:
		return m.shared("file:"+typeURL+":"+spec.Path, func() (Transport, error) {
			return newFile(spec.Path, 0, m.log), nil
		})
	case *corev3.ConfigSource_PathConfigSource:
		pcs := spec.PathConfigSource
		return m.shared("file:"+typeURL+":"+pcs.GetPath(), func() (Transport, error) {
			return newFile(pcs.GetPath(), pcs.GetPollInterval().AsDuration(), m.log), nil
		})
	case *corev3.ConfigSource_ApiConfigSource:
		ac := spec.ApiConfigSource
		key, _ := proto.MarshalOptions{Deterministic: true}.Marshal(ac)
		if ac.GetApiType() == corev3.ApiConfigSource_REST {
			return m.shared("rest:"+typeURL+":"+string(key), func() (Transport, error) {
				return m.restClient(ac, typeURL), nil
			})
		}
		// Without aggregation each type has its own stream, as Envoy.
		return m.shared("grpc:"+typeURL+":"+string(key), func() (Transport, error) {
			return m.grpcClient(ac, typeURL)
		})
	}
	return nil, config.Errorf(path, "config source has no specifier")
}

// shared returns the transport under key, creating it with mk.
func (m *Manager) shared(key string, mk func() (Transport, error)) (Transport, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.transports[key]; t != nil {
		return t, nil
	}
	t, err := mk()
	if err != nil {
		return nil, err
	}
	m.transports[key] = t
	m.order = append(m.order, key)
	if m.started && !m.stopped {
		t.Start()
	}
	return t, nil
}

// Start starts every transport (and those created later, as they come).
// Files are read once synchronously first, in creation order — CDS before
// LDS, as Envoy initializes — so file-defined listeners find their
// clusters.
func (m *Manager) Start() {
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return
	}
	m.started = true
	ts := make([]Transport, 0, len(m.order))
	for _, k := range m.order {
		ts = append(ts, m.transports[k])
	}
	m.mu.Unlock()
	// Not under m.mu: handlers resolve (and so create) transports.
	for _, t := range ts {
		if f, ok := t.(*file); ok {
			f.check()
		}
	}
	for _, t := range ts {
		t.Start()
	}
}

// Stop stops every transport.
func (m *Manager) Stop() {
	m.mu.Lock()
	ts := make([]Transport, 0, len(m.transports))
	if m.started && !m.stopped {
		for _, k := range m.order {
			ts = append(ts, m.transports[k])
		}
	}
	m.stopped = true
	m.mu.Unlock()
	for _, t := range ts {
		t.Stop()
	}
}

// checkAPI validates an ApiConfigSource.
func (m *Manager) checkAPI(ac *corev3.ApiConfigSource, path string, aggregated bool) error {
	if err := config.CheckFields(ac, path, "api_type", "transport_api_version", "grpc_services", "cluster_names",
		"set_node_on_first_message_only", "refresh_delay", "request_timeout", "rate_limit_settings"); err != nil {
		return err
	}
	if v := ac.GetTransportApiVersion(); v != corev3.ApiVersion_V3 && v != corev3.ApiVersion_AUTO {
		return config.Unsupported(config.Join(path, "transport_api_version"), v.String(), "V3")
	}
	switch ac.GetApiType() {
	case corev3.ApiConfigSource_GRPC, corev3.ApiConfigSource_DELTA_GRPC,
		corev3.ApiConfigSource_AGGREGATED_GRPC, corev3.ApiConfigSource_AGGREGATED_DELTA_GRPC:
		return m.checkGRPC(ac, path)
	case corev3.ApiConfigSource_REST:
		if aggregated {
			return config.Errorf(config.Join(path, "api_type"), "ads_config needs a gRPC api_type (GRPC or DELTA_GRPC); REST has no aggregated form")
		}
		if len(ac.GetClusterNames()) != 1 {
			return config.Errorf(config.Join(path, "cluster_names"), "REST needs exactly one cluster_names entry, got %d", len(ac.GetClusterNames()))
		}
		if len(ac.GetGrpcServices()) > 0 {
			return config.Errorf(config.Join(path, "grpc_services"), "grpc_services does not go with api_type REST (use cluster_names)")
		}
		// Envoy: "refresh_delay is required for REST API configuration sources".
		if ac.GetRefreshDelay() == nil || ac.GetRefreshDelay().AsDuration() <= 0 {
			return config.Errorf(config.Join(path, "refresh_delay"), "refresh_delay is required for REST API configuration sources")
		}
		name := ac.GetClusterNames()[0]
		if m.opts.StaticCluster != nil && !m.opts.StaticCluster(name) {
			return config.Errorf(config.Join(path, "cluster_names"), "xDS cluster %q must be a cluster of static_resources", name)
		}
		return nil
	}
	return config.Unsupported(config.Join(path, "api_type"), ac.GetApiType().String(), "GRPC", "DELTA_GRPC", "REST")
}

func (m *Manager) checkGRPC(ac *corev3.ApiConfigSource, path string) error {
	if len(ac.GetClusterNames()) > 0 {
		return config.Errorf(config.Join(path, "cluster_names"), "cluster_names is for api_type REST; gRPC sources name their cluster in grpc_services")
	}
	if len(ac.GetGrpcServices()) != 1 {
		return config.Errorf(config.Join(path, "grpc_services"), "exactly one grpc_services entry is supported, got %d", len(ac.GetGrpcServices()))
	}
	gs := ac.GetGrpcServices()[0]
	gp := config.Index(config.Join(path, "grpc_services"), 0)
	if err := config.CheckFields(gs, gp, "envoy_grpc", "google_grpc", "timeout", "initial_metadata"); err != nil {
		return err
	}
	switch {
	case gs.GetEnvoyGrpc() != nil:
		if err := config.CheckFields(gs.GetEnvoyGrpc(), config.Join(gp, "envoy_grpc"), "cluster_name", "authority"); err != nil {
			return err
		}
		name := gs.GetEnvoyGrpc().GetClusterName()
		if m.opts.StaticCluster != nil && !m.opts.StaticCluster(name) {
			return config.Errorf(config.Join(gp, "envoy_grpc.cluster_name"), "xDS cluster %q must be a cluster of static_resources", name)
		}
	case gs.GetGoogleGrpc() != nil:
		g := gs.GetGoogleGrpc()
		if g.GetChannelCredentials() != nil || len(g.GetCallCredentials()) > 0 {
			return config.Unsupported(config.Join(gp, "google_grpc.channel_credentials"), "google_grpc credentials", "envoy_grpc with a TLS transport_socket on its cluster")
		}
		if g.GetTargetUri() == "" {
			return config.Errorf(config.Join(gp, "google_grpc.target_uri"), "target_uri is empty")
		}
	default:
		return config.Errorf(gp, "grpc service needs envoy_grpc or google_grpc")
	}
	return nil
}

// grpcClient builds the xDS client of a checked gRPC ApiConfigSource;
// service is "" for ADS or the one type a per-type stream carries.
func (m *Manager) grpcClient(ac *corev3.ApiConfigSource, service string) (*xdsclient.Client, error) {
	gs := ac.GetGrpcServices()[0]
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if md := gs.GetInitialMetadata(); len(md) > 0 {
		kv := make([]string, 0, 2*len(md))
		for _, h := range md {
			kv = append(kv, h.GetKey(), h.GetValue())
		}
		opts = append(opts, grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, o ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(metadata.AppendToOutgoingContext(ctx, kv...), desc, cc, method, o...)
		}))
	}
	var conn *grpc.ClientConn
	var err error
	if eg := gs.GetEnvoyGrpc(); eg != nil {
		name := eg.GetClusterName()
		if a := eg.GetAuthority(); a != "" {
			opts = append(opts, grpc.WithAuthority(a))
		}
		// Dialed through the cluster: its hosts, its connect timeout and
		// its transport socket (TLS or mTLS to the management server).
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return m.opts.Clusters.DialCluster(ctx, name)
		}))
		conn, err = grpc.NewClient("passthrough:///"+name, opts...)
	} else {
		conn, err = grpc.NewClient(gs.GetGoogleGrpc().GetTargetUri(), opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("gRPC client: %w", err)
	}
	delta := ac.GetApiType() == corev3.ApiConfigSource_DELTA_GRPC || ac.GetApiType() == corev3.ApiConfigSource_AGGREGATED_DELTA_GRPC
	return xdsclient.New(xdsclient.Options{Conn: conn, Node: m.opts.Node, Delta: delta, Service: service, Stats: m.opts.Stats, Log: m.log}), nil
}
