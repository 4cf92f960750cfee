// PROXY protocol: the listener filter envoy.filters.listener.proxy_protocol
// (a proxy in front of Legate announces the client's addresses, which
// then count everywhere the client's address does) and the upstream
// transport socket envoy.transport_sockets.upstream_proxy_protocol
// (Legate announces the client's addresses to its upstreams).

package features_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/proxyproto"
	"github.com/legateproxy/legate/internal/testutil"
)

// ppFilter renders the proxy_protocol listener filter with extra
// ProxyProtocol fields (", rules: [...]").
func ppFilter(extra string) string {
	return `{name: envoy.filters.listener.proxy_protocol, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol` + extra + `}}`
}

// ppHCM renders a connection manager (stat prefix, extra fields, routes).
func ppHCM(prefix, extra, routes string) string {
	return fmt.Sprintf(`{name: envoy.filters.network.http_connection_manager, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: %s%s,
  http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}],
  route_config: {virtual_hosts: [{name: v, domains: ['*'], routes: [%s]}]}}}`, prefix, extra, routes)
}

// fileLog renders an access_log field writing one line of format to path.
func fileLog(path, format string) string {
	return fmt.Sprintf(`access_log: [{name: envoy.access_loggers.file, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: %s, log_format: {text_format_source: {inline_string: %q}}}}]`, path, format+"\n")
}

// ppBootstrap renders a bootstrap with one listener "pp": its listener
// filters, more listener fields (indented YAML lines), filter chains and
// the clusters.
func ppBootstrap(filters, listenerExtra, chains, clusters string) string {
	return fmt.Sprintf(`admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: pp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    listener_filters: [%s]
%s    filter_chains: [%s]
  clusters: [%s]
`, filters, listenerExtra, chains, clusters)
}

// directChain is a filter chain answering every request with body.
func directChain(match, body string) string {
	if match != "" {
		match = "filter_chain_match: " + match + ", "
	}
	return fmt.Sprintf(`{%sfilters: [%s]}`, match, ppHCM("pp", "", fmt.Sprintf(`{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: %s}}}`, body)))
}

// v2Header assembles a v2 header by hand from the spec (§2.2), not with
// internal/proxyproto: the signature, version 2 with cmd, the family
// byte, the length and the body.
func v2Header(cmd, fam byte, addrs []byte, tlvs ...[]byte) []byte {
	b := []byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20 | cmd, fam}
	body := append(append([]byte(nil), addrs...), bytes.Join(tlvs, nil)...)
	b = append(b, byte(len(body)>>8), byte(len(body)))
	return append(b, body...)
}

// tlv is one hand-assembled TLV.
func tlv(typ byte, v string) []byte {
	return append([]byte{typ, byte(len(v) >> 8), byte(len(v))}, v...)
}

// inet4 is the TCP/IPv4 address block 192.0.2.10:4242 → 198.51.100.20:443.
var inet4 = []byte{192, 0, 2, 10, 198, 51, 100, 20, 0x10, 0x92, 0x01, 0xBB}

// ppSend writes raw bytes to addr and returns what comes back until the
// proxy closes the connection (or 3 s pass).
func ppSend(t *testing.T, addr string, raw []byte) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Write(raw); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(conn)
	return string(b)
}

// readLogLines waits for n lines in the access log at path.
func readLogLines(t *testing.T, path string, n int) []string {
	t.Helper()
	var lines []string
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(path)
		lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		return len(b) > 0 && len(lines) >= n
	}, "access log lines at %s", path)
	return lines
}

