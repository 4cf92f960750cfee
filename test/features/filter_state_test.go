// Dynamic metadata and filter state shared along the stream: one filter
// writes, the next filters, the router (request_headers_to_add,
// response_headers_to_add) and access logs (%DYNAMIC_METADATA%,
// %FILTER_STATE%) read; envoy.filters.http.set_filter_state with Envoy's
// semantics (order, skip_if_empty, read_only, per-route values,
// clear_route_cache, config errors).

package features_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

// fsBootstrap renders a bootstrap with one HTTP listener ("http"): filters
// are http_filters entries in block YAML (each starting "- name:", any
// indentation), the router is appended; logFormat is a text access log
// written to logPath (and jsonLog, when set, a json_format access log to
// logPath+".json"); routeConfig is the route_config body in flow YAML.
func fsBootstrap(filters, logPath, logFormat, jsonLog, routeConfig, clusters string) string {
	var fs strings.Builder
	for _, l := range strings.Split(strings.Trim(dedent(filters), "\n"), "\n") {
		fs.WriteString("          " + l + "\n")
	}
	logs := fmt.Sprintf(`          - name: text
            typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: %s, log_format: {text_format: %q}}
`, logPath, logFormat+"\n")
	if jsonLog != "" {
		logs += fmt.Sprintf(`          - name: json
            typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: %s.json, log_format: {json_format: %s}}
`, logPath, jsonLog)
	}
	return fmt.Sprintf(`admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          access_log:
%s          http_filters:
%s          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config: %s
  clusters: %s
`, logs, fs.String(), routeConfig, clusters)
}

// dedent removes the indentation of the first non-empty line from every
// line.
func dedent(s string) string {
	lines := strings.Split(strings.TrimLeft(s, "\n"), "\n")
	ind := len(lines[0]) - len(strings.TrimLeft(lines[0], " \t"))
	for i, l := range lines {
		if len(l) >= ind && strings.TrimSpace(l[:ind]) == "" {
			lines[i] = l[ind:]
		}
	}
	return strings.Join(lines, "\n")
}

// sfsEntry renders one FilterStateValue of Envoy's generic string type:
// key, text format, extra fields (flow YAML).
func sfsEntry(key, text, extra string) string {
	if extra != "" {
		extra = ", " + extra
	}
	return fmt.Sprintf(`{object_key: %s, factory_key: envoy.string, format_string: {text_format: %q}%s}`, key, text, extra)
}

// sfsFilter renders a set_filter_state http_filters entry.
func sfsFilter(name, extra string, entries ...string) string {
	if extra != "" {
		extra = ", " + extra
	}
	return fmt.Sprintf(`- name: %s
  typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config, on_request_headers: [%s]%s}
`, name, strings.Join(entries, ", "), extra)
}

// readLog stops the proxy (flushing its access logs) and returns the
// lines of the file, sorted (a stream logs when it ends, which may be
// after its client has its response and sent the next request).
func readLog(t *testing.T, p *testutil.Proxy, path string) []string {
	t.Helper()
	p.Srv.Shutdown(t.Context())
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	sort.Strings(lines)
	return lines
}

