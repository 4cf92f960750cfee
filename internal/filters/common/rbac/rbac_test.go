package rbac

import (
	"crypto/x509"
	"net/netip"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func engineOf(t *testing.T, y string) *Engine {
	t.Helper()
	r := &rbacv3.RBAC{}
	if _, err := config.Decode([]byte(y), r, "rbac"); err != nil {
		t.Fatal(err)
	}
	e, err := Compile(r, "rbac")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestPermissionsAndPrincipals(t *testing.T) {
	req := &headers.Request{Method: "GET", Path: "/admin/x?q=1", Authority: "a.example"}
	req.Map.Add("x-role", "ops")
	info := &streaminfo.Info{
		DownstreamDirectRemote: netip.MustParseAddrPort("10.1.2.3:5555"),
		DownstreamRemote:       netip.MustParseAddrPort("192.0.2.9:0"),
		DownstreamLocal:        netip.MustParseAddrPort("127.0.0.1:8443"),
		RequestedServerName:    "api.example",
		DownstreamTLS: &streaminfo.TLSInfo{PeerCert: &x509.Certificate{}, PeerURISAN: []string{"spiffe://td/ns/a/sa/client"},
			PeerDNSSAN: []string{"client.example"}, PeerSubject: "CN=client"},
	}
	info.SetDynamicMetadata("jwt", map[string]*structpb.Value{"claims": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
		"groups": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue("dev"), structpb.NewStringValue("admin")}})}})})
	ctx := &Ctx{Req: req, Info: info}
	allow := func(perm, princ string) string {
		return `{action: ALLOW, policies: {p: {permissions: [` + perm + `], principals: [` + princ + `]}}}`
	}
	cases := []struct {
		name, rules string
		allowed     bool
	}{
		{"any", allow("{any: true}", "{any: true}"), true},
		{"header exact", allow(`{header: {name: x-role, string_match: {exact: ops}}}`, "{any: true}"), true},
		{"header mismatch", allow(`{header: {name: x-role, string_match: {exact: dev}}}`, "{any: true}"), false},
		{":method pseudo-header", allow(`{header: {name: ":method", string_match: {exact: GET}}}`, "{any: true}"), true},
		{"url_path ignores the query", allow(`{url_path: {path: {exact: /admin/x}}}`, "{any: true}"), true},
		{"and_rules", allow(`{and_rules: {rules: [{url_path: {path: {prefix: /admin}}}, {destination_port: 8443}]}}`, "{any: true}"), true},
		{"or_rules", allow(`{or_rules: {rules: [{destination_port: 1}, {destination_port_range: {start: 8000, end: 9000}}]}}`, "{any: true}"), true},
		{"not_rule", allow(`{not_rule: {url_path: {path: {prefix: /admin}}}}`, "{any: true}"), false},
		{"destination_ip", allow(`{destination_ip: {address_prefix: 127.0.0.0, prefix_len: 8}}`, "{any: true}"), true},
		{"requested_server_name", allow(`{requested_server_name: {suffix: .example}}`, "{any: true}"), true},
		{"metadata list contains", allow(`{metadata: {filter: jwt, path: [{key: claims}, {key: groups}], value: {list_match: {one_of: {string_match: {exact: admin}}}}}}`, "{any: true}"), true},
		{"authenticated URI SAN", allow("{any: true}", `{authenticated: {principal_name: {exact: "spiffe://td/ns/a/sa/client"}}}`), true},
		{"authenticated DNS SAN", allow("{any: true}", `{authenticated: {principal_name: {exact: client.example}}}`), true},
		{"authenticated subject", allow("{any: true}", `{authenticated: {principal_name: {exact: "CN=client"}}}`), true},
		{"authenticated other", allow("{any: true}", `{authenticated: {principal_name: {exact: other}}}`), false},
		{"direct_remote_ip is the socket peer", allow("{any: true}", `{direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}`), true},
		{"remote_ip is after XFF", allow("{any: true}", `{remote_ip: {address_prefix: 192.0.2.0, prefix_len: 24}}`), true},
		{"remote_ip not the socket peer", allow("{any: true}", `{remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}`), false},
		{"not_id", allow("{any: true}", `{not_id: {source_ip: {address_prefix: 10.1.2.3}}}`), false},
		{"DENY matching", `{action: DENY, policies: {p: {permissions: [{any: true}], principals: [{header: {name: x-role, present_match: true}}]}}}`, false},
		{"DENY not matching", `{action: DENY, policies: {p: {permissions: [{any: true}], principals: [{header: {name: x-other, present_match: true}}]}}}`, true},
		{"ALLOW without policies denies", `{action: ALLOW}`, false},
		{"DENY without policies allows", `{action: DENY}`, true},
	}
	for _, c := range cases {
		if got := engineOf(t, c.rules).Check(ctx); got.Allowed != c.allowed {
			t.Errorf("%s: allowed=%v, want %v (%+v)", c.name, got.Allowed, c.allowed, got)
		}
	}
	// As Envoy's AuthenticatedMatcher, a TLS connection without a client
	// certificate is authenticated; a plain one is not.
	noCert := &Ctx{Info: &streaminfo.Info{DownstreamTLS: &streaminfo.TLSInfo{}}}
	if !engineOf(t, allow("{any: true}", "{authenticated: {}}")).Check(noCert).Allowed {
		t.Error("authenticated: {} did not match a TLS connection without a client certificate")
	}
	if engineOf(t, allow("{any: true}", `{authenticated: {principal_name: {exact: "CN=client"}}}`)).Check(noCert).Allowed {
		t.Error("principal_name matched a connection without a certificate")
	}
	if engineOf(t, allow("{any: true}", "{authenticated: {}}")).Check(&Ctx{Info: &streaminfo.Info{}}).Allowed {
		t.Error("authenticated: {} matched a plain connection")
	}
	// Network context: header rules never match without a request.
	if engineOf(t, allow(`{header: {name: x-role, present_match: true}}`, "{any: true}")).Check(&Ctx{Info: info}).Allowed {
		t.Error("a header permission matched a connection")
	}
	// The first policy by name decides (Envoy keeps policies in a sorted map).
	e := engineOf(t, `{action: DENY, policies: {zeta: {permissions: [{any: true}], principals: [{any: true}]}, alpha: {permissions: [{any: true}], principals: [{any: true}]}}}`)
	if r := e.Check(ctx); r.Policy != "alpha" {
		t.Errorf("matched policy %q, want alpha", r.Policy)
	}
}

func TestCompileErrors(t *testing.T) {
	for _, y := range []string{
		`{action: ALLOW, policies: {p: {permissions: [{any: true}], principals: [{any: true}], condition: {const_expr: {bool_value: true}}, checked_condition: {expr: {const_expr: {bool_value: true}}}}}}`,
		`{action: ALLOW, policies: {p: {permissions: [{uri_template: {name: t, typed_config: {"@type": type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig, path_template: "/a/{x}"}}}], principals: [{any: true}]}}}`,
	} {
		r := &rbacv3.RBAC{}
		if _, err := config.Decode([]byte(y), r, "rbac"); err != nil {
			t.Fatal(err)
		}
		if _, err := Compile(r, "rbac"); err == nil {
			t.Errorf("%s: compiled, want an error naming what is not supported", y)
		} else {
			t.Log(err)
		}
	}
}
