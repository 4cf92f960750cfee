// The admin API.

package features_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestAdminEndpoints(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: u}}"),
		clusters: "[" + staticCluster("u", "", u.Addr) + "]",
	})
	c := testutil.Client()
	testutil.Get(t, c, p.URL("http", "/"))
	admin := "http://" + p.Admin
	get := func(path string) (int, string) {
		code, _, body := testutil.Get(t, c, admin+path)
		return code, body
	}
	post := func(path string) int {
		resp, err := c.Post(admin+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code, body := get("/ready"); code != 200 || body != "LIVE\n" {
		t.Fatalf("/ready: %d %q", code, body)
	}
	if code := post("/healthcheck/fail"); code != 200 {
		t.Fatalf("/healthcheck/fail: %d", code)
	}
	if code, body := get("/ready"); code != 503 || body != "DRAINING\n" {
		t.Fatalf("/ready after healthcheck/fail: %d %q", code, body)
	}
	post("/healthcheck/ok")
	if code, _ := get("/ready"); code != 200 {
		t.Fatalf("/ready after healthcheck/ok: %d", code)
	}
	if code, _ := get("/healthcheck/fail"); code != 405 {
		t.Fatalf("GET on a mutating endpoint: %d, want 405", code)
	}
	if _, body := get("/stats?filter=cluster.u.upstream_rq_total"); body != "cluster.u.upstream_rq_total: 1\n" {
		t.Fatalf("/stats filter: %q", body)
	}
	_, body := get("/stats?format=json&filter=^http")
	var js struct {
		Stats []struct {
			Name  string `json:"name"`
			Value any    `json:"value"`
		} `json:"stats"`
	}
	if err := json.Unmarshal([]byte(body), &js); err != nil || len(js.Stats) == 0 {
		t.Fatalf("/stats?format=json: %v %s", err, body)
	}
	if _, body := get("/stats/prometheus"); !strings.Contains(body, `envoy_cluster_upstream_rq_total{envoy_cluster_name="u"} 1`) ||
		!strings.Contains(body, `envoy_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="ingress"} 1`) {
		t.Fatalf("/stats/prometheus lacks Envoy's metric names:\n%s", body)
	}
	if _, body := get("/clusters"); !strings.Contains(body, "u::"+u.Addr+"::health_flags::healthy") || !strings.Contains(body, "u::"+u.Addr+"::rq_success::1") {
		t.Fatalf("/clusters:\n%s", body)
	}
	if _, body := get("/listeners"); body != "http::"+p.Addr("http")+"\n" {
		t.Fatalf("/listeners: %q", body)
	}
	_, body = get("/config_dump")
	for _, want := range []string{"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "static_clusters", "static_listeners"} {
		if !strings.Contains(body, want) {
			t.Errorf("/config_dump lacks %s", want)
		}
	}
	if _, body := get("/server_info"); !strings.Contains(body, `"state": "LIVE"`) {
		t.Errorf("/server_info: %s", body)
	}
	// /memory is Envoy's admin.v3.Memory (uint64 fields as JSON strings).
	var mem struct {
		Allocated string `json:"allocated"`
	}
	if _, body := get("/memory"); json.Unmarshal([]byte(body), &mem) != nil || mem.Allocated == "" || mem.Allocated == "0" ||
		!strings.Contains(body, `"heap_size"`) || !strings.Contains(body, `"total_physical_bytes"`) {
		t.Errorf("/memory: %s", body)
	}
	testutil.Eventually(t, 3e9, func() bool {
		_, body := get("/stats?filter=server.memory_allocated")
		return strings.HasPrefix(body, "server.memory_allocated: ") && !strings.HasPrefix(body, "server.memory_allocated: 0")
	}, "server.memory_allocated never set")
	if code := post("/logging?level=debug"); code != 200 {
		t.Errorf("/logging: %d", code)
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("unknown admin path: %d", code)
	}
	// /drain_listeners stops accepting.
	post("/drain_listeners")
	testutil.Eventually(t, 3e9, func() bool {
		_, err := http.Get(p.URL("http", "/"))
		return err != nil
	}, "listener still accepting after /drain_listeners")
}

// /debug/pprof/ is off unless --enable-pprof asks for it.
func TestPprofOffByDefault(t *testing.T) {
	p := start(t, cfg{vhosts: vhost(`{match: {prefix: /}, direct_response: {status: 200}}`), clusters: "[]"})
	resp, err := http.Get("http://" + p.Admin + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("/debug/pprof/: %d, want 404 without --enable-pprof", resp.StatusCode)
	}
}

// TestAdminAllowPaths: with admin.allow_paths only the matching paths
// (matched with their query string, so /stats?format=json needs a
// prefix) are served; the others answer 403, as Envoy. The bootstrap's
// default_regex_engine google_re2 is accepted (Legate's regexps are RE2).
func TestAdminAllowPaths(t *testing.T) {
	p := testutil.StartProxy(t, `
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
  allow_paths: [{exact: /ready}, {prefix: /stats}]
default_regex_engine: {name: envoy.regex_engines.google_re2, typed_config: {"@type": type.googleapis.com/envoy.extensions.regex_engines.v3.GoogleRE2}}
static_resources: {}
`, nil)
	c := testutil.Client()
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/ready", 200},
		{"/ready?x=1", 403},
		{"/stats", 200},
		{"/stats?format=json", 200},
		{"/clusters", 403},
		{"/config_dump", 403},
		{"/", 403},
	} {
		if code, _, body := testutil.Get(t, c, "http://"+p.Admin+tc.path); code != tc.want {
			t.Errorf("GET %s = %d %q, want %d", tc.path, code, body, tc.want)
		}
	}
	resp, err := c.Post("http://"+p.Admin+"/quitquitquit", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("POST /quitquitquit = %d, want 403", resp.StatusCode)
	}
	if _, err := testutil.TryStartProxy(t, `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
default_regex_engine: {name: envoy.regex_engines.hyperscan, typed_config: {"@type": type.googleapis.com/envoy.extensions.regex_engines.hyperscan.v3alpha.Hyperscan}}
static_resources: {}
`, nil); err == nil || !strings.Contains(err.Error(), "not implemented") {
		t.Errorf("hyperscan: err = %v, want not implemented", err)
	}
}

