package rbac

import (
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func compileYAML(t *testing.T, y string) (*filterConfig, *stats.Store, error) {
	t.Helper()
	r := &rbacv3.RBAC{}
	if _, err := config.Decode([]byte(y), r, "rbac"); err != nil {
		t.Fatal(err)
	}
	st := stats.NewStore()
	f, err := compile(&listener.Context{Stats: st, Log: slog.Default()}, r, "rbac")
	return f, st, err
}

// pipeConn is a listener.Conn over a pipe with the given record, and the
// client end.
func pipeConn(remote, local string, tlsInfo *streaminfo.TLSInfo, sni string) (*listener.Conn, net.Conn) {
	a, b := net.Pipe()
	return &listener.Conn{Conn: a, Remote: netip.MustParseAddrPort(remote), Local: netip.MustParseAddrPort(local), TLS: tlsInfo, SNI: sni}, b
}

// send writes data from the client and reads it through the filter.
func send(t *testing.T, tc *listener.Conn, client net.Conn, data string) (string, error) {
	t.Helper()
	go client.Write([]byte(data))
	buf := make([]byte, 64)
	n, err := tc.Conn.Read(buf)
	return string(buf[:n]), err
}

func TestDecisions(t *testing.T) {
	peer := &streaminfo.TLSInfo{PeerCert: &x509.Certificate{}, PeerURISAN: []string{"spiffe://td/ns/a/sa/client"}, PeerDNSSAN: []string{"client.example"}, PeerSubject: "CN=client"}
	allow := func(perm, princ string) string {
		return `{stat_prefix: t, rules: {action: ALLOW, policies: {p: {permissions: [` + perm + `], principals: [` + princ + `]}}}}`
	}
	cases := []struct {
		name, cfg string
		tls       *streaminfo.TLSInfo
		allowed   bool
	}{
		{"source_ip", allow("{any: true}", "{source_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}"), nil, true},
		{"source_ip other", allow("{any: true}", "{source_ip: {address_prefix: 192.168.0.0, prefix_len: 16}}"), nil, false},
		{"direct_remote_ip", allow("{any: true}", "{direct_remote_ip: {address_prefix: 10.1.2.3}}"), nil, true},
		{"remote_ip", allow("{any: true}", "{remote_ip: {address_prefix: 10.1.2.0, prefix_len: 24}}"), nil, true},
		{"destination_ip", allow("{destination_ip: {address_prefix: 127.0.0.1, prefix_len: 32}}", "{any: true}"), nil, true},
		{"destination_port", allow("{destination_port: 9000}", "{any: true}"), nil, true},
		{"destination_port other", allow("{destination_port: 9001}", "{any: true}"), nil, false},
		{"destination_port_range end is exclusive", allow("{destination_port_range: {start: 8000, end: 9000}}", "{any: true}"), nil, false},
		{"destination_port_range", allow("{destination_port_range: {start: 8000, end: 9001}}", "{any: true}"), nil, true},
		{"requested_server_name", allow("{requested_server_name: {exact: api.example}}", "{any: true}"), peer, true},
		{"and/or/not", allow("{and_rules: {rules: [{or_rules: {rules: [{destination_port: 1}, {destination_port: 9000}]}}, {not_rule: {destination_port: 2}}]}}", "{any: true}"), nil, true},
		{"not_id", allow("{any: true}", "{not_id: {source_ip: {address_prefix: 10.1.2.3}}}"), nil, false},
		{"authenticated without TLS", allow("{any: true}", "{authenticated: {}}"), nil, false},
		{"authenticated any TLS peer", allow("{any: true}", "{authenticated: {}}"), peer, true},
		// Envoy's AuthenticatedMatcher: any TLS connection is
		// authenticated, with a client certificate or not.
		{"authenticated TLS without a client certificate", allow("{any: true}", "{authenticated: {}}"), &streaminfo.TLSInfo{}, true},
		{"principal_name URI SAN", allow("{any: true}", `{authenticated: {principal_name: {exact: "spiffe://td/ns/a/sa/client"}}}`), peer, true},
		{"principal_name DNS SAN", allow("{any: true}", `{authenticated: {principal_name: {exact: client.example}}}`), peer, true},
		{"principal_name subject", allow("{any: true}", `{authenticated: {principal_name: {exact: "CN=client"}}}`), peer, true},
		{"principal_name other", allow("{any: true}", `{authenticated: {principal_name: {exact: other}}}`), peer, false},
		{"DENY action", `{stat_prefix: t, rules: {action: DENY, policies: {p: {permissions: [{any: true}], principals: [{source_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}]}}}}`, nil, false},
		{"empty rules deny", `{stat_prefix: t, rules: {}}`, nil, false},
		{"no rules allow", `{stat_prefix: t}`, nil, true},
		{"matcher", `{stat_prefix: t, matcher: {matcher_tree: {input: {name: ip, typed_config: {"@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourceIPInput}},
			exact_match_map: {map: {"10.1.2.3": {action: {name: a, typed_config: {"@type": type.googleapis.com/envoy.config.rbac.v3.Action, name: ok, action: ALLOW}}}}}}}}`, nil, true},
		{"matcher without a match denies", `{stat_prefix: t, matcher: {matcher_tree: {input: {name: ip, typed_config: {"@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourceIPInput}},
			exact_match_map: {map: {"10.9.9.9": {action: {name: a, typed_config: {"@type": type.googleapis.com/envoy.config.rbac.v3.Action, name: ok, action: ALLOW}}}}}}}}`, nil, false},
		{"matcher wins over rules", `{stat_prefix: t, rules: {action: DENY, policies: {p: {permissions: [{any: true}], principals: [{any: true}]}}},
			matcher: {matcher_list: {matchers: [{predicate: {single_predicate: {input: {name: sni, typed_config: {"@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.ServerNameInput}}, value_match: {exact: api.example}}},
			on_match: {action: {name: a, typed_config: {"@type": type.googleapis.com/envoy.config.rbac.v3.Action, name: sni, action: ALLOW}}}}]}}}`, peer, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, st, err := compileYAML(t, c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			tc, client := pipeConn("10.1.2.3:5555", "127.0.0.1:9000", c.tls, "api.example")
			defer client.Close()
			if err := f.OnNewConnection(tc); err != nil {
				t.Fatal(err)
			}
			got, err := send(t, tc, client, "hello")
			if c.allowed != (err == nil && got == "hello") {
				t.Fatalf("allowed=%v, want %v (read %q, %v)", err == nil, c.allowed, got, err)
			}
			if !c.allowed && !errors.Is(err, ErrDenied) {
				t.Fatalf("a denied read returned %v", err)
			}
			want := map[bool]string{true: "t.rbac.allowed", false: "t.rbac.denied"}[c.allowed]
			if f.enforced != nil {
				if v, _ := st.Value(want); v != 1 {
					t.Errorf("%s = %d, want 1", want, v)
				}
			}
		})
	}
}

// Envoy checks once, on the first data; the result is kept. Under
// CONTINUOUS it checks on every read, and a change of the connection's
// metadata between reads changes the decision.
func TestEnforcementType(t *testing.T) {
	rules := `rules: {action: DENY, policies: {p: {permissions: [{metadata: {filter: f, path: [{key: op}], value: {string_match: {exact: drop}}}}], principals: [{any: true}]}}}`
	for _, c := range []struct {
		mode     string
		denied   bool
		wantAllw int64
	}{{"ONE_TIME_ON_FIRST_BYTE", false, 1}, {"CONTINUOUS", true, 1}} {
		t.Run(c.mode, func(t *testing.T) {
			f, st, err := compileYAML(t, `{stat_prefix: "t.", enforcement_type: `+c.mode+`, `+rules+`}`)
			if err != nil {
				t.Fatal(err)
			}
			tc, client := pipeConn("10.1.2.3:5555", "127.0.0.1:9000", nil, "")
			defer client.Close()
			f.OnNewConnection(tc)
			if got, err := send(t, tc, client, "one"); err != nil || got != "one" {
				t.Fatalf("first read: %q, %v", got, err)
			}
			tc.SetMetadata("f", map[string]*structpb.Value{"op": structpb.NewStringValue("drop")})
			_, err = send(t, tc, client, "two")
			if (err != nil) != c.denied {
				t.Fatalf("second read error %v, want denied=%v", err, c.denied)
			}
			if v, _ := st.Value("t.rbac.allowed"); v != c.wantAllw {
				t.Errorf("t.rbac.allowed = %d, want %d", v, c.wantAllw)
			}
			wantDenied := int64(0)
			if c.denied {
				wantDenied = 1
			}
			if v, _ := st.Value("t.rbac.denied"); v != wantDenied {
				t.Errorf("t.rbac.denied = %d, want %d", v, wantDenied)
			}
		})
	}
}

// Shadow rules count under <stat_prefix>.rbac.<shadow_rules_stat_prefix>
// and record their result in the connection's dynamic metadata under
// prefixed keys, without closing anything.
func TestShadowRules(t *testing.T) {
	f, st, err := compileYAML(t, `{stat_prefix: tcp, shadow_rules_stat_prefix: "sh_",
		shadow_rules: {action: DENY, policies: {"block lan": {permissions: [{any: true}], principals: [{source_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}]}}}}`)
	if err != nil {
		t.Fatal(err)
	}
	tc, client := pipeConn("10.1.2.3:5555", "127.0.0.1:9000", nil, "")
	defer client.Close()
	f.OnNewConnection(tc)
	if got, err := send(t, tc, client, "hi"); err != nil || got != "hi" {
		t.Fatalf("shadow rules closed the connection: %q, %v", got, err)
	}
	if got, err := send(t, tc, client, "again"); err != nil || got != "again" {
		t.Fatalf("second read: %q, %v", got, err)
	}
	// Envoy's statPrefixJoin puts a dot after a prefix without one.
	if v, _ := st.Value("tcp.rbac.sh_.shadow_denied"); v != 1 {
		t.Errorf("tcp.rbac.sh_.shadow_denied = %d, want 1 (one check per connection)", v)
	}
	md := tc.Metadata[Name].GetFields()
	if md["sh_shadow_engine_result"].GetStringValue() != "denied" || md["sh_shadow_effective_policy_id"].GetStringValue() != "block lan" {
		t.Errorf("shadow metadata %v", md)
	}
	if v, ok := st.Value("tcp.rbac.allowed"); ok && v != 0 {
		t.Errorf("no enforced rules, yet tcp.rbac.allowed = %d", v)
	}
}

// A connection that sends nothing is not decided; one that half-closes
// without data is (Envoy's onData runs with end_stream).
func TestFirstData(t *testing.T) {
	f, st, err := compileYAML(t, `{stat_prefix: t, rules: {}}`)
	if err != nil {
		t.Fatal(err)
	}
	tc, client := pipeConn("10.1.2.3:5555", "127.0.0.1:9000", nil, "")
	f.OnNewConnection(tc)
	if v, _ := st.Value("t.rbac.denied"); v != 0 {
		t.Fatalf("decided before any data: denied = %d", v)
	}
	go client.Close()
	if _, err := tc.Conn.Read(make([]byte, 8)); !errors.Is(err, ErrDenied) {
		t.Fatalf("end of stream: %v, want the denial", err)
	}
	if v, _ := st.Value("t.rbac.denied"); v != 1 {
		t.Errorf("t.rbac.denied = %d, want 1", v)
	}
}

func TestDelayDeny(t *testing.T) {
	f, _, err := compileYAML(t, `{stat_prefix: t, rules: {}, delay_deny: 0.2s}`)
	if err != nil {
		t.Fatal(err)
	}
	tc, client := pipeConn("10.1.2.3:5555", "127.0.0.1:9000", nil, "")
	defer client.Close()
	f.OnNewConnection(tc)
	start := time.Now()
	if _, err := send(t, tc, client, "x"); !errors.Is(err, ErrDenied) {
		t.Fatalf("read: %v", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("closed after %v, want the 200ms delay", d)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct{ cfg, path string }{
		{`{stat_prefix: t, rules: {policies: {p: {permissions: [{header: {name: x, present_match: true}}], principals: [{any: true}]}}}}`,
			`rbac.rules.policies["p"].permissions[0].header`},
		{`{stat_prefix: t, shadow_rules: {policies: {p: {permissions: [{any: true}], principals: [{or_ids: {ids: [{any: true}, {not_id: {header: {name: x, present_match: true}}}]}}]}}}}`,
			`rbac.shadow_rules.policies["p"].principals[0].or_ids.ids[1].not_id.header`},
		{`{stat_prefix: t, matcher: {matcher_tree: {input: {name: h, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: x}},
			exact_match_map: {map: {"a": {action: {name: a, typed_config: {"@type": type.googleapis.com/envoy.config.rbac.v3.Action, name: ok}}}}}}}}`,
			"rbac.matcher.matcher_tree.input.typed_config"},
		{`{stat_prefix: t, rules: {policies: {p: {permissions: [{any: true}], principals: [{any: true}], condition: {const_expr: {bool_value: true}}, checked_condition: {expr: {const_expr: {bool_value: true}}}}}}}`,
			`only one of condition or checked_condition`},
		{`{rules: {}}`, "rbac.stat_prefix"},
	} {
		_, _, err := compileYAML(t, c.cfg)
		if err == nil {
			t.Errorf("%s: compiled, want an error at %s", c.cfg, c.path)
			continue
		}
		if !strings.Contains(err.Error(), c.path) {
			t.Errorf("%s: error %q does not name %s", c.cfg, err, c.path)
		}
	}
}

func TestStatPrefixJoin(t *testing.T) {
	for _, c := range [][3]string{{"tcp", "rbac.", "tcp.rbac."}, {"tcp.", "rbac.", "tcp.rbac."}, {"", "x", "x"}, {"a.rbac.sh", "shadow_denied", "a.rbac.sh.shadow_denied"}} {
		if got := stats.JoinPrefix(c[0], c[1]); got != c[2] {
			t.Errorf("stats.JoinPrefix(%q, %q) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
}
