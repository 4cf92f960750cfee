// DNS clusters: STRICT_DNS and LOGICAL_DNS, custom resolvers and
// respect_dns_ttl.

package features_test

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestDNSClusters(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("dns"))
	_, port := u.Host()
	for _, typ := range []string{"STRICT_DNS", "LOGICAL_DNS"} {
		t.Run(typ, func(t *testing.T) {
			p := start(t, cfg{
				vhosts: vhost("{match: {prefix: /}, route: {cluster: d, auto_host_rewrite: true}}"),
				clusters: fmt.Sprintf("[{name: d, type: %s, dns_lookup_family: V4_ONLY, dns_refresh_rate: 0.2s, connect_timeout: 1s, load_assignment: {cluster_name: d, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: localhost, port_value: %s}}}}]}]}}]",
					typ, port),
			})
			code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/"))
			if code != 200 || !strings.Contains(body, "upstream=dns") {
				t.Fatalf("%d %s", code, body)
			}
			if !strings.Contains(body, "host=localhost") {
				t.Errorf("auto_host_rewrite should send the DNS name as host:\n%s", body)
			}
			if n := p.Stat(t, "cluster.d.update_success"); n < 1 {
				t.Errorf("update_success = %d", n)
			}
		})
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

// TestBootstrapDNSResolver: a STRICT_DNS cluster without resolvers of its
// own resolves through the bootstrap's typed_dns_resolver_config (c-ares
// resolvers), as Envoy; with the cluster's own typed config, the
// bootstrap's is not used.
func TestBootstrapDNSResolver(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	_, port, _ := net.SplitHostPort(up.Addr)
	dns := startDNS(t, [4]byte{127, 0, 0, 1}, 30)
	dh, dp, _ := net.SplitHostPort(dns.addr)
	cares := func(h, p string) string {
		return fmt.Sprintf(`{name: envoy.network.dns_resolver.cares, typed_config: {"@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig,
		  resolvers: [{socket_address: {address: %s, port_value: %s}}], dns_resolver_options: {use_tcp_for_dns_lookups: false}}}`, h, p)
	}
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /a}, route: {cluster: a}}", "{match: {prefix: /b}, route: {cluster: b}}"),
		clusters: fmt.Sprintf(`[{name: a, type: STRICT_DNS, dns_lookup_family: V4_ONLY, connect_timeout: 1s,
		  load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: svc.test, port_value: %s}}}}]}]}},
		  {name: b, type: STRICT_DNS, dns_lookup_family: V4_ONLY, connect_timeout: 1s, typed_dns_resolver_config: %s,
		  load_assignment: {cluster_name: b, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: svc.test, port_value: %s}}}}]}]}}]`,
			port, cares("127.0.0.1", "1"), port),
		extra: "typed_dns_resolver_config: " + cares(dh, dp) + "\n",
	})
	if code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/a")); code != 200 || !strings.Contains(body, "upstream=up") {
		t.Fatalf("through the bootstrap's resolver: %d %q", code, body)
	}
	if dns.hits.Load() == 0 {
		t.Error("the bootstrap's resolver was not asked")
	}
	// b asks 127.0.0.1:1, where nothing answers: no host.
	if code, _, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/b")); code != 503 {
		t.Errorf("a cluster with its own resolver = %d, want 503 (its resolver does not answer)", code)
	}
}
