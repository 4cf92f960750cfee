// Local replies: the proxy's own answers (no route, timeouts, connect
// failures, no healthy upstream, direct responses) and local_reply_config.

package features_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestLocalReplies(t *testing.T) {
	slow := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(500 * time.Millisecond)
		w.Write([]byte("late"))
	}))
	// A port with nothing listening: connect fails.
	dead := "127.0.0.1:1"
	p := start(t, cfg{
		vhosts: vhost(
			"{match: {prefix: /slow}, route: {cluster: slow, timeout: 0.1s}}",
			"{match: {prefix: /dead}, route: {cluster: dead}}",
			"{match: {prefix: /empty}, route: {cluster: empty}}",
			"{match: {prefix: /nocluster}, route: {cluster_header: x-cluster}}",
			"{match: {prefix: /direct}, direct_response: {status: 418, body: {inline_string: teapot}}}",
			"{match: {prefix: /old}, redirect: {path_redirect: /new, response_code: FOUND}}",
		),
		clusters: "[" + staticCluster("slow", "", slow.Addr) + ", " + staticCluster("dead", "", dead) +
			", {name: empty, type: STATIC, connect_timeout: 1s, load_assignment: {cluster_name: empty}}]",
	})
	c := testutil.Client()
	cases := []struct {
		path   string
		status int
		body   string
		hdr    [2]string
	}{
		{"/missing-route", 404, "", [2]string{}},
		{"/slow", 504, "upstream request timeout", [2]string{}},
		{"/dead", 503, "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure", [2]string{}},
		{"/empty", 503, "no healthy upstream", [2]string{}},
		{"/nocluster", 503, "", [2]string{}},
		{"/direct", 418, "teapot", [2]string{"content-type", "text/plain"}},
		{"/old?q=1", 302, "", [2]string{"location", "http://" + p.Addr("http") + "/new?q=1"}},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			code, h, body := testutil.Get(t, c, p.URL("http", tc.path))
			if code != tc.status || !strings.HasPrefix(body, tc.body) {
				t.Fatalf("got %d %q, want %d %q", code, body, tc.status, tc.body)
			}
			if tc.hdr[0] != "" && h.Get(tc.hdr[0]) != tc.hdr[1] {
				t.Fatalf("%s = %q, want %q", tc.hdr[0], h.Get(tc.hdr[0]), tc.hdr[1])
			}
		})
	}
	if p.Stat(t, "cluster.slow.upstream_rq_timeout") != 1 || p.Stat(t, "http.ingress.no_route") != 1 || p.Stat(t, "cluster.dead.upstream_cx_connect_fail") < 1 {
		t.Errorf("stats: timeout=%d no_route=%d connect_fail=%d", p.Stat(t, "cluster.slow.upstream_rq_timeout"), p.Stat(t, "http.ingress.no_route"), p.Stat(t, "cluster.dead.upstream_cx_connect_fail"))
	}
}

// TestLocalReplyConfig: local_reply_config rewrites Legate's own replies
// as Envoy's does — the first matching mapper changes status, body and
// headers, then body_format (here JSON with %LOCAL_REPLY_BODY%) shapes
// the body; upstream responses are not touched.
func TestLocalReplyConfig(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	h, port := u.Host()
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
          local_reply_config:
            mappers:
            - filter: {status_code_filter: {comparison: {op: EQ, value: {default_value: 404, runtime_key: k}}}}
              status_code: 410
              body: {inline_string: "gone for good"}
              headers_to_add: [{header: {key: x-mapped, value: "%%RESPONSE_CODE%%"}}]
            - filter: {response_flag_filter: {flags: [UH]}}
              body_format_override: {text_format: "maintenance: %%LOCAL_REPLY_BODY%%\n"}
            body_format:
              json_format: {code: "%%RESPONSE_CODE%%", message: "%%LOCAL_REPLY_BODY%%", path: "%%REQ(:PATH)%%"}
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - {match: {prefix: /up}, route: {cluster: backend}}
              - {match: {prefix: /down}, route: {cluster: empty}}
              - {match: {prefix: /teapot}, direct_response: {status: 418, body: {inline_string: "short and stout"}}}
  clusters:
  - {name: backend, type: STATIC, load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}}
  - {name: empty, type: STATIC, load_assignment: {cluster_name: empty}}
`, h, port), nil)
	c := testutil.Client()
	// No route: 404 → mapped to 410 with its body and header (added before
	// the status rewrite, so it shows 404, as Envoy documents), then JSON.
	code, hdr, body := testutil.Get(t, c, p.URL("main", "/nowhere"))
	var js map[string]any
	if err := json.Unmarshal([]byte(body), &js); err != nil || code != 410 || js["message"] != "gone for good" || js["path"] != "/nowhere" || hdr.Get("x-mapped") != "404" || hdr.Get("content-type") != "application/json" {
		t.Errorf("no route: %d %v %q %v (err %v)", code, hdr, body, js, err)
	}
	if js["code"] != float64(410) {
		t.Errorf("%%RESPONSE_CODE%% in the body should be the mapped status: %v", js["code"])
	}
	// No healthy upstream: the second mapper's text override.
	code, hdr, body = testutil.Get(t, c, p.URL("main", "/down"))
	if code != 503 || body != "maintenance: no healthy upstream\n" || hdr.Get("content-type") != "text/plain" {
		t.Errorf("no healthy upstream: %d %q %v", code, body, hdr)
	}
	// A direct response is a local reply too: body_format applies.
	code, _, body = testutil.Get(t, c, p.URL("main", "/teapot"))
	if err := json.Unmarshal([]byte(body), &js); err != nil || code != 418 || js["message"] != "short and stout" {
		t.Errorf("direct response: %d %q", code, body)
	}
	// Upstream responses are untouched.
	if code, _, body = testutil.Get(t, c, p.URL("main", "/up")); code != 200 || js == nil || body == "" || body[0] == '{' {
		t.Errorf("upstream response rewritten: %d %q", code, body)
	}
}

// TestLocalReplyMapperRuntime: a local_reply_config mapper's filter reads
// its runtime_key from the runtime (here the static layer moves the
// status threshold from its default 600 to 404), as Envoy's.
func TestLocalReplyMapperRuntime(t *testing.T) {
	p := start(t, cfg{
		hcm:      `local_reply_config: {mappers: [{filter: {status_code_filter: {comparison: {op: GE, value: {default_value: 600, runtime_key: reply.min_status}}}}, status_code: 418}]}`,
		vhosts:   vhost("{match: {prefix: /}, direct_response: {status: 404}}"),
		clusters: "[]",
		extra:    "layered_runtime: {layers: [{name: static, static_layer: {reply.min_status: 404}}]}\n",
	})
	if code, _, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/x")); code != 418 {
		t.Errorf("status %d, want the mapper's 418 (runtime_key lowered its threshold to 404)", code)
	}
}