// TestDynamicMetadataReadByNextFilter: header_to_metadata moves x-tenant
// into dynamic metadata (removing the header); a Lua filter after it reads
// the namespace and puts the value in a request header, one before it sees
// nothing; the route's request_headers_to_add reads it with
// %DYNAMIC_METADATA(ns:key)% — so the value reaches the upstream only
// through the metadata.
func TestDynamicMetadataReadByNextFilter(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	read := func(hdr string) string {
		return fmt.Sprintf(`"function envoy_on_request(h) local md = h:streamInfo():dynamicMetadata():get('acme'); `+
			`if md == nil then h:headers():add('%s', 'none') else h:headers():add('%s', md['tenant']) end end"`, hdr, hdr)
	}
	filters := fmt.Sprintf(`
- name: lua-before
  typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua, inline_code: %s}
- name: envoy.filters.http.header_to_metadata
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config
    request_rules: [{header: x-tenant, remove: true, on_header_present: {metadata_namespace: acme, key: tenant, type: STRING}}]
- name: lua-after
  typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua, inline_code: %s}
`, read("x-md-before"), read("x-md-after"))
	logPath := filepath.Join(t.TempDir(), "access.log")
	routes := `{name: local, virtual_hosts: [{name: all, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: c},
	  request_headers_to_add: [{header: {key: x-md-router, value: "%DYNAMIC_METADATA(acme:tenant)%"}}]}]}]}`
	p := testutil.StartProxy(t, fsBootstrap(filters, logPath, "md=%DYNAMIC_METADATA(acme)%", "", routes,
		"["+staticCluster("c", "", up.Addr)+"]"), nil)
	code, _, body := do(t, "GET", p.URL("http", "/"), "", "x-tenant", "blue")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	for _, want := range []string{"header:x-md-before=none\n", "header:x-md-after=blue\n", "header:x-md-router=blue\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("upstream request lacks %q:\n%s", strings.TrimSpace(want), body)
		}
	}
	if strings.Contains(body, "header:x-tenant=") {
		t.Errorf("header_to_metadata's remove: true left x-tenant:\n%s", body)
	}
	if got := readLog(t, p, logPath); len(got) != 1 || got[0] != `md={"tenant":"blue"}` {
		t.Errorf("access log %q, want md={\"tenant\":\"blue\"}", got)
	}
}

// TestSetFilterStateReadByRouterAndAccessLog: set_filter_state stores
// %REQ(x-tenant)%; the router reads it in request_headers_to_add and
// response_headers_to_add (PLAIN: the string; the default TYPED: its JSON
// form, a quoted string), alongside set_metadata's dynamic metadata; the
// text access log shows both forms and json_format renders the typed form
// as a JSON value.
func TestSetFilterStateReadByRouterAndAccessLog(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	filters := `
- name: envoy.filters.http.set_metadata
  typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config, metadata: [{metadata_namespace: acme, value: {tier: gold}}]}
` + sfsFilter("sfs", "", sfsEntry("tenant", "%REQ(x-tenant)%", ""), sfsEntry("acme.route", "%ROUTE_NAME%/%DYNAMIC_METADATA(acme:tier)%", ""))
	logPath := filepath.Join(t.TempDir(), "access.log")
	routes := `{name: local, virtual_hosts: [{name: all, domains: ['*'], routes: [{name: r1, match: {prefix: /}, route: {cluster: c},
	  request_headers_to_add: [{header: {key: x-fs-plain, value: "%FILTER_STATE(tenant:PLAIN)%"}}, {header: {key: x-fs-typed, value: "%FILTER_STATE(tenant)%"}},
	    {header: {key: x-fs-route, value: "%FILTER_STATE(acme.route:PLAIN)%"}}, {header: {key: x-md-tier, value: "%DYNAMIC_METADATA(acme:tier)%"}}],
	  response_headers_to_add: [{header: {key: x-fs-resp, value: "%FILTER_STATE(tenant:PLAIN)%"}}]}]}]}`
	p := testutil.StartProxy(t, fsBootstrap(filters, logPath,
		"plain=%FILTER_STATE(tenant:PLAIN)% typed=%FILTER_STATE(tenant)% explicit=%FILTER_STATE(tenant:TYPED)% cut=%FILTER_STATE(tenant:PLAIN):2% missing=%FILTER_STATE(nope:PLAIN)%",
		`{plain: "%FILTER_STATE(tenant:PLAIN)%", typed: "%FILTER_STATE(tenant:TYPED)%", md: "%DYNAMIC_METADATA(acme)%"}`,
		routes, "["+staticCluster("c", "", up.Addr)+"]"), nil)
	code, h, body := do(t, "GET", p.URL("http", "/"), "", "x-tenant", "blue")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	for _, want := range []string{"header:x-fs-plain=blue\n", `header:x-fs-typed="blue"` + "\n", "header:x-fs-route=r1/gold\n", "header:x-md-tier=gold\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("upstream request lacks %q:\n%s", strings.TrimSpace(want), body)
		}
	}
	if got := h.Get("x-fs-resp"); got != "blue" {
		t.Errorf("response_headers_to_add x-fs-resp = %q, want blue", got)
	}
	if got := readLog(t, p, logPath); len(got) != 1 || got[0] != `plain=blue typed="blue" explicit="blue" cut=bl missing=-` {
		t.Errorf("access log %q", got)
	}
	b, _ := os.ReadFile(logPath + ".json")
	if got := strings.TrimSpace(string(b)); got != `{"md":{"tier":"gold"},"plain":"blue","typed":"blue"}` {
		t.Errorf("json access log %s", got)
	}
}

