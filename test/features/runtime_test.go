// The layered runtime: static, disk (symlink swap), admin (/runtime_modify)
// and RTDS layers, read by the data path (a route's runtime_fraction).

package features_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/testutil"
)

// fractionRoutes: /flag answers "on" when the runtime key routing.flag
// (a percentage, default 50 %) lets the request through, else "off".
var fractionRoutes = vhost(
	`{match: {prefix: /flag, runtime_fraction: {default_value: {numerator: 50}, runtime_key: routing.flag}}, direct_response: {status: 200, body: {inline_string: "on"}}}`,
	`{match: {prefix: /flag}, direct_response: {status: 200, body: {inline_string: "off"}}}`)

// runtimeDump is Envoy's /runtime JSON.
type runtimeDump struct {
	Layers  []string `json:"layers"`
	Entries map[string]struct {
		LayerValues []string `json:"layer_values"`
		FinalValue  string   `json:"final_value"`
	} `json:"entries"`
}

func getRuntime(t *testing.T, p *testutil.Proxy) runtimeDump {
	t.Helper()
	_, _, body := testutil.Get(t, testutil.Client(), "http://"+p.Admin+"/runtime")
	var d runtimeDump
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatalf("/runtime: %v\n%s", err, body)
	}
	return d
}

// flagAnswers sends n requests to /flag and returns the distinct bodies.
func flagAnswers(t *testing.T, p *testutil.Proxy, n int) map[string]int {
	t.Helper()
	c := testutil.Client()
	out := map[string]int{}
	for range n {
		_, _, body := testutil.Get(t, c, p.URL("http", "/flag"))
		out[body]++
	}
	return out
}

// always reports whether every one of 20 requests answered want.
func always(t *testing.T, p *testutil.Proxy, want string) bool {
	got := flagAnswers(t, p, 20)
	return got[want] == 20
}

func writeRuntimeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, v := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// swapRuntime points root/current at root/<target> atomically (a new
// symlink renamed over the old one), as Envoy's runtime docs prescribe.
func swapRuntime(t *testing.T, root, target string) {
	t.Helper()
	tmp := filepath.Join(root, "current.tmp")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join(root, target), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(root, "current")); err != nil {
		t.Fatal(err)
	}
}

func TestRuntimeDiskAndAdminLayers(t *testing.T) {
	root := t.TempDir()
	writeRuntimeTree(t, filepath.Join(root, "v1", "envoy"), map[string]string{"routing/flag": "0\n", "other": "# a comment\nkept"})
	swapRuntime(t, root, "v1")
	p := start(t, cfg{
		vhosts:   fractionRoutes,
		clusters: "[]",
		extra: fmt.Sprintf(`layered_runtime:
  layers:
  - {name: base, static_layer: {routing.flag: 100, static.only: yes}}
  - {name: disk, disk_layer: {symlink_root: %s, subdirectory: envoy}}
  - {name: admin, admin_layer: {}}
`, filepath.Join(root, "current")),
	})
	// The disk layer's 0 overrides the static layer's 100.
	if got := flagAnswers(t, p, 20); got["off"] != 20 {
		t.Fatalf("routing.flag 0 from the disk layer: answers %v, want all off", got)
	}
	d := getRuntime(t, p)
	if strings.Join(d.Layers, ",") != "base,disk,admin" {
		t.Errorf("/runtime layers = %v", d.Layers)
	}
	if e := d.Entries["routing.flag"]; e.FinalValue != "0" || strings.Join(e.LayerValues, ",") != "100,0," {
		t.Errorf("/runtime routing.flag = %+v", e)
	}
	if e := d.Entries["other"]; e.FinalValue != "kept" {
		t.Errorf("a comment line was not dropped: %+v", e)
	}
	if v := p.Stat(t, "runtime.num_layers"); v != 3 {
		t.Errorf("runtime.num_layers = %d", v)
	}
	if v := p.Stat(t, "runtime.load_success"); v < 1 {
		t.Errorf("runtime.load_success = %d", v)
	}

	// A symlink swap is picked up.
	writeRuntimeTree(t, filepath.Join(root, "v2", "envoy"), map[string]string{"routing/flag": "100"})
	swapRuntime(t, root, "v2")
	testutil.Eventually(t, 10*time.Second, func() bool { return always(t, p, "on") }, "the swapped disk layer (routing.flag 100) never took effect")

	// The admin layer overrides the disk layer; an empty value removes it.
	c := testutil.Client()
	resp, err := c.PostForm("http://"+p.Admin+"/runtime_modify", url.Values{"routing.flag": {"0"}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/runtime_modify: %v %v", resp, err)
	}
	resp.Body.Close()
	if got := flagAnswers(t, p, 20); got["off"] != 20 {
		t.Errorf("admin layer routing.flag 0: answers %v", got)
	}
	if v := p.Stat(t, "runtime.admin_overrides_active"); v != 1 {
		t.Errorf("runtime.admin_overrides_active = %d", v)
	}
	if e := getRuntime(t, p).Entries["routing.flag"]; strings.Join(e.LayerValues, ",") != "100,100,0" || e.FinalValue != "0" {
		t.Errorf("/runtime after runtime_modify: %+v", e)
	}
	resp, err = c.PostForm("http://"+p.Admin+"/runtime_modify", url.Values{"routing.flag": {""}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/runtime_modify removal: %v %v", resp, err)
	}
	resp.Body.Close()
	if !always(t, p, "on") {
		t.Error("removing the admin key did not restore the disk layer's value")
	}
	if code, _, _ := testutil.Get(t, c, "http://"+p.Admin+"/runtime_modify?routing.flag=1"); code != 405 {
		t.Errorf("GET /runtime_modify: %d, want 405", code)
	}

	// A tree that does not load (deeper than Envoy's 16 levels) keeps the
	// layer's last good values and counts runtime.load_error.
	bad := filepath.Join(root, "v3", "envoy")
	writeRuntimeTree(t, bad, map[string]string{"routing/flag": "0", strings.Repeat("d/", 17) + "k": "v"})
	errs := p.Stat(t, "runtime.load_error")
	swapRuntime(t, root, "v3")
	testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "runtime.load_error") > errs }, "runtime.load_error not counted for a bad tree")
	if !always(t, p, "on") {
		t.Error("a disk layer that failed to load lost its last good values")
	}
}

