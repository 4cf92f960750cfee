package hcm

import (
	"context"
	"errors"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/overload"
	"io"
	"maps"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/router"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/tracing"
	"github.com/legateproxy/legate/internal/upstream"
)

// connState is what every stream of one downstream connection shares.
// It is small on purpose — an idle connection keeps it — and reads the
// connection's identity from the listener's Conn: addresses (Remote, the
// socket's DirectRemote that a PROXY protocol header does not change,
// Local, the OriginalDst original_dst restored), TLS, SNI, ID, Start and
// the filter state listener and network filters recorded (Envoy's
// connection-lifespan filter state, which every stream starts with).
type connState struct {
	tc       *listener.Conn
	draining atomic.Bool
	// buckets holds per-connection token buckets (local rate limits with
	// local_rate_limit_per_downstream_connection), made on first use.
	buckets atomic.Pointer[sync.Map]
}

// directRemote is the socket's peer, or remote when it is not known.
func (cs *connState) directRemote() netip.AddrPort {
	if cs.tc.DirectRemote.IsValid() {
		return cs.tc.DirectRemote
	}
	return cs.tc.Remote
}

// scheme is "https" on a TLS connection, else "http".
func (cs *connState) scheme() string {
	if cs.tc.TLS != nil {
		return "https"
	}
	return "http"
}

// bucketMap returns the connection's token buckets, made on first use.
func (cs *connState) bucketMap() *sync.Map {
	if m := cs.buckets.Load(); m != nil {
		return m
	}
	cs.buckets.CompareAndSwap(nil, new(sync.Map))
	return cs.buckets.Load()
}

func newConnState(tc *listener.Conn) *connState { return &connState{tc: tc} }

// downstream is the codec side of one request: how its body is read and
// its response written. HTTP/1 and HTTP/2 implement it.
type downstream interface {
	// readBody reads request body bytes; io.EOF at the end.
	readBody(p []byte) (int, error)
	// bodyLength is the request body length, -1 if unknown (chunked or a
	// stream), 0 if there is none.
	bodyLength() int64
	reqTrailers() *headers.Map
	// writeHead starts the response. length is the body length or -1.
	writeHead(status int, h *headers.Map, length int64, endStream bool) error
	writeBody(p []byte) error
	// finish ends the response, with trailers if any, and flushes.
	finish(trailers *headers.Map) error
	// flush sends what is buffered now (streaming responses).
	flush() error
	// hijack hands over the connection after a 101 response (HTTP/1 only).
	hijack() (net.Conn, []byte, bool)
	protocol() string
	// context is done when the client has gone (an HTTP/2 stream reset or
	// a closed connection).
	context() context.Context
	// startTunnel tells the codec the request's payload now is a tunnel
	// (a CONNECT, or a POST relayed as TCP): the request deadlines
	// (request_timeout, the stream idle deadline) stop, the router bounds
	// the tunnel with its idle timeout, and an HTTP/1.1 connection closes
	// after it.
	startTunnel()
	// abortRead makes a readBody blocked in another goroutine return (and
	// later ones fail): the tunnel ended on the upstream side.
	abortRead()
	// clientGone reports whether the client's connection (or HTTP/2
	// stream) is gone; only called while nothing reads it.
	clientGone() bool
	// watchClose starts noticing, while the request waits for its
	// upstream, that the client closed the connection; gone is then
	// called (from another goroutine). The returned func stops watching.
	// HTTP/2 streams learn it from their reset (context).
	watchClose(gone func()) (stop func())
}

// stream is one request being served. HTTP/1 connections reuse one stream
// for all their requests; HTTP/2 streams are pooled.
type stream struct {
	// replyHeaders are added to a local reply (a filter's response_headers_to_add);
	// replyGRPCStatus overrides the grpc-status of a local reply.
	replyHeaders    []httpfilter.HeaderValue
	replyGRPCStatus *int
	// fm is the HTTP filter manager's state.
	fm fm
	// wc, pickRef and pickName are the cluster the route picked when it
	// was resolved (weighted clusters are chosen then, as Envoy).
	wc       *route.WeightedCluster
	pickRef  *upstream.Ref
	pickName string
	// replied is set once a complete local reply was sent.
	replied bool
	// span is the request's trace span (connection manager tracing).
	span tracing.Span
	// upSpan is the span of the upstream request in flight (spawn_upstream_span, start_child_span).
	upSpan tracing.Span
	cfg    *hcmConfig
	conn   *connState
	ds     downstream
	d      *listener.Context

	req     headers.Request
	resp    headers.Response
	info    streaminfo.Info
	scratch []byte

	table        *route.Table
	rt           *route.Route
	upgrade      string // accepted upgrade type (websocket), lower case
	isGRPC       bool
	external     bool
	respStarted  bool
	bodyConsumed bool
	// closeConn asks the codec to close the connection after this response.
	closeConn bool

	// rs is the router's state, reused across requests.
	rs *router.Stream

	// acct is the stream's buffer account (nil: no accounting,
	// overload_reset.go); acctHeld is what it was charged, acctExtra what
	// the router holds.
	acct                *overload.Account
	acctHeld, acctExtra int64
}

