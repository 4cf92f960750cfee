package route

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// decodeRateLimits decodes a flow-style rate_limits list through a
// virtual host, validated as the loader does.
func decodeRateLimits(t *testing.T, list string) []*routev3.RateLimit {
	t.Helper()
	vh := &routev3.VirtualHost{}
	if _, err := config.Decode([]byte(`{name: v, domains: ["*"], rate_limits: `+list+`}`), vh, ""); err != nil {
		t.Fatalf("%s: %v", list, err)
	}
	if err := config.Validate(vh, ""); err != nil {
		t.Fatalf("%s: %v", list, err)
	}
	return vh.GetRateLimits()
}

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// render prints descriptors as [(k=v,k=v) limit=n/UNIT] for comparison.
func render(ds []Descriptor) string {
	var parts []string
	for _, d := range ds {
		var es []string
		for _, e := range d.Entries {
			es = append(es, e.Key+"="+e.Value)
		}
		s := "(" + strings.Join(es, ",") + ")"
		if d.Limit != nil {
			s += fmt.Sprintf(" limit=%d/%s", d.Limit.RequestsPerUnit, d.Limit.Unit)
		}
		parts = append(parts, s)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// TestRateLimitDescriptors: each rate limit action builds its descriptor
// entry from the request as Envoy's router_ratelimit.cc does, an action
// that cannot produce one drops the whole descriptor (or only its entry
// with skip_if_absent), and the limit override comes from dynamic metadata.
func TestRateLimitDescriptors(t *testing.T) {
	dyn := map[string]*structpb.Struct{
		"envoy.lb": mustStruct(t, map[string]any{"tenant": "acme", "n": 3.0, "nested": map[string]any{"plan": "gold"},
			"override": map[string]any{"requests_per_unit": 42.0, "unit": "HOUR"}}),
	}
	routeMD := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"meta": mustStruct(t, map[string]any{"team": "payments"})}}
	cases := []struct {
		name, list string
		path       string
		hdr        []string // name, value pairs
		remote     string
		want       string
	}{
		{name: "generic key default", list: `[{actions: [{generic_key: {descriptor_value: v}}]}]`, want: "[(generic_key=v)]"},
		{name: "generic key named", list: `[{actions: [{generic_key: {descriptor_key: k, descriptor_value: "%REQ(x)%"}}]}]`, want: "[(k=%REQ(x)%)]"},
		{name: "request header", list: `[{actions: [{request_headers: {header_name: X-User, descriptor_key: user}}]}]`,
			hdr: []string{"x-user", "alice", "x-user", "bob"}, want: "[(user=alice)]"},
		{name: "request header absent", list: `[{actions: [{request_headers: {header_name: x-user, descriptor_key: user}}]}]`, want: "[]"},
		{name: "request header absent skipped", list: `[{actions: [{generic_key: {descriptor_value: g}}, {request_headers: {header_name: x-user, descriptor_key: user, skip_if_absent: true}}]}]`,
			want: "[(generic_key=g)]"},
		{name: "pseudo header", list: `[{actions: [{request_headers: {header_name: ":path", descriptor_key: path}}]}]`, path: "/a?b=1", want: "[(path=/a?b=1)]"},
		{name: "remote address", list: `[{actions: [{remote_address: {}}]}]`, want: "[(remote_address=10.1.2.3)]"},
		{name: "remote address v6", list: `[{actions: [{remote_address: {}}]}]`, remote: "[2001:db8::7]:9", want: "[(remote_address=2001:db8::7)]"},
		{name: "masked default", list: `[{actions: [{masked_remote_address: {}}]}]`, want: "[(masked_remote_address=10.1.2.3/32)]"},
		{name: "masked v4", list: `[{actions: [{masked_remote_address: {v4_prefix_mask_len: 24}}]}]`, want: "[(masked_remote_address=10.1.2.0/24)]"},
		{name: "masked v6", list: `[{actions: [{masked_remote_address: {v6_prefix_mask_len: 64}}]}]`, remote: "[2001:abcd:ef01:2345:6789:abcd:ef01:234]:1",
			want: "[(masked_remote_address=2001:abcd:ef01:2345::/64)]"},
		{name: "clusters", list: `[{actions: [{source_cluster: {}}, {destination_cluster: {}}]}]`, want: "[(source_cluster=edge,destination_cluster=backend)]"},
		{name: "header match", list: `[{actions: [{header_value_match: {descriptor_value: get, headers: [{name: ":method", string_match: {exact: GET}}]}}]}]`,
			want: "[(header_match=get)]"},
		{name: "header match keyed", list: `[{actions: [{header_value_match: {descriptor_key: m, descriptor_value: v, headers: [{name: x-a, present_match: true}]}}]}]`,
			hdr: []string{"x-a", "1"}, want: "[(m=v)]"},
		{name: "header no match", list: `[{actions: [{header_value_match: {descriptor_value: v, headers: [{name: x-a, present_match: true}]}}]}]`, want: "[]"},
		{name: "header expect no match", list: `[{actions: [{header_value_match: {descriptor_value: v, expect_match: false, headers: [{name: x-a, present_match: true}]}}]}]`,
			want: "[(header_match=v)]"},
		{name: "header expect no match matched", list: `[{actions: [{header_value_match: {descriptor_value: v, expect_match: false, headers: [{name: x-a, present_match: true}]}}]}]`,
			hdr: []string{"x-a", "1"}, want: "[]"},
		{name: "query match", list: `[{actions: [{query_parameter_value_match: {descriptor_value: dbg, query_parameters: [{name: debug, string_match: {exact: "1"}}]}}]}]`,
			path: "/x?debug=1", want: "[(query_match=dbg)]"},
		{name: "query no match", list: `[{actions: [{query_parameter_value_match: {descriptor_value: dbg, query_parameters: [{name: debug, present_match: true}]}}]}]`,
			path: "/x?other=1", want: "[]"},
		{name: "query parameter", list: `[{actions: [{query_parameters: {query_parameter_name: "api key", descriptor_key: key}}]}]`,
			path: "/x?a=b&api%20key=s%2F1", want: "[(key=s/1)]"},
		{name: "query parameter absent", list: `[{actions: [{query_parameters: {query_parameter_name: k, descriptor_key: key}}]}]`, path: "/x", want: "[]"},
		{name: "dynamic metadata", list: `[{actions: [{metadata: {descriptor_key: tenant, metadata_key: {key: envoy.lb, path: [{key: tenant}]}}}]}]`,
			want: "[(tenant=acme)]"},
		{name: "nested metadata", list: `[{actions: [{metadata: {descriptor_key: plan, metadata_key: {key: envoy.lb, path: [{key: nested}, {key: plan}]}}}]}]`,
			want: "[(plan=gold)]"},
		{name: "non-string metadata uses default", list: `[{actions: [{metadata: {descriptor_key: n, default_value: d, metadata_key: {key: envoy.lb, path: [{key: n}]}}}]}]`,
			want: "[(n=d)]"},
		{name: "missing metadata", list: `[{actions: [{metadata: {descriptor_key: x, metadata_key: {key: envoy.lb, path: [{key: missing}]}}}]}]`, want: "[]"},
		{name: "missing metadata skipped", list: `[{actions: [{generic_key: {descriptor_value: g}}, {metadata: {descriptor_key: x, skip_if_absent: true, metadata_key: {key: nope, path: [{key: missing}]}}}]}]`,
			want: "[(generic_key=g)]"},
		{name: "route entry metadata", list: `[{actions: [{metadata: {descriptor_key: team, source: ROUTE_ENTRY, metadata_key: {key: meta, path: [{key: team}]}}}]}]`,
			want: "[(team=payments)]"},
		{name: "deprecated dynamic_metadata", list: `[{actions: [{dynamic_metadata: {descriptor_key: tenant, metadata_key: {key: envoy.lb, path: [{key: tenant}]}}}]}]`,
			want: "[(tenant=acme)]"},
		{name: "limit override", list: `[{actions: [{generic_key: {descriptor_value: o}}], limit: {dynamic_metadata: {metadata_key: {key: envoy.lb, path: [{key: override}]}}}}]`,
			want: "[(generic_key=o) limit=42/HOUR]"},
		{name: "invalid limit override", list: `[{actions: [{generic_key: {descriptor_value: o}}], limit: {dynamic_metadata: {metadata_key: {key: envoy.lb, path: [{key: tenant}]}}}}]`,
			want: "[(generic_key=o)]"},
		{name: "two entries", list: `[{actions: [{generic_key: {descriptor_value: a}}]}, {actions: [{remote_address: {}}, {request_headers: {header_name: x-user, descriptor_key: user}}]}, {actions: [{generic_key: {descriptor_value: b}}]}]`,
			want: "[(generic_key=a) (generic_key=b)]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pol, err := CompileRateLimits(decodeRateLimits(t, tc.list), "rate_limits", RateLimitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			req := &headers.Request{Method: "GET", Path: "/", Authority: "example.com", Scheme: "http"}
			if tc.path != "" {
				req.Path = tc.path
			}
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				req.Map.Add(tc.hdr[i], tc.hdr[i+1])
			}
			remote := "10.1.2.3:5000"
			if tc.remote != "" {
				remote = tc.remote
			}
			info := &streaminfo.Info{DownstreamRemote: netip.MustParseAddrPort(remote), DynamicMetadata: dyn}
			in := &DescriptorInput{LocalCluster: "edge", Request: req, Info: info, Cluster: "backend",
				Route: &Route{Kind: Forward, Metadata: routeMD}}
			var got []Descriptor
			for _, e := range pol.Stage(0) {
				got = e.Populate(got, in)
			}
			if r := render(got); r != tc.want {
				t.Errorf("descriptors %s, want %s", r, tc.want)
			}
		})
	}
}

