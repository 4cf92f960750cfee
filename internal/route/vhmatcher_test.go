package route

import (
	"log/slog"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/upstream"
)

// Flow-style pieces of the matcher configs below.
const (
	hdrInput   = `{name: h, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: %s}}`
	routeType  = `"@type": type.googleapis.com/envoy.config.route.v3.Route`
	routesType = `"@type": type.googleapis.com/envoy.config.route.v3.RouteList`
)

func in(header string) string { return strings.Replace(hdrInput, "%s", `"`+header+`"`, 1) }

// vhMatcherTable is a table whose virtual hosts pick routes with matchers:
// a tree on a header (Route and RouteList actions, on_no_match), a list of
// predicates and a prefix tree on :path with a nested matcher.
var vhMatcherTable = `
virtual_hosts:
- name: tree
  domains: [tree.example]
  request_headers_to_add: [{header: {key: x-vh, value: tree}}]
  matcher:
    matcher_tree:
      input: ` + in("x-tenant") + `
      exact_match_map:
        map:
          a:
            action: {name: a, typed_config: {` + routeType + `, name: tenant-a, match: {prefix: /}, direct_response: {status: 200},
              decorator: {operation: op-a}, request_headers_to_add: [{header: {key: x-route, value: a}}]}}
          b:
            action:
              name: b
              typed_config:
                ` + routesType + `
                routes:
                - {name: b-api, match: {prefix: /api/}, route: {cluster: api, prefix_rewrite: /v2/}}
                - {name: b-post, match: {prefix: /, headers: [{name: ":method", string_match: {exact: POST}}]}, direct_response: {status: 201}}
                - {name: b-rest, match: {prefix: /}, redirect: {path_redirect: /elsewhere}}
          c:
            action: {name: c, typed_config: {` + routeType + `, name: c-admin, match: {prefix: /admin}, direct_response: {status: 200}}}
    on_no_match:
      action: {name: d, typed_config: {` + routeType + `, name: default, match: {prefix: /}, direct_response: {status: 404}}}
- name: list
  domains: [list.example]
  matcher:
    matcher_list:
      matchers:
      - predicate: {single_predicate: {input: ` + in(":path") + `, value_match: {prefix: /v1/}}}
        on_match: {action: {name: v1, typed_config: {` + routeType + `, name: v1, match: {prefix: /}, direct_response: {status: 200}}}}
      - predicate:
          and_matcher:
            predicate:
            - {single_predicate: {input: ` + in("x-env") + `, value_match: {exact: canary}}}
            - {single_predicate: {input: ` + in(":method") + `, value_match: {exact: GET}}}
        on_match: {action: {name: canary, typed_config: {` + routeType + `, name: canary, match: {prefix: /}, direct_response: {status: 200}}}}
- name: prefixes
  domains: [prefix.example]
  matcher:
    matcher_tree:
      input: ` + in(":path") + `
      prefix_match_map:
        map:
          /a:
            action: {name: a, typed_config: {` + routeType + `, name: a, match: {prefix: /}, direct_response: {status: 200}}}
          /a/b:
            matcher:
              matcher_tree:
                input: ` + in("x-version") + `
                exact_match_map:
                  map:
                    "2": {action: {name: ab2, typed_config: {` + routeType + `, name: ab-v2, match: {prefix: /}, direct_response: {status: 200}}}}
              on_no_match: {action: {name: ab, typed_config: {` + routeType + `, name: ab, match: {prefix: /}, direct_response: {status: 200}}}}
- name: plain
  domains: ["*"]
  routes: [{name: plain, match: {prefix: /}, direct_response: {status: 200}}]
`

