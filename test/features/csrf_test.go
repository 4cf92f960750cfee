// Cross-site request forgery protection: envoy.filters.http.csrf.

package features_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestCSRF: envoy.filters.http.csrf — a POST/PUT/DELETE/PATCH whose Origin
// (else Referer) host is not the request's Host answers 403 "Invalid
// origin" (details csrf_origin_mismatch) and never reaches the upstream;
// a same-origin or additional_origins request and a GET pass; a route's
// CsrfPolicy replaces the filter's (shadow mode only counts; a runtime key
// turns enforcement off); the csrf.* stats count as Envoy's.
func TestCSRF(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	logPath := filepath.Join(t.TempDir(), "a.log")
	const csrfType = `"@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy`
	p := start(t, cfg{
		hcm: `access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `, log_format: {text_format: "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n"}}}]
		  http_filters: [{name: envoy.filters.http.csrf, typed_config: {` + csrfType + `, filter_enabled: {default_value: {numerator: 100, denominator: HUNDRED}}, additional_origins: [{suffix: .trusted.example}]}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts: vhost(
			`{match: {prefix: /shadow}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.csrf: {`+csrfType+`, filter_enabled: {default_value: {numerator: 0}}, shadow_enabled: {default_value: {numerator: 100}}}}}`,
			`{match: {prefix: /runtime}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.csrf: {`+csrfType+`, filter_enabled: {runtime_key: csrf.runtime.enabled, default_value: {numerator: 100}}}}}`,
			"{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
		extra:    "layered_runtime: {layers: [{name: static, static_layer: {csrf.runtime.enabled: 0}}]}",
	})
	c := testutil.Client()
	self := "http://" + p.Addr("http")

	// Cross-origin state-changing requests are refused before the upstream.
	for _, tc := range []struct {
		method, path string
		hdr          []string
	}{
		{"POST", "/a", []string{"origin", "http://evil.example"}},
		{"PUT", "/b", []string{"origin", "https://evil.example", "referer", self + "/page"}},
		{"DELETE", "/c", []string{"referer", "http://evil.example/page"}},
		{"PATCH", "/d", []string{"origin", "null"}},
	} {
		code, h, body := testutil.Do(t, c, tc.method, p.URL("http", tc.path), "x", tc.hdr...)
		if code != 403 || body != "Invalid origin" || h.Get("content-type") != "text/plain" {
			t.Errorf("%s %s %v: %d %q (%s), want 403 Invalid origin", tc.method, tc.path, tc.hdr, code, body, h.Get("content-type"))
		}
	}
	if up.Hits() != 0 {
		t.Fatalf("%d refused requests reached the upstream", up.Hits())
	}

	// Same-origin (Origin or Referer), an additional origin, and safe methods pass.
	for _, tc := range []struct {
		method string
		hdr    []string
	}{
		{"POST", []string{"origin", self}},
		{"PUT", []string{"referer", self + "/form?x=1"}},
		{"DELETE", []string{"origin", "https://app.trusted.example"}},
		{"GET", []string{"origin", "http://evil.example"}},
		{"OPTIONS", nil},
	} {
		if code, _, body := testutil.Do(t, c, tc.method, p.URL("http", "/ok"), "", tc.hdr...); code != 200 || upstreamOf(body) != "upstream=up" {
			t.Errorf("%s %v: %d %q, want the upstream's 200", tc.method, tc.hdr, code, body)
		}
	}
	// No origin at all is refused too (the Host is never empty).
	if code, _, _ := testutil.Do(t, c, "POST", p.URL("http", "/none"), "x"); code != 403 {
		t.Errorf("POST without Origin or Referer: %d, want 403", code)
	}

	// Shadow mode on /shadow: counted as invalid, forwarded.
	if code, _, _ := testutil.Do(t, c, "POST", p.URL("http", "/shadow"), "x", "origin", "http://evil.example"); code != 200 {
		t.Errorf("shadow route: %d, want 200", code)
	}
	// The runtime key turns /runtime's policy off: not even counted.
	if code, _, _ := testutil.Do(t, c, "POST", p.URL("http", "/runtime"), "x", "origin", "http://evil.example"); code != 200 {
		t.Errorf("runtime-disabled route: %d, want 200", code)
	}

	for name, want := range map[string]int64{
		"http.ingress.csrf.request_invalid":       6, // 4 + no origin + shadow
		"http.ingress.csrf.missing_source_origin": 1,
		"http.ingress.csrf.request_valid":         3,
	} {
		if got := p.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	var text string
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		text = string(b)
		return strings.Count(text, "\n") >= 12
	}, "access log not written")
	if !strings.Contains(text, "/a 403 csrf_origin_mismatch\n") {
		t.Errorf("access log lacks the refusal's details:\n%s", text)
	}
}
