package composite

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	_ "github.com/legateproxy/legate/internal/filters/http/fault"
	"github.com/legateproxy/legate/internal/filters/http/match_delegate"
	_ "github.com/legateproxy/legate/internal/hcm" // the router, a terminal filter
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
)

const (
	composite  = `"@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite`
	fault      = `{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, abort: {http_status: 418, percentage: {numerator: 100}}}}`
	execAction = `"@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction`
)

// matcherWith is an ExtensionWithMatcher around filter whose x-a: 1
// request header selects the action.
func matcherWith(filter, act string) string {
	return `{"@type": type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher,
	  extension_config: {name: x, typed_config: {` + filter + `}},
	  xds_matcher: {matcher_tree: {input: {name: h, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: x-a}},
	    exact_match_map: {map: {"1": {action: {name: a, typed_config: {` + act + `}}}}}}}}`
}

func compileFilter(t *testing.T, yaml string) error {
	t.Helper()
	a := &anypb.Any{}
	if _, err := config.Decode([]byte(yaml), a, "f"); err != nil {
		t.Fatalf("parse %s: %v", yaml, err)
	}
	r, err := extension.Lookup(extension.HTTPFilter, a, "f")
	if err != nil {
		return err
	}
	ctx := &httpfilter.Context{Stats: stats.NewStore(), StatPrefix: "http.x."}
	_, err = r.Ext.Factory.(httpfilter.Factory).Compile(ctx, r.Config, "f")
	return err
}

// TestCompile: what the composite filter and its ExecuteFilterAction
// accept and refuse, under ExtensionWithMatcher and with its own matcher.
func TestCompile(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"delegates to fault", matcherWith(composite, execAction+`, typed_config: `+fault), ""},
		{"sample_percent", matcherWith(composite, execAction+`, sample_percent: {default_value: {numerator: 50}}, typed_config: `+fault), ""},
		{"own matcher", `{` + composite + `, matcher: {matcher_tree: {input: {name: h, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: x-a}}, exact_match_map: {map: {"1": {action: {name: a, typed_config: {` + execAction + `, typed_config: ` + fault + `}}}}}}}}`, ""},
		{"no typed_config", matcherWith(composite, execAction), "needs typed_config"},
		{"dynamic_config", matcherWith(composite, execAction+`, dynamic_config: {name: d, config_discovery: {config_source: {ads: {}}, type_urls: [type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault]}}`), "dynamic_config: a delegated filter from extension config discovery is not supported"},
		{"both", matcherWith(composite, execAction+`, typed_config: `+fault+`, dynamic_config: {name: d, config_discovery: {config_source: {ads: {}}, type_urls: [type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault]}}`), "Only one of `dynamic_config` or `typed_config` can be set."},
		{"filter_chain", matcherWith(composite, execAction+`, filter_chain: {typed_config: [`+fault+`]}`), "filter_chain: a delegated chain of filters is not supported"},
		{"filter_chain_name", matcherWith(composite, execAction+`, filter_chain_name: c`), "filter_chain_name: a named delegated chain"},
		{"named_filter_chains", `{` + composite + `, named_filter_chains: {c: {typed_config: [` + fault + `]}}}`, "named_filter_chains: named delegated filter chains is not supported"},
		{"terminal", matcherWith(composite, execAction+`, typed_config: {name: r, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}`), "cannot be delegated to"},
		{"bad delegated config", matcherWith(composite, execAction+`, typed_config: {name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, abort: {http_status: 99, percentage: {numerator: 100}}}}`), "http_status"},
		{"action for a filter that takes none", matcherWith(`"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault`, execAction+`, typed_config: `+fault), "must be SkipFilter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := compileFilter(t, tc.yaml)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestReceiver: the composite config takes match_delegate's actions.
func TestReceiver(t *testing.T) {
	var _ match_delegate.ActionReceiver = (*filterConfig)(nil)
	if c := (&filterConfig{}).NewFilterWithAction(nil, "not an action"); c != nil {
		t.Errorf("a foreign action made a filter: %v", c)
	}
}