// reset clears the stream for the next request, keeping the storage of
// its header maps and buffers so a steady connection allocates nothing.
func (s *stream) reset() {
	s.req.Reset()
	s.resp.Reset()
	s.endFilters()
	if s.rs != nil {
		s.rs.Reset()
	}
	// The dynamic metadata map is kept, emptied, as the header maps are:
	// nothing holds it past the request (access logs and spans read it
	// when the stream ends, on this goroutine).
	dm := s.info.DynamicMetadata
	clear(dm)
	cfg, conn, ds, d, rs := s.cfg, s.conn, s.ds, s.d, s.rs
	req, resp, f, scratch := s.req, s.resp, s.fm, s.scratch[:0]
	// Cleared in place: building the whole value as a literal and copying
	// it over the stream cost a second pass over its 1.2 KB per request.
	*s = stream{}
	s.cfg, s.conn, s.ds, s.d, s.rs = cfg, conn, ds, d, rs
	s.req, s.resp, s.fm, s.scratch = req, resp, f, scratch
	s.info.DynamicMetadata = dm
}

// serve runs the request through the connection manager: validation,
// header sanitization, routing, the router, and the access log.
func (s *stream) serve() {
	c := s.cfg
	st := c.stats
	s.info.StartTime = time.Now()
	s.info.Protocol = s.ds.protocol()
	s.info.Request = &s.req
	s.info.Response = &s.resp
	s.info.DownstreamDirectRemote = s.conn.directRemote()
	s.info.DownstreamConnRemote = s.conn.tc.Remote
	s.info.DownstreamRemote = s.conn.tc.Remote
	s.info.DownstreamLocal = s.conn.tc.Local
	s.info.ConnectionID = s.conn.tc.ID
	s.info.DownstreamTLS = s.conn.tc.TLS
	s.info.RequestedServerName = s.conn.tc.SNI
	s.info.Hostname = s.d.Hostname
	if len(s.conn.tc.FilterState) > 0 {
		s.info.FilterState = maps.Clone(s.conn.tc.FilterState)
	}
	st.rqTotal.Inc()
	st.rqActive.Inc()
	s.startAccount()
	defer s.done()

	if code, detail := s.decodeHeaders(); code != 0 {
		s.localReply(code, "", detail, 0)
		return
	}
	if s.d.Overload != nil {
		if s.d.Overload.Active(overload.StopAcceptingRequests) {
			st.rqOverloadClose.Inc()
			s.localReply(503, "envoy overloaded", "overload", streaminfo.OverloadManager)
			return
		}
		if s.d.Overload.Active(overload.DisableHTTPKeepalive) && s.info.Protocol != "HTTP/2" {
			st.cxOverloadDisableKeepalive.Inc()
			s.closeConn = true
		}
	}
	s.resolveRoute()
	if c.tracing != nil {
		op := ""
		var rtc *tracing.RouteTracing
		if s.rt != nil {
			op = s.rt.Decorator
			rtc, _ = s.rt.Tracing.(*tracing.RouteTracing)
		}
		s.span = c.tracing.StartRoute(&s.req, &s.info, rtc, op, !s.external)
	}
	if len(c.filters) > 0 {
		s.startFilters()
		if !s.decodeFilters() {
			return
		}
	}
	s.router()
}

// resolveRoute matches the request against the route table and picks the
// cluster of a forwarding route (a weighted cluster is chosen here, so that
// its typed_per_filter_config applies to the filters, as in Envoy).
func (s *stream) resolveRoute() {
	s.table = s.cfg.routes.Load()
	s.rt, s.wc, s.pickRef, s.pickName = nil, nil, nil, ""
	if s.table == nil {
		return
	}
	s.rt = s.table.Route(&s.req)
	if s.rt == nil {
		return
	}
	s.info.RouteName = s.rt.Name
	s.info.VirtualHostName = s.rt.VHost.Name
	if s.rt.Kind == route.Forward {
		s.pickRef, s.pickName, s.wc = s.rt.Action.PickCluster(&s.req)
	}
}