// /init_dump with nothing pending and /hot_restart_version, as Envoy
// answers them (hot restart disabled).
func TestAdminInitDumpAndHotRestartVersion(t *testing.T) {
	p := start(t, cfg{vhosts: vhost(`{match: {prefix: /}, direct_response: {status: 200}}`), clusters: "[]"})
	c := testutil.Client()
	admin := "http://" + p.Admin
	for _, path := range []string{"/init_dump", "/init_dump?mask=listener", "/init_dump?mask="} {
		code, h, body := testutil.Get(t, c, admin+path)
		if code != 200 || body != "{}\n" || h.Get("content-type") != "application/json" {
			t.Errorf("%s: %d %q %q, want 200 {}", path, code, h.Get("content-type"), body)
		}
	}
	if code, _, body := testutil.Get(t, c, admin+"/hot_restart_version"); code != 200 || body != "disabled" {
		t.Errorf("/hot_restart_version: %d %q, want disabled", code, body)
	}
}

// /config_dump's resource=, mask=, name_regex= and include_eds, and its
// routes and secrets sections, as Envoy's ConfigDumpHandler.
func TestAdminConfigDumpQueries(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /}, route: {cluster: alpha}}"),
		clusters: "[" + staticCluster("alpha", "", u.Addr) + ", " + staticCluster("beta", "", u.Addr) + "]\n" +
			"  secrets: [{name: api_key, generic_secret: {secret: {inline_string: hunter2}}}]",
	})
	c := testutil.Client()
	admin := "http://" + p.Admin
	type dump struct {
		Configs []map[string]any `json:"configs"`
	}
	get := func(path string) (int, string, dump) {
		t.Helper()
		code, _, body := testutil.Get(t, c, admin+path)
		var d dump
		if code == 200 {
			if err := json.Unmarshal([]byte(body), &d); err != nil {
				t.Fatalf("%s: %v\n%s", path, err, body)
			}
		}
		return code, body, d
	}

	_, full, d := get("/config_dump")
	var types []string
	for _, cfg := range d.Configs {
		types = append(types, strings.TrimPrefix(cfg["@type"].(string), "type.googleapis.com/envoy.admin.v3."))
	}
	if got := strings.Join(types, ","); got != "BootstrapConfigDump,ClustersConfigDump,ListenersConfigDump,RoutesConfigDump,SecretsConfigDump" {
		t.Errorf("config dump sections = %s", got)
	}
	if !strings.Contains(full, `"static_route_configs"`) || !strings.Contains(full, `"static_secrets"`) {
		t.Errorf("config dump lacks static routes or secrets:\n%s", full)
	}
	if strings.Contains(full, "hunter2") || !strings.Contains(full, "[redacted]") {
		t.Errorf("config dump does not redact the secret")
	}
	if _, _, d := get("/config_dump?include_eds"); len(d.Configs) != 6 || d.Configs[2]["@type"] != "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump" {
		t.Errorf("include_eds: %v", d.Configs)
	}
	if _, _, d := get("/config_dump?include_eds&resource=static_endpoint_configs&name_regex=beta"); len(d.Configs) != 1 ||
		d.Configs[0]["endpoint_config"].(map[string]any)["cluster_name"] != "beta" {
		t.Errorf("include_eds static_endpoint_configs for beta: %v", d.Configs)
	}

	// resource= returns each element of that repeated field.
	code, _, d := get("/config_dump?resource=static_clusters")
	if code != 200 || len(d.Configs) != 2 || d.Configs[0]["@type"] != "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster" {
		t.Fatalf("resource=static_clusters: %d %v", code, d.Configs)
	}
	if _, _, d := get("/config_dump?resource=static_route_configs"); len(d.Configs) != 1 || d.Configs[0]["route_config"].(map[string]any)["name"] != "local" {
		t.Errorf("resource=static_route_configs: %v", d.Configs)
	}
	// mask= trims each element, through its Any (cluster.name).
	_, body, d := get("/config_dump?resource=static_clusters&mask=cluster.name")
	if len(d.Configs) != 2 || strings.Contains(body, "connect_timeout") || strings.Contains(body, "last_updated") ||
		d.Configs[1]["cluster"].(map[string]any)["name"] != "beta" {
		t.Errorf("mask=cluster.name:\n%s", body)
	}
	// name_regex= keeps the resources whose name matches fully.
	if _, _, d := get("/config_dump?resource=static_clusters&name_regex=al.*"); len(d.Configs) != 1 ||
		d.Configs[0]["cluster"].(map[string]any)["name"] != "alpha" {
		t.Errorf("name_regex=al.*: %v", d.Configs)
	}
	if _, _, d := get("/config_dump?resource=static_clusters&name_regex=alp"); len(d.Configs) != 0 {
		t.Errorf("name_regex is a full match, got %v", d.Configs)
	}
	// Without resource=, a mask applies to the configs it fits.
	if _, _, d := get("/config_dump?mask=static_clusters"); len(d.Configs) != 1 || d.Configs[0]["@type"] != "type.googleapis.com/envoy.admin.v3.ClustersConfigDump" {
		t.Errorf("mask=static_clusters: %v", d.Configs)
	}

	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/config_dump?resource=nope", 404, "nope not found in config dump"},
		{"/config_dump?resource=version_info", 400, "version_info is not a repeated field. Use ?mask=version_info to get only this field"},
		{"/config_dump?resource=static_clusters&mask=cluster.nope", 400, "FieldMask paths: \"cluster.nope\"\n could not be successfully used."},
		{"/config_dump?mask=nope", 400, "FieldMask nope could not be successfully applied to any configs."},
	} {
		code, h, body := testutil.Get(t, c, admin+tc.path)
		if code != tc.code || body != tc.body || h.Get("x-content-type-options") != "nosniff" {
			t.Errorf("%s: %d %q, want %d %q", tc.path, code, body, tc.code, tc.body)
		}
	}
	if code, _, body := testutil.Get(t, c, admin+"/config_dump?name_regex=("); code != 400 || !strings.Contains(body, "Error while parsing name_regex from (") {
		t.Errorf("bad name_regex: %d %q", code, body)
	}
}

