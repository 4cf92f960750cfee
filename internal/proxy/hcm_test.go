package proxy_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestForwardedHeaders(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	cases := []struct {
		name    string
		hcm     string
		reqHdr  []string
		want    []string
		notWant []string
	}{
		{
			name:   "edge: use_remote_address appends the peer and marks internal",
			hcm:    "use_remote_address: true",
			reqHdr: []string{"x-forwarded-for", "203.0.113.7", "x-envoy-retry-on", "5xx"},
			want:   []string{"header:x-forwarded-for=203.0.113.7,127.0.0.1", "header:x-envoy-internal=true", "header:x-forwarded-proto=http"},
		},
		{
			name:   "edge with trusted hops: the client address comes from XFF",
			hcm:    "use_remote_address: true\nxff_num_trusted_hops: 1\ninternal_address_config: {cidr_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]}",
			reqHdr: []string{"x-forwarded-for", "203.0.113.7", "x-envoy-retry-on", "5xx", "x-request-id", "client-id"},
			want:   []string{"header:x-forwarded-for=203.0.113.7,127.0.0.1", "header:x-envoy-external-address=203.0.113.7"},
			// An external request loses x-envoy-* control headers and its request id.
			notWant: []string{"x-envoy-retry-on", "x-envoy-internal", "client-id"},
		},
		{
			name:   "sidecar: XFF untouched, x-forwarded-proto kept",
			hcm:    "use_remote_address: false",
			reqHdr: []string{"x-forwarded-for", "198.51.100.1", "x-forwarded-proto", "https", "x-request-id", "keep-me"},
			want:   []string{"header:x-forwarded-for=198.51.100.1", "header:x-forwarded-proto=https", "header:x-request-id=keep-me"},
		},
		{
			name:    "skip_xff_append and via",
			hcm:     "use_remote_address: true\nskip_xff_append: true\nvia: legate-edge",
			reqHdr:  []string{"x-forwarded-for", "203.0.113.9"},
			want:    []string{"header:x-forwarded-for=203.0.113.9", "header:via=legate-edge"},
			notWant: []string{"203.0.113.9,127.0.0.1"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, cfg{
				hcm:      tc.hcm,
				vhosts:   vhost("{match: {prefix: /}, route: {cluster: u}}"),
				clusters: "[" + staticCluster("u", "", u.Addr) + "]",
			})
			_, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/"), tc.reqHdr...)
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("upstream request lacks %q:\n%s", w, body)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(body, w) {
					t.Errorf("upstream request has %q:\n%s", w, body)
				}
			}
		})
	}
}

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

func TestAccessLogThroughProxy(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	logPath := t.TempDir() + "/access.log"
	p := start(t, cfg{
		hcm: `access_log: [{name: envoy.access_loggers.file, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `}},
		  {name: json, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `.json, log_format: {json_format: {code: "%RESPONSE_CODE%", cluster: "%UPSTREAM_CLUSTER%", flags: "%RESPONSE_FLAGS%", route: "%ROUTE_NAME%"}}}}]`,
		vhosts:   vhost("{name: main, match: {prefix: /}, route: {cluster: u}}"),
		clusters: "[" + staticCluster("u", "", u.Addr) + "]",
	})
	testutil.Get(t, testutil.Client(), p.URL("http", "/logged?q=1"), "user-agent", "test-agent", "x-request-id", "rid-1")
	testutil.Get(t, testutil.Client(), p.URL("http", "/logged"), "host", "nomatch.example")
	var text, js []byte
	testutil.Eventually(t, 5*time.Second, func() bool {
		text, _ = os.ReadFile(logPath)
		js, _ = os.ReadFile(logPath + ".json")
		return strings.Count(string(text), "\n") >= 2 && strings.Count(string(js), "\n") >= 2
	}, "access log not written")
	var line string
	for _, l := range strings.Split(string(text), "\n") {
		if strings.Contains(l, "/logged?q=1") {
			line = l
		}
	}
	re := regexp.MustCompile(`^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET /logged\?q=1 HTTP/1.1" 200 - 0 \d+ \d+ \d+ "-" "test-agent" "rid-1" "127\.0\.0\.1:\d+" "` + regexp.QuoteMeta(u.Addr) + `"$`)
	if !re.MatchString(line) {
		t.Errorf("default-format line does not match Envoy's:\n%s", line)
	}
	jl := strings.Split(string(js), "\n")[0]
	if jl != `{"cluster":"u","code":200,"flags":"-","route":"main"}` {
		t.Errorf("json line: %s", jl)
	}
}
