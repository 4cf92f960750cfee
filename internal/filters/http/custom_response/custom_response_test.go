package custom_response

import (
	"strings"
	"testing"

	crv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/custom_response/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/matcher"
)

func matcherJSON(input, value, action string) string {
	return `{"custom_response_matcher": {"matcher_list": {"matchers": [{"predicate": {"single_predicate": {"input": {"name": "in", "typed_config": {"@type": "type.googleapis.com/envoy.type.matcher.v3.` + input +
		`"}}, "value_match": {"exact": "` + value + `"}}}, "on_match": {"action": {"name": "a", "typed_config": ` + action + `}}}]}}}`
}

const local = `{"@type": "type.googleapis.com/envoy.extensions.http.custom_response.local_response_policy.v3.LocalResponsePolicy", "body": {"inline_string": "b"}}`

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct{ js, err string }{
		{matcherJSON("HttpResponseStatusCodeMatchInput", "500", `{"@type": "type.googleapis.com/envoy.extensions.http.custom_response.redirect_policy.v3.RedirectPolicy", "uri": "https://x/"}`),
			"the custom response redirect policy"},
		{matcherJSON("HttpResponseStatusCodeMatchInput", "500", `{"@type": "type.googleapis.com/envoy.type.matcher.v3.HttpResponseStatusCodeMatchInput"}`),
			"is not a custom response policy"},
		{matcherJSON("HttpResponseStatusCodeMatchInput", "500", `{"@type": "type.googleapis.com/envoy.extensions.http.custom_response.local_response_policy.v3.LocalResponsePolicy", "status_code": 42}`),
			"status_code"},
		{matcherJSON("HttpResponseStatusCodeMatchInput", "500", `{"@type": "type.googleapis.com/envoy.extensions.http.custom_response.local_response_policy.v3.LocalResponsePolicy", "body": {"environment_variable": "X"}}`),
			"body.environment_variable"},
	} {
		var c crv3.CustomResponse
		if err := protojson.Unmarshal([]byte(tc.js), &c); err != nil {
			t.Fatal(err)
		}
		_, err := compileConfig(&c, "c")
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("error %v, want %q", err, tc.err)
		}
	}
}

func TestStatusInputs(t *testing.T) {
	for _, tc := range []struct {
		input, value string
		status       int
		match        bool
	}{
		{"HttpResponseStatusCodeMatchInput", "503", 503, true},
		{"HttpResponseStatusCodeMatchInput", "503", 502, false},
		{"HttpResponseStatusCodeClassMatchInput", "4xx", 404, true},
		{"HttpResponseStatusCodeClassMatchInput", "4xx", 500, false},
		{"HttpResponseStatusCodeClassMatchInput", "6xx", 600, false},
	} {
		var c crv3.CustomResponse
		if err := protojson.Unmarshal([]byte(matcherJSON(tc.input, tc.value, local)), &c); err != nil {
			t.Fatal(err)
		}
		fc, err := compileConfig(&c, "c")
		if err != nil {
			t.Fatal(err)
		}
		_, ok := fc.m.Match(&matcher.Data{Resp: &headers.Response{Status: tc.status}})
		if ok != tc.match {
			t.Errorf("%s %s on %d: match %v, want %v", tc.input, tc.value, tc.status, ok, tc.match)
		}
	}
}
