package controller

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestHTTPProxyInternalRedirect: a route's internalRedirectPolicy makes
// Legate's proxy follow the upstream's redirect through the route table
// itself (Contour's InternalRedirectPolicy → RouteAction
// internal_redirect_policy); codes outside redirectResponseCodes, routes
// without the policy and a repeated route under denyRepeatedRouteRedirect
// hand the 3xx to the client.
func TestHTTPProxyInternalRedirect(t *testing.T) {
	redirector := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/start", "/plain":
			w.Header().Set("Location", "http://redirect.example.com/final")
			w.WriteHeader(http.StatusFound)
		case "/moved":
			w.Header().Set("Location", "http://redirect.example.com/final")
			w.WriteHeader(http.StatusMovedPermanently)
		case "/loop":
			w.Header().Set("Location", "http://redirect.example.com/loop")
			w.WriteHeader(http.StatusFound)
		}
	}))
	final := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "final %s", r.Header.Get("x-envoy-original-url"))
	}))
	dir := t.TempDir()
	writeFile(t, dir, "objs.yaml", services("svc-r", "svc-f")+slice("svc-r", redirector.Addr)+slice("svc-f", final.Addr)+`---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: redirects, namespace: default}
spec:
  virtualhost: {fqdn: redirect.example.com}
  routes:
  - conditions: [{prefix: /start}]
    internalRedirectPolicy: {}
    services: [{name: svc-r, port: 80}]
  - conditions: [{prefix: /moved}]
    internalRedirectPolicy: {}
    services: [{name: svc-r, port: 80}]
  - conditions: [{prefix: /plain}]
    services: [{name: svc-r, port: 80}]
  - conditions: [{prefix: /loop}]
    internalRedirectPolicy: {maxInternalRedirects: 5, denyRepeatedRouteRedirect: true}
    services: [{name: svc-r, port: 80}]
  - conditions: [{prefix: /final}]
    services: [{name: svc-f, port: 80}]
`)
	x, p, base := startManifests(t, dir)
	c := fromClient("127.0.0.1")
	var code int
	var body string
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, _, body = do(t, c, "GET", base+"/start", "redirect.example.com")
		return code == 200
	}, "proxy never followed the redirect of redirect.example.com/start")
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}
	// Envoy keeps the URL the client asked for in x-envoy-original-url.
	if want := "final http://redirect.example.com/start"; body != want {
		t.Errorf("body %q, want %q", body, want)
	}
	for _, tc := range []struct {
		path string
		code int
		why  string
	}{
		{"/moved", 301, "301 is not among the default redirectResponseCodes (302 only)"},
		{"/plain", 302, "a route without internalRedirectPolicy"},
		{"/loop", 302, "denyRepeatedRouteRedirect refuses the route the first redirect came from"},
	} {
		got, h, _ := do(t, c, "GET", base+tc.path, "redirect.example.com")
		if got != tc.code || h.Get("Location") == "" {
			t.Errorf("%s: %d (Location %q), want %d with its Location: %s", tc.path, got, h.Get("Location"), tc.code, tc.why)
		}
	}
	// /start's redirect, and /loop's first (the route was not yet
	// followed by a redirect); /loop's second is refused by the
	// previous_routes predicate.
	for name, want := range map[string]int64{
		"cluster.default_svc-r_80.upstream_internal_redirect_succeeded_total": 2,
		"cluster.default_svc-r_80.upstream_internal_redirect_failed_total":    1,
	} {
		if n := p.Stat(t, name); n != want {
			t.Errorf("%s = %d, want %d", name, n, want)
		}
	}
}
