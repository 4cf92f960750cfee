package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/streaminfo"
)

// sig is the v2 signature written out byte by byte from §2.2 of the spec,
// independently of the package's constant.
var sig = []byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// v2 assembles a v2 header by hand: signature, version/command, family,
// the length field (length, or the real length when length < 0) and the
// body.
func v2(verCmd, fam byte, length int, body ...[]byte) []byte {
	b := append([]byte(nil), sig...)
	b = append(b, verCmd, fam)
	all := bytes.Join(body, nil)
	if length < 0 {
		length = len(all)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(length))
	return append(b, all...)
}

// tcp4 is the address block of TCP over IPv4 192.0.2.1:56324 →
// 198.51.100.1:443 (network byte order, §2.2).
var tcp4 = []byte{192, 0, 2, 1, 198, 51, 100, 1, 0xDC, 0x04, 0x01, 0xBB}

// tcp6 is 2001:db8::1:1234 → 2001:db8::2:443.
var tcp6 = []byte{
	0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
	0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
	0x04, 0xD2, 0x01, 0xBB,
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestParse(t *testing.T) {
	type want struct {
		err     error // ErrIncomplete, or an *Error whose Version/Denied are compared
		version Version
		local   bool
		src     string
		dst     string
		length  int
		tlvs    []TLV
	}
	errV1 := &Error{Version: V1}
	errV2 := &Error{Version: V2}
	errNone := &Error{Version: NotFound}
	tlvs := []byte{0x01, 0x00, 0x02, 'h', '2', 0xEA, 0x00, 0x03, 'v', 'p', 'c', 0x04, 0x00, 0x00}
	long := strings.Repeat("f", 200)
	cases := []struct {
		name string
		in   []byte
		opts Options
		want want
	}{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET /"), Options{},
			want{version: V1, src: "192.0.2.1:56324", dst: "198.51.100.1:443", length: 45}},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n"), Options{},
			want{version: V1, src: "[2001:db8::1]:1234", dst: "[2001:db8::2]:443", length: 45}},
		{"v1 tcp6 v4-mapped", []byte("PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n"), Options{},
			want{version: V1, src: "[::ffff:192.0.2.1]:1", dst: "[::1]:2", length: 37}},
		{"v1 unknown short", []byte("PROXY UNKNOWN\r\nxyz"), Options{}, want{version: V1, local: true, length: 15}},
		{"v1 unknown long", []byte("PROXY UNKNOWN ffff:f::f ffff:f::f 65535 65535\r\n"), Options{}, want{version: V1, local: true, length: 47}},
		{"v1 trailing space tolerated", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), Options{},
			want{version: V1, src: "1.2.3.4:1", dst: "5.6.7.8:2", length: 33}},
		{"v1 port leading zero (Envoy accepts)", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n"), Options{},
			want{version: V1, src: "1.2.3.4:80", dst: "5.6.7.8:2", length: 34}},
		{"v1 max length 107", []byte("PROXY UNKNOWN " + strings.Repeat("a", 107-14-2) + "\r\n"), Options{}, want{version: V1, local: true, length: 107}},
		{"v1 108 bytes", []byte("PROXY UNKNOWN " + strings.Repeat("a", 108-14-2) + "\r\n"), Options{}, want{err: errV1}},
		{"v1 no CRLF within 107", []byte("PROXY TCP4 " + long), Options{}, want{err: errNone}},
		{"v1 incomplete", []byte("PROXY TCP4 1.2.3.4 5.6.7."), Options{}, want{err: ErrIncomplete}},
		{"v1 lone LF", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), Options{}, want{err: ErrIncomplete}},
		{"v1 double space", []byte("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), Options{}, want{err: errV1}},
		{"v1 bad protocol", []byte("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), Options{}, want{err: errV1}},
		{"v1 v6 address in TCP4", []byte("PROXY TCP4 ::1 5.6.7.8 1 2\r\n"), Options{}, want{err: errV1}},
		{"v1 v4 address in TCP6", []byte("PROXY TCP6 1.2.3.4 ::1 1 2\r\n"), Options{}, want{err: errV1}},
		{"v1 zone", []byte("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), Options{}, want{err: errV1}},
		{"v1 octet leading zero", []byte("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"), Options{}, want{err: errV1}},
		{"v1 port too big", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), Options{}, want{err: errV1}},
		{"v1 multicast source", []byte("PROXY TCP4 224.0.0.1 5.6.7.8 1 2\r\n"), Options{}, want{err: errV1}},
		{"v1 any destination", []byte("PROXY TCP4 1.2.3.4 0.0.0.0 1 2\r\n"), Options{}, want{err: errV1}},
		{"v1 broadcast", []byte("PROXY TCP4 255.255.255.255 5.6.7.8 1 2\r\n"), Options{}, want{err: errV1}},
		{"v1 too few fields", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), Options{}, want{err: errV1}},
		{"v1 PROXY alone", []byte("PROXY\r\n"), Options{}, want{err: errV1}},
		{"short line with CRLF is a v1 error", []byte("HI\r\n"), Options{}, want{err: errV1}},
		{"16 bytes of HTTP are no header", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Options{}, want{err: errNone}},
		{"v1 disallowed", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), Options{DisallowV1: true}, want{err: &Error{Version: V1, Denied: true}}},

		{"v2 tcp4", v2(0x21, 0x11, -1, tcp4), Options{}, want{version: V2, src: "192.0.2.1:56324", dst: "198.51.100.1:443", length: 28}},
		{"v2 udp4 accepted", v2(0x21, 0x12, -1, tcp4), Options{}, want{version: V2, src: "192.0.2.1:56324", dst: "198.51.100.1:443", length: 28}},
		{"v2 tcp6", v2(0x21, 0x21, -1, tcp6), Options{}, want{version: V2, src: "[2001:db8::1]:1234", dst: "[2001:db8::2]:443", length: 52}},
		{"v2 tcp4 tlvs", v2(0x21, 0x11, -1, tcp4, tlvs), Options{}, want{version: V2, src: "192.0.2.1:56324", dst: "198.51.100.1:443", length: 42,
			tlvs: []TLV{{0x01, []byte("h2")}, {0xEA, []byte("vpc")}, {0x04, []byte{}}}}},
		{"v2 local", v2(0x20, 0x00, 0), Options{}, want{version: V2, local: true, length: 16}},
		{"v2 local with a skipped block", v2(0x20, 0x11, -1, tcp4, []byte{0xff, 0xff}), Options{}, want{version: V2, local: true, length: 30}},
		{"v2 trailing data kept out", append(v2(0x21, 0x11, -1, tcp4), "GET"...), Options{}, want{version: V2, src: "192.0.2.1:56324", dst: "198.51.100.1:443", length: 28}},
		{"v2 signature only", sig, Options{}, want{err: ErrIncomplete}},
		{"v2 first two bytes", sig[:2], Options{}, want{err: ErrIncomplete}},
		{"v2 address block truncated", v2(0x21, 0x11, 12, tcp4[:6]), Options{}, want{err: ErrIncomplete}},
		{"v2 tlvs truncated", v2(0x21, 0x11, 12+5, tcp4, []byte{1, 0}), Options{}, want{err: ErrIncomplete}},
		{"v2 length below address block", v2(0x21, 0x11, 11, tcp4), Options{}, want{err: errV2}},
		{"v2 version 1", v2(0x11, 0x11, -1, tcp4), Options{}, want{err: errV2}},
		{"v2 unknown command", v2(0x22, 0x11, -1, tcp4), Options{}, want{err: errV2}},
		{"v2 proxy over AF_UNSPEC", v2(0x21, 0x00, 0), Options{}, want{err: errV2}},
		{"v2 proxy over AF_UNIX", v2(0x21, 0x31, 216, make([]byte, 216)), Options{}, want{err: errV2}},
		{"v2 unspecified transport", v2(0x21, 0x10, -1, tcp4), Options{}, want{err: errV2}},
		{"v2 tlv length past end", v2(0x21, 0x11, -1, tcp4, []byte{0x01, 0x00, 0x05, 'a'}), Options{}, want{err: errV2}},
		{"v2 tlv header truncated", v2(0x21, 0x11, -1, tcp4, []byte{0x01, 0x00}), Options{}, want{err: errV2}},
		{"v2 multicast", v2(0x21, 0x11, -1, []byte{224, 0, 0, 1, 1, 2, 3, 4, 0, 1, 0, 2}), Options{}, want{err: errV2}},
		{"v2 disallowed", v2(0x21, 0x11, -1, tcp4), Options{DisallowV2: true}, want{err: &Error{Version: V2, Denied: true}}},
		{"v2 oversized length is incomplete", v2(0x21, 0x11, 0xffff, tcp4), Options{}, want{err: ErrIncomplete}},

		{"none allowed: HTTP", []byte("GET / HTTP/1.1\r\n"), Options{AllowNone: true}, want{version: NotFound}},
		{"none allowed: one byte", []byte("G"), Options{AllowNone: true}, want{version: NotFound}},
		{"none allowed: v1 prefix waits", []byte("PROX"), Options{AllowNone: true}, want{err: ErrIncomplete}},
		{"none allowed: v1 still parsed", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), Options{AllowNone: true},
			want{version: V1, src: "1.2.3.4:1", dst: "5.6.7.8:2", length: 32}},
		{"none allowed: disallowed v2 passes as no header", v2(0x21, 0x11, -1, tcp4), Options{AllowNone: true, DisallowV2: true}, want{version: NotFound}},
		{"none allowed: v1 after a v1-ish prefix still errs", []byte("PROXY garbage\r\n"), Options{AllowNone: true}, want{err: errV1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := Parse(c.in, c.opts)
			switch w := c.want.err.(type) {
			case nil:
				if err != nil {
					t.Fatalf("error %v", err)
				}
			case *Error:
				var e *Error
				if !errors.As(err, &e) || e.Version != w.Version || e.Denied != w.Denied {
					t.Fatalf("got %v, %v; want an error of version %v (denied %v)", h, err, w.Version, w.Denied)
				}
				return
			default:
				if !errors.Is(err, w) {
					t.Fatalf("got %+v, %v; want %v", h, err, w)
				}
				return
			}
			if h.Version != c.want.version || h.Local != c.want.local || h.Len != c.want.length {
				t.Fatalf("header %+v; want version %v local %v len %d", h, c.want.version, c.want.local, c.want.length)
			}
			if c.want.src != "" && (h.Src != ap(c.want.src) || h.Dst != ap(c.want.dst)) {
				t.Fatalf("addresses %v → %v; want %s → %s", h.Src, h.Dst, c.want.src, c.want.dst)
			}
			if len(h.TLVs) != len(c.want.tlvs) {
				t.Fatalf("TLVs %v; want %v", h.TLVs, c.want.tlvs)
			}
			for i, tl := range c.want.tlvs {
				if h.TLVs[i].Type != tl.Type || !bytes.Equal(h.TLVs[i].Value, tl.Value) {
					t.Fatalf("TLV %d = %v; want %v", i, h.TLVs[i], tl)
				}
			}
		})
	}
}

