// Internal redirects (RouteAction.internal_redirect_policy) as Envoy's
// router takes them: an upstream 3xx whose Location names a route of the
// same proxy is followed by the proxy — the request runs again through
// the route table, the HTTP filters and the router — and the client gets
// the final response; what Envoy refuses to follow reaches the client,
// counted by reason.

package features_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestInternalRedirect(t *testing.T) {
	redirector := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		host := r.Host
		switch r.URL.Path {
		case "/start":
			w.Header().Set("x-token", "from-redirect")
			w.Header().Set("location", "http://"+host+"/landing?q=1#frag")
			w.WriteHeader(302)
		case "/moved":
			w.Header().Set("location", "http://"+host+"/landing")
			w.WriteHeader(301) // not among the default codes (302)
		case "/see-other":
			w.Header().Set("location", "http://"+host+"/landing")
			w.WriteHeader(303)
		case "/relative":
			w.Header().Set("location", "/landing")
			w.WriteHeader(302)
		case "/to-https":
			w.Header().Set("location", "https://"+host+"/landing")
			w.WriteHeader(302)
		case "/to-admin":
			w.Header().Set("location", "http://"+host+"/admin")
			w.WriteHeader(302)
		case "/hop1":
			w.Header().Set("location", "http://"+host+"/hop2")
			w.WriteHeader(302)
		case "/hop2":
			w.Header().Set("location", "http://"+host+"/landing")
			w.WriteHeader(302)
		case "/ping":
			w.Header().Set("location", "http://"+host+"/pong")
			w.WriteHeader(302)
		case "/pong":
			w.Header().Set("location", "http://"+host+"/ping")
			w.WriteHeader(302)
		case "/keep-post":
			w.Header().Set("location", "http://"+host+"/landing")
			w.WriteHeader(307)
		}
	}))
	landing := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "landing %s %s original=%s token=%s", r.Method, r.URL.RequestURI(), r.Header.Get("x-envoy-original-url"), r.Header.Get("x-token"))
	}))
	policy := `internal_redirect_policy: {response_headers_to_copy: [x-token], redirect_response_codes: [302, 303, 307]}`
	c := cfg{
		// The RBAC filter runs again on the redirected request: /admin is
		// refused whether asked for or redirected to.
		hcm: `http_filters: [{name: envoy.filters.http.rbac, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC, rules: {action: DENY, policies: {admin: {permissions: [{url_path: {path: {prefix: /admin}}}], principals: [{any: true}]}}}}},
  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts: vhost(
			`{name: landing, match: {prefix: "/landing"}, route: {cluster: landing}}`,
			`{name: admin, match: {prefix: "/admin"}, route: {cluster: landing}}`,
			`{name: hop1, match: {path: "/hop1"}, route: {cluster: redirector, internal_redirect_policy: {max_internal_redirects: 1}}}`,
			`{name: hop2, match: {path: "/hop2"}, route: {cluster: redirector, internal_redirect_policy: {max_internal_redirects: 1}}}`,
			`{name: ping, match: {path: "/ping"}, route: {cluster: redirector, internal_redirect_policy: {max_internal_redirects: 5, predicates: [{name: p, typed_config: {"@type": type.googleapis.com/envoy.extensions.internal_redirect.previous_routes.v3.PreviousRoutesConfig}}]}}}`,
			`{name: pong, match: {path: "/pong"}, route: {cluster: redirector, internal_redirect_policy: {max_internal_redirects: 5}}}`,
			`{name: redirects, match: {prefix: "/"}, route: {cluster: redirector, `+policy+`}}`),
		clusters: fmt.Sprintf("[%s, %s]", staticCluster("redirector", "", redirector.Addr), staticCluster("landing", "", landing.Addr)),
	}
	p := start(t, c)
	cl := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path, body string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(method, p.URL("http", path), strings.NewReader(body))
		if body == "" {
			req.Body = nil
		}
		req.Host = "shop.example"
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	stat := func(name string) int64 { return p.Stat(t, name) }

	// Followed: the landing page answers, with the query of the
	// Location (its fragment dropped), the URL before the redirect and
	// the copied response header.
	code, body, _ := do("GET", "/start", "")
	if want := "landing GET /landing?q=1 original=http://shop.example/start token=from-redirect"; code != 200 || body != want {
		t.Errorf("/start: %d %q, want 200 %q", code, body, want)
	}
	if n := stat("cluster.redirector.upstream_internal_redirect_succeeded_total"); n != 1 {
		t.Errorf("upstream_internal_redirect_succeeded_total = %d, want 1", n)
	}
	// 303 turns a bodyless POST into GET (RFC 9110 15.4.4).
	if code, body, _ := do("POST", "/see-other", ""); code != 200 || !strings.HasPrefix(body, "landing GET /landing") {
		t.Errorf("/see-other: %d %q, want the landing page by GET", code, body)
	}
	// Passed to the client, by reason.
	for _, tc := range []struct {
		method, path, body string
		code               int
		stat               string
	}{
		{"GET", "/moved", "", 301, ""}, // 301 is not in redirect_response_codes: not attempted
		{"GET", "/relative", "", 302, "http.ingress.passthrough_internal_redirect_bad_location"},
		{"GET", "/to-https", "", 302, "http.ingress.passthrough_internal_redirect_unsafe_scheme"},
		// hop1 → hop2 is the request's one redirect; hop2's is refused.
		{"GET", "/hop1", "", 302, "http.ingress.passthrough_internal_redirect_too_many_redirects"},
		// ping → pong → ping, then ping → pong again: previous_routes
		// refuses a target ping was already redirected to.
		{"GET", "/ping", "", 302, "http.ingress.passthrough_internal_redirect_predicate"},
		// A request with a body is not redirected.
		{"POST", "/keep-post", "payload", 307, ""},
	} {
		before := int64(0)
		if tc.stat != "" {
			before = stat(tc.stat)
		}
		code, _, h := do(tc.method, tc.path, tc.body)
		if code != tc.code {
			t.Errorf("%s %s: status %d, want %d (the redirect passed to the client)", tc.method, tc.path, code, tc.code)
		}
		if tc.code >= 300 && h.Get("location") == "" {
			t.Errorf("%s %s: the client's redirect has no Location", tc.method, tc.path)
		}
		if tc.stat != "" {
			if n := stat(tc.stat); n != before+1 {
				t.Errorf("%s %s: %s = %d, want %d", tc.method, tc.path, tc.stat, n, before+1)
			}
		}
	}
	// The HTTP filters run again on the redirected request.
	if code, _, _ := do("GET", "/to-admin", ""); code != 403 {
		t.Errorf("/to-admin: %d, want 403 from the RBAC filter on the redirected request", code)
	}
	if n := stat("cluster.redirector.upstream_internal_redirect_failed_total"); n < 5 {
		t.Errorf("upstream_internal_redirect_failed_total = %d, want at least 5", n)
	}
}
