package header_mutation_test

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	_ "github.com/legateproxy/legate/internal/filters/all"
	"github.com/legateproxy/legate/internal/testutil"
)

// recorder is a backend that records the last request's headers and
// trailers and answers with fixed response headers.
type recorder struct {
	mu       sync.Mutex
	hdr      http.Header
	trailer  http.Header
	path     string
	length   int64
	body     string
	respHdrs map[string][]string
	respTrl  map[string]string
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.body = string(body)
	r.hdr, r.trailer, r.path, r.length = req.Header.Clone(), req.Trailer.Clone(), req.URL.Path, req.ContentLength
	r.mu.Unlock()
	for k := range r.respTrl {
		w.Header().Add("Trailer", k)
	}
	for k, vs := range r.respHdrs {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(200)
	w.Write([]byte("ok"))
	for k, v := range r.respTrl {
		w.Header().Set(k, v)
	}
}

func (r *recorder) seen() (http.Header, http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hdr, r.trailer
}

// listener renders one listener whose connection manager runs the header
// mutation filter (typed_config filterCfg) with the given virtual host
// routes and route-configuration-level typed_per_filter_config.
func listener(name, filterCfg, rcPerFilter, vhPerFilter, routes string) string {
	return fmt.Sprintf(`
  - name: %s
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %s
          # Trailers cross HTTP/1 only with enable_trailers, as in Envoy.
          http_protocol_options: {enable_trailers: true}
          http_filters:
          - name: envoy.filters.http.header_mutation
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
%s
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            typed_per_filter_config: {%s}
            virtual_hosts:
            - name: all
              domains: ["*"]
              typed_per_filter_config: {%s}
              routes:
%s
`, name, name, indent(filterCfg, 14), rcPerFilter, vhPerFilter, indent(routes, 14))
}

func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "\n")
}

func cluster(u *testutil.Upstream) string {
	h, p := u.Host()
	return fmt.Sprintf(`
  clusters:
  - {name: backend, type: STATIC, http_protocol_options: {enable_trailers: true}, load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}}
`, h, p)
}

func start(t *testing.T, listeners string, u *testutil.Upstream) *testutil.Proxy {
	t.Helper()
	return testutil.StartProxy(t, `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:`+listeners+cluster(u), nil)
}

// TestRequestMutations: every kind of request mutation, applied in order,
// reaches the backend as Envoy leaves the headers.
func TestRequestMutations(t *testing.T) {
	rec := &recorder{}
	u := testutil.StartUpstream(t, rec)
	p := start(t, listener("main", `
mutations:
  request_mutations:
  - remove: X-Drop
  - append: {header: {key: x-append, value: added}, append_action: APPEND_IF_EXISTS_OR_ADD}
  - append: {header: {key: x-absent, value: added}, append_action: ADD_IF_ABSENT}
  - append: {header: {key: x-absent-new, value: added}, append_action: ADD_IF_ABSENT}
  - append: {header: {key: x-overwrite, value: new}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
  - append: {header: {key: x-overwrite-new, value: new}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
  - append: {header: {key: x-if-exists, value: new}, append_action: OVERWRITE_IF_EXISTS}
  - append: {header: {key: x-if-exists-new, value: new}, append_action: OVERWRITE_IF_EXISTS}
  - append: {header: {key: x-legacy, value: new}, append: false}
  - append: {header: {key: x-empty-kept, value: ""}, keep_empty_value: true}
  - append: {header: {key: x-empty, value: ""}}
  - append: {header: {key: x-empty-subst, value: "%REQ(x-missing)%"}}
  - remove_on_match: {key_matcher: {prefix: x-debug-}}
  - remove_on_match: {key_matcher: {safe_regex: {regex: "x-trace-[0-9]+"}}}
  - append: {header: {key: x-copied, value: "from %REQ(x-source)%"}}
  - append: {header: {key: x-client, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}
  - remove: x-source
  - append: {header: {key: x-after-remove, value: "[%REQ(x-source)%]"}, keep_empty_value: true}
  - append: {header: {key: x-seq, value: first}}
  - append: {header: {key: x-seq, value: second}, append_action: ADD_IF_ABSENT}
  - append: {header: {key: x-seq-copy, value: "%REQ(x-seq)%"}}
`, "", "", `
- {match: {prefix: /}, route: {cluster: backend}}
`), u)
	code, _, _ := testutil.Get(t, testutil.Client(), p.URL("main", "/"),
		"x-drop", "1", "x-drop", "2",
		"x-append", "old",
		"x-absent", "old",
		"x-overwrite", "old1", "x-overwrite", "old2",
		"x-if-exists", "old",
		"x-legacy", "old",
		"x-debug-a", "1", "x-debug-b", "2", "x-debugger", "kept",
		"x-trace-12", "1", "x-trace-x", "kept",
		"x-source", "src",
	)
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	seen, _ := rec.seen()
	for _, tc := range []struct {
		name string
		want []string // nil: absent
	}{
		{"x-drop", nil},
		{"x-append", []string{"old", "added"}},
		{"x-absent", []string{"old"}},
		{"x-absent-new", []string{"added"}},
		{"x-overwrite", []string{"new"}},
		{"x-overwrite-new", []string{"new"}},
		{"x-if-exists", []string{"new"}},
		{"x-if-exists-new", nil},
		{"x-legacy", []string{"new"}},
		{"x-empty-kept", []string{""}},
		{"x-empty", nil},
		{"x-empty-subst", nil},
		{"x-debug-a", nil},
		{"x-debug-b", nil},
		{"x-debugger", []string{"kept"}},
		{"x-trace-12", nil},
		{"x-trace-x", []string{"kept"}},
		{"x-copied", []string{"from src"}},
		{"x-client", []string{"127.0.0.1"}},
		{"x-source", nil},
		{"x-after-remove", []string{"[]"}},
		// Each mutation sees the ones before it.
		{"x-seq", []string{"first"}},
		{"x-seq-copy", []string{"first"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := seen.Values(tc.name); !slices.Equal(got, tc.want) {
				t.Errorf("backend saw %s %q, want %q", tc.name, got, tc.want)
			}
		})
	}
}