func TestVirtualHostMatcher(t *testing.T) {
	tbl := compileYAML(t, vhMatcherTable)
	cases := []struct {
		r    *headers.Request
		want string
	}{
		// matcher_tree, exact_match_map on a header; a Route action.
		{req("GET", "tree.example", "/x", "x-tenant", "a"), "tenant-a"},
		// A RouteList action: its routes in order, by their own match.
		{req("GET", "tree.example", "/api/items", "x-tenant", "b"), "b-api"},
		{req("POST", "tree.example", "/api/items", "x-tenant", "b"), "b-api"},
		{req("POST", "tree.example", "/items", "x-tenant", "b"), "b-post"},
		{req("GET", "tree.example", "/items", "x-tenant", "b"), "b-rest"},
		// The chosen route's own match must also accept the request: no
		// fallback to on_no_match or to another entry.
		{req("GET", "tree.example", "/admin/users", "x-tenant", "c"), "c-admin"},
		{req("GET", "tree.example", "/users", "x-tenant", "c"), "<nil>"},
		// on_no_match: an unknown value, or no header at all.
		{req("GET", "tree.example", "/x", "x-tenant", "zzz"), "default"},
		{req("GET", "tree.example", "/x"), "default"},
		// matcher_list: the first predicate that matches; and_matcher over
		// a header and a pseudo-header; no on_no_match → no route.
		{req("GET", "list.example", "/v1/users"), "v1"},
		{req("GET", "list.example", "/v1/users", "x-env", "canary"), "v1"},
		{req("GET", "list.example", "/v2/users", "x-env", "canary"), "canary"},
		{req("POST", "list.example", "/v2/users", "x-env", "canary"), "<nil>"},
		{req("GET", "list.example", "/v2/users"), "<nil>"},
		// prefix_match_map: the longest prefix, then a nested matcher with
		// its own on_no_match.
		{req("GET", "prefix.example", "/a/x"), "a"},
		{req("GET", "prefix.example", "/a/b/c"), "ab"},
		{req("GET", "prefix.example", "/a/b/c", "x-version", "2"), "ab-v2"},
		{req("GET", "prefix.example", "/b"), "<nil>"},
		// Other virtual hosts keep their routes.
		{req("GET", "other.example", "/x", "x-tenant", "a"), "plain"},
	}
	for _, tc := range cases {
		rt := tbl.Route(tc.r)
		got := "<nil>"
		if rt != nil {
			got = rt.Name
		}
		if got != tc.want {
			t.Errorf("%s %s%s %v: matched %s, want %s", tc.r.Method, tc.r.Authority, tc.r.Path, tc.r.Fields(), got, tc.want)
		}
	}
}

// TestVirtualHostMatcherRoutes checks that a matcher's routes are whole
// routes: their virtual host, actions, rewrites (from their own match),
// decorator and header mutations at every level.
func TestVirtualHostMatcherRoutes(t *testing.T) {
	tbl := compileYAML(t, vhMatcherTable)

	r := req("GET", "tree.example", "/x", "x-tenant", "a")
	rt := tbl.Route(r)
	if rt == nil || rt.VHost == nil || rt.VHost.Name != "tree" || rt.Kind != DirectResponse || rt.Direct.Status != 200 || rt.Decorator != "op-a" {
		t.Fatalf("tenant-a route: %+v", rt)
	}
	tbl.ApplyRequest(rt, nil, &r.Map, nil, nil)
	if r.Get("x-route") != "a" || r.Get("x-vh") != "tree" {
		t.Errorf("header mutations of the route and its virtual host: x-route=%q x-vh=%q", r.Get("x-route"), r.Get("x-vh"))
	}

	rt = tbl.Route(req("GET", "tree.example", "/api/items", "x-tenant", "b"))
	if rt == nil || rt.Kind != Forward || rt.Action == nil {
		t.Fatalf("b-api: %+v", rt)
	}
	if p, ok := rt.Action.RewritePath("/api/items?q=1"); !ok || p != "/v2/items?q=1" {
		t.Errorf("prefix_rewrite on the route's own match prefix: %q %v", p, ok)
	}
	rt = tbl.Route(req("GET", "tree.example", "/items", "x-tenant", "b"))
	if rt == nil || rt.Kind != Redirect || rt.Redirect.Path != "/elsewhere" {
		t.Fatalf("b-rest: %+v", rt)
	}
	if got := strings.Join(tbl.ClusterNames, ","); got != "api" {
		t.Errorf("ClusterNames = %q, want api (clusters of matcher routes count)", got)
	}
}

