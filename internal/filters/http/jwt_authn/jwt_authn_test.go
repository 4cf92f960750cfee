package jwt_authn_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/legateproxy/legate/internal/testutil"
)

type keys struct {
	rsa   *rsa.PrivateKey
	ec    *ecdsa.PrivateKey
	ed    ed25519.PrivateKey
	hmac  []byte
	other *rsa.PrivateKey
}

func newKeys(t *testing.T) keys {
	r, _ := rsa.GenerateKey(rand.Reader, 2048)
	o, _ := rsa.GenerateKey(rand.Reader, 2048)
	e, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	return keys{rsa: r, ec: e, ed: ed, hmac: []byte("0123456789abcdef0123456789abcdef"), other: o}
}

func jwksJSON(t *testing.T, ks ...jose.JSONWebKey) string {
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: ks})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sign(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := obj.CompactSerialize()
	return tok
}

const cfg = `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
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
          access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: {{.Log}},
            log_format: {text_format: "%REQ(:PATH)% %RESPONSE_CODE% %DYNAMIC_METADATA(envoy.filters.http.jwt_authn:claims:sub)%\n"}}}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/public"}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.jwt_authn: {"@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig, disabled: true}
              - match: {prefix: "/"}
                route: {cluster: backend}
          http_filters:
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                local:
                  issuer: https://issuer.example
                  audiences: [api.example]
                  local_jwks: {inline_string: '{{.LocalJWKS}}'}
                  forward_payload_header: x-jwt-payload
                  payload_in_metadata: claims
                  claim_to_headers: [{header_name: x-sub, claim_name: sub}, {header_name: x-team, claim_name: org.team}]
                remote:
                  issuer: https://remote.example
                  remote_jwks:
                    http_uri: {uri: "http://jwks.example/keys", cluster: jwks, timeout: 2s}
                    cache_duration: 300s
                    retry_policy: {num_retries: 2, retry_back_off: {base_interval: 0.01s}}
                  from_headers: [{name: x-remote-token}]
                  forward: true
              rules:
              - match: {prefix: /remote}
                requires: {provider_name: remote}
              - match: {prefix: /any}
                requires: {requires_any: {requirements: [{provider_name: local}, {provider_name: remote}]}}
              - match: {prefix: /optional}
                requires: {allow_missing: {}}
              - match: {prefix: /extract}
                requires: {extract_only_without_validation: {}}
              - match: {prefix: /}
                requires: {provider_name: local}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    type: STATIC
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Backend}}}}}}]}]}
  - name: jwks
    type: STATIC
    load_assignment: {cluster_name: jwks, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.JWKS}}}}}}]}]}
`

