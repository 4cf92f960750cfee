package features_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// headerOf returns the "header:<name>=<value>" value of an echo response
// ("" when absent).
func headerOf(body, name string) string {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, "header:"+name+"="); ok {
			return v
		}
	}
	return ""
}

func credentialFilter(overwrite, allow bool, credential string) string {
	return fmt.Sprintf(`http_filters:
	- {name: envoy.filters.http.credential_injector, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector, overwrite: %v, allow_request_without_credential: %v,
	    credential: %s}}
	- {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}`, overwrite, allow, credential)
}

// A generic secret (static_resources.secrets) goes into Authorization
// with its prefix, its trailing newline cut; a request's own header
// stays (already_exists) unless overwrite is set.
func TestCredentialInjectorGeneric(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	secrets := "  secrets: [{name: api-token, generic_secret: {secret: {inline_string: \"abc123\\n\"}}}]\n"
	gen := func(extra string) string {
		return `{name: envoy.http.injected_credentials.generic, typed_config: {"@type": type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic, credential: {name: api-token}` + extra + `}}`
	}
	c := testutil.Client()

	p := start(t, cfg{hcm: credentialFilter(false, false, gen(", header_value_prefix: 'Bearer '")),
		vhosts: vhost(`{match: {prefix: /}, route: {cluster: u}}`), clusters: "[" + staticCluster("u", "", up.Addr) + "]", extra: secrets})
	code, _, body := testutil.Get(t, c, p.URL("http", "/"))
	if code != 200 || headerOf(body, "authorization") != "Bearer abc123" {
		t.Fatalf("injected: %d authorization=%q", code, headerOf(body, "authorization"))
	}
	code, _, body = testutil.Get(t, c, p.URL("http", "/"), "authorization", "Basic mine")
	if code != 200 || headerOf(body, "authorization") != "Basic mine" {
		t.Fatalf("already there: %d authorization=%q, want the client's", code, headerOf(body, "authorization"))
	}
	if n := p.Stat(t, "http.ingress.credential_injector.injected"); n != 1 {
		t.Errorf("injected = %d, want 1", n)
	}
	if n := p.Stat(t, "http.ingress.credential_injector.already_exists"); n != 1 {
		t.Errorf("already_exists = %d, want 1", n)
	}

	// overwrite, into another header, without a prefix.
	p2 := start(t, cfg{hcm: credentialFilter(true, false, gen(", header: X-Api-Key")),
		vhosts: vhost(`{match: {prefix: /}, route: {cluster: u}}`), clusters: "[" + staticCluster("u", "", up.Addr) + "]", extra: secrets})
	code, _, body = testutil.Get(t, c, p2.URL("http", "/"), "x-api-key", "forged")
	if code != 200 || headerOf(body, "x-api-key") != "abc123" || headerOf(body, "authorization") != "" {
		t.Fatalf("overwrite: %d x-api-key=%q authorization=%q", code, headerOf(body, "x-api-key"), headerOf(body, "authorization"))
	}
	if n := p2.Stat(t, "http.ingress.credential_injector.injected"); n != 1 {
		t.Errorf("overwrite: injected = %d, want 1", n)
	}

	// A secret that does not exist is a config error naming the field.
	_, err := testutil.TryStartProxy(t, cfg{hcm: credentialFilter(false, false, strings.Replace(gen(""), "api-token", "nope", 1)),
		vhosts: vhost(`{match: {prefix: /}, route: {cluster: u}}`), clusters: "[" + staticCluster("u", "", up.Addr) + "]", extra: secrets}.String(), nil)
	if err == nil || !strings.Contains(err.Error(), "credential.typed_config.credential.name") || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("missing secret: %v", err)
	}
}

// tokenServer is an OAuth2 authorization server's token endpoint (RFC
// 6749 section 4.4): it checks the client's id and secret (HTTP Basic or
// form body) and the grant type, and issues numbered tokens.
type tokenServer struct {
	id, secret string
	expiresIn  int
	issued     atomic.Int64
	failing    atomic.Bool
	mu         sync.Mutex
	lastForm   map[string]string
	lastBasic  bool
	bad        []string
}

