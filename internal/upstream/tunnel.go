package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	genericpool "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/generic/v3"
	httppool "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/http/v3"
	tcppool "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/tcp/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/proxyproto"
)

// This file is the upstream side of tunnels: a byte stream to a host that
// outlives any request timeout. Three kinds, as Envoy's:
//
//   - a raw TCP connection (DialTunnel): the router's TCP upstream
//     (envoy.upstreams.http.tcp), for a CONNECT the proxy terminates or a
//     POST relayed as TCP (connect_config);
//   - the payload of an HTTP/1.1 CONNECT or POST (OpenTunnel over HTTP1):
//     a connection of its own, given up when the tunnel ends;
//   - the payload of an HTTP/2 CONNECT (RFC 9113 §8.5) or POST stream
//     (OpenTunnel over HTTP2), multiplexed on the host's connection.
//
// The router uses them for CONNECT requests, tcp_proxy for its
// tunneling_config.

// TunnelRequest is the HTTP request that opens a tunnel.
type TunnelRequest struct {
	// Method is CONNECT or POST.
	Method string
	// Authority is the CONNECT target (host:port) or the POST's host.
	Authority string
	// Path is the POST's path; a CONNECT has none (RFC 9110 §9.3.6).
	Path string
	// Scheme is the POST's :scheme over HTTP/2 ("" is http, or https over
	// a TLS transport socket).
	Scheme string
	// Headers are the request's other header fields (nil: none).
	Headers *headers.Map
	// Deadline bounds connecting and the wait for the response head
	// (zero: none). The tunnel itself is never bounded by it.
	Deadline time.Time
	// SNI and ProxyProtocol select the connection (ConnOptions).
	SNI           string
	ProxyProtocol *proxyproto.Data
}

// Tunnel is a byte stream to an upstream host: what Read returns came from
// the host, what Write takes goes to it. Read and Write may be called from
// two goroutines at once; Close from any goroutine, also while they block.
type Tunnel struct {
	// Status and Header are the host's response to the HTTP request that
	// opened the tunnel (a TCP tunnel has none: Status is 0).
	Status int
	Header headers.Map
	// Proto is the protocol the request went over (TCP tunnels: HTTP1).
	Proto Protocol
	// LocalAddr is the upstream connection's local address.
	LocalAddr string
	// HeadSent and HeadReceived count the request head written and the
	// response head read, in bytes (0 over HTTP/2 and TCP).
	HeadSent, HeadReceived int

	r     io.Reader
	w     func([]byte) (int, error)
	cw    func() error
	close func()
	tr    func() *headers.Map

	once sync.Once
	wmu  sync.Mutex
	wend bool
}

// Read reads bytes from the host; io.EOF when it ended its side.
func (t *Tunnel) Read(p []byte) (int, error) { return t.r.Read(p) }

// Write sends p to the host.
func (t *Tunnel) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return t.w(p)
}

// CloseWrite ends the stream towards the host, keeping the other
// direction open: a TCP FIN (half-close), the last chunk of a chunked POST
// then a FIN, or HTTP/2 END_STREAM.
func (t *Tunnel) CloseWrite() error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.wend {
		return nil
	}
	t.wend = true
	return t.cw()
}

// Close ends the tunnel both ways at once (a reset when it is not over)
// and releases the connection or stream. It may be called more than once.
func (t *Tunnel) Close() { t.once.Do(t.close) }

// Trailers returns the host's response trailers once Read returned
// io.EOF (HTTP/2; nil otherwise).
func (t *Tunnel) Trailers() *headers.Map {
	if t.tr == nil {
		return nil
	}
	return t.tr()
}

// Accepted reports whether the response establishes the tunnel, as Envoy's
// tcp_proxy decides: any 2xx over HTTP/1.1 (RFC 9110 §9.3.6; the response's
// Content-Length and Transfer-Encoding are ignored), exactly 200 over
// HTTP/2 (HttpUpstream::isValidResponse). TCP tunnels are always accepted.
func (t *Tunnel) Accepted() bool {
	if t.Status == 0 {
		return true
	}
	if t.Proto == HTTP2 {
		return t.Status == 200
	}
	return t.Status >= 200 && t.Status < 300
}