// router is the terminal filter: no route (404), TLS redirects, direct
// responses, redirects, or forwarding upstream.
func (s *stream) router() {
	st := s.cfg.stats
	if s.rt == nil {
		st.noRoute.Inc()
		s.localReply(404, "", "route_not_found", streaminfo.NoRouteFound)
		return
	}
	if s.rt.VHost.RequireTLS != 0 && s.conn.scheme() != "https" {
		s.redirectToHTTPS()
		return
	}
	switch s.rt.Kind {
	case route.DirectResponse:
		st.rqDirectResponse.Inc()
		s.directResponse(s.rt.Direct)
	case route.Redirect:
		st.rqRedirect.Inc()
		s.redirect(s.rt.Redirect)
	case route.NonForwarding:
		s.localReply(404, "", "route_not_found", streaminfo.NoRouteFound)
	default:
		if s.upgrade != "" && !s.upgradeAllowed() {
			st.rqWS.Inc()
			s.localReply(403, "", "upgrade_failed", 0)
			return
		}
		if s.rs == nil {
			s.rs = new(router.Stream)
		}
		rs := s.rs
		rs.Req, rs.Resp, rs.Info = &s.req, &s.resp, &s.info
		rs.Route, rs.WC, rs.PickRef, rs.PickName, rs.Table = s.rt, s.wc, s.pickRef, s.pickName, s.table
		rs.Upgrade, rs.IsGRPC, rs.Local = s.upgrade, s.isGRPC, s.conn.tc.Local
		rs.OriginalDst = s.conn.tc.OriginalDst
		// spawn_upstream_span / start_child_span: each upstream request
		// (retries included) gets a client span of its own, whose context
		// goes upstream (Envoy's router spawns one per upstream request).
		if s.span != nil && s.cfg.tracing.SpawnUpstream() {
			rs.Attempts = s
		}
		rs.Forward(s.cfg.router, s)
		if s.upSpan != nil {
			status := 0
			if s.info.ResponseCodeDetails == "via_upstream" {
				status = s.resp.Status
			}
			s.EndAttempt(status)
		}
		if rs.Redirected {
			s.recreate()
		}
	}
}

// recreate runs an internally redirected request again, as Envoy's
// recreateStream: the route its new URL matches, the HTTP filters from
// the first and the router, with the request as the redirect left it —
// not sanitized again (Envoy's internally created stream is not) — and
// the same span and access log entry. The router's redirect count bounds
// the recursion (max_internal_redirects).
func (s *stream) recreate() {
	s.rs.Reset()
	s.resp.Reset()
	s.endFilters()
	s.resolveRoute()
	if len(s.cfg.filters) > 0 {
		s.startFilters()
		if !s.decodeFilters() {
			return
		}
	}
	s.router()
}

// done finishes the request: stats and access log.
func (s *stream) done() {
	s.endAccount()
	st := s.cfg.stats
	st.rqActive.Dec()
	st.rqCompleted.Inc()
	s.info.Done = s.info.Since()
	s.info.ResponseCode = s.resp.Status
	st.rqTime.Record(float64(s.info.Done.Microseconds()) / 1000)
	for _, l := range s.cfg.accessLogs {
		l.Log(&s.info)
	}
	if s.span != nil {
		s.cfg.tracing.FinishWith(s.span, &s.req, &s.info, s.tagContext())
		s.span = nil
	}
	s.endFilters()
}

// tagContext is what custom tags read of the stream beyond its stream
// info: the route's metadata and the route's own custom tags.
func (s *stream) tagContext() *tracing.TagContext {
	if s.rt == nil {
		return nil
	}
	rtc, _ := s.rt.Tracing.(*tracing.RouteTracing)
	if s.rt.Metadata == nil && rtc == nil {
		return nil
	}
	return &tracing.TagContext{RouteMetadata: s.rt.Metadata, Route: rtc}
}