func TestJWTAuthn(t *testing.T) {
	k := newKeys(t)
	local := jwksJSON(t,
		jose.JSONWebKey{Key: &k.rsa.PublicKey, KeyID: "rsa", Algorithm: "RS256", Use: "sig"},
		jose.JSONWebKey{Key: k.ed.Public(), KeyID: "ed", Algorithm: "EdDSA", Use: "sig"},
		jose.JSONWebKey{Key: k.hmac, KeyID: "hs", Algorithm: "HS256", Use: "sig"},
	)
	var fetches atomic.Int64
	jwksSrv := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fetches.Add(1) == 1 {
			// The first fetch fails: retry_policy must retry it.
			http.Error(w, "warming up", http.StatusServiceUnavailable)
			return
		}
		if r.Host != "jwks.example" || r.URL.Path != "/keys" {
			http.Error(w, "wrong JWKS request", 404)
			return
		}
		io.WriteString(w, jwksJSON(t, jose.JSONWebKey{Key: &k.ec.PublicKey, KeyID: "ec", Algorithm: "ES256", Use: "sig"}))
	}))
	up := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	_, bport := up.Host()
	_, jport := jwksSrv.Host()
	logPath := filepath.Join(t.TempDir(), "access.log")
	p := testutil.StartProxy(t, cfg, map[string]string{"Backend": bport, "JWKS": jport, "Log": logPath, "LocalJWKS": local})

	now := time.Now().Unix()
	good := map[string]any{"iss": "https://issuer.example", "aud": "api.example", "sub": "alice", "exp": now + 600, "org": map[string]any{"team": "core"}}
	with := func(m map[string]any, kv ...any) map[string]any {
		out := map[string]any{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i].(string)] = kv[i+1]
		}
		return out
	}
	remoteClaims := map[string]any{"iss": "https://remote.example", "sub": "bob", "exp": now + 600}
	get := func(path string, hdr ...string) (int, http.Header, string) {
		req, _ := http.NewRequest("GET", p.URL("http", path), nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := testutil.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

	code, _, body := get("/app", bearer(sign(t, jose.RS256, k.rsa, "rsa", good))...)
	if code != 200 || !strings.Contains(body, "header:x-sub=alice") || !strings.Contains(body, "header:x-team=core") ||
		strings.Contains(body, "header:authorization") || !strings.Contains(body, "header:x-jwt-payload=") {
		t.Errorf("RS256: %d\n%s", code, body)
	}
	for _, c := range []struct {
		name, path string
		hdr        []string
		status     int
		body       string
	}{
		{"EdDSA", "/app", bearer(sign(t, jose.EdDSA, k.ed, "ed", good)), 200, ""},
		{"HS256", "/app", bearer(sign(t, jose.HS256, k.hmac, "hs", good)), 200, ""},
		{"query parameter", "/app?access_token=" + sign(t, jose.RS256, k.rsa, "rsa", good), nil, 200, ""},
		{"missing", "/app", nil, 401, "Jwt is missing"},
		{"expired", "/app", bearer(sign(t, jose.RS256, k.rsa, "rsa", with(good, "exp", now-3600))), 401, "Jwt is expired"},
		{"wrong audience", "/app", bearer(sign(t, jose.RS256, k.rsa, "rsa", with(good, "aud", "other.example"))), 403, "Audiences in Jwt are not allowed"},
		{"wrong issuer", "/app", bearer(sign(t, jose.RS256, k.rsa, "rsa", with(good, "iss", "https://evil.example"))), 401, "Jwt issuer is not configured"},
		{"bad signature", "/app", bearer(sign(t, jose.RS256, k.other, "rsa", good)), 401, "Jwt verification fails"},
		{"not a JWT", "/app", bearer("abc.def"), 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"},
		{"remote JWKS", "/remote", []string{"x-remote-token", sign(t, jose.ES256, k.ec, "ec", remoteClaims)}, 200, ""},
		{"remote JWKS again (cached)", "/remote", []string{"x-remote-token", sign(t, jose.ES256, k.ec, "ec", remoteClaims)}, 200, ""},
		{"requires_any: the second", "/any", []string{"x-remote-token", sign(t, jose.ES256, k.ec, "ec", remoteClaims)}, 200, ""},
		{"requires_any: neither", "/any", nil, 401, "Jwt is missing"},
		{"allow_missing: none", "/optional", nil, 200, ""},
		{"allow_missing: a bad one", "/optional", bearer(sign(t, jose.RS256, k.other, "rsa", good)), 401, "Jwt verification fails"},
		{"per-route disabled", "/public", nil, 200, ""},
	} {
		code, h, body := get(c.path, c.hdr...)
		if code != c.status || (c.body != "" && body != c.body) {
			t.Errorf("%s: %d %q, want %d %q", c.name, code, body, c.status, c.body)
		}
		if code == 401 && !strings.HasPrefix(h.Get("www-authenticate"), `Bearer realm="http://`) {
			t.Errorf("%s: www-authenticate %q", c.name, h.Get("www-authenticate"))
		}
	}
	// extract_only_without_validation: any parseable token's claims are
	// forwarded unverified (here a bad signature and an expired one), with
	// x-jwt-signature-verified: false; no token passes without the header.
	for _, tok := range []string{sign(t, jose.RS256, k.other, "rsa", good), sign(t, jose.RS256, k.rsa, "rsa", with(good, "exp", now-3600))} {
		code, _, body := get("/extract", bearer(tok)...)
		if code != 200 || !strings.Contains(body, "header:x-sub=alice") || !strings.Contains(body, "header:x-jwt-signature-verified=false") {
			t.Errorf("extract only: %d\n%s", code, body)
		}
	}
	if code, _, body := get("/extract"); code != 200 || strings.Contains(body, "x-jwt-signature-verified") {
		t.Errorf("extract only without a token: %d\n%s", code, body)
	}
	if n := fetches.Load(); n != 2 {
		t.Errorf("JWKS fetched %d times, want 2 (one 503, one retry, then cached for cache_duration)", n)
	}
	if n := p.Stat(t, "http.ingress.jwt_authn.jwks_fetch_failed"); n != 0 {
		t.Errorf("jwks_fetch_failed = %d, want 0 (the retry succeeded)", n)
	}
	if n := p.Stat(t, "http.ingress.jwt_authn.jwks_fetch_success"); n != 1 {
		t.Errorf("jwks_fetch_success = %d", n)
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "/app 200 alice")
	}, "the payload is not in the dynamic metadata")
}

// TestInvalidLocalJWKSLoads: as Envoy ("Invalid inline jwks"), a local
// JWKS that does not parse — here Envoy's own docs example, whose folded
// YAML puts newlines inside a key — is a warning, not a config error; the
// provider then has no keys, so its tokens are rejected (401).
func TestInvalidLocalJWKSLoads(t *testing.T) {
	k := newKeys(t)
	up := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	_, bport := up.Host()
	jwksSrv := testutil.StartUpstream(t, testutil.EchoHandler("unused"))
	_, jport := jwksSrv.Host()
	bad := `{"keys": [{"kty":"RSA", "n": "0vx7agoebGcQ\n    wu1RK7aPFFxuhDR1", "e":"AQAB", "kid":"rsa"}]}`
	p := testutil.StartProxy(t, cfg, map[string]string{"Backend": bport, "JWKS": jport, "Log": filepath.Join(t.TempDir(), "a.log"), "LocalJWKS": strings.ReplaceAll(bad, "\n", "\\n")})
	if !strings.Contains(p.Logs.String(), "invalid local JWKS") {
		t.Errorf("no warning about the invalid JWKS:\n%s", p.Logs.String())
	}
	tok := sign(t, jose.RS256, k.rsa, "rsa", map[string]any{"iss": "https://issuer.example", "aud": "api.example", "exp": time.Now().Unix() + 600})
	req, _ := http.NewRequest("GET", p.URL("http", "/"), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := testutil.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("a token of a provider without keys: %d, want 401", resp.StatusCode)
	}
}