func (s *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.failing.Load() {
		http.Error(w, "down for maintenance", 500)
		return
	}
	fail := func(why string) {
		s.mu.Lock()
		s.bad = append(s.bad, why)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(401)
		w.Write([]byte(`{"error":"invalid_client"}`))
	}
	if r.Method != "POST" || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		fail(fmt.Sprintf("method %s content-type %q", r.Method, r.Header.Get("Content-Type")))
		return
	}
	if err := r.ParseForm(); err != nil {
		fail("form: " + err.Error())
		return
	}
	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		fail("grant_type " + r.PostForm.Get("grant_type"))
		return
	}
	if id != s.id || secret != s.secret {
		fail(fmt.Sprintf("client %q/%q", id, secret))
		return
	}
	form := map[string]string{}
	for k := range r.PostForm {
		form[k] = r.PostForm.Get(k)
	}
	s.mu.Lock()
	s.lastForm, s.lastBasic = form, basic
	s.mu.Unlock()
	n := s.issued.Add(1)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("tok-%d", n), "token_type": "Bearer", "expires_in": s.expiresIn})
}

func oauth2Credential(cluster, extra string) string {
	return `{name: envoy.http.injected_credentials.oauth2, typed_config: {"@type": type.googleapis.com/envoy.extensions.http.injected_credentials.oauth2.v3.OAuth2,
	  token_endpoint: {uri: "http://auth.example.com/oauth/token", cluster: ` + cluster + `, timeout: 1s}, token_fetch_retry_interval: 1s,
	  client_credentials: {client_id: "my app", client_secret: {name: client-secret}` + extra + `}}}`
}

// The oauth2 credential: a token from a real token endpoint on loopback,
// injected as a bearer token and renewed at half its lifetime; the
// endpoint failing keeps the last token.
func TestCredentialInjectorOAuth2(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	ts := &tokenServer{id: "my app", secret: "s3cr=t&x", expiresIn: 2}
	auth := testutil.StartUpstream(t, ts)
	secrets := "  secrets: [{name: client-secret, generic_secret: {secret: {inline_string: \"s3cr=t&x\"}}}]\n"
	clusters := "[" + staticCluster("u", "", up.Addr) + ", " + staticCluster("auth", "", auth.Addr) + "]"
	cred := strings.Replace(oauth2Credential("auth", ""), "token_fetch_retry_interval", "scopes: [read, write], token_fetch_retry_interval", 1)
	p := start(t, cfg{hcm: credentialFilter(false, false, cred), vhosts: vhost(`{match: {prefix: /}, route: {cluster: u}}`),
		clusters: clusters, extra: secrets})
	c := testutil.Client()

	code, _, body := testutil.Get(t, c, p.URL("http", "/"))
	if code != 200 || !strings.HasPrefix(headerOf(body, "authorization"), "Bearer tok-") {
		t.Fatalf("first request: %d authorization=%q (token server rejected: %v)", code, headerOf(body, "authorization"), ts.bad)
	}
	ts.mu.Lock()
	form, basic := ts.lastForm, ts.lastBasic
	ts.mu.Unlock()
	if !basic || form["scope"] != "read write" || form["client_secret"] != "" {
		t.Errorf("token request: basic=%v form=%v, want HTTP Basic client auth and scope \"read write\"", basic, form)
	}
	first := headerOf(body, "authorization")

	// Renewal: a 2 s token is replaced after about a second.
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, _, body := testutil.Get(t, c, p.URL("http", "/"))
		return strings.HasPrefix(headerOf(body, "authorization"), "Bearer tok-") && headerOf(body, "authorization") != first
	}, "the token was never renewed")
	if n := p.Stat(t, "http.ingress.credential_injector.oauth2.token_fetched"); n < 2 {
		t.Errorf("token_fetched = %d, want >= 2", n)
	}

	// The endpoint fails: the last token stays in use, the failures count.
	ts.failing.Store(true)
	testutil.Eventually(t, 10*time.Second, func() bool {
		return p.Stat(t, "http.ingress.credential_injector.oauth2.token_fetch_failed_on_bad_response_code") >= 1
	}, "a failing token endpoint was not counted")
	code, _, body = testutil.Get(t, c, p.URL("http", "/"))
	if code != 200 || !strings.HasPrefix(headerOf(body, "authorization"), "Bearer tok-") {
		t.Errorf("with the endpoint failing: %d authorization=%q, want the last token", code, headerOf(body, "authorization"))
	}
	ts.failing.Store(false)
	if len(ts.bad) > 0 {
		t.Errorf("token server rejected requests: %v", ts.bad)
	}
}

