package features_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// udpEcho is a UDP upstream on loopback: it answers every datagram with
// "<name>:<payload>" and records the datagrams it got and their sources.
type udpEcho struct {
	Addr    string
	name    string
	pc      *net.UDPConn
	mu      sync.Mutex
	got     int
	sources map[string]int
}

func startUDPEcho(t *testing.T, name string) *udpEcho {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u := &udpEcho{Addr: pc.LocalAddr().String(), name: name, pc: pc, sources: map[string]int{}}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			u.mu.Lock()
			u.got++
			u.sources[from.String()]++
			u.mu.Unlock()
			pc.WriteToUDPAddrPort(append([]byte(name+":"), buf[:n]...), from)
		}
	}()
	return u
}

// Got is the number of datagrams the upstream received.
func (u *udpEcho) Got() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.got
}

// Sources is the number of distinct source addresses it saw.
func (u *udpEcho) Sources() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.sources)
}

// udpClient is a downstream UDP socket on loopback (port 0: any).
func udpClient(t *testing.T, port int) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends msg to the proxy and returns the reply ("" if none came
// within wait).
func exchange(t *testing.T, c *net.UDPConn, to, msg string, wait time.Duration) string {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp4", to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteToUDP([]byte(msg), ua); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65536)
	n, _, err := c.ReadFromUDP(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return ""
		}
		t.Fatal(err)
	}
	return string(buf[:n])
}

// udpBootstrap renders a bootstrap with one UDP listener ("udp") whose
// udp_proxy has the given fields (flow style) and the clusters.
func udpBootstrap(proxyFields, clusters string) string {
	return `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: udp
    address: {socket_address: {protocol: UDP, address: 127.0.0.1, port_value: 0}}
    udp_listener_config: {downstream_socket_config: {max_rx_datagram_size: 9000}}
    listener_filters:
    - name: envoy.filters.udp_listener.udp_proxy
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig,
        ` + strings.TrimSuffix(strings.TrimPrefix(proxyFields, "{"), "}") + `}
  clusters: ` + clusters + "\n"
}