// TestProxyProtocolCurl: real curl --haproxy-protocol reaches the proxy
// through a TCP relay (an L4 balancer that passes the header on) whose
// own connections come from 127.0.0.2. The upstream must see curl's
// address in x-forwarded-for, the access log curl's source and the
// relay's address as the destination — the header's, not the socket's.
func TestProxyProtocolCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	logPath := t.TempDir() + "/access.log"
	p := testutil.StartProxy(t, ppBootstrap(ppFilter(""), "",
		`{filters: [`+ppHCM("pp", ", use_remote_address: true, "+fileLog(logPath, "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %REQ(X-FORWARDED-FOR)% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%"),
			`{match: {prefix: /}, route: {cluster: u}}`)+`]}`,
		staticCluster("u", "", u.Addr)), nil)

	relay, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	curlSide := make(chan string, 1)
	go func() {
		c, err := relay.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		curlSide <- c.RemoteAddr().String()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		up, err := d.Dial("tcp", p.Addr("pp"))
		if err != nil {
			return
		}
		defer up.Close()
		go io.Copy(up, c)
		io.Copy(c, up)
	}()
	out, err := exec.Command("curl", "-sS", "--max-time", "5", "--haproxy-protocol", "http://"+relay.Addr().String()+"/via-relay").CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "path=/via-relay") || !strings.Contains(string(out), "header:x-forwarded-for=127.0.0.1\n") {
		t.Fatalf("upstream did not see curl's address (127.0.0.1, not the relay's 127.0.0.2) in x-forwarded-for:\n%s", out)
	}
	// The direct remote address stays the socket's peer: the relay.
	want := <-curlSide + " " + relay.Addr().String() + " 127.0.0.1 127.0.0.2"
	if line := readLogLines(t, logPath, 1)[0]; line != want {
		t.Fatalf("access log %q; want %q (the PROXY header's source and destination, the relay as the direct peer)", line, want)
	}
	if n := p.Stat(t, "proxy_proto.versions.v1.found"); n != 1 {
		t.Fatalf("proxy_proto.versions.v1.found = %d", n)
	}
}

// echoServer is a TCP upstream that echoes what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestProxyProtocolTLVMetadata: v2 TLVs that rules name become the
// connection's dynamic metadata (in the filter's namespace or the rule's),
// as tcp_proxy's access log shows: values sanitized to UTF-8 ('!' for a
// bad byte) or base64. The first connection's header is hand-assembled,
// the second built by internal/proxyproto; the third is split into
// single bytes on the wire.
func TestProxyProtocolTLVMetadata(t *testing.T) {
	echo := echoServer(t)
	logPath := t.TempDir() + "/tcp.log"
	rules := `, rules: [{tlv_type: 234, on_tlv_present: {key: vpce}}, {tlv_type: 2, on_tlv_present: {metadata_namespace: custom.ns, key: authority}},
	  {tlv_type: 224, on_tlv_present: {key: bin, value_string_encoding: BASE64}}]`
	format := "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DYNAMIC_METADATA(envoy.filters.listener.proxy_protocol:vpce)% " +
		"%DYNAMIC_METADATA(custom.ns:authority)% %DYNAMIC_METADATA(envoy.filters.listener.proxy_protocol:bin)%"
	p := testutil.StartProxy(t, ppBootstrap(ppFilter(rules), "",
		`{filters: [{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: pp, cluster: echo, `+fileLog(logPath, format)+`}}]}`,
		staticCluster("echo", "", echo)), nil)

	exchange := func(header []byte, split bool) {
		t.Helper()
		conn, err := net.Dial("tcp", p.Addr("pp"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		msg := append(append([]byte(nil), header...), "ping"...)
		if split {
			for i := range msg {
				conn.Write(msg[i : i+1])
				time.Sleep(time.Millisecond)
			}
		} else {
			conn.Write(msg)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo through tcp_proxy: %q, %v (the header must not reach the upstream)", buf, err)
		}
	}
	// Each connection's line is written when it ends: wait for it before
	// the next, so the lines keep the connections' order.
	exchange(v2Header(1, 0x11, inet4, tlv(0xEA, "vpce-0a1b"), tlv(0x02, "example.com"), tlv(0xE0, "\xff\x00\x01"), tlv(0x05, "ignored")), false)
	readLogLines(t, logPath, 1)
	built, _ := proxyproto.AppendV2(nil, netip.MustParseAddrPort("[2001:db8::7]:7000"), netip.MustParseAddrPort("[2001:db8::80]:8080"),
		[]proxyproto.TLV{{Type: 0xEA, Value: []byte("a\xffb")}, {Type: 0xEA, Value: []byte("second")}})
	exchange(built, false)
	readLogLines(t, logPath, 2)
	exchange([]byte("PROXY TCP4 203.0.113.9 198.51.100.20 999 25\r\n"), true)

	lines := readLogLines(t, logPath, 3)
	want := []string{
		"192.0.2.10:4242 198.51.100.20:443 vpce-0a1b example.com /wAB",
		"[2001:db8::7]:7000 [2001:db8::80]:8080 a!b - -", // the first TLV of a key wins
		"203.0.113.9:999 198.51.100.20:25 - - -",
	}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("access log line %d = %q; want %q", i, lines[i], w)
		}
	}
	if n := p.Stat(t, "proxy_proto.versions.v2.found"); n != 2 {
		t.Errorf("proxy_proto.versions.v2.found = %d; want 2", n)
	}
	if n := p.Stat(t, "proxy_proto.versions.v1.found"); n != 1 {
		t.Errorf("proxy_proto.versions.v1.found = %d; want 1", n)
	}
}

