package proxy_protocol

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ppv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/proxy_protocol/v3"

	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/proxyproto"
	"github.com/legateproxy/legate/internal/stats"
)

// tcpPair returns the two ends of a loopback TCP connection.
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

func build(t *testing.T, cfg *ppv3.ProxyProtocol, timeout time.Duration) (*filter, *stats.Store) {
	t.Helper()
	st := stats.NewStore()
	f, err := compile(&listener.Context{Stats: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, cfg, timeout, "lf")
	if err != nil {
		t.Fatal(err)
	}
	return f.(*filter), st
}

func value(st *stats.Store, name string) int64 {
	v, _ := st.Value(name)
	return v
}

var sig = "\r\n\r\n\x00\r\nQUIT\n"

func TestAccept(t *testing.T) {
	inet4 := "\xc0\x00\x02\x0a\xc6\x33\x64\x14\x10\x92\x01\xbb" // 192.0.2.10:4242 → 198.51.100.20:443
	tlvs := "\xea\x00\x04vpce" + "\x05\x00\x02id" + "\xe0\x00\x02\xff\x01"
	v2tlv := sig + "\x21\x11\x00" + string(rune(12+len(tlvs))) + inet4 + tlvs
	rules := []*ppv3.ProxyProtocol_Rule{
		{TlvType: 0xEA, OnTlvPresent: &ppv3.ProxyProtocol_KeyValuePair{Key: "vpce"}},
		{TlvType: 0x105, OnTlvPresent: &ppv3.ProxyProtocol_KeyValuePair{MetadataNamespace: "ns", Key: "id"}}, // masked to 0x05
		{TlvType: 0xE0, OnTlvPresent: &ppv3.ProxyProtocol_KeyValuePair{Key: "bin", ValueStringEncoding: ppv3.ProxyProtocol_KeyValuePair_BASE64}},
	}
	cases := []struct {
		name    string
		cfg     *ppv3.ProxyProtocol
		send    string
		wantErr bool
		stats   map[string]int64
		check   func(t *testing.T, c *listener.Conn, client net.Conn)
	}{
		{name: "v1 with data after it", cfg: &ppv3.ProxyProtocol{}, send: "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nDATA",
			stats: map[string]int64{"proxy_proto.versions.v1.found": 1},
			check: func(t *testing.T, c *listener.Conn, _ net.Conn) {
				if r := c.Conn.RemoteAddr().String(); r != "192.0.2.1:56324" {
					t.Errorf("remote %s", r)
				}
				if l := c.Conn.LocalAddr().String(); l != "198.51.100.1:443" {
					t.Errorf("local %s", l)
				}
				b := make([]byte, 4)
				if _, err := io.ReadFull(c.Conn, b); err != nil || string(b) != "DATA" {
					t.Errorf("replayed %q, %v", b, err)
				}
				if _, ok := c.Conn.(interface{ TCPSocket() }); ok {
					t.Error("a connection replaying bytes claims to be a bare TCP socket")
				}
				d := c.FilterState[proxyproto.FilterStateKey].(*proxyproto.Data)
				if d.Src.String() != "192.0.2.1:56324" || d.Version != proxyproto.V1 {
					t.Errorf("filter state %+v", d)
				}
			}},
		{name: "v1 header alone keeps raw I/O", cfg: &ppv3.ProxyProtocol{}, send: "PROXY TCP4 192.0.2.1 198.51.100.1 1 2\r\n",
			stats: map[string]int64{"proxy_proto.versions.v1.found": 1},
			check: func(t *testing.T, c *listener.Conn, _ net.Conn) {
				if _, ok := c.Conn.(interface{ TCPSocket() }); !ok {
					t.Error("nothing to replay, yet not marked as a bare TCP socket")
				}
			}},
		{name: "v2 TLVs to metadata and pass-through", send: v2tlv,
			cfg: &ppv3.ProxyProtocol{Rules: rules, PassThroughTlvs: &corev3.ProxyProtocolPassThroughTLVs{
				MatchType: corev3.ProxyProtocolPassThroughTLVs_INCLUDE, TlvType: []uint32{0x05, 0x1E0}}},
			stats: map[string]int64{"proxy_proto.versions.v2.found": 1},
			check: func(t *testing.T, c *listener.Conn, _ net.Conn) {
				md := c.Metadata[Name].GetFields()
				if md["vpce"].GetStringValue() != "vpce" || md["bin"].GetStringValue() != "/wE=" {
					t.Errorf("metadata %v", c.Metadata)
				}
				if c.Metadata["ns"].GetFields()["id"].GetStringValue() != "id" {
					t.Errorf("namespaced metadata %v", c.Metadata)
				}
				d := c.FilterState[proxyproto.FilterStateKey].(*proxyproto.Data)
				if len(d.TLVs) != 2 || d.TLVs[0].Type != 0x05 || d.TLVs[1].Type != 0xE0 || d.Dst.String() != "198.51.100.20:443" {
					t.Errorf("pass-through %+v", d)
				}
			}},
		{name: "v2 TLVs to filter state", send: v2tlv,
			cfg: &ppv3.ProxyProtocol{Rules: rules, TlvLocation: ppv3.ProxyProtocol_FILTER_STATE},
			check: func(t *testing.T, c *listener.Conn, _ net.Conn) {
				o := c.FilterState[proxyproto.TLVFilterStateKey].(*proxyproto.TLVObject)
				if v, _ := o.Field("vpce"); v != "vpce" {
					t.Errorf("vpce = %v", v)
				}
				if v, _ := o.Field("id"); v != "id" {
					t.Errorf("id = %v", v)
				}
				if len(c.Metadata) != 0 {
					t.Errorf("metadata written too: %v", c.Metadata)
				}
				if d := c.FilterState[proxyproto.FilterStateKey].(*proxyproto.Data); len(d.TLVs) != 0 {
					t.Errorf("TLVs passed through without pass_through_tlvs: %v", d.TLVs)
				}
			}},
		{name: "v2 LOCAL keeps the socket's addresses", cfg: &ppv3.ProxyProtocol{}, send: sig + "\x20\x00\x00\x00",
			stats: map[string]int64{"proxy_proto.versions.v2.found": 1},
			check: func(t *testing.T, c *listener.Conn, client net.Conn) {
				if c.Conn.RemoteAddr().String() != client.LocalAddr().String() {
					t.Errorf("remote %s; want the socket's %s", c.Conn.RemoteAddr(), client.LocalAddr())
				}
				d := c.FilterState[proxyproto.FilterStateKey].(*proxyproto.Data)
				if d.Src.String() != client.LocalAddr().String() {
					t.Errorf("filter state source %s", d.Src)
				}
			}},
		{name: "no header allowed", cfg: &ppv3.ProxyProtocol{AllowRequestsWithoutProxyProtocol: true}, send: "GET / HTTP/1.1\r\n\r\n",
			stats: map[string]int64{"proxy_proto.not_found_allowed": 1},
			check: func(t *testing.T, c *listener.Conn, client net.Conn) {
				b := make([]byte, 18)
				if _, err := io.ReadFull(c.Conn, b); err != nil || string(b) != "GET / HTTP/1.1\r\n\r\n" {
					t.Errorf("replayed %q, %v", b, err)
				}
				if _, has := c.FilterState[proxyproto.FilterStateKey]; has {
					t.Error("a PROXY protocol record without a header")
				}
			}},
		{name: "no header", cfg: &ppv3.ProxyProtocol{StatPrefix: "sp"}, send: "GET / HTTP/1.1\r\n\r\n", wantErr: true,
			stats: map[string]int64{"proxy_proto.sp.not_found_disallowed": 1, "downstream_cx_proxy_proto_error": 1}},
		{name: "bad v1", cfg: &ppv3.ProxyProtocol{}, send: "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", wantErr: true,
			stats: map[string]int64{"proxy_proto.versions.v1.error": 1, "downstream_cx_proxy_proto_error": 1}},
		{name: "bad v2", cfg: &ppv3.ProxyProtocol{}, send: sig + "\x21\x31\x00\x00", wantErr: true,
			stats: map[string]int64{"proxy_proto.versions.v2.error": 1, "downstream_cx_proxy_proto_error": 1}},
		{name: "disallowed v2", cfg: &ppv3.ProxyProtocol{DisallowedVersions: []corev3.ProxyProtocolConfig_Version{corev3.ProxyProtocolConfig_V2}},
			send: sig + "\x20\x00\x00\x00", wantErr: true,
			stats: map[string]int64{"proxy_proto.versions.v2.found": 1, "proxy_proto.versions.v2.disallowed": 1, "downstream_cx_proxy_proto_error": 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, st := build(t, c.cfg, 2*time.Second)
			client, server := tcpPair(t)
			if _, err := io.WriteString(client, c.send); err != nil {
				t.Fatal(err)
			}
			conn := &listener.Conn{Conn: server}
			err := f.Accept(conn)
			if (err != nil) != c.wantErr {
				t.Fatalf("Accept: %v", err)
			}
			for name, want := range c.stats {
				if got := value(st, name); got != want {
					t.Errorf("%s = %d; want %d", name, got, want)
				}
			}
			if c.check != nil {
				c.check(t, conn, client)
			}
		})
	}
}

func TestAcceptGrowsForLongV2(t *testing.T) {
	f, st := build(t, &ppv3.ProxyProtocol{Rules: []*ppv3.ProxyProtocol_Rule{{TlvType: 0xE5, OnTlvPresent: &ppv3.ProxyProtocol_KeyValuePair{Key: "big"}}}}, 2*time.Second)
	client, server := tcpPair(t)
	big := strings.Repeat("x", 3000)
	hdr, _ := proxyproto.AppendV2(nil, netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("192.0.2.2:2"), []proxyproto.TLV{{Type: 0xE5, Value: []byte(big)}})
	go client.Write(append(hdr, "tail"...))
	conn := &listener.Conn{Conn: server}
	if err := f.Accept(conn); err != nil {
		t.Fatal(err)
	}
	if conn.Metadata[Name].GetFields()["big"].GetStringValue() != big {
		t.Fatal("the 3000-byte TLV was not read whole")
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(conn.Conn, b); err != nil || string(b) != "tail" {
		t.Fatalf("after the header: %q, %v", b, err)
	}
	if value(st, "proxy_proto.versions.v2.found") != 1 {
		t.Fatal("not counted")
	}
}

func TestAcceptTimeout(t *testing.T) {
	f, st := build(t, &ppv3.ProxyProtocol{}, 100*time.Millisecond)
	client, server := tcpPair(t)
	io.WriteString(client, "PROXY TCP4 1.2.")
	start := time.Now()
	err := f.Accept(&listener.Conn{Conn: server})
	if !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("Accept: %v after %v; want the deadline after 100ms", err, time.Since(start))
	}
	if value(st, "downstream_cx_proxy_proto_error") != 0 {
		t.Fatal("a timeout counted as a protocol error")
	}
}

func TestCompileErrors(t *testing.T) {
	st := stats.NewStore()
	ctx := &listener.Context{Stats: st}
	for _, c := range []struct {
		cfg  *ppv3.ProxyProtocol
		want string
	}{
		{&ppv3.ProxyProtocol{DisallowedVersions: []corev3.ProxyProtocolConfig_Version{corev3.ProxyProtocolConfig_V1, corev3.ProxyProtocolConfig_V2}},
			"lf.disallowed_versions: Proxy Protocol filter is misconfigured: all proxy protocol versions are disallowed."},
		{&ppv3.ProxyProtocol{Rules: []*ppv3.ProxyProtocol_Rule{{TlvType: 1}}}, "lf.rules[0].on_tlv_present"},
	} {
		_, err := compile(ctx, c.cfg, 0, "lf")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v; want %q", c.cfg, err, c.want)
		}
	}
}

func TestEncode(t *testing.T) {
	for _, c := range []struct {
		in   string
		b64  bool
		want string
	}{
		{"plain", false, "plain"},
		{"a\xffb\xc3", false, "a!b!"},
		{"\xe2\x82\xac ok", false, "\xe2\x82\xac ok"},
		{"\xed\xa0\x80", false, "!!!"}, // a UTF-16 surrogate is not valid UTF-8
		{"\xff\x00", true, "/wA="},
	} {
		if got := encode([]byte(c.in), c.b64); got != c.want {
			t.Errorf("encode(%q, %v) = %q; want %q", c.in, c.b64, got, c.want)
		}
	}
}