func TestVirtualHostMatcherPerFilterConfig(t *testing.T) {
	rc := &routev3.RouteConfiguration{}
	y := `
virtual_hosts:
- name: v
  domains: ["*"]
  matcher:
    matcher_tree:
      input: ` + in("x-tenant") + `
      exact_match_map:
        map:
          a:
            action: {name: a, typed_config: {` + routeType + `, name: a, match: {prefix: /}, direct_response: {status: 200},
              typed_per_filter_config: {f: {"@type": type.googleapis.com/google.protobuf.StringValue, value: per-route}}}}
`
	if _, err := config.Decode([]byte(y), rc, ""); err != nil {
		t.Fatal(err)
	}
	var paths []string
	tbl, err := Compile(rc, "route_config", Options{PerFilterConfig: func(name string, a *anypb.Any, path string) (any, error) {
		paths = append(paths, path)
		return name + "=compiled", nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	rt := tbl.Route(req("GET", "x", "/", "x-tenant", "a"))
	fc := PerFilterConfig(rt, nil, "f")
	if fc == nil || fc.Config != "f=compiled" {
		t.Fatalf("per-filter config of a matcher route: %+v", fc)
	}
	want := `route_config.virtual_hosts[0].matcher.matcher_tree.exact_match_map.map[a].action.typed_config.typed_per_filter_config["f"]`
	if len(paths) != 1 || paths[0] != want {
		t.Errorf("compiled at %v, want %s", paths, want)
	}
}

// TestVirtualHostMatcherClusters: as Envoy, the clusters of a matcher's
// routes are not validated (RouteMatchActionFactory passes
// validate_clusters false), while those of routes are.
func TestVirtualHostMatcherClusters(t *testing.T) {
	cm := upstream.NewManager(upstream.Deps{Stats: stats.NewStore(), Log: slog.Default()})
	compile := func(y string) error {
		rc := &routev3.RouteConfiguration{}
		if _, err := config.Decode([]byte(y), rc, ""); err != nil {
			t.Fatal(err)
		}
		_, err := Compile(rc, "route_config", Options{Clusters: cm, ValidateClusters: true})
		return err
	}
	if err := compile(`virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: missing}}]}]`); err == nil ||
		!strings.Contains(err.Error(), `unknown cluster "missing"`) {
		t.Fatalf("routes: %v", err)
	}
	err := compile(`virtual_hosts: [{name: v, domains: ["*"], matcher: {on_no_match: {action: {name: r, typed_config: {` + routeType + `,
	  match: {prefix: /}, route: {cluster: missing}}}}}}]`)
	if err != nil {
		t.Fatalf("matcher: %v", err)
	}
}

// otherAction is a matching action of another user of the matcher API.
func init() {
	extension.Register(extension.Extension{Name: "test.other_action", Category: extension.MatchingAction, Config: &wrapperspb.StringValue{}, Factory: struct{}{}})
}

func TestVirtualHostMatcherErrors(t *testing.T) {
	const vh = `virtual_hosts: [{name: v, domains: ["*"], %s}]`
	mp := "route_config.virtual_hosts[0].matcher"
	cases := []struct{ vhost, want string }{
		// Envoy: "cannot set both matcher and routes on virtual host".
		{`routes: [{match: {prefix: /}, direct_response: {status: 200}}], matcher: {on_no_match: {action: {name: r, typed_config: {` + routeType + `, match: {prefix: /}, direct_response: {status: 200}}}}}`,
			mp + ": cannot set both matcher and routes on virtual host"},
		// Inputs a route table cannot match on, as Envoy's RouteActionValidationVisitor.
		{`matcher: {matcher_tree: {input: {name: q, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestQueryParamMatchInput, query_param: a}},
		    exact_match_map: {map: {x: {action: {name: r, typed_config: {` + routeType + `, match: {prefix: /}, direct_response: {status: 200}}}}}}}}`,
			mp + ".matcher_tree.input.typed_config: route table can only match on request headers (envoy.type.matcher.v3.HttpRequestHeaderMatchInput), saw envoy.type.matcher.v3.HttpRequestQueryParamMatchInput"},
		{`matcher: {matcher_list: {matchers: [{predicate: {single_predicate: {input: {name: ip, typed_config: {"@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourceIPInput}}, value_match: {exact: 127.0.0.1}}},
		    on_match: {action: {name: r, typed_config: {` + routeType + `, match: {prefix: /}, direct_response: {status: 200}}}}}]}}`,
			mp + ".matcher_list.matchers[0].predicate.single_predicate.input.typed_config: route table can only match on request headers"},
		{`matcher: {matcher_tree: {input: {name: fs, typed_config: {"@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.FilterStateInput, key: k}},
		    exact_match_map: {map: {x: {action: {name: r, typed_config: {` + routeType + `, match: {prefix: /}, direct_response: {status: 200}}}}}}}}`,
			mp + ".matcher_tree.input.typed_config: a filter_state input in a virtual host's matcher is not implemented by legate"},
		// An input Legate has no implementation of at all.
		{`matcher: {matcher_tree: {input: {name: md, typed_config: {"@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DynamicMetadataInput, filter: f, path: [{key: k}]}},
		    exact_match_map: {map: {x: {action: {name: r, typed_config: {` + routeType + `, match: {prefix: /}, direct_response: {status: 200}}}}}}}}`,
			mp + ".matcher_tree.input.typed_config: @type envoy.extensions.matching.common_inputs.network.v3.DynamicMetadataInput"},
		// Actions other than Route and RouteList.
		{`matcher: {on_no_match: {action: {name: s, typed_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: other}}}}`,
			mp + ".on_no_match.action.typed_config: the action of a virtual host's matcher must be an envoy.config.route.v3.Route or envoy.config.route.v3.RouteList, not google.protobuf.StringValue"},
		{`matcher: {on_no_match: {action: {name: s, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter}}}}`,
			mp + ".on_no_match.action.typed_config: @type envoy.extensions.filters.common.matcher.action.v3.SkipFilter"},
		// A Route needs its match, as Envoy's validation.
		{`matcher: {on_no_match: {action: {name: r, typed_config: {` + routeType + `, direct_response: {status: 200}}}}}`,
			mp + ".on_no_match.action.typed_config.match"},
		// The route compiler's own checks, at the route's path.
		{`matcher: {on_no_match: {action: {name: r, typed_config: {` + routesType + `, routes: [{match: {prefix: /}, direct_response: {status: 200}},
		    {match: {prefix: /}, route: {cluster: c, retry_policy: {retry_on: "5xx,bogus"}}}]}}}}`,
			mp + ".on_no_match.action.typed_config.routes[1].route.retry_policy.retry_on: unknown retry_on value(s) bogus"},
		{`matcher: {on_no_match: {action: {name: r, typed_config: {` + routeType + `, match: {prefix: /}, route: {cluster: c}, typed_per_filter_config: {f: {"@type": type.googleapis.com/google.protobuf.Empty}}}}}}`,
			mp + `.on_no_match.action.typed_config.typed_per_filter_config["f"]: per-filter config for filter "f"`},
		{`matcher: {on_no_match: {action: {name: r, typed_config: {` + routeType + `, match: {prefix: /}, route: {cluster: c}, tracing: {}}}}}`,
			mp + ".on_no_match.action.typed_config.tracing: route tracing here"},
		{`matcher: {matcher_tree: {input: ` + in("x") + `, custom_match: {name: c, typed_config: {"@type": type.googleapis.com/google.protobuf.Empty}}}}`,
			mp + ".matcher_tree: custom_match matcher trees is not supported by legate"},
	}
	for _, tc := range cases {
		y := strings.Replace(vh, "%s", tc.vhost, 1)
		rc := &routev3.RouteConfiguration{}
		if _, err := config.Decode([]byte(y), rc, ""); err != nil {
			t.Fatalf("%s: %v", y, err)
		}
		err := config.Validate(rc, "route_config")
		if err == nil {
			_, err = Compile(rc, "route_config", Options{})
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %s", tc.vhost, err, tc.want)
		}
	}
}

// TestVirtualHostMatcherAllocs: picking a route through a matcher costs
// one small allocation (the matcher's input record), no more.
func TestVirtualHostMatcherAllocs(t *testing.T) {
	tbl := compileYAML(t, vhMatcherTable)
	r := req("GET", "tree.example", "/api/items", "x-tenant", "b")
	if n := testing.AllocsPerRun(100, func() { tbl.Route(r) }); n > 1 {
		t.Errorf("%v allocations per lookup", n)
	}
}
