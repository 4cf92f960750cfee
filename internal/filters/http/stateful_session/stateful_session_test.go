package stateful_session

import (
	"encoding/base64"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ssv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/stateful_session/v3"
	cookiev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/stateful_session/cookie/v3"
	headerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/stateful_session/header/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/type/http/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/headers"
)

func TestCookiePathMatch(t *testing.T) {
	for _, tc := range []struct {
		cookiePath, reqPath string
		want                bool
	}{
		{"", "/anything", true},
		{"/", "/anything", true},
		{"/foo/", "/foo/bar", true},
		{"/foo/", "/foo", false},
		{"/foo", "/foo", true},
		{"/foo", "/foo/bar", true},
		{"/foo", "/foo?x=1", true},
		{"/foo", "/foo#frag", true},
		{"/foo", "/foobar", false},
		{"/foo", "/bar", false},
	} {
		c := &cookieState{path: tc.cookiePath}
		if got := c.pathMatch(tc.reqPath); got != tc.want {
			t.Errorf("path %q, request %q: %v, want %v", tc.cookiePath, tc.reqPath, got, tc.want)
		}
	}
}

func protoCookie(addr string, expires int64) string {
	var b []byte
	if addr != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, addr)
	}
	if expires != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(expires))
	}
	return base64.StdEncoding.EncodeToString(b)
}

func TestCookieParse(t *testing.T) {
	c := &cookieState{name: "s", now: func() int64 { return 1000 }}
	for _, tc := range []struct {
		name, value, want string
	}{
		{"empty", "", ""},
		{"proto, no expiry", protoCookie("1.2.3.4:80", 0), "1.2.3.4:80"},
		{"proto, live", protoCookie("1.2.3.4:80", 1001), "1.2.3.4:80"},
		{"proto, expired", protoCookie("1.2.3.4:80", 999), ""},
		{"proto, no address", protoCookie("", 2000), ""},
		{"old plain form", base64.StdEncoding.EncodeToString([]byte("127.0.0.1:8080")), "127.0.0.1:8080"},
		{"bad base64", "%%%", ""},
	} {
		if got := c.parse(tc.value); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestCookieEncodeRoundTrip(t *testing.T) {
	for _, ttl := range []int64{0, 30} {
		c := &cookieState{name: "s", ttl: ttl, now: func() int64 { return 500 }}
		addr, exp, ok := parseCookieProto(c.encode("[::1]:9000"))
		if !ok || addr != "[::1]:9000" {
			t.Fatalf("ttl %d: %q %v", ttl, addr, ok)
		}
		if want := map[int64]int64{0: 0, 30: 530}[ttl]; exp != want {
			t.Errorf("ttl %d: expires %d, want %d", ttl, exp, want)
		}
	}
}

func TestSetCookieFormat(t *testing.T) {
	for _, tc := range []struct {
		c    cookieState
		want string
	}{
		{cookieState{name: "a"}, `a="v"; HttpOnly`},
		{cookieState{name: "a", ttl: 5, path: "/p"}, `a="v"; Max-Age=5; Path=/p; HttpOnly`},
		{cookieState{name: "a", attrs: []string{"SameSite=Lax", "Secure"}}, `a="v"; SameSite=Lax; Secure; HttpOnly`},
	} {
		if got := tc.c.setCookie("v"); got != tc.want {
			t.Errorf("%q, want %q", got, tc.want)
		}
	}
}

func TestCookieValue(t *testing.T) {
	for _, tc := range []struct {
		lines []string
		want  string
	}{
		{[]string{"a=1; s=xyz"}, "xyz"},
		{[]string{`s="quoted"`}, "quoted"},
		{[]string{"bad; s=2", "s=3"}, "2"},
		{[]string{"ss=1"}, ""},
	} {
		if got := cookieValue(tc.lines, "s"); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.lines, got, tc.want)
		}
	}
}

func TestSessionUpdate(t *testing.T) {
	c := &cookieState{name: "s", now: func() int64 { return 0 }}
	req := &headers.Request{Path: "/"}
	req.Map.Set("cookie", "s="+protoCookie("1.1.1.1:1", 0))
	s := c.create(req)
	if s.address != "1.1.1.1:1" {
		t.Fatalf("address %q", s.address)
	}
	var resp headers.Response
	s.update("1.1.1.1:1", &resp)
	if v := resp.Map.Values("set-cookie"); len(v) != 0 {
		t.Errorf("same host set %v", v)
	}
	s.update("2.2.2.2:2", &resp)
	v := resp.Map.Values("set-cookie")
	if len(v) != 1 || !strings.HasPrefix(v[0], `s="`+protoCookie("2.2.2.2:2", 0)+`"`) {
		t.Errorf("new host: %v", v)
	}

	hs := &headerState{name: "x-s"}
	req = &headers.Request{Path: "/"}
	req.Map.Set("x-s", base64.StdEncoding.EncodeToString([]byte("1.1.1.1:1")))
	s = hs.create(req)
	var hr headers.Response
	hr.Map.Set("x-s", "upstream's")
	s.update("3.3.3.3:3", &hr)
	if got := hr.Map.Values("x-s"); len(got) != 1 || got[0] != base64.StdEncoding.EncodeToString([]byte("3.3.3.3:3")) {
		t.Errorf("header update: %v", got)
	}
}

func TestCompile(t *testing.T) {
	cookieAny, _ := anypb.New(&cookiev3.CookieBasedSessionState{Cookie: &httpv3.Cookie{Name: "c", Ttl: durationpb.New(0)}})
	headerAny, _ := anypb.New(&headerv3.HeaderBasedSessionState{Name: "X-Session"})
	otherAny, _ := anypb.New(wrapperspb.String("x"))
	for _, tc := range []struct {
		name string
		cfg  *ssv3.StatefulSession
		err  string
	}{
		{"no session state", &ssv3.StatefulSession{}, ""},
		{"cookie", &ssv3.StatefulSession{SessionState: &corev3.TypedExtensionConfig{Name: "c", TypedConfig: cookieAny}}, ""},
		{"header", &ssv3.StatefulSession{Strict: true, SessionState: &corev3.TypedExtensionConfig{Name: "h", TypedConfig: headerAny}}, ""},
		{"other type", &ssv3.StatefulSession{SessionState: &corev3.TypedExtensionConfig{Name: "o", TypedConfig: otherAny}}, "not supported by legate"},
	} {
		sc, err := compileSession(nil, tc.cfg, "f", true)
		if tc.err == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "f.session_state.typed_config") {
			t.Errorf("%s: error %v, want %q at f.session_state.typed_config", tc.name, err, tc.err)
		}
		_ = sc
	}
	if sc, _ := compileSession(nil, &ssv3.StatefulSession{SessionState: &corev3.TypedExtensionConfig{Name: "h", TypedConfig: headerAny}}, "f", true); sc.factory.(*headerState).name != "x-session" {
		t.Errorf("header name not lower-cased")
	}
	rc, err := compilePerRoute(nil, &ssv3.StatefulSessionPerRoute{Override: &ssv3.StatefulSessionPerRoute_Disabled{Disabled: true}}, "r")
	if err != nil || !rc.(*RouteConfig).disabled {
		t.Errorf("disabled per route: %v %v", rc, err)
	}
}