// TestRateLimitPolicy: entries are grouped by stage, the filter-level
// options come through, and the virtual host and route compile theirs.
func TestRateLimitPolicy(t *testing.T) {
	pol, err := CompileRateLimits(decodeRateLimits(t, `[{stage: 1, actions: [{generic_key: {descriptor_value: a}}]},
		{disable_key: off, apply_on_stream_done: true, x_ratelimit_option: DRAFT_VERSION_03, actions: [{generic_key: {descriptor_value: b}}]},
		{stage: 1, actions: [{generic_key: {descriptor_value: c}}]}]`), "rate_limits", RateLimitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pol.Entries()) != 3 || len(pol.Stage(1)) != 2 || len(pol.Stage(0)) != 1 || len(pol.Stage(11)) != 0 {
		t.Fatalf("stages: %d entries, stage 0 %d, stage 1 %d", len(pol.Entries()), len(pol.Stage(0)), len(pol.Stage(1)))
	}
	if e := pol.Stage(0)[0]; e.DisableKey != "off" || !e.ApplyOnStreamDone || e.XRateLimit != XRateLimitDraft03 {
		t.Errorf("entry settings %+v", e)
	}
	var nilPolicy *RateLimitPolicy
	if !nilPolicy.Empty() || pol.Empty() {
		t.Error("Empty")
	}

	tbl := compileYAML(t, `
virtual_hosts:
- name: v
  domains: ["*"]
  rate_limits: [{actions: [{remote_address: {}}]}]
  routes:
  - match: {prefix: /a}
    route: {cluster: c, rate_limits: [{actions: [{generic_key: {descriptor_value: a}}]}], include_vh_rate_limits: true}
  - match: {prefix: /}
    route: {cluster: c}
`)
	vh := tbl.star
	if vh.RateLimits.Empty() || len(vh.Routes) != 2 {
		t.Fatal("virtual host rate_limits not compiled")
	}
	if a := vh.Routes[0].Action; a.RateLimits.Empty() || !a.IncludeVHRateLimits {
		t.Errorf("route /a: rate_limits %v include_vh %v", a.RateLimits, a.IncludeVHRateLimits)
	}
	if a := vh.Routes[1].Action; !a.RateLimits.Empty() || a.IncludeVHRateLimits {
		t.Error("route /: has rate limits")
	}
}