// TestResponseMutations: response mutations reach the client, with
// %REQ% and %RESP% substitutions and remove_on_match.
func TestResponseMutations(t *testing.T) {
	rec := &recorder{respHdrs: map[string][]string{
		"X-Internal-A": {"1"}, "X-Internal-B": {"2"}, "X-Version": {"v1"}, "X-Up": {"up"}, "X-Drop": {"1"},
	}}
	u := testutil.StartUpstream(t, rec)
	p := start(t, listener("main", `
mutations:
  response_mutations:
  - remove: x-drop
  - remove_on_match: {key_matcher: {prefix: X-INTERNAL-, ignore_case: true}}
  - append: {header: {key: x-version, value: v2}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
  - append: {header: {key: x-echo, value: "%REQ(x-client-id)%/%RESP(x-up)%"}}
  - append: {header: {key: x-up, value: more}}
`, "", "", `
- {match: {prefix: /}, route: {cluster: backend}}
`), u)
	code, h, _ := testutil.Get(t, testutil.Client(), p.URL("main", "/"), "x-client-id", "c7")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"x-drop", nil},
		{"x-internal-a", nil},
		{"x-internal-b", nil},
		{"x-version", []string{"v2"}},
		{"x-echo", []string{"c7/up"}},
		{"x-up", []string{"up", "more"}},
	} {
		if got := h.Values(tc.name); !slices.Equal(got, tc.want) {
			t.Errorf("client saw %s %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestPerRouteOrder: the filter's mutations run first, then the per-route
// configs — most specific first by default (so the least specific one's
// overwrite wins), least specific first with
// most_specific_header_mutations_wins — on the request and the response;
// a route without its own config gets the virtual host's and the route
// configuration's.
func TestPerRouteOrder(t *testing.T) {
	rec := &recorder{}
	u := testutil.StartUpstream(t, rec)
	perRoute := func(level string) string {
		return fmt.Sprintf(`envoy.filters.http.header_mutation: {"@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute,
  mutations: {
    request_mutations: [{append: {header: {key: x-level, value: %[1]s}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}},
                        {append: {header: {key: x-order, value: %[1]s}}}],
    response_mutations: [{append: {header: {key: x-level, value: %[1]s}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}},
                         {append: {header: {key: x-order, value: %[1]s}}}]}}`, level)
	}
	filterCfg := func(wins bool) string {
		return fmt.Sprintf(`
most_specific_header_mutations_wins: %t
mutations:
  request_mutations:
  - append: {header: {key: x-level, value: filter}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
  - append: {header: {key: x-order, value: filter}}
  response_mutations:
  - append: {header: {key: x-level, value: filter}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
  - append: {header: {key: x-order, value: filter}}
`, wins)
	}
	routes := `
- match: {prefix: /route}
  route: {cluster: backend}
  typed_per_filter_config: {` + strings.ReplaceAll(perRoute("route"), "\n", " ") + `}
- {match: {prefix: /}, route: {cluster: backend}}
`
	rc, vh := strings.ReplaceAll(perRoute("table"), "\n", " "), strings.ReplaceAll(perRoute("vhost"), "\n", " ")
	p := start(t, listener("least", filterCfg(false), rc, vh, routes)+listener("most", filterCfg(true), rc, vh, routes), u)

	for _, tc := range []struct {
		listener, path string
		level          string
		order          []string
	}{
		{"least", "/route", "table", []string{"filter", "route", "vhost", "table"}},
		{"most", "/route", "route", []string{"filter", "table", "vhost", "route"}},
		{"least", "/other", "table", []string{"filter", "vhost", "table"}},
		{"most", "/other", "vhost", []string{"filter", "table", "vhost"}},
	} {
		t.Run(tc.listener+tc.path, func(t *testing.T) {
			code, h, _ := testutil.Get(t, testutil.Client(), p.URL(tc.listener, tc.path))
			if code != 200 {
				t.Fatalf("status %d", code)
			}
			seen, _ := rec.seen()
			for side, hdr := range map[string]http.Header{"backend": seen, "client": h} {
				if got := hdr.Values("x-level"); !slices.Equal(got, []string{tc.level}) {
					t.Errorf("%s saw x-level %q, want %q", side, got, tc.level)
				}
				if got := hdr.Values("x-order"); !slices.Equal(got, tc.order) {
					t.Errorf("%s saw x-order %q, want %q", side, got, tc.order)
				}
			}
		})
	}
}

// TestTrailers: request trailer mutations reach the backend and response
// trailer mutations reach the client.
func TestTrailers(t *testing.T) {
	rec := &recorder{respTrl: map[string]string{"X-Checksum": "abc", "X-Secret": "s"}}
	u := testutil.StartUpstream(t, rec)
	p := start(t, listener("main", `
mutations:
  request_trailers_mutations:
  - remove: x-req-secret
  - append: {header: {key: x-req-added, value: "%REQ(x-client-id)%"}}
  response_trailers_mutations:
  - remove: x-secret
  - append: {header: {key: x-checksum, value: def}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
`, "", "", `
- {match: {prefix: /}, route: {cluster: backend}}
`), u)
	req, err := http.NewRequest("POST", p.URL("main", "/"), io.NopCloser(strings.NewReader("body")))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-client-id", "c7")
	req.Trailer = http.Header{"X-Req-Secret": {"s"}, "X-Req-Kept": {"k"}}
	resp, err := testutil.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	_, trl := rec.seen()
	rec.mu.Lock()
	body := rec.body
	rec.mu.Unlock()
	if body != "body" {
		t.Errorf("backend saw body %q, want it unchanged", body)
	}
	if got := trl.Get("x-req-secret"); got != "" {
		t.Errorf("backend saw trailer x-req-secret %q, want it removed", got)
	}
	if got := trl.Get("x-req-kept"); got != "k" {
		t.Errorf("backend saw trailer x-req-kept %q, want k", got)
	}
	if got := trl.Get("x-req-added"); got != "c7" {
		t.Errorf("backend saw trailer x-req-added %q, want c7", got)
	}
	if got := resp.Trailer.Get("x-secret"); got != "" {
		t.Errorf("client saw trailer x-secret %q, want it removed", got)
	}
	if got := resp.Trailer.Values("x-checksum"); !slices.Equal(got, []string{"def"}) {
		t.Errorf("client saw trailer x-checksum %q, want def", got)
	}

	// A request with a content-length (no trailers) keeps it upstream.
	if code, _, _ := testutil.Do(t, testutil.Client(), "POST", p.URL("main", "/"), "body"); code != 200 {
		t.Fatalf("status %d", code)
	}
	rec.mu.Lock()
	length := rec.length
	rec.mu.Unlock()
	if length != 4 {
		t.Errorf("backend saw content-length %d, want 4", length)
	}
}

// TestUpstreamFilter: in a cluster's upstream filter chain the filter
// mutates the upstream request (substitutions read it: %REQ(:path)% is
// the rewritten path) and the response.
func TestUpstreamFilter(t *testing.T) {
	rec := &recorder{respHdrs: map[string][]string{"X-Up": {"up"}}}
	u := testutil.StartUpstream(t, rec)
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
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /old}, route: {cluster: backend, prefix_rewrite: /new},
              typed_per_filter_config: {envoy.filters.http.header_mutation: {"@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute,
                mutations: {request_mutations: [{append: {header: {key: x-per-route, value: upstream}}}]}}}}]}]
  clusters:
  - name: backend
    type: STATIC
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http_protocol_options: {}}
        http_filters:
        - name: envoy.filters.http.header_mutation
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
            mutations:
              request_mutations:
              - append: {header: {key: x-upstream-path, value: "%%REQ(:path)%%"}}
              - remove: x-drop
              response_mutations:
              - append: {header: {key: x-method, value: "%%REQ(:method)%%"}}
              - append: {header: {key: x-up, value: "%%RESP(x-up)%%-seen"}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
        - name: envoy.filters.http.upstream_codec
          typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec}
