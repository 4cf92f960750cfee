package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"k8s.io/apimachinery/pkg/types"

	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/testutil"
)

// fromClient is an HTTP client whose connections leave from the loopback
// address src (Linux answers on all of 127.0.0.0/8), so one test can be
// several clients to an IP filter.
func fromClient(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func do(t *testing.T, c *http.Client, method, url, host string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// TestHTTPProxyCORSAndIPFilters: corsPolicy answers preflights and adds
// the CORS headers through Legate's proxy; ipAllowPolicy/ipDenyPolicy on
// the virtual host and on routes admit and refuse clients by address.
func TestHTTPProxyCORSAndIPFilters(t *testing.T) {
	a := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	dir := t.TempDir()
	writeFile(t, dir, "objs.yaml", services("svc-a")+slice("svc-a", a.Addr)+`---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: cors, namespace: default}
spec:
  virtualhost:
    fqdn: cors.example.com
    corsPolicy:
      allowCredentials: true
      allowOrigin: ["https://www.example.com", "https://.*\\.example\\.org"]
      allowMethods: [GET, POST]
      allowHeaders: [authorization]
      exposeHeaders: [x-upstream]
      maxAge: 10m
  routes: [{services: [{name: svc-a, port: 80}]}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: ip, namespace: default}
spec:
  virtualhost:
    fqdn: ip.example.com
    ipAllowPolicy: [{source: Peer, cidr: 127.0.0.1}]
  routes:
  - conditions: [{prefix: /deny}]
    ipDenyPolicy: [{source: Peer, cidr: 127.0.0.3/32}]
    services: [{name: svc-a, port: 80}]
  - conditions: [{prefix: /remote}]
    ipAllowPolicy: [{source: Remote, cidr: 127.0.0.2}]
    services: [{name: svc-a, port: 80}]
  - services: [{name: svc-a, port: 80}]
`)
	x, _, base := startManifests(t, dir)
	c1, c2, c3 := fromClient("127.0.0.1"), fromClient("127.0.0.2"), fromClient("127.0.0.3")
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, _, _ := do(t, c1, "GET", base+"/", "cors.example.com")
		code2, _, _ := do(t, c1, "GET", base+"/", "ip.example.com")
		return code == 200 && code2 == 200
	}, "proxy never routed the HTTPProxies")
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}
	for _, name := range []string{"cors", "ip"} {
		if s := x.c.Model().Proxies[types.NamespacedName{Namespace: "default", Name: name}]; s == nil || s.Current() != "valid" {
			t.Errorf("%s status = %+v, want valid", name, s)
		}
	}

	t.Run("CORS", func(t *testing.T) {
		// Preflight from an allowed origin: answered by the proxy.
		code, h, _ := do(t, c1, "OPTIONS", base+"/x", "cors.example.com",
			"Origin", "https://www.example.com", "Access-Control-Request-Method", "POST")
		if code != 200 || h.Get("Access-Control-Allow-Origin") != "https://www.example.com" || h.Get("Access-Control-Allow-Methods") != "GET,POST" ||
			h.Get("Access-Control-Allow-Headers") != "authorization" || h.Get("Access-Control-Max-Age") != "600" ||
			h.Get("Access-Control-Allow-Credentials") != "true" || h.Get("X-Upstream") != "" {
			t.Errorf("preflight = %d %v, want 200 with the policy's headers, not from the upstream", code, h)
		}
		// Exact origins compare case-insensitively; regex origins match.
		for _, o := range []string{"https://WWW.example.com", "https://app.example.org"} {
			code, h, _ := do(t, c1, "GET", base+"/x", "cors.example.com", "Origin", o)
			if code != 200 || h.Get("Access-Control-Allow-Origin") != o || h.Get("Access-Control-Expose-Headers") != "x-upstream" || h.Get("X-Upstream") != "a" {
				t.Errorf("GET from %s = %d %v, want the upstream's answer with CORS headers", o, code, h)
			}
		}
		// Another origin: no CORS headers (the browser refuses the answer).
		code, h, _ = do(t, c1, "GET", base+"/x", "cors.example.com", "Origin", "https://evil.example.net")
		if code != 200 || h.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("GET from a foreign origin = %d %v, want no Access-Control-Allow-Origin", code, h)
		}
	})

	t.Run("IP filters", func(t *testing.T) {
		for _, tc := range []struct {
			c    *http.Client
			from string
			path string
			want int
		}{
			{c1, "127.0.0.1", "/", 200},       // vhost allow list
			{c2, "127.0.0.2", "/", 403},       // not on the vhost allow list
			{c3, "127.0.0.3", "/deny/x", 403}, // the route's deny list replaces the vhost's allow list
			{c1, "127.0.0.1", "/deny/x", 200},
			{c2, "127.0.0.2", "/remote", 200}, // Remote: the client address (no trusted XFF hops: the peer)
			{c1, "127.0.0.1", "/remote", 403},
		} {
			code, _, body := do(t, tc.c, "GET", base+tc.path, "ip.example.com")
			if code != tc.want {
				t.Errorf("GET %s from %s = %d %q, want %d", tc.path, tc.from, code, body, tc.want)
			}
			if tc.want == 403 && body != "RBAC: access denied" {
				t.Errorf("GET %s from %s: body %q, want Envoy's \"RBAC: access denied\"", tc.path, tc.from, body)
			}
		}
		// X-Forwarded-For from an untrusted client does not change its
		// Remote address (use_remote_address, no trusted hops).
		code, _, _ := do(t, c1, "GET", base+"/remote", "ip.example.com", "X-Forwarded-For", "127.0.0.2")
		if code != 403 {
			t.Errorf("spoofed X-Forwarded-For passed the Remote filter: %d", code)
		}
	})
}

