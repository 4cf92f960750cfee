// Package proxy_protocol is envoy.filters.listener.proxy_protocol: a
// listener filter that reads the PROXY protocol header (v1 or v2, found
// per connection) a proxy in front of the listener sends, and makes the
// connection's source and destination the header's — so filter chain
// matching, access logs, x-forwarded-for, RBAC and upstream PROXY headers
// see the original client. v2 TLVs named by rules become dynamic metadata
// (or one filter-state object), and those pass_through_tlvs selects are
// kept for the upstream transport socket. Malformed headers close the
// connection and are counted in Envoy's stats: downstream_cx_proxy_proto_
// error and proxy_proto.[<stat_prefix>.]{not_found_allowed,
// not_found_disallowed,versions.<v1|v2>.{found,disallowed,error}}.
package proxy_protocol

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ppv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/proxy_protocol/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/proxyproto"
	"github.com/legateproxy/legate/internal/stats"
)

// Name is the filter's name, also the default metadata namespace of TLVs.
const Name = "envoy.filters.listener.proxy_protocol"

func init() {
	extension.Register(extension.Extension{Name: Name, Category: extension.ListenerFilter,
		Config: &ppv3.ProxyProtocol{}, Factory: listener.AcceptFilterFactory(compile),
		Notes: "TLVs are not also written as typed metadata (envoy.data.core.v3.TlvsMetadata)"})
}

// rule is a compiled Rule: where a TLV's value goes.
type rule struct {
	ns, key string
	base64  bool
}

// versionStats are proxy_proto.[<prefix>.]versions.<v>.*.
type versionStats struct {
	found, disallowed, error *stats.Counter
}

// filter is a compiled ProxyProtocol config.
type filter struct {
	opts        proxyproto.Options
	rules       map[byte]rule
	passAll     bool
	pass        [256]bool
	filterState bool // tlv_location FILTER_STATE
	timeout     time.Duration
	log         *slog.Logger

	legacyError                   *stats.Counter
	notFoundAllowed, notFoundDeny *stats.Counter
	v1, v2                        versionStats
}

func compile(ctx *listener.Context, msg proto.Message, timeout time.Duration, path string) (listener.AcceptFilter, error) {
	cfg := msg.(*ppv3.ProxyProtocol)
	if err := config.CheckFields(cfg, path, "rules", "allow_requests_without_proxy_protocol", "pass_through_tlvs",
		"disallowed_versions", "stat_prefix", "tlv_location"); err != nil {
		return nil, err
	}
	f := &filter{rules: map[byte]rule{}, timeout: timeout, log: ctx.Log,
		opts:        proxyproto.Options{AllowNone: cfg.GetAllowRequestsWithoutProxyProtocol()},
		filterState: cfg.GetTlvLocation() == ppv3.ProxyProtocol_FILTER_STATE}
	if f.log == nil {
		f.log = slog.Default()
	}
	for i, r := range cfg.GetRules() {
		p := config.Index(config.Join(path, "rules"), i)
		if err := config.CheckFields(r, p, "tlv_type", "on_tlv_present"); err != nil {
			return nil, err
		}
		kv := r.GetOnTlvPresent()
		if kv == nil {
			return nil, config.Errorf(config.Join(p, "on_tlv_present"), "on_tlv_present is required")
		}
		if err := config.CheckFields(kv, config.Join(p, "on_tlv_present"), "metadata_namespace", "key", "value_string_encoding"); err != nil {
			return nil, err
		}
		ns := kv.GetMetadataNamespace()
		if ns == "" {
			ns = Name
		}
		// As Envoy: the type is a byte (the config's uint32 is masked) and
		// a later rule for the same type replaces an earlier one.
		f.rules[byte(r.GetTlvType()&0xff)] = rule{ns: ns, key: kv.GetKey(),
			base64: kv.GetValueStringEncoding() == ppv3.ProxyProtocol_KeyValuePair_BASE64}
	}
	if pt := cfg.GetPassThroughTlvs(); pt != nil {
		pp := config.Join(path, "pass_through_tlvs")
		if err := config.CheckFields(pt, pp, "match_type", "tlv_type"); err != nil {
			return nil, err
		}
		if pt.GetMatchType() == corev3.ProxyProtocolPassThroughTLVs_INCLUDE_ALL {
			f.passAll = true
		} else {
			for _, t := range pt.GetTlvType() {
				f.pass[t&0xff] = true
			}
		}
	}
	for _, v := range cfg.GetDisallowedVersions() {
		switch v {
		case corev3.ProxyProtocolConfig_V1:
			f.opts.DisallowV1 = true
		case corev3.ProxyProtocolConfig_V2:
			f.opts.DisallowV2 = true
		}
	}
	if f.opts.DisallowV1 && f.opts.DisallowV2 {
		return nil, config.Errorf(config.Join(path, "disallowed_versions"), "Proxy Protocol filter is misconfigured: all proxy protocol versions are disallowed.")
	}
	// As Envoy, the stats are rooted at the server's scope, not the
	// listener's; the legacy counter ignores stat_prefix.
	f.legacyError = ctx.Stats.Counter("downstream_cx_proxy_proto_error")
	prefix := "proxy_proto."
	if sp := cfg.GetStatPrefix(); sp != "" {
		prefix += sp + "."
	}
	s := ctx.Stats.Scope(prefix)
	f.notFoundAllowed, f.notFoundDeny = s.Counter("not_found_allowed"), s.Counter("not_found_disallowed")
	vs := func(v string) versionStats {
		sc := s.Scope("versions." + v + ".")
		return versionStats{found: sc.Counter("found"), disallowed: sc.Counter("disallowed"), error: sc.Counter("error")}
	}
	f.v1, f.v2 = vs("v1"), vs("v2")
	return f, nil
}

