package upstream_proxy_protocol

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	pptsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"

	"github.com/legateproxy/legate/internal/proxyproto"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/upstream"
)

func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		done <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-done
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

var raw = &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer"}

func compileSocket(t *testing.T, pc *corev3.ProxyProtocolConfig) (*socket, *stats.Store) {
	t.Helper()
	st := stats.NewStore()
	ts, err := compile(&pptsv3.ProxyProtocolUpstreamTransport{Config: pc, TransportSocket: raw}, "ts",
		upstream.TransportContext{Stats: st.Scope("cluster.c."), Inner: func(*corev3.TransportSocket, string) (upstream.TransportSocket, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return ts.(*socket), st
}

// header runs Client on the client end of a fresh connection with d and
// returns what the peer received (want's length of it), and the client
// end.
func header(t *testing.T, s *socket, d *upstream.DialInfo, want func(client net.Conn) int) ([]byte, net.Conn) {
	t.Helper()
	client, server := tcpPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if d != nil {
		ctx = upstream.WithDialInfo(ctx, d)
	}
	if _, err := s.Client(ctx, client, ""); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, want(client))
	server.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(server, b); err != nil {
		t.Fatalf("read %d header bytes: %v (got %q)", len(b), err, b)
	}
	return b, client
}

func n(k int) func(net.Conn) int { return func(net.Conn) int { return k } }

var sig = "\r\n\r\n\x00\r\nQUIT\n"

func TestV1(t *testing.T) {
	s, _ := compileSocket(t, &corev3.ProxyProtocolConfig{Version: corev3.ProxyProtocolConfig_V1})
	pp := &proxyproto.Data{Src: netip.MustParseAddrPort("192.0.2.1:56324"), Dst: netip.MustParseAddrPort("198.51.100.1:443")}
	want := "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n"
	if got, _ := header(t, s, &upstream.DialInfo{ProxyProtocol: pp}, n(len(want))); string(got) != want {
		t.Fatalf("v1 %q; want %q", got, want)
	}
	// No downstream connection (a health check): the upstream
	// connection's own addresses, source first.
	got, client := header(t, s, nil, func(c net.Conn) int {
		want = fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n", c.LocalAddr().(*net.TCPAddr).Port, c.RemoteAddr().(*net.TCPAddr).Port)
		return len(want)
	})
	if string(got) != want {
		t.Fatalf("health check v1 %q; want %q (connection %s → %s)", got, want, client.LocalAddr(), client.RemoteAddr())
	}
}

func TestV2(t *testing.T) {
	s, st := compileSocket(t, &corev3.ProxyProtocolConfig{Version: corev3.ProxyProtocolConfig_V2,
		PassThroughTlvs: &corev3.ProxyProtocolPassThroughTLVs{MatchType: corev3.ProxyProtocolPassThroughTLVs_INCLUDE, TlvType: []uint32{0xEA, 0xE1}},
		AddedTlvs:       []*corev3.TlvEntry{{Type: 0xE1, Value: []byte("cfg")}}})
	pp := &proxyproto.Data{Src: netip.MustParseAddrPort("192.0.2.10:4242"), Dst: netip.MustParseAddrPort("198.51.100.20:443"),
		TLVs: []proxyproto.TLV{{Type: 0xE1, Value: []byte("downstream")}, {Type: 0xEA, Value: []byte("v")}, {Type: 0x05, Value: []byte("no")}}}
	// added_tlvs' 0xE1 wins over the downstream's; 0xEA passes; 0x05 does not.
	want := sig + "\x21\x11\x00\x16" + "\xc0\x00\x02\x0a\xc6\x33\x64\x14\x10\x92\x01\xbb" + "\xe1\x00\x03cfg" + "\xea\x00\x01v"
	if got, _ := header(t, s, &upstream.DialInfo{ProxyProtocol: pp}, n(len(want))); string(got) != want {
		t.Fatalf("v2\n% x\nwant\n% x", got, want)
	}
	// No downstream connection: LOCAL.
	if got, _ := header(t, s, nil, n(16)); string(got) != sig+"\x20\x00\x00\x00" {
		t.Fatalf("v2 LOCAL % x", got)
	}
	// TLVs beyond the 16-bit length are dropped and counted.
	pp.TLVs = []proxyproto.TLV{{Type: 0xEA, Value: bytes.Repeat([]byte("x"), 0xffff)}}
	if got, _ := header(t, s, &upstream.DialInfo{ProxyProtocol: pp}, n(16+12+6)); !bytes.Equal(got[14:16], []byte{0, 18}) {
		t.Fatalf("oversized: length % x", got[14:16])
	}
	if v, _ := st.Value("cluster.c.upstream.proxyprotocol.v2_tlvs_exceed_max_length"); v != 1 {
		t.Fatalf("v2_tlvs_exceed_max_length = %d", v)
	}
}

func TestCompileErrors(t *testing.T) {
	inner := func(*corev3.TransportSocket, string) (upstream.TransportSocket, error) { return nil, nil }
	for _, c := range []struct {
		cfg  *pptsv3.ProxyProtocolUpstreamTransport
		want string
	}{
		{&pptsv3.ProxyProtocolUpstreamTransport{TransportSocket: raw}, "ts.config: config is required"},
		{&pptsv3.ProxyProtocolUpstreamTransport{Config: &corev3.ProxyProtocolConfig{}}, "ts.transport_socket"},
		{&pptsv3.ProxyProtocolUpstreamTransport{Config: &corev3.ProxyProtocolConfig{}, TransportSocket: raw, TlvAsPoolKey: true}, "ts.tlv_as_pool_key"},
		{&pptsv3.ProxyProtocolUpstreamTransport{Config: &corev3.ProxyProtocolConfig{AddedTlvs: []*corev3.TlvEntry{{Type: 256, Value: []byte("x")}}}, TransportSocket: raw}, "ts.config.added_tlvs[0].type"},
		{&pptsv3.ProxyProtocolUpstreamTransport{Config: &corev3.ProxyProtocolConfig{AddedTlvs: []*corev3.TlvEntry{{Type: 1, Value: []byte("x"),
			FormatString: &corev3.SubstitutionFormatString{}}}}, TransportSocket: raw}, "only one of 'value' or 'format_string' may be set"},
	} {
		_, err := compile(c.cfg, "ts", upstream.TransportContext{Stats: stats.NewStore().Scope(""), Inner: inner})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v; want %q", c.cfg, err, c.want)
		}
	}
}