// TestHTTPProxyCookieRewrite: cookieRewritePolicies of a route and of a
// service rewrite the upstream's Set-Cookie headers through Legate's
// proxy (the generated Lua script on the weighted cluster).
func TestHTTPProxyCookieRewrite(t *testing.T) {
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "sess=abc; path=/old; Domain=old.example.com; HttpOnly")
		w.Header().Add("Set-Cookie", "pref=dark; Secure; Max-Age=60")
		w.Header().Add("Set-Cookie", "other=1; Path=/")
	}))
	dir := t.TempDir()
	writeFile(t, dir, "objs.yaml", services("svc-c")+slice("svc-c", up.Addr)+`---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: cookies, namespace: default}
spec:
  virtualhost: {fqdn: cookies.example.com}
  routes:
  - cookieRewritePolicies:
    - {name: sess, pathRewrite: {value: /app}, sameSite: Lax}
    - {name: pref, secure: false}
    services:
    - name: svc-c
      port: 80
      cookieRewritePolicies: [{name: sess, domainRewrite: {value: cookies.example.com}, secure: true}]
`)
	x, _, base := startManifests(t, dir)
	c := fromClient("127.0.0.1")
	var h http.Header
	testutil.Eventually(t, 10*time.Second, func() bool {
		var code int
		code, h, _ = do(t, c, "GET", base+"/", "cookies.example.com")
		return code == 200
	}, "proxy never routed cookies.example.com")
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}
	want := []string{
		"sess=abc; Path=/app; Domain=cookies.example.com; HttpOnly; SameSite=Lax; Secure",
		"pref=dark; Max-Age=60",
		"other=1; Path=/",
	}
	got := h.Values("Set-Cookie")
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Set-Cookie =\n%q\nwant\n%q", got, want)
	}
}

// TestHTTPProxyJWT: jwtProviders on a TLS virtual host verify tokens
// through Legate's proxy — a local JWKS from a Secret (the default
// provider) and a remote JWKS fetched through the generated DNS cluster —
// with per-route opt-out and require.
func TestHTTPProxyJWT(t *testing.T) {
	a := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	ca := testutil.NewCA(t, "jwt-e2e-ca")
	leaf := ca.Issue(t, "jwt.example.com", "jwt.example.com")
	localKey, remoteKey := newJWTKey(t, "local-1"), newJWTKey(t, "remote-1")
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(remoteKey.jwks(t))
	}))
	t.Cleanup(jwks.Close)
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	dir := t.TempDir()
	writeFile(t, dir, "objs.yaml", services("svc-a")+slice("svc-a", a.Addr)+fmt.Sprintf(`---
apiVersion: v1
kind: Secret
metadata: {name: jwt-tls, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: jwks, namespace: default}
type: Opaque
data: {jwks.json: %s}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: jwt, namespace: default}
spec:
  virtualhost:
    fqdn: jwt.example.com
    tls: {secretName: jwt-tls}
    jwtProviders:
    - {name: local, default: true, issuer: https://local.example.com, audiences: [api], localJWKS: {secretName: jwks, key: jwks.json}}
    - {name: remote, issuer: https://remote.example.com, forwardJWT: true, remoteJWKS: {uri: "%s/jwks.json", timeout: 2s}}
  routes:
  - conditions: [{prefix: /open}]
    jwtVerificationPolicy: {disabled: true}
    services: [{name: svc-a, port: 80}]
  - conditions: [{prefix: /remote}]
    jwtVerificationPolicy: {require: remote}
    services: [{name: svc-a, port: 80}]
  - services: [{name: svc-a, port: 80}]
`, b64(leaf.CertPEM), b64(leaf.KeyPEM), b64(localKey.jwks(t)), jwks.URL))
	st := source.NewStore()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := source.WatchManifests(ctx, dir, st, testLogger(t), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	x := startCP(t, st, cpOptions{})
	startProxy(t, x)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", x.httpsPort))
		}}}
	base := "https://jwt.example.com"
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, _, _ := do(t, hc, "GET", base+"/open", "jwt.example.com")
		return code == 200
	}, "proxy never served jwt.example.com over HTTPS")
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}
	if s := x.c.Model().Proxies[types.NamespacedName{Namespace: "default", Name: "jwt"}]; s == nil || s.Current() != "valid" {
		t.Fatalf("status = %+v, want valid", s)
	}
	bearer := func(k *jwtKey, iss, aud string) string { return "Bearer " + k.sign(t, iss, aud) }
	for _, tc := range []struct {
		name, path, auth string
		want             int
		forwarded        bool // the upstream sees the token
	}{
		{"default provider, no token", "/", "", 401, false},
		{"default provider, valid token", "/", bearer(localKey, "https://local.example.com", "api"), 200, false},
		{"default provider, wrong audience", "/", bearer(localKey, "https://local.example.com", "other"), 403, false},
		{"default provider, other key", "/", bearer(remoteKey, "https://local.example.com", "api"), 401, false},
		{"disabled route", "/open", "", 200, false},
		{"require remote, remote token", "/remote", bearer(remoteKey, "https://remote.example.com", "any"), 200, true},
		{"require remote, local token", "/remote", bearer(localKey, "https://local.example.com", "api"), 401, false},
	} {
		hdr := []string{}
		if tc.auth != "" {
			hdr = []string{"Authorization", tc.auth}
		}
		code, _, body := do(t, hc, "GET", base+tc.path, "jwt.example.com", hdr...)
		if code != tc.want {
			t.Errorf("%s: GET %s = %d %q, want %d", tc.name, tc.path, code, body, tc.want)
			continue
		}
		if code == 200 && tc.auth != "" && strings.Contains(body, "header:authorization=") != tc.forwarded {
			t.Errorf("%s: upstream saw the token = %v, want %v (forwardJWT):\n%s", tc.name, !tc.forwarded, tc.forwarded, body)
		}
	}
}

