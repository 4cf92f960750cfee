package listener

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/tlsx"
)

// chainMatch is a compiled FilterChainMatch.
type chainMatch struct {
	dstPort     uint32
	dstRanges   []netip.Prefix
	serverNames []string // lower case; "*.x" wildcards keep the "*"
	transport   string
	alpn        []string
	directSrc   []netip.Prefix
	srcType     listenerv3.FilterChainMatch_ConnectionSourceType
	srcRanges   []netip.Prefix
	srcPorts    []uint32
}

func compileChainMatch(m *listenerv3.FilterChainMatch, path string) (chainMatch, error) {
	var cm chainMatch
	if m == nil {
		return cm, nil
	}
	if err := config.CheckFields(m, path, "destination_port", "prefix_ranges", "server_names", "transport_protocol",
		"application_protocols", "direct_source_prefix_ranges", "source_type", "source_prefix_ranges", "source_ports"); err != nil {
		return cm, err
	}
	cm.dstPort = m.GetDestinationPort().GetValue()
	var err error
	if cm.dstRanges, err = prefixes(m.GetPrefixRanges(), config.Join(path, "prefix_ranges")); err != nil {
		return cm, err
	}
	if cm.directSrc, err = prefixes(m.GetDirectSourcePrefixRanges(), config.Join(path, "direct_source_prefix_ranges")); err != nil {
		return cm, err
	}
	if cm.srcRanges, err = prefixes(m.GetSourcePrefixRanges(), config.Join(path, "source_prefix_ranges")); err != nil {
		return cm, err
	}
	for i, n := range m.GetServerNames() {
		n = strings.ToLower(n)
		if strings.Contains(n[1:], "*") || (strings.HasPrefix(n, "*") && !strings.HasPrefix(n, "*.")) {
			return cm, config.Errorf(config.Index(config.Join(path, "server_names"), i), "invalid server name %q: only a leading *. wildcard is allowed", n)
		}
		cm.serverNames = append(cm.serverNames, n)
	}
	cm.transport = m.GetTransportProtocol()
	cm.alpn = m.GetApplicationProtocols()
	cm.srcType = m.GetSourceType()
	cm.srcPorts = m.GetSourcePorts()
	return cm, nil
}

