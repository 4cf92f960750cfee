// Routing: virtual hosts by domain, route matching, path and host
// rewrites, header mutations, redirects.

package features_test

import (
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

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

func TestRedirects(t *testing.T) {
	p := start(t, cfg{
		vhosts: vhost(
			"{match: {prefix: /https}, redirect: {https_redirect: true}}",
			"{match: {prefix: /host}, redirect: {host_redirect: new.example.com, port_redirect: 8443, response_code: PERMANENT_REDIRECT}}",
			"{match: {prefix: /old/}, redirect: {prefix_rewrite: /new/, response_code: TEMPORARY_REDIRECT}}",
			"{match: {prefix: /strip}, redirect: {path_redirect: /clean, strip_query: true, response_code: SEE_OTHER}}",
			"{match: {prefix: /scheme}, redirect: {scheme_redirect: ftp}}",
		),
		clusters: "[]",
	})
	cases := []struct {
		path, host string
		status     int
		location   string
	}{
		{"/https/a?x=1", "example.com:80", 301, "https://example.com/https/a?x=1"},
		{"/host/p", "example.com", 308, "http://new.example.com:8443/host/p"},
		{"/old/thing?q", "example.com", 307, "http://example.com/new/thing?q"},
		{"/strip?secret=1", "example.com", 303, "http://example.com/clean"},
		{"/scheme", "example.com", 301, "ftp://example.com/scheme"},
	}
	for _, tc := range cases {
		code, h, _ := testutil.Get(t, testutil.Client(), p.URL("http", tc.path), "host", tc.host)
		if code != tc.status || h.Get("location") != tc.location {
			t.Errorf("%s: %d %q, want %d %q", tc.path, code, h.Get("location"), tc.status, tc.location)
		}
	}
}

// TestHostRewriteFormat: RouteAction.host_rewrite takes the substitution
// format ("prefix-%REQ(x-target)%"); an empty result keeps the host.
func TestHostRewriteFormat(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	p := start(t, cfg{
		vhosts: vhost(
			`{match: {prefix: /fmt}, route: {cluster: u, host_rewrite: "svc-%REQ(x-target)%.internal"}}`,
			`{match: {prefix: /empty}, route: {cluster: u, host_rewrite: "%REQ(x-none)%"}}`,
			`{match: {prefix: /lit}, route: {cluster: u, host_rewrite: literal.example}}`),
		clusters: "[" + staticCluster("u", "", u.Addr) + "]",
	})
	c := testutil.Client()
	for _, tc := range []struct{ path, want string }{
		{"/fmt", "host=svc-blue.internal"},
		{"/lit", "host=literal.example"},
	} {
		if _, _, body := testutil.Get(t, c, p.URL("http", tc.path), "x-target", "blue"); !strings.Contains(body, tc.want+"\n") {
			t.Errorf("%s: upstream saw\n%s\nwant %s", tc.path, body, tc.want)
		}
	}
	if _, _, body := testutil.Get(t, c, p.URL("http", "/empty")); strings.Contains(body, "host=-") || strings.Contains(body, "host=\n") {
		t.Errorf("/empty rewrote the host:\n%s", body)
	}
}
