package oauth2

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	oauthv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/oauth2/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/tlsx"
)

// The expected values below were computed with openssl, independently of
// this package (openssl dgst -sha256 -hmac, openssl enc -aes-256-cbc).
func TestHMAC(t *testing.T) {
	secret := []byte("hmac-secret")
	const (
		raw = "wJlmo6LR0IE2FerEHZDrMN3XtmMdu70lFco1bvaUSRE="
		hx  = "YzA5OTY2YTNhMmQxZDA4MTM2MTVlYWM0MWQ5MGViMzBkZGQ3YjY2MzFkYmJiZDI1MTVjYTM1NmVmNjk0NDkxMQ=="
	)
	if got := encodeHMAC(secret, "example.com", "1700000000", "access", "id", "refresh"); got != raw {
		t.Errorf("encodeHMAC = %s, want %s", got, raw)
	}
	for _, tc := range []struct {
		name                                string
		mac, domain, expires, tok, id, refr string
		want                                bool
	}{
		{"base64 form", raw, "example.com", "1700000000", "access", "id", "refresh", true},
		{"legacy hex form", hx, "example.com", "1700000000", "access", "id", "refresh", true},
		{"other domain", raw, "example.org", "1700000000", "access", "id", "refresh", false},
		{"other expiry", raw, "example.com", "1700000001", "access", "id", "refresh", false},
		{"other token", raw, "example.com", "1700000000", "access2", "id", "refresh", false},
		{"token moved between fields", raw, "example.com", "1700000000", "access", "", "idrefresh", false},
		{"empty", "", "example.com", "1700000000", "access", "id", "refresh", false},
	} {
		if got := hmacValid(secret, tc.mac, tc.domain, tc.expires, tc.tok, tc.id, tc.refr); got != tc.want {
			t.Errorf("%s: hmacValid = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCSRFToken(t *testing.T) {
	secret := []byte("hmac-secret")
	tok := csrfToken(secret, "abcdef0123456789")
	if tok != "abcdef0123456789.YJRHazNREW2O3GCBZanYcTc57vdeRBb35B4mrxuP5yQ=" {
		t.Errorf("csrfToken = %s", tok)
	}
	for _, tc := range []struct {
		tok  string
		want bool
	}{
		{tok, true},
		{"abcdef0123456788.YJRHazNREW2O3GCBZanYcTc57vdeRBb35B4mrxuP5yQ=", false},
		{"abcdef0123456789", false},
		{csrfToken([]byte("other"), "abcdef0123456789"), false},
	} {
		if got := csrfTokenValid(secret, tc.tok); got != tc.want {
			t.Errorf("csrfTokenValid(%q) = %v, want %v", tc.tok, got, tc.want)
		}
	}
	if r := randomHex(); len(r) != 16 || strings.Trim(r, "0123456789abcdef") != "" {
		t.Errorf("randomHex = %q, want 16 hex digits", r)
	}
}

func TestEncryption(t *testing.T) {
	secret := []byte("hmac-secret")
	// IV 00..0f, "my-access-token", from openssl.
	const vector = "AAECAwQFBgcICQoLDA0OD4jzDmsI0ZyQnlOYY6p4h-E"
	for _, tc := range []struct {
		name, in string
		secret   []byte
		want     string
		wantErr  bool
	}{
		{"openssl vector", vector, secret, "my-access-token", false},
		{"padded base64url", vector + "=", secret, "my-access-token", false},
		{"too short", "AAECAwQFBgcICQoLDA0ODw", secret, "", true},
		{"not whole blocks", vector[:len(vector)-2], secret, "", true},
		{"plaintext token", "plain-token-value", secret, "", true},
	} {
		got, err := decrypt(tc.in, tc.secret)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%s: decrypt = %q, %v; want %q (error %v)", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
	for _, p := range []string{"", "x", "exactly-16-bytes", strings.Repeat("long token ", 40)} {
		e := encrypt(p, secret)
		if e == encrypt(p, secret) {
			t.Errorf("encrypt(%q) twice gave the same ciphertext: the IV is not random", p)
		}
		got, err := decrypt(e, secret)
		if err != nil || got != p {
			t.Errorf("round trip of %q: %q, %v", p, got, err)
		}
		if got, err := decrypt(e, []byte("other secret")); err == nil && got == p {
			t.Errorf("%q decrypted under another secret", p)
		}
	}
}

func TestState(t *testing.T) {
	st := state{URL: "https://app.example/a?b=\"c\"&d=é", CSRFToken: "n.m=", FlowID: "0123456789abcdef"}
	enc := encodeState(st)
	want := base64.RawURLEncoding.EncodeToString([]byte(`{"url":"https://app.example/a?b=\"c\"\u0026d=é","csrf_token":"n.m=","flow_id":"0123456789abcdef"}`))
	if enc != want {
		t.Errorf("encodeState = %s, want %s", enc, want)
	}
	for _, tc := range []struct {
		name, in string
		want     state
		err      error
	}{
		{"round trip", enc, st, nil},
		{"without flow id (older releases)", b64(`{"url":"https://h/","csrf_token":"x"}`), state{URL: "https://h/", CSRFToken: "x"}, nil},
		{"padded", b64(`{"url":"u","csrf_token":"c"}`) + "==", state{URL: "u", CSRFToken: "c"}, nil},
		{"no csrf token", b64(`{"url":"https://h/"}`), state{}, errStateFields},
		{"no url", b64(`{"csrf_token":"x"}`), state{}, errStateFields},
		{"not JSON", b64(`https://h/`), state{}, errStateJSON},
		{"not base64", "%%%", state{}, errStateJSON},
	} {
		got, _, err := decodeState(tc.in)
		if err != tc.err || err == nil && got != tc.want {
			t.Errorf("%s: decodeState = %+v, %v; want %+v, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestPKCE(t *testing.T) {
	if got := codeChallenge("verifier-abc"); got != "K5x6-41mFxTvpObzIPEdq05UvvzIql6sRCB8gV2ba04" {
		t.Errorf("codeChallenge = %s", got)
	}
	// RFC 7636 appendix B.
	if got := codeChallenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"); got != "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" {
		t.Errorf("RFC 7636 vector: %s", got)
	}
	if v := codeVerifier(); len(v) != 43 || v == codeVerifier() {
		t.Errorf("codeVerifier = %q, want 43 random characters", v)
	}
}

func TestCookies(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers []string
		want    string // the jar written back
	}{
		{"one header", []string{"a=1; b=2"}, "a=1; b=2"},
		{"several headers, first wins", []string{"a=1", "b=2; a=3"}, "a=1; b=2"},
		{"quoted value", []string{`a="x y"`}, "a=x y"},
		{"spaces and empty parts", []string{"  a=1;;b=; =c; d"}, "a=1; b="},
		{"value with =", []string{"tok=abc==; x=1"}, "tok=abc==; x=1"},
	} {
		h := &headers.Request{}
		for _, v := range tc.headers {
			h.Map.Add("cookie", v)
		}
		jar := parseCookies(h)
		jar.write(h)
		if got := h.Map.Joined("cookie"); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	h := &headers.Request{}
	h.Map.Add("cookie", "OauthNonce=legacy; OauthNonce.f1=new; CodeVerifier=v")
	jar := parseCookies(h)
	for _, tc := range []struct {
		base, flow, want string
		ok               bool
	}{
		{"OauthNonce", "f1", "new", true},
		{"OauthNonce", "f2", "legacy", true},
		{"OauthNonce", "", "legacy", true},
		{"CodeVerifier", "f1", "v", true},
		{"Other", "f1", "", false},
	} {
		if got, ok := flowCookie(jar, tc.base, tc.flow); got != tc.want || ok != tc.ok {
			t.Errorf("flowCookie(%s, %s) = %q %v, want %q %v", tc.base, tc.flow, got, ok, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct {
		name, base string
		want       bool
	}{{"OauthNonce", "OauthNonce", true}, {"OauthNonce.x", "OauthNonce", true}, {"OauthNonce.", "OauthNonce", false}, {"OauthNonceX", "OauthNonce", false}} {
		if matchesBase(tc.name, tc.base) != tc.want {
			t.Errorf("matchesBase(%s, %s) != %v", tc.name, tc.base, tc.want)
		}
	}
	for _, tc := range []struct{ name, path, dom, want string }{
		{"OauthHMAC", "/", "", "OauthHMAC=deleted; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT"},
		{"__Host-T", "/a", ";domain=x.com", "__Host-T=deleted; path=/a; expires=Thu, 01 Jan 1970 00:00:00 GMT;domain=x.com; Secure"},
	} {
		if got := deleteCookie(tc.name, tc.path, tc.dom); got != tc.want {
			t.Errorf("deleteCookie = %q, want %q", got, tc.want)
		}
	}
	for _, tc := range []struct {
		s    cookieSettings
		want string
	}{
		{cookieSettings{path: "/"}, ";path=/;Max-Age=60;secure;HttpOnly"},
		{cookieSettings{path: "/app", sameSite: ";SameSite=Strict", partitioned: true}, ";path=/app;Max-Age=60;secure;HttpOnly;SameSite=Strict;Partitioned"},
	} {
		if got := cookieTailOf(tc.s, "60"); got != tc.want {
			t.Errorf("cookieTail = %q, want %q", got, tc.want)
		}
	}
}

func TestEncodings(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"user", "user"},
		{"openid email", "openid%20email"},
		{"http://h:1/cb?x=1", "http%3A%2F%2Fh%3A1%2Fcb%3Fx%3D1"},
		{"a-b.c_d~e", "a-b.c_d~e"},
	} {
		if got := urlEncode(tc.in); got != tc.want {
			t.Errorf("urlEncode(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, reserved, want string }{
		{"http://h/cb?x=1&y", formReserved, "http%3A%2F%2Fh%2Fcb%3Fx%3D1%26y"},
		{"a b+c%", formReserved, "a b%2Bc%25"},
		{"a+b~", "", "a+b%7E"},
	} {
		if got := percentEncode(tc.in, tc.reserved); got != tc.want {
			t.Errorf("percentEncode(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	q := parseQueryRaw("z=1&a=2&a=3&m")
	q["client_id"] = []string{"c"}
	if got := queryString(q); got != "a=2&a=3&client_id=c&m=&z=1" {
		t.Errorf("queryString = %q", got)
	}
	jwt := func(hdr, payload string) string { return b64(hdr) + "." + b64(payload) + ".sig" }
	for _, tc := range []struct {
		tok  string
		want int64
	}{
		{jwt(`{"alg":"RS256"}`, `{"exp":1700000000}`), 1700000000},
		{jwt(`{"alg":"RS256"}`, `{"sub":"x"}`), 0},
		{jwt(`{"typ":"JWT"}`, `{"exp":1700000000}`), 0},
		{"opaque-refresh-token", 0},
		{jwt(`{"alg":"RS256"}`, `not json`), 0},
	} {
		if got := jwtExp(tc.tok); got != tc.want {
			t.Errorf("jwtExp(%q) = %d, want %d", tc.tok, got, tc.want)
		}
	}
	for _, tc := range []struct {
		url     string
		domains []string
		want    bool
	}{
		{"https://a.example.com/x", nil, true},
		{"https://a.example.com/x", []string{"*.example.com"}, true},
		{"https://example.com/x", []string{"*.example.com"}, false},
		{"https://EXAMPLE.com:8443/x", []string{"example.com"}, true},
		{"https://evil.com/x", []string{"example.com"}, false},
		{"/relative", []string{"example.com"}, false},
	} {
		if got := hostAllowed(tc.url, tc.domains); got != tc.want {
			t.Errorf("hostAllowed(%s, %v) = %v, want %v", tc.url, tc.domains, got, tc.want)
		}
	}
}

// TestCompile: fields Legate does not implement are refused by path;
// invalid combinations and missing secrets are errors.
func TestCompile(t *testing.T) {
	store := tlsx.NewStore(nil)
	defer store.Close()
	for _, n := range []string{"token", "hmac"} {
		if err := store.Set(&tlsv3.Secret{Name: n, Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{
			Secret: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "v"}}}}}, "", "s"); err != nil {
			t.Fatal(err)
		}
	}
	sds := func(sc *tlsv3.SdsSecretConfig, path string) (*tlsx.Secret, error) {
		if s := store.Get(sc.GetName()); s.Proto() != nil {
			return s, nil
		}
		return nil, errNoSecret
	}
	const base = `"token_endpoint": {"cluster": "auth", "uri": "auth/token", "timeout": "1s"},
		"authorization_endpoint": "https://auth.example/authorize", "redirect_uri": "https://app/cb",
		"redirect_path_matcher": {"path": {"exact": "/cb"}}, "signout_path": {"path": {"exact": "/out"}}`
	const creds = `"credentials": {"client_id": "c", "token_secret": {"name": "token"}, "hmac_secret": {"name": "hmac"}}`
	for _, tc := range []struct {
		name, json, wantErr string
	}{
		{"minimal", base + "," + creds, ""},
		{"no config", "", ""},
		{"forward_id_token", base + "," + creds + `, "forward_id_token": {"header": "x-id"}`, ""},
		{"forward_id_token on host", base + "," + creds + `, "forward_id_token": {"header": "Host"}`, "config.forward_id_token.header"},
		{"forward_id_token on a pseudo-header", base + "," + creds + `, "forward_id_token": {"header": ":path"}`, "config.forward_id_token.header"},
		{"forward_id_token keyed by pass-through", base + "," + creds + `, "forward_id_token": {"header": "X-Id"}, "pass_through_matcher": [{"name": "x-id", "present_match": true}]`, "config.pass_through_matcher[0]"},
		{"forward_id_token and bearer on authorization", base + "," + creds + `, "forward_id_token": {"header": "Authorization"}, "forward_bearer_token": true`, "at most one of"},
		{"token_cookie_chunking", base + "," + creds + `, "token_cookie_chunking": {}`, "config.token_cookie_chunking"},
		{"private_key_jwt", base + "," + creds + `, "auth_type": "PRIVATE_KEY_JWT", "private_key_jwt_config": {}`, "config.private_key_jwt_config"},
		{"retry_on unsupported", base + "," + creds + `, "retry_policy": {"retry_on": "retriable-4xx"}`, "config.retry_policy.retry_on"},
		{"retry_host_predicate", base + "," + creds + `, "retry_policy": {"retry_host_predicate": [{"name": "x"}]}`, "config.retry_policy.retry_host_predicate"},
		{"forward and preserve", base + "," + creds + `, "forward_bearer_token": true, "preserve_authorization_header": true`, "at most one of"},
		{"end session without openid", base + "," + creds + `, "end_session_endpoint": "https://auth/logout"`, "config.end_session_endpoint"},
		{"end session with openid", base + "," + creds + `, "end_session_endpoint": "https://auth/logout", "auth_scopes": ["openid"]`, ""},
		{"unknown secret", base + `, "credentials": {"client_id": "c", "token_secret": {"name": "nope"}, "hmac_secret": {"name": "hmac"}}`, "no such secret"},
		{"no token secret", base + `, "credentials": {"client_id": "c", "hmac_secret": {"name": "hmac"}}`, "config.credentials.token_secret"},
		{"tls client auth without token secret", base + `, "auth_type": "TLS_CLIENT_AUTH", "credentials": {"client_id": "c", "hmac_secret": {"name": "hmac"}}`, ""},
		{"bad authorization endpoint", strings.Replace(base, "https://auth.example/authorize", "not a url", 1) + "," + creds, "config.authorization_endpoint"},
	} {
		var m oauthv3.OAuth2
		js := "{}"
		if tc.json != "" {
			js = `{"config": {` + tc.json + `}}`
		}
		if err := protojson.Unmarshal([]byte(js), &m); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_, err := compile(&httpfilter.Context{Stats: stats.NewStore(), StatPrefix: "http.t.", SDS: sds}, &m, "f")
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want one naming %s", tc.name, err, tc.wantErr)
		}
	}
}

// TestParseTokens: the token response as Envoy's OAuthResponse reads it.
func TestParseTokens(t *testing.T) {
	c := &filterConfig{defaultExpiresIn: 30 * time.Second}
	noDefault := &filterConfig{}
	for _, tc := range []struct {
		name   string
		c      *filterConfig
		status int
		body   string
		want   tokens
		reason string
	}{
		{"full", c, 200, `{"access_token":"a","id_token":"i","refresh_token":"r","expires_in":3600,"token_type":"Bearer"}`,
			tokens{access: "a", id: "i", refresh: "r", expiresIn: time.Hour}, ""},
		{"default expiry", c, 200, `{"access_token":"a"}`, tokens{access: "a", expiresIn: 30 * time.Second}, ""},
		{"no expiry at all", noDefault, 200, `{"access_token":"a"}`, tokens{}, "No default or explicit access token expiration found in the token exchange response"},
		{"zero expiry", c, 200, `{"access_token":"a","expires_in":0}`, tokens{}, "No default or explicit access token expiration found in the token exchange response"},
		{"no access token", c, 200, `{"id_token":"i"}`, tokens{}, "No access token found in the token exchange response"},
		{"not JSON", c, 200, `access_token=a`, tokens{}, "Failed to parse oauth response body"},
		{"negative expiry", c, 200, `{"access_token":"a","expires_in":-5}`, tokens{}, "Failed to parse oauth response body"},
		{"error status", c, 400, `{"error":"invalid_grant"}`, tokens{}, "Failed to get access token"},
	} {
		got, err := tc.c.parseTokens(tc.status, []byte(tc.body), "Failed to get access token")
		switch {
		case tc.reason == "" && (err != nil || got != tc.want):
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		case tc.reason != "" && (err == nil || err.reason != tc.reason):
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.reason)
		}
	}
}

var errNoSecret = errorString("no such secret")

type errorString string

func (e errorString) Error() string { return string(e) }