// TestUDPProxySessions: datagrams go both ways through the proxy; two
// clients make two sessions, each with a socket of its own upstream; an
// idle session ends after idle_timeout (idle_timeout counted, the session
// access log written with Envoy's udp.proxy.session metadata); the stats
// are Envoy's.
func TestUDPProxySessions(t *testing.T) {
	up := startUDPEcho(t, "a")
	logPath := filepath.Join(t.TempDir(), "udp.log")
	p := testutil.StartProxy(t, udpBootstrap(`{stat_prefix: svc, cluster: echo, idle_timeout: 0.5s,
          access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: `+logPath+`,
            log_format: {text_format: "%UPSTREAM_CLUSTER% %UPSTREAM_HOST% %DOWNSTREAM_REMOTE_ADDRESS% rx=%DYNAMIC_METADATA(udp.proxy.session:datagrams_received)% tx=%DYNAMIC_METADATA(udp.proxy.session:datagrams_sent)% bytes=%BYTES_RECEIVED%/%BYTES_SENT%\n"}}}]}`,
		"["+staticCluster("echo", "", up.Addr)+"]"), nil)
	addr := p.Addr("udp")
	if !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
		t.Fatalf("UDP listener bound address = %q", addr)
	}
	// The admin API shows it: /listeners with its bound address, the
	// config dump with its UDP address and udp_proxy.
	if code, _, body := testutil.Get(t, testutil.Client(), "http://"+p.Admin+"/listeners"); code != 200 || !strings.Contains(body, "udp::"+addr) {
		t.Errorf("/listeners = %d %q, want a line udp::%s", code, body, addr)
	}
	if _, _, body := testutil.Get(t, testutil.Client(), "http://"+p.Admin+"/config_dump?resource=static_listeners"); !strings.Contains(body, `"protocol": "UDP"`) ||
		!strings.Contains(body, "envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig") {
		t.Errorf("config_dump lacks the UDP listener:\n%s", body)
	}
	c1, c2 := udpClient(t, 0), udpClient(t, 0)
	for i := 0; i < 3; i++ {
		if got := exchange(t, c1, addr, fmt.Sprintf("one-%d", i), 5*time.Second); got != fmt.Sprintf("a:one-%d", i) {
			t.Fatalf("client 1 reply %d = %q", i, got)
		}
	}
	if got := exchange(t, c2, addr, "two", 5*time.Second); got != "a:two" {
		t.Fatalf("client 2 reply = %q", got)
	}
	if v := p.Stat(t, "udp.svc.downstream_sess_total"); v != 2 {
		t.Errorf("downstream_sess_total = %d, want 2 (one session per client)", v)
	}
	if v := p.Stat(t, "udp.svc.downstream_sess_active"); v != 2 {
		t.Errorf("downstream_sess_active = %d, want 2", v)
	}
	if n := up.Sources(); n != 2 {
		t.Errorf("upstream saw %d source addresses, want 2 (a socket per session)", n)
	}
	for name, want := range map[string]int64{
		"udp.svc.downstream_sess_rx_datagrams": 4, "udp.svc.downstream_sess_tx_datagrams": 4,
		"udp.svc.downstream_sess_rx_bytes": 3*5 + 3, "udp.svc.downstream_sess_tx_bytes": 3*7 + 5,
		"cluster.echo.udp.sess_tx_datagrams": 4, "cluster.echo.udp.sess_rx_datagrams": 4,
		"cluster.echo.upstream_cx_tx_bytes_total": 18, "cluster.echo.upstream_cx_rx_bytes_total": 26,
		"udp.svc.downstream_sess_no_route": 0,
	} {
		// The sending side counts after its write returns, which can be
		// after the echo's reply came back through the proxy.
		testutil.Eventually(t, 2*time.Second, func() bool { return p.Stat(t, name) == want }, "%s = %d, want %d", name, p.Stat(t, name), want)
	}
	// Idle: both sessions end.
	testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "udp.svc.downstream_sess_active") == 0 }, "idle sessions never ended")
	if v := p.Stat(t, "udp.svc.idle_timeout"); v != 2 {
		t.Errorf("idle_timeout = %d, want 2", v)
	}
	want := "echo " + up.Addr + " " + c1.LocalAddr().String() + " rx=3 tx=3 bytes=15/21"
	var log string
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		log = string(b)
		return strings.Count(log, "\n") >= 2
	}, "session access logs not written")
	if !strings.Contains(log, want) {
		t.Errorf("session access log lacks client 1's session %q:\n%s", want, log)
	}
	// A datagram after the timeout opens a new session.
	if got := exchange(t, c1, addr, "again", 5*time.Second); got != "a:again" {
		t.Fatalf("reply after idle timeout = %q", got)
	}
	if v := p.Stat(t, "udp.svc.downstream_sess_total"); v != 3 {
		t.Errorf("downstream_sess_total = %d after a new datagram, want 3", v)
	}
}

