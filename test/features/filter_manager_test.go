// The HTTP filter manager: filter order, local replies, buffering, limits,
// per-route configs, config errors. Registers the test filter
// legate.test.filter_manager (@type google.protobuf.Struct).

package features_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/testutil"
)

// The test filter is configured by a google.protobuf.Struct (its per-route
// config is a google.protobuf.StringValue): tag names it in the headers it
// adds; the other fields choose what it does.
type testFilterCfg struct {
	tag                               string
	stopHeaders, upperBody, encBuffer bool
	reply                             int
}

func init() {
	httpfilter.Register("legate.test.filter_manager", nil, &structpb.Struct{}, &wrapperspb.StringValue{}, httpfilter.Factory{
		Compile: func(_ *httpfilter.Context, msg proto.Message, _ string) (httpfilter.Config, error) {
			m := msg.(*structpb.Struct).AsMap()
			c := &testFilterCfg{}
			c.tag, _ = m["tag"].(string)
			c.stopHeaders, _ = m["stop_headers"].(bool)
			c.upperBody, _ = m["upper_body"].(bool)
			c.encBuffer, _ = m["enc_buffer"].(bool)
			if r, ok := m["reply"].(float64); ok {
				c.reply = int(r)
			}
			return httpfilter.ConfigFunc(func(cb httpfilter.Callbacks) httpfilter.Filter { return &testFilter{c: c, cb: cb} }), nil
		},
		CompilePerRoute: func(_ *httpfilter.Context, msg proto.Message, _ string) (any, error) {
			return msg.(*wrapperspb.StringValue).GetValue(), nil
		},
	}, "a filter for the filter manager's tests")
}

type testFilter struct {
	c  *testFilterCfg
	cb httpfilter.Callbacks
}

func (f *testFilter) tag() string {
	if v, ok := f.cb.PerRouteConfig().(string); ok {
		return f.c.tag + "@" + v
	}
	return f.c.tag
}

func (f *testFilter) DecodeHeaders(h *headers.Request, end bool) httpfilter.Status {
	h.Map.Append("x-fm-decode", f.tag())
	// What an earlier filter that held the headers for the body saw.
	if v := h.Map.Get("x-fm-body-len"); v != "" {
		h.Map.Append("x-fm-seen-body-len", f.c.tag+"="+v)
	}
	f.cb.StreamInfo().SetDynamicMetadata("fm", map[string]*structpb.Value{f.c.tag: structpb.NewStringValue("decoded")})
	if f.c.reply != 0 {
		f.cb.SendLocalReply(f.c.reply, "denied by "+f.c.tag, httpfilter.LocalReply{Details: "fm_" + f.c.tag,
			Headers: []httpfilter.HeaderValue{{Key: "x-fm-reply", Value: f.c.tag}}})
		return httpfilter.StopIteration
	}
	if f.c.stopHeaders && !end {
		return httpfilter.StopIteration
	}
	return httpfilter.Continue
}

func (f *testFilter) DecodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if f.c.stopHeaders && !end {
		return httpfilter.StopAndBuffer
	}
	if f.c.stopHeaders {
		f.cb.RequestHeaders().Map.Set("x-fm-body-len", fmt.Sprint(b.Len()))
	}
	if f.c.upperBody {
		b.Set(bytes.ToUpper(b.Bytes()))
	}
	return httpfilter.Continue
}

func (f *testFilter) EncodeHeaders(h *headers.Response, end bool) httpfilter.Status {
	h.Map.Append("x-fm-encode", f.tag())
	if f.c.encBuffer && !end {
		return httpfilter.StopIteration
	}
	return httpfilter.Continue
}

func (f *testFilter) EncodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if !f.c.encBuffer {
		return httpfilter.Continue
	}
	if !end {
		return httpfilter.StopAndBuffer
	}
	b.Append([]byte("[" + f.c.tag + "]"))
	f.cb.ResponseHeaders().Map.Set("x-fm-enc-len", fmt.Sprint(b.Len()))
	return httpfilter.Continue
}

// testFilter renders an http_filters entry for the test filter.
func testFilterEntry(name, fields string, extra string) string {
	if extra != "" {
		extra = ", " + extra
	}
	return fmt.Sprintf(`{name: %s, typed_config: {"@type": type.googleapis.com/google.protobuf.Struct, %s}%s}`, name, fields, extra)
}

const routerEntry = `{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}`

