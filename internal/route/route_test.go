package route

import (
	"fmt"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// compileYAML compiles a RouteConfiguration given in YAML.
func compileYAML(t testing.TB, y string) *Table {
	t.Helper()
	rc := &routev3.RouteConfiguration{}
	if _, err := config.Decode([]byte(y), rc, ""); err != nil {
		t.Fatal(err)
	}
	if err := config.Validate(rc, ""); err != nil {
		t.Fatal(err)
	}
	tbl, err := Compile(rc, "route_config", Options{})
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

func req(method, authority, path string, kv ...string) *headers.Request {
	r := &headers.Request{Method: method, Authority: authority, Path: path}
	for i := 0; i+1 < len(kv); i += 2 {
		r.Add(kv[i], kv[i+1])
	}
	return r
}

func TestRouteMatching(t *testing.T) {
	tbl := compileYAML(t, `
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - {name: exact, match: {path: /exact}, direct_response: {status: 200}}
  - {name: ci, match: {prefix: /CI/, case_sensitive: false}, direct_response: {status: 200}}
  - {name: sep, match: {path_separated_prefix: /sep}, direct_response: {status: 200}}
  - {name: regex, match: {safe_regex: {regex: "/re/[0-9]+"}}, direct_response: {status: 200}}
  - name: hdr
    match:
      prefix: /h
      headers:
      - {name: x-exact, string_match: {exact: yes}}
      - {name: x-present, present_match: true}
      - {name: x-absent, present_match: true, invert_match: true}
      - {name: x-range, range_match: {start: 10, end: 20}}
    direct_response: {status: 200}
  - name: query
    match: {prefix: /q, query_parameters: [{name: debug, string_match: {exact: "1"}}, {name: flag, present_match: true}]}
    direct_response: {status: 200}
  - {name: grpc, match: {prefix: /, grpc: {}}, direct_response: {status: 200}}
  - {name: method, match: {prefix: /m, headers: [{name: ":method", string_match: {exact: POST}}]}, direct_response: {status: 200}}
  - {name: fallback, match: {prefix: /}, direct_response: {status: 200}}
`)
	cases := []struct {
		r    *headers.Request
		want string
	}{
		{req("GET", "a", "/exact"), "exact"},
		{req("GET", "a", "/exact?x=1"), "exact"},
		{req("GET", "a", "/exact/more"), "fallback"},
		{req("GET", "a", "/ci/Thing"), "ci"},
		{req("GET", "a", "/sep"), "sep"},
		{req("GET", "a", "/sep/x"), "sep"},
		{req("GET", "a", "/separate"), "fallback"},
		{req("GET", "a", "/re/123"), "regex"},
		{req("GET", "a", "/re/123/x"), "fallback"},
		{req("GET", "a", "/h", "x-exact", "yes", "x-present", "", "x-range", "15"), "hdr"},
		{req("GET", "a", "/h", "x-exact", "yes", "x-present", "", "x-range", "25"), "fallback"},
		{req("GET", "a", "/h", "x-exact", "yes", "x-present", "", "x-range", "15", "x-absent", "1"), "fallback"},
		{req("GET", "a", "/h", "x-exact", "no", "x-present", "", "x-range", "15"), "fallback"},
		{req("GET", "a", "/q?debug=1&flag"), "query"},
		{req("GET", "a", "/q?debug=2&flag"), "fallback"},
		{req("POST", "a", "/svc/M", "content-type", "application/grpc+proto"), "grpc"},
		{req("POST", "a", "/m"), "method"},
		{req("GET", "a", "/m"), "fallback"},
	}
	for _, tc := range cases {
		rt := tbl.Route(tc.r)
		got := "<nil>"
		if rt != nil {
			got = rt.Name
		}
		if got != tc.want {
			t.Errorf("%s %s %v: matched %s, want %s", tc.r.Method, tc.r.Path, tc.r.Fields(), got, tc.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{`virtual_hosts: [{name: a, domains: ["x"], routes: []}, {name: b, domains: ["x"], routes: []}]`, `route_config.virtual_hosts[1].domains[0]: domain "x" is already used by virtual host "a"`},
		{`virtual_hosts: [{name: a, domains: ["a*b"]}]`, `route_config.virtual_hosts[0].domains[0]: invalid domain "a*b"`},
		{`virtual_hosts: [{name: a, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: c, retry_policy: {retry_on: "5xx,bogus"}}}]}]`, `retry_policy.retry_on: unknown retry_on value(s) bogus`},
		{`virtual_hosts: [{name: a, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: c}, request_headers_to_add: [{header: {key: host, value: x}}]}]}]`, `"host" may not be modified`},
		{`virtual_hosts: [{name: a, domains: ["*"], rate_limits: [{actions: [{extension: {name: x, typed_config: {"@type": type.googleapis.com/google.protobuf.Empty}}}]}]}]`, `route_config.virtual_hosts[0].rate_limits[0].actions[0].extension: field Action.extension is not supported by legate`},
		{`virtual_hosts: [{name: a, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: c, prefix_rewrite: /x}, typed_per_filter_config: {envoy.filters.http.cors: {"@type": type.googleapis.com/google.protobuf.Empty}}}]}]`, `typed_per_filter_config["envoy.filters.http.cors"]: per-filter config for filter "envoy.filters.http.cors"`},
	}
	for _, tc := range cases {
		rc := &routev3.RouteConfiguration{}
		if _, err := config.Decode([]byte(tc.yaml), rc, ""); err != nil {
			t.Fatalf("%s: %v", tc.yaml, err)
		}
		_, err := Compile(rc, "route_config", Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %s", tc.yaml, err, tc.want)
		}
	}
}

func TestHeaderMutationOrder(t *testing.T) {
	tbl := compileYAML(t, `
request_headers_to_add: [{header: {key: x-a, value: global}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]
virtual_hosts:
- name: v
  domains: ["*"]
  request_headers_to_add: [{header: {key: x-a, value: vhost}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}, {header: {key: x-b, value: vb}}]
  routes:
  - match: {prefix: /}
    direct_response: {status: 200}
    request_headers_to_add:
    - {header: {key: x-a, value: route}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
    - {header: {key: x-b, value: rb}, append_action: ADD_IF_ABSENT}
    - {header: {key: x-c, value: ""}, keep_empty_value: true}
    - {header: {key: x-d, value: ""}}
`)
	r := req("GET", "a", "/")
	rt := tbl.Route(r)
	tbl.ApplyRequest(rt, nil, &r.Map, nil, nil)
	// Least specific wins by default: global overwrites vhost overwrites route.
	if got := r.Get("x-a"); got != "global" {
		t.Errorf("x-a = %q, want global", got)
	}
	if got := strings.Join(r.Values("x-b"), ","); got != "rb,vb" {
		t.Errorf("x-b = %q, want rb,vb (route adds first, vhost appends)", got)
	}
	if !r.Has("x-c") || r.Has("x-d") {
		t.Errorf("keep_empty_value: x-c present=%v, x-d present=%v", r.Has("x-c"), r.Has("x-d"))
	}
}

func BenchmarkRouteMatch(b *testing.B) {
	for _, n := range []int{10, 10000} {
		var routes []string
		for i := 0; i < n; i++ {
			routes = append(routes, fmt.Sprintf("{match: {prefix: /svc%d/}, direct_response: {status: 200}}", i))
		}
		tbl := compileYAML(b, fmt.Sprintf("virtual_hosts: [{name: v, domains: ['*'], routes: [%s]}]", strings.Join(routes, ",")))
		r := req("GET", "example.com", fmt.Sprintf("/svc%d/items", n-1))
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if tbl.Route(r) == nil {
					b.Fatal("no match")
				}
			}
		})
	}
}

func BenchmarkVirtualHostLookup(b *testing.B) {
	var vhs []string
	for i := 0; i < 1000; i++ {
		vhs = append(vhs, fmt.Sprintf("{name: v%d, domains: [svc%d.example.com, '*.svc%d.example.org'], routes: [{match: {prefix: /}, direct_response: {status: 200}}]}", i, i, i))
	}
	tbl := compileYAML(b, fmt.Sprintf("virtual_hosts: [%s]", strings.Join(vhs, ",")))
	for _, host := range []string{"svc999.example.com", "api.svc500.example.org"} {
		b.Run(host, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if tbl.VirtualHost(host) == nil {
					b.Fatal("no vhost")
				}
			}
		})
	}
}