// halfCloser is a connection whose writing side can be shut alone.
type halfCloser interface{ CloseWrite() error }

func closeWrite(c net.Conn) error {
	if hc, ok := c.(halfCloser); ok {
		return hc.CloseWrite()
	}
	return c.Close()
}

// dialFresh makes a new connection to h for a tunnel (never an idle pooled
// one: the tunnel consumes it), within the cluster's max_connections.
func (c *Cluster) dialFresh(deadline time.Time, h *Host, o ConnOptions) (*ClientConn, error) {
	if !c.canCreateConnection(h) {
		c.Stats.cxOverflow.Inc()
		if c.cx.Load() >= int64(c.breakers.maxConnections) {
			setOpen(c.breakers.gauges.cxOpen, true)
		}
		return nil, ErrOverflow
	}
	return c.dial(deadline, h, h.poolFor(c.poolKey(o)), o)
}

// connectFail maps a failure to get a connection to an ExchangeError.
func connectFail(err error, deadline time.Time) error {
	switch {
	case errors.Is(err, ErrOverflow):
		return &ExchangeError{FailOverflow, err}
	case isTimeout(err) && !deadline.IsZero() && !time.Now().Before(deadline):
		return &ExchangeError{FailTimeout, err}
	}
	return &ExchangeError{FailConnect, err}
}

// DialTunnel opens a raw TCP connection to h (over the cluster's transport
// socket): Envoy's TCP upstream of the router, which terminates a CONNECT
// (or a POST with allow_post) and relays its payload as TCP.
func (c *Cluster) DialTunnel(h *Host, deadline time.Time, o ConnOptions) (*Tunnel, error) {
	cc, err := c.dialFresh(deadline, h, o)
	if err != nil {
		return nil, connectFail(err, deadline)
	}
	t := &Tunnel{Proto: HTTP1, r: cc.Conn, w: cc.Conn.Write,
		cw: func() error { return closeWrite(cc.Conn) }, close: func() { c.Release(cc, false) }}
	if la := cc.Conn.LocalAddr(); la != nil {
		t.LocalAddr = la.String()
	}
	return t, nil
}

// OpenTunnel sends a CONNECT or POST to h over proto (HTTP1 or HTTP2) and
// reads the response head. The payload waits until then, as Envoy holds
// it until the upstream answers. Whatever the status, the tunnel is
// returned: Read then gives the body of a response that does not
// establish it (Accepted), to relay or discard.
func (c *Cluster) OpenTunnel(h *Host, proto Protocol, req *TunnelRequest) (*Tunnel, error) {
	if proto == HTTP2 {
		return c.openH2Tunnel(h, req)
	}
	return c.openH1Tunnel(h, req)
}