`, h, port), nil)
	code, hdr, _ := testutil.Get(t, testutil.Client(), p.URL("main", "/old/x"), "x-drop", "1")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	seen, _ := rec.seen()
	if got := seen.Get("x-upstream-path"); got != "/new/x" {
		t.Errorf("backend saw x-upstream-path %q, want the upstream request's path /new/x", got)
	}
	// Upstream filters read the per-route configs of the route that chose
	// the cluster, by their name in http_filters (as Envoy's do).
	if got := seen.Get("x-per-route"); got != "upstream" {
		t.Errorf("backend saw x-per-route %q, want the route's per-filter config applied upstream", got)
	}
	if got := seen.Values("x-drop"); len(got) != 0 {
		t.Errorf("backend saw x-drop %q, want it removed", got)
	}
	if got := hdr.Get("x-method"); got != "GET" {
		t.Errorf("client saw x-method %q, want GET", got)
	}
	if got := hdr.Values("x-up"); !slices.Equal(got, []string{"up-seen"}) {
		t.Errorf("client saw x-up %q, want up-seen", got)
	}
}

// TestConfigErrors: what the filter does not implement, or Envoy
// rejects, is refused at its path.
func TestConfigErrors(t *testing.T) {
	u := testutil.StartUpstream(t, &recorder{})
	for _, tc := range []struct {
		name, cfg, want string
	}{
		{"query parameters", `
