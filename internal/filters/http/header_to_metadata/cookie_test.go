package header_to_metadata

import (
	"strings"
	"testing"

	h2mv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_to_metadata/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func TestCookieValue(t *testing.T) {
	lines := []string{`a=1; version="v2"; bad; b=`, "c=3;d=4", "version=second"}
	for name, want := range map[string]string{"a": "1", "version": "v2", "bad": "", "b": "", "c": "3", "d": "4", "e": "", "Version": ""} {
		if got := cookieValue(lines, name); got != want {
			t.Errorf("cookieValue(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestCookieRuleErrors(t *testing.T) {
	for _, tc := range []struct{ js, err string }{
		{`{"request_rules": [{"header": "x", "cookie": "c", "on_header_present": {"key": "k"}}]}`, "c.request_rules[0]: Cannot specify both header and cookie in the same rule"},
		{`{"request_rules": [{"on_header_present": {"key": "k"}}]}`, "c.request_rules[0]: One of Cookie or Header option needs to be specified"},
		{`{"request_rules": [{"cookie": "c", "on_header_present": {"key": "k"}, "remove": true}]}`, "c.request_rules[0].remove: Cannot specify remove for cookie"},
		{`{"request_rules": [{"cookie": "c"}]}`, "rule for cookie 'c' has neither `on_header_present` nor `on_header_missing` set"},
	} {
		var c h2mv3.Config
		if err := protojson.Unmarshal([]byte(tc.js), &c); err != nil {
			t.Fatal(err)
		}
		if _, err := compileConfig(nil, &c, "c"); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want %q", tc.js, err, tc.err)
		}
	}
}

func TestCookieRule(t *testing.T) {
	var c h2mv3.Config
	if err := protojson.Unmarshal([]byte(`{"request_rules": [
	  {"cookie": "version", "on_header_present": {"metadata_namespace": "envoy.lb", "key": "version"}, "on_header_missing": {"metadata_namespace": "envoy.lb", "key": "default", "value": "true"}},
	  {"cookie": "weight", "on_header_present": {"key": "w", "type": "NUMBER"}}]}`), &c); err != nil {
		t.Fatal(err)
	}
	fc, err := compileConfig(nil, &c, "c")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cookies  []string
		version  string
		fallback bool
		weight   float64
	}{
		{[]string{"theme=dark; version=v2", "weight=3"}, "v2", false, 3},
		{[]string{"theme=dark"}, "", true, 0},
		{nil, "", true, 0},
		{[]string{"version="}, "", true, 0}, // an empty cookie is missing, as Envoy
	} {
		h := &headers.Request{Method: "GET", Path: "/"}
		for _, v := range tc.cookies {
			h.Map.Add("cookie", v)
		}
		info := &streaminfo.Info{}
		apply(fc.request, &h.Map, info, nil, true)
		lb := info.DynamicMetadata["envoy.lb"].GetFields()
		if got := lb["version"].GetStringValue(); got != tc.version {
			t.Errorf("%q: version %q, want %q", tc.cookies, got, tc.version)
		}
		if got := lb["default"].GetStringValue() == "true"; got != tc.fallback {
			t.Errorf("%q: default set %v, want %v", tc.cookies, got, tc.fallback)
		}
		if got := info.DynamicMetadata[name].GetFields()["w"].GetNumberValue(); got != tc.weight {
			t.Errorf("%q: weight %v, want %v", tc.cookies, got, tc.weight)
		}
		if len(h.Map.Values("cookie")) != len(tc.cookies) {
			t.Errorf("%q: the cookie header changed", tc.cookies)
		}
	}
}
