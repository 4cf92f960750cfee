package ext_proc

import (
	"errors"
	"testing"

	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/stats"
)

func TestRulesCheck(t *testing.T) {
	yes := wrapperspb.Bool(true)
	for _, tc := range []struct {
		name  string
		rules *mutationv3.HeaderMutationRules
		op    checkOp
		hdr   string
		value string
		want  checkResult
	}{
		{"plain header", nil, opSet, "x-foo", "v", resultOK},
		{"path by default", nil, opSet, ":path", "/p", resultOK},
		{"authority is routing", nil, opSet, ":authority", "h", resultIgnore},
		{"host is routing", nil, opSet, "host", "h", resultIgnore},
		{"method is routing", nil, opSet, ":method", "POST", resultIgnore},
		{"allow_all_routing", &mutationv3.HeaderMutationRules{AllowAllRouting: yes}, opSet, ":method", "POST", resultOK},
		{"invalid authority", &mutationv3.HeaderMutationRules{AllowAllRouting: yes}, opSet, ":authority", "a/b", resultIgnore},
		{"invalid scheme", &mutationv3.HeaderMutationRules{AllowAllRouting: yes}, opSet, ":scheme", "ftp", resultIgnore},
		{"x-envoy by default", nil, opSet, "x-envoy-foo", "1", resultIgnore},
		{"allow_envoy", &mutationv3.HeaderMutationRules{AllowEnvoy: yes}, opSet, "x-envoy-foo", "1", resultOK},
		{"disallow_system", &mutationv3.HeaderMutationRules{DisallowSystem: yes}, opSet, ":path", "/p", resultIgnore},
		{"disallow_is_error", &mutationv3.HeaderMutationRules{DisallowSystem: yes, DisallowIsError: yes}, opSet, ":path", "/p", resultFail},
		{"append to a pseudo-header", nil, opAppend, ":path", "/p", resultIgnore},
		{"remove a pseudo-header", &mutationv3.HeaderMutationRules{AllowAllRouting: yes}, opRemove, ":path", "", resultIgnore},
		{"remove host", &mutationv3.HeaderMutationRules{AllowAllRouting: yes, AllowExpression: &matcherv3.RegexMatcher{Regex: ".*"}}, opRemove, "host", "", resultIgnore},
		{"disallow_all", &mutationv3.HeaderMutationRules{DisallowAll: yes}, opSet, "x-foo", "v", resultIgnore},
		{"allow_expression beats disallow_all", &mutationv3.HeaderMutationRules{DisallowAll: yes, AllowExpression: &matcherv3.RegexMatcher{Regex: "x-f.*"}}, opSet, "x-foo", "v", resultOK},
		{"allow_expression matches whole names", &mutationv3.HeaderMutationRules{DisallowAll: yes, AllowExpression: &matcherv3.RegexMatcher{Regex: "x-f"}}, opSet, "x-foo", "v", resultIgnore},
		{"disallow_expression beats allow_expression", &mutationv3.HeaderMutationRules{AllowExpression: &matcherv3.RegexMatcher{Regex: ".*"}, DisallowExpression: &matcherv3.RegexMatcher{Regex: "x-secret"}}, opSet, "x-secret", "v", resultIgnore},
		{"bad value", nil, opSet, "x-foo", "a\nb", resultIgnore},
		{"status below 200", nil, opSet, ":status", "100", resultIgnore},
		{"status", nil, opSet, ":status", "418", resultOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := compileRules(tc.rules, "mutation_rules")
			if err != nil {
				t.Fatal(err)
			}
			if got := r.check(tc.op, tc.hdr, tc.value); got != tc.want {
				t.Fatalf("check(%v, %q, %q) = %v, want %v", tc.op, tc.hdr, tc.value, got, tc.want)
			}
		})
	}
}

func TestCompileRulesErrors(t *testing.T) {
	if _, err := compileRules(&mutationv3.HeaderMutationRules{AllowExpression: &matcherv3.RegexMatcher{Regex: "("}}, "r"); err == nil {
		t.Fatal("an invalid allow_expression compiled")
	}
}

func set(k, v string, action corev3.HeaderValueOption_HeaderAppendAction, appendFlag *bool) *corev3.HeaderValueOption {
	o := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)}, AppendAction: action}
	if appendFlag != nil {
		o.Append = wrapperspb.Bool(*appendFlag)
	}
	return o
}