// /init_dump lists a warming listener's init manager and the RDS target
// it waits for, with Envoy's names.
func TestAdminInitDumpWarmingListener(t *testing.T) {
	cp := startRTDSControlPlane(t)
	cp.pushListener(t, "legate-init", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)))
	h, port, _ := net.SplitHostPort(cp.addr)
	p := testutil.StartProxy(t, fmt.Sprintf(`node: {id: legate-init, cluster: test}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  ads_config: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: xds}}]}
  lds_config: {ads: {}, resource_api_version: V3, initial_fetch_timeout: 1s}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: xds, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
`, h, port), nil)
	var d struct {
		Dumps []struct {
			Name    string   `json:"name"`
			Targets []string `json:"target_names"`
		} `json:"unready_targets_dumps"`
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, _, body := testutil.Get(t, testutil.Client(), "http://"+p.Admin+"/init_dump")
		return json.Unmarshal([]byte(body), &d) == nil && len(d.Dumps) == 1
	}, "/init_dump never listed the warming listener")
	if !strings.HasPrefix(d.Dumps[0].Name, "Listener-local-init-manager warming ") ||
		strings.Join(d.Dumps[0].Targets, ",") != "RdsRouteConfigSubscription init never_sent" {
		t.Errorf("/init_dump = %+v", d.Dumps)
	}
	_, _, body := testutil.Get(t, testutil.Client(), "http://"+p.Admin+"/init_dump?mask=cluster")
	if body != "{}\n" {
		t.Errorf("/init_dump?mask=cluster = %q, want {}", body)
	}
}
