// Package upstream_proxy_protocol is Envoy's upstream transport socket
// envoy.transport_sockets.upstream_proxy_protocol: every connection to a
// cluster's hosts starts with a PROXY protocol header (version 1 or 2)
// naming the downstream connection the request or TCP stream comes from,
// then goes on over the wrapped transport socket (raw_buffer or tls; the
// header precedes the TLS handshake). v2 headers carry the TLVs of
// added_tlvs (the host's own, from its metadata under
// envoy.transport_sockets.proxy_protocol, first) and the downstream
// header's TLVs that pass_through_tlvs selects.
//
// A connection made for no downstream connection (health checks) gets
// what Envoy sends then: a v1 line of the upstream connection's own
// addresses, or a v2 LOCAL header.
package upstream_proxy_protocol

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	pptsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/proxyproto"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/upstream"
)

// HostMetadataNamespace is the typed_filter_metadata key of an endpoint's
// own TLVs (an envoy.config.core.v3.PerHostConfig).
const HostMetadataNamespace = "envoy.transport_sockets.proxy_protocol"

func init() {
	extension.Register(extension.Extension{Name: "envoy.transport_sockets.upstream_proxy_protocol",
		Category: extension.UpstreamTransportSocket, Config: &pptsv3.ProxyProtocolUpstreamTransport{},
		Factory: upstream.TransportSocketFactory(compile),
		Notes:   "HTTP/1.1 and TCP upstreams only (HTTP/2 clusters are refused); added_tlvs format_string is not implemented"})
}

// socket is a compiled ProxyProtocolUpstreamTransport.
type socket struct {
	inner   upstream.TransportSocket // nil: raw_buffer
	v2      bool
	passAll bool
	pass    [256]bool
	added   []proxyproto.TLV
	// exceed is upstream.proxyprotocol.v2_tlvs_exceed_max_length.
	exceed *stats.Counter
}

func compile(msg proto.Message, path string, tc upstream.TransportContext) (upstream.TransportSocket, error) {
	cfg := msg.(*pptsv3.ProxyProtocolUpstreamTransport)
	if err := config.CheckFields(cfg, path, "config", "transport_socket"); err != nil {
		return nil, err
	}
	pc, cp := cfg.GetConfig(), config.Join(path, "config")
	if pc == nil {
		return nil, config.Errorf(cp, "config is required")
	}
	if err := config.CheckFields(pc, cp, "version", "pass_through_tlvs", "added_tlvs"); err != nil {
		return nil, err
	}
	s := &socket{v2: pc.GetVersion() == corev3.ProxyProtocolConfig_V2,
		exceed: tc.Stats.Counter("upstream.proxyprotocol.v2_tlvs_exceed_max_length")}
	if pt := pc.GetPassThroughTlvs(); pt != nil {
		pp := config.Join(cp, "pass_through_tlvs")
		if err := config.CheckFields(pt, pp, "match_type", "tlv_type"); err != nil {
			return nil, err
		}
		if pt.GetMatchType() == corev3.ProxyProtocolPassThroughTLVs_INCLUDE_ALL {
			s.passAll = true
		} else {
			for _, t := range pt.GetTlvType() {
				s.pass[t&0xff] = true
			}
		}
	}
	for i, e := range pc.GetAddedTlvs() {
		p := config.Index(config.Join(cp, "added_tlvs"), i)
		if err := config.CheckFields(e, p, "type", "value", "format_string"); err != nil {
			return nil, err
		}
		t, err := staticTLV(e, p)
		if err != nil {
			return nil, err
		}
		s.added = append(s.added, t)
	}
	ts, tp := cfg.GetTransportSocket(), config.Join(path, "transport_socket")
	if ts == nil {
		return nil, config.Errorf(tp, "transport_socket is required (the socket the PROXY header precedes: raw_buffer or tls)")
	}
	inner, err := tc.Inner(ts, tp)
	if err != nil {
		return nil, err
	}
	s.inner = inner
	return s, nil
}

// staticTLV compiles an added TLV: exactly one of value and format_string
// (Envoy's parseTLVs), a type that fits a byte.
func staticTLV(e *corev3.TlvEntry, path string) (proxyproto.TLV, error) {
	if e.GetType() > 0xff {
		return proxyproto.TLV{}, config.Errorf(config.Join(path, "type"), "TLV type %d does not fit in a byte", e.GetType())
	}
	switch {
	case len(e.GetValue()) > 0 && e.GetFormatString() != nil:
		return proxyproto.TLV{}, config.Errorf(path, "Invalid TLV configuration: only one of 'value' or 'format_string' may be set.")
	case e.GetFormatString() != nil:
		return proxyproto.TLV{}, config.Unsupported(config.Join(path, "format_string"), "a TLV value from a format string", "value")
	case len(e.GetValue()) == 0:
		return proxyproto.TLV{}, config.Errorf(path, "Invalid TLV configuration: one of 'value' or 'format_string' must be set.")
	}
	return proxyproto.TLV{Type: byte(e.GetType()), Value: append([]byte(nil), e.GetValue()...)}, nil
}