// decodeHeaders validates and sanitizes the request head as Envoy's
// connection manager does. It returns a status and detail for a local
// reply when the request must be refused.
func (s *stream) decodeHeaders() (int, string) {
	c := s.cfg
	r := &s.req
	if s.info.Protocol == "HTTP/1.0" {
		if !c.acceptHTTP10 {
			return 426, "low_version"
		}
		if r.Authority == "" && c.defaultHostHTTP10 != "" {
			r.Authority = c.defaultHostHTTP10
		}
	}
	if r.Authority == "" {
		// A CONNECT needs its target too (RFC 9110 §9.3.6: authority-form
		// over HTTP/1.1, :authority over HTTP/2, RFC 9113 §8.5).
		return 400, "missing_host_header"
	}
	// RFC 9110 §4.2 and RFC 3986 §3.2: an authority is host[:port] — no
	// whitespace, "/", "?", "#" or userinfo ("@"); a lenient backend could
	// read another host out of one (as nginx, 400).
	if !validAuthority(r.Authority) {
		c.stats.rqInvalidAuthority.Inc()
		s.closeConn = true
		return 400, "invalid_authority"
	}
	if s.info.Protocol == "HTTP/2" || s.info.Protocol == "HTTP/3" {
		// RFC 9113 §8.2.1 and §8.3.1 (RFC 9114 §4.1.2, §4.3.1 for
		// HTTP/3): what becomes an HTTP/1 request line upstream must be
		// a token method and a target without whitespace or control
		// bytes, or one request could smuggle another.
		if !http1.IsToken(r.Method) {
			return 400, "http2.invalid.method"
		}
		if !validTarget(r.Path) {
			return 400, "http2.invalid.path"
		}
	}
	if c.underscores != corev3.HttpProtocolOptions_ALLOW {
		// headers_with_underscores_action, as Envoy: reject the request
		// (and close the connection) or drop the headers.
		bad := false
		r.Map.DelFunc(func(f headers.Field) bool {
			if !strings.Contains(f.Name, "_") {
				return false
			}
			bad = true
			if c.underscores == corev3.HttpProtocolOptions_DROP_HEADER {
				c.stats.droppedUnderscores.Inc()
				return true
			}
			return false
		})
		if bad && c.underscores == corev3.HttpProtocolOptions_REJECT_REQUEST {
			c.stats.rqRejectedUnderscores.Inc()
			s.closeConn = true
			return 400, "unexpected_underscore"
		}
	}
	if r.Method != "CONNECT" && (r.Path == "" || (r.Path[0] != '/' && !(r.Path == "*" && r.Method == "OPTIONS"))) {
		c.stats.rqNonRelativePath.Inc()
		return 404, "absolute_path_rejected"
	}
	// Path normalization, before routing.
	if c.escapedSlashes > 1 && hasEscapedSlash(r.Path) { // 1 is KEEP_UNCHANGED
		switch c.escapedSlashes {
		case 2: // REJECT_REQUEST
			c.stats.rqFailedPathNorm.Inc()
			return 400, "path_normalization_failed"
		case 3, 4: // UNESCAPE_AND_REDIRECT, UNESCAPE_AND_FORWARD
			p, _ := unescapeSlashes(r.Path)
			if c.escapedSlashes == 3 {
				c.stats.rqRedirectedPathNorm.Inc()
				s.resp.Set("location", p)
				return 307, "path_normalization_failed"
			}
			r.Path = p
		}
	}
	if c.normalizePath && r.Path != "" { // a CONNECT has no path to normalize
		p, ok := normalizePath(r.Path)
		if !ok {
			c.stats.rqFailedPathNorm.Inc()
			return 400, "path_normalization_failed"
		}
		r.Path = p
	}
	if c.mergeSlashes {
		r.Path = mergeSlashes(r.Path)
	}
	s.processHost()
	// Upgrades (WebSocket) arrive as Connection: upgrade + Upgrade. As in
	// Envoy, a CONNECT is the upgrade "CONNECT": upgrade_configs enable it
	// (else 403) and the upgrade stats count it.
	if r.Method == "CONNECT" {
		s.upgrade = "connect"
	} else if up := r.Get("upgrade"); up != "" && headers.HasToken(r.Get("connection"), "upgrade") {
		s.upgrade = strings.ToLower(up)
	}
	s.isGRPC = strings.HasPrefix(r.Map.Get("content-type"), "application/grpc")
	headers.StripHopByHop(&r.Map)
	s.remoteAddress()
	if c.schemeToSet != "" {
		// scheme_header_transformation.scheme_to_overwrite: Envoy's
		// mutateRequestHeaders sets both :scheme and x-forwarded-proto,
		// before the filters see the request.
		r.Scheme = c.schemeToSet
		r.Map.Set("x-forwarded-proto", c.schemeToSet)
	}
	s.clientCertHeader()
	if c.generateRequestID {
		if id := r.Map.Get("x-request-id"); id == "" || (s.external && !c.preserveExternalID && c.useRemoteAddress) {
			r.Map.Set("x-request-id", newRequestID())
		}
	}
	if c.via != "" {
		r.Map.Append("via", c.via)
	}
	if c.addUserAgent && c.nodeCluster != "" {
		// add_user_agent: the local service cluster and node, as Envoy.
		r.Map.Set("x-envoy-downstream-service-cluster", c.nodeCluster)
		r.Map.Set("x-envoy-downstream-service-node", c.nodeID)
		r.Map.SetDefault("user-agent", c.nodeCluster)
	}
	if r.Map.Has("expect") && !c.proxy100Continue {
		r.Map.Del("expect")
	}
	return 0, ""
}

