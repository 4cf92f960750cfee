package basic_auth

import (
	"encoding/base64"
	"strings"
	"testing"

	basicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/basic_auth/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
)

// {SHA} of "password" (htpasswd -s).
const passwordSHA = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="

func TestParseHtpasswd(t *testing.T) {
	for _, tc := range []struct {
		text string
		want int    // users
		err  string // "" for none
	}{
		{"", 0, ""},
		{"# comment\n\nuser1:" + passwordSHA + "\nuser2:" + passwordSHA + "\n", 2, ""},
		{"user1", 0, "username:password is expected"},
		{":" + passwordSHA, 0, "empty user name or password"},
		{"user1:", 0, "empty user name or password"},
		{"user1:" + passwordSHA + "\nuser1:" + passwordSHA, 0, "duplicate user 'user1'"},
		{"user1:$apr1$salt$hash", 0, "please use {SHA} for 'user1'"},
		{"user1:{SHA}abc", 0, "invalid SHA hash length for 'user1'"},
		// Envoy does not trim: a CRLF line is one character too long.
		{"user1:" + passwordSHA + "\r\n", 0, "invalid SHA hash length"},
		{" # not a comment", 0, "username:password is expected"},
	} {
		u, err := parseHtpasswd(tc.text)
		if tc.err == "" {
			if err != nil || len(u) != tc.want {
				t.Errorf("%q: %d users, %v; want %d", tc.text, len(u), err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: error %v, want %q", tc.text, err, tc.err)
		}
	}
	u, _ := parseHtpasswd("user1:" + passwordSHA)
	if !u.valid("user1", "password") || u.valid("user1", "Password") || u.valid("user2", "password") {
		t.Error("valid does not check the SHA-1 of the password")
	}
}

func TestDecodeWithoutPadding(t *testing.T) {
	for in, want := range map[string]string{
		"dXNlcjE6cGFzc3dvcmQ=": "user1:password",
		"dXNlcjE6cGFzc3dvcmQ":  "user1:password",
		"YQ":                   "a",
		"":                     "",
		"!!!!":                 "",
	} {
		if got := decodeWithoutPadding(in); got != want {
			t.Errorf("decodeWithoutPadding(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOriginalURI(t *testing.T) {
	long := "/" + strings.Repeat("a", 300)
	for _, tc := range []struct {
		h    *headers.Request
		want string
	}{
		{&headers.Request{Scheme: "https", Authority: "example.com", Path: "/p?q=1"}, "https://example.com/p?q=1"},
		{&headers.Request{Scheme: "http", Authority: "h", Path: long}, "http://h" + long[:256]},
		{&headers.Request{Scheme: "http", Authority: "h"}, ""},
	} {
		if got := originalURI(tc.h); got != tc.want {
			t.Errorf("originalURI = %q, want %q", got, tc.want)
		}
	}
	h := &headers.Request{Scheme: "http", Authority: "h", Path: "/new"}
	h.Map.Add("x-envoy-original-path", "/old")
	if got := originalURI(h); got != "http://h/old" {
		t.Errorf("originalURI after a rewrite = %q", got)
	}
}

type fakeCallbacks struct {
	httpfilter.Callbacks
	perRoute     any
	status       int
	body, detail string
	hdrs         []httpfilter.HeaderValue
}

func (f *fakeCallbacks) PerRouteConfig() any { return f.perRoute }
func (f *fakeCallbacks) SendLocalReply(status int, body string, r httpfilter.LocalReply) {
	f.status, f.body, f.detail, f.hdrs = status, body, r.Details, r.Headers
}

func TestDecision(t *testing.T) {
	var c basicv3.BasicAuth
	if err := protojson.Unmarshal([]byte(`{"users": {"inline_string": "user1:`+passwordSHA+`"}, "forward_username_header": "X-User"}`), &c); err != nil {
		t.Fatal(err)
	}
	st := stats.NewStore()
	fc, err := compile(&httpfilter.Context{Stats: st, StatPrefix: "http.p."}, &c, "c")
	if err != nil {
		t.Fatal(err)
	}
	var r basicv3.BasicAuthPerRoute
	if err := protojson.Unmarshal([]byte(`{"users": {"inline_string": "user2:`+passwordSHA+`"}, "realm": "r"}`), &r); err != nil {
		t.Fatal(err)
	}
	rc, err := compilePerRoute(nil, &r, "r")
	if err != nil {
		t.Fatal(err)
	}
	creds := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name, auth    string
		route         any
		status        int
		detail, realm string
		forwardedUser string
	}{
		{"missing", "", nil, 401, "no_credential_for_basic_auth", "http://h/p", ""},
		{"scheme", "Digest x", nil, 401, "invalid_scheme_for_basic_auth", "http://h/p", ""},
		{"lower-case scheme", "basic " + base64.StdEncoding.EncodeToString([]byte("user1:password")), nil, 401, "invalid_scheme_for_basic_auth", "http://h/p", ""},
		{"format", creds("user1"), nil, 401, "invalid_format_for_basic_auth", "http://h/p", ""},
		{"bad base64", "Basic %%%", nil, 401, "invalid_format_for_basic_auth", "http://h/p", ""},
		{"password", creds("user1:nope"), nil, 401, "invalid_credential_for_basic_auth", "http://h/p", ""},
		{"ok", creds("user1:password"), nil, 0, "", "", "user1"},
		{"colon in password", creds("user1:password:x"), nil, 401, "invalid_credential_for_basic_auth", "http://h/p", ""},
		{"route users", creds("user1:password"), rc, 401, "invalid_credential_for_basic_auth", "r", ""},
		{"route ok", creds("user2:password"), rc, 0, "", "", "user2"},
	} {
		cb := &fakeCallbacks{perRoute: tc.route}
		h := &headers.Request{Method: "GET", Scheme: "http", Authority: "h", Path: "/p"}
		if tc.auth != "" {
			h.Map.Add("authorization", tc.auth)
		}
		fc.NewFilter(cb).(*filter).DecodeHeaders(h, true)
		if cb.status != tc.status || cb.detail != tc.detail {
			t.Errorf("%s: %d %q, want %d %q", tc.name, cb.status, cb.detail, tc.status, tc.detail)
		}
		if tc.status != 0 && (len(cb.hdrs) != 1 || cb.hdrs[0].Key != "www-authenticate" || cb.hdrs[0].Value != `Basic realm="`+tc.realm+`"`) {
			t.Errorf("%s: reply headers %v, want realm %q", tc.name, cb.hdrs, tc.realm)
		}
		if got := h.Map.Get("x-user"); got != tc.forwardedUser {
			t.Errorf("%s: x-user %q, want %q", tc.name, got, tc.forwardedUser)
		}
	}
	if v, _ := st.Value("http.p.basic_auth.allowed"); v != 2 {
		t.Errorf("allowed = %d, want 2", v)
	}
	if v, _ := st.Value("http.p.basic_auth.denied"); v != 8 {
		t.Errorf("denied = %d, want 8", v)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ js, err string }{
		{`{}`, "c.users: users is required"},
		{`{"users": {"inline_string": ""}}`, "c.users: DataSource cannot be empty"},
		{`{"users": {"inline_string": "u"}}`, "c.users: basic auth: invalid htpasswd format"},
		{`{"users": {"filename": "/nonexistent/htpasswd"}}`, "c.users.filename"},
		{`{"users": {"inline_string": "u:` + passwordSHA + `"}, "allow_missing": true}`, "c.allow_missing"},
		{`{"users": {"inline_string": "u:` + passwordSHA + `"}, "emit_dynamic_metadata": true}`, "c.emit_dynamic_metadata"},
	} {
		var c basicv3.BasicAuth
		if err := protojson.Unmarshal([]byte(tc.js), &c); err != nil {
			t.Fatal(err)
		}
		_, err := compile(&httpfilter.Context{Stats: stats.NewStore()}, &c, "c")
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want %q", tc.js, err, tc.err)
		}
	}
	// A route may have no users at all (everyone is denied there).
	if _, err := compilePerRoute(nil, &basicv3.BasicAuthPerRoute{}, "r"); err != nil {
		t.Errorf("empty per-route config: %v", err)
	}
}
