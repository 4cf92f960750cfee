package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestRedirects(t *testing.T) {
	p := start(t, cfg{
		vhosts: vhost(
			"{match: {prefix: /https}, redirect: {https_redirect: true}}",
			"{match: {prefix: /host}, redirect: {host_redirect: new.example.com, port_redirect: 8443, response_code: PERMANENT_REDIRECT}}",
			"{match: {prefix: /old/}, redirect: {prefix_rewrite: /new/, response_code: TEMPORARY_REDIRECT}}",
			"{match: {prefix: /strip}, redirect: {path_redirect: /clean, strip_query: true, response_code: SEE_OTHER}}",
			"{match: {prefix: /scheme}, redirect: {scheme_redirect: ftp}}",
		),
		clusters: "[]",
	})
	cases := []struct {
		path, host string
		status     int
		location   string
	}{
		{"/https/a?x=1", "example.com:80", 301, "https://example.com/https/a?x=1"},
		{"/host/p", "example.com", 308, "http://new.example.com:8443/host/p"},
		{"/old/thing?q", "example.com", 307, "http://example.com/new/thing?q"},
		{"/strip?secret=1", "example.com", 303, "http://example.com/clean"},
		{"/scheme", "example.com", 301, "ftp://example.com/scheme"},
	}
	for _, tc := range cases {
		code, h, _ := testutil.Get(t, testutil.Client(), p.URL("http", tc.path), "host", tc.host)
		if code != tc.status || h.Get("location") != tc.location {
			t.Errorf("%s: %d %q, want %d %q", tc.path, code, h.Get("location"), tc.status, tc.location)
		}
	}
}

func TestRequestMirror(t *testing.T) {
	main := testutil.StartUpstream(t, testutil.EchoHandler("main"))
	var mu sync.Mutex
	var shadowHosts []string
	shadow := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		shadowHosts = append(shadowHosts, r.Host+" "+string(b))
		mu.Unlock()
		w.WriteHeader(500) // a mirror's response is ignored
	}))
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: main, request_mirror_policies: [{cluster: shadow}]}}"),
		clusters: "[" + staticCluster("main", "", main.Addr) + ", " + staticCluster("shadow", "", shadow.Addr) + "]",
	})
	resp, err := http.Post(p.URL("http", "/m"), "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("mirrored request: %d", resp.StatusCode)
	}
	testutil.Eventually(t, 3*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(shadowHosts) == 1
	}, "the mirror cluster did not get a copy")
	mu.Lock()
	if !strings.HasPrefix(shadowHosts[0], "127.0.0.1-shadow:") || !strings.HasSuffix(shadowHosts[0], " payload") {
		t.Errorf("shadow request: %q (want host suffixed -shadow and the body)", shadowHosts[0])
	}
	mu.Unlock()
}

func TestIPv6ListenerAndServerName(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback on this machine")
	}
	ln.Close()
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	h, port := u.Host()
	p := testutil.StartProxy(t, fmt.Sprintf(`
static_resources:
  listeners:
  - name: v6
    address: {socket_address: {address: "::1", port_value: 0}}
    filter_chains: [{filters: [%s]}]
  clusters: [%s]
`, (`{name: hcm, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: v6, server_name: legate-edge,
  route_config: {virtual_hosts: [{name: v, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: u}}]}]},
  http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]}}`),
		staticCluster("u", "", net.JoinHostPort(h, port))), nil)
	code, hdr, body := testutil.Get(t, testutil.Client(), "http://"+p.Addr("v6")+"/six")
	if code != 200 || !strings.Contains(body, "path=/six") || hdr.Get("server") != "legate-edge" {
		t.Fatalf("IPv6 listener: %d server=%q\n%s", code, hdr.Get("server"), body)
	}
	if a, _ := netip.ParseAddrPort(p.Addr("v6")); !a.Addr().Is6() {
		t.Fatalf("bound %s, want IPv6", p.Addr("v6"))
	}
}