// TestSetFilterStateSemantics: values apply in order (a later one with the
// same key replaces an earlier one, also across filters); skip_if_empty
// skips a value that renders as "" — with omit_empty_values, since a text
// format renders a missing operator as "-", which is not skipped; without
// skip_if_empty an empty value is stored; read_only has no effect (Envoy
// no longer enforces it); the next filter reads what the previous stored
// (%FILTER_STATE% in its own format string).
func TestSetFilterStateSemantics(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	omit := "omit_empty_values: true"
	filters := sfsFilter("first", "",
		sfsEntry("pick", "default", ""),
		`{object_key: pick, factory_key: envoy.string, skip_if_empty: true, format_string: {text_format: "%REQ(x-override)%", `+omit+`}}`,
		`{object_key: kept, factory_key: envoy.string, format_string: {text_format: "%REQ(x-missing)%", `+omit+`}}`,
		`{object_key: skipped, factory_key: envoy.string, skip_if_empty: true, format_string: {text_format: "%REQ(x-missing)%", `+omit+`}}`,
		sfsEntry("dash", "%REQ(x-missing)%", "skip_if_empty: true"),
		sfsEntry("ro", "first", "read_only: true, shared_with_upstream: ONCE"),
		sfsEntry("ro", "again", ""),
	) + sfsFilter("second", "",
		sfsEntry("copy", "%FILTER_STATE(pick:PLAIN)%+%FILTER_STATE(ro:PLAIN)%", "shared_with_upstream: TRANSITIVE"),
		sfsEntry("ro", "second", ""),
	)
	logPath := filepath.Join(t.TempDir(), "access.log")
	routes := `{name: local, virtual_hosts: [{name: all, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: c}}]}]}`
	p := testutil.StartProxy(t, fsBootstrap(filters, logPath,
		"pick=%FILTER_STATE(pick:PLAIN)% kept=[%FILTER_STATE(kept:PLAIN)%] kept.typed=%FILTER_STATE(kept)% skipped=%FILTER_STATE(skipped)% "+
			"dash=%FILTER_STATE(dash)% ro=%FILTER_STATE(ro:PLAIN)% copy=%FILTER_STATE(copy:PLAIN)%",
		"", routes, "["+staticCluster("c", "", up.Addr)+"]"), nil)
	if code, _, _ := do(t, "GET", p.URL("http", "/"), ""); code != 200 {
		t.Fatalf("status %d", code)
	}
	if code, _, _ := do(t, "GET", p.URL("http", "/"), "", "x-override", "custom"); code != 200 {
		t.Fatalf("status %d", code)
	}
	want := []string{
		`pick=custom kept=[] kept.typed="" skipped=- dash="-" ro=second copy=custom+again`,
		`pick=default kept=[] kept.typed="" skipped=- dash="-" ro=second copy=default+again`,
	}
	got := readLog(t, p, logPath)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("access log:\n got %q\nwant %q", got, want)
	}
}

