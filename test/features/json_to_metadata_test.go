// JSON body values as dynamic metadata: envoy.filters.http.json_to_metadata.

package features_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestJSONToMetadata: envoy.filters.http.json_to_metadata — a JSON
// request body's value becomes dynamic metadata that the router's
// request_headers_to_add sends upstream (so it is set before the request
// leaves), with the body passed on unchanged; a missing key, invalid JSON,
// another content-type and an empty body set on_missing/on_error values; a
// JSON response body's value reaches the access log and the client gets
// the body unchanged; a route's config replaces the filter's (its
// response rules too); the
// json_to_metadata.rq.* / resp.* stats count as Envoy's.
func TestJSONToMetadata(t *testing.T) {
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("content-type", "application/json")
		fmt.Fprintf(w, `{"echo": %q, "version": %q, "state": "served"}`, body, r.Header.Get("x-version"))
	}))
	logPath := filepath.Join(t.TempDir(), "a.log")
	const j2m = `"@type": type.googleapis.com/envoy.extensions.filters.http.json_to_metadata.v3.JsonToMetadata`
	versionRule := `{selectors: [{key: version}], on_present: {metadata_namespace: envoy.lb, key: version, type: STRING}, on_missing: {metadata_namespace: envoy.lb, key: version, value: unknown}, on_error: {metadata_namespace: envoy.lb, key: version, value: error}}`
	p := start(t, cfg{
		hcm: `access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `, log_format: {text_format: "%REQ(:PATH)% v=%DYNAMIC_METADATA(envoy.lb:version)% state=%DYNAMIC_METADATA(resp:state)%\n"}}}]
		  http_filters: [{name: envoy.filters.http.json_to_metadata, typed_config: {` + j2m + `, request_rules: {rules: [` + versionRule + `]}, response_rules: {rules: [{selectors: [{key: state}], on_present: {metadata_namespace: resp, key: state, type: STRING}}]}}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts: `[{name: all, domains: ['*'], request_headers_to_add: [{header: {key: x-version, value: "%DYNAMIC_METADATA(envoy.lb:version)%"}}], routes: [` +
			`{match: {prefix: /route}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.json_to_metadata: {` + j2m + `, request_rules: {rules: [{selectors: [{key: meta}, {key: ver}], on_present: {metadata_namespace: envoy.lb, key: version, type: NUMBER}}]}}}}, ` +
			`{match: {prefix: /}, route: {cluster: up}}]}]`,
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()
	for _, tc := range []struct {
		path, ct, body, wantVersion string
	}{
		{"/present", "application/json", `{"version": "v2", "x": [1, 2]}`, "v2"},
		{"/number", "application/json", `{"version": 3}`, "3"},
		{"/missing", "application/json", `{"other": "v2"}`, "unknown"},
		{"/invalid", "application/json", `{"version": `, "error"},
		{"/mismatch", "text/plain", `{"version": "v2"}`, "error"},
		{"/nobody", "application/json", ``, "unknown"},
		{"/route", "application/json", `{"meta": {"ver": "  12.5"}, "version": "v9"}`, "12.5"},
	} {
		method := "POST"
		if tc.body == "" {
			method = "GET"
		}
		code, h, body := testutil.Do(t, c, method, p.URL("http", tc.path), tc.body, "content-type", tc.ct)
		want := fmt.Sprintf(`{"echo": %q, "version": %q, "state": "served"}`, tc.body, tc.wantVersion)
		if code != 200 || body != want || h.Get("content-type") != "application/json" {
			t.Errorf("%s: %d %s\nwant 200 %s", tc.path, code, body, want)
		}
	}
	for name, want := range map[string]int64{
		"json_to_metadata.rq.success": 4, "json_to_metadata.rq.invalid_json_body": 1,
		"json_to_metadata.rq.mismatched_content_type": 1, "json_to_metadata.rq.no_body": 1,
		"json_to_metadata.resp.success": 6, // the route's config has no response rules "json_to_metadata.resp.no_body": 0,
	} {
		if got := p.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	var text string
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		text = string(b)
		return strings.Count(text, "\n") >= 7
	}, "access log not written")
	for _, line := range []string{"/present v=v2 state=served\n", "/invalid v=error state=served\n", "/route v=12.5 state=-\n"} {
		if !strings.Contains(text, line) {
			t.Errorf("access log lacks %q:\n%s", line, text)
		}
	}
}