// TestRateLimitHitsAddend: hits_addend (filter-level lists only) as a
// number or a single substitution field; a value that is no number drops
// the descriptor.
func TestRateLimitHitsAddend(t *testing.T) {
	compileValue := func(s string) (Value, error) {
		return valueFunc(func(dst []byte, info *streaminfo.Info) []byte { return append(dst, info.RouteName...) }), nil
	}
	pol, err := CompileRateLimits(decodeRateLimits(t, `[{actions: [{generic_key: {descriptor_value: n}}], hits_addend: {number: 5}},
		{actions: [{generic_key: {descriptor_value: f}}], hits_addend: {format: "%ROUTE_NAME%", is_negative_hits: true}}]`),
		"rate_limits", RateLimitOptions{Filter: true, CompileValue: compileValue})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		route string
		want  string
	}{{"7", "n:5 f:-7"}, {"x", "n:5"}} {
		in := &DescriptorInput{Request: &headers.Request{Path: "/"}, Info: &streaminfo.Info{RouteName: tc.route}}
		var got []Descriptor
		for _, e := range pol.Entries() {
			got = e.Populate(got, in)
		}
		var parts []string
		for _, d := range got {
			sign := ""
			if d.NegativeHits {
				sign = "-"
			}
			parts = append(parts, fmt.Sprintf("%s:%s%d", d.Entries[0].Value, sign, *d.HitsAddend))
		}
		if s := strings.Join(parts, " "); s != tc.want {
			t.Errorf("route name %q: %s, want %s", tc.route, s, tc.want)
		}
	}
}