// TestSetFilterStatePerRoute: the per-route form (typed_per_filter_config,
// the same Config) applies after the filter's values, least specific
// first — route configuration, virtual host, route, weighted cluster —
// so the most specific value of a key wins and each level adds its own.
func TestSetFilterStatePerRoute(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	per := func(entries ...string) string {
		return fmt.Sprintf(`{sfs: {"@type": type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config, on_request_headers: [%s]}}`,
			strings.Join(entries, ", "))
	}
	filters := sfsFilter("sfs", "", sfsEntry("both", "filter", ""), sfsEntry("filter-only", "filter", ""))
	routes := fmt.Sprintf(`{name: local, typed_per_filter_config: %s,
	  virtual_hosts: [{name: all, domains: ['*'], typed_per_filter_config: %s, routes: [
	    {match: {prefix: /route}, route: {cluster: c}, typed_per_filter_config: %s},
	    {match: {prefix: /wc}, typed_per_filter_config: %s, route: {weighted_clusters: {clusters: [{name: c, weight: 1, typed_per_filter_config: %s}]}}},
	    {match: {prefix: /}, route: {cluster: c}}]}]}`,
		per(sfsEntry("both", "table", ""), sfsEntry("table-only", "table", "")),
		per(sfsEntry("both", "vhost", ""), sfsEntry("vhost-only", "vhost", "")),
		per(sfsEntry("both", "route-%REQ(x-tenant)%", ""), sfsEntry("route-only", "route", "")),
		per(sfsEntry("both", "route", ""), sfsEntry("route-only", "route", "")),
		per(sfsEntry("both", "wc", ""), sfsEntry("wc-only", "wc", "")))
	logPath := filepath.Join(t.TempDir(), "access.log")
	p := testutil.StartProxy(t, fsBootstrap(filters, logPath,
		"%REQ(:PATH)% both=%FILTER_STATE(both:PLAIN)% filter=%FILTER_STATE(filter-only:PLAIN)% table=%FILTER_STATE(table-only:PLAIN)% "+
			"vhost=%FILTER_STATE(vhost-only:PLAIN)% route=%FILTER_STATE(route-only:PLAIN)% wc=%FILTER_STATE(wc-only:PLAIN)%",
		"", routes, "["+staticCluster("c", "", up.Addr)+"]"), nil)
	for _, path := range []string{"/", "/route", "/wc"} {
		if code, _, body := do(t, "GET", p.URL("http", path), "", "x-tenant", "blue"); code != 200 {
			t.Fatalf("%s: status %d: %s", path, code, body)
		}
	}
	want := []string{
		"/ both=vhost filter=filter table=table vhost=vhost route=- wc=-",
		"/route both=route-blue filter=filter table=table vhost=vhost route=route wc=-",
		"/wc both=wc filter=filter table=table vhost=vhost route=route wc=wc",
	}
	got := readLog(t, p, logPath)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("access log:\n got %q\nwant %q", got, want)
	}
}

// TestSetFilterStateClearRouteCache: with clear_route_cache the route is
// resolved again after the filter, so a header an earlier filter added
// (a Lua filter that does not clear the route cache itself) picks the
// route; without it the route chosen before the filters stands.
func TestSetFilterStateClearRouteCache(t *testing.T) {
	a := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	b := testutil.StartUpstream(t, testutil.EchoHandler("b"))
	routes := `{name: local, virtual_hosts: [{name: all, domains: ['*'], routes: [
	  {match: {prefix: /, headers: [{name: x-pick, string_match: {exact: b}}]}, route: {cluster: b}},
	  {match: {prefix: /}, route: {cluster: a}}]}]}`
	for _, clear := range []bool{true, false} {
		filters := `
- name: lua
  typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua, clear_route_cache: false,
    inline_code: "function envoy_on_request(h) h:headers():add('x-pick', 'b') end"}
` + sfsFilter("sfs", fmt.Sprintf("clear_route_cache: %v", clear), sfsEntry("k", "v", ""))
		p := testutil.StartProxy(t, fsBootstrap(filters, filepath.Join(t.TempDir(), "access.log"), "-", "", routes,
			"["+staticCluster("a", "", a.Addr)+", "+staticCluster("b", "", b.Addr)+"]"), nil)
		code, _, body := do(t, "GET", p.URL("http", "/"), "")
		want := "upstream=a"
		if clear {
			want = "upstream=b"
		}
		if code != 200 || !strings.Contains(body, "header:x-pick=b\n") || upstreamOf(body) != want {
			t.Errorf("clear_route_cache %v: status %d, upstream %q, want %q:\n%s", clear, code, upstreamOf(body), want, body)
		}
	}
}

