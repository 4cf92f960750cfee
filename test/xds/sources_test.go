package xds

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/legateproxy/legate/internal/testutil"
)

// Tests of the ConfigSource → subscription path: REST polling, sources
// that first appear in an update, subscriptions that follow the accepted
// listeners and clusters, and static resources fed by xDS.

func edsCluster(name string, src *corev3.ConfigSource) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: src},
	}
}

func routeTo(name, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"},
		Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}}}}}}
}

func snapshotOf(t *testing.T, version int, res map[resourcev3.Type][]types.Resource) *cachev3.Snapshot {
	t.Helper()
	snap, err := cachev3.NewSnapshot(fmt.Sprint(version), res)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// restServer is go-control-plane's REST-JSON gateway over a snapshot
// cache, on loopback; it counts the requests and answers by status.
type restServer struct {
	cache cachev3.SnapshotCache
	addr  string
	mu    sync.Mutex
	paths map[string]int // "POST /v3/discovery:clusters host=xds" → count
	codes map[int]int
}

func startREST(t *testing.T) *restServer {
	rs := &restServer{cache: cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil), paths: map[string]int{}, codes: map[int]int{}}
	gw := &serverv3.HTTPGateway{Server: serverv3.NewServer(context.Background(), rs.cache, nil)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rs.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, code, err := gw.ServeHTTP(r)
		rs.mu.Lock()
		rs.paths[fmt.Sprintf("%s %s host=%s type=%s", r.Method, r.URL.Path, r.Host, r.Header.Get("Content-Type"))]++
		rs.codes[code]++
		rs.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), code)
			return
		}
		w.WriteHeader(code)
		w.Write(b)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return rs
}

func (rs *restServer) count(key string) int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.paths[key]
}

func (rs *restServer) code(c int) int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.codes[c]
}

// TestRESTSubscriptions runs CDS, EDS, LDS and RDS over REST-JSON
// (api_type: REST) against go-control-plane's HTTP gateway: the proxy
// serves, follows endpoint changes by polling, rejects a bad update while
// the last good config keeps serving, and sends the version it holds (the
// gateway then answers 304).
func TestRESTSubscriptions(t *testing.T) {
	rs := startREST(t)
	backends := upstreams(t, 2)
	listen := freeAddr(t)
	rest := &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{
		ApiConfigSource: &corev3.ApiConfigSource{ApiType: corev3.ApiConfigSource_REST, TransportApiVersion: corev3.ApiVersion_V3,
			ClusterNames: []string{"xds"}, RefreshDelay: durationpb.New(100 * time.Millisecond)}}}
	version := 0
	push := func(endpoints []string, lb clusterv3.Cluster_LbPolicy) {
		version++
		cl := edsCluster("backend", rest)
		cl.LbPolicy = lb
		la := endpointsOf(endpoints)
		if err := rs.cache.SetSnapshot(context.Background(), nodeID, snapshotOf(t, version, map[resourcev3.Type][]types.Resource{
			resourcev3.ClusterType:  {cl},
			resourcev3.EndpointType: {la},
			resourcev3.ListenerType: {listenerFrom("main", listen, "local", rest)},
			resourcev3.RouteType:    {routeTo("local", "backend")},
		})); err != nil {
			t.Fatal(err)
		}
	}
	push(backends[:1], clusterv3.Cluster_ROUND_ROBIN)
	h, port, _ := net.SplitHostPort(rs.addr)
	p := testutil.StartProxy(t, fmt.Sprintf(`
node: {id: %s, cluster: test}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  cds_config: {resource_api_version: V3, api_config_source: {api_type: REST, transport_api_version: V3, cluster_names: [xds], refresh_delay: 0.1s}}
  lds_config: {resource_api_version: V3, api_config_source: {api_type: REST, transport_api_version: V3, cluster_names: [xds], refresh_delay: 0.1s}}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    load_assignment: {cluster_name: xds, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
`, nodeID, h, port), nil)
	url := "http://" + listen + "/"
	testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(url); return b == "b0" }, "the REST-configured listener does not serve")
	for _, typ := range []string{"clusters", "endpoints", "listeners", "routes"} {
		if rs.count("POST /v3/discovery:"+typ+" host=xds type=application/json") == 0 {
			t.Errorf("no REST fetch of %s with Host: xds and a JSON body: %v", typ, rs.paths)
		}
	}
	// Endpoints move: the next poll applies them.
	push(backends[1:], clusterv3.Cluster_ROUND_ROBIN)
	testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(url); return b == "b1" }, "a changed EDS resource was not polled")
	// The proxy sends the version it holds: unchanged polls are 304s.
	testutil.Eventually(t, 5*time.Second, func() bool { return rs.code(http.StatusNotModified) > 0 }, "no poll carried the held version (never a 304)")
	// A cluster Legate rejects: update_rejected, the last good config stays.
	// (Endpoints unchanged: EDS is a separate resource and would apply.)
	push(backends[1:], clusterv3.Cluster_CLUSTER_PROVIDED)
	testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "cluster_manager.cds.update_rejected") >= 1 }, "the bad REST update was not rejected")
	for i := 0; i < 5; i++ {
		if c, b, _ := getQuiet(url); c != 200 || b != "b1" {
			t.Fatalf("after a rejected REST update: %d %q", c, b)
		}
	}
}

