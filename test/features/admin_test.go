// The admin API.

package features_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

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