// rtdsControlPlane is go-control-plane's ADS server over a snapshot
// cache, noting the NACKs it receives.
type rtdsControlPlane struct {
	cache cachev3.SnapshotCache
	addr  string
	mu    sync.Mutex
	nacks []string
}

func startRTDSControlPlane(t *testing.T) *rtdsControlPlane {
	t.Helper()
	cp := &rtdsControlPlane{cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp.addr = ln.Addr().String()
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
		if m := r.GetErrorDetail().GetMessage(); m != "" {
			cp.mu.Lock()
			cp.nacks = append(cp.nacks, m)
			cp.mu.Unlock()
		}
		return nil
	}}
	gs := grpc.NewServer()
	xs := serverv3.NewServer(context.Background(), cp.cache, cb)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, xs)
	runtimev3.RegisterRuntimeDiscoveryServiceServer(gs, xs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return cp
}

func (cp *rtdsControlPlane) nackList() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]string(nil), cp.nacks...)
}

func (cp *rtdsControlPlane) push(t *testing.T, version string, layer map[string]any) {
	t.Helper()
	cp.pushTo(t, "legate-rtds", version, layer)
}

func (cp *rtdsControlPlane) pushTo(t *testing.T, node, version string, layer map[string]any) {
	t.Helper()
	st, err := structpb.NewStruct(layer)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{
		resourcev3.RuntimeType: {&runtimev3.Runtime{Name: "rtds_0", Layer: st}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), node, snap); err != nil {
		t.Fatal(err)
	}
}