// TestProxyProtocolTLVFilterState: with tlv_location FILTER_STATE the
// TLVs are one filter-state object, which an HTTP stream inherits from
// its connection (%FILTER_STATE(envoy.network.proxy_protocol.tlv:FIELD:
// key)%).
func TestProxyProtocolTLVFilterState(t *testing.T) {
	logPath := t.TempDir() + "/http.log"
	p := testutil.StartProxy(t, ppBootstrap(ppFilter(`, tlv_location: FILTER_STATE, rules: [{tlv_type: 234, on_tlv_present: {key: vpce}}]`), "",
		`{filters: [`+ppHCM("pp", ", "+fileLog(logPath, "%FILTER_STATE(envoy.network.proxy_protocol.tlv:FIELD:vpce)% %DOWNSTREAM_REMOTE_ADDRESS%"),
			`{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: ok}}}`)+`]}`, ""), nil)
	resp := ppSend(t, p.Addr("pp"), append(v2Header(1, 0x11, inet4, tlv(0xEA, "vpce-77")), "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"...))
	if firstLine(resp) != "HTTP/1.1 200 OK" {
		t.Fatalf("response %q", resp)
	}
	if line := readLogLines(t, logPath, 1)[0]; line != "vpce-77 192.0.2.10:4242" {
		t.Fatalf("access log %q", line)
	}
}