func (c *Cluster) openH1Tunnel(h *Host, req *TunnelRequest) (*Tunnel, error) {
	cc, err := c.dialFresh(req.Deadline, h, ConnOptions{SNI: req.SNI, ProxyProtocol: req.ProxyProtocol})
	if err != nil {
		return nil, connectFail(err, req.Deadline)
	}
	fail := func(kind FailKind, err error) (*Tunnel, error) {
		c.Release(cc, false)
		return nil, &ExchangeError{kind, err}
	}
	connect := req.Method == "CONNECT"
	hdrs := req.Headers
	if hdrs == nil {
		hdrs = &headers.Map{}
	}
	target, framing := req.Path, http1.Chunked
	if connect {
		// RFC 9110 §9.3.6: the request-target is the authority, and a
		// CONNECT has no content (no framing headers).
		target, framing = req.Authority, http1.NoBody
	} else if target == "" {
		target = "/"
	}
	// A POST's payload goes chunked, as Envoy's HTTP/1.1 codec sends a
	// body of unknown length.
	w := http1.AppendRequestHead(nil, req.Method, target, req.Authority, hdrs, framing, -1, "")
	if !req.Deadline.IsZero() {
		cc.Conn.SetDeadline(req.Deadline)
	}
	if _, err := cc.Conn.Write(w); err != nil {
		return fail(writeFail(err), err)
	}
	t := &Tunnel{Proto: HTTP1, HeadSent: len(w)}
	var head http1.ResponseHead
	for {
		raw, err := cc.R.Head(64 * 1024)
		if err != nil {
			switch {
			case isTimeout(err):
				return fail(FailTimeout, err)
			case errors.Is(err, http1.ErrHeadersTooLarge):
				return fail(FailProtocol, err)
			}
			return fail(FailReset, err)
		}
		head.Reset()
		if err := http1.ParseResponse(raw, &head, 0); err != nil {
			return fail(FailProtocol, err)
		}
		cc.R.Consume(len(raw))
		t.HeadReceived += len(raw)
		if head.Status >= 100 && head.Status < 200 {
			// Interim responses (100 Continue) are dropped; a 101 does not
			// answer a CONNECT or POST.
			cc.R.EndMessage()
			continue
		}
		break
	}
	cc.Conn.SetDeadline(time.Time{})
	t.Status = head.Status
	// The head's strings point into the connection's read buffer, which
	// the tunnel's bytes overwrite: the tunnel keeps copies.
	for _, f := range head.Headers.Fields() {
		t.Header.Add(strings.Clone(f.Name), strings.Clone(f.Value))
	}
	established := t.Status >= 200 && t.Status < 300
	switch {
	case connect && established:
		// The connection now carries the tunnel: what follows the head is
		// payload (RFC 9110 §9.3.6; Content-Length and Transfer-Encoding
		// of a 2xx to CONNECT are ignored).
		t.r = cc.R
	default:
		var body http1.BodyReader
		f, n := head.Framing(req.Method)
		body.Reset(cc.R, f, n)
		t.r = &body
	}
	conn := cc.Conn
	if connect {
		t.w = conn.Write
		t.cw = func() error { return closeWrite(conn) }
	} else {
		var cbuf []byte
		t.w = func(p []byte) (int, error) {
			cbuf = http1.AppendChunk(cbuf[:0], p)
			if _, err := conn.Write(cbuf); err != nil {
				return 0, err
			}
			return len(p), nil
		}
		t.cw = func() error {
			if _, err := conn.Write(http1.AppendLastChunk(nil, nil)); err != nil {
				return err
			}
			return closeWrite(conn)
		}
	}
	t.close = func() { c.Release(cc, false) }
	if la := conn.LocalAddr(); la != nil {
		t.LocalAddr = la.String()
	}
	return t, nil
}

// errTunnelClosed ends the payload of an HTTP/2 tunnel closed locally.
var errTunnelClosed = errors.New("upstream tunnel closed")