func prefixes(ranges []*corev3.CidrRange, path string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, r := range ranges {
		p, err := netip.ParsePrefix(fmt.Sprintf("%s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
		if err != nil {
			return nil, config.Errorf(config.Index(path, i), "invalid CIDR range: %v", err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// key renders the criteria for duplicate detection.
func (cm chainMatch) key() string {
	s := func(v any) string { return fmt.Sprint(v) }
	sn := append([]string(nil), cm.serverNames...)
	sort.Strings(sn)
	return strings.Join([]string{s(cm.dstPort), s(cm.dstRanges), s(sn), cm.transport, s(cm.alpn), s(cm.directSrc), s(cm.srcType), s(cm.srcRanges), s(cm.srcPorts)}, "|")
}

// connFacts are what a connection offers to filter chain matching.
type connFacts struct {
	dst, src netip.AddrPort
	// directSrc is the socket's peer when a listener filter (PROXY
	// protocol) changed src; zero: src.
	directSrc netip.AddrPort
	sni       string
	tls       bool
	transport string // "tls" or "raw_buffer" when tls_inspector ran, else ""
	alpn      []string
	// restored is set when original_dst changed dst to the connection's
	// original destination (Envoy's localAddressRestored), the one case
	// use_original_dst hands a connection off; origDstErr is set when
	// the original destination could not be read at all.
	restored   bool
	origDstErr error
}

// selectChain implements Envoy's filter chain match: criteria are checked
// in a fixed order (destination port, destination IP, server name,
// transport protocol, application protocol, direct source IP, source type,
// source IP, source port); at each step the most specific matching chains
// win, chains without that criterion are the fallback, and there is no
// backtracking. No chain left means the default filter chain.
func (cs *chainSet) selectChain(f connFacts) *filterChain {
	if cs.matcher != nil {
		return cs.matchChain(f)
	}
	cands := cs.chains
	steps := []func(*filterChain) (specified bool, score int){
		func(c *filterChain) (bool, int) { // destination port
			if c.match.dstPort == 0 {
				return false, 0
			}
			return true, boolScore(uint32(f.dst.Port()) == c.match.dstPort)
		},
		func(c *filterChain) (bool, int) { return rangeScore(c.match.dstRanges, f.dst.Addr()) },
		func(c *filterChain) (bool, int) { // server names
			if len(c.match.serverNames) == 0 {
				return false, 0
			}
			best := -1
			sni := strings.ToLower(f.sni)
			for _, n := range c.match.serverNames {
				switch {
				case n == sni && sni != "":
					best = max(best, 1<<20) // exact beats any wildcard
				case strings.HasPrefix(n, "*.") && strings.HasSuffix(sni, n[1:]) && len(sni) > len(n)-1:
					best = max(best, len(n))
				}
			}
			return true, best
		},
		func(c *filterChain) (bool, int) { // transport protocol
			if c.match.transport == "" {
				return false, 0
			}
			return true, boolScore(c.match.transport == f.transport)
		},
		func(c *filterChain) (bool, int) { // application protocols
			if len(c.match.alpn) == 0 {
				return false, 0
			}
			for _, want := range c.match.alpn {
				for _, have := range f.alpn {
					if want == have {
						return true, 1
					}
				}
			}
			return true, -1
		},
		func(c *filterChain) (bool, int) { // direct source IP: the socket's peer
			if f.directSrc.IsValid() {
				return rangeScore(c.match.directSrc, f.directSrc.Addr())
			}
			return rangeScore(c.match.directSrc, f.src.Addr())
		},
		func(c *filterChain) (bool, int) { // source type
			switch c.match.srcType {
			case listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK:
				local := f.src.Addr().IsLoopback() || f.src.Addr() == f.dst.Addr()
				return true, boolScore(local)
			case listenerv3.FilterChainMatch_EXTERNAL:
				local := f.src.Addr().IsLoopback() || f.src.Addr() == f.dst.Addr()
				return true, boolScore(!local)
			}
			return false, 0
		},
		func(c *filterChain) (bool, int) { return rangeScore(c.match.srcRanges, f.src.Addr()) },
		func(c *filterChain) (bool, int) { // source ports
			if len(c.match.srcPorts) == 0 {
				return false, 0
			}
			for _, p := range c.match.srcPorts {
				if uint32(f.src.Port()) == p {
					return true, 1
				}
			}
			return true, -1
		},
	}
	for _, step := range steps {
		var specific, fallback []*filterChain
		best := -1
		for _, c := range cands {
			spec, score := step(c)
			if !spec {
				fallback = append(fallback, c)
				continue
			}
			if score < 0 {
				continue
			}
			if score > best {
				best, specific = score, specific[:0]
			}
			if score == best {
				specific = append(specific, c)
			}
		}
		if len(specific) > 0 {
			cands = specific
		} else {
			cands = fallback
		}
		if len(cands) == 0 {
			break
		}
	}
	if len(cands) > 0 {
		return cands[0]
	}
	return cs.def
}

func boolScore(ok bool) int {
	if ok {
		return 1
	}
	return -1
}

// rangeScore matches an address against CIDR ranges; the longest prefix
// is the most specific.
func rangeScore(ranges []netip.Prefix, a netip.Addr) (bool, int) {
	if len(ranges) == 0 {
		return false, 0
	}
	a = a.Unmap()
	best := -1
	for _, p := range ranges {
		if p.Contains(a) {
			best = max(best, p.Bits())
		}
	}
	return true, best
}

// inspector is the listener filters' work: tls_inspector (SNI, ALPN,
// transport protocol) and http_inspector (HTTP version as ALPN).
type inspector struct {
	tls, http bool
	// origDst restores the original destination (listener filter
	// original_dst) before chains are matched.
	origDst bool
	timeout time.Duration
	// continueOnTimeout serves a connection whose first bytes do not come
	// in time with what is known (continue_on_listener_filters_timeout).
	continueOnTimeout bool
}

// inspect peeks at the first bytes; the returned connection replays them.
func (in *inspector) inspect(conn net.Conn) (net.Conn, connFacts, bool) {
	var f connFacts
	if in.origDst {
		// As Envoy's original_dst: without a NAT record the connection
		// keeps its local address; a destination equal to it is no
		// redirect (the connection came to this listener directly).
		a, ok, err := originalDst(conn)
		if err != nil {
			f.origDstErr = err
			return conn, f, false
		}
		if ok {
			if cur, _ := conn.LocalAddr().(*net.TCPAddr); cur == nil || netip.AddrPortFrom(cur.AddrPort().Addr().Unmap(), cur.AddrPort().Port()) != a {
				conn = &origDstConn{Conn: conn, local: net.TCPAddrFromAddrPort(a)}
				f.restored = true
			}
		}
	}
	if a, ok := conn.LocalAddr().(*net.TCPAddr); ok {
		f.dst = a.AddrPort()
	}
	if a, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		f.src = a.AddrPort()
	}
	if !in.tls && !in.http {
		return conn, f, true
	}
	conn.SetReadDeadline(time.Now().Add(in.timeout))
	defer conn.SetReadDeadline(time.Time{})
	var buf []byte
	tmp := make([]byte, 4096)
	for len(buf) < 64*1024 {
		n, err := conn.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if in.tls {
			hello, herr := tlsx.ParseClientHello(buf)
			if herr == nil {
				f.tls, f.sni, f.alpn = hello.TLS, hello.ServerName, hello.ALPN
				f.transport = "raw_buffer"
				if hello.TLS {
					f.transport = "tls"
				}
				if hello.TLS || !in.http {
					return &PrefixConn{Conn: conn, pre: buf}, f, true
				}
			}
		}
		if in.http && !f.tls {
			if proto, ok := sniffHTTP(buf); ok {
				if proto != "" {
					f.alpn = []string{proto}
				}
				return &PrefixConn{Conn: conn, pre: buf}, f, true
			}
		}
		if err != nil {
			if in.continueOnTimeout && len(buf) > 0 {
				return &PrefixConn{Conn: conn, pre: buf}, f, true
			}
			return nil, f, in.continueOnTimeout
		}
	}
	return &PrefixConn{Conn: conn, pre: buf}, f, true
}

// sniffHTTP recognizes the HTTP/2 preface or an HTTP/1 request line.
func sniffHTTP(b []byte) (string, bool) {
	if bytes.HasPrefix(H2Preface, b) {
		if len(b) >= len(H2Preface) {
			return "h2c", true
		}
		return "", false
	}
	if bytes.HasPrefix(b, H2Preface) {
		return "h2c", true
	}
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return "", len(b) > 8192
	}
	line := bytes.TrimRight(b[:i], "\r")
	switch {
	case bytes.HasSuffix(line, []byte(" HTTP/1.1")):
		return "http/1.1", true
	case bytes.HasSuffix(line, []byte(" HTTP/1.0")):
		return "http/1.0", true
	}
	return "", true
}

// H2Preface is the HTTP/2 client connection preface (RFC 9113 §3.4).
var H2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// PrefixConn replays bytes already read (by a listener filter or a codec
// sniffing the protocol) before the connection's own.
type PrefixConn struct {
	net.Conn
	pre []byte
}

// NewPrefixConn returns conn with pre read first.
func NewPrefixConn(conn net.Conn, pre []byte) *PrefixConn { return &PrefixConn{Conn: conn, pre: pre} }

func (p *PrefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// CloseWrite half-closes the connection underneath (a tunnel's FIN), when
// it can.
func (p *PrefixConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