// TestSetFilterStateConfigErrors: what Legate does not implement, and what
// Envoy rejects, fails the config with the path of the field.
func TestSetFilterStateConfigErrors(t *testing.T) {
	routes := `{name: local, virtual_hosts: [{name: all, domains: ['*'], routes: [{match: {prefix: /}, direct_response: {status: 200}}]}]}`
	for _, c := range []struct{ entry, path, want string }{
		// A custom key needs factory_key, as in Envoy.
		{`{object_key: my.key, format_string: {text_format: x}}`,
			`on_request_headers[0].object_key`, `'my.key' does not have an object factory`},
		{`{object_key: my.key, factory_key: my.factory, format_string: {text_format: x}}`,
			`on_request_headers[0].factory_key`, `'my.factory' does not have an object factory`},
		// Envoy's well-known objects are not implemented.
		{`{object_key: envoy.tcp_proxy.cluster, format_string: {text_format: x}}`,
			`on_request_headers[0].object_key`, `filter state object factory "envoy.tcp_proxy.cluster" is not implemented by legate`},
		{`{object_key: sni, factory_key: envoy.network.upstream_server_name, format_string: {text_format: x}}`,
			`on_request_headers[0].factory_key`, `filter state object factory "envoy.network.upstream_server_name" is not implemented by legate`},
		// The format string compiles with the substitution formatter.
		{`{object_key: k, factory_key: envoy.string, format_string: {text_format: "%NOT_AN_OPERATOR%"}}`,
			`on_request_headers[0].format_string.text_format`, `not supported field in StreamInfo: NOT_AN_OPERATOR`},
		{`{object_key: k, factory_key: envoy.string, format_string: {text_format: "%FILTER_STATE(k:RAW)%"}}`,
			`on_request_headers[0].format_string.text_format`, `invalid filter state serialize type "RAW"`},
		{`{object_key: k, factory_key: envoy.string, format_string: {text_format: x, formatters: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery}}]}}`,
			`on_request_headers[0].format_string.formatters[0].typed_config`, `is not implemented by legate`},
	} {
		y := fsBootstrap(sfsFilter("sfs", "", c.entry), filepath.Join(t.TempDir(), "a.log"), "-", "", routes, "[]")
		_, err := testutil.TryStartProxy(t, y, nil)
		if err == nil || !strings.Contains(err.Error(), ".http_filters[0].typed_config."+c.path+" (line ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got %v\nwant %s: %s", c.entry, err, c.path, c.want)
		}
	}
	// The per-route form compiles with the route table.
	perRoute := `{name: local, virtual_hosts: [{name: all, domains: ['*'], routes: [{match: {prefix: /}, direct_response: {status: 200},
	  typed_per_filter_config: {sfs: {"@type": type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config,
	    on_request_headers: [{object_key: my.key, format_string: {text_format: x}}]}}}]}]}`
	y := fsBootstrap(sfsFilter("sfs", "", sfsEntry("k", "v", "")), filepath.Join(t.TempDir(), "a.log"), "-", "", perRoute, "[]")
	_, err := testutil.TryStartProxy(t, y, nil)
	if err == nil || !strings.Contains(err.Error(), `routes[0].typed_per_filter_config["sfs"].on_request_headers[0].object_key`) ||
		!strings.Contains(err.Error(), "'my.key' does not have an object factory") {
		t.Errorf("per-route config: got %v", err)
	}
}
