// use_original_dst hand-off between listeners, bind_to_port: false
// listeners, ORIGINAL_DST pass-through clusters and upstream_bind_config,
// with real iptables REDIRECT rules in a private network namespace: the
// sidecar pattern of Istio's virtualOutbound listener on 15001.

package features_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/testutil"
)

// Addresses of the namespace the hand-off tests build (TEST-NET-1/2,
// 2001:db8::/32): clients bind clientV4/clientV6, the only sources the
// REDIRECT rules match, so the proxy's own upstream connections (sourced
// from the destination address the kernel picks) are never redirected.
const (
	clientV4 = "192.0.2.1"
	clientV6 = "2001:db8::1"
	svcTen   = "198.51.100.10" // has a bind_to_port: false listener of its own on :80
	svcEl    = "198.51.100.11" // reaches the 0.0.0.0:80 listener
	svcTw    = "198.51.100.20" // no listener on its port: 15001's own chain
	svcTwel  = "198.51.100.12" // a chain of 0.0.0.0:80 matches its address
	svcV6    = "2001:db8::10"
	svcV6b   = "2001:db8::20"
)

// netnsRun runs a setup command in the test's network namespace.
func netnsRun(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// redirectNetns adds the test addresses on lo and the nat OUTPUT rules
// that send the clients' TCP connections to the proxy's virtualOutbound
// port, as Istio's sidecar rules do (ISTIO_OUTPUT → REDIRECT 15001).
func redirectNetns(t *testing.T, v6 bool) {
	t.Helper()
	for _, a := range []string{clientV4, svcTen, svcEl, svcTw, svcTwel} {
		netnsRun(t, "ip", "addr", "add", a+"/32", "dev", "lo")
	}
	port := fmt.Sprint(mesh.OutboundPort)
	netnsRun(t, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-s", clientV4, "-j", "REDIRECT", "--to-ports", port)
	if v6 {
		for _, a := range []string{clientV6, svcV6, svcV6b} {
			// nodad: usable at once, no duplicate address detection wait.
			netnsRun(t, "ip", "-6", "addr", "add", a+"/128", "dev", "lo", "nodad")
		}
		netnsRun(t, "ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-s", clientV6, "-j", "REDIRECT", "--to-ports", port)
	}
}

// remoteUpstream is an HTTP upstream on addr that answers with its name
// and the peer address it sees.
func remoteUpstream(t *testing.T, addr, name string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream=%s\nremote=%s\n", name, r.RemoteAddr)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// tcpEchoAt is a TCP echo server on addr.
func tcpEchoAt(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
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
}

// clientFrom is an HTTP client whose connections come from src (and so
// are redirected to the proxy), one connection per request.
func clientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// dialFrom opens a TCP connection from src to dst.
func dialFrom(t *testing.T, src, dst string) net.Conn {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// getFrom sends GET / to addr from src and returns the status, one
// response header and the body.
func getFrom(t *testing.T, src, addr, header string) (int, string, string) {
	t.Helper()
	resp, err := clientFrom(src).Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET %s from %s: %v", addr, src, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get(header), string(b)
}

const (
	origDstFilter = `{name: envoy.filters.listener.original_dst, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}}`
	httpInspector = `{name: envoy.filters.listener.http_inspector, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}}`
	// passthroughCluster is Istio's PassthroughCluster: ORIGINAL_DST with
	// the cluster-provided load balancer.
	passthroughCluster = `{name: PassthroughCluster, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, connect_timeout: 1s}`
)

// tcpProxyTo renders a tcp_proxy filter.
func tcpProxyTo(statPrefix, cluster string) string {
	return fmt.Sprintf(`{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: %s, cluster: %s}}`, statPrefix, cluster)
}

// hcmTagged renders a connection manager that routes everything to
// cluster and tags its responses with x-listener: tag.
func hcmTagged(statPrefix, cluster, tag string) string {
	return fmt.Sprintf(hcmPrefix, statPrefix, fmt.Sprintf(`{match: {prefix: /}, route: {cluster: %s}, response_headers_to_add: [{header: {key: x-listener, value: %s}}]}`, cluster, tag))
}

// virtualOutbound renders the 15001 listener on addr (0.0.0.0 or ::):
// use_original_dst, the original_dst listener filter (implicit, as
// use_original_dst brings it in Envoy, unless explicit), and a
// pass-through tcp_proxy chain of its own for destinations no listener
// has.
func virtualOutbound(addr string, explicit bool) string {
	filters := ""
	if explicit {
		filters = "    listener_filters: [" + origDstFilter + "]\n"
	}
	return fmt.Sprintf(`  - name: virtualOutbound
    address: {socket_address: {address: "%s", port_value: %d}}
    use_original_dst: true
%s    filter_chains: [{filters: [%s]}]
`, addr, mesh.OutboundPort, filters, tcpProxyTo("PassthroughCluster", "PassthroughCluster"))
}

// TestOriginalDstHandoff: a client connects to a service address; iptables
// redirects it to the proxy's 15001 listener, which hands the connection to
// the bind_to_port: false listener of the original destination — its
// exact address first, else 0.0.0.0:port —, whose own listener filters
// (http_inspector) and filter_chain_match (source ranges, application
// protocols) choose the chain; an ORIGINAL_DST cluster then reaches the
// original destination. A destination no listener has stays on 15001's
// own pass-through chain, and a connection that was not redirected at all
// is not sent back to the proxy.
func TestOriginalDstHandoff(t *testing.T) {
	if !testutil.InNetns(t) {
		return
	}
	redirectNetns(t, false)
	remoteUpstream(t, svcTen+":80", "ten")
	remoteUpstream(t, svcEl+":80", "eleven")
	tcpEchoAt(t, svcTw+":9000")
	p := testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
`+virtualOutbound("0.0.0.0", true)+`
  - name: 0.0.0.0_80
    address: {socket_address: {address: 0.0.0.0, port_value: 80}}
    bind_to_port: false
    listener_filters: [`+httpInspector+`]
    filter_chains:
    - filter_chain_match: {application_protocols: [http/1.1]}
      filters: [`+hcmTagged("any80", "orig", "any80")+`]
    - filter_chain_match: {prefix_ranges: [{address_prefix: `+svcTwel+`, prefix_len: 32}], application_protocols: [http/1.1]}
      filters: [`+hcmTagged("twelve", "ten", "twelve")+`]
    - filters: [`+tcpProxyTo("any80_tcp", "orig")+`]
  - name: `+svcTen+`_80
    address: {socket_address: {address: `+svcTen+`, port_value: 80}}
    bind_to_port: false
    filter_chains:
    - filter_chain_match: {source_prefix_ranges: [{address_prefix: `+clientV4+`, prefix_len: 32}]}
      filters: [`+hcmTagged("ten_client", "orig", "ten-client")+`]
    - filters: [`+hcmTagged("ten_other", "orig", "ten-other")+`]
  clusters:
  - `+passthroughCluster+`
  - {name: orig, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, connect_timeout: 1s}
  - `+staticCluster("ten", "", svcTen+":80")+`
`, nil)
	// bind_to_port: false binds nothing: port 80 of an address no
	// upstream has is free (a bound 0.0.0.0:80 would hold it).
	if ln, err := net.Listen("tcp", svcTw+":80"); err != nil {
		t.Errorf("port 80 is bound though its listeners have bind_to_port: false: %v", err)
	} else {
		ln.Close()
	}

	t.Run("exact address listener", func(t *testing.T) {
		code, tag, body := getFrom(t, clientV4, svcTen+":80", "x-listener")
		if code != 200 || tag != "ten-client" || !strings.Contains(body, "upstream=ten") {
			t.Fatalf("GET %s:80: %d x-listener=%q %q; want 200 from the %s:80 listener's source-matched chain", svcTen, code, tag, body, svcTen)
		}
		if got := p.Stat(t, "http.ten_client.downstream_rq_total"); got != 1 {
			t.Errorf("http.ten_client.downstream_rq_total = %d, want 1", got)
		}
	})
	t.Run("wildcard listener of the port", func(t *testing.T) {
		code, tag, body := getFrom(t, clientV4, svcEl+":80", "x-listener")
		if code != 200 || tag != "any80" || !strings.Contains(body, "upstream=eleven") {
			t.Fatalf("GET %s:80: %d x-listener=%q %q; want 200 from 0.0.0.0:80's HTTP chain, to the original destination", svcEl, code, tag, body)
		}
		// The target's chains match the restored destination.
		code, tag, body = getFrom(t, clientV4, svcTwel+":80", "x-listener")
		if code != 200 || tag != "twelve" || !strings.Contains(body, "upstream=ten") {
			t.Fatalf("GET %s:80: %d x-listener=%q %q; want 200 from the chain matching its address", svcTwel, code, tag, body)
		}
		// The target's own listener filter ran: a byte stream that is not
		// HTTP takes its other chain.
		c := dialFrom(t, clientV4, svcEl+":80")
		defer c.Close()
		io.WriteString(c, "NOT HTTP\r\n\r\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		if !strings.HasPrefix(line, "HTTP/1.1 400") {
			t.Errorf("raw bytes through the tcp chain: %q, want the upstream's 400", line)
		}
		if got := p.Stat(t, "tcp.any80_tcp.downstream_cx_total"); got != 1 {
			t.Errorf("tcp.any80_tcp.downstream_cx_total = %d, want 1 (http_inspector on the target listener did not choose)", got)
		}
	})
	t.Run("no listener: 15001's own chain", func(t *testing.T) {
		before := p.Stat(t, "tcp.PassthroughCluster.downstream_cx_total")
		c := dialFrom(t, clientV4, svcTw+":9000")
		defer c.Close()
		io.WriteString(c, "ping\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "ping\n" {
			t.Fatalf("echo through the pass-through chain: %q %v", line, err)
		}
		if got := p.Stat(t, "tcp.PassthroughCluster.downstream_cx_total"); got != before+1 {
			t.Errorf("tcp.PassthroughCluster.downstream_cx_total = %d, want %d", got, before+1)
		}
	})
	t.Run("handed-off connections are the target's", func(t *testing.T) {
		// As Envoy, the accepting listener counts only the connections it
		// keeps: the pass-through one above.
		if got := p.Stat(t, "listener.0.0.0.0_15001.downstream_cx_total"); got != 1 {
			t.Errorf("listener.0.0.0.0_15001.downstream_cx_total = %d, want 1", got)
		}
		if got := p.Stat(t, "listener.0.0.0.0_80.downstream_cx_total"); got != 3 {
			t.Errorf("listener.0.0.0.0_80.downstream_cx_total = %d, want 3", got)
		}
	})
	t.Run("not redirected: no original destination", func(t *testing.T) {
		// Straight to 15001: the listener keeps its local address, and the
		// ORIGINAL_DST cluster has no restored destination to go to (no
		// connection back to the proxy itself).
		before := p.Stat(t, "listener.0.0.0.0_15001.downstream_cx_total")
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", mesh.OutboundPort), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "ping\n")
		if b, _ := io.ReadAll(c); len(b) != 0 {
			t.Errorf("a connection with no original destination got %q", b)
		}
		if got := p.Stat(t, "listener.0.0.0.0_15001.downstream_cx_total"); got != before+1 {
			t.Errorf("listener.0.0.0.0_15001.downstream_cx_total = %d, want %d (one connection, no loop)", got, before+1)
		}
	})
}

// TestOriginalDstHandoffIPv6: the same over ip6tables, to [::]:port
// listeners, with the original_dst filter that use_original_dst implies.
func TestOriginalDstHandoffIPv6(t *testing.T) {
	if !testutil.InNetns(t) {
		return
	}
	redirectNetns(t, true)
	remoteUpstream(t, "["+svcV6+"]:80", "ten6")
	tcpEchoAt(t, "["+svcV6b+"]:9000")
	p := testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
`+virtualOutbound("::", false)+`
  - name: any6_80
    address: {socket_address: {address: "::", port_value: 80}}
    bind_to_port: false
    filter_chains: [{filters: [`+hcmTagged("any6_80", "PassthroughCluster", "any6")+`]}]
  clusters:
  - `+passthroughCluster+`
`, nil)
	code, tag, body := getFrom(t, clientV6, "["+svcV6+"]:80", "x-listener")
	if code != 200 || tag != "any6" || !strings.Contains(body, "upstream=ten6") {
		t.Fatalf("GET [%s]:80: %d x-listener=%q %q; want 200 from the [::]:80 listener", svcV6, code, tag, body)
	}
	c := dialFrom(t, clientV6, "["+svcV6b+"]:9000")
	defer c.Close()
	io.WriteString(c, "ping6\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "ping6\n" {
		t.Fatalf("echo through the pass-through chain: %q %v", line, err)
	}
	if got := p.Stat(t, "tcp.PassthroughCluster.downstream_cx_total"); got != 1 {
		t.Errorf("tcp.PassthroughCluster.downstream_cx_total = %d, want 1", got)
	}
}

// TestOriginalDstHandoffLDS: hand-off targets added, updated in place,
// replaced and removed over LDS: each connection goes to the current
// listener of its destination, never to one being drained, and once the
// target is gone to 15001's own chain.
func TestOriginalDstHandoffLDS(t *testing.T) {
	if !testutil.InNetns(t) {
		return
	}
	redirectNetns(t, false)
	remoteUpstream(t, svcEl+":80", "eleven")
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
	// extra is a listener-level field: changing it is a full update (a
	// new listener replaces the old one, which drains).
	target := func(tag, extra string) string {
		return `resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: 0.0.0.0_80
  address: {socket_address: {address: 0.0.0.0, port_value: 80}}
  bind_to_port: false
` + extra + `  filter_chains: [{filters: [` + hcmTagged("any80", "PassthroughCluster", tag) + `]}]
`
	}
	write(target("v1", ""))
	p := testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  lds_config: {resource_api_version: V3, path_config_source: {path: `+lds+`}}
static_resources:
  listeners:
`+virtualOutbound("0.0.0.0", true)+`  clusters:
  - `+passthroughCluster+`
`, nil)
	tagNow := func() string {
		code, tag, body := getFrom(t, clientV4, svcEl+":80", "x-listener")
		if code != 200 || !strings.Contains(body, "upstream=eleven") {
			t.Fatalf("GET %s:80: %d %q", svcEl, code, body)
		}
		return tag
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return tagNow() == "v1" }, "the LDS listener does not take hand-offs")
	write(target("v2", "")) // filter chains only: in place
	testutil.Eventually(t, 10*time.Second, func() bool { return tagNow() == "v2" }, "the in-place update is not used for hand-offs")
	write(target("v3", "  per_connection_buffer_limit_bytes: 65536\n")) // full update
	testutil.Eventually(t, 10*time.Second, func() bool { return tagNow() == "v3" }, "the replacing listener does not take hand-offs")
	for i := 0; i < 5; i++ {
		if tag := tagNow(); tag != "v3" {
			t.Fatalf("after the full update, a hand-off went to %q (a drained listener)", tag)
		}
	}
	write("resources: []\n")
	testutil.Eventually(t, 10*time.Second, func() bool { return tagNow() == "" }, "a removed listener still takes hand-offs")
	if got := p.Stat(t, "tcp.PassthroughCluster.downstream_cx_total"); got < 1 {
		t.Errorf("tcp.PassthroughCluster.downstream_cx_total = %d after the target went away", got)
	}
}

// TestUpstreamBindConfig: a cluster's upstream_bind_config, else the
// bootstrap's cluster_manager.upstream_bind_config, is the source address
// upstreams see — Istio's inbound pass-through binds 127.0.0.6 —, a
// fixed source port included; extra_source_addresses gives the IPv6
// upstream its own.
func TestUpstreamBindConfig(t *testing.T) {
	if !testutil.InNetns(t) {
		return
	}
	port := testutil.FreePort(t)
	up := "127.0.0.1:" + fmt.Sprint(testutil.FreePort(t))
	up6 := "[::1]:" + fmt.Sprint(testutil.FreePort(t))
	remoteUpstream(t, up, "v4")
	remoteUpstream(t, up6, "v6")
	p := start(t, cfg{
		vhosts: vhost(`{match: {prefix: /own}, route: {cluster: own}}`, `{match: {prefix: /fixed}, route: {cluster: fixed}}`,
			`{match: {prefix: /default}, route: {cluster: dflt}}`, `{match: {prefix: /v6}, route: {cluster: v6}}`,
			`{match: {prefix: /inbound}, route: {cluster: InboundPassthroughCluster}}`),
		clusters: "[" + strings.Join([]string{
			staticCluster("own", "upstream_bind_config: {source_address: {address: 127.0.0.6, port_value: 0}}", up),
			staticCluster("fixed", fmt.Sprintf("upstream_bind_config: {source_address: {address: 127.0.0.6, port_value: %d}}", port), up),
			staticCluster("dflt", "", up),
			fmt.Sprintf(`{name: v6, connect_timeout: 1s, type: STATIC, load_assignment: {cluster_name: v6, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: '::1', port_value: %s}}}}]}]}, upstream_bind_config: {source_address: {address: 127.0.0.6, port_value: 0}, extra_source_addresses: [{address: {address: '::1', port_value: 0}}]}}`, up6[len("[::1]:"):]),
			// Istio's inbound pass-through: ORIGINAL_DST bound to 127.0.0.6.
			`{name: InboundPassthroughCluster, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, connect_timeout: 1s, original_dst_lb_config: {use_http_header: true}, upstream_bind_config: {source_address: {address: 127.0.0.6, port_value: 0}}}`,
		}, ", ") + "]",
		extra: "cluster_manager: {upstream_bind_config: {source_address: {address: 127.0.0.7, port_value: 0}}}\n",
	})
	for _, c := range []struct{ path, want string }{
		{"/own", "remote=127.0.0.6:"},
		{"/fixed", fmt.Sprintf("remote=127.0.0.6:%d\n", port)},
		{"/default", "remote=127.0.0.7:"},
		{"/v6", "remote=[::1]:"},
		{"/inbound", "remote=127.0.0.6:"},
	} {
		code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", c.path), "x-envoy-original-dst-host", up, "connection", "close")
		if code != 200 || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %q, want %q", c.path, code, body, c.want)
		}
	}
	// A source address this host does not have fails to bind (no
	// freebind): a connect failure, counted.
	p2 := start(t, cfg{
		vhosts:   vhost(`{match: {prefix: /}, route: {cluster: bad}}`),
		clusters: "[" + staticCluster("bad", "upstream_bind_config: {source_address: {address: 203.0.113.9, port_value: 0}}", up) + "]",
	})
	if code, _, _ := testutil.Get(t, testutil.Client(), p2.URL("http", "/")); code != 503 {
		t.Errorf("unbindable source address: %d, want 503", code)
	}
	if got := p2.Stat(t, "cluster.bad.upstream_cx_connect_fail"); got < 1 {
		t.Errorf("cluster.bad.upstream_cx_connect_fail = %d", got)
	}
}

// TestOriginalDstHandoffConfigErrors: what a listener or bind config that
// cannot work is refused with, naming its path.
func TestOriginalDstHandoffConfigErrors(t *testing.T) {
	pipe := filepath.Join(t.TempDir(), "p.sock")
	for _, c := range []struct{ name, yaml, want string }{
		{"bind_to_port false on a pipe", `static_resources:
  listeners:
  - name: p
    address: {pipe: {path: ` + pipe + `}}
    bind_to_port: false
    filter_chains: [{filters: [` + tcpProxyTo("p", "PassthroughCluster") + `]}]
  clusters: [` + passthroughCluster + `]