// TestParseByteByByte feeds accepted headers one byte at a time: every
// proper prefix must ask for more (the spec lets TCP split a header
// anywhere) and the whole must parse.
func TestParseByteByByte(t *testing.T) {
	for _, in := range [][]byte{
		[]byte("PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		v2(0x21, 0x11, -1, tcp4, []byte{0xEA, 0, 1, 'x'}),
		v2(0x21, 0x21, -1, tcp6),
		v2(0x20, 0x00, 0),
	} {
		for k := 1; k < len(in); k++ {
			if _, err := Parse(in[:k], Options{}); !errors.Is(err, ErrIncomplete) {
				t.Fatalf("%q[:%d]: %v; want ErrIncomplete", in, k, err)
			}
		}
		if h, err := Parse(in, Options{}); err != nil || h.Len != len(in) {
			t.Fatalf("%q: %+v, %v", in, h, err)
		}
	}
}

func TestNeedBytes(t *testing.T) {
	if n := NeedBytes([]byte("PROXY")); n != 232 {
		t.Fatalf("initial read %d; want Envoy's 232", n)
	}
	if n := NeedBytes(v2(0x21, 0x11, 1000, tcp4)); n != 1016 {
		t.Fatalf("v2 of length 1000: %d; want 1016", n)
	}
	if n := NeedBytes(v2(0x21, 0x11, 12, tcp4)); n != 232 {
		t.Fatalf("short v2: %d", n)
	}
}

func TestAppendV1(t *testing.T) {
	cases := []struct{ src, dst, want string }{
		{"192.0.2.1:56324", "198.51.100.1:443", "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n"},
		{"[2001:db8::1]:1234", "[2001:db8::2]:443", "PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n"},
		// IPv4-mapped pairs stay IPv6, as Envoy keeps them.
		{"[::ffff:192.0.2.1]:1", "[::ffff:192.0.2.2]:2", "PROXY TCP6 ::ffff:192.0.2.1 ::ffff:192.0.2.2 1 2\r\n"},
		// Mixed families become one: IPv4 when the IPv6 one is mapped,
		// else IPv6.
		{"192.0.2.1:1", "[::ffff:192.0.2.2]:2", "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"},
		{"192.0.2.1:1", "[2001:db8::2]:2", "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n"},
	}
	for _, c := range cases {
		got := string(AppendV1(nil, ap(c.src), ap(c.dst)))
		if got != c.want {
			t.Errorf("AppendV1(%s, %s) = %q; want %q", c.src, c.dst, got, c.want)
		}
		h, err := Parse([]byte(got), Options{})
		if err != nil || h.Src.Addr().Unmap() != ap(c.src).Addr().Unmap() || h.Dst.Port() != ap(c.dst).Port() {
			t.Errorf("round trip of %q: %+v, %v", got, h, err)
		}
	}
}

func TestAppendV2(t *testing.T) {
	got, fit := AppendV2(nil, ap("192.0.2.1:56324"), ap("198.51.100.1:443"), nil)
	if want := v2(0x21, 0x11, -1, tcp4); !fit || !bytes.Equal(got, want) {
		t.Fatalf("v2 tcp4 = % x; want % x", got, want)
	}
	got, _ = AppendV2(nil, ap("[2001:db8::1]:1234"), ap("[2001:db8::2]:443"), []TLV{{0xEA, []byte("vpc")}, {0x05, nil}})
	if want := v2(0x21, 0x21, -1, tcp6, []byte{0xEA, 0, 3, 'v', 'p', 'c', 0x05, 0, 0}); !bytes.Equal(got, want) {
		t.Fatalf("v2 tcp6 tlvs = % x; want % x", got, want)
	}
	if got := AppendV2Local(nil); !bytes.Equal(got, v2(0x20, 0x00, 0)) {
		t.Fatalf("local = % x", got)
	}
	// The 16-bit length: a TLV that does not fit is dropped, later ones
	// that do are kept.
	big := TLV{0xE0, make([]byte, 0xffff-12-3)} // exactly fills it
	got, fit = AppendV2(nil, ap("1.2.3.4:1"), ap("5.6.7.8:2"), []TLV{{0xE1, []byte("x")}, big, {0xE2, nil}})
	if fit {
		t.Fatal("an oversized TLV set reported as fitting")
	}
	h, err := Parse(got, Options{})
	if err != nil || len(h.TLVs) != 2 || h.TLVs[0].Type != 0xE1 || h.TLVs[1].Type != 0xE2 {
		t.Fatalf("after dropping: %v, %v", h, err)
	}
	if _, fit := AppendV2(nil, ap("1.2.3.4:1"), ap("5.6.7.8:2"), []TLV{big}); !fit {
		t.Fatal("a TLV set of exactly the maximum length did not fit")
	}
}

func TestDownstream(t *testing.T) {
	d := &Data{Src: ap("1.1.1.1:1"), Dst: ap("2.2.2.2:2")}
	if got := Downstream(nil, ap("3.3.3.3:3"), ap("4.4.4.4:4")); got.Src != ap("3.3.3.3:3") || got.Dst != ap("4.4.4.4:4") {
		t.Fatalf("without filter state: %+v", got)
	}
	fs := map[string]streaminfo.FilterStateValue{FilterStateKey: d}
	if got := Downstream(fs, ap("3.3.3.3:3"), ap("4.4.4.4:4")); got != d {
		t.Fatalf("with filter state: %+v", got)
	}
	if d.Key() != "1.1.1.1:12.2.2.2:2" {
		t.Fatalf("key %q", d.Key())
	}
}

func TestTLVObject(t *testing.T) {
	var o TLVObject
	o.Set("k", "first")
	o.Set("k", "second")
	if v, ok := o.Field("k"); !ok || v != "first" || o.Len() != 1 {
		t.Fatalf("field k = %v, %v", v, ok)
	}
	if _, ok := o.Field("missing"); ok {
		t.Fatal("missing field found")
	}
}