func TestApplyHeaderMutation(t *testing.T) {
	tru := true
	for _, tc := range []struct {
		name     string
		rules    *mutationv3.HeaderMutationRules
		mut      *extprocsvc.HeaderMutation
		want     map[string][]string
		path     string
		rejected uint64
		err      string
	}{
		{name: "overwrite by default", mut: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set("x-a", "new", 0, nil)}},
			want: map[string][]string{"x-a": {"new"}}},
		{name: "append flag", mut: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set("x-a", "more", 0, &tru)}},
			want: map[string][]string{"x-a": {"old", "more"}}},
		{name: "add if absent keeps", mut: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
			set("x-a", "no", corev3.HeaderValueOption_ADD_IF_ABSENT, nil), set("x-b", "yes", corev3.HeaderValueOption_ADD_IF_ABSENT, nil)}},
			want: map[string][]string{"x-a": {"old"}, "x-b": {"yes"}}},
		{name: "overwrite if exists", mut: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
			set("x-a", "new", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS, nil), set("x-b", "no", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS, nil)}},
			want: map[string][]string{"x-a": {"new"}, "x-b": nil}},
		{name: "remove", mut: &extprocsvc.HeaderMutation{RemoveHeaders: []string{"X-A"}}, want: map[string][]string{"x-a": nil}},
		{name: "path", mut: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set(":path", "/new", 0, nil)}}, path: "/new"},
		{name: "ignored counted", mut: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set("x-envoy-a", "1", 0, nil), set(":authority", "evil", 0, nil)},
			RemoveHeaders: []string{":path"}}, want: map[string][]string{"x-envoy-a": nil}, rejected: 3},
		{name: "fail", rules: &mutationv3.HeaderMutationRules{DisallowIsError: wrapperspb.Bool(true)},
			mut: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set("x-envoy-a", "1", 0, nil)}}, rejected: 1, err: "Invalid attempt to modify x-envoy-a"},
		{name: "fail remove", rules: &mutationv3.HeaderMutationRules{DisallowIsError: wrapperspb.Bool(true)},
			mut: &extprocsvc.HeaderMutation{RemoveHeaders: []string{"host"}}, rejected: 1, err: "Invalid attempt to remove host"},
		{name: "bad name", mut: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set("bad name", "1", 0, nil)}}, rejected: 1,
			err: "Invalid character in set_headers mutation."},
		{name: "value and raw_value", mut: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
			{Header: &corev3.HeaderValue{Key: "x-a", Value: "a", RawValue: []byte("b")}}}}, rejected: 1,
			err: "Only one of value or raw_value in the HeaderValue message should be set."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := compileRules(tc.rules, "r")
			if err != nil {
				t.Fatal(err)
			}
			h := &headers.Request{Method: "GET", Path: "/p", Authority: "host", Scheme: "http"}
			h.Map.Add("x-a", "old")
			rej := stats.NewStore().Counter("rejected")
			err = applyHeaderMutation(tc.mut, requestMap{h}, false, r, rej)
			if tc.err != "" {
				var me *errMutation
				if !errors.As(err, &me) || me.msg != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				if got := h.Map.Values(k); len(got) != len(v) || (len(v) > 0 && got[len(got)-1] != v[len(v)-1]) {
					t.Fatalf("%s = %v, want %v", k, got, v)
				}
			}
			if tc.path != "" && h.Path != tc.path {
				t.Fatalf(":path = %q", h.Path)
			}
			if h.Authority != "host" {
				t.Fatalf(":authority changed to %q", h.Authority)
			}
			if rej.Value() != tc.rejected {
				t.Fatalf("rejected = %d, want %d", rej.Value(), tc.rejected)
			}
		})
	}
}

func TestApplyBodyMutation(t *testing.T) {
	b, ok := applyBodyMutation(&extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: []byte("new")}}, []byte("old"))
	if !ok || string(b) != "new" {
		t.Fatalf("body: %q %v", b, ok)
	}
	b, ok = applyBodyMutation(&extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_ClearBody{ClearBody: true}}, []byte("old"))
	if !ok || len(b) != 0 {
		t.Fatalf("clear: %q %v", b, ok)
	}
	b, ok = applyBodyMutation(nil, []byte("old"))
	if ok || string(b) != "old" {
		t.Fatalf("none: %q %v", b, ok)
	}
}

func TestForwardRules(t *testing.T) {
	ex := func(s string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
	}
	allowed, _ := compileList(&matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{ex("x-a"), ex("x-b")}}, "a")
	disallowed, _ := compileList(&matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{ex("x-b")}}, "d")
	for _, tc := range []struct {
		f    *forwardRules
		name string
		want bool
	}{
		{nil, "x-z", true},
		{&forwardRules{allowed: allowed}, "x-a", true},
		{&forwardRules{allowed: allowed}, "x-z", false},
		{&forwardRules{allowed: allowed, disallowed: disallowed}, "x-b", false},
		{&forwardRules{disallowed: disallowed}, "x-z", true},
	} {
		if got := tc.f.forward(tc.name); got != tc.want {
			t.Errorf("forward(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}
