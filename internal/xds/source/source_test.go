package source

import (
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/legateproxy/legate/internal/stats"
	xdsclient "github.com/legateproxy/legate/internal/xds/client"
)

func testManager(t *testing.T, withADS bool) *Manager {
	t.Helper()
	m := New(Options{Stats: stats.NewStore(), StaticCluster: func(n string) bool { return n == "xds" }})
	if withADS {
		if err := m.SetADS(grpcAPI("xds"), "ads_config"); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func grpcAPI(cluster string) *corev3.ApiConfigSource {
	return &corev3.ApiConfigSource{ApiType: corev3.ApiConfigSource_GRPC, TransportApiVersion: corev3.ApiVersion_V3,
		GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}}}}}
}

func api(ac *corev3.ApiConfigSource) *corev3.ConfigSource {
	return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: ac}}
}

func restSource(mod func(*corev3.ApiConfigSource)) *corev3.ConfigSource {
	ac := &corev3.ApiConfigSource{ApiType: corev3.ApiConfigSource_REST, ClusterNames: []string{"xds"}, RefreshDelay: durationpb.New(time.Second)}
	if mod != nil {
		mod(ac)
	}
	return api(ac)
}

// TestCheck: every config source form Legate takes, and the errors for
// the ones it cannot, each naming the field to fix.
func TestCheck(t *testing.T) {
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	for _, tc := range []struct {
		name    string
		ads     bool
		cs      *corev3.ConfigSource
		typeURL string
		err     string
	}{
		{name: "ads", ads: true, cs: ads},
		{name: "ads without ads_config", cs: ads, err: "src.ads: ads: {} needs dynamic_resources.ads_config"},
		{name: "grpc", cs: api(grpcAPI("xds"))},
		{name: "grpc on a dynamic cluster", cs: api(grpcAPI("other")), err: `src.api_config_source.grpc_services[0].envoy_grpc.cluster_name: xDS cluster "other" must be a cluster of static_resources`},
		{name: "rest", cs: restSource(nil)},
		{name: "rest without refresh_delay", cs: restSource(func(ac *corev3.ApiConfigSource) { ac.RefreshDelay = nil }), err: "refresh_delay is required for REST API configuration sources"},
		{name: "rest with two clusters", cs: restSource(func(ac *corev3.ApiConfigSource) { ac.ClusterNames = []string{"xds", "xds"} }), err: "REST needs exactly one cluster_names entry, got 2"},
		{name: "rest with grpc_services", cs: restSource(func(ac *corev3.ApiConfigSource) { ac.GrpcServices = grpcAPI("xds").GrpcServices }), err: "grpc_services does not go with api_type REST"},
		{name: "grpc with cluster_names", cs: api(func() *corev3.ApiConfigSource { ac := grpcAPI("xds"); ac.ClusterNames = []string{"xds"}; return ac }()), err: "cluster_names is for api_type REST"},
		{name: "v2 resources", cs: &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V2, ConfigSourceSpecifier: ads.ConfigSourceSpecifier}, ads: true, err: "src.resource_api_version"},
		{name: "no specifier", cs: &corev3.ConfigSource{}, err: "config source has no specifier"},
		{name: "path", cs: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Path{Path: "/x"}}},
		{name: "empty path_config_source", cs: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{}}}, err: "src.path_config_source.path: path is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testManager(t, tc.ads)
			typeURL := tc.typeURL
			if typeURL == "" {
				typeURL = xdsclient.RouteType
			}
			err := m.Check(tc.cs, "src", typeURL)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want it to contain %q", err, tc.err)
			}
		})
	}
}

// TestADSConfigMustBeGRPC: REST has no aggregated form.
func TestADSConfigMustBeGRPC(t *testing.T) {
	m := testManager(t, false)
	err := m.SetADS(restSource(nil).GetApiConfigSource(), "dynamic_resources.ads_config")
	if err == nil || !strings.Contains(err.Error(), "ads_config needs a gRPC api_type") {
		t.Fatalf("got %v", err)
	}
}

// TestResolveShares: equal sources share a transport per type, as
// Envoy's subscription factory; a gRPC source has one stream per type.
func TestResolveShares(t *testing.T) {
	m := testManager(t, true)
	resolve := func(cs *corev3.ConfigSource, typeURL string) Transport {
		t.Helper()
		tr, err := m.Resolve(cs, "src", typeURL)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	if resolve(ads, xdsclient.RouteType) != Transport(m.ADS()) || resolve(ads, xdsclient.SecretType) != Transport(m.ADS()) {
		t.Error("ads sources are not the ADS stream")
	}
	g1, g2 := resolve(api(grpcAPI("xds")), xdsclient.RouteType), resolve(api(grpcAPI("xds")), xdsclient.RouteType)
	if g1 != g2 {
		t.Error("two equal gRPC sources for one type should share a stream")
	}
	if resolve(api(grpcAPI("xds")), xdsclient.EndpointType) == g1 {
		t.Error("a non-aggregated gRPC source must not carry two types on one stream")
	}
	if resolve(restSource(nil), xdsclient.RouteType) != resolve(restSource(nil), xdsclient.RouteType) {
		t.Error("equal REST sources should share a poller")
	}
	f := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Path{Path: "/a"}}
	if resolve(f, xdsclient.RouteType) != resolve(f, xdsclient.RouteType) {
		t.Error("one file should be one watcher")
	}
}

// recorder is a Transport that records what Watches asks of it.
type recorder struct {
	calls []string
}

func (r *recorder) Subscribe(typeURL string, names []string, _ xdsclient.Handler, _ *xdsclient.Stats) {
	r.calls = append(r.calls, "subscribe "+strings.Join(names, ","))
}
func (r *recorder) SetNames(typeURL string, names []string) {
	r.calls = append(r.calls, "names "+strings.Join(names, ","))
}
func (r *recorder) Received(string) <-chan struct{} { return nil }
func (r *recorder) Start()                          {}
func (r *recorder) Stop()                           {}

// TestWatchesFollowNames: subscribe once, then change names only when
// they change; a transport no longer wanted is emptied (unsubscribed).
func TestWatchesFollowNames(t *testing.T) {
	a, b := &recorder{}, &recorder{}
	w := NewWatches(xdsclient.RouteType, nil, nil)
	w.Set(map[Transport][]string{a: {"r2", "r1", "r1"}})
	w.Set(map[Transport][]string{a: {"r1", "r2"}, b: {"x"}})
	w.Set(map[Transport][]string{a: {"r1"}})
	w.Set(map[Transport][]string{a: {"r1"}})
	w.Set(nil)
	if got, want := strings.Join(a.calls, "; "), "subscribe r1,r2; names r1; names "; got != want {
		t.Errorf("transport a: %q, want %q", got, want)
	}
	if got, want := strings.Join(b.calls, "; "), "subscribe x; names "; got != want {
		t.Errorf("transport b: %q, want %q", got, want)
	}
}