// TestUDPProxyMatcher: the matcher routes by source IP and source port to
// different clusters (Envoy's docs example shape); a datagram no route
// takes is counted in downstream_sess_no_route.
func TestUDPProxyMatcher(t *testing.T) {
	a, b := startUDPEcho(t, "a"), startUDPEcho(t, "b")
	port := testutil.FreePort(t)
	route := func(cluster string) string {
		return `{action: {name: route, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.Route, cluster: ` + cluster + `}}}`
	}
	p := testutil.StartProxy(t, udpBootstrap(`{stat_prefix: svc, matcher: {matcher_list: {matchers: [{
          predicate: {single_predicate: {input: {name: envoy.matching.inputs.source_ip, typed_config: {"@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourceIPInput}}, value_match: {exact: 127.0.0.1}}},
          on_match: {matcher: {matcher_tree: {input: {name: envoy.matching.inputs.source_port, typed_config: {"@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourcePortInput}},
            exact_match_map: {map: {"`+fmt.Sprint(port)+`": `+route("to_a")+`}}}}}}]}}}`,
		"["+staticCluster("to_a", "", a.Addr)+", "+staticCluster("to_b", "", b.Addr)+"]"), nil)
	addr := p.Addr("udp")
	fixed := udpClient(t, port)
	if got := exchange(t, fixed, addr, "x", 5*time.Second); got != "a:x" {
		t.Errorf("from port %d: %q, want a:x", port, got)
	}
	// Another port: no entry in the tree and no on_no_match: no route.
	if got := exchange(t, udpClient(t, 0), addr, "y", 300*time.Millisecond); got != "" {
		t.Errorf("unrouted datagram answered: %q", got)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "udp.svc.downstream_sess_no_route") == 1 }, "downstream_sess_no_route = %d, want 1", p.Stat(t, "udp.svc.downstream_sess_no_route"))

	// A tree with on_no_match sends the other ports to to_b.
	p2 := testutil.StartProxy(t, udpBootstrap(`{stat_prefix: svc2, matcher: {matcher_tree: {input: {name: envoy.matching.inputs.source_port, typed_config: {"@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourcePortInput}},
            exact_match_map: {map: {"`+fmt.Sprint(port)+`": `+route("to_a")+`}}}, on_no_match: `+route("to_b")+`}}`,
		"["+staticCluster("to_a", "", a.Addr)+", "+staticCluster("to_b", "", b.Addr)+"]"), nil)
	if got := exchange(t, udpClient(t, 0), p2.Addr("udp"), "z", 5*time.Second); got != "b:z" {
		t.Errorf("on_no_match: %q, want b:z", got)
	}
	if got := exchange(t, fixed, p2.Addr("udp"), "w", 5*time.Second); got != "a:w" {
		t.Errorf("port entry: %q, want a:w", got)
	}
}

// TestUDPProxyLoadBalancing: with use_per_packet_load_balancing every
// datagram is balanced (round robin spreads one client's datagrams over
// both hosts); with a source_ip hash policy on a ring hash cluster every
// datagram of every client on 127.0.0.1 goes to one host.
func TestUDPProxyLoadBalancing(t *testing.T) {
	a, b := startUDPEcho(t, "a"), startUDPEcho(t, "b")
	p := testutil.StartProxy(t, udpBootstrap(`{stat_prefix: pp, cluster: rr, use_per_packet_load_balancing: true}`,
		"["+staticCluster("rr", "lb_policy: ROUND_ROBIN", a.Addr, b.Addr)+"]"), nil)
	c := udpClient(t, 0)
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		r := exchange(t, c, p.Addr("udp"), "m", 5*time.Second)
		name, _, _ := strings.Cut(r, ":")
		seen[name]++
	}
	if seen["a"] == 0 || seen["b"] == 0 {
		t.Errorf("per-packet round robin replies by host = %v, want both hosts", seen)
	}
	if v := p.Stat(t, "udp.pp.downstream_sess_total"); v != 2 {
		t.Errorf("per-packet sessions = %d, want 2 (one per (client, host))", v)
	}

	x, y, z := startUDPEcho(t, "x"), startUDPEcho(t, "y"), startUDPEcho(t, "z")
	p2 := testutil.StartProxy(t, udpBootstrap(`{stat_prefix: hp, cluster: ring, use_per_packet_load_balancing: true, hash_policies: [{source_ip: true}]}`,
		"["+staticCluster("ring", "lb_policy: RING_HASH", x.Addr, y.Addr, z.Addr)+"]"), nil)
	hosts := map[string]int{}
	for i := 0; i < 5; i++ {
		cl := udpClient(t, 0)
		for j := 0; j < 4; j++ {
			r := exchange(t, cl, p2.Addr("udp"), "h", 5*time.Second)
			name, _, _ := strings.Cut(r, ":")
			hosts[name]++
		}
	}
	if len(hosts) != 1 {
		t.Errorf("source_ip hash spread one IP over hosts %v, want one host", hosts)
	}
}

