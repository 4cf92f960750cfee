// CDN loop detection: envoy.filters.http.cdn_loop (RFC 8586).

package features_test

import (
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestCDNLoop: envoy.filters.http.cdn_loop with cdn_id legate and
// max_allowed_occurrences 1 — a request passes with the id appended to
// CDN-Loop (added when absent, after the others as Envoy's appendCopy
// with ","); one naming the id twice is answered 502 "The server has
// detected a loop between CDNs." and one whose header does not parse 400
// "Invalid CDN-Loop header in request.", neither reaching the upstream.
func TestCDNLoop(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	p := start(t, cfg{
		hcm: `http_filters: [{name: envoy.filters.http.cdn_loop, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cdn_loop.v3.CdnLoopConfig, cdn_id: legate, max_allowed_occurrences: 1}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()
	for _, tc := range []struct{ in, want string }{
		{"", "legate"},
		{"other-cdn, [2001:db8::1]:8080; x=\"y\"", "other-cdn, [2001:db8::1]:8080; x=\"y\",legate"},
		{"legate; v=1", "legate; v=1,legate"},
	} {
		var hdr []string
		if tc.in != "" {
			hdr = []string{"cdn-loop", tc.in}
		}
		code, _, body := testutil.Get(t, c, p.URL("http", "/"), hdr...)
		if code != 200 || !strings.Contains(body, "header:cdn-loop="+tc.want+"\n") {
			t.Errorf("CDN-Loop %q: %d, want 200 with cdn-loop %q:\n%s", tc.in, code, tc.want, body)
		}
	}
	hits := up.Hits()
	for _, tc := range []struct {
		in     string
		status int
		body   string
	}{
		{"legate, other, legate", 502, "The server has detected a loop between CDNs."},
		{"legate;", 400, "Invalid CDN-Loop header in request."},
		{"two words", 400, "Invalid CDN-Loop header in request."},
	} {
		code, _, body := testutil.Get(t, c, p.URL("http", "/"), "cdn-loop", tc.in)
		if code != tc.status || body != tc.body {
			t.Errorf("CDN-Loop %q: %d %q, want %d %q", tc.in, code, body, tc.status, tc.body)
		}
	}
	if up.Hits() != hits {
		t.Errorf("%d refused requests reached the upstream", up.Hits()-hits)
	}
}
