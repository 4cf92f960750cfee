package api_key_auth

import (
	"strings"
	"testing"

	apikeyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/api_key_auth/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
)

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ js, err string }{
		{`{"key_sources": [{}]}`, "c.key_sources[0]: One of 'header'/'query'/'cookie' must be set."},
		{`{"credentials": [{"key": "k", "client": "a"}, {"key": "k", "client": "b"}]}`, "c.credentials[1]: Duplicated credential key: 'k'"},
	} {
		var c apikeyv3.ApiKeyAuth
		if err := protojson.Unmarshal([]byte(tc.js), &c); err != nil {
			t.Fatal(err)
		}
		_, err := compile(&httpfilter.Context{Stats: stats.NewStore()}, &c, "c")
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want %q", tc.js, err, tc.err)
		}
		var r apikeyv3.ApiKeyAuthPerRoute
		protojson.Unmarshal([]byte(tc.js), &r)
		if _, err := compilePerRoute(nil, &r, "c"); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("per route %s: error %v, want %q", tc.js, err, tc.err)
		}
	}
}

func TestQueryAndCookies(t *testing.T) {
	h := &headers.Request{Path: "/p?z=1&api%5Fkey=a%2Fb&api_key=second&flag&x=%zz"}
	if got := (source{query: "api_key"}).key(h); got != "a/b" {
		t.Errorf("query key %q, want the first, decoded", got)
	}
	if got := removeQueryParam(h.Path, "api_key"); got != "/p?flag=&x=%zz&z=1" {
		t.Errorf("removeQueryParam = %q", got)
	}
	if got := removeQueryParam("/p?api_key=1", "api_key"); got != "/p" {
		t.Errorf("removeQueryParam of the only parameter = %q", got)
	}
	h.Map.Add("cookie", `a=1; key="quoted"; bad; b=2`)
	h.Map.Add("cookie", "c=3")
	if got := (source{cookie: "key"}).key(h); got != "quoted" {
		t.Errorf("cookie key %q", got)
	}
	removeCookie(&h.Map, "key")
	if got := h.Map.Values("cookie"); len(got) != 1 || got[0] != "a=1; b=2; c=3" {
		t.Errorf("cookies after removal: %q", got)
	}
	removeCookie(&h.Map, "a")
	removeCookie(&h.Map, "b")
	removeCookie(&h.Map, "c")
	if h.Map.Has("cookie") {
		t.Error("an empty cookie header stays")
	}
	h.Map.Set("authorization", "Bearer tok")
	if got := (source{header: "authorization"}).key(h); got != "tok" {
		t.Errorf("header key %q", got)
	}
}

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

func TestDecision(t *testing.T) {
	const filterJS = `{"credentials": [{"key": "k1", "client": "c1"}, {"key": "k2", "client": "c2"}],
	  "key_sources": [{"header": "X-Api-Key"}, {"query": "api_key"}, {"cookie": "api_key"}],
	  "forwarding": {"header": "x-client-id", "hide_credentials": true}}`
	for _, tc := range []struct {
		name, route, path string
		hdrs              []string
		status            int
		detail, client    string
	}{
		{"no key", "", "/", nil, 401, "missing_api_key", ""},
		{"unknown key", "", "/", []string{"x-api-key", "nope"}, 401, "unkonwn_api_key", ""},
		{"header", "", "/", []string{"x-api-key", "Bearer k1"}, 0, "", "c1"},
		{"query", "", "/?api_key=k2", nil, 0, "", "c2"},
		{"cookie", "", "/", []string{"cookie", "api_key=k1"}, 0, "", "c1"},
		{"empty header falls through", "", "/?api_key=k2", []string{"x-api-key", ""}, 0, "", "c2"},
		{"route allowed", `{"allowed_clients": ["c2"]}`, "/", []string{"x-api-key", "k2"}, 0, "", ""},
		{"route forbidden", `{"allowed_clients": ["c2"]}`, "/", []string{"x-api-key", "k1"}, 403, "client_not_allowed", ""},
		{"route credentials", `{"credentials": [{"key": "r", "client": "rc"}], "forwarding": {"header": "x-rc"}}`, "/", []string{"x-api-key", "k1"}, 401, "unkonwn_api_key", ""},
		{"route sources", `{"key_sources": [{"header": "x-other"}], "forwarding": {"header": "x-client-id"}}`, "/", []string{"x-other", "k2"}, 0, "", "c2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c apikeyv3.ApiKeyAuth
			if err := protojson.Unmarshal([]byte(filterJS), &c); err != nil {
				t.Fatal(err)
			}
			st := stats.NewStore()
			fc, err := compile(&httpfilter.Context{Stats: st, StatPrefix: "http.t."}, &c, "c")
			if err != nil {
				t.Fatal(err)
			}
			cb := &fakeCallbacks{}
			if tc.route != "" {
				var r apikeyv3.ApiKeyAuthPerRoute
				if err := protojson.Unmarshal([]byte(tc.route), &r); err != nil {
					t.Fatal(err)
				}
				if cb.perRoute, err = compilePerRoute(nil, &r, "r"); err != nil {
					t.Fatal(err)
				}
			}
			h := &headers.Request{Method: "GET", Path: tc.path}
			for i := 0; i < len(tc.hdrs); i += 2 {
				h.Map.Add(tc.hdrs[i], tc.hdrs[i+1])
			}
			fc.NewFilter(cb).(*filter).DecodeHeaders(h, true)
			if cb.status != tc.status || cb.detail != tc.detail {
				t.Fatalf("reply %d %q, want %d %q", cb.status, cb.detail, tc.status, tc.detail)
			}
			wantBody := map[int]string{0: "", 401: "Client authentication failed.", 403: "Client is forbidden."}[tc.status]
			if cb.body != wantBody {
				t.Errorf("body %q, want %q", cb.body, wantBody)
			}
			if got := h.Map.Get("x-client-id"); got != tc.client {
				t.Errorf("x-client-id %q, want %q", got, tc.client)
			}
			if tc.status == 0 && tc.route == "" && (h.Map.Has("x-api-key") || strings.Contains(h.Path, "api_key") || h.Map.Has("cookie")) {
				t.Errorf("hide_credentials left the key: %q %v", h.Path, h.Map.Fields())
			}
			counts := [3]uint64{st.Counter("http.t.api_key_auth.allowed").Value(), st.Counter("http.t.api_key_auth.unauthorized").Value(), st.Counter("http.t.api_key_auth.forbidden").Value()}
			want := map[int][3]uint64{0: {1, 0, 0}, 401: {0, 1, 0}, 403: {0, 0, 1}}[tc.status]
			if counts != want {
				t.Errorf("allowed/unauthorized/forbidden %v, want %v", counts, want)
			}
		})
	}
}