// TestProxyProtocolFilterChainMatch: filter chains are chosen by the
// header's addresses (source_prefix_ranges, destination_port), not the
// socket's (127.0.0.1 and the listener's port) — except
// direct_source_prefix_ranges, which is the socket's peer.
func TestProxyProtocolFilterChainMatch(t *testing.T) {
	p := testutil.StartProxy(t, ppBootstrap(ppFilter(""), "", strings.Join([]string{
		directChain(`{source_prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]}`, "internal"),
		directChain(`{destination_port: 8443}`, "port-8443"),
		directChain("", "external"),
	}, ", "), ""), nil)
	req := "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	for _, c := range []struct{ header, want string }{
		{"PROXY TCP4 10.1.2.3 192.0.2.1 5000 80\r\n", "internal"},
		{"PROXY TCP4 203.0.113.7 192.0.2.1 5000 80\r\n", "external"},
		{"PROXY TCP4 203.0.113.7 192.0.2.1 5000 8443\r\n", "port-8443"},
		{"PROXY UNKNOWN\r\n", "external"}, // the socket's own 127.0.0.1
	} {
		resp := ppSend(t, p.Addr("pp"), []byte(c.header+req))
		if !strings.HasSuffix(resp, "\r\n\r\n"+c.want) {
			t.Errorf("%q chose %q; want the %q chain", c.header, resp, c.want)
		}
	}
	// The same through a v2 header: 10.0.0.0/8 over IPv4-in-v2.
	resp := ppSend(t, p.Addr("pp"), append(v2Header(1, 0x11, []byte{10, 9, 8, 7, 192, 0, 2, 1, 0, 1, 0, 80}), req...))
	if !strings.HasSuffix(resp, "internal") {
		t.Errorf("v2 10.9.8.7 chose %q", resp)
	}

	// direct_source_prefix_ranges is the socket's peer, whatever the
	// header says: the balancer at 127.0.0.2.
	q := testutil.StartProxy(t, ppBootstrap(ppFilter(""), "", strings.Join([]string{
		directChain(`{direct_source_prefix_ranges: [{address_prefix: 127.0.0.2, prefix_len: 32}]}`, "via-balancer"),
		directChain("", "other"),
	}, ", "), ""), nil)
	from := func(local, header string) string {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		conn, err := d.Dial("tcp", q.Addr("pp"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		io.WriteString(conn, header+req)
		b, _ := io.ReadAll(conn)
		return string(b)
	}
	if resp := from("127.0.0.2", "PROXY TCP4 10.1.1.1 192.0.2.1 5000 80\r\n"); !strings.HasSuffix(resp, "via-balancer") {
		t.Errorf("from 127.0.0.2 for 10.1.1.1: %q", resp)
	}
	if resp := from("127.0.0.1", "PROXY TCP4 127.0.0.2 192.0.2.1 5000 80\r\n"); !strings.HasSuffix(resp, "other") {
		t.Errorf("from 127.0.0.1 claiming 127.0.0.2: %q", resp)
	}
}

// TestProxyProtocolMalformed: each malformed header closes the connection
// unanswered and is counted where Envoy counts it, under the stat_prefix;
// the legacy downstream_cx_proxy_proto_error counts them all.
func TestProxyProtocolMalformed(t *testing.T) {
	p := testutil.StartProxy(t, ppBootstrap(ppFilter(", stat_prefix: edge"), "", directChain("", "served"), ""), nil)
	req := "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	cases := []struct {
		name string
		raw  []byte
		stat string
	}{
		{"plain HTTP", []byte(req), "proxy_proto.edge.not_found_disallowed"},
		{"v1 port out of range", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n" + req), "proxy_proto.edge.versions.v1.error"},
		{"v1 without CRLF in 107 bytes", []byte("PROXY TCP4 " + strings.Repeat("1", 120)), "proxy_proto.edge.not_found_disallowed"},
		{"v1 line of 108 bytes", []byte("PROXY UNKNOWN " + strings.Repeat("a", 92) + "\r\n"), "proxy_proto.edge.versions.v1.error"},
		{"v2 version nibble 1", append(append([]byte(nil), v2Header(1, 0x11, inet4)[:12]...), append([]byte{0x11, 0x11, 0, 12}, inet4...)...), "proxy_proto.edge.versions.v2.error"},
		{"v2 AF_UNIX", v2Header(1, 0x31, make([]byte, 216)), "proxy_proto.edge.versions.v2.error"},
		{"v2 TLV past the end", append(v2Header(1, 0x11, inet4, []byte{0xEA, 0x00}), req...), "proxy_proto.edge.versions.v2.error"},
		{"v2 multicast source", v2Header(1, 0x11, []byte{224, 0, 0, 1, 1, 2, 3, 4, 0, 1, 0, 2}), "proxy_proto.edge.versions.v2.error"},
	}
	for i, c := range cases {
		before := p.Stat(t, c.stat)
		if resp := ppSend(t, p.Addr("pp"), c.raw); resp != "" {
			t.Errorf("%s: answered %q; want the connection closed", c.name, resp)
		}
		testutil.Eventually(t, 3*time.Second, func() bool { return p.Stat(t, c.stat) == before+1 }, "%s: %s not counted", c.name, c.stat)
		if n := p.Stat(t, "downstream_cx_proxy_proto_error"); n != int64(i+1) {
			t.Errorf("%s: downstream_cx_proxy_proto_error = %d; want %d", c.name, n, i+1)
		}
	}
	// A good header still works, and its stats carry the prefix too.
	if resp := ppSend(t, p.Addr("pp"), []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"+req)); !strings.HasSuffix(resp, "served") {
		t.Fatalf("good header: %q", resp)
	}
	if n := p.Stat(t, "proxy_proto.edge.versions.v1.found"); n != 1 {
		t.Fatalf("proxy_proto.edge.versions.v1.found = %d", n)
	}
}

// TestProxyProtocolAllowWithout: allow_requests_without_proxy_protocol
// serves plain connections as they are (not_found_allowed) and still
// reads headers; disallowed_versions refuses one version (found and
// disallowed, not an error) and, with the former, lets its bytes through
// as no header at all.
func TestProxyProtocolAllowWithout(t *testing.T) {
	logPath := t.TempDir() + "/a.log"
	chain := `{filters: [` + ppHCM("pp", ", "+fileLog(logPath, "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
		`{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: served}}}`) + `]}`
	p := testutil.StartProxy(t, ppBootstrap(ppFilter(", allow_requests_without_proxy_protocol: true"), "", chain, ""), nil)
	req := "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	if resp := ppSend(t, p.Addr("pp"), []byte(req)); !strings.HasSuffix(resp, "served") {
		t.Fatalf("plain request: %q", resp)
	}
	if resp := ppSend(t, p.Addr("pp"), []byte("PROXY TCP4 198.51.100.3 5.6.7.8 1 2\r\n"+req)); !strings.HasSuffix(resp, "served") {
		t.Fatalf("request with a header: %q", resp)
	}
	if lines := readLogLines(t, logPath, 2); lines[0] != "127.0.0.1" || lines[1] != "198.51.100.3" {
		t.Fatalf("remote addresses %q; want the socket's, then the header's", lines)
	}
	if a, f := p.Stat(t, "proxy_proto.not_found_allowed"), p.Stat(t, "proxy_proto.versions.v1.found"); a != 1 || f != 1 {
		t.Fatalf("not_found_allowed = %d, v1.found = %d", a, f)
	}

	q := testutil.StartProxy(t, ppBootstrap(ppFilter(", disallowed_versions: [V1]"), "", directChain("", "served"), ""), nil)
	if resp := ppSend(t, q.Addr("pp"), []byte("PROXY TCP4 198.51.100.3 5.6.7.8 1 2\r\n"+req)); resp != "" {
		t.Fatalf("v1 when disallowed: %q", resp)
	}
	if resp := ppSend(t, q.Addr("pp"), append(v2Header(1, 0x11, inet4), req...)); !strings.HasSuffix(resp, "served") {
		t.Fatalf("v2 when v1 is disallowed: %q", resp)
	}
	testutil.Eventually(t, 3*time.Second, func() bool {
		return q.Stat(t, "proxy_proto.versions.v1.disallowed") == 1 && q.Stat(t, "proxy_proto.versions.v1.found") == 1
	}, "v1 found and disallowed")
	if n := q.Stat(t, "downstream_cx_proxy_proto_error"); n != 0 {
		t.Fatalf("a disallowed version counted as an error: %d", n)
	}

	// V2 disallowed but headerless connections allowed: a v2 header is
	// not recognised at all, and its bytes are the connection's own (the
	// echo upstream gets them all).
	echo := echoServer(t)
	r := testutil.StartProxy(t, ppBootstrap(ppFilter(", allow_requests_without_proxy_protocol: true, disallowed_versions: [V2]"), "",
		`{filters: [{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: pp, cluster: echo}}]}`,
		staticCluster("echo", "", echo)), nil)
	sent := append(v2Header(1, 0x11, inet4), "hello"...)
	conn, err := net.Dial("tcp", r.Addr("pp"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write(sent)
	got := make([]byte, len(sent))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, sent) {
		t.Fatalf("echoed % x, %v; want the v2 bytes passed through as data", got, err)
	}
	if a, f := r.Stat(t, "proxy_proto.not_found_allowed"), r.Stat(t, "proxy_proto.versions.v2.found"); a != 1 || f != 0 {
		t.Fatalf("not_found_allowed = %d, v2.found = %d", a, f)
	}

	if _, err := testutil.TryStartProxy(t, ppBootstrap(ppFilter(", disallowed_versions: [V1, V2]"), "", directChain("", "x"), ""), nil); err == nil ||
		!strings.Contains(err.Error(), "all proxy protocol versions are disallowed") || !strings.Contains(err.Error(), "disallowed_versions") {
		t.Fatalf("both versions disallowed: %v", err)
	}
}

// TestProxyProtocolTimeout: a header that does not complete within
// listener_filters_timeout closes the connection, without a protocol
// error — unless continue_on_listener_filters_timeout is set.
func TestProxyProtocolTimeout(t *testing.T) {
	p := testutil.StartProxy(t, ppBootstrap(ppFilter(""), "    listener_filters_timeout: 0.3s\n", directChain("", "served"), ""), nil)
	for _, partial := range [][]byte{[]byte("PROXY TCP4 1.2"), v2Header(1, 0x11, inet4)[:20]} {
		conn, err := net.Dial("tcp", p.Addr("pp"))
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(partial)
		start := time.Now()
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := conn.Read(make([]byte, 1))
		conn.Close()
		if n != 0 || err == nil || time.Since(start) > 2*time.Second {
			t.Fatalf("partial header %q: read %d, %v after %v; want a close after 0.3s", partial, n, err, time.Since(start))
		}
	}
	if n := p.Stat(t, "downstream_cx_proxy_proto_error"); n != 0 {
		t.Fatalf("a timeout counted as a protocol error: %d", n)
	}

	// With continue_on_listener_filters_timeout the connection goes on
	// after the timeout, its bytes untouched (Envoy only peeked at them):
	// the echo upstream gets the partial header as data.
	echo := echoServer(t)
	q := testutil.StartProxy(t, ppBootstrap(ppFilter(""), "    listener_filters_timeout: 0.3s\n    continue_on_listener_filters_timeout: true\n",
		`{filters: [{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: pp, cluster: echo}}]}`,
		staticCluster("echo", "", echo)), nil)
	conn, err := net.Dial("tcp", q.Addr("pp"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write([]byte("PROXY TCP4 1.2"))
	got := make([]byte, 14)
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != "PROXY TCP4 1.2" {
		t.Fatalf("after the timeout with continue: %q, %v", got, err)
	}
}

// ppUpstream is a raw TCP upstream that reads the PROXY header each
// connection starts with (by hand, from the spec: v1 to CRLF, v2 by its
// length field), records it, then serves HTTP/1.1 keep-alive (answering
// "ok") or echoes, over TLS when cert is set.
type ppUpstream struct {
	ln   net.Listener
	mu   sync.Mutex
	hdrs [][]byte
	reqs []int // requests served per connection
}

func startPPUpstream(t *testing.T, echo bool, cert *tls.Certificate) *ppUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	u := &ppUpstream{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c, echo, cert)
		}
	}()
	return u
}

func (u *ppUpstream) serve(c net.Conn, echo bool, cert *tls.Certificate) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	hdr, err := readPPHeader(c)
	if err != nil {
		return
	}
	u.mu.Lock()
	i := len(u.hdrs)
	u.hdrs = append(u.hdrs, hdr)
	u.reqs = append(u.reqs, 0)
	u.mu.Unlock()
	var conn net.Conn = c
	if cert != nil {
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert}})
		if err := tc.Handshake(); err != nil {
			return
		}
		conn = tc
	}
	if echo {
		io.Copy(conn, conn)
		return
	}
	br := bufio.NewReader(conn)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		u.mu.Lock()
		u.reqs[i]++
		u.mu.Unlock()
		if _, err := io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
	}
}

