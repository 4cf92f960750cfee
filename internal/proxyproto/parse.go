package proxyproto

import (
	"encoding/binary"
	"net/netip"
	"strings"
)

// Header is a parsed PROXY protocol header.
type Header struct {
	// Version is the header's version; NotFound (with Len 0) is a
	// connection without one that Options.AllowNone lets through.
	Version Version
	// Local says the header names no addresses for the receiver to use: a
	// v2 LOCAL command (a health check of the sending proxy) or a v1
	// "UNKNOWN" line. The connection keeps its own addresses (§2.1, §2.2),
	// as Envoy does.
	Local bool
	// Src and Dst are the original connection's source (the client) and
	// destination, unless Local.
	Src, Dst netip.AddrPort
	// TLVs are a v2 PROXY header's extensions, in order; a LOCAL header's
	// are skipped unread, as Envoy does. Values are copies.
	TLVs []TLV
	// Len is the header's length on the wire: the bytes to drop before the
	// connection's own.
	Len int
}

// Options are the receiver's settings (Envoy's ProxyProtocol config).
type Options struct {
	// DisallowV1 and DisallowV2 refuse a version (disallowed_versions).
	DisallowV1, DisallowV2 bool
	// AllowNone lets a connection without a header through
	// (allow_requests_without_proxy_protocol): bytes that cannot begin an
	// allowed version's signature are the connection's own.
	AllowNone bool
}

// NeedBytes is how many bytes the receiver should hold before parsing b
// again after ErrIncomplete: InitialReadLen, or a v2 header's whole
// length once its fixed part is known (Envoy grows its read to it).
func NeedBytes(b []byte) int {
	if len(b) >= v2HeaderLen && string(b[:len(v2Signature)]) == v2Signature {
		return max(InitialReadLen, v2HeaderLen+int(binary.BigEndian.Uint16(b[14:16])))
	}
	return InitialReadLen
}

// Parse reads the PROXY protocol header at the start of b, which holds the
// bytes received so far. It returns ErrIncomplete when more are needed, an
// *Error when b cannot start an acceptable header, or the header.
//
// It follows Envoy's listener filter step for step, so that what a
// connection's first bytes cost it is the same: with at least 16 bytes,
// anything that is neither the v2 signature nor "PROXY " is refused as
// not a header; with fewer, a CRLF ends a v1 line (so a short non-PROXY
// line is a v1 error); a v1 line must end within 107 bytes.
func Parse(b []byte, o Options) (*Header, error) {
	if o.AllowNone {
		// Envoy compares what it has against the allowed signatures'
		// beginnings: a mismatch means "no header", and nothing is
		// consumed.
		n2, n1 := min(len(v2Signature), len(b)), min(len(v1Signature), len(b))
		matchV2 := !o.DisallowV2 && string(b[:n2]) == v2Signature[:n2]
		matchV1 := !o.DisallowV1 && string(b[:n1]) == v1Signature[:n1]
		if !matchV2 && !matchV1 {
			return &Header{}, nil
		}
	}
	if len(b) >= v2HeaderLen {
		if string(b[:len(v2Signature)]) == v2Signature {
			return parseV2(b, o)
		}
		if string(b[:len(v1Signature)]) != v1Signature {
			return nil, &Error{Reason: "neither the PROXY protocol v1 nor the v2 signature"}
		}
	}
	// Version 1: the line ends at the first CRLF. Envoy searches from the
	// second byte, and a CRLF there (the first two bytes of the v2
	// signature) means: wait for 16 bytes to tell the versions apart.
	end := -1
	for i := 1; i < len(b); i++ {
		if b[i] == '\n' && b[i-1] == '\r' {
			if i > 1 {
				end = i + 1
			}
			break
		}
	}
	if end < 0 {
		if len(b) > MaxV1Len {
			return nil, &Error{Reason: "no CRLF in the first 107 bytes"}
		}
		return nil, ErrIncomplete
	}
	if end > MaxV1Len {
		return nil, &Error{Version: V1, Reason: "line longer than 107 bytes"}
	}
	if o.DisallowV1 {
		return nil, &Error{Version: V1, Denied: true, Reason: "version 1 is disallowed"}
	}
	return parseV1(b[:end])
}

// parseV1 parses a v1 line, CRLF included (§2.1), as Envoy's
// parseV1Header: trailing white space is dropped and the rest split on
// single spaces (so two spaces in a row make an empty field and a bad
// line).
func parseV1(line []byte) (*Header, error) {
	fields := strings.Split(strings.TrimRight(string(line), " \t\n\v\f\r"), " ")
	bad := func(why string) (*Header, error) { return nil, &Error{Version: V1, Reason: why} }
	if len(fields) < 2 || fields[0] != "PROXY" {
		return bad("the line does not start with PROXY and a protocol")
	}
	if fields[1] == "UNKNOWN" {
		// §2.1: the receiver ignores the rest of the line and keeps the
		// connection's own addresses.
		return &Header{Version: V1, Local: true, Len: len(line)}, nil
	}
	if len(fields) != 6 {
		return bad("a TCP4/TCP6 line has exactly six fields")
	}
	var want6 bool
	switch fields[1] {
	case "TCP4":
	case "TCP6":
		want6 = true
	default:
		return bad("unknown protocol " + fields[1])
	}
	src, ok1 := v1Addr(fields[2], want6)
	dst, ok2 := v1Addr(fields[3], want6)
	sp, ok3 := v1Port(fields[4])
	dp, ok4 := v1Port(fields[5])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return bad("bad address or port")
	}
	h := &Header{Version: V1, Src: netip.AddrPortFrom(src, sp), Dst: netip.AddrPortFrom(dst, dp), Len: len(line)}
	if !unicast(h.Src.Addr()) || !unicast(h.Dst.Addr()) {
		return bad("addresses must be unicast")
	}
	return h, nil
}