// Accept reads the header, bounded by listener_filters_timeout, and hands
// the rest of the connection on with the header's addresses.
func (f *filter) Accept(c *listener.Conn) error {
	conn := c.Conn
	if f.timeout > 0 {
		conn.SetReadDeadline(time.Now().Add(f.timeout))
		defer conn.SetReadDeadline(time.Time{})
	}
	buf := make([]byte, 0, proxyproto.InitialReadLen)
	for {
		want := proxyproto.NeedBytes(buf)
		if len(buf) >= want {
			// Parse asked for more than NeedBytes allows (cannot happen:
			// a v1 line errs past 107 bytes, a v2 header is complete at
			// its length).
			return fmt.Errorf("proxy_protocol: header needs more than %d bytes", want)
		}
		if cap(buf) < want {
			buf = append(make([]byte, 0, want), buf...)
		}
		n, err := conn.Read(buf[len(buf):want])
		buf = buf[:len(buf)+n]
		if n > 0 {
			h, perr := proxyproto.Parse(buf, f.opts)
			if perr == nil {
				f.apply(c, h, buf[h.Len:])
				return nil
			}
			if !errors.Is(perr, proxyproto.ErrIncomplete) {
				f.count(perr)
				return fmt.Errorf("proxy_protocol: %w", perr)
			}
		}
		if err != nil {
			// A peer that leaves, or a header not complete in time, is not
			// a protocol error in Envoy's stats. After a timeout the
			// listener may go on (continue_on_listener_filters_timeout):
			// Envoy only peeked, so what was read is read again.
			if len(buf) > 0 {
				c.Conn = &replayConn{wrapped: wrapped{Conn: conn, remote: conn.RemoteAddr(), local: conn.LocalAddr()}, pre: buf}
			}
			return fmt.Errorf("proxy_protocol: reading the header: %w", err)
		}
	}
}

// count records a refused header in Envoy's stats.
func (f *filter) count(err error) {
	var e *proxyproto.Error
	if !errors.As(err, &e) {
		return
	}
	var vs *versionStats
	switch e.Version {
	case proxyproto.V1:
		vs = &f.v1
	case proxyproto.V2:
		vs = &f.v2
	}
	switch {
	case e.Denied:
		// A disallowed version was found: found and disallowed, not an
		// error (Envoy's Denied).
		vs.found.Inc()
		vs.disallowed.Inc()
		return
	case vs == nil:
		f.notFoundDeny.Inc()
	default:
		vs.error.Inc()
	}
	f.legacyError.Inc()
}

