// OAuth2 authorization code flow: envoy.filters.http.oauth2 against a real
// authorization server (github.com/go-oauth2/oauth2) on loopback.

package features_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-oauth2/oauth2/v4"
	"github.com/go-oauth2/oauth2/v4/errors"
	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/models"
	"github.com/go-oauth2/oauth2/v4/server"
	"github.com/go-oauth2/oauth2/v4/store"

	"github.com/legateproxy/legate/internal/testutil"
)

// authServer is an OAuth 2.0 authorization server on loopback: /authorize
// grants every request to user alice (PKCE required), /token exchanges
// codes and refresh tokens for client "legate" with secret "s3cret", the
// client authenticating in the form body or with HTTP Basic.
type authServer struct {
	URL      string
	addr     string
	tokens   atomic.Int64 // token requests answered
	lastAuth atomic.Value // the last token request's Authorization header
	failNext atomic.Int64 // token requests still to answer 503
}

func startAuthServer(t *testing.T) *authServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &authServer{addr: ln.Addr().String()}
	a.URL = "http://" + a.addr
	a.lastAuth.Store("")

	manager := manage.NewDefaultManager()
	manager.SetAuthorizeCodeTokenCfg(&manage.Config{AccessTokenExp: time.Hour, RefreshTokenExp: 24 * time.Hour, IsGenerateRefresh: true})
	manager.SetRefreshTokenCfg(&manage.RefreshingConfig{IsGenerateRefresh: true, IsRemoveAccess: true, IsRemoveRefreshing: true})
	manager.MustTokenStorage(store.NewMemoryTokenStore())
	clients := store.NewClientStore()
	// Domain bounds the redirect_uri hosts the server accepts.
	clients.Set("legate", &models.Client{ID: "legate", Secret: "s3cret", Domain: "http://127.0.0.1"})
	manager.MapClientStorage(clients)
	manager.SetValidateURIHandler(func(base, redirect string) error {
		// The proxy listens on a port chosen at start: the host decides.
		b, _ := url.Parse(base)
		r, err := url.Parse(redirect)
		if err != nil || r.Scheme != b.Scheme || r.Hostname() != b.Hostname() || r.RawQuery != "" {
			return errors.ErrInvalidRedirectURI
		}
		return nil
	})

	srv := server.NewServer(&server.Config{
		TokenType:                   "Bearer",
		AllowedResponseTypes:        []oauth2.ResponseType{oauth2.Code},
		AllowedGrantTypes:           []oauth2.GrantType{oauth2.AuthorizationCode, oauth2.Refreshing},
		AllowedCodeChallengeMethods: []oauth2.CodeChallengeMethod{oauth2.CodeChallengeS256},
		ForcePKCE:                   true,
	}, manager)
	srv.SetInternalErrorHandler(func(err error) *errors.Response {
		t.Logf("authorization server: %v", err)
		return nil
	})
	// An OpenID Connect ID token (a JWT whose exp is half an hour away;
	// the signature is not checked by the proxy).
	srv.SetExtensionFieldsHandler(func(oauth2.TokenInfo) map[string]interface{} {
		enc := base64.RawURLEncoding.EncodeToString
		payload := fmt.Sprintf(`{"sub":"alice","exp":%d}`, time.Now().Add(30*time.Minute).Unix())
		return map[string]interface{}{"id_token": enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(payload)) + ".c2ln"}
	})
	srv.SetUserAuthorizationHandler(func(http.ResponseWriter, *http.Request) (string, error) { return "alice", nil })
	srv.SetClientInfoHandler(func(r *http.Request) (string, string, error) {
		if id, secret, ok := r.BasicAuth(); ok {
			return id, secret, nil
		}
		return server.ClientFormHandler(r)
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/authorize", func(w http.ResponseWriter, r *http.Request) {
		if err := srv.HandleAuthorizeRequest(w, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		a.lastAuth.Store(r.Header.Get("Authorization"))
		a.tokens.Add(1)
		if a.failNext.Add(-1) >= 0 {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		srv.HandleTokenRequest(w, r)
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Shutdown(context.Background()) })
	return a
}

// oauthConfig is an OAuth2Config (flow YAML) for the authorization
// server, with extra fields appended.
func oauthConfig(a *authServer, extra string) string {
	return `{token_endpoint: {cluster: auth, uri: "` + a.addr + `/token", timeout: 3s},
		    authorization_endpoint: "` + a.URL + `/authorize",
		    redirect_uri: "%REQ(x-forwarded-proto)%://%REQ(:authority)%/callback",
		    redirect_path_matcher: {path: {exact: /callback}},
		    signout_path: {path: {exact: /signout}},
		    forward_bearer_token: true,
		    pass_through_matcher: [{name: x-pass, string_match: {exact: "yes"}}],
		    deny_redirect_matcher: [{name: x-requested-with, string_match: {exact: XMLHttpRequest}}],
		    credentials: {client_id: legate, token_secret: {name: token}, hmac_secret: {name: hmac}}` + extra + `}`
}

// oauthCfg is a proxy with the oauth2 filter in front of the upstream,
// its token endpoint's cluster at tokenAddr; filterBody is the OAuth2
// message's fields and routes the virtual host's routes (a catch-all to
// the upstream when empty).
func oauthCfg(upAddr, tokenAddr, filterBody string, routes ...string) cfg {
	if len(routes) == 0 {
		routes = []string{"{match: {prefix: /}, route: {cluster: up}}"}
	}
	return cfg{
		hcm: `http_filters: [{name: envoy.filters.http.oauth2, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.oauth2.v3.OAuth2` + filterBody + `}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts:   vhost(routes...),
		clusters: "[" + staticCluster("up", "", upAddr) + ", " + staticCluster("auth", "", tokenAddr) + "]",
		extra: `  secrets:
  - {name: token, generic_secret: {secret: {inline_string: s3cret}}}
  - {name: hmac, generic_secret: {secret: {inline_string: the-hmac-secret}}}
`,
	}
}

// setCookies maps the Set-Cookie values of a response by cookie name.
func setCookies(h http.Header) map[string]*http.Cookie {
	out := map[string]*http.Cookie{}
	for _, c := range (&http.Response{Header: h}).Cookies() {
		out[c.Name] = c
	}
	return out
}

func cookieHeader(cs ...*http.Cookie) string {
	var parts []string
	for _, c := range cs {
		parts = append(parts, c.Name+"="+c.Value)
	}
	return strings.Join(parts, "; ")
}

// startLogin requests path without a session and returns the redirect's
// Location and cookies.
func startLogin(t *testing.T, c *http.Client, p *testutil.Proxy, path string) (*url.URL, map[string]*http.Cookie) {
	t.Helper()
	code, h, body := testutil.Get(t, c, p.URL("http", path))
	if code != 302 {
		t.Fatalf("GET %s without a session: %d %q, want 302", path, code, body)
	}
	loc, err := url.Parse(h.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return loc, setCookies(h)
}

// login runs the whole flow for path and returns the session cookies.
func login(t *testing.T, c *http.Client, p *testutil.Proxy, path string) map[string]*http.Cookie {
	t.Helper()
	loc, flow := startLogin(t, c, p, path)
	// The authorization server grants and redirects to redirect_uri.
	code, h, body := testutil.Get(t, c, loc.String())
	if code != 302 {
		t.Fatalf("authorize: %d %q", code, body)
	}
	cb := h.Get("Location")
	if !strings.HasPrefix(cb, p.URL("http", "/callback?")) {
		t.Fatalf("authorization server redirected to %q, want the proxy's /callback", cb)
	}
	var send []*http.Cookie
	for _, ck := range flow {
		send = append(send, ck)
	}
	code, h, body = testutil.Get(t, c, cb, "cookie", cookieHeader(send...))
	if code != 302 || h.Get("Location") != p.URL("http", path) {
		t.Fatalf("callback: %d location %q %q, want 302 to %s", code, h.Get("Location"), body, p.URL("http", path))
	}
	return setCookies(h)
}

// TestOAuth2Flow: an unauthenticated request is redirected to the
// authorization endpoint with client_id, scope "user", response_type
// code, the formatted redirect_uri, a PKCE S256 challenge and a state
// (base64url JSON with the original URL and the CSRF token that the
// OauthNonce cookie holds); the callback exchanges the code at the token
// endpoint (a real server checking the client secret, redirect_uri and
// code verifier), sets BearerToken, OauthHMAC, OauthExpires, RefreshToken
// and IdToken (its Max-Age from the JWT's exp) and redirects to the
// original URL; the session then reaches the upstream with Authorization:
// Bearer, the ID token in forward_id_token's header and without the
// flow's cookies;
// a refresh token the server refuses starts over; pass_through_matcher
// skips the filter; deny_redirect_matcher answers 401; signout_path clears
// the cookies; an expired session is refreshed with its refresh token in
// line; the oauth_* stats count.
func TestOAuth2Flow(t *testing.T) {
	a := startAuthServer(t)
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	p := start(t, oauthCfg(up.Addr, a.addr, ", config: "+oauthConfig(a, ", forward_id_token: {header: x-id-token}")))
	c := testutil.Client()

	// The redirect to the authorization server.
	loc, flow := startLogin(t, c, p, "/app?x=1")
	q := loc.Query()
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != a.URL+"/authorize" {
		t.Errorf("redirect to %s, want %s/authorize", got, a.URL)
	}
	for k, want := range map[string]string{"client_id": "legate", "scope": "user", "response_type": "code",
		"redirect_uri": p.URL("http", "/callback"), "code_challenge_method": "S256"} {
		if q.Get(k) != want {
			t.Errorf("query %s = %q, want %q (location %s)", k, q.Get(k), want, loc)
		}
	}
	if len(q.Get("code_challenge")) != 43 {
		t.Errorf("code_challenge %q is not a base64url SHA-256", q.Get("code_challenge"))
	}
	raw, err := base64.RawURLEncoding.DecodeString(q.Get("state"))
	if err != nil {
		t.Fatalf("state %q is not base64url: %v", q.Get("state"), err)
	}
	var st struct {
		URL       string `json:"url"`
		CSRFToken string `json:"csrf_token"`
		FlowID    string `json:"flow_id"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("state %s is not JSON: %v", raw, err)
	}
	if st.URL != p.URL("http", "/app?x=1") || st.FlowID == "" {
		t.Errorf("state = %s, want the original URL and a flow id", raw)
	}
	nonce := flow["OauthNonce."+st.FlowID]
	if nonce == nil || nonce.Value != st.CSRFToken || !nonce.HttpOnly || !nonce.Secure || flow["OauthNonce"] == nil {
		t.Errorf("nonce cookies %v do not hold the state's CSRF token %q", flow, st.CSRFToken)
	}
	if flow["CodeVerifier."+st.FlowID] == nil {
		t.Errorf("no code verifier cookie for flow %s: %v", st.FlowID, flow)
	}
	if up.Hits() != 0 {
		t.Fatalf("an unauthenticated request reached the upstream")
	}

	// The whole flow, then an authenticated request.
	sess := login(t, c, p, "/app?x=1")
	for _, n := range []string{"BearerToken", "OauthHMAC", "OauthExpires", "RefreshToken", "IdToken"} {
		if sess[n] == nil || sess[n].Value == "" {
			t.Fatalf("callback did not set %s: %v", n, sess)
		}
	}
	// The ID token's cookie lives as its exp claim says, the access
	// token's as expires_in (an hour).
	if id, bt := sess["IdToken"].MaxAge, sess["BearerToken"].MaxAge; id < 1700 || id > 1800 || bt < 3590 || bt > 3600 {
		t.Errorf("Max-Age: IdToken %d (want about 1800), BearerToken %d (want 3600)", id, bt)
	}
	if sess["OauthNonce"] == nil || sess["OauthNonce"].Value != "deleted" {
		t.Errorf("callback did not delete the nonce cookie: %v", sess["OauthNonce"])
	}
	if a.lastAuth.Load() != "" {
		t.Errorf("URL_ENCODED_BODY sent Authorization %q", a.lastAuth.Load())
	}
	session := cookieHeader(sess["BearerToken"], sess["OauthHMAC"], sess["OauthExpires"], sess["RefreshToken"], sess["IdToken"])
	code, _, body := testutil.Get(t, c, p.URL("http", "/app?x=1"), "cookie", "theme=dark; "+session, "authorization", "Bearer forged",
		"x-id-token", "forged")
	if code != 200 || !strings.Contains(body, "header:authorization=Bearer ") || strings.Contains(body, "forged") {
		t.Fatalf("authenticated request: %d\n%s", code, body)
	}
	token := strings.TrimPrefix(lineWith(body, "header:authorization="), "header:authorization=Bearer ")
	if token == "" || strings.Contains(sess["BearerToken"].Value, token) {
		t.Errorf("token %q forwarded; the cookie %q should hold it encrypted", token, sess["BearerToken"].Value)
	}
	if id := lineWith(body, "header:x-id-token="); strings.Count(id, ".") != 2 || strings.Contains(body, "forged") {
		t.Errorf("forward_id_token: upstream got %q, want the ID token", id)
	}
	if ck := lineWith(body, "header:cookie="); !strings.Contains(ck, "theme=dark") || !strings.Contains(ck, "BearerToken="+token) ||
		strings.Contains(ck, "OauthHMAC") || strings.Contains(ck, "RefreshToken") {
		t.Errorf("upstream cookies %q: want theme and the decrypted BearerToken, no HMAC or refresh token", ck)
	}

	// A refresh token the server refuses starts the flow over.
	code, h, _ := testutil.Get(t, c, p.URL("http", "/app"), "cookie", "RefreshToken=not-a-refresh-token")
	if code != 302 || !strings.HasPrefix(h.Get("Location"), a.URL+"/authorize?") {
		t.Errorf("refused refresh: %d location %q, want a redirect to the authorization server", code, h.Get("Location"))
	}

	// pass_through_matcher.
	hits := up.Hits()
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/open"), "x-pass", "yes"); code != 200 || up.Hits() != hits+1 {
		t.Errorf("pass-through: %d, want 200 from the upstream", code)
	}

	// deny_redirect_matcher.
	if code, _, body := testutil.Get(t, c, p.URL("http", "/api"), "x-requested-with", "XMLHttpRequest"); code != 401 || body != "OAuth flow failed." {
		t.Errorf("deny redirect: %d %q, want 401 OAuth flow failed.", code, body)
	}

	// Sign out.
	code, h, _ = testutil.Get(t, c, p.URL("http", "/signout"), "cookie", session)
	gone := setCookies(h)
	if code != 302 || h.Get("Location") != p.URL("http", "/") {
		t.Errorf("signout: %d location %q, want 302 to /", code, h.Get("Location"))
	}
	for _, n := range []string{"BearerToken", "OauthHMAC", "OauthExpires", "RefreshToken", "IdToken"} {
		if gone[n] == nil || gone[n].Value != "deleted" {
			t.Errorf("signout did not delete %s: %v", n, gone[n])
		}
	}

	// Refresh: a session whose access token is gone (no valid HMAC) but
	// that holds a refresh token is renewed in line.
	tokensBefore := a.tokens.Load()
	code, h, body = testutil.Get(t, c, p.URL("http", "/refresh"), "cookie", cookieHeader(sess["RefreshToken"]))
	if code != 200 || !strings.Contains(body, "path=/refresh\n") {
		t.Fatalf("refresh: %d\n%s", code, body)
	}
	newToken := strings.TrimPrefix(lineWith(body, "header:authorization="), "header:authorization=Bearer ")
	if newToken == "" || newToken == token || a.tokens.Load() != tokensBefore+1 {
		t.Errorf("refresh forwarded token %q (old %q) after %d token requests", newToken, token, a.tokens.Load()-tokensBefore)
	}
	renewed := setCookies(h)
	if renewed["BearerToken"] == nil || renewed["OauthHMAC"] == nil || renewed["RefreshToken"] == nil || renewed["IdToken"] == nil {
		t.Fatalf("refresh did not set the new session: %v", h.Values("Set-Cookie"))
	}
	code, _, body = testutil.Get(t, c, p.URL("http", "/after"), "cookie",
		cookieHeader(renewed["BearerToken"], renewed["OauthHMAC"], renewed["OauthExpires"], renewed["RefreshToken"], renewed["IdToken"]))
	if code != 200 || !strings.Contains(body, "header:authorization=Bearer "+newToken+"\n") {
		t.Errorf("renewed session: %d\n%s", code, body)
	}

	for name, want := range map[string]int64{
		"http.ingress.oauth_unauthorized_rq":      3, // two logins and the refused refresh
		"http.ingress.oauth_passthrough":          1,
		"http.ingress.oauth_failure":              1, // deny_redirect
		"http.ingress.oauth_success":              4, // a callback, two sessions, a refresh
		"http.ingress.oauth_refreshtoken_success": 1,
		"http.ingress.oauth_refreshtoken_failure": 1,
	} {
		if got := p.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

// TestOAuth2BasicAuthTampered: auth_type BASIC_AUTH sends the client's
// credentials in an Authorization header (RFC 6749 section 2.3.1); with
// use_refresh_token false and disable_token_encryption the session is the
// plaintext BearerToken, OauthHMAC and OauthExpires; cookie_configs sets a
// cookie's SameSite and path; allow_failed_matcher forwards a request
// without a session as unauthenticated; a tampered HMAC or token starts
// the flow over, and a RefreshToken cookie is not used.
func TestOAuth2BasicAuthTampered(t *testing.T) {
	a := startAuthServer(t)
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	p := start(t, oauthCfg(up.Addr, a.addr, ", config: "+oauthConfig(a, `, auth_type: BASIC_AUTH, disable_token_encryption: true, use_refresh_token: false,
		    allow_failed_matcher: [{name: x-optional-auth, present_match: true}],
		    cookie_configs: {bearer_token_cookie_config: {same_site: STRICT, path: /x}}`)))
	c := testutil.Client()
	sess := login(t, c, p, "/x")
	if want := "Basic " + base64.StdEncoding.EncodeToString([]byte("legate:s3cret")); a.lastAuth.Load() != want {
		t.Errorf("token request Authorization %q, want %q", a.lastAuth.Load(), want)
	}
	if sess["RefreshToken"] != nil {
		t.Errorf("use_refresh_token false set a RefreshToken cookie: %v", sess["RefreshToken"])
	}
	if b := sess["BearerToken"]; b.SameSite != http.SameSiteStrictMode || b.Path != "/x" || sess["OauthHMAC"].SameSite != 0 || sess["OauthHMAC"].Path != "/" {
		t.Errorf("cookie_configs: BearerToken %+v, OauthHMAC %+v; want SameSite=Strict and path /x on the bearer cookie only", b, sess["OauthHMAC"])
	}
	code, _, body := testutil.Get(t, c, p.URL("http", "/x"), "cookie", cookieHeader(sess["BearerToken"], sess["OauthHMAC"], sess["OauthExpires"], sess["IdToken"]))
	if code != 200 || !strings.Contains(body, "header:authorization=Bearer "+sess["BearerToken"].Value+"\n") {
		t.Fatalf("session with plaintext tokens: %d\n%s", code, body)
	}
	// allow_failed_matcher: no session, forwarded as unauthenticated
	// with the status headers (a client's own are replaced).
	code, _, body = testutil.Get(t, c, p.URL("http", "/opt"), "x-optional-auth", "1", "x-envoy-oauth-status", "ok",
		"cookie", "OauthHMAC=bad; keep=1")
	if code != 200 || !strings.Contains(body, "header:x-envoy-oauth-status=failed\n") || strings.Contains(body, "status=ok") ||
		!strings.Contains(body, "header:x-envoy-oauth-failure-reason=Unauthorized") || lineWith(body, "header:cookie=") != "header:cookie=keep=1" {
		t.Errorf("allow_failed_matcher: %d\n%s", code, body)
	}
	if got := p.Stat(t, "http.ingress.oauth_allow_failed_passthrough"); got != 1 {
		t.Errorf("oauth_allow_failed_passthrough = %d, want 1", got)
	}
	mac := sess["OauthHMAC"].Value
	tampered := &http.Cookie{Name: "OauthHMAC", Value: "A" + mac[1:]}
	if tampered.Value == mac {
		tampered.Value = "B" + mac[1:]
	}
	forged := &http.Cookie{Name: "BearerToken", Value: sess["BearerToken"].Value + "x"}
	tokensBefore := a.tokens.Load()
	for name, cookies := range map[string]string{
		"tampered HMAC":  cookieHeader(sess["BearerToken"], tampered, sess["OauthExpires"], sess["IdToken"]),
		"forged token":   cookieHeader(forged, sess["OauthHMAC"], sess["OauthExpires"], sess["IdToken"]),
		"no ID token":    cookieHeader(sess["BearerToken"], sess["OauthHMAC"], sess["OauthExpires"]),
		"refresh cookie": cookieHeader(sess["BearerToken"], tampered, sess["OauthExpires"], sess["IdToken"]) + "; RefreshToken=r",
	} {
		code, h, _ := testutil.Get(t, c, p.URL("http", "/x"), "cookie", cookies)
		if code != 302 || !strings.HasPrefix(h.Get("Location"), a.URL+"/authorize?") {
			t.Errorf("%s: %d location %q, want a redirect to the authorization server", name, code, h.Get("Location"))
		}
	}
	if a.tokens.Load() != tokensBefore {
		t.Errorf("use_refresh_token false made %d token requests", a.tokens.Load()-tokensBefore)
	}
	if got := p.Stat(t, "http.ingress.oauth_unauthorized_rq"); got != 5 {
		t.Errorf("oauth_unauthorized_rq = %d, want 5", got)
	}
}

// TestOAuth2TokenEndpointUnreachable: when the token endpoint's cluster
// refuses connections the callback answers 401 "OAuth flow failed." (as
// Envoy's onFailure), counts oauth_failure, expires the flow's cookies,
// and the proxy keeps serving.
func TestOAuth2TokenEndpointUnreachable(t *testing.T) {
	a := startAuthServer(t)
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	dead := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p := start(t, oauthCfg(up.Addr, dead, ", config: "+oauthConfig(a, "")))
	c := testutil.Client()
	loc, flow := startLogin(t, c, p, "/y")
	code, h, _ := testutil.Get(t, c, loc.String())
	if code != 302 {
		t.Fatalf("authorize: %d", code)
	}
	var send []*http.Cookie
	for _, ck := range flow {
		send = append(send, ck)
	}
	code, h, body := testutil.Get(t, c, h.Get("Location"), "cookie", cookieHeader(send...))
	if code != 401 || body != "OAuth flow failed." {
		t.Fatalf("callback with the token endpoint down: %d %q, want 401 OAuth flow failed.", code, body)
	}
	if del := setCookies(h); len(del) == 0 {
		t.Errorf("the 401 did not expire the flow's cookies: %v", h.Values("Set-Cookie"))
	}
	if got := p.Stat(t, "http.ingress.oauth_failure"); got != 1 {
		t.Errorf("oauth_failure = %d, want 1", got)
	}
	// A forged callback (no nonce cookie) is refused too.
	if code, _, body := testutil.Get(t, c, p.URL("http", "/callback?code=x&state=e30")); code != 401 || body != "OAuth flow failed." {
		t.Errorf("forged callback: %d %q", code, body)
	}
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/z"), "x-pass", "yes"); code != 200 {
		t.Errorf("after the failures the proxy answered %d", code)
	}
}

// TestOAuth2TokenRetry: retry_policy retries a token request the server
// answers 503, so the login completes; without retries left the callback
// answers 401 and counts oauth_failure.
func TestOAuth2TokenRetry(t *testing.T) {
	a := startAuthServer(t)
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	p := start(t, oauthCfg(up.Addr, a.addr, ", config: "+oauthConfig(a, ", retry_policy: {num_retries: 2, retry_back_off: {base_interval: 0.01s}}")))
	c := testutil.Client()
	a.failNext.Store(2)
	sess := login(t, c, p, "/r")
	if sess["BearerToken"] == nil || a.tokens.Load() != 3 {
		t.Fatalf("after two 503s: %d token requests, cookies %v", a.tokens.Load(), sess)
	}
	a.failNext.Store(3)
	loc, flow := startLogin(t, c, p, "/r")
	_, h, _ := testutil.Get(t, c, loc.String())
	var send []*http.Cookie
	for _, ck := range flow {
		send = append(send, ck)
	}
	if code, _, body := testutil.Get(t, c, h.Get("Location"), "cookie", cookieHeader(send...)); code != 401 || body != "OAuth flow failed." {
		t.Errorf("three 503s: %d %q, want 401", code, body)
	}
	if a.tokens.Load() != 6 || p.Stat(t, "http.ingress.oauth_failure") != 1 {
		t.Errorf("%d token requests, oauth_failure %d; want 6 and 1", a.tokens.Load(), p.Stat(t, "http.ingress.oauth_failure"))
	}
}

// TestOAuth2PerRoute: an OAuth2 filter without config does nothing; a
// route's OAuth2PerRoute config runs the flow there, with its stats in the
// server's scope (Envoy's route configs have no connection manager
// prefix) under its stat_prefix; an OpenID Connect route's signout goes to
// the end_session_endpoint with id_token_hint, client_id and the
// formatted post_logout_redirect_uri.
func TestOAuth2PerRoute(t *testing.T) {
	a := startAuthServer(t)
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	perRoute := `{envoy.filters.http.oauth2: {"@type": type.googleapis.com/envoy.extensions.filters.http.oauth2.v3.OAuth2PerRoute, config: ` +
		oauthConfig(a, ", stat_prefix: secure.") + `}}`
	oidc := `{envoy.filters.http.oauth2: {"@type": type.googleapis.com/envoy.extensions.filters.http.oauth2.v3.OAuth2PerRoute, config: ` +
		strings.Replace(oauthConfig(a, `, auth_scopes: [openid, email], end_session_endpoint: "`+a.URL+`/logout",
		    post_logout_redirect_uri: {uri: "https://%REQ(:authority)%/bye"}`), "exact: /signout", "exact: /oidc/signout", 1) + `}}`
	p := start(t, oauthCfg(up.Addr, a.addr, "",
		"{match: {prefix: /secure}, route: {cluster: up}, typed_per_filter_config: "+perRoute+"}",
		"{match: {prefix: /oidc}, route: {cluster: up}, typed_per_filter_config: "+oidc+"}",
		"{match: {prefix: /}, route: {cluster: up}}"))
	c := testutil.Client()
	if code, _, body := testutil.Get(t, c, p.URL("http", "/public")); code != 200 || !strings.Contains(body, "upstream=up") {
		t.Errorf("route without OAuth: %d %q", code, body)
	}
	code, h, _ := testutil.Get(t, c, p.URL("http", "/secure/a"))
	if code != 302 || !strings.HasPrefix(h.Get("Location"), a.URL+"/authorize?") {
		t.Errorf("route with OAuth2PerRoute: %d location %q", code, h.Get("Location"))
	}
	if got := p.Stat(t, "secure.oauth_unauthorized_rq"); got != 1 {
		t.Errorf("secure.oauth_unauthorized_rq = %d, want 1", got)
	}
	// OpenID Connect: scopes joined with a space, and RP-Initiated
	// Logout at the end session endpoint.
	code, h, _ = testutil.Get(t, c, p.URL("http", "/oidc/page"))
	if loc, _ := url.Parse(h.Get("Location")); code != 302 || loc == nil || loc.Query().Get("scope") != "openid email" {
		t.Errorf("OIDC login: %d location %q, want scope \"openid email\"", code, h.Get("Location"))
	}
	code, h, _ = testutil.Get(t, c, p.URL("http", "/oidc/signout"), "cookie", "IdToken=the-id-token")
	want := a.URL + "/logout?id_token_hint=the-id-token&client_id=legate&post_logout_redirect_uri=" +
		url.QueryEscape("https://"+p.Addr("http")+"/bye")
	if code != 302 || h.Get("Location") != want {
		t.Errorf("OIDC signout: %d location %q, want %q", code, h.Get("Location"), want)
	}
}

// lineWith returns the first line of body starting with prefix.
func lineWith(body, prefix string) string {
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