// TestRouteSubscriptionsFollowListeners: when the listeners stop naming a
// route configuration its RDS subscription goes (the proxy asks only for
// the names in use) and it leaves the config dump.
func TestRouteSubscriptionsFollowListeners(t *testing.T) {
	cp := startControlPlane(t, "")
	backends := upstreams(t, 2)
	listen := freeAddr(t)
	version := 0
	push := func(routeName string) {
		// go-control-plane's ADS cache answers RDS only when the request
		// names every route configuration of the snapshot: it holds the
		// one in use.
		cluster := map[string]string{"first": "b0", "second": "b1"}[routeName]
		version++
		if err := cp.cache.SetSnapshot(context.Background(), nodeID, snapshotOf(t, version, map[resourcev3.Type][]types.Resource{
			resourcev3.ClusterType:  {edsCluster("b0", adsSource()), edsCluster("b1", adsSource())},
			resourcev3.EndpointType: {endpointsNamed("b0", backends[:1]), endpointsNamed("b1", backends[1:])},
			resourcev3.ListenerType: {listener("main", listen, routeName)},
			resourcev3.RouteType:    {routeTo(routeName, cluster)},
		})); err != nil {
			t.Fatal(err)
		}
	}
	push("first")
	p := testutil.StartProxy(t, bootstrap(cp.addr, false), nil)
	url := "http://" + listen + "/"
	testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(url); return b == "b0" }, "proxy never served route first: %v", cp.names)
	if got := cp.lastNames(resourcev3.RouteType); !slices.Equal(got, []string{"first"}) {
		t.Errorf("RDS names = %v, want [first]", got)
	}
	push("second")
	testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(url); return b == "b1" }, "proxy never served route second")
	testutil.Eventually(t, 5*time.Second, func() bool { return slices.Equal(cp.lastNames(resourcev3.RouteType), []string{"second"}) },
		"the RDS subscription still asks for the unused route configuration: %v", cp.lastNames(resourcev3.RouteType))
	_, _, dump := testutil.Get(t, testutil.Client(), "http://"+p.Admin+"/config_dump")
	if strings.Contains(dump, `"name": "first"`) || !strings.Contains(dump, `"name": "second"`) {
		t.Errorf("config dump should hold route second only:\n%s", dump)
	}
}

// endpointsNamed is endpointsOf for the service name.
func endpointsNamed(name string, addrs []string) *endpointv3.ClusterLoadAssignment {
	la := endpointsOf(addrs)
	la.ClusterName = name
	return la
}

// TestRouteSourceFromAnUpdate: an LDS update brings a listener whose RDS
// source (a file) the bootstrap never named; the proxy starts watching it
// and follows its changes.
func TestRouteSourceFromAnUpdate(t *testing.T) {
	cp := startControlPlane(t, "")
	dir := t.TempDir()
	rdsFile := filepath.Join(dir, "rds.yaml")
	writeRoutes := func(body string) {
		tmp := rdsFile + ".tmp"
		os.WriteFile(tmp, []byte(fmt.Sprintf(`version_info: "%s"
resources:
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: from_file
  virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: %s}}}]
`, body, body)), 0o644)
		if err := os.Rename(tmp, rdsFile); err != nil {
			t.Fatal(err)
		}
	}
	writeRoutes("one")
	listen := freeAddr(t)
	fileSource := &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{
		PathConfigSource: &corev3.PathConfigSource{Path: rdsFile}}}
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, snapshotOf(t, 1, map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {listenerFrom("main", listen, "from_file", fileSource)},
	})); err != nil {
		t.Fatal(err)
	}
	// LDS only: the snapshot has no clusters (go-control-plane would not
	// answer a CDS request for an empty type).
	testutil.StartProxy(t, strings.Replace(bootstrap(cp.addr, false), "cds_config: {ads: {}, resource_api_version: V3}", "", 1), nil)
	url := "http://" + listen + "/"
	testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(url); return b == "one" }, "the RDS file named by an LDS update is not served")
	writeRoutes("two")
	testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(url); return b == "two" }, "the RDS file is not watched")
}

