// Network RBAC: envoy.filters.network.rbac in front of tcp_proxy, by
// source and destination, TLS peer identity and SNI, with shadow rules,
// delay_deny and the first-data decision. This file also has the TCP
// helpers of the network filter tests (connection_limit_test.go,
// network_local_ratelimit_test.go, sni_cluster_test.go, …).

package features_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/legateproxy/legate/internal/testutil"
)

// netListener renders a listener called name whose one filter chain runs
// filters (flow-style YAML entries, comma-separated, may be empty) and then
// tcp_proxy (stat prefix name) to cluster; chainExtra adds fields to the
// chain (", transport_socket: …").
func netListener(name, filters, cluster, chainExtra string) string {
	if filters != "" {
		filters += ", "
	}
	return fmt.Sprintf(`  - name: %s
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [%s{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: %s, cluster: %s}}]%s}]
`, name, filters, name, cluster, chainExtra)
}

// netBootstrap renders a bootstrap with the listeners (netListener) and
// clusters; extra is more top-level YAML.
func netBootstrap(listeners string, extra string, clusters ...string) string {
	return fmt.Sprintf(`admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
%s  clusters: [%s]
%s`, listeners, strings.Join(clusters, ", "), extra)
}

// rbacFilter renders an envoy.filters.network.rbac entry with the given
// RBAC fields.
func rbacFilter(fields string) string {
	return fmt.Sprintf(`{name: envoy.filters.network.rbac, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC, %s}}`, fields)
}

