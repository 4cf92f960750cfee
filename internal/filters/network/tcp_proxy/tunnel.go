package tcp_proxy

import (
	"io"
	"net"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/format"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/proxyproto"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

// This file is tunneling_config: the downstream TCP connection is carried
// upstream as the payload of an HTTP request, as Envoy's HttpUpstream — an
// HTTP/1.1 CONNECT (RFC 9110 §9.3.6) when the cluster speaks HTTP/1.1, an
// HTTP/2 CONNECT (RFC 9113 §8.5) when it has http2_protocol_options, or a
// POST with use_post. Nothing is read from the downstream until the
// upstream answered and the tunnel is established (Envoy's rule: any 2xx
// over HTTP/1.1, 200 over HTTP/2); any other answer closes the downstream
// connection, flag UF, as Envoy's pool failure does.

// Filter-state keys of propagate_response_headers and _trailers (Envoy's).
const (
	ResponseHeadersKey  = "envoy.tcp_proxy.propagate_response_headers"
	ResponseTrailersKey = "envoy.tcp_proxy.propagate_response_trailers"
)

// tunnelLinger is how long the other direction of an HTTP/1.1 tunnel lives
// on once one side closed: HTTP/1.1 has no half-close, so Envoy closes the
// connection then; the grace lets what is in flight arrive.
const tunnelLinger = 2 * time.Second

// tunnelConfig is a compiled TcpProxy.TunnelingConfig.
type tunnelConfig struct {
	hostname *format.Formatter
	usePost  bool
	postPath string
	headers  []tunnelHeader
	// propagate* save the upstream's response headers and trailers in the
	// connection's filter state.
	propagateHeaders, propagateTrailers bool
}

// tunnelHeader is one headers_to_add entry.
type tunnelHeader struct {
	name   string
	value  *format.Formatter
	action corev3.HeaderValueOption_HeaderAppendAction
	keep   bool // keep_empty_value
}

func compileTunnel(tc *tcpv3.TcpProxy_TunnelingConfig, path string) (*tunnelConfig, error) {
	if err := config.CheckFields(tc, path, "hostname", "use_post", "headers_to_add", "propagate_response_headers",
		"post_path", "propagate_response_trailers"); err != nil {
		return nil, err
	}
	if tc.GetHostname() == "" {
		return nil, config.Errorf(config.Join(path, "hostname"), "a tunnel needs the hostname of its CONNECT (or POST) request")
	}
	host, err := format.CompileHeaderValue(tc.GetHostname())
	if err != nil {
		return nil, config.Errorf(config.Join(path, "hostname"), "%v", err)
	}
	t := &tunnelConfig{hostname: host, usePost: tc.GetUsePost(), postPath: tc.GetPostPath(),
		propagateHeaders: tc.GetPropagateResponseHeaders(), propagateTrailers: tc.GetPropagateResponseTrailers()}
	if t.postPath != "" && !t.usePost {
		// As Envoy: post_path without use_post is refused.
		return nil, config.Errorf(config.Join(path, "post_path"), "post_path needs use_post: true")
	}
	if t.postPath == "" {
		t.postPath = "/"
	}
	for i, h := range tc.GetHeadersToAdd() {
		hp := config.Index(config.Join(path, "headers_to_add"), i)
		if err := config.CheckFields(h, hp, "header", "append", "append_action", "keep_empty_value"); err != nil {
			return nil, err
		}
		if err := config.CheckFields(h.GetHeader(), config.Join(hp, "header"), "key", "value"); err != nil {
			return nil, err
		}
		name := headers.Lower(h.GetHeader().GetKey())
		if name == "" || name[0] == ':' || name == "host" {
			return nil, config.Errorf(config.Join(hp, "header.key"), "%q cannot be added to a tunnel's request (as Envoy: pseudo-headers and host are the request's own)", h.GetHeader().GetKey())
		}
		v, err := format.CompileHeaderValue(h.GetHeader().GetValue())
		if err != nil {
			return nil, config.Errorf(config.Join(hp, "header.value"), "%v", err)
		}
		action := h.GetAppendAction()
		if a := h.GetAppend(); a != nil && !a.GetValue() {
			action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		}
		t.headers = append(t.headers, tunnelHeader{name: name, value: v, action: action, keep: h.GetKeepEmptyValue()})
	}
	return t, nil
}

// request builds the tunnel's HTTP request for one connection.
func (t *tunnelConfig) request(info *streaminfo.Info) *upstream.TunnelRequest {
	req := &upstream.TunnelRequest{Method: "CONNECT", Authority: t.hostname.String(info), Headers: &headers.Map{}}
	if t.usePost {
		req.Method, req.Path = "POST", t.postPath
	}
	for _, h := range t.headers {
		v := h.value.String(info)
		if v == "" && !h.keep {
			continue
		}
		m := req.Headers
		switch h.action {
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			m.SetDefault(h.name, v)
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			m.Set(h.name, v)
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if m.Has(h.name) {
				m.Set(h.name, v)
			}
		default:
			m.Add(h.name, v)
		}
	}
	return req
}

// serveTunnel carries the connection through an HTTP tunnel to a host of
// cl, trying up to max_connect_attempts hosts.
func (c *tcpProxyConfig) serveTunnel(tc *listener.Conn, info *streaminfo.Info, cl *upstream.Cluster) {
	tn := c.tunnel
	proto := upstream.HTTP1
	if cl.Protocol == upstream.HTTP2 {
		proto = upstream.HTTP2
	}
	lb := &upstream.LBContext{OriginalDst: tc.OriginalDst}
	var t *upstream.Tunnel
	var host *upstream.Host
	for a := 0; a < max(c.maxAttempts, 1) && t == nil; a++ {
		h := cl.Pick(lb)
		if h == nil {
			info.SetFlag(streaminfo.NoHealthyUpstream)
			return
		}
		info.UpstreamHost = h.Address
		info.UpstreamRequestAttemptCount++
		req := tn.request(info)
		if c.idleTimeout > 0 {
			// Establishing the tunnel is bounded by the idle timeout too.
			req.Deadline = time.Now().Add(c.idleTimeout)
		}
		if cl.SendsProxyProtocol() {
			req.ProxyProtocol = proxyproto.Downstream(tc.FilterState, tc.Remote, tc.Local)
		}
		cl.Stats.RqTotal.Inc()
		h.HostStarted()
		nt, err := cl.OpenTunnel(h, proto, req)
		if err != nil {
			h.OutlierResult(upstream.ResultConnectFailed)
			h.HostFinished(false, upstream.FailOf(err) == upstream.FailTimeout)
			info.SetFlag(streaminfo.UpstreamConnectionFailure)
			continue
		}
		cl.Stats.ChargeCode(nt.Status)
		if !nt.Accepted() {
			// Envoy treats a response that does not establish the tunnel
			// as a failure to connect: the stream is reset, and the
			// downstream closed once no attempt is left.
			nt.Close()
			h.OutlierResult(upstream.ResultConnectFailed)
			h.HostFinished(false, false)
			info.SetFlag(streaminfo.UpstreamConnectionFailure)
			c.log.Debug("tcp_proxy tunnel refused", "cluster", cl.Name, "host", h.Address, "status", nt.Status)
			continue
		}
		t, host = nt, h
	}
	if t == nil {
		return
	}
	defer t.Close()
	info.UpstreamLocalAddress = t.LocalAddr
	if tn.propagateHeaders {
		setFilterState(info, ResponseHeadersKey, &headerObject{t.Header.Clone()})
	}
	sent, recv, idle := relay(tc.Conn, t, c.idleTimeout, proto == upstream.HTTP1)
	info.BytesReceived, info.BytesSent = sent, recv
	info.UpstreamBytesSent += uint64(t.HeadSent) + sent
	info.UpstreamBytesReceived += uint64(t.HeadReceived) + recv
	c.stats.rxBytes.Add(sent)
	c.stats.txBytes.Add(recv)
	if idle {
		c.stats.idleTimeout.Inc()
		info.SetFlag(streaminfo.StreamIdleTimeout)
	}
	if tn.propagateTrailers {
		if tr := t.Trailers(); tr != nil {
			setFilterState(info, ResponseTrailersKey, &headerObject{tr.Clone()})
		}
	}
	host.HostFinished(true, false)
}

func setFilterState(info *streaminfo.Info, key string, v streaminfo.FilterStateValue) {
	if info.FilterState == nil {
		info.FilterState = map[string]streaminfo.FilterStateValue{}
	}
	info.FilterState[key] = v
}

// headerObject is propagated response headers or trailers in filter
// state: %FILTER_STATE(key:FIELD:name)% reads one header, the typed form
// is an envoy.config.core.v3.HeaderMap.
type headerObject struct{ m headers.Map }

func (o *headerObject) String() string { return "" }

func (o *headerObject) Field(name string) (any, bool) {
	return o.m.Lookup(headers.Lower(name))
}

func (o *headerObject) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"headers":[`...)
	for i, f := range o.m.Fields() {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"key":`...)
		dst = streaminfo.AppendJSONString(dst, f.Name)
		dst = append(dst, `,"value":`...)
		dst = streaminfo.AppendJSONString(dst, f.Value)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

var aLongTimeAgo = time.Unix(1, 0)

// relay copies bytes between the downstream connection and the tunnel
// until both directions ended, the idle timeout passed (idle), or — over
// HTTP/1.1, which has no half-close — tunnelLinger after the first one
// ended. A FIN from the downstream ends the tunnel's request stream
// (END_STREAM, or a FIN on the HTTP/1.1 connection); the end of the
// upstream's stream is a FIN to the downstream. It returns the bytes
// sent downstream→upstream and upstream→downstream.
func relay(down net.Conn, t *upstream.Tunnel, idleTimeout time.Duration, h1 bool) (sent, recv uint64, idle bool) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	upDone, downDone := make(chan error, 1), make(chan error, 1)
	go func() { upDone <- pipe(down, t, &recv, &last, func() { closeWrite(down) }) }()
	go func() { downDone <- pipe(t, down, &sent, &last, func() { t.CloseWrite() }) }()
	var idleT *time.Timer
	var idleC <-chan time.Time
	if idleTimeout > 0 {
		idleT = time.NewTimer(idleTimeout)
		defer idleT.Stop()
		idleC = idleT.C
	}
	var lingerC <-chan time.Time
	aborted := false
	abort := func() {
		aborted = true
		t.Close()
		down.SetDeadline(aLongTimeAgo)
	}
	// Once the downstream half-closed, nothing reads it: a probe notices
	// the listener closing it (a drain's end), which ends the tunnel.
	probe := time.NewTicker(time.Second)
	defer probe.Stop()
	for ended := 0; ended < 2; {
		select {
		case <-probe.C:
			if downDone == nil && !aborted && down.SetReadDeadline(time.Time{}) != nil {
				abort()
			}
		case err := <-upDone:
			upDone = nil
			ended++
			if ended < 2 {
				if err != nil {
					abort()
				} else if h1 {
					lingerC = time.After(tunnelLinger)
				}
			}
		case err := <-downDone:
			downDone = nil
			ended++
			if ended < 2 {
				if err != nil {
					abort()
				} else if h1 {
					lingerC = time.After(tunnelLinger)
				}
			}
		case <-lingerC:
			lingerC = nil
			abort()
		case <-idleC:
			if since := time.Since(time.Unix(0, last.Load())); since < idleTimeout {
				idleT.Reset(idleTimeout - since)
				continue
			}
			idleC = nil
			idle = true
			abort()
		}
	}
	return sent, recv, idle
}

// pipe copies src to dst, counting into n and noting activity in last;
// at src's end it calls end (a half-close of dst). It returns nil when src
// ended cleanly.
func pipe(dst io.Writer, src io.Reader, n *uint64, last *atomic.Int64, end func()) error {
	buf := make([]byte, 32*1024)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			last.Store(time.Now().UnixNano())
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return werr
			}
			*n += uint64(k)
		}
		if err == io.EOF {
			end()
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// closeWrite half-closes a connection that can (TCP, TLS), else closes it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}