// Client credentials in the form body (URL_ENCODED_BODY) with extra
// endpoint parameters.
func TestCredentialInjectorOAuth2FormAuth(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	ts := &tokenServer{id: "my app", secret: "pw", expiresIn: 3600}
	auth := testutil.StartUpstream(t, ts)
	cred := strings.Replace(oauth2Credential("auth", ", auth_type: URL_ENCODED_BODY"), "token_fetch_retry_interval", "endpoint_params: [{name: audience, value: 'https://api.example.com'}], token_fetch_retry_interval", 1)
	p := start(t, cfg{hcm: credentialFilter(false, false, cred), vhosts: vhost(`{match: {prefix: /}, route: {cluster: u}}`),
		clusters: "[" + staticCluster("u", "", up.Addr) + ", " + staticCluster("auth", "", auth.Addr) + "]",
		extra:    "  secrets: [{name: client-secret, generic_secret: {secret: {inline_string: pw}}}]\n"})
	code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/"))
	if code != 200 || headerOf(body, "authorization") != "Bearer tok-1" {
		t.Fatalf("%d authorization=%q (rejected: %v)", code, headerOf(body, "authorization"), ts.bad)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.lastBasic || ts.lastForm["client_id"] != "my app" || ts.lastForm["audience"] != "https://api.example.com" {
		t.Errorf("token request: basic=%v form=%v", ts.lastBasic, ts.lastForm)
	}
}

// A token endpoint that cannot be reached: without a token every request
// fails with Envoy's 401 "Failed to inject credential." (failed), unless
// allow_request_without_credential lets it through without one; the
// fetches are retried and counted.
func TestCredentialInjectorOAuth2EndpointDown(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	secrets := "  secrets: [{name: client-secret, generic_secret: {secret: {inline_string: pw}}}]\n"
	clusters := "[" + staticCluster("u", "", up.Addr) + ", " + staticCluster("auth", "", dead) + "]"
	c := testutil.Client()

	p := start(t, cfg{hcm: credentialFilter(false, false, oauth2Credential("auth", "")), vhosts: vhost(`{match: {prefix: /}, route: {cluster: u}}`),
		clusters: clusters, extra: secrets})
	code, _, body := testutil.Get(t, c, p.URL("http", "/"))
	if code != 401 || body != "Failed to inject credential." {
		t.Fatalf("no token: %d %q, want 401 Failed to inject credential.", code, body)
	}
	if up.Hits() != 0 {
		t.Errorf("the upstream saw %d requests without a credential", up.Hits())
	}
	if n := p.Stat(t, "http.ingress.credential_injector.failed"); n != 1 {
		t.Errorf("failed = %d, want 1", n)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		return p.Stat(t, "http.ingress.credential_injector.oauth2.token_fetch_failed_on_bad_response_code") >= 2 &&
			p.Stat(t, "http.ingress.credential_injector.oauth2.token_requested") >= 2
	}, "token fetches were not retried and counted")

	p2 := start(t, cfg{hcm: credentialFilter(false, true, oauth2Credential("auth", "")), vhosts: vhost(`{match: {prefix: /}, route: {cluster: u}}`),
		clusters: clusters, extra: secrets})
	code, _, body = testutil.Get(t, c, p2.URL("http", "/"))
	if code != 200 || headerOf(body, "authorization") != "" {
		t.Fatalf("allow_request_without_credential: %d authorization=%q", code, headerOf(body, "authorization"))
	}
	if n := p2.Stat(t, "http.ingress.credential_injector.failed"); n != 1 {
		t.Errorf("allowed: failed = %d, want 1", n)
	}

	// A token cluster that does not exist is retried and counted too.
	p3 := start(t, cfg{hcm: credentialFilter(false, false, oauth2Credential("missing", "")), vhosts: vhost(`{match: {prefix: /}, route: {cluster: u}}`),
		clusters: clusters, extra: secrets})
	if code, _, _ := testutil.Get(t, c, p3.URL("http", "/")); code != 401 {
		t.Errorf("missing cluster: %d, want 401", code)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		return p3.Stat(t, "http.ingress.credential_injector.oauth2.token_fetch_failed_on_cluster_not_found") >= 2
	}, "cluster not found was not retried")
}
