package csrf

import (
	"strconv"
	"strings"
	"testing"

	csrfv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/csrf/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
)

func TestHostAndPort(t *testing.T) {
	for in, want := range map[string]string{
		"":                              "",
		"http://example.com":            "example.com",
		"https://example.com:8443/a?b":  "example.com:8443",
		"http://user:pw@example.com:80": "example.com:80",
		"http://[::1]:9000/x":           "[::1]:9000",
		"null":                          "null", // not a URL: the value itself
		"example.com":                   "example.com",
		"http://":                       "http://",
		"http://exa mple.com":           "http://exa mple.com",
		"http://example.com:99999":      "http://example.com:99999",
	} {
		if got := hostAndPort(in); got != want {
			t.Errorf("hostAndPort(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct{ json, err string }{
		{`{"filter_enabled": {"default_value": {"numerator": 100}}, "additional_origins": [{"safe_regex": {"regex": "("}}]}`, "p.additional_origins[0].safe_regex"},
		{`{"filter_enabled": {"default_value": {"numerator": 100}}, "additional_origins": [{}]}`, "p.additional_origins[0]"},
	} {
		var p csrfv3.CsrfPolicy
		if err := protojson.Unmarshal([]byte(tc.json), &p); err != nil {
			t.Fatal(err)
		}
		_, err := compile(&httpfilter.Context{Stats: stats.NewStore()}, &p, "p")
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want one at %s", tc.json, err, tc.err)
		}
	}
}

// fakeCallbacks records a local reply.
type fakeCallbacks struct {
	httpfilter.Callbacks
	perRoute     any
	status       int
	body, detail string
}

func (f *fakeCallbacks) PerRouteConfig() any { return f.perRoute }
func (f *fakeCallbacks) SendLocalReply(status int, body string, r httpfilter.LocalReply) {
	f.status, f.body, f.detail = status, body, r.Details
}

// TestDecision follows Envoy's csrf_filter_test.cc cases.
func TestDecision(t *testing.T) {
	policy := func(enabled, shadow uint32) string {
		return `{"filter_enabled": {"default_value": {"numerator": ` + strconv.Itoa(int(enabled)) + `}}, "shadow_enabled": {"default_value": {"numerator": ` + strconv.Itoa(int(shadow)) +
			`}}, "additional_origins": [{"exact": "additionalhost"}, {"safe_regex": {"regex": "www\\-[0-9]\\.allow\\.com"}}]}`
	}
	type want struct {
		status                 int
		missing, invalid, good uint64
	}
	for _, tc := range []struct {
		name              string
		policy            string
		method, authority string
		hdrs              []string
		want              want
	}{
		{"get", policy(100, 0), "GET", "localhost", []string{"origin", "cross"}, want{}},
		{"no origin, no host", policy(100, 0), "PUT", "", nil, want{status: 403, missing: 1}}, // missing, though equal to the missing target
		{"no origin", policy(100, 0), "PUT", "localhost", nil, want{status: 403, missing: 1, invalid: 1}},
		{"no destination", policy(100, 0), "PUT", "", []string{"origin", "localhost"}, want{status: 403, invalid: 1}},
		{"invalid origin", policy(100, 0), "PUT", "localhost", []string{"origin", "cross-origin"}, want{status: 403, invalid: 1}},
		{"valid origin", policy(100, 0), "PUT", "localhost", []string{"origin", "localhost"}, want{good: 1}},
		{"valid URL origin", policy(100, 0), "POST", "localhost:8080", []string{"origin", "https://localhost:8080"}, want{good: 1}},
		{"patch", policy(100, 0), "PATCH", "localhost", []string{"origin", "http://evil"}, want{status: 403, invalid: 1}},
		{"referer", policy(100, 0), "DELETE", "localhost", []string{"referer", "http://localhost/page"}, want{good: 1}},
		{"origin over referer", policy(100, 0), "DELETE", "localhost", []string{"origin", "http://evil", "referer", "http://localhost/page"}, want{status: 403, invalid: 1}},
		{"disabled", policy(0, 0), "PUT", "localhost", []string{"origin", "cross-origin"}, want{}},
		{"shadow invalid", policy(0, 100), "PUT", "localhost", []string{"origin", "cross-origin"}, want{invalid: 1}},
		{"shadow valid", policy(0, 100), "PUT", "localhost", []string{"origin", "localhost"}, want{good: 1}},
		{"enabled and shadow", policy(100, 100), "PUT", "localhost", []string{"origin", "cross-origin"}, want{status: 403, invalid: 1}},
		{"additional exact", policy(100, 0), "PUT", "localhost", []string{"origin", "additionalhost"}, want{good: 1}},
		{"additional regex", policy(100, 0), "PUT", "localhost", []string{"origin", "http://www-1.allow.com"}, want{good: 1}},
		{"additional regex mismatch", policy(100, 0), "PUT", "localhost", []string{"origin", "www.allow.com"}, want{status: 403, invalid: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p csrfv3.CsrfPolicy
			if err := protojson.Unmarshal([]byte(tc.policy), &p); err != nil {
				t.Fatal(err)
			}
			st := stats.NewStore()
			c, err := compile(&httpfilter.Context{Stats: st, StatPrefix: "http.t."}, &p, "p")
			if err != nil {
				t.Fatal(err)
			}
			cb := &fakeCallbacks{}
			f := c.NewFilter(cb).(*filter)
			h := &headers.Request{Method: tc.method, Authority: tc.authority, Scheme: "http", Path: "/"}
			for i := 0; i < len(tc.hdrs); i += 2 {
				h.Map.Add(tc.hdrs[i], tc.hdrs[i+1])
			}
			st0 := f.DecodeHeaders(h, false)
			if cb.status != tc.want.status || (tc.want.status == 403 && (cb.body != "Invalid origin" || cb.detail != "csrf_origin_mismatch" || st0 != httpfilter.StopIteration)) {
				t.Errorf("reply %d %q %q (status %v), want %d", cb.status, cb.body, cb.detail, st0, tc.want.status)
			}
			got := want{status: cb.status, missing: st.Counter("http.t.csrf.missing_source_origin").Value(),
				invalid: st.Counter("http.t.csrf.request_invalid").Value(), good: st.Counter("http.t.csrf.request_valid").Value()}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestPerRoute: the route's policy replaces the filter's.
func TestPerRoute(t *testing.T) {
	var off, on csrfv3.CsrfPolicy
	protojson.Unmarshal([]byte(`{"filter_enabled": {"default_value": {"numerator": 0}}}`), &off)
	protojson.Unmarshal([]byte(`{"filter_enabled": {"default_value": {"numerator": 100}}}`), &on)
	ctx := &httpfilter.Context{Stats: stats.NewStore()}
	c, err := compile(ctx, &off, "p")
	if err != nil {
		t.Fatal(err)
	}
	pr, err := compilePerRoute(ctx, &on, "r")
	if err != nil {
		t.Fatal(err)
	}
	cb := &fakeCallbacks{perRoute: pr}
	h := &headers.Request{Method: "POST", Authority: "a", Path: "/"}
	h.Map.Add("origin", "http://b")
	c.NewFilter(cb).(*filter).DecodeHeaders(h, true)
	if cb.status != 403 {
		t.Errorf("per-route policy not applied: status %d", cb.status)
	}
}