`, "bind_to_port: false needs a socket_address listener"},
		{"extra source address of the same family", `static_resources:
  clusters: [{name: c, connect_timeout: 1s, upstream_bind_config: {source_address: {address: 127.0.0.6, port_value: 0}, extra_source_addresses: [{address: {address: 127.0.0.7, port_value: 0}}]}}]
`, "clusters[0].upstream_bind_config.extra_source_addresses"},
		{"custom local address selector", `static_resources:
  clusters: [{name: c, connect_timeout: 1s, upstream_bind_config: {source_address: {address: 127.0.0.6, port_value: 0}, local_address_selector: {name: x, typed_config: {"@type": type.googleapis.com/google.protobuf.Empty}}}}]
`, "clusters[0].upstream_bind_config.local_address_selector"},
		{"source address by name", `static_resources:
  clusters: [{name: c, connect_timeout: 1s, upstream_bind_config: {source_address: {address: localhost, port_value: 0}}}]
`, "clusters[0].upstream_bind_config.source_address.address"},
		{"bootstrap bind config", `cluster_manager: {upstream_bind_config: {source_address: {address: 127.0.0.6, port_value: 0}, socket_options: [{level: 1, name: 2, int_value: 1, state: STATE_LISTENING}]}}
`, "cluster_manager.upstream_bind_config.socket_options[0].state"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := testutil.TryStartProxy(t, c.yaml, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want one containing %q", err, c.want)
			}
		})
	}
}