// jwtKey is an ES256 signing key with its key id.
type jwtKey struct {
	kid string
	key *ecdsa.PrivateKey
}

func newJWTKey(t *testing.T, kid string) *jwtKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &jwtKey{kid: kid, key: k}
}

func (k *jwtKey) jwks(t *testing.T) []byte {
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.key.PublicKey, KeyID: k.kid, Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (k *jwtKey) sign(t *testing.T, iss, aud string) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.kid))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(map[string]any{"iss": iss, "aud": aud, "sub": "e2e", "exp": time.Now().Add(time.Hour).Unix()})
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestHTTPProxyLocalRateLimit: rateLimitPolicy.local on the virtual host
// (requests plus burst per unit) limits through Legate's proxy with 429;
// a route's own limit replaces it, with its status and headers.
func TestHTTPProxyLocalRateLimit(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("rl"))
	dir := t.TempDir()
	writeFile(t, dir, "objs.yaml", services("svc-rl")+slice("svc-rl", up.Addr)+`---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: rl, namespace: default}
spec:
  virtualhost:
    fqdn: rl.example.com
    rateLimitPolicy: {local: {requests: 2, unit: hour, burst: 1}}
  routes:
  - conditions: [{prefix: /strict}]
    rateLimitPolicy: {local: {requests: 1, unit: hour, responseStatusCode: 503, responseHeadersToAdd: [{name: x-limited, value: "yes"}]}}
    services: [{name: svc-rl, port: 80}]
  - services: [{name: svc-rl, port: 80}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: ready, namespace: default}
spec:
  virtualhost: {fqdn: ready.example.com}
  routes: [{services: [{name: svc-rl, port: 80}]}]
`)
	x, _, base := startManifests(t, dir)
	c := fromClient("127.0.0.1")
	// Readiness through a virtual host without a limit (requests to rl
	// before its endpoints arrive would spend its tokens), then the routes
	// of rl are in place too: the listener's route table is one.
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, _, _ := do(t, c, "GET", base+"/", "ready.example.com")
		return code == 200
	}, "proxy never routed ready.example.com")
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}
	var codes []int
	for i := 0; i < 4; i++ {
		code, _, _ := do(t, c, "GET", base+"/", "rl.example.com")
		codes = append(codes, code)
	}
	if fmt.Sprint(codes) != "[200 200 200 429]" {
		t.Errorf("virtual host limit (2 + burst 1 per hour): %v, want [200 200 200 429]", codes)
	}
	if code, _, _ := do(t, c, "GET", base+"/strict", "rl.example.com"); code != 200 {
		t.Errorf("the route's own bucket: first request %d, want 200", code)
	}
	code, h, _ := do(t, c, "GET", base+"/strict", "rl.example.com")
	if code != 503 || h.Get("x-limited") != "yes" {
		t.Errorf("the route's limit: %d x-limited=%q, want 503 yes", code, h.Get("x-limited"))
	}
}