func fmProxy(t *testing.T, filters []string, routes string, extra string) (*testutil.Proxy, *testutil.Upstream, string) {
	t.Helper()
	up := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	logPath := filepath.Join(t.TempDir(), "access.log")
	hcm := fmt.Sprintf(`http_filters: [%s, %s]
access_log: [{name: envoy.access_loggers.file, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: %s, log_format: {text_format: "%%RESPONSE_CODE%% %%RESPONSE_CODE_DETAILS%% md=%%DYNAMIC_METADATA(fm)%% a=%%DYNAMIC_METADATA(fm:a)%%\n"}}}]
%s`, strings.Join(filters, ", "), routerEntry, logPath, extra)
	p := start(t, cfg{hcm: hcm, vhosts: routes, clusters: "[" + staticCluster("c", "", up.Addr) + "]"})
	return p, up, logPath
}

func do(t *testing.T, method, url, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	return testutil.Do(t, testutil.Client(), method, url, body, hdr...)
}

func TestFilterManagerOrderAndEncode(t *testing.T) {
	p, _, logPath := fmProxy(t, []string{testFilterEntry("a", "tag: a", ""), testFilterEntry("b", "tag: b", "")},
		vhost(`{match: {prefix: /}, route: {cluster: c}}`), "")
	code, h, body := do(t, "GET", p.URL("http", "/x"), "")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	// Decode in http_filters order, encode in reverse.
	if !strings.Contains(body, "header:x-fm-decode=a,b") {
		t.Errorf("upstream did not see the decoders in order a, b:\n%s", body)
	}
	if got := strings.Join(h.Values("x-fm-encode"), ","); got != "b,a" {
		t.Errorf("encoders ran as %q, want b,a", got)
	}
	// Dynamic metadata set by the filters reaches the access log.
	testutil.Eventually(t, 3e9, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), `200 via_upstream md={"a":"decoded","b":"decoded"} a=decoded`)
	}, "access log should show the dynamic metadata: %s", func() string { b, _ := os.ReadFile(logPath); return string(b) }())
}

func TestFilterManagerLocalReplyPassesEncoders(t *testing.T) {
	p, up, _ := fmProxy(t, []string{testFilterEntry("a", "tag: a", ""), testFilterEntry("b", "tag: b, reply: 403", ""), testFilterEntry("c", "tag: c", "")},
		vhost(`{match: {prefix: /}, route: {cluster: c}}`), "")
	code, h, body := do(t, "GET", p.URL("http", "/x"), "")
	if code != 403 || body != "denied by b" {
		t.Fatalf("got %d %q, want 403 from filter b", code, body)
	}
	if h.Get("x-fm-reply") != "b" {
		t.Errorf("reply headers missing: %v", h)
	}
	// Every encoder sees the local reply (Envoy sends it through the
	// encoder chain), in reverse order.
	if got := strings.Join(h.Values("x-fm-encode"), ","); got != "c,b,a" {
		t.Errorf("local reply went through encoders %q, want c,b,a", got)
	}
	if up.Hits() != 0 {
		t.Errorf("upstream got %d requests after a filter answered", up.Hits())
	}
}

func TestFilterManagerBufferingAndBodyChanges(t *testing.T) {
	p, _, _ := fmProxy(t, []string{testFilterEntry("a", "tag: a, stop_headers: true", ""), testFilterEntry("b", "tag: b, upper_body: true", "")},
		vhost(`{match: {prefix: /}, route: {cluster: c}}`), "")
	payload := strings.Repeat("hello ", 20000) // 120 kB: several reads
	code, _, body := do(t, "POST", p.URL("http", "/x"), payload)
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	// a held the headers until the whole body was in: b's headers
	// callback ran after a had seen all of it.
	if !strings.Contains(body, fmt.Sprintf("header:x-fm-seen-body-len=b=%d", len(payload))) {
		t.Errorf("filter b should see its headers only after a buffered the body:\n%.400s", body)
	}
	if !strings.Contains(body, "body="+strings.ToUpper(payload[:60])) {
		t.Errorf("upstream body not transformed by b:\n%.300s", body)
	}
}

