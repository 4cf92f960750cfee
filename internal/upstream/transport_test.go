package upstream

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/proxyproto"
	"github.com/legateproxy/legate/internal/stats"
)

// ppTransport is a PROXY-protocol-sending transport socket that records
// the DialInfo each connection is made with.
type ppTransport struct {
	mu    sync.Mutex
	dials []*DialInfo
}

func (p *ppTransport) Client(ctx context.Context, conn net.Conn, _ string) (net.Conn, error) {
	p.mu.Lock()
	p.dials = append(p.dials, DialInfoFrom(ctx))
	p.mu.Unlock()
	return conn, nil
}
func (p *ppTransport) ALPN(net.Conn) string            { return "" }
func (p *ppTransport) SendsProxyProtocol() bool        { return true }
func (p *ppTransport) ImplementsSecureTransport() bool { return false }

func ppTestCluster(t *testing.T, addr, extra string, tr TransportSocket) (*Cluster, error) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	yaml := fmt.Sprintf(`name: c
type: STATIC
connect_timeout: 1s
transport_socket: {name: envoy.transport_sockets.raw_buffer}
load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}%s`, host, port, extra)
	pc := &clusterv3.Cluster{}
	if _, err := config.Decode([]byte(yaml), pc, "cluster"); err != nil {
		t.Fatal(err)
	}
	return Compile(pc, "cluster", Deps{Stats: stats.NewStore(),
		Transport: func(*corev3.TransportSocket, string, *clusterv3.Cluster, []string) (TransportSocket, error) {
			return tr, nil
		}})
}

// TestProxyProtocolPools: a PROXY-protocol cluster pools connections per
// downstream address pair and hands the record to the transport socket;
// the sweep drops emptied per-downstream pools, and a connection released
// to a dropped pool is closed, not pooled.
func TestProxyProtocolPools(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // held open until the proxy side closes it
				defer c.Close()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	tr := &ppTransport{}
	c, err := ppTestCluster(t, ln.Addr().String(), "", tr)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(c.Close)
	<-c.Ready()
	h := c.Pick(&LBContext{})
	if !c.SendsProxyProtocol() {
		t.Fatal("the cluster does not know its socket sends PROXY headers")
	}
	a := &proxyproto.Data{Src: netip.MustParseAddrPort("192.0.2.1:1"), Dst: netip.MustParseAddrPort("192.0.2.9:80")}
	b := &proxyproto.Data{Src: netip.MustParseAddrPort("192.0.2.2:1"), Dst: netip.MustParseAddrPort("192.0.2.9:80")}
	ca, err := c.AcquireWith(time.Time{}, h, ConnOptions{ProxyProtocol: a})
	if err != nil {
		t.Fatal(err)
	}
	c.Release(ca, true)
	again, _ := c.AcquireWith(time.Time{}, h, ConnOptions{ProxyProtocol: &proxyproto.Data{Src: a.Src, Dst: a.Dst}})
	if again != ca {
		t.Fatal("the same downstream addresses did not reuse their connection")
	}
	cb, _ := c.AcquireWith(time.Time{}, h, ConnOptions{ProxyProtocol: b})
	if cb == ca {
		t.Fatal("another downstream connection got the first one's upstream connection")
	}
	if len(tr.dials) != 2 || tr.dials[0].ProxyProtocol != a || tr.dials[1].ProxyProtocol != b || tr.dials[0].Host != h {
		t.Fatalf("dial infos %+v", tr.dials)
	}
	c.Release(again, true)
	// Sweep: a's pool holds an idle connection, b's one in use.
	c.closeIdle(h, 0)
	h.prunePools()
	n := 0
	h.sniPools.Range(func(k, _ any) bool { n++; return strings.Contains(k.(string), "proxy:") })
	if n != 0 {
		t.Fatalf("%d per-downstream pools left after the sweep", n)
	}
	before := c.Stats.cxDestroy.Value()
	c.Release(cb, true) // its pool is gone: closed
	if c.Stats.cxDestroy.Value() != before+1 {
		t.Fatal("a connection released to a dropped pool was kept")
	}
	if _, err := c.AcquireWith(time.Time{}, h, ConnOptions{ProxyProtocol: b}); err != nil || len(tr.dials) != 3 {
		t.Fatalf("after the sweep: %v, %d dials", err, len(tr.dials))
	}
}

func TestProxyProtocolRefusesHTTP2(t *testing.T) {
	_, err := ppTestCluster(t, "127.0.0.1:1", "\ntyped_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {\"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}", &ppTransport{})
	if err == nil || !strings.Contains(err.Error(), "cluster.transport_socket") || !strings.Contains(err.Error(), "HTTP/2") {
		t.Fatalf("HTTP/2 cluster with a PROXY protocol socket: %v", err)
	}
}

func TestSecureTransport(t *testing.T) {
	if secureTransport(nil) || secureTransport(&ppTransport{}) {
		t.Fatal("plaintext reported secure")
	}
	if !secureTransport(plainTLS{}) {
		t.Fatal("a socket without ImplementsSecureTransport is TLS")
	}
}

type plainTLS struct{}

func (plainTLS) Client(_ context.Context, c net.Conn, _ string) (net.Conn, error) { return c, nil }
func (plainTLS) ALPN(net.Conn) string                                             { return "" }
