// API key authentication: envoy.filters.http.api_key_auth.

package features_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestAPIKeyAuth: envoy.filters.http.api_key_auth — a request without a
// key or with an unknown one is answered 401 "Client authentication
// failed." (details missing_api_key / unkonwn_api_key, as Envoy spells
// it) without reaching the upstream; a known key from a header ("Bearer "
// stripped), query parameter or cookie passes with the client id
// forwarded in x-client-id and the key hidden from the upstream; a route's
// allowed_clients answers other clients 403 "Client is forbidden."; a
// route's credentials replace the filter's; the api_key_auth.* stats
// count.
func TestAPIKeyAuth(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	logPath := filepath.Join(t.TempDir(), "a.log")
	const perRoute = `"@type": type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuthPerRoute`
	p := start(t, cfg{
		hcm: `access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `, log_format: {text_format: "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n"}}}]
		  http_filters: [{name: envoy.filters.http.api_key_auth, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth,
		    credentials: [{key: key-one, client: one}, {key: key-two, client: two}],
		    key_sources: [{header: authorization}, {query: api_key}, {cookie: api_key}],
		    forwarding: {header: x-client-id, hide_credentials: true}}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts: vhost(
			`{match: {prefix: /admin}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.api_key_auth: {`+perRoute+`, allowed_clients: [two], forwarding: {header: x-admin-client}}}}`,
			`{match: {prefix: /partner}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.api_key_auth: {`+perRoute+`, credentials: [{key: partner-key, client: partner}], forwarding: {header: x-client-id}}}}`,
			`{match: {prefix: /open}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.api_key_auth: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true}}}`,
			"{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()
	for _, tc := range []struct {
		path string
		hdr  []string
	}{
		{"/none", nil},
		{"/bad", []string{"authorization", "Bearer wrong"}},
		{"/partner/old", []string{"authorization", "key-one"}}, // the route's credentials replace the filter's
	} {
		code, _, body := testutil.Do(t, c, "GET", p.URL("http", tc.path), "", tc.hdr...)
		if code != 401 || body != "Client authentication failed." {
			t.Errorf("%s %v: %d %q, want 401", tc.path, tc.hdr, code, body)
		}
	}
	if code, _, body := testutil.Get(t, c, p.URL("http", "/admin/x"), "authorization", "key-one"); code != 403 || body != "Client is forbidden." {
		t.Errorf("/admin as client one: %d %q, want 403", code, body)
	}
	if up.Hits() != 0 {
		t.Fatalf("%d refused requests reached the upstream", up.Hits())
	}

	for _, tc := range []struct {
		path       string
		hdr        []string
		wantPath   string
		wantHeader string
	}{
		{"/h", []string{"authorization", "Bearer key-one"}, "/h", "header:x-client-id=one"},
		{"/q?b=2&api_key=key-two&a=1", nil, "/q?a=1&b=2", "header:x-client-id=two"},
		{"/c", []string{"cookie", "theme=dark; api_key=key-one"}, "/c", "header:cookie=theme=dark"},
		{"/admin/y", []string{"authorization", "key-two"}, "/admin/y", "header:x-admin-client=two"},
		{"/partner/new", []string{"authorization", "partner-key"}, "/partner/new", "header:x-client-id=partner"},
		{"/open", nil, "/open", "upstream=up"},
	} {
		code, _, body := testutil.Do(t, c, "GET", p.URL("http", tc.path), "", tc.hdr...)
		if code != 200 || !strings.Contains(body, "\npath="+tc.wantPath+"\n") || !strings.Contains(body, tc.wantHeader+"\n") {
			t.Errorf("%s %v: %d, want 200 with path %s and %s:\n%s", tc.path, tc.hdr, code, tc.wantPath, tc.wantHeader, body)
		}
		if tc.path == "/h" || tc.path == "/q?b=2&api_key=key-two&a=1" || tc.path == "/c" {
			if strings.Contains(body, "key-one") || strings.Contains(body, "key-two") {
				t.Errorf("%s: hide_credentials left the key for the upstream:\n%s", tc.path, body)
			}
		}
	}
	// The admin route's forwarding replaces the filter's: no x-client-id,
	// and the key is not hidden there.
	if _, _, body := testutil.Get(t, c, p.URL("http", "/admin/z"), "authorization", "key-two"); strings.Contains(body, "x-client-id") || !strings.Contains(body, "header:authorization=key-two") {
		t.Errorf("/admin: the filter's forwarding applied:\n%s", body)
	}

	for name, want := range map[string]int64{
		"http.ingress.api_key_auth.allowed": 6, "http.ingress.api_key_auth.unauthorized": 3, "http.ingress.api_key_auth.forbidden": 1,
	} {
		if got := p.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	var text string
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		text = string(b)
		return strings.Count(text, "\n") >= 11
	}, "access log not written")
	for _, line := range []string{"/none 401 missing_api_key\n", "/bad 401 unkonwn_api_key\n", "/admin/x 403 client_not_allowed\n"} {
		if !strings.Contains(text, line) {
			t.Errorf("access log lacks %q:\n%s", line, text)
		}
	}
}
