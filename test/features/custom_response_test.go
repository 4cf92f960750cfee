// Custom responses by response status: envoy.filters.http.custom_response.

package features_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestCustomResponse: envoy.filters.http.custom_response — an upstream
// 4xx (status_code_class_input) is replaced by the local response
// policy's body, status_code and response_headers_to_add (the upstream's
// body and headers are gone); a 503 (status_code_input) by a body_format
// over the policy's body keeping the status; a route's CustomResponse
// overrides the filter's for its match; other responses pass unchanged; a
// local reply of another filter (CSRF's 403) is replaced too, its body the
// %LOCAL_REPLY_BODY% of a policy without a body.
func TestCustomResponse(t *testing.T) {
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:])
		if err != nil {
			code = 200
		}
		w.Header().Set("x-upstream", "yes")
		w.WriteHeader(code)
		w.Write([]byte("upstream body"))
	}))
	const localPolicy = `"@type": type.googleapis.com/envoy.extensions.http.custom_response.local_response_policy.v3.LocalResponsePolicy`
	pred := func(input, value string) string {
		return `{single_predicate: {input: {name: in, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.` + input + `}}, value_match: {exact: "` + value + `"}}}`
	}
	filterMatcher := `{matcher_list: {matchers: [
	    {predicate: ` + pred("HttpResponseStatusCodeMatchInput", "403") + `, on_match: {action: {name: wrap, typed_config: {` + localPolicy + `, body_format: {text_format: "wrapped: %LOCAL_REPLY_BODY%"}}}}},
	    {predicate: ` + pred("HttpResponseStatusCodeMatchInput", "503") + `, on_match: {action: {name: down, typed_config: {` + localPolicy + `, body: {inline_string: "down"}, body_format: {text_format: "service %LOCAL_REPLY_BODY%!"}, response_headers_to_add: [{header: {key: content-type, value: application/json}}]}}}},
	    {predicate: ` + pred("HttpResponseStatusCodeClassMatchInput", "4xx") + `, on_match: {action: {name: client, typed_config: {` + localPolicy + `, body: {inline_string: "client error"}, status_code: 299, response_headers_to_add: [{header: {key: x-custom, value: "%REQ(:PATH)%"}}]}}}}]}}`
	routeMatcher := `{matcher_list: {matchers: [{predicate: ` + pred("HttpResponseStatusCodeMatchInput", "404") + `, on_match: {action: {name: nf, typed_config: {` + localPolicy + `, body: {inline_string: "no such page"}}}}}]}}`
	p := start(t, cfg{
		hcm: `http_filters: [{name: envoy.filters.http.custom_response, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.custom_response.v3.CustomResponse, custom_response_matcher: ` + filterMatcher + `}},
		  {name: envoy.filters.http.csrf, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy, filter_enabled: {default_value: {numerator: 100}}}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts: vhost(
			`{match: {prefix: /special}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.custom_response: {"@type": type.googleapis.com/envoy.extensions.filters.http.custom_response.v3.CustomResponse, custom_response_matcher: `+routeMatcher+`}}}`,
			"{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()
	for _, tc := range []struct {
		method, path string
		hdr          []string
		code         int
		body         string
		header       [2]string
	}{
		{"GET", "/status/401", nil, 299, "client error", [2]string{"x-custom", "/status/401"}},
		{"GET", "/status/404", nil, 299, "client error", [2]string{"x-upstream", ""}},
		// The policy's own content-type is kept (Envoy sets text/plain only
		// when none is given).
		{"GET", "/status/503", nil, 503, "service down!", [2]string{"content-type", "application/json"}},
		{"GET", "/status/401", nil, 299, "client error", [2]string{"content-type", "text/plain"}},
		{"GET", "/status/200", nil, 200, "upstream body", [2]string{"x-upstream", "yes"}},
		{"GET", "/status/500", nil, 500, "upstream body", [2]string{"x-upstream", "yes"}},
		{"GET", "/special/404", nil, 404, "no such page", [2]string{"x-custom", ""}},
		{"GET", "/special/401", nil, 299, "client error", [2]string{"x-custom", "/special/401"}}, // the route's matcher does not match: the filter's does
		{"POST", "/csrf", []string{"origin", "http://evil.example"}, 403, "wrapped: Invalid origin", [2]string{"x-upstream", ""}},
	} {
		code, h, body := testutil.Do(t, c, tc.method, p.URL("http", tc.path), "", tc.hdr...)
		if code != tc.code || body != tc.body || h.Get(tc.header[0]) != tc.header[1] {
			t.Errorf("%s %s: %d %q %s=%q, want %d %q %s=%q", tc.method, tc.path, code, body, tc.header[0], h.Get(tc.header[0]), tc.code, tc.body, tc.header[0], tc.header[1])
		}
	}
}
