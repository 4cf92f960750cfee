// Routes chosen by a virtual host's matcher (VirtualHost.matcher, the
// unified matcher API) instead of a route list, as Envoy's
// "routing via generic matching".

package features_test

import (
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

// Flow-style pieces of the matchers below.
func headerInput(name string) string {
	return `{name: h, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: "` + name + `"}}`
}

func routeAction(route string) string {
	return `{action: {name: route, typed_config: {"@type": type.googleapis.com/envoy.config.route.v3.Route, ` + route + `}}}`
}

func routeListAction(routes ...string) string {
	return `{action: {name: routes, typed_config: {"@type": type.googleapis.com/envoy.config.route.v3.RouteList, routes: [` + strings.Join(routes, ", ") + `]}}}`
}

// perRouteHeader is a header_mutation per-route config that adds a
// response header.
func perRouteHeader(key, value string) string {
	return `{envoy.filters.http.header_mutation: {"@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute,
	  mutations: {response_mutations: [{append: {header: {key: ` + key + `, value: ` + value + `}}}]}}}`
}

func TestRouteMatcher(t *testing.T) {
	names := []string{"a", "b", "fallback"}
	var clusters []string
	for _, n := range names {
		u := testutil.StartUpstream(t, testutil.EchoHandler(n))
		clusters = append(clusters, staticCluster(n, "", u.Addr))
	}
	p := start(t, cfg{
		hcm: `http_filters: [{name: envoy.filters.http.header_mutation, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation, mutations: {}}}, {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts: `[
		  {name: tree, domains: [tree.example],
		   response_headers_to_add: [{header: {key: x-route-name, value: "%ROUTE_NAME%"}}],
		   matcher: {
		    matcher_tree: {input: ` + headerInput("x-tenant") + `, exact_match_map: {map: {
		      a: ` + routeAction(`name: tenant-a, match: {prefix: /}, route: {cluster: a, prefix_rewrite: /tenant-a/}, typed_per_filter_config: `+perRouteHeader("x-per-route", "tenant-a")) + `,
		      b: ` + routeListAction(
			`{name: b-admin, match: {prefix: /admin}, direct_response: {status: 403, body: {inline_string: "admins only"}}}`,
			`{name: b-old, match: {prefix: /old}, redirect: {path_redirect: /new}}`,
			`{name: b-rest, match: {prefix: /}, route: {weighted_clusters: {clusters: [{name: b, weight: 1, typed_per_filter_config: `+perRouteHeader("x-per-cluster", "b")+`}]}}}`) + `,
		      c: ` + routeAction(`name: c-only, match: {prefix: /c/}, route: {cluster: a}`) + `}}},
		    on_no_match: ` + routeAction(`name: fallback, match: {prefix: /}, route: {cluster: fallback}`) + `}},
		  {name: list, domains: [list.example], matcher: {matcher_list: {matchers: [
		    {predicate: {single_predicate: {input: ` + headerInput(":path") + `, value_match: {prefix: /a/}}}, on_match: ` + routeAction(`name: path-a, match: {prefix: /}, route: {cluster: a}`) + `},
		    {predicate: {and_matcher: {predicate: [
		      {single_predicate: {input: ` + headerInput("x-env") + `, value_match: {exact: canary}}},
		      {single_predicate: {input: ` + headerInput(":method") + `, value_match: {exact: GET}}}]}},
		     on_match: ` + routeAction(`name: canary, match: {prefix: /}, route: {cluster: b}`) + `}]}}}]`,
		clusters: "[" + strings.Join(clusters, ", ") + "]",
	})
	c := testutil.Client()
	cases := []struct {
		name, method, host, path string
		hdr                      []string
		status                   int
		upstream, routeName      string
	}{
		{"tree: exact value → Route", "GET", "tree.example", "/x", []string{"x-tenant", "a"}, 200, "a", "tenant-a"},
		{"tree: RouteList, first route", "GET", "tree.example", "/admin/users", []string{"x-tenant", "b"}, 403, "", "b-admin"},
		{"tree: RouteList, second route", "GET", "tree.example", "/old/page", []string{"x-tenant", "b"}, 301, "", "b-old"},
		{"tree: RouteList, last route", "GET", "tree.example", "/users", []string{"x-tenant", "b"}, 200, "b", "b-rest"},
		{"tree: the Route's own match must match too", "GET", "tree.example", "/c/x", []string{"x-tenant", "c"}, 200, "a", "c-only"},
		{"tree: own match fails → no route", "GET", "tree.example", "/x", []string{"x-tenant", "c"}, 404, "", ""},
		{"tree: unknown value → on_no_match", "GET", "tree.example", "/x", []string{"x-tenant", "zzz"}, 200, "fallback", "fallback"},
		{"tree: no header → on_no_match", "GET", "tree.example", "/x", nil, 200, "fallback", "fallback"},
		{"list: first predicate", "GET", "list.example", "/a/x", []string{"x-env", "canary"}, 200, "a", ""},
		{"list: and_matcher", "GET", "list.example", "/b/x", []string{"x-env", "canary"}, 200, "b", ""},
		{"list: and_matcher fails → no route", "POST", "list.example", "/b/x", []string{"x-env", "canary"}, 404, "", ""},
		{"list: nothing matches → no route", "GET", "list.example", "/b/x", nil, 404, "", ""},
	}
	noRoute := int64(0)
	for _, tc := range cases {
		code, h, body := testutil.Do(t, c, tc.method, p.URL("http", tc.path), "", append([]string{"host", tc.host}, tc.hdr...)...)
		if code != tc.status || h.Get("x-upstream") != tc.upstream {
			t.Errorf("%s: %d from %q, want %d from %q\n%s", tc.name, code, h.Get("x-upstream"), tc.status, tc.upstream, body)
		}
		if tc.status == 404 {
			noRoute++
		}
		if tc.host == "tree.example" && tc.status != 404 && h.Get("x-route-name") != tc.routeName {
			t.Errorf("%s: route name %q, want %q", tc.name, h.Get("x-route-name"), tc.routeName)
		}
	}
	if n := p.Stat(t, "http.ingress.no_route"); n != noRoute {
		t.Errorf("http.ingress.no_route = %d, want %d", n, noRoute)
	}

	// The selected route is a whole route: its rewrite (from its own
	// match), its per-filter config, the per-filter config of the weighted
	// cluster picked for it, its direct response body and redirect.
	code, h, body := testutil.Get(t, c, p.URL("http", "/x?q=1"), "host", "tree.example", "x-tenant", "a")
	if code != 200 || !strings.Contains(body, "path=/tenant-a/x?q=1") {
		t.Errorf("prefix_rewrite of a matcher route: %d\n%s", code, body)
	}
	if h.Get("x-per-route") != "tenant-a" || h.Get("x-per-cluster") != "" {
		t.Errorf("typed_per_filter_config of the route: x-per-route=%q x-per-cluster=%q", h.Get("x-per-route"), h.Get("x-per-cluster"))
	}
	_, h, _ = testutil.Get(t, c, p.URL("http", "/users"), "host", "tree.example", "x-tenant", "b")
	if h.Get("x-per-cluster") != "b" || h.Get("x-per-route") != "" {
		t.Errorf("typed_per_filter_config of the weighted cluster: x-per-cluster=%q x-per-route=%q", h.Get("x-per-cluster"), h.Get("x-per-route"))
	}
	code, _, body = testutil.Get(t, c, p.URL("http", "/admin"), "host", "tree.example", "x-tenant", "b")
	if code != 403 || body != "admins only" {
		t.Errorf("direct response: %d %q", code, body)
	}
	code, h, _ = testutil.Get(t, c, p.URL("http", "/old"), "host", "tree.example", "x-tenant", "b")
	if code != 301 || h.Get("location") != "http://tree.example/new" {
		t.Errorf("redirect: %d %q", code, h.Get("location"))
	}
}

// TestRouteMatcherConfig: a virtual host with both routes and a matcher,
// and a matcher on an input a route table cannot match on, are refused
// with their paths, as Envoy refuses them.
func TestRouteMatcherConfig(t *testing.T) {
	route := routeAction(`match: {prefix: /}, direct_response: {status: 200}`)
	for _, tc := range []struct{ vhosts, path, msg string }{
		{`[{name: v, domains: ['*'], routes: [{match: {prefix: /}, direct_response: {status: 200}}], matcher: {on_no_match: ` + route + `}}]`,
			"route_config.virtual_hosts[0].matcher (line", "cannot set both matcher and routes on virtual host"},
		{`[{name: v, domains: ['*'], matcher: {matcher_tree: {input: {name: q, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestQueryParamMatchInput, query_param: x}},
		    exact_match_map: {map: {"1": ` + route + `}}}}}]`,
			"route_config.virtual_hosts[0].matcher.matcher_tree.input.typed_config (line", "route table can only match on request headers"},
	} {
		_, err := testutil.TryStartProxy(t, cfg{vhosts: tc.vhosts, clusters: "[]"}.String(), nil)
		if err == nil || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("got %v\nwant %s…: %s", err, tc.path, tc.msg)
		}
	}
}