// TestUDPProxyFlood: 10k datagrams from 200 source ports against a
// cluster whose max_connections is 20: at most 20 sessions exist, the
// other datagrams are dropped and counted (upstream_cx_overflow), and the
// proxy still serves the sessions it has.
func TestUDPProxyFlood(t *testing.T) {
	up := startUDPEcho(t, "a")
	p := testutil.StartProxy(t, udpBootstrap(`{stat_prefix: fl, cluster: small}`,
		"["+staticCluster("small", "circuit_breakers: {thresholds: [{max_connections: 20}]}", up.Addr)+"]"), nil)
	ua, _ := net.ResolveUDPAddr("udp4", p.Addr("udp"))
	first := udpClient(t, 0)
	if got := exchange(t, first, p.Addr("udp"), "hello", 5*time.Second); got != "a:hello" {
		t.Fatalf("first client: %q", got)
	}
	var clients []*net.UDPConn
	for i := 0; i < 200; i++ {
		clients = append(clients, udpClient(t, 0))
	}
	payload := make([]byte, 100)
	for round := 0; round < 50; round++ {
		for _, c := range clients {
			c.WriteToUDP(payload, ua)
		}
		if round%10 == 9 {
			time.Sleep(5 * time.Millisecond) // let the kernel buffers drain a little
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "cluster.small.upstream_cx_overflow") > 0 }, "overflow never counted")
	if v := p.Stat(t, "udp.fl.downstream_sess_active"); v > 20 {
		t.Errorf("downstream_sess_active = %d, want at most max_connections (20)", v)
	}
	if v := p.Stat(t, "udp.fl.downstream_sess_total"); v > 20 {
		t.Errorf("downstream_sess_total = %d, want at most 20 (sessions do not end within the idle timeout)", v)
	}
	if v := p.Stat(t, "cluster.small.circuit_breakers.default.cx_open"); v != 1 {
		t.Errorf("circuit_breakers.default.cx_open = %d, want 1", v)
	}
	// UDP may drop a datagram while the kernel buffers are still full of
	// the flood: the session must answer one of the tries.
	testutil.Eventually(t, 10*time.Second, func() bool { return exchange(t, first, p.Addr("udp"), "still", 300*time.Millisecond) == "a:still" },
		"the session opened before the flood no longer answers")
}

// TestUDPProxyListenerRemoval: a UDP listener added over file-based LDS
// forwards; a full update (another stat prefix) takes over its socket
// (the old listener's sessions end); removing it stops forwarding.
func TestUDPProxyListenerRemoval(t *testing.T) {
	up := startUDPEcho(t, "a")
	dir := t.TempDir()
	lds := filepath.Join(dir, "lds.yaml")
	write := func(content string) {
		tmp := filepath.Join(dir, ".lds.tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, lds); err != nil {
			t.Fatal(err)
		}
	}
	port := testutil.FreePort(t)
	res := `resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: udp
  address: {socket_address: {protocol: UDP, address: 127.0.0.1, port_value: ` + fmt.Sprint(port) + `}}
  listener_filters: [{name: envoy.filters.udp_listener.udp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig, stat_prefix: v%d, cluster: echo,
    proxy_access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + filepath.Join(dir, "proxy.log") + `,
      log_format: {text_format: "proxy sessions=%%DYNAMIC_METADATA(udp.proxy.proxy:session_total)%% rx=%%BYTES_RECEIVED%%\n"}}}]}}]
`
	write(fmt.Sprintf(res, 1))
	p := testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  lds_config: {resource_api_version: V3, path_config_source: {path: `+lds+`}}
static_resources:
  clusters: [`+staticCluster("echo", "", up.Addr)+"]\n", nil)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	c := udpClient(t, 0)
	testutil.Eventually(t, 10*time.Second, func() bool { return exchange(t, c, addr, "x", 200*time.Millisecond) == "a:x" }, "the LDS UDP listener does not forward")
	if v := p.Stat(t, "udp.v1.downstream_sess_active"); v != 1 {
		t.Errorf("v1 downstream_sess_active = %d, want 1", v)
	}
	write(fmt.Sprintf(res, 2))
	testutil.Eventually(t, 10*time.Second, func() bool {
		return exchange(t, c, addr, "y", 200*time.Millisecond) == "a:y" && p.Stat(t, "udp.v2.downstream_sess_total") >= 1
	}, "the updated UDP listener does not forward")
	testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "udp.v1.downstream_sess_active") == 0 }, "the replaced listener's session did not end")
	write("resources: []\n")
	testutil.Eventually(t, 10*time.Second, func() bool { return exchange(t, c, addr, "z", 200*time.Millisecond) == "" }, "the removed UDP listener still forwards")
	testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "udp.v2.downstream_sess_active") == 0 }, "the removed listener's session did not end")
	// Each listener's udp_proxy wrote its proxy access log when it went.
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "proxy.log"))
		return strings.Count(string(b), "proxy sessions=") == 2
	}, "proxy access logs not written")
}