// readPPHeader reads exactly one PROXY header off c, byte-exact, so that
// what follows (a TLS handshake) is left unread.
func readPPHeader(c net.Conn) ([]byte, error) {
	first := make([]byte, 1)
	if _, err := io.ReadFull(c, first); err != nil {
		return nil, err
	}
	if first[0] == 'P' {
		line := []byte{first[0]}
		one := make([]byte, 1)
		for !bytes.HasSuffix(line, []byte("\r\n")) {
			if _, err := io.ReadFull(c, one); err != nil {
				return nil, err
			}
			line = append(line, one[0])
			if len(line) > 107 {
				return nil, fmt.Errorf("v1 line too long")
			}
		}
		return line, nil
	}
	fixed := make([]byte, 15)
	if _, err := io.ReadFull(c, fixed); err != nil {
		return nil, err
	}
	hdr := append(first, fixed...)
	rest := make([]byte, int(hdr[14])<<8|int(hdr[15]))
	if _, err := io.ReadFull(c, rest); err != nil {
		return nil, err
	}
	return append(hdr, rest...), nil
}

func (u *ppUpstream) seen() ([][]byte, []int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([][]byte(nil), u.hdrs...), append([]int(nil), u.reqs...)
}

// ppCluster renders a STATIC cluster over addr whose transport socket is
// upstream_proxy_protocol with cfg, wrapping inner (raw_buffer if "").
func ppCluster(name, addr, cfg, inner string) string {
	if inner == "" {
		inner = `{name: envoy.transport_sockets.raw_buffer, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}`
	}
	return staticCluster(name, fmt.Sprintf(`transport_socket: {name: envoy.transport_sockets.upstream_proxy_protocol, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport,
	  config: %s, transport_socket: %s}}`, cfg, inner), addr)
}

