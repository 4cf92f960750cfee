package strmatch

import (
	"strings"
	"testing"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/legateproxy/legate/internal/config"
)

func TestCompile(t *testing.T) {
	cases := []struct {
		yaml      string
		yes, no   []string
		wantError string
	}{
		{yaml: `{exact: Foo}`, yes: []string{"Foo"}, no: []string{"foo", "Foox"}},
		{yaml: `{exact: Foo, ignore_case: true}`, yes: []string{"foo", "FOO"}, no: []string{"fo"}},
		{yaml: `{prefix: /Api}`, yes: []string{"/Api", "/Api/x"}, no: []string{"/api/x", "/Ap"}},
		{yaml: `{prefix: /Api, ignore_case: true}`, yes: []string{"/api/x"}, no: []string{"/ap"}},
		{yaml: `{suffix: .JS}`, yes: []string{"a.JS"}, no: []string{"a.js", "JS"}},
		{yaml: `{suffix: .JS, ignore_case: true}`, yes: []string{"a.js"}, no: []string{"js"}},
		{yaml: `{contains: Mid}`, yes: []string{"aMidb"}, no: []string{"amidb"}},
		{yaml: `{contains: Mid, ignore_case: true}`, yes: []string{"aMIDb", "mid"}, no: []string{"mi"}},
		// safe_regex matches the whole value.
		{yaml: `{safe_regex: {regex: "[a-z]+[0-9]"}}`, yes: []string{"abc1"}, no: []string{"abc1x", "xabc", "ABC1"}},
		{yaml: `{safe_regex: {regex: "[a-z]+[0-9]"}, ignore_case: true}`, yes: []string{"ABC1"}, no: []string{"ABC"}},
		{yaml: `{safe_regex: {regex: "("}}`, wantError: `m.safe_regex.regex: invalid regex "("`},
		{yaml: `{}`, wantError: "m: string matcher has no pattern"},
	}
	for _, tc := range cases {
		sm := &matcherv3.StringMatcher{}
		if _, err := config.Decode([]byte(tc.yaml), sm, ""); err != nil {
			t.Fatal(err)
		}
		m, err := Compile(sm, "m")
		if tc.wantError != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantError) {
				t.Errorf("%s: error %v, want %s", tc.yaml, err, tc.wantError)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.yaml, err)
		}
		for _, v := range tc.yes {
			if !m.Match(v) {
				t.Errorf("%s does not match %q", tc.yaml, v)
			}
		}
		for _, v := range tc.no {
			if m.Match(v) {
				t.Errorf("%s matches %q", tc.yaml, v)
			}
		}
	}
	for _, tc := range []struct {
		m       Matcher
		yes, no string
	}{{Exact("a"), "a", "A"}, {Prefix("/a"), "/ab", "/b"}, {Suffix("z"), "az", "za"}, {Contains("m"), "amb", "ab"}} {
		if !tc.m.Match(tc.yes) || tc.m.Match(tc.no) {
			t.Errorf("%+v: %q %v, %q %v", tc.m, tc.yes, tc.m.Match(tc.yes), tc.no, tc.m.Match(tc.no))
		}
	}
}