// TestUDPProxyPeriodicAccessLog: access_log_options.access_log_flush_interval
// writes a session's access log while it lasts, then once more at its end.
func TestUDPProxyPeriodicAccessLog(t *testing.T) {
	up := startUDPEcho(t, "a")
	logPath := filepath.Join(t.TempDir(), "udp.log")
	p := testutil.StartProxy(t, udpBootstrap(`{stat_prefix: pl, cluster: echo, access_log_options: {access_log_flush_interval: 0.1s},
          access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: `+logPath+`,
            log_format: {text_format: "id=%CONNECTION_ID% rx=%DYNAMIC_METADATA(udp.proxy.session:datagrams_received)%\n"}}}]}`,
		"["+staticCluster("echo", "", up.Addr)+"]"), nil)
	if got := exchange(t, udpClient(t, 0), p.Addr("udp"), "x", 5*time.Second); got != "a:x" {
		t.Fatalf("reply %q", got)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Count(string(b), " rx=1\n") >= 2
	}, "no periodic session access log")
	if v := p.Stat(t, "udp.pl.downstream_sess_active"); v != 1 {
		t.Errorf("downstream_sess_active = %d: periodic logs must not end the session", v)
	}
}

// TestUDPProxyRefused: what is not implemented is refused with its path.
func TestUDPProxyRefused(t *testing.T) {
	cl := "[" + staticCluster("echo", "", "127.0.0.1:9") + "]"
	for name, tc := range map[string]struct{ cfg, want string }{
		"use_original_src_ip": {udpBootstrap(`{stat_prefix: s, cluster: echo, use_original_src_ip: true}`, cl), "use_original_src_ip"},
		"session_filters": {udpBootstrap(`{stat_prefix: s, cluster: echo, session_filters: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.session.http_capsule.v3.FilterConfig}}]}`, cl),
			"session_filters"},
		"non-UDP input": {udpBootstrap(`{stat_prefix: s, matcher: {matcher_tree: {input: {name: h, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: x}}, exact_match_map: {map: {"a": {action: {name: r, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.Route, cluster: echo}}}}}}}}`, cl),
			"is not a UDP network input"},
		"other UDP listener filters": {strings.Replace(udpBootstrap(`{stat_prefix: s}`, cl), "envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig", "envoy.extensions.filters.udp.dns_filter.v3.DnsFilterConfig", 1),
			"not implemented by legate"},
		"a TCP listener filter": {strings.Replace(udpBootstrap(`{}`, cl), "envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig", "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector", 1),
			"expected an envoy.filters.udp_listener extension"},
		"filter chains": {strings.Replace(udpBootstrap(`{stat_prefix: s, cluster: echo}`, cl), "    listener_filters:", "    filter_chains: [{filters: [{name: e, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo}}]}]\n    listener_filters:", 1),
			"listeners[0].filter_chains"},
		"quic_options": {strings.Replace(udpBootstrap(`{stat_prefix: s, cluster: echo}`, cl), "udp_listener_config: {", "udp_listener_config: {quic_options: {}, ", 1),
			"udp_listener_config.quic_options"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := testutil.TryStartProxy(t, tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestUDPProxyHealth: sessions go to healthy hosts only, and a session
// whose host fails its health checks moves to a healthy host with its
// next datagram (Envoy's sticky session re-pick). The hosts are
// health-checked over TCP on their UDP port numbers.
func TestUDPProxyHealth(t *testing.T) {
	a, b := startUDPEcho(t, "a"), startUDPEcho(t, "b")
	tcp := map[string]net.Listener{}
	for _, u := range []*udpEcho{a, b} {
		ln, err := net.Listen("tcp4", u.Addr) // the same port number, over TCP
		if err != nil {
			t.Skipf("TCP port of %s is taken: %v", u.Addr, err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		t.Cleanup(func() { ln.Close() })
		tcp[u.name] = ln
	}
	p := testutil.StartProxy(t, udpBootstrap(`{stat_prefix: hc, cluster: checked}`,
		"["+staticCluster("checked", "health_checks: [{timeout: 1s, interval: 0.2s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {}}]", a.Addr, b.Addr)+"]"), nil)
	testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "cluster.checked.membership_healthy") == 2 }, "hosts never healthy")
	c := udpClient(t, 0)
	first, _, _ := strings.Cut(exchange(t, c, p.Addr("udp"), "x", 5*time.Second), ":")
	if first != "a" && first != "b" {
		t.Fatalf("first reply from %q", first)
	}
	other := map[string]string{"a": "b", "b": "a"}[first]
	tcp[first].Close()
	testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "cluster.checked.membership_healthy") == 1 }, "host %s never unhealthy", first)
	if got := exchange(t, c, p.Addr("udp"), "y", 5*time.Second); got != other+":y" {
		t.Errorf("after %s failed its health checks the session answered %q, want %s:y", first, got, other)
	}
	// New clients go to the healthy host only.
	for i := 0; i < 4; i++ {
		if got := exchange(t, udpClient(t, 0), p.Addr("udp"), "z", 5*time.Second); got != other+":z" {
			t.Errorf("new session %d answered %q, want %s:z", i, got, other)
		}
	}
}