// v1Addr parses an address of the line's family as inet_pton does: IPv4
// dotted quads without leading zeros for TCP4, IPv6 text (no zone) for
// TCP6.
func v1Addr(s string, want6 bool) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is6() != want6 {
		return netip.Addr{}, false
	}
	return a, true
}

// v1Port parses a port as Envoy does (absl::SimpleAtoi into a 64-bit
// integer, then at most 65535): surrounding ASCII white space and a '+'
// are accepted, and so are leading zeros, which the spec forbids but
// Envoy does not check.
func v1Port(s string) (uint16, bool) {
	s = strings.Trim(s, " \t\n\v\f\r")
	s = strings.TrimPrefix(s, "+")
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
		if n > 65535 {
			return 0, false
		}
	}
	return uint16(n), true
}

// parseV2 parses a v2 header whose signature and fixed part b holds
// (§2.2), in Envoy's order of checks.
func parseV2(b []byte, o Options) (*Header, error) {
	bad := func(why string) (*Header, error) { return nil, &Error{Version: V2, Reason: why} }
	if o.DisallowV2 {
		return nil, &Error{Version: V2, Denied: true, Reason: "version 2 is disallowed"}
	}
	verCmd, fam := b[12], b[13]
	if verCmd>>4 != v2Version {
		return bad("unsupported version")
	}
	cmd := verCmd & 0xf
	addrLen := 0
	if cmd != cmdLocal {
		switch fam >> 4 {
		case famInet:
			addrLen = v2AddrLenInet
		case famInet6:
			addrLen = v2AddrLenInet6
		default:
			// AF_UNSPEC and AF_UNIX with the PROXY command are refused
			// (Envoy's lenV2Address).
			return bad("unsupported address family")
		}
	}
	length := int(binary.BigEndian.Uint16(b[14:16]))
	if length < addrLen {
		return bad("address length shorter than the address block")
	}
	if len(b) < v2HeaderLen+addrLen {
		return nil, ErrIncomplete
	}
	h := &Header{Version: V2, Len: v2HeaderLen + length}
	switch {
	case cmd == cmdLocal:
		// §2.2: a LOCAL connection's address block (and TLVs) are skipped;
		// the length field is honoured whatever the family says.
		h.Local = true
	case cmd == cmdProxy && (fam&0xf == transStream || fam&0xf == transDgram):
		a := b[v2HeaderLen:]
		if fam>>4 == famInet {
			src, dst := netip.AddrFrom4([4]byte(a[0:4])), netip.AddrFrom4([4]byte(a[4:8]))
			h.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(a[8:10]))
			h.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(a[10:12]))
		} else {
			src, dst := netip.AddrFrom16([16]byte(a[0:16])), netip.AddrFrom16([16]byte(a[16:32]))
			h.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(a[32:34]))
			h.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(a[34:36]))
		}
	default:
		return bad("unsupported command or transport")
	}
	if len(b) < h.Len {
		return nil, ErrIncomplete
	}
	if h.Local {
		return h, nil
	}
	tlvs, err := parseTLVs(b[v2HeaderLen+addrLen : h.Len])
	if err != nil {
		return nil, err
	}
	h.TLVs = tlvs
	if !unicast(h.Src.Addr()) || !unicast(h.Dst.Addr()) {
		return bad("addresses must be unicast")
	}
	return h, nil
}

// parseTLVs splits a v2 header's extension bytes into TLVs (§2.2): each
// is a type byte, a 2-byte length and that many bytes; one that runs past
// the header's end makes the header bad.
func parseTLVs(b []byte) ([]TLV, error) {
	var out []TLV
	for i := 0; i < len(b); {
		if i+tlvHeaderLen > len(b) {
			return nil, &Error{Version: V2, Reason: "truncated TLV header"}
		}
		typ, n := b[i], int(binary.BigEndian.Uint16(b[i+1:i+3]))
		i += tlvHeaderLen
		if i+n > len(b) {
			return nil, &Error{Version: V2, Reason: "TLV value runs past the header"}
		}
		out = append(out, TLV{Type: typ, Value: append([]byte(nil), b[i:i+n]...)})
		i += n
	}
	return out, nil
}

// unicast is Envoy's isUnicastAddress: not the unspecified address, not
// multicast, not IPv4's limited broadcast. An IPv4-mapped IPv6 address
// is judged as IPv6 (only ff00::/8 is multicast), as Envoy does.
func unicast(a netip.Addr) bool {
	if a.IsUnspecified() {
		return false
	}
	if a.Is4() {
		b := a.As4()
		return b != [4]byte{255, 255, 255, 255} && b[0]&0xf0 != 0xe0
	}
	return a.As16()[0] != 0xff
}