type valueFunc func(dst []byte, info *streaminfo.Info) []byte

func (f valueFunc) Append(dst []byte, info *streaminfo.Info) []byte { return f(dst, info) }

// TestRateLimitCompileErrors: what Envoy does not support in a place, and
// what Legate does not implement, is an error naming its path.
func TestRateLimitCompileErrors(t *testing.T) {
	cases := []struct {
		list   string
		filter bool
		want   string
	}{
		{`[{actions: [{extension: {name: x, typed_config: {"@type": type.googleapis.com/google.protobuf.Empty}}}]}]`, false,
			"rate_limits[0].actions[0].extension: field Action.extension is not supported by legate"},
		{`[{actions: [{remote_address_match: {descriptor_value: x, address_matcher: {ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]}}}]}]`, false,
			"rate_limits[0].actions[0].remote_address_match: field Action.remote_address_match is not supported by legate"},
		{`[{actions: [{metadata: {descriptor_key: k, source: CLUSTER_ENTRY, metadata_key: {key: a, path: [{key: b}]}}}]}]`, false,
			"rate_limits[0].actions[0].metadata.source: metadata source CLUSTER_ENTRY is not supported by legate"},
		{`[{actions: [{generic_key: {descriptor_value: v, default_value: d}}]}]`, false,
			"rate_limits[0].actions[0].generic_key.default_value: default_value"},
		{`[{actions: [{generic_key: {descriptor_value: v}}], hits_addend: {number: 1}}]`, false,
			"rate_limits[0].hits_addend: hits_addend is only supported in the rate limit filter's rate_limits"},
		{`[{stage: 1, actions: [{generic_key: {descriptor_value: v}}]}]`, true, "rate_limits[0].stage: stage is not supported"},
		{`[{disable_key: k, actions: [{generic_key: {descriptor_value: v}}]}]`, true, "rate_limits[0].disable_key: disable_key is not supported"},
		{`[{actions: [{dynamic_metadata: {descriptor_key: k, metadata_key: {key: a, path: [{key: b}]}}}]}]`, true,
			"rate_limits[0].actions[0].dynamic_metadata: the dynamic_metadata action is not supported"},
		{`[{actions: [{generic_key: {descriptor_value: v}}], hits_addend: {format: "%A%"}}]`, true,
			"rate_limits[0].hits_addend.format: substitution formats are not available here"},
	}
	for _, tc := range cases {
		_, err := CompileRateLimits(decodeRateLimits(t, tc.list), "rate_limits", RateLimitOptions{Filter: tc.filter})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %s", tc.list, err, tc.want)
		}
	}
}