// TestUDPProxyDatagramSizes: a downstream datagram longer than the
// listener's max_rx_datagram_size is dropped (listener.<address>.udp.
// downstream_rx_datagram_dropped), and an upstream one longer than
// upstream_socket_config's (1500 by default) too
// (cluster.<name>.udp.sess_rx_datagrams_dropped); datagrams that fit pass
// whole.
func TestUDPProxyDatagramSizes(t *testing.T) {
	up := startUDPEcho(t, "a")
	p := testutil.StartProxy(t, udpBootstrap(`{stat_prefix: sz, cluster: echo}`, "["+staticCluster("echo", "", up.Addr)+"]"), nil)
	addr := p.Addr("udp")
	c := udpClient(t, 0)
	small := strings.Repeat("s", 1400)
	if got := exchange(t, c, addr, small, 5*time.Second); got != "a:"+small {
		t.Fatalf("1400-byte datagram: reply of %d bytes", len(got))
	}
	// 2000 bytes fit the listener (9000) but the reply (2002) does not fit
	// the upstream socket's 1500.
	if got := exchange(t, c, addr, strings.Repeat("m", 2000), 300*time.Millisecond); got != "" {
		t.Errorf("an oversized upstream datagram was forwarded (%d bytes)", len(got))
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.echo.udp.sess_rx_datagrams_dropped") == 1 }, "sess_rx_datagrams_dropped = %d, want 1", p.Stat(t, "cluster.echo.udp.sess_rx_datagrams_dropped"))
	if got := exchange(t, c, addr, strings.Repeat("l", 9001), 300*time.Millisecond); got != "" {
		t.Errorf("an oversized downstream datagram was forwarded")
	}
	// As Envoy, the stats name the configured address (port 0 here).
	stat := "listener.127.0.0.1_0.udp.downstream_rx_datagram_dropped"
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, stat) == 1 }, "%s = %d, want 1", stat, p.Stat(t, stat))
	if v := p.Stat(t, "udp.sz.downstream_sess_rx_datagrams"); v != 2 {
		t.Errorf("downstream_sess_rx_datagrams = %d, want 2 (the truncated one never reached the filter)", v)
	}
}