func TestFilterManagerBufferLimits(t *testing.T) {
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("z"), 8192))
	}))
	hcm := fmt.Sprintf("http_filters: [%s, %s]\n", testFilterEntry("a", "tag: a, stop_headers: true, enc_buffer: true", ""), routerEntry)
	p := start(t, cfg{hcm: hcm, vhosts: vhost(`{match: {prefix: /}, route: {cluster: c}}`),
		clusters: "[" + staticCluster("c", "", up.Addr) + "]"})
	_ = p
	// The listener's per_connection_buffer_limit_bytes bounds buffering.
	c2 := cfg{hcm: hcm, vhosts: vhost(`{match: {prefix: /}, route: {cluster: c}}`), clusters: "[" + staticCluster("c", "", up.Addr) + "]"}
	y := strings.Replace(c2.String(), "  - name: http\n", "  - name: http\n    per_connection_buffer_limit_bytes: 4096\n", 1)
	lp := testutil.StartProxy(t, y, nil)
	code, _, _ := do(t, "POST", lp.URL("http", "/"), strings.Repeat("x", 10000))
	if code != 413 {
		t.Errorf("request buffered over the limit: status %d, want 413", code)
	}
	if n := lp.Stat(t, "http.ingress.downstream_rq_too_large"); n != 1 {
		t.Errorf("downstream_rq_too_large = %d, want 1", n)
	}
	code, _, _ = do(t, "GET", lp.URL("http", "/"), "")
	if code != 500 {
		t.Errorf("response buffered over the limit: status %d, want 500", code)
	}
	if n := lp.Stat(t, "http.ingress.rs_too_large"); n != 1 {
		t.Errorf("rs_too_large = %d, want 1", n)
	}
	// Under the limit (the default 1 MiB) the buffered response is
	// transformed and its length is exact.
	code, h, body := do(t, "GET", p.URL("http", "/"), "")
	if code != 200 || body != strings.Repeat("z", 8192)+"[a]" || h.Get("content-length") != fmt.Sprint(8192+3) {
		t.Errorf("buffered response: %d, content-length %q, body %d bytes ending %q", code, h.Get("content-length"), len(body), body[max(0, len(body)-5):])
	}
}

func TestFilterManagerPerRouteConfig(t *testing.T) {
	routes := `[{name: all, domains: ['*'],
	  typed_per_filter_config: {b: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: vhost}}},
	  routes: [
	    {match: {prefix: /route}, route: {cluster: c}, typed_per_filter_config: {
	       a: {"@type": type.googleapis.com/google.protobuf.StringValue, value: route},
	       d: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig}}},
	    {match: {prefix: /off}, route: {cluster: c}, typed_per_filter_config: {
	       a: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true}}},
	    {match: {prefix: /weighted}, route: {weighted_clusters: {clusters: [{name: c, weight: 1, typed_per_filter_config: {
	       a: {"@type": type.googleapis.com/google.protobuf.StringValue, value: wc}}}]}}},
	    {match: {prefix: /}, route: {cluster: c}}]}]`
	p, _, _ := fmProxy(t, []string{testFilterEntry("a", "tag: a", ""), testFilterEntry("b", "tag: b", ""), testFilterEntry("d", "tag: d", "disabled: true")},
		routes, "")
	cases := []struct{ path, want string }{
		{"/", "a,b@vhost"},              // virtual host config for b; d disabled by default
		{"/route", "a@route,b@vhost,d"}, // route config for a; d enabled on this route
		{"/off", "b@vhost"},             // a disabled on this route
		{"/weighted", "a@wc,b@vhost"},   // weighted cluster config wins
	}
	for _, c := range cases {
		code, _, body := do(t, "GET", p.URL("http", c.path), "")
		if code != 200 || !strings.Contains(body, "header:x-fm-decode="+c.want+"\n") {
			t.Errorf("%s: status %d, want x-fm-decode=%s in\n%s", c.path, code, c.want, body)
		}
	}
}

func TestFilterManagerErrors(t *testing.T) {
	for _, c := range []struct{ filters, want string }{
		{`[{name: x, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.alternate_protocols_cache.v3.FilterConfig}}, ` + routerEntry + `]`,
			"is not implemented by legate"},
		{`[{name: x, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Routr}}, ` + routerEntry + `]`,
			"unknown @type envoy.extensions.filters.http.router.v3.Routr: no Envoy extension has this type; did you mean envoy.extensions.filters.http.router.v3.Router"},
		{`[{name: x, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: x, cluster: c}}, ` + routerEntry + `]`,
			"is envoy.filters.network.tcp_proxy (envoy.filters.network), which does not go here"},
		{`[` + routerEntry + `, ` + testFilterEntry("a", "tag: a", "") + `]`, "the router filter must be the last HTTP filter"},
	} {
		_, err := testutil.TryStartProxy(t, cfg{hcm: "http_filters: " + c.filters, vhosts: vhost(`{match: {prefix: /}, direct_response: {status: 200}}`), clusters: "[]"}.String(), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("http_filters %s:\n got %v\nwant %q", c.filters, err, c.want)
		}
	}
	// Optional filters Legate lacks are skipped, as Envoy; an empty list
	// means the router.
	for _, fs := range []string{
		`[{name: x, is_optional: true, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.alternate_protocols_cache.v3.FilterConfig}}, ` + routerEntry + `]`,
		`[]`,
	} {
		p, err := testutil.TryStartProxy(t, cfg{hcm: "http_filters: " + fs, vhosts: vhost(`{match: {prefix: /}, direct_response: {status: 204}}`), clusters: "[]"}.String(), nil)
		if err != nil {
			t.Fatalf("http_filters %s: %v", fs, err)
		}
		if code, _, _ := do(t, "GET", p.URL("http", "/"), ""); code != 204 {
			t.Errorf("http_filters %s: status %d", fs, code)
		}
	}
}