// tcpEchoExchange sends data over conn, half-closes, and returns all the
// proxy sends back until it closes (at most 3 s).
func tcpEchoExchange(t *testing.T, conn net.Conn, data string) string {
	t.Helper()
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(conn, data); err != nil {
		return ""
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	b, _ := io.ReadAll(conn)
	return string(b)
}

// tcpSend dials addr and runs tcpEchoExchange.
func tcpSend(t *testing.T, addr, data string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return tcpEchoExchange(t, conn, data)
}

// stillOpen reports whether conn stays open, with nothing to read, for d.
func stillOpen(conn net.Conn, d time.Duration) bool {
	conn.SetReadDeadline(time.Now().Add(d))
	defer conn.SetReadDeadline(time.Time{})
	_, err := conn.Read(make([]byte, 1))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// waitClosed reads conn until the proxy closes it (EOF or reset), at most
// 3 s, and returns what it read and whether it closed.
func waitClosed(conn net.Conn) (string, bool) {
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(conn)
	var ne net.Error
	return string(b), !(errors.As(err, &ne) && ne.Timeout())
}

func TestNetworkRBAC(t *testing.T) {
	up := startTCPEcho(t)
	listeners := netListener("allow", rbacFilter(`stat_prefix: "allow.", rules: {action: ALLOW, policies: {loopback: {
		permissions: [{and_rules: {rules: [{destination_ip: {address_prefix: 127.0.0.0, prefix_len: 8}}, {not_rule: {destination_port: 1}}]}}],
		principals: [{source_ip: {address_prefix: 127.0.0.1, prefix_len: 32}}]}}}`), "up", "") +
		netListener("deny", rbacFilter(`stat_prefix: deny, rules: {action: ALLOW, policies: {lan: {permissions: [{any: true}],
		principals: [{remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}]}}}`), "up", "") +
		netListener("denylist", rbacFilter(`stat_prefix: denylist, rules: {action: DENY, policies: {local: {permissions: [{destination_port_range: {start: 1, end: 65535}}],
		principals: [{direct_remote_ip: {address_prefix: 127.0.0.0, prefix_len: 8}}]}}}`), "up", "") +
		netListener("shadow", rbacFilter(`stat_prefix: shadow, shadow_rules_stat_prefix: "s.", rules: {action: DENY},
		shadow_rules: {action: ALLOW, policies: {nobody: {permissions: [{any: true}], principals: [{not_id: {any: true}}]}}}`), "up", "") +
		netListener("delay", rbacFilter(`stat_prefix: delay, rules: {}, delay_deny: 0.3s`), "up", "")
	p := testutil.StartProxy(t, netBootstrap(listeners, "", up.Cluster("up")), nil)

	t.Run("allowed", func(t *testing.T) {
		if got := tcpSend(t, p.Addr("allow"), "hello"); got != "hello" {
			t.Fatalf("allowed connection got %q, want the echo", got)
		}
		testutil.Eventually(t, 3*time.Second, func() bool { return p.Stat(t, "allow.rbac.allowed") == 1 }, "allow.rbac.allowed = %d", p.Stat(t, "allow.rbac.allowed"))
		if v := p.Stat(t, "allow.rbac.denied"); v != 0 {
			t.Errorf("allow.rbac.denied = %d", v)
		}
	})

	t.Run("denied on first data, not before", func(t *testing.T) {
		conn, err := net.Dial("tcp", p.Addr("deny"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// As Envoy, nothing is decided until the client sends.
		if !stillOpen(conn, 300*time.Millisecond) {
			t.Fatal("the connection was closed before it sent anything")
		}
		if v := p.Stat(t, "deny.rbac.denied"); v != 0 {
			t.Fatalf("deny.rbac.denied = %d before any data", v)
		}
		io.WriteString(conn, "secret-1")
		if got, closed := waitClosed(conn); !closed || got != "" {
			t.Fatalf("denied connection: read %q, closed=%v", got, closed)
		}
		testutil.Eventually(t, 3*time.Second, func() bool { return p.Stat(t, "deny.rbac.denied") == 1 }, "deny.rbac.denied = %d", p.Stat(t, "deny.rbac.denied"))
		if got := tcpSend(t, p.Addr("denylist"), "secret-2"); got != "" {
			t.Fatalf("DENY policy: got %q", got)
		}
		testutil.Eventually(t, 3*time.Second, func() bool { return p.Stat(t, "denylist.rbac.denied") == 1 }, "denylist.rbac.denied")
		if strings.Contains(up.Received(), "secret") {
			t.Errorf("a denied connection's bytes reached the upstream: %q", up.Received())
		}
	})

	t.Run("shadow rules only count", func(t *testing.T) {
		if got := tcpSend(t, p.Addr("shadow"), "shadowed"); got != "shadowed" {
			t.Fatalf("shadow-denied connection got %q, want the echo", got)
		}
		testutil.Eventually(t, 3*time.Second, func() bool { return p.Stat(t, "shadow.rbac.s.shadow_denied") == 1 }, "shadow.rbac.s.shadow_denied = %d", p.Stat(t, "shadow.rbac.s.shadow_denied"))
		if v := p.Stat(t, "shadow.rbac.allowed"); v != 1 {
			t.Errorf("shadow.rbac.allowed = %d, want 1", v)
		}
	})

	t.Run("delay_deny", func(t *testing.T) {
		conn, err := net.Dial("tcp", p.Addr("delay"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		io.WriteString(conn, "secret-3")
		if got, closed := waitClosed(conn); !closed || got != "" {
			t.Fatalf("read %q, closed=%v", got, closed)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Errorf("closed after %v, want delay_deny's 300ms", d)
		}
		if v := p.Stat(t, "delay.rbac.denied"); v != 1 {
			t.Errorf("delay.rbac.denied = %d", v)
		}
	})
}

func TestNetworkRBACTLSPrincipal(t *testing.T) {
	up := startTCPEcho(t)
	ca := testutil.NewCA(t, "rbac-ca")
	server := ca.Issue(t, "svc", "svc.example.com", "other.example.com")
	frontend := ca.Issue(t, "frontend", "spiffe://cluster.local/ns/default/sa/frontend")
	intruder := ca.Issue(t, "intruder", "spiffe://cluster.local/ns/default/sa/intruder")
	ts := fmt.Sprintf(`, transport_socket: {name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext,
		require_client_certificate: true, common_tls_context: {tls_certificates: [{certificate_chain: %s, private_key: %s}], validation_context: {trusted_ca: %s}}}}`,
		pemInline(server.CertPEM), pemInline(server.KeyPEM), pemInline(ca.CertPEM))
	listeners := netListener("mtls", rbacFilter(`stat_prefix: mtls, rules: {action: ALLOW, policies: {frontend: {
		permissions: [{requested_server_name: {exact: svc.example.com}}],
		principals: [{authenticated: {principal_name: {exact: "spiffe://cluster.local/ns/default/sa/frontend"}}}]}}}`), "up", ts)
	p := testutil.StartProxy(t, netBootstrap(listeners, "", up.Cluster("up")), nil)

	dial := func(leaf *testutil.Leaf, sni string) net.Conn {
		t.Helper()
		c, err := tls.Dial("tcp", p.Addr("mtls"), &tls.Config{RootCAs: ca.Pool, ServerName: sni, Certificates: []tls.Certificate{leaf.TLS}})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		return c
	}
	if got := tcpEchoExchange(t, dial(frontend, "svc.example.com"), "ping"); got != "ping" {
		t.Fatalf("the frontend identity got %q, want the echo", got)
	}
	if got := tcpEchoExchange(t, dial(intruder, "svc.example.com"), "ping"); got != "" {
		t.Fatalf("another identity got %q", got)
	}
	if got := tcpEchoExchange(t, dial(frontend, "other.example.com"), "ping"); got != "" {
		t.Fatalf("another SNI got %q", got)
	}
	testutil.Eventually(t, 3*time.Second, func() bool { return p.Stat(t, "mtls.rbac.denied") == 2 }, "mtls.rbac.denied = %d", p.Stat(t, "mtls.rbac.denied"))
	if v := p.Stat(t, "mtls.rbac.allowed"); v != 1 {
		t.Errorf("mtls.rbac.allowed = %d, want 1", v)
	}
}

func TestNetworkRBACMatcher(t *testing.T) {
	up := startTCPEcho(t)
	action := func(name, a string) string {
		return fmt.Sprintf(`{action: {name: %s, typed_config: {"@type": type.googleapis.com/envoy.config.rbac.v3.Action, name: %s, action: %s}}}`, name, name, a)
	}
	listeners := netListener("m", rbacFilter(`stat_prefix: m, matcher: {matcher_tree: {input: {name: ip, typed_config: {"@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourceIPInput}},
		exact_match_map: {map: {"127.0.0.1": `+action("local", "ALLOW")+`}}}}`), "up", "") +
		netListener("n", rbacFilter(`stat_prefix: n, matcher: {matcher_tree: {input: {name: ip, typed_config: {"@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourceIPInput}},
		exact_match_map: {map: {"127.0.0.1": `+action("local", "DENY")+`}}}, on_no_match: `+action("rest", "ALLOW")+`}`), "up", "")
	p := testutil.StartProxy(t, netBootstrap(listeners, "", up.Cluster("up")), nil)
	if got := tcpSend(t, p.Addr("m"), "hi"); got != "hi" {
		t.Errorf("matcher ALLOW: got %q", got)
	}
	if got := tcpSend(t, p.Addr("n"), "hi"); got != "" {
		t.Errorf("matcher DENY: got %q", got)
	}
	testutil.Eventually(t, 3*time.Second, func() bool { return p.Stat(t, "m.rbac.allowed") == 1 && p.Stat(t, "n.rbac.denied") == 1 },
		"m.rbac.allowed = %d, n.rbac.denied = %d", p.Stat(t, "m.rbac.allowed"), p.Stat(t, "n.rbac.denied"))
}

// What a connection does not have is refused at load time, naming its
// place in the config.
func TestNetworkRBACConfigErrors(t *testing.T) {
	up := startTCPEcho(t)
	for _, c := range []struct{ fields, path string }{
		{`stat_prefix: x, rules: {policies: {p: {permissions: [{header: {name: ":path", string_match: {prefix: /}}}], principals: [{any: true}]}}}`,
			`filters[0].typed_config.rules.policies["p"].permissions[0].header`},
		{`stat_prefix: x, matcher: {matcher_tree: {input: {name: h, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: x}},
			exact_match_map: {map: {"a": {action: {name: a, typed_config: {"@type": type.googleapis.com/envoy.config.rbac.v3.Action, name: a}}}}}}}`,
			"filters[0].typed_config.matcher.matcher_tree.input"},
		{`stat_prefix: x, rules: {policies: {p: {permissions: [{any: true}], principals: [{any: true}], condition: {const_expr: {bool_value: true}}, checked_condition: {expr: {const_expr: {bool_value: true}}}}}}`,
			`only one of condition or checked_condition`},
	} {
		_, err := testutil.TryStartProxy(t, netBootstrap(netListener("l", rbacFilter(c.fields), "up", ""), "", up.Cluster("up")), nil)
		if err == nil {
			t.Errorf("%s: loaded, want an error", c.fields)
			continue
		}
		if !strings.Contains(err.Error(), c.path) {
			t.Errorf("%s: error does not name %s:\n%v", c.fields, c.path, err)
		}
	}
}

// In front of the HTTP connection manager: the first request's bytes are
// checked; over TLS the codec is still chosen by ALPN (h2).
func TestNetworkRBACBeforeHCM(t *testing.T) {
	ca := testutil.NewCA(t, "rbac-hcm-ca")
	cert := ca.Issue(t, "web", "web.example.com")
	hcm := fmt.Sprintf(hcmPrefix, "web", "{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: through}}}")
	chain := func(name, rules string, tlsSocket string) string {
		return fmt.Sprintf(`  - name: %s
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [%s, %s]%s}]
`, name, rbacFilter("stat_prefix: "+name+", "+rules), hcm, tlsSocket)
	}
	ts := ", transport_socket: " + downstreamTLS(fmt.Sprintf("{certificate_chain: %s, private_key: %s}", pemInline(cert.CertPEM), pemInline(cert.KeyPEM)), "")
	allowLocal := `rules: {action: ALLOW, policies: {local: {permissions: [{any: true}], principals: [{source_ip: {address_prefix: 127.0.0.1}}]}}}`
	p := testutil.StartProxy(t, netBootstrap(chain("open", allowLocal, "")+chain("closed", "rules: {}", "")+chain("h2", allowLocal, ts), ""), nil)

	if code, _, body := testutil.Get(t, testutil.Client(), p.URL("open", "/")); code != 200 || body != "through" {
		t.Errorf("allowed: %d %q", code, body)
	}
	if got := rawExchange(t, p.Addr("closed"), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); got != "" {
		t.Errorf("denied connection answered %q", got)
	}
	rt := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "web.example.com"}}
	resp, err := (&http.Client{Transport: rt, Timeout: 3 * time.Second}).Get("https://" + p.Addr("h2") + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Errorf("h2 through RBAC: %d %s", resp.StatusCode, resp.Proto)
	}
	testutil.Eventually(t, 3*time.Second, func() bool {
		return p.Stat(t, "open.rbac.allowed") == 1 && p.Stat(t, "closed.rbac.denied") == 1 && p.Stat(t, "h2.rbac.allowed") == 1
	}, "open %d closed %d h2 %d", p.Stat(t, "open.rbac.allowed"), p.Stat(t, "closed.rbac.denied"), p.Stat(t, "h2.rbac.allowed"))
}

// The shadow decision is the connection's dynamic metadata, which
// tcp_proxy's access log reads.
func TestNetworkRBACShadowMetadata(t *testing.T) {
	up := startTCPEcho(t)
	logPath := filepath.Join(t.TempDir(), "access.log")
	y := netBootstrap(fmt.Sprintf(`  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - %s
      - {name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: l, cluster: up,
          access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: %q,
            log_format: {text_format: "%%DYNAMIC_METADATA(envoy.filters.network.rbac:shadow_engine_result)%% %%DYNAMIC_METADATA(envoy.filters.network.rbac:shadow_effective_policy_id)%%\n"}}}]}}
`, rbacFilter(`stat_prefix: l, shadow_rules: {action: DENY, policies: {loopback: {permissions: [{any: true}], principals: [{source_ip: {address_prefix: 127.0.0.1}}]}}}`), logPath), "", up.Cluster("up"))
	p := testutil.StartProxy(t, y, nil)
	if got := tcpSend(t, p.Addr("l"), "logged"); got != "logged" {
		t.Fatalf("got %q", got)
	}
	var line string
	testutil.Eventually(t, 3*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		line = strings.TrimSpace(string(b))
		return line != ""
	}, "no access log line")
	if line != "denied loopback" {
		t.Errorf("access log %q, want the shadow result and policy", line)
	}
}