// TestStaticEDSClusterFromFile: a static_resources cluster of type EDS
// takes its endpoints from its eds_config (here a file), as Envoy's
// static EDS clusters do; before, it silently never got any.
func TestStaticEDSClusterFromFile(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("eds"))
	h, port, _ := net.SplitHostPort(u.Addr)
	edsFile := filepath.Join(t.TempDir(), "eds.yaml")
	os.WriteFile(edsFile, []byte(fmt.Sprintf(`resources:
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: svc
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]
`, h, port)), 0o644)
	p := testutil.StartProxy(t, fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: main
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: backend}}]}]
  clusters:
  - name: backend
    type: EDS
    connect_timeout: 1s
    eds_cluster_config:
      service_name: svc
      eds_config: {resource_api_version: V3, path_config_source: {path: %s}}
`, edsFile), nil)
	if c, body := get(t, p.URL("main", "/")); c != 200 || !strings.Contains(body, "upstream=eds") {
		t.Fatalf("static EDS cluster: %d %q", c, body)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c, _, b := testutil.Get(t, testutil.Client(), url)
	return c, b
}

// typedControlPlane is go-control-plane's server over one snapshot cache
// with the aggregated service and the per-type RDS and SDS services; it
// records the type of every stream opened ("" for ADS) and the NACKs.
type typedControlPlane struct {
	cache   cachev3.SnapshotCache
	addr    string
	mu      sync.Mutex
	streams []string
	nacks   []string
}

func startTypedControlPlane(t *testing.T) *typedControlPlane {
	t.Helper()
	cp := &typedControlPlane{cache: cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp.addr = ln.Addr().String()
	srv := serverv3.NewServer(context.Background(), cp.cache, serverv3.CallbackFuncs{
		StreamOpenFunc: func(_ context.Context, _ int64, typeURL string) error {
			cp.mu.Lock()
			cp.streams = append(cp.streams, typeURL)
			cp.mu.Unlock()
			return nil
		},
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			if m := r.GetErrorDetail().GetMessage(); m != "" {
				cp.mu.Lock()
				cp.nacks = append(cp.nacks, m)
				cp.mu.Unlock()
			}
			return nil
		},
	})
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	routeservice.RegisterRouteDiscoveryServiceServer(g, srv)
	secretservice.RegisterSecretDiscoveryServiceServer(g, srv)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return cp
}

// opened reports whether a stream of the type was opened.
func (cp *typedControlPlane) opened(typeURL string) bool {
	return slices.Contains(cp.streamTypes(), typeURL)
}

func (cp *typedControlPlane) streamTypes() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]string(nil), cp.streams...)
}

func (cp *typedControlPlane) nackMessages() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]string(nil), cp.nacks...)
}

func (cp *typedControlPlane) set(t *testing.T, version int, res map[resourcev3.Type][]types.Resource) {
	t.Helper()
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, snapshotOf(t, version, res)); err != nil {
		t.Fatal(err)
	}
}

// grpcSource is a ConfigSource for a per-type gRPC stream to the xds
// cluster (not ADS).
func grpcSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{
		ApiConfigSource: &corev3.ApiConfigSource{ApiType: corev3.ApiConfigSource_GRPC, TransportApiVersion: corev3.ApiVersion_V3,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "xds"}}}}}}}
}

// TestRouteSourceOverGRPCFromAnUpdate: an LDS update (over ADS) brings a
// listener whose RDS config source is an api_config_source — a gRPC
// stream of its own to the management server — that the bootstrap never
// named. The proxy opens that RDS stream, the listener serves its routes
// and follows their changes. (Before, the client of a source first named
// after start was created but never started: the listener waited out its
// initial fetch and had no routes.)
func TestRouteSourceOverGRPCFromAnUpdate(t *testing.T) {
	cp := startTypedControlPlane(t)
	backends := upstreams(t, 2)
	listen := freeAddr(t)
	push := func(version int, backend string) {
		cp.set(t, version, map[resourcev3.Type][]types.Resource{
			resourcev3.ClusterType:  {staticCluster("backend", backend)},
			resourcev3.ListenerType: {listenerFrom("main", listen, "late", grpcSource())},
			resourcev3.RouteType:    {routeTo("late", "backend")},
		})
	}
	push(1, backends[0])
	p := testutil.StartProxy(t, bootstrap(cp.addr, false), nil)
	url := "http://" + listen + "/"
	testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(url); return b == "b0" },
		"the listener does not serve the routes of its gRPC RDS source (NACKs: %v)", cp.nackMessages())
	if !cp.opened(resourcev3.RouteType) {
		t.Errorf("no RDS stream was opened (streams: %q): the routes did not come over their own api_config_source", cp.streamTypes())
	}
	if n := p.Stat(t, "http.main.rds.late.update_success"); n < 1 {
		t.Errorf("http.main.rds.late.update_success = %d", n)
	}
	// The route configuration changes (the cluster it names moves to b1):
	// the subscription keeps following.
	push(2, backends[1])
	testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(url); return b == "b1" }, "the update did not apply")
	if msgs := cp.nackMessages(); len(msgs) != 0 {
		t.Errorf("updates were NACKed: %v", msgs)
	}
}

// TestSecretSourceOverGRPCFromAnUpdate: a CDS update (over ADS) brings a
// cluster whose upstream TLS validation context is an SDS secret from an
// api_config_source — a gRPC stream of its own — that nothing named at
// start. The proxy opens that SDS stream, the cluster warms on the secret
// and its TLS verifies with it: a secret with another CA then makes the
// handshake fail.
func TestSecretSourceOverGRPCFromAnUpdate(t *testing.T) {
	ca := testutil.NewCA(t, "backend-ca")
	other := testutil.NewCA(t, "other-ca")
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close") // every request a new handshake
		w.Write([]byte("tls-backend"))
	}))
	backend.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "backend", "backend.example.com").TLS}}
	backend.StartTLS()
	t.Cleanup(backend.Close)

	cp := startTypedControlPlane(t)
	listen := freeAddr(t)
	tlsCluster := staticCluster("tls", backend.Listener.Addr().String())
	utc, err := anypb.New(&tlsv3.UpstreamTlsContext{Sni: "backend.example.com", CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{
			Name: "backend_ca", SdsConfig: grpcSource()}}}})
	if err != nil {
		t.Fatal(err)
	}
	tlsCluster.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: utc}}
	push := func(version int, caPEM []byte) {
		sec := &tlsv3.Secret{Name: "backend_ca", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: caPEM}}}}}
		cp.set(t, version, map[resourcev3.Type][]types.Resource{
			resourcev3.ClusterType:  {tlsCluster},
			resourcev3.ListenerType: {listener("main", listen, "local")},
			resourcev3.RouteType:    {routeTo("local", "tls")},
			resourcev3.SecretType:   {sec},
		})
	}
	push(1, ca.CertPEM)
	p := testutil.StartProxy(t, bootstrap(cp.addr, false), nil)
	url := "http://" + listen + "/"
	testutil.Eventually(t, 10*time.Second, func() bool { c, b, _ := getQuiet(url); return c == 200 && b == "tls-backend" },
		"the cluster's TLS does not verify with its SDS secret from a gRPC source (NACKs: %v)", cp.nackMessages())
	if !cp.opened(resourcev3.SecretType) {
		t.Errorf("no SDS stream was opened (streams: %q): the secret did not come over its own api_config_source", cp.streamTypes())
	}
	if n := p.Stat(t, "cluster.tls.ssl.handshake"); n < 1 {
		t.Errorf("cluster.tls.ssl.handshake = %d", n)
	}
	// The secret is what verifies: another CA makes the handshake fail.
	push(2, other.CertPEM)
	testutil.Eventually(t, 10*time.Second, func() bool { c, _, _ := getQuiet(url); return c == 503 },
		"a CA that did not sign the backend still verifies it: the SDS secret is not what verifies")
	if msgs := cp.nackMessages(); len(msgs) != 0 {
		t.Errorf("updates were NACKed: %v", msgs)
	}
}
