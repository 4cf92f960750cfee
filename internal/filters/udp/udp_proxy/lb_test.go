package udp_proxy

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	udpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/upstream"
)

// udpSocket is a real loopback socket as the instance's downstream side.
type udpSocket struct{ *net.UDPConn }

func (s udpSocket) SendTo(b []byte, peer netip.AddrPort) error {
	_, err := s.WriteToUDPAddrPort(b, peer)
	return err
}

func (s udpSocket) LocalAddr() netip.AddrPort {
	return s.UDPConn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// testInstance compiles a udp_proxy config (JSON) against one STATIC
// cluster "c" (JSON fields added to it) over n loopback hosts and starts
// an instance on a real socket.
func testInstance(t *testing.T, proxyJSON, clusterExtra string, n int) (*instance, *upstream.Cluster, *stats.Store) {
	t.Helper()
	st := stats.NewStore()
	m := upstream.NewManager(upstream.Deps{Stats: st, Log: slog.Default()})
	var eps string
	for i := 0; i < n; i++ {
		if i > 0 {
			eps += ","
		}
		// Nothing listens there: sessions only need a host to connect to.
		eps += fmt.Sprintf(`{"endpoint":{"address":{"socketAddress":{"address":"127.0.0.1","portValue":%d}}}}`, 40001+i)
	}
	pc := &clusterv3.Cluster{}
	js := `{"name":"c","type":"STATIC","loadAssignment":{"clusterName":"c","endpoints":[{"lbEndpoints":[` + eps + `]}]}` + clusterExtra + `}`
	if err := protojson.Unmarshal([]byte(js), pc); err != nil {
		t.Fatal(err)
	}
	cl, err := upstream.Compile(pc, "cluster", m.Deps())
	if err != nil {
		t.Fatal(err)
	}
	m.Put(cl, 5*time.Second) // hosts are set once it starts
	t.Cleanup(m.CloseAll)
	cfg := &udpv3.UdpProxyConfig{}
	if err := protojson.Unmarshal([]byte(proxyJSON), cfg); err != nil {
		t.Fatal(err)
	}
	p, err := compile(cfg, "udp_proxy", &listener.Context{Stats: st, Clusters: m, Log: slog.Default()})
	if err != nil {
		t.Fatal(err)
	}
	pcn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pcn.Close() })
	in := p.Start(udpSocket{pcn}).(*instance)
	t.Cleanup(in.Close)
	return in, cl, st
}

func TestSessionSelection(t *testing.T) {
	local := netip.MustParseAddrPort("127.0.0.1:5000")
	peer := func(ip string, port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr(ip), port) }
	for _, tc := range []struct {
		name, proxy, cluster string
		hosts                int
		send                 []netip.AddrPort
		// wantHosts is the number of distinct hosts the datagrams went
		// to, wantSessions the sessions made, wantOverflow
		// upstream_cx_overflow.
		wantHosts, wantSessions int
		wantOverflow            uint64
	}{
		{name: "sticky: one peer, one host", proxy: `{"statPrefix":"s","cluster":"c"}`, hosts: 3,
			send: []netip.AddrPort{peer("10.0.0.1", 1), peer("10.0.0.1", 1), peer("10.0.0.1", 1)}, wantHosts: 1, wantSessions: 1},
		{name: "sticky: round robin over new peers", proxy: `{"statPrefix":"s","cluster":"c"}`, hosts: 3,
			send: []netip.AddrPort{peer("10.0.0.1", 1), peer("10.0.0.1", 2), peer("10.0.0.1", 3)}, wantHosts: 3, wantSessions: 3},
		{name: "per packet: one peer over every host", proxy: `{"statPrefix":"s","cluster":"c","usePerPacketLoadBalancing":true}`, hosts: 2,
			send: []netip.AddrPort{peer("10.0.0.1", 1), peer("10.0.0.1", 1), peer("10.0.0.1", 1), peer("10.0.0.1", 1)}, wantHosts: 2, wantSessions: 2},
		{name: "source_ip hash: one IP, one host", proxy: `{"statPrefix":"s","cluster":"c","hashPolicies":[{"sourceIp":true}]}`,
			cluster: `,"lbPolicy":"RING_HASH"`, hosts: 3,
			send: []netip.AddrPort{peer("10.0.0.1", 1), peer("10.0.0.1", 2), peer("10.0.0.1", 3), peer("10.0.0.1", 4)}, wantHosts: 1, wantSessions: 4},
		{name: "key hash: every IP, one host", proxy: `{"statPrefix":"s","cluster":"c","usePerPacketLoadBalancing":true,"hashPolicies":[{"key":"k"}]}`,
			cluster: `,"lbPolicy":"MAGLEV"`, hosts: 3,
			send: []netip.AddrPort{peer("10.0.0.1", 1), peer("10.0.0.2", 1), peer("10.0.0.3", 1)}, wantHosts: 1, wantSessions: 3},
		{name: "max_connections bounds sessions", proxy: `{"statPrefix":"s","cluster":"c"}`,
			cluster: `,"circuitBreakers":{"thresholds":[{"maxConnections":2}]}`, hosts: 1,
			send:      []netip.AddrPort{peer("10.0.0.1", 1), peer("10.0.0.1", 2), peer("10.0.0.1", 3), peer("10.0.0.1", 3), peer("10.0.0.1", 1)},
			wantHosts: 1, wantSessions: 2, wantOverflow: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, cl, st := testInstance(t, tc.proxy, tc.cluster, tc.hosts)
			hosts := map[string]bool{}
			for _, p := range tc.send {
				s := in.sessionFor(&listener.Datagram{Local: local, Peer: p, Data: []byte("x")}, cl)
				if s != nil {
					hosts[s.host.Address] = true
				}
			}
			if len(hosts) != tc.wantHosts {
				t.Errorf("datagrams went to hosts %v, want %d distinct", hosts, tc.wantHosts)
			}
			if got := in.table.len(); got != tc.wantSessions {
				t.Errorf("sessions = %d, want %d", got, tc.wantSessions)
			}
			if v, _ := st.Value("udp.s.downstream_sess_total"); v != int64(tc.wantSessions) {
				t.Errorf("downstream_sess_total = %d, want %d", v, tc.wantSessions)
			}
			if v, _ := st.Value("cluster.c.upstream_cx_overflow"); uint64(v) != tc.wantOverflow {
				t.Errorf("upstream_cx_overflow = %d, want %d", v, tc.wantOverflow)
			}
			in.Close()
			if v, _ := st.Value("udp.s.downstream_sess_active"); v != 0 {
				t.Errorf("downstream_sess_active after Close = %d", v)
			}
			// The breaker slots are back: a new session can open.
			in2 := in.p.Start(in.out).(*instance)
			defer in2.Close()
			if s := in2.sessionFor(&listener.Datagram{Local: local, Peer: peer("10.9.9.9", 9), Data: []byte("x")}, cl); s == nil {
				t.Errorf("no session after Close released the breaker")
			}
		})
	}
}