// httpOn sends n GET requests on one keep-alive connection and returns
// the connection's local address.
func httpOn(t *testing.T, addr string, n int) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	for i := 0; i < n; i++ {
		io.WriteString(conn, "GET /r"+strconv.Itoa(i)+" HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	return conn.LocalAddr().String()
}

// TestUpstreamProxyProtocolV1HTTP: HTTP/1.1 requests reach the upstream on
// connections that begin with a v1 line naming the downstream connection;
// the requests of one downstream connection share an upstream connection,
// another downstream connection gets its own (Envoy pools by the PROXY
// addresses).
func TestUpstreamProxyProtocolV1HTTP(t *testing.T) {
	u := startPPUpstream(t, false, nil)
	p := testutil.StartProxy(t, ppBootstrap("", "", `{filters: [`+ppHCM("pp", "", `{match: {prefix: /}, route: {cluster: up}}`)+`]}`,
		ppCluster("up", u.ln.Addr().String(), "{version: V1}", "")), nil)
	lh, lp, _ := net.SplitHostPort(p.Addr("pp"))
	a := httpOn(t, p.Addr("pp"), 2)
	b := httpOn(t, p.Addr("pp"), 1)
	hdrs, reqs := u.seen()
	if len(hdrs) != 2 {
		t.Fatalf("upstream connections %d (%q); want one per downstream connection", len(hdrs), hdrs)
	}
	for i, client := range []string{a, b} {
		ch, cp, _ := net.SplitHostPort(client)
		want := fmt.Sprintf("PROXY TCP4 %s %s %s %s\r\n", ch, lh, cp, lp)
		if string(hdrs[i]) != want {
			t.Errorf("upstream connection %d began %q; want %q", i, hdrs[i], want)
		}
	}
	if reqs[0] != 2 || reqs[1] != 1 {
		t.Errorf("requests per upstream connection %v; want [2 1]", reqs)
	}
}

// TestUpstreamProxyProtocolV2TCP: a PROXY v2 header read by the listener
// filter is announced again upstream by tcp_proxy's cluster: the same
// addresses, the host's and added_tlvs first, then the downstream TLVs
// pass_through_tlvs keeps (on both sides), byte for byte as assembled
// here from the spec.
func TestUpstreamProxyProtocolV2TCP(t *testing.T) {
	u := startPPUpstream(t, true, nil)
	uh, up, _ := net.SplitHostPort(u.ln.Addr().String())
	// The endpoint's own TLVs (typed metadata) come first and win over
	// added_tlvs of the same type.
	cluster := fmt.Sprintf(`{name: up, connect_timeout: 1s, type: STATIC, load_assignment: {cluster_name: up, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}},
	  metadata: {typed_filter_metadata: {envoy.transport_sockets.proxy_protocol: {"@type": type.googleapis.com/envoy.config.core.v3.PerHostConfig, added_tlvs: [{type: 225, value: aG9zdA==}, {type: 226, value: Mg==}]}}}}]}]},
	  transport_socket: {name: envoy.transport_sockets.upstream_proxy_protocol, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport,
	    config: {version: V2, pass_through_tlvs: {match_type: INCLUDE, tlv_type: [234, 3]}, added_tlvs: [{type: 225, value: Zm9v}, {type: 227, value: YmFy}]},
	    transport_socket: {name: envoy.transport_sockets.raw_buffer, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}}}}`, uh, up)
	p := testutil.StartProxy(t, ppBootstrap(ppFilter(", pass_through_tlvs: {match_type: INCLUDE, tlv_type: [234, 5]}"), "",
		`{filters: [{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: pp, cluster: up}}]}`,
		cluster), nil)
	conn, err := net.Dial("tcp", p.Addr("pp"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write(append(v2Header(1, 0x11, inet4, tlv(0xEA, "vpce-1"), tlv(0x05, "uid-7"), tlv(0x03, "crc!")), "hello"...))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
	hdrs, _ := u.seen()
	// The host's 0xE1 and 0xE2, added_tlvs' 0xE3 (its 0xE1 is the host's),
	// then the pass-through 0xEA. 0x05 is kept by the listener filter but
	// not passed by the socket; 0x03 passed by the socket but not kept.
	want := v2Header(1, 0x11, inet4, tlv(0xE1, "host"), tlv(0xE2, "2"), tlv(0xE3, "bar"), tlv(0xEA, "vpce-1"))
	if len(hdrs) != 1 || !bytes.Equal(hdrs[0], want) {
		t.Fatalf("upstream header\n% x\nwant\n% x", hdrs, want)
	}
}

// TestUpstreamProxyProtocolTLS: the header precedes the TLS handshake of
// the wrapped tls transport socket.
func TestUpstreamProxyProtocolTLS(t *testing.T) {
	ca := testutil.NewCA(t, "ca")
	cert := ca.Issue(t, "backend", "backend.internal")
	u := startPPUpstream(t, false, &cert.TLS)
	inner := fmt.Sprintf(`{name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, sni: backend.internal,
	  common_tls_context: {validation_context: {trusted_ca: %s}}}}`, pemInline(ca.CertPEM))
	p := testutil.StartProxy(t, ppBootstrap(ppFilter(""), "", `{filters: [`+ppHCM("pp", "", `{match: {prefix: /}, route: {cluster: up}}`)+`]}`,
		ppCluster("up", u.ln.Addr().String(), "{version: V1}", inner)), nil)
	resp := ppSend(t, p.Addr("pp"), []byte("PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
	if firstLine(resp) != "HTTP/1.1 200 OK" || !strings.HasSuffix(resp, "ok") {
		t.Fatalf("through TLS: %q", resp)
	}
	hdrs, _ := u.seen()
	if len(hdrs) != 1 || string(hdrs[0]) != "PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n" {
		t.Fatalf("upstream header %q", hdrs)
	}
	if n := p.Stat(t, "cluster.up.ssl.handshake"); n != 1 {
		t.Fatalf("cluster.up.ssl.handshake = %d", n)
	}
}

// TestUpstreamProxyProtocolConfig: what the socket does not implement is
// refused at its config path.
func TestUpstreamProxyProtocolConfig(t *testing.T) {
	chain := `{filters: [` + ppHCM("pp", "", `{match: {prefix: /}, route: {cluster: up}}`) + `]}`
	for _, c := range []struct{ cfg, extra, want string }{
		{"{version: V2, added_tlvs: [{type: 225, format_string: {text_format_source: {inline_string: x}}}]}", "", "added_tlvs[0].format_string"},
		{"{version: V2, added_tlvs: [{type: 225}]}", "", "one of 'value' or 'format_string' must be set"},
		{"{version: V1}", ", typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {\"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}", "HTTP/2"},
	} {
		cl := ppCluster("up", "127.0.0.1:1", c.cfg, "")
		cl = strings.TrimSuffix(cl, "}") + c.extra + "}"
		_, err := testutil.TryStartProxy(t, ppBootstrap("", "", chain, cl), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s%s: %v; want an error mentioning %q", c.cfg, c.extra, err, c.want)
		}
	}
	_, err := testutil.TryStartProxy(t, ppBootstrap("", "", chain, staticCluster("up", `transport_socket: {name: envoy.transport_sockets.upstream_proxy_protocol, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport,
	  config: {version: V1}, allow_unspecified_address: true, transport_socket: {name: envoy.transport_sockets.raw_buffer, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}}}`, "127.0.0.1:1")), nil)
	if err == nil || !strings.Contains(err.Error(), "allow_unspecified_address") {
		t.Errorf("allow_unspecified_address: %v", err)
	}
}
