package proxy_test

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestRoundRobinAndEnvoyHeaders(t *testing.T) {
	a := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	b := testutil.StartUpstream(t, testutil.EchoHandler("b"))
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: web, timeout: 3s}}"),
		clusters: "[" + staticCluster("web", "", a.Addr, b.Addr) + "]",
	})
	c := testutil.Client()
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		code, h, body := testutil.Get(t, c, p.URL("http", "/hello?x=1"))
		if code != 200 {
			t.Fatalf("status %d: %s", code, body)
		}
		seen[h.Get("x-upstream")]++
		for _, want := range []string{"path=/hello?x=1", "header:x-forwarded-proto=http", "header:x-envoy-expected-rq-timeout-ms=3000"} {
			if !strings.Contains(body, want) {
				t.Errorf("upstream did not see %q:\n%s", want, body)
			}
		}
		if !strings.Contains(body, "header:x-request-id=") {
			t.Errorf("no x-request-id generated:\n%s", body)
		}
		if h.Get("server") != "envoy" || h.Get("date") == "" || h.Get("x-envoy-upstream-service-time") == "" {
			t.Errorf("missing Envoy response headers: %v", h)
		}
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Fatalf("round robin split %v, want 5/5", seen)
	}
	if got := p.Stat(t, "cluster.web.upstream_rq_200"); got != 10 {
		t.Errorf("cluster.web.upstream_rq_200 = %d, want 10", got)
	}
	if got := p.Stat(t, "http.ingress.downstream_rq_2xx"); got != 10 {
		t.Errorf("http.ingress.downstream_rq_2xx = %d, want 10", got)
	}
}

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

func TestRetries(t *testing.T) {
	var calls atomic.Int32
	flaky := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1)%3 != 0 {
			w.WriteHeader(503)
			w.Write([]byte("busy"))
			return
		}
		w.Write([]byte("ok"))
	}))
	p := start(t, cfg{
		vhosts: vhost(
			"{match: {prefix: /retry}, route: {cluster: flaky, retry_policy: {retry_on: 5xx, num_retries: 3, retry_back_off: {base_interval: 0.001s}}}}",
			"{match: {prefix: /once}, route: {cluster: flaky, retry_policy: {retry_on: 5xx, num_retries: 1, retry_back_off: {base_interval: 0.001s}}}}",
			"{match: {prefix: /none}, route: {cluster: flaky}}",
		),
		clusters: "[" + staticCluster("flaky", "", flaky.Addr) + "]",
	})
	c := testutil.Client()
	calls.Store(0)
	if code, _, body := testutil.Get(t, c, p.URL("http", "/retry")); code != 200 || body != "ok" {
		t.Fatalf("with retries: %d %q", code, body)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("upstream saw %d attempts, want 3", n)
	}
	calls.Store(0)
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/once")); code != 503 {
		t.Fatalf("retry limit exceeded: got %d, want the last 503", code)
	}
	calls.Store(0)
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/none")); code != 503 {
		t.Fatalf("no retry policy: got %d", code)
	}
	if got := p.Stat(t, "cluster.flaky.upstream_rq_retry"); got != 3 {
		t.Errorf("upstream_rq_retry = %d, want 3", got)
	}
	if got := p.Stat(t, "cluster.flaky.upstream_rq_retry_success"); got != 1 {
		t.Errorf("upstream_rq_retry_success = %d, want 1", got)
	}
}

func TestRewritesAndHeaderMutations(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	p := start(t, cfg{
		vhosts: `[{name: v, domains: ['*'],
		  request_headers_to_add: [{header: {key: x-vh, value: vh}}],
		  response_headers_to_add: [{header: {key: x-resp, value: vh}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}],
		  routes: [
		    {match: {prefix: /api/}, route: {cluster: u, prefix_rewrite: /v2/, host_rewrite_literal: internal.example},
		     request_headers_to_add: [{header: {key: x-route, value: r1}}], request_headers_to_remove: [x-secret],
		     response_headers_to_add: [{header: {key: x-resp, value: route}}], response_headers_to_remove: [x-upstream]},
		    {match: {safe_regex: {regex: "/users/([0-9]+)/profile"}}, route: {cluster: u, regex_rewrite: {pattern: {regex: "^/users/([0-9]+)/profile$"}, substitution: "/profile?id=\\1"}}}
		  ]}]`,
		clusters: "[" + staticCluster("u", "", u.Addr) + "]",
	})
	c := testutil.Client()
	code, h, body := testutil.Get(t, c, p.URL("http", "/api/items?a=b"), "x-secret", "s3cr3t")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	for _, want := range []string{"path=/v2/items?a=b", "host=internal.example", "header:x-envoy-original-path=/api/items?a=b", "header:x-vh=vh", "header:x-route=r1"} {
		if !strings.Contains(body, want) {
			t.Errorf("upstream request lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "s3cr3t") {
		t.Errorf("x-secret was not removed")
	}
	// Route-level headers are processed before virtual-host ones, so the
	// virtual host's OVERWRITE wins (most_specific_header_mutations_wins: false).
	if h.Get("x-resp") != "vh" || h.Get("x-upstream") != "" {
		t.Errorf("response headers: x-resp=%q x-upstream=%q", h.Get("x-resp"), h.Get("x-upstream"))
	}
	code, _, body = testutil.Get(t, c, p.URL("http", "/users/42/profile"))
	if code != 200 || !strings.Contains(body, "path=/profile?id=42") {
		t.Fatalf("regex rewrite: %d\n%s", code, body)
	}
}

func TestVirtualHostsByDomain(t *testing.T) {
	names := []string{"exact", "suffix", "prefix", "star"}
	var ups []*testutil.Upstream
	for _, n := range names {
		ups = append(ups, testutil.StartUpstream(t, testutil.EchoHandler(n)))
	}
	var clusters []string
	for i, n := range names {
		clusters = append(clusters, staticCluster(n, "", ups[i].Addr))
	}
	p := start(t, cfg{
		vhosts: `[
		  {name: exact, domains: [api.example.com, "api.example.com:8080"], routes: [{match: {prefix: /}, route: {cluster: exact}}]},
		  {name: suffix, domains: ["*.example.com"], routes: [{match: {prefix: /}, route: {cluster: suffix}}]},
		  {name: prefix, domains: ["internal.*"], routes: [{match: {prefix: /}, route: {cluster: prefix}}]},
		  {name: star, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: star}}]}]`,
		clusters: "[" + strings.Join(clusters, ", ") + "]",
	})
	c := testutil.Client()
	for host, want := range map[string]string{
		"api.example.com": "exact", "API.Example.COM": "exact", "api.example.com:8080": "exact",
		"www.example.com": "suffix", "a.b.example.com": "suffix", "internal.corp": "prefix",
		"example.com": "star", "api.example.com:9090": "star",
	} {
		_, h, _ := testutil.Get(t, c, p.URL("http", "/"), "host", host)
		if h.Get("x-upstream") != want {
			t.Errorf("host %s routed to %q, want %q", host, h.Get("x-upstream"), want)
		}
	}
}
