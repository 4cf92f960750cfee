package matcher

import (
	"strings"
	"testing"

	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
)

func decode(t *testing.T, y string) *xdsmatcherv3.Matcher {
	t.Helper()
	m := &xdsmatcherv3.Matcher{}
	if _, err := config.Decode([]byte(y), m, ""); err != nil {
		t.Fatal(err)
	}
	return m
}

const (
	hdr   = `{name: h, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: x}}`
	query = `{name: q, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestQueryParamMatchInput, query_param: x}}`
	act   = `{action: {name: %s, typed_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: %s}}}`
)

func action(v string) string { return strings.ReplaceAll(act, "%s", v) }

// headersOnly admits request header inputs alone.
func headersOnly(cfg proto.Message, path string) error {
	if _, ok := cfg.(*matcherv3.HttpRequestHeaderMatchInput); ok {
		return nil
	}
	return config.Errorf(path, "no")
}

func compileAction(tc *xdscorev3.TypedExtensionConfig, path string) (any, error) {
	return tc.GetName(), nil
}

// TestCompileWithInput: Options.Input vets every input — trees, single
// predicates inside and/or/not, nested matchers — at its path.
func TestCompileWithInput(t *testing.T) {
	cases := []struct{ yaml, path string }{
		{`{matcher_tree: {input: ` + query + `, exact_match_map: {map: {a: ` + action("a") + `}}}}`, "m.matcher_tree.input.typed_config"},
		{`{matcher_list: {matchers: [{predicate: {or_matcher: {predicate: [{single_predicate: {input: ` + hdr + `, value_match: {exact: a}}},
		   {not_matcher: {single_predicate: {input: ` + query + `, value_match: {exact: a}}}}]}}, on_match: ` + action("a") + `}]}}`,
			"m.matcher_list.matchers[0].predicate.or_matcher.predicate[1].not_matcher.single_predicate.input.typed_config"},
		{`{matcher_tree: {input: ` + hdr + `, exact_match_map: {map: {a: {matcher: {matcher_tree: {input: ` + query + `, prefix_match_map: {map: {b: ` + action("b") + `}}}}}}}}}`,
			"m.matcher_tree.exact_match_map.map[a].matcher.matcher_tree.input.typed_config"},
		{`{on_no_match: {matcher: {matcher_list: {matchers: [{predicate: {single_predicate: {input: ` + query + `, value_match: {exact: a}}}, on_match: ` + action("a") + `}]}}}}`,
			"m.on_no_match.matcher.matcher_list.matchers[0].predicate.single_predicate.input.typed_config"},
	}
	for _, tc := range cases {
		m := decode(t, tc.yaml)
		if _, err := Compile(m, "m", compileAction); err != nil {
			t.Errorf("%s: without Options.Input: %v", tc.yaml, err)
		}
		_, err := CompileWith(m, "m", Options{Action: compileAction, Input: headersOnly})
		if err == nil || err.Error() != tc.path+": no" {
			t.Errorf("%s:\n got %v\nwant %s: no", tc.yaml, err, tc.path)
		}
	}

	m, err := CompileWith(decode(t, `{matcher_tree: {input: `+hdr+`, exact_match_map: {map: {a: `+action("a")+`}}}, on_no_match: `+action("none")+`}`),
		"m", Options{Action: compileAction, Input: headersOnly})
	if err != nil {
		t.Fatal(err)
	}
	r := &headers.Request{}
	r.Add("x", "a")
	if a, ok := m.Match(&Data{Req: r}); !ok || a != "a" {
		t.Errorf("x: a matched %v %v", a, ok)
	}
	if a, ok := m.Match(&Data{Req: &headers.Request{}}); !ok || a != "none" {
		t.Errorf("no x matched %v %v", a, ok)
	}
}