// FuzzRouteMatch matches arbitrary requests against a table that uses
// every matcher kind: it must never panic.
func FuzzRouteMatch(f *testing.F) {
	tbl := compileYAML(f, `
virtual_hosts:
- name: v
  domains: ["*.example.com", "api.*", "exact.com", "*"]
  routes:
  - {match: {safe_regex: {regex: "/re/[a-z]+"}}, direct_response: {status: 200}}
  - {match: {path_separated_prefix: /sep}, direct_response: {status: 200}}
  - {match: {prefix: /q, query_parameters: [{name: a, string_match: {prefix: x}}]}, direct_response: {status: 200}}
  - {match: {prefix: /h, headers: [{name: x, string_match: {contains: y, ignore_case: true}}]}, direct_response: {status: 200}}
  - {match: {path: /p, case_sensitive: false}, direct_response: {status: 200}}
`)
	f.Add("GET", "api.example.com", "/re/abc", "x", "YYY")
	f.Add("POST", "exact.com:80", "/q?a=xyz&b", "", "")
	f.Fuzz(func(t *testing.T, method, authority, path, hk, hv string) {
		r := req(method, authority, path, strings.ToLower(hk), hv)
		tbl.Route(r)
	})
}

// BenchmarkHeaderMutation applies route, virtual host and route
// configuration header additions and removals.
func BenchmarkHeaderMutation(b *testing.B) {
	tbl := compileYAML(b, `
request_headers_to_add: [{header: {key: x-global, value: g}}]
virtual_hosts:
- name: v
  domains: ["*"]
  request_headers_to_add: [{header: {key: x-vhost, value: v}}]
  routes:
  - match: {prefix: /}
    direct_response: {status: 200}
    request_headers_to_add: [{header: {key: x-route, value: r}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]
    request_headers_to_remove: [x-internal]
`)
	r := req("GET", "example.com", "/items")
	rt := tbl.Route(r)
	info := &streaminfo.Info{}
	var buf []byte
	var m headers.Map
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		m.Reset()
		m.Add("x-internal", "1")
		buf = tbl.ApplyRequest(rt, nil, &m, info, buf[:0])
	}
	if !m.Has("x-route") || m.Has("x-internal") {
		b.Fatal("mutations not applied")
	}
}
