package proxyproto

import (
	"encoding/binary"
	"net/netip"
	"strconv"
)

// sameFamily puts two addresses in one family for a header, which has
// one: both IPv4 when both are, both IPv6 when both are (IPv4-mapped ones
// included, which stay IPv6 as Envoy keeps them). A mixed pair is made
// one family: IPv4 when the IPv6 one is IPv4-mapped, else IPv6 with the
// IPv4 one mapped. (Envoy takes the source's family and would write a
// mixed pair that no receiver accepts.)
func sameFamily(src, dst netip.AddrPort) (netip.AddrPort, netip.AddrPort, bool) {
	s, d := src.Addr(), dst.Addr()
	switch {
	case s.Is4() && d.Is4():
		return src, dst, false
	case s.Is6() && d.Is6():
		return src, dst, true
	case s.Unmap().Is4() && d.Unmap().Is4():
		return netip.AddrPortFrom(s.Unmap(), src.Port()), netip.AddrPortFrom(d.Unmap(), dst.Port()), false
	}
	return netip.AddrPortFrom(netip.AddrFrom16(s.As16()), src.Port()), netip.AddrPortFrom(netip.AddrFrom16(d.As16()), dst.Port()), true
}

// AppendV1 appends a v1 line for a connection from src to dst, as Envoy's
// generateV1Header: "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n"
// (§2.1; IPv6 in its compressed text form).
func AppendV1(b []byte, src, dst netip.AddrPort) []byte {
	src, dst, v6 := sameFamily(src, dst)
	b = append(b, v1Signature...)
	if v6 {
		b = append(b, "TCP6 "...)
	} else {
		b = append(b, "TCP4 "...)
	}
	b = src.Addr().AppendTo(b)
	b = append(b, ' ')
	b = dst.Addr().AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(src.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(dst.Port()), 10)
	return append(b, '\r', '\n')
}

// AppendV2Local appends a v2 LOCAL header (no addresses, no TLVs), which
// Envoy sends when it has no downstream connection to describe (health
// checks).
func AppendV2Local(b []byte) []byte {
	b = append(b, v2Signature...)
	return append(b, verCmdLocal, famUnspec, 0, 0)
}

// AppendV2 appends a v2 PROXY header over TCP for a connection from src
// to dst with the TLVs, in order, as Envoy's generateV2Header. A TLV that
// would make the header longer than its 16-bit length field allows is
// left out (and the ones after it still tried); fit reports whether all
// went in, which Envoy counts in upstream.proxyprotocol.
// v2_tlvs_exceed_max_length.
func AppendV2(b []byte, src, dst netip.AddrPort, tlvs []TLV) (out []byte, fit bool) {
	src, dst, v6 := sameFamily(src, dst)
	addrLen := v2AddrLenInet
	if v6 {
		addrLen = v2AddrLenInet6
	}
	fit = true
	ext := 0
	keep := make([]bool, len(tlvs))
	for i, t := range tlvs {
		n := tlvHeaderLen + len(t.Value)
		if addrLen+ext+n > 0xffff {
			fit = false
			continue
		}
		ext += n
		keep[i] = true
	}
	b = append(b, v2Signature...)
	if v6 {
		b = append(b, verCmdProxy, famTCP6)
	} else {
		b = append(b, verCmdProxy, famTCP4)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(addrLen+ext))
	if v6 {
		s, d := src.Addr().As16(), dst.Addr().As16()
		b = append(append(b, s[:]...), d[:]...)
	} else {
		s, d := src.Addr().As4(), dst.Addr().As4()
		b = append(append(b, s[:]...), d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	for i, t := range tlvs {
		if keep[i] {
			b = append(b, t.Type)
			b = binary.BigEndian.AppendUint16(b, uint16(len(t.Value)))
			b = append(b, t.Value...)
		}
	}
	return b, fit
}