mutations:
  query_parameter_mutations: [{remove: q}]
`, "mutations.query_parameter_mutations"},
		{"remove pseudo-header", `
mutations:
  request_mutations: [{remove: ":path"}]
`, "mutations.request_mutations[0].remove"},
		{"append host", `
mutations:
  response_mutations: [{remove: x}, {append: {header: {key: host, value: h}}}]
`, "mutations.response_mutations[1].append.header.key"},
		{"append and append_action", `
mutations:
  request_trailers_mutations: [{append: {header: {key: x, value: v}, append: true, append_action: ADD_IF_ABSENT}}]
`, "mutations.request_trailers_mutations[0].append"},
		{"no action", `
mutations:
  response_trailers_mutations: [{}]
`, "mutations.response_trailers_mutations[0]"},
		{"bad substitution", `
mutations:
  request_mutations: [{append: {header: {key: x, value: "%NOT_AN_OPERATOR%"}}}]
`, "mutations.request_mutations[0].append.header.value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testutil.TryStartProxy(t, `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:`+listener("main", tc.cfg, "", "", `
- {match: {prefix: /}, route: {cluster: backend}}
`)+cluster(u), nil)
			if err == nil {
				t.Fatal("config accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s", err, tc.want)
			}
		})
	}
}

// TestPerRouteConfigErrors: a per-route config is checked too.
func TestPerRouteConfigErrors(t *testing.T) {
	u := testutil.StartUpstream(t, &recorder{})
	_, err := testutil.TryStartProxy(t, `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:`+listener("main", "mutations: {}", "", "", `
- match: {prefix: /}
  route: {cluster: backend}
  typed_per_filter_config:
    envoy.filters.http.header_mutation:
      "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute
      mutations: {formatters: [{name: f, typed_config: {"@type": type.googleapis.com/google.protobuf.Empty}}]}
`)+cluster(u), nil)
	if err == nil || !strings.Contains(err.Error(), "mutations.formatters") {
		t.Fatalf("error %v, want one naming mutations.formatters", err)
	}
}