// apply records what the header says on the connection: stats, TLVs,
// the PROXY protocol record and the addresses; rest is what was read
// past the header, which the connection replays.
func (f *filter) apply(c *listener.Conn, h *proxyproto.Header, rest []byte) {
	switch h.Version {
	case proxyproto.NotFound:
		f.notFoundAllowed.Inc()
	case proxyproto.V1:
		f.v1.found.Inc()
	case proxyproto.V2:
		f.v2.found.Inc()
	}
	var pass []proxyproto.TLV
	var obj *proxyproto.TLVObject
	for _, t := range h.TLVs {
		if r, ok := f.rules[t.Type]; ok {
			v := encode(t.Value, r.base64)
			if f.filterState {
				if obj == nil {
					obj = &proxyproto.TLVObject{}
				}
				obj.Set(r.key, v)
			} else if st := c.Metadata[r.ns]; st == nil || st.Fields[r.key] == nil {
				// Envoy inserts into the namespace: a key already there
				// (an earlier TLV of the type) keeps its value.
				c.SetMetadata(r.ns, map[string]*structpb.Value{r.key: structpb.NewStringValue(v)})
			}
		}
		if f.passAll || f.pass[t.Type] {
			pass = append(pass, t)
		}
	}
	if obj != nil {
		c.SetFilterState(proxyproto.TLVFilterStateKey, obj)
	}
	if h.Version != proxyproto.NotFound {
		if _, has := c.FilterState[proxyproto.FilterStateKey]; !has {
			d := &proxyproto.Data{Src: h.Src, Dst: h.Dst, TLVs: pass, Version: h.Version}
			if h.Local {
				// LOCAL and UNKNOWN: the connection's own addresses.
				sd := proxyproto.SocketData(addrPort(c.Conn.RemoteAddr()), addrPort(c.Conn.LocalAddr()))
				d.Src, d.Dst = sd.Src, sd.Dst
			}
			c.SetFilterState(proxyproto.FilterStateKey, d)
		}
	}
	remote, local := c.Conn.RemoteAddr(), c.Conn.LocalAddr()
	moved := h.Version != proxyproto.NotFound && !h.Local
	if moved {
		remote, local = net.TCPAddrFromAddrPort(h.Src), net.TCPAddrFromAddrPort(h.Dst)
	}
	switch {
	case len(rest) > 0:
		c.Conn = &replayConn{wrapped: wrapped{Conn: c.Conn, remote: remote, local: local}, pre: append([]byte(nil), rest...)}
	case moved:
		c.Conn = &addrConn{wrapped{Conn: c.Conn, remote: remote, local: local}}
	}
	if f.log.Enabled(context.Background(), slog.LevelDebug) {
		f.log.Debug("proxy_protocol: header read", "version", h.Version.String(), "local", h.Local,
			"remote", remote.String(), "local_address", local.String(), "tlvs", len(h.TLVs))
	}
}

// encode renders a TLV value for metadata or filter state: Envoy's
// SANITIZED_UTF8 (each byte that is not part of valid UTF-8 becomes '!')
// or BASE64 (standard, padded).
func encode(v []byte, b64 bool) string {
	if b64 {
		return base64.StdEncoding.EncodeToString(v)
	}
	if utf8.Valid(v) {
		return string(v)
	}
	out := make([]byte, 0, len(v))
	for i := 0; i < len(v); {
		r, n := utf8.DecodeRune(v[i:])
		if r == utf8.RuneError && n == 1 {
			out = append(out, '!')
		} else {
			out = append(out, v[i:i+n]...)
		}
		i += n
	}
	return string(out)
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	return netip.AddrPort{}
}

// wrapped is a connection seen with the PROXY header's addresses.
type wrapped struct {
	net.Conn
	remote, local net.Addr
}

// RemoteAddr is the header's source.
func (c *wrapped) RemoteAddr() net.Addr { return c.remote }

// LocalAddr is the header's destination.
func (c *wrapped) LocalAddr() net.Addr { return c.local }

// CloseWrite half-closes the socket (tcp_proxy passes a client's FIN on).
func (c *wrapped) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// SyscallConn keeps the socket reachable through the wrapper.
func (c *wrapped) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, syscall.EINVAL
}

// addrConn is a wrapped connection with nothing left to replay.
type addrConn struct{ wrapped }

// TCPSocket tells netx the wrapper buffers nothing: raw reads of the
// socket see all of the connection.
func (c *addrConn) TCPSocket() {}

// replayConn is a wrapped connection that first returns the bytes read
// past the header. It buffers, so it is no TCPSocket for netx.
type replayConn struct {
	wrapped
	pre []byte
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