func TestRuntimeRTDS(t *testing.T) {
	cp := startRTDSControlPlane(t)
	cp.push(t, "1", map[string]any{"routing": map[string]any{"flag": 0}, "rtds": "one"})
	h, port, _ := net.SplitHostPort(cp.addr)
	p := start(t, cfg{
		vhosts: fractionRoutes,
		clusters: fmt.Sprintf(`[{name: xds, type: STATIC, connect_timeout: 1s,
      typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {"@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}},
      load_assignment: {cluster_name: xds, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}}]`, h, port),
		extra: `node: {id: legate-rtds, cluster: test}
dynamic_resources:
  ads_config: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: xds}}]}
layered_runtime:
  layers:
  - {name: base, static_layer: {routing.flag: 100}}
  - {name: rtds, rtds_layer: {name: rtds_0, rtds_config: {ads: {}, resource_api_version: V3}}}
  - {name: admin, admin_layer: {}}
`,
	})
	// The server waited for the RTDS layer before serving.
	if e := getRuntime(t, p).Entries["routing.flag"]; e.FinalValue != "0" {
		t.Fatalf("RTDS routing.flag = %+v, want 0", e)
	}
	if got := flagAnswers(t, p, 20); got["off"] != 20 {
		t.Errorf("RTDS routing.flag 0: answers %v", got)
	}
	// An update changes the value.
	cp.push(t, "2", map[string]any{"routing": map[string]any{"flag": 100}, "rtds": "two"})
	testutil.Eventually(t, 10*time.Second, func() bool { return getRuntime(t, p).Entries["rtds"].FinalValue == "two" }, "RTDS update never applied")
	if !always(t, p, "on") {
		t.Error("RTDS routing.flag 100 did not take effect")
	}
	if v := p.Stat(t, "runtime.update_success"); v < 2 {
		t.Errorf("runtime.update_success = %d", v)
	}
	// A layer Envoy refuses (a list value) is NACKed; the last good one stays.
	cp.push(t, "3", map[string]any{"routing": map[string]any{"flag": []any{1, 2}}, "rtds": "three"})
	testutil.Eventually(t, 10*time.Second, func() bool { return len(cp.nackList()) > 0 }, "bad RTDS resource never NACKed")
	if n := cp.nackList()[0]; !strings.Contains(n, "Invalid runtime entry value for routing.flag") {
		t.Errorf("NACK message = %q", n)
	}
	if v := p.Stat(t, "runtime.update_rejected"); v < 1 {
		t.Errorf("runtime.update_rejected = %d", v)
	}
	if e := getRuntime(t, p).Entries["rtds"]; e.FinalValue != "two" {
		t.Errorf("after a NACK rtds = %+v, want the last good value", e)
	}
	// And a good one after it is applied.
	cp.push(t, "4", map[string]any{"routing": map[string]any{"flag": 0}, "rtds": "four"})
	testutil.Eventually(t, 10*time.Second, func() bool { return getRuntime(t, p).Entries["rtds"].FinalValue == "four" }, "RTDS update after a NACK never applied")
}

// pushListener serves, over LDS, a listener whose route configuration
// (RDS "never_sent") the control plane never sends: it stays warming.
func (cp *rtdsControlPlane) pushListener(t *testing.T, node, addr string) {
	t.Helper()
	h, port, _ := net.SplitHostPort(addr)
	var pl listenerv3.Listener
	js := fmt.Sprintf(`{"name": "warming", "address": {"socket_address": {"address": %q, "port_value": %s}},
	  "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
	    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
	    "stat_prefix": "w", "rds": {"route_config_name": "never_sent", "config_source": {"ads": {}, "resource_api_version": "V3"}},
	    "http_filters": [{"name": "router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}`, h, port)
	if err := protojson.Unmarshal([]byte(js), &pl); err != nil {
		t.Fatal(err)
	}
	snap, err := cachev3.NewSnapshot("1", map[resourcev3.Type][]types.Resource{resourcev3.ListenerType: {&pl}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), node, snap); err != nil {
		t.Fatal(err)
	}
}

// An rtds_config of its own (not ADS) opens the RuntimeDiscoveryService
// stream.
func TestRuntimeRTDSOwnStream(t *testing.T) {
	cp := startRTDSControlPlane(t)
	cp.pushTo(t, "legate-rtds-own", "1", map[string]any{"routing.flag": 100})
	h, port, _ := net.SplitHostPort(cp.addr)
	p := start(t, cfg{
		vhosts: fractionRoutes,
		clusters: fmt.Sprintf(`[{name: xds, type: STATIC, connect_timeout: 1s,
      typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {"@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}},
      load_assignment: {cluster_name: xds, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}}]`, h, port),
		extra: `node: {id: legate-rtds-own, cluster: test}
layered_runtime:
  layers:
  - {name: base, static_layer: {routing.flag: 0}}
  - name: rtds
    rtds_layer:
      name: rtds_0
      rtds_config: {resource_api_version: V3, api_config_source: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: xds}}]}}
`,
	})
	if !always(t, p, "on") {
		t.Errorf("RTDS over its own stream: routing.flag = %+v", getRuntime(t, p).Entries["routing.flag"])
	}
}