// validAuthority reports whether a is a host[:port] (a reg-name, an IPv4
// address or a bracketed IPv6 literal, RFC 3986 §3.2.2).
func validAuthority(a string) bool {
	for i := 0; i < len(a); i++ {
		c := a[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:[]%", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validTarget reports whether a request target has no whitespace,
// control or non-ASCII bytes.
func validTarget(p string) bool {
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// processHost applies strip_*_host_port and strip_trailing_host_dot.
func (s *stream) processHost() {
	c := s.cfg
	a := s.req.Authority
	if c.stripTrailingDot {
		host, port := headers.SplitHostPort(a)
		if strings.HasSuffix(host, ".") {
			a = strings.TrimSuffix(host, ".") + port
		}
	}
	if c.stripAnyHostPort || c.stripMatchingPort {
		host, port := headers.SplitHostPort(a)
		if port != "" && (c.stripAnyHostPort || port[1:] == strconv.Itoa(int(s.conn.tc.Local.Port()))) {
			a = host
		}
	}
	s.req.Authority = a
}

// remoteAddress applies use_remote_address / xff_num_trusted_hops and sets
// x-forwarded-for, x-forwarded-proto, x-envoy-external-address and
// x-envoy-internal, sanitizing internal-only headers from external requests.
func (s *stream) remoteAddress() {
	c := s.cfg
	m := &s.req.Map
	xff := m.Joined("x-forwarded-for")
	var trusted netip.Addr
	if c.useRemoteAddress {
		if c.xffTrustedHops > 0 && xff != "" {
			trusted = lastXFF(xff, c.xffTrustedHops-1)
		}
		if !trusted.IsValid() {
			trusted = s.conn.tc.Remote.Addr().Unmap()
		}
		// A peer with no IP address (a pipe, an internal listener's
		// connection) is not appended, as Envoy's appendXff skips non-IP
		// addresses.
		if !c.skipXFFAppend && s.conn.tc.Remote.IsValid() {
			ra := s.conn.tc.Remote.Addr().Unmap().String()
			if xff == "" {
				m.Set("x-forwarded-for", ra)
			} else {
				m.Set("x-forwarded-for", xff+","+ra)
			}
		}
		m.Set("x-forwarded-proto", s.conn.scheme())
	} else {
		if xff != "" {
			trusted = lastXFF(xff, c.xffTrustedHops)
		}
		if !m.Has("x-forwarded-proto") {
			m.Set("x-forwarded-proto", s.conn.scheme())
		}
	}
	if trusted.IsValid() {
		s.info.DownstreamRemote = netip.AddrPortFrom(trusted, 0)
		if trusted == s.conn.tc.Remote.Addr().Unmap() {
			s.info.DownstreamRemote = s.conn.tc.Remote
		}
	}
	internal := false
	if c.useRemoteAddress {
		internal = c.isInternal(trusted)
	} else if xff != "" && !strings.Contains(xff, ",") {
		internal = c.isInternal(lastXFF(xff, 0))
	}
	s.external = !internal
	if c.useRemoteAddress && !internal {
		m.DelFunc(func(f headers.Field) bool { return internalOnlyHeaders[f.Name] })
		if trusted.IsValid() {
			m.Set("x-envoy-external-address", trusted.String())
		}
	} else if internal {
		m.Set("x-envoy-internal", "true")
	} else {
		m.Del("x-envoy-internal")
	}
}

// upgradeAllowed applies the route's and the connection manager's
// upgrade_configs to the request's upgrade type.
func (s *stream) upgradeAllowed() bool {
	if a := s.rt.Action; a != nil && a.Upgrades != nil {
		if en, ok := a.Upgrades[s.upgrade]; ok {
			return en && s.cfg.upgrades[s.upgrade] || en
		}
	}
	return s.cfg.upgrades[s.upgrade]
}

// directResponse answers from the route.
func (s *stream) directResponse(d *route.DirectResponseAction) {
	s.info.ResponseCodeDetails = "direct_response"
	status, body, ct := d.Status, d.Body, ""
	if lr := s.cfg.localReply; lr != nil {
		// Envoy sends direct responses as local replies, so
		// local_reply_config applies to them too.
		var b string
		status, b, ct = lr.rewrite(s, status, string(body))
		body = []byte(b)
	}
	s.resp.Status = status
	switch {
	case ct != "":
		s.resp.Set("content-type", ct)
	case len(body) > 0:
		s.resp.Set("content-type", "text/plain")
	}
	s.scratch = s.table.ApplyResponse(s.rt, nil, &s.resp.Map, &s.info, s.scratch)
	s.sendResponse(body)
}

// redirect answers with a redirect built from the route.
func (s *stream) redirect(ra *route.RedirectAction) {
	s.info.ResponseCodeDetails = "direct_response"
	s.resp.Status = ra.Status
	s.resp.Set("location", s.redirectURL(ra))
	s.scratch = s.table.ApplyResponse(s.rt, nil, &s.resp.Map, &s.info, s.scratch)
	s.sendResponse(nil)
}

func (s *stream) redirectToHTTPS() {
	s.resp.Status = 301
	s.resp.Set("location", "https://"+s.req.Authority+s.req.Path)
	s.info.ResponseCodeDetails = "direct_response"
	s.sendResponse(nil)
}

// sendResponse writes a complete locally generated response, through the
// encoder filters.
func (s *stream) sendResponse(body []byte) {
	s.finalizeResponseHeaders()
	s.cfg.stats.rqStatus.Inc(s.resp.Status)
	if s.req.Method == "HEAD" {
		body = nil
	}
	if err := s.encodeHead(int64(len(body)), len(body) == 0); err != nil {
		if !errors.Is(err, errReplaced) {
			s.info.SetFlag(streaminfo.DownstreamConnectionTermination)
		}
		return
	}
	if len(body) > 0 {
		if s.encodeBody(body) == nil {
			s.info.BytesSent += uint64(len(body))
		}
	}
	s.encodeFinish(nil)
	s.replied = true
	s.drainRequestBody()
}

// finalizeResponseHeaders adds the headers every response gets.
func (s *stream) finalizeResponseHeaders() {
	c := s.cfg
	m := &s.resp.Map
	switch c.serverTransform {
	case 0: // OVERWRITE
		m.Set("server", c.serverName)
	case 1: // APPEND_IF_ABSENT
		m.SetDefault("server", c.serverName)
	}
	// As Envoy's ActiveStream::encodeHeaders: an upstream's (or a cached
	// response's) Date is kept, one is added when absent (RFC 9110 §6.6.1),
	// so that caches downstream compute the response's age.
	m.SetDefault("date", httpDate())
	// Envoy's mutateResponseHeaders: always_set_request_id_in_response, or
	// a request (from an internal caller) with x-envoy-force-trace.
	if c.alwaysSetIDInResp || s.req.Map.Has("x-envoy-force-trace") {
		if id := s.req.Map.Get("x-request-id"); id != "" {
			m.Set("x-request-id", id)
		}
	}
	if s.conn.draining.Load() {
		s.closeConn = true
	}
}

// errRequestTimeout is the request_timeout expiring while the body is read.
var errRequestTimeout = router.ErrRequestTimeout

// drainRequestBody discards an unread request body so the connection can
// be reused; a large one closes the connection instead.
func (s *stream) drainRequestBody() {
	if s.bodyConsumed {
		return
	}
	s.bodyConsumed = true
	n := s.ds.bodyLength()
	if n == 0 || s.fm.bodyQEnd {
		return
	}
	if n < 0 || n > 64*1024 {
		s.closeConn = true
		return
	}
	buf := make([]byte, 4096)
	var total int64
	for {
		k, err := s.ds.readBody(buf)
		total += int64(k)
		if err != nil || total > 64*1024 {
			if err != io.EOF {
				s.closeConn = true
			}
			return
		}
	}
}

// localReply sends a response generated by the proxy, as Envoy's
// sendLocalReply: text/plain body, or for gRPC requests a trailers-only
// response with grpc-status and grpc-message.
func (s *stream) localReply(status int, body, detail string, flag streaminfo.Flag) {
	if s.replied {
		return // a filter already answered
	}
	if s.overloadWasReset() {
		return // as Envoy: the overload manager resets, it does not answer
	}
	if flag != 0 {
		s.info.SetFlag(flag)
	}
	s.info.ResponseCodeDetails = detail
	if s.fm.encoding && !s.fm.headSent {
		// As Envoy: a local reply while the response passes the encoder
		// filters replaces it, bypassing them; what the router was
		// relaying is then refused (errReplaced).
		s.fm.direct, s.fm.encoding = true, false
		s.respStarted = false
		defer func() { s.fm.replaced = true }()
	}
	if s.respStarted {
		// Too late for a response: reset the stream (close the connection).
		s.closeConn = true
		s.ds.finish(nil)
		s.replied = true
		return
	}
	keep := s.resp.Get("location")
	s.resp.Reset()
	if keep != "" {
		s.resp.Set("location", keep)
	}
	for _, h := range s.replyHeaders {
		if h.Append {
			s.resp.Add(h.Key, h.Value)
		} else {
			s.resp.Set(h.Key, h.Value)
		}
	}
	if flag == streaminfo.UpstreamOverflow && !s.cfg.suppressEnvoyHeaders {
		// As Envoy: the request was dropped by a circuit breaker.
		s.resp.Set("x-envoy-overloaded", "true")
	}
	if s.isGRPC {
		s.resp.Status = 200
		s.resp.Set("content-type", "application/grpc")
		gs := grpcStatusFor(status)
		if s.replyGRPCStatus != nil {
			gs = *s.replyGRPCStatus
		}
		s.resp.Set("grpc-status", strconv.Itoa(gs))
		if body != "" {
			s.resp.Set("grpc-message", grpcEncode(body))
		}
		s.info.ResponseCode = 200
		s.sendResponse(nil)
		return
	}
	ct := ""
	if lr := s.cfg.localReply; lr != nil {
		status, body, ct = lr.rewrite(s, status, body)
	}
	s.resp.Status = status
	s.info.ResponseCode = status
	switch {
	case ct != "":
		s.resp.Set("content-type", ct)
	case body != "" && s.resp.Get("content-type") == "":
		// As Envoy's sendLocalReply: text/plain unless the filter that
		// answered gave its own content-type.
		s.resp.Set("content-type", "text/plain")
	}
	if status >= 400 && (status == 400 || status == 408 || status == 413 || status == 431) {
		s.closeConn = true
	}
	s.sendResponse([]byte(body))
}

// grpcStatusFor maps an HTTP status to a gRPC status code, as Envoy does
// for local replies (grpc/status.cc).
func grpcStatusFor(status int) int {
	switch status {
	case 400:
		return 13 // INTERNAL
	case 401:
		return 16 // UNAUTHENTICATED
	case 403:
		return 7 // PERMISSION_DENIED
	case 404:
		return 12 // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}

// grpcEncode percent-encodes a grpc-message value.
func grpcEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteString("%" + strings.ToUpper(strconv.FormatInt(int64(c)|0x100, 16)[1:]))
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// redirectURL builds the Location of a redirect as Envoy's newUri.
func (s *stream) redirectURL(ra *route.RedirectAction) string {
	reqProto := s.req.Map.Get("x-forwarded-proto")
	if reqProto == "" {
		reqProto = s.conn.scheme()
	}
	scheme := ra.Scheme
	if scheme == "" {
		scheme = reqProto
	}
	host := ra.Host
	if host == "" {
		host = s.req.Authority
		if h, port := headers.SplitHostPort(host); port != "" {
			remove := ra.Port != ""
			if scheme != reqProto {
				remove = remove || (reqProto == "https" && port == ":443") || (reqProto == "http" && port == ":80")
			}
			if remove {
				host = h
			}
		}
	} else if ra.Port == "" {
		// A host_redirect keeps no port of the request.
	}
	if ra.Port != "" {
		h, _ := headers.SplitHostPort(host)
		host = h + ":" + ra.Port
	}
	path := s.req.Path
	origQuery := ""
	if i := strings.IndexByte(path, '?'); i >= 0 {
		origQuery = path[i:]
	}
	switch {
	case ra.Path != "":
		path = ra.Path
		if !strings.Contains(path, "?") {
			path += origQuery
		}
	case ra.PrefixRewrite != "" || ra.RegexRewrite != nil:
		path = s.rewriteRedirectPath(ra)
	}
	if ra.StripQuery {
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
	}
	return scheme + "://" + host + path
}

func (s *stream) rewriteRedirectPath(ra *route.RedirectAction) string {
	path := s.req.Path
	if ra.RegexRewrite != nil {
		p, q := path, ""
		if i := strings.IndexByte(path, '?'); i >= 0 {
			p, q = path[:i], path[i:]
		}
		return ra.RegexRewrite.ReplaceAllString(p, ra.RegexSubst) + q
	}
	// prefix_rewrite replaces the route's matched prefix.
	prefix := s.rt.MatchPrefix()
	if strings.HasPrefix(path, prefix) {
		return ra.PrefixRewrite + path[len(prefix):]
	}
	return path
}

var dateCache atomic.Pointer[dateEntry]

type dateEntry struct {
	sec int64
	s   string
}

// httpDate returns the current time in HTTP date format, cached per second.
func httpDate() string {
	now := time.Now()
	if e := dateCache.Load(); e != nil && e.sec == now.Unix() {
		return e.s
	}
	e := &dateEntry{sec: now.Unix(), s: now.UTC().Format(http1TimeFormat)}
	dateCache.Store(e)
	return e.s
}

const http1TimeFormat = "Mon, 02 Jan 2006 15:04:05 GMT"

// --- router.Downstream: the router's view of the stream ---

func (s *stream) ReadBody(p []byte) (int, error)          { return s.readBody(p) }
func (s *stream) BodyLength() int64                       { return s.bodyLength() }
func (s *stream) RequestTrailers() *headers.Map           { return s.ds.reqTrailers() }
func (s *stream) BodyConsumed()                           { s.bodyConsumed = true }
func (s *stream) DrainRequestBody()                       { s.drainRequestBody() }
func (s *stream) EncodeHead(length int64, end bool) error { return s.encodeHead(length, end) }
func (s *stream) EncodeBody(p []byte) error               { return s.encodeBody(p) }
func (s *stream) EncodeFlush() error                      { return s.encodeFlush() }
func (s *stream) EncodeFinish(t *headers.Map) error       { return s.encodeFinish(t) }
func (s *stream) FinalizeResponseHeaders()                { s.finalizeResponseHeaders() }
func (s *stream) ResponseStarted()                        { s.respStarted = true }
func (s *stream) CloseConnection()                        { s.closeConn = true }
func (s *stream) Context() context.Context                { return s.ds.context() }
func (s *stream) WatchClose(gone func()) func()           { return s.ds.watchClose(gone) }
func (s *stream) Flush() error                            { return s.ds.flush() }
func (s *stream) Hijack() (net.Conn, []byte, bool)        { return s.ds.hijack() }
func (s *stream) StartTunnel()                            { s.ds.startTunnel() }
func (s *stream) AbortRead()                              { s.ds.abortRead() }
func (s *stream) ClientGone() bool                        { return s.ds.clientGone() }

func (s *stream) LocalReply(status int, body, details string, flag streaminfo.Flag) {
	s.localReply(status, body, details, flag)
}

func (s *stream) SendLocalReply(status int, body string, r httpfilter.LocalReply) {
	s.replyHeaders = r.Headers
	s.replyGRPCStatus = r.GRPCStatus
	s.localReply(status, body, r.Details, r.Flag)
}

func (s *stream) WriteHead(status int, h *headers.Map, length int64, end bool) error {
	return s.ds.writeHead(status, h, length, end)
}

func (s *stream) ConnectionState(key any, create func() any) any {
	if v, ok := s.conn.bucketMap().Load(key); ok {
		return v
	}
	v, _ := s.conn.bucketMap().LoadOrStore(key, create())
	return v
}

// StartAttempt starts the span of an upstream request (router.AttemptObserver).
func (s *stream) StartAttempt() {
	s.upSpan = s.cfg.tracing.StartUpstream(s.span, &s.req, s.pickName)
}

// EndAttempt finishes the span of an upstream request with the status it
// got (0: none).
func (s *stream) EndAttempt(status int) {
	if s.upSpan != nil {
		s.cfg.tracing.FinishUpstream(s.upSpan, &s.req, &s.info, status, s.tagContext())
		s.upSpan = nil
	}
}