func TestRequestAndIdleTimeouts(t *testing.T) {
	slow := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(400 * time.Millisecond)
		w.Write([]byte("late"))
	}))
	p := start(t, cfg{
		hcm: "request_timeout: 0.3s",
		vhosts: vhost("{match: {prefix: /idle}, route: {cluster: slow, timeout: 5s, idle_timeout: 0.1s}}",
			"{match: {prefix: /}, route: {cluster: slow, timeout: 5s}}"),
		clusters: "[" + staticCluster("slow", "", slow.Addr) + "]",
	})
	// A body that never finishes: request_timeout answers 408.
	conn, err := net.Dial("tcp", p.Addr("http"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly part")
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, _ := io.ReadAll(conn)
	if !strings.HasPrefix(string(b), "HTTP/1.1 408") || !strings.Contains(string(b), "request timeout") {
		t.Fatalf("request_timeout: %q", b)
	}
	// A route idle_timeout shorter than the upstream's silence: 408 stream timeout.
	code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/idle"))
	if code != 408 || body != "stream timeout" {
		t.Fatalf("route idle_timeout: %d %q", code, body)
	}
}

// dnsServer answers A queries for svc.test. with a changeable address and TTL.
type dnsServer struct {
	addr string
	ip   atomic.Value // [4]byte
	ttl  uint32
	hits atomic.Int64
}

func startDNS(t *testing.T, ip [4]byte, ttl uint32) *dnsServer {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	s := &dnsServer{addr: pc.LocalAddr().String(), ttl: ttl}
	s.ip.Store(ip)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var m dnsmessage.Message
			if m.Unpack(buf[:n]) != nil || len(m.Questions) != 1 {
				continue
			}
			s.hits.Add(1)
			q := m.Questions[0]
			resp := dnsmessage.Message{Header: dnsmessage.Header{ID: m.Header.ID, Response: true, Authoritative: true}, Questions: m.Questions}
			if q.Type == dnsmessage.TypeA && q.Name.String() == "svc.test." {
				resp.Answers = []dnsmessage.Resource{{Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: s.ttl},
					Body: &dnsmessage.AResource{A: s.ip.Load().([4]byte)}}}
			} else if q.Name.String() != "svc.test." {
				resp.Header.RCode = dnsmessage.RCodeNameError
			}
			out, _ := resp.Pack()
			pc.WriteTo(out, from)
		}
	}()
	return s
}

func TestRespectDNSTTL(t *testing.T) {
	// Two upstreams on the same port number need two loopback addresses.
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln1.Addr().String())
	ln2, err := net.Listen("tcp", "127.0.0.2:"+port)
	if err != nil {
		ln1.Close()
		t.Skip("127.0.0.2 is not usable here")
	}
	for i, ln := range []net.Listener{ln1, ln2} {
		name := fmt.Sprint("ip", i+1)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(name)) })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	dns := startDNS(t, [4]byte{127, 0, 0, 1}, 1)
	dh, dp, _ := net.SplitHostPort(dns.addr)
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /}, route: {cluster: d}}"),
		clusters: fmt.Sprintf(`[{name: d, type: STRICT_DNS, respect_dns_ttl: true, dns_refresh_rate: 60s, dns_lookup_family: V4_ONLY, connect_timeout: 1s,
		  dns_resolvers: [{socket_address: {address: %s, port_value: %s}}],
		  load_assignment: {cluster_name: d, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: svc.test, port_value: %s}}}}]}]}}]`, dh, dp, port),
	})
	if _, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/")); body != "ip1" {
		t.Fatalf("first resolution: %q", body)
	}
	dns.ip.Store([4]byte{127, 0, 0, 2})
	// The 1 s TTL, not the 60 s refresh rate, decides when the name is resolved again.
	testutil.Eventually(t, 5*time.Second, func() bool {
		_, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/"))
		return body == "ip2"
	}, "the TTL was not respected")
}