// SendsProxyProtocol marks the socket for the cluster's pooling
// (upstream.ProxyProtocolSender).
func (s *socket) SendsProxyProtocol() bool { return true }

// ImplementsSecureTransport says whether the wrapped socket is TLS.
func (s *socket) ImplementsSecureTransport() bool {
	if s.inner == nil {
		return false
	}
	if st, ok := s.inner.(upstream.SecureTransport); ok {
		return st.ImplementsSecureTransport()
	}
	return true
}

// SetSANValidation passes auto_san_validation on to a TLS inner socket.
func (s *socket) SetSANValidation(on bool) {
	if v, ok := s.inner.(interface{ SetSANValidation(bool) }); ok {
		v.SetSANValidation(on)
	}
}

// ALPN is the inner socket's negotiated protocol.
func (s *socket) ALPN(conn net.Conn) string {
	if s.inner == nil {
		return ""
	}
	return s.inner.ALPN(conn)
}

// Client writes the PROXY header on the new connection, then hands it to
// the inner socket.
func (s *socket) Client(ctx context.Context, conn net.Conn, sni string) (net.Conn, error) {
	d := upstream.DialInfoFrom(ctx)
	var pp *proxyproto.Data
	var host *upstream.Host
	if d != nil {
		pp, host = d.ProxyProtocol, d.Host
	}
	var hdr []byte
	switch {
	case !s.v2 && pp == nil:
		// No downstream connection: the upstream connection's own
		// addresses, as Envoy's generateHeaderV1.
		sd := proxyproto.SocketData(tcpAddr(conn.LocalAddr()), tcpAddr(conn.RemoteAddr()))
		hdr = proxyproto.AppendV1(nil, sd.Src, sd.Dst)
	case !s.v2:
		hdr = proxyproto.AppendV1(nil, pp.Src, pp.Dst)
	case pp == nil:
		hdr = proxyproto.AppendV2Local(nil)
	default:
		var fit bool
		hdr, fit = proxyproto.AppendV2(nil, pp.Src, pp.Dst, s.tlvs(pp, host))
		if !fit {
			s.exceed.Inc()
			slog.Warn("upstream_proxy_protocol: TLVs left out of a v2 header that would exceed 65535 bytes")
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetWriteDeadline(dl)
	}
	_, err := conn.Write(hdr)
	conn.SetWriteDeadline(time.Time{})
	if err != nil {
		return nil, fmt.Errorf("writing the PROXY protocol header: %w", err)
	}
	if s.inner == nil {
		return conn, nil
	}
	return s.inner.Client(ctx, conn, sni)
}

// tlvs are a v2 header's TLVs, as Envoy's buildCustomTLVs and
// generateV2Header (duplicate types allowed): the host's own TLVs, then
// added_tlvs of types the host does not set, then the downstream TLVs
// pass_through_tlvs selects, of types neither sets.
func (s *socket) tlvs(pp *proxyproto.Data, host *upstream.Host) []proxyproto.TLV {
	var out []proxyproto.TLV
	var hostTypes, custom [256]bool
	for _, t := range hostTLVs(host) {
		out = append(out, t)
		hostTypes[t.Type], custom[t.Type] = true, true
	}
	for _, t := range s.added {
		if !hostTypes[t.Type] {
			out = append(out, t)
			custom[t.Type] = true
		}
	}
	for _, t := range pp.TLVs {
		if (s.passAll || s.pass[t.Type]) && !custom[t.Type] {
			out = append(out, t)
		}
	}
	return out
}

// hostTLVs reads an endpoint's PerHostConfig from its metadata; one that
// does not unpack is logged and skipped (the config-level TLVs still
// apply), as Envoy does.
func hostTLVs(h *upstream.Host) []proxyproto.TLV {
	if h == nil {
		return nil
	}
	a := h.Config().Metadata.GetTypedFilterMetadata()[HostMetadataNamespace]
	if a == nil {
		return nil
	}
	var phc corev3.PerHostConfig
	if err := a.UnmarshalTo(&phc); err != nil {
		slog.Warn("upstream_proxy_protocol: cannot unpack the host's TLVs; using the config's", "host", h.Address, "error", err)
		return nil
	}
	var out []proxyproto.TLV
	for _, e := range phc.GetAddedTlvs() {
		// Host-level TLVs are static values only (format_string is not
		// evaluated there, as in Envoy).
		out = append(out, proxyproto.TLV{Type: byte(e.GetType()), Value: e.GetValue()})
	}
	return out
}

func tcpAddr(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	return netip.AddrPort{}
}