func (c *Cluster) openH2Tunnel(h *Host, req *TunnelRequest) (*Tunnel, error) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	scheme := req.Scheme
	if scheme == "" {
		scheme = "http"
		if secureTransport(c.transport) {
			scheme = "https"
		}
	}
	hr := &http.Request{
		Method:     req.Method,
		URL:        &url.URL{Scheme: scheme, Host: h.Address},
		Host:       req.Authority,
		Header:     http.Header{},
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		// RFC 9113 §8.5: a CONNECT's payload is the stream's DATA frames;
		// a POST's body is of unknown length, so no content-length.
		Body:          pr,
		ContentLength: -1,
	}
	if req.Method != "CONNECT" {
		p := req.Path
		if p == "" {
			p = "/"
		}
		hr.URL.Opaque = p
	}
	if req.Headers != nil {
		for _, f := range req.Headers.Fields() {
			if f.Name == "" || f.Name[0] == ':' || f.Name == "host" || f.Name == "content-length" {
				continue
			}
			hr.Header[f.Name] = append(hr.Header[f.Name], f.Value)
		}
	}
	var timer *time.Timer
	if !req.Deadline.IsZero() {
		// The deadline bounds the response head only: the stream lives on.
		timer = time.AfterFunc(time.Until(req.Deadline), cancel)
	}
	resp, err := c.roundTripH2(hr.WithContext(ctx))
	expired := timer != nil && !timer.Stop()
	if err != nil {
		cancel()
		pw.CloseWithError(errTunnelClosed)
		var ce *ConnectError
		switch {
		case errors.As(err, &ce):
			return nil, &ExchangeError{FailConnect, err}
		case expired || isTimeout(err):
			return nil, &ExchangeError{FailTimeout, err}
		}
		return nil, &ExchangeError{FailReset, err}
	}
	if expired {
		resp.Body.Close()
		cancel()
		pw.CloseWithError(errTunnelClosed)
		return nil, &ExchangeError{FailTimeout, context.DeadlineExceeded}
	}
	t := &Tunnel{Proto: HTTP2, Status: resp.StatusCode, r: resp.Body}
	for k, vs := range resp.Header {
		lk := headers.Lower(k)
		for _, v := range vs {
			t.Header.Add(lk, v)
		}
	}
	t.w = pw.Write
	t.cw = pw.Close
	t.close = func() {
		pw.CloseWithError(errTunnelClosed)
		resp.Body.Close()
		cancel()
	}
	t.tr = func() *headers.Map {
		if len(resp.Trailer) == 0 {
			return nil
		}
		var m headers.Map
		for k, vs := range resp.Trailer {
			lk := headers.Lower(k)
			for _, v := range vs {
				m.Add(lk, v)
			}
		}
		return &m
	}
	return t, nil
}

// UpstreamPool is how the router talks to a cluster's hosts: its
// upstream_config (Envoy's generic connection pool factories).
type UpstreamPool uint8

// Upstream pools.
const (
	// PoolGeneric (envoy.upstreams.http.generic, the default): HTTP, or
	// TCP for a CONNECT (or an allowed POST) whose route has a
	// connect_config.
	PoolGeneric UpstreamPool = iota
	// PoolHTTP (envoy.upstreams.http.http): always HTTP.
	PoolHTTP
	// PoolTCP (envoy.upstreams.http.tcp): always TCP — every request's
	// body is relayed as TCP, the response is a synthesized 200 and the
	// bytes the host sends.
	PoolTCP
)

func (p UpstreamPool) String() string {
	switch p {
	case PoolHTTP:
		return "envoy.upstreams.http.http"
	case PoolTCP:
		return "envoy.upstreams.http.tcp"
	}
	return "envoy.upstreams.http.generic"
}

func init() {
	for _, e := range []struct {
		name  string
		cfg   proto.Message
		pool  UpstreamPool
		notes string
	}{
		{"envoy.upstreams.http.generic", &genericpool.GenericConnectionPoolProto{}, PoolGeneric, "HTTP, or TCP for CONNECT (and POST with allow_post) on routes with a connect_config"},
		{"envoy.upstreams.http.http", &httppool.HttpConnectionPoolProto{}, PoolHTTP, ""},
		{"envoy.upstreams.http.tcp", &tcppool.TcpConnectionPoolProto{}, PoolTCP, "every request's body is relayed as TCP; the response is a synthesized 200 and what the host sends"},
	} {
		extension.Register(extension.Extension{Name: e.name, Category: extension.Upstreams, Config: e.cfg, Factory: e.pool, Notes: e.notes})
	}
}

// compileUpstreamConfig reads Cluster.upstream_config: the connection pool
// the router uses for the cluster.
func (c *Cluster) compileUpstreamConfig(tc *corev3.TypedExtensionConfig, path string) error {
	if tc == nil {
		return nil
	}
	if err := config.CheckFields(tc, path, "name", "typed_config"); err != nil {
		return err
	}
	r, err := extension.Lookup(extension.Upstreams, tc.GetTypedConfig(), config.Join(path, "typed_config"))
	if err != nil {
		return err
	}
	if err := config.CheckFields(r.Config, config.Join(path, "typed_config")); err != nil {
		return err
	}
	c.UpstreamPool = r.Ext.Factory.(UpstreamPool)
	return nil
}
