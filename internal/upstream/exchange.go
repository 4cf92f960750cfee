package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/proxyproto"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// Request is what an Exchange sends to an upstream host. The caller owns
// it; an exchange reads it during Send only.
type Request struct {
	Method, Path, Authority string
	Headers                 *headers.Map
	// Scheme is the :scheme an HTTP/2 request carries ("" is http);
	// HTTP/1.1 does not send one.
	Scheme string
	// Body is the whole request body when Stream is nil, else what was read
	// of it before the exchange began (sent first).
	Body []byte
	// Stream is the rest of the body, read until io.EOF. An error from it
	// ends the exchange with FailSource wrapping that error.
	Stream io.Reader
	// Length is the total body length (Body and Stream) when known; -1
	// when it is not (HTTP/1.1 then sends it chunked).
	Length int64
	// Trailers, when set, returns the request trailers once Stream ended.
	Trailers func() *headers.Map
	// Upgrade, when set, is sent as Connection: upgrade (HTTP/1.1 only;
	// the Upgrade header itself is in Headers).
	Upgrade string
	// Deadline bounds the whole exchange (zero: none); IdleTimeout bounds
	// each wait for the upstream, restarting with every read of the
	// response body (HTTP/1.1; zero: none).
	Deadline    time.Time
	IdleTimeout time.Duration
	// Ctx cancels the exchange when done (the client's context); nil is
	// context.Background().
	Ctx context.Context
	// SNI selects the auto_sni connection pool ("" is the host's default).
	SNI string
	// ProxyProtocol is the downstream connection's PROXY protocol record,
	// for a cluster that sends PROXY headers (Cluster.SendsProxyProtocol;
	// HTTP/1.1 only); nil otherwise.
	ProxyProtocol *proxyproto.Data
	// FilterState is the request's filter state, which an
	// internal_upstream transport socket passes named objects of to the
	// internal listener (HTTP/1.1 connections; nil: none).
	FilterState map[string]streaminfo.FilterStateValue
}

// FailKind classifies why an exchange failed, in the terms the router's
// retry policy and response flags use.
type FailKind uint8

// Exchange failures.
const (
	// FailConnect: no connection could be made (UF).
	FailConnect FailKind = iota + 1
	// FailOverflow: the circuit breakers refused a connection (UO).
	FailOverflow
	// FailReset: the connection or stream was reset or closed (UC).
	FailReset
	// FailTimeout: Request.Deadline passed (UT).
	FailTimeout
	// FailIdle: Request.IdleTimeout passed first.
	FailIdle
	// FailProtocol: the upstream's response was malformed (UPE).
	FailProtocol
	// FailSource: reading Request.Stream failed (a downstream fault).
	FailSource
)

// ExchangeError is a failed exchange.
type ExchangeError struct {
	Kind FailKind
	Err  error
}

func (e *ExchangeError) Error() string { return "upstream exchange: " + e.Err.Error() }
func (e *ExchangeError) Unwrap() error { return e.Err }

// FailOf returns the kind of an exchange error (0 for nil or another error).
func FailOf(err error) FailKind {
	var ee *ExchangeError
	if errors.As(err, &ee) {
		return ee.Kind
	}
	return 0
}

// Exchange is one HTTP request and its response with an upstream host,
// over HTTP/1.1 (a pooled connection, or one the caller owns) or HTTP/2 (a
// stream on the host's multiplexed connection). The router, mirrors,
// upgrades, HTTP health checks and the async client all use it; none of
// them knows which protocol carries the request.
//
// Send writes the request and reads the response head; the body is then
// read from Body until io.EOF, and Close ends the exchange. Cancel may be
// called from any goroutine.
type Exchange interface {
	// Send writes req and reads the response head into head, skipping
	// informational responses other than 101.
	Send(req *Request, head *http1.ResponseHead) error
	// Body reads the response body (after Send).
	Body() io.Reader
	// Framing returns the response body's length (-1: unknown), whether
	// there is no body at all, and whether it arrives as a stream (so the
	// caller should flush as it reads).
	Framing(method string) (length int64, none, stream bool)
	// Trailers returns the response trailers once Body returned io.EOF
	// (nil: none).
	Trailers() *headers.Map
	// Reusable reports whether the connection may serve another request
	// once the body was read to its end (HTTP/1.1 keep-alive).
	Reusable() bool
	// Discard ends an exchange whose response is not wanted (a retry):
	// a small body is read so the connection can be reused.
	Discard()
	// Close ends the exchange; complete says the body was read to its end.
	Close(complete bool)
	// Cancel aborts the exchange in progress (the client left).
	Cancel()
	// Hijack takes the connection after a 101 response (HTTP/1.1 only):
	// the caller owns it and the bytes read past the head.
	Hijack() (net.Conn, []byte, bool)
	// Sent and Received count the bytes of request head written and of
	// response head read.
	Sent() int
	Received() int
}

// Open returns an exchange with host h of this cluster over proto (HTTP1
// or HTTP2); it connects on Send.
func (c *Cluster) Open(h *Host, proto Protocol) Exchange {
	if proto == HTTP2 {
		return &h2Exchange{cl: c, host: h, rt: c.roundTripH2}
	}
	if proto >= HTTP3 {
		return c.openH3(h, proto)
	}
	e := h1Exchanges.Get().(*h1Exchange)
	e.cl, e.host = c, h
	return e
}

// OpenConn returns an HTTP/1.1 exchange over a connection the caller owns
// (health checks); Close does not close it.
func OpenConn(conn net.Conn) Exchange {
	e := h1Exchanges.Get().(*h1Exchange)
	e.own = &ClientConn{Conn: conn, R: http1.NewReader(conn)}
	return e
}

// OpenH2 returns an HTTP/2 exchange with address addr through rt (health
// checks, which keep their own connections).
func OpenH2(rt http.RoundTripper, addr string) Exchange {
	return &h2Exchange{rt: rt.RoundTrip, addr: addr}
}

var aLongTimeAgo = time.Unix(1, 0)

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// sourceError is an error from Request.Stream (kept apart from the
// upstream connection's write errors).
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// --- HTTP/1.1 ---

var h1Exchanges = sync.Pool{New: func() any { return new(h1Exchange) }}

// h1Exchange is an exchange over an HTTP/1.1 connection from the host's
// pool (or one the caller owns).
type h1Exchange struct {
	cl   *Cluster
	host *Host
	own  *ClientConn
	cc   *ClientConn
	head *http1.ResponseHead
	body http1.BodyReader
	// deadline and idle bound the reads of the body (idleBound: idle, not
	// the deadline, is the nearer bound).
	deadline  time.Time
	idle      time.Duration
	idleBound bool
	sent, rcv int
	method    string
	// orca: the response head carried an ORCA load report (lb_cswrr.go),
	// so the trailers' is not read.
	orca bool

	mu        sync.Mutex
	live      bool // cc is in the middle of Send (Cancel may cut it)
	cancelled bool
}

func (e *h1Exchange) Send(req *Request, head *http1.ResponseHead) error {
	e.head, e.method, e.deadline, e.idle = head, req.Method, req.Deadline, req.IdleTimeout
	for try := 0; ; try++ {
		cc := e.own
		if cc == nil {
			var err error
			cc, err = e.cl.AcquireWith(req.Deadline, e.host, ConnOptions{SNI: req.SNI, ProxyProtocol: req.ProxyProtocol, FilterState: req.FilterState})
			if err != nil {
				switch {
				case errors.Is(err, ErrOverflow):
					return &ExchangeError{FailOverflow, err}
				case isTimeout(err) && !req.Deadline.IsZero() && !time.Now().Before(req.Deadline):
					return &ExchangeError{FailTimeout, err}
				}
				return &ExchangeError{FailConnect, err}
			}
		}
		e.cc = cc
		connDeadline, idleBound := req.Deadline, false
		if req.IdleTimeout > 0 {
			if d := time.Now().Add(req.IdleTimeout); connDeadline.IsZero() || d.Before(connDeadline) {
				connDeadline, idleBound = d, true
			}
		}
		if !connDeadline.IsZero() { // a released connection's deadline was cleared
			cc.Conn.SetDeadline(connDeadline)
		}
		e.idleBound = idleBound
		e.mu.Lock()
		e.live = true
		if e.cancelled {
			cc.Conn.SetDeadline(aLongTimeAgo) // cancelled before the exchange began
		}
		e.mu.Unlock()
		kind, err, gotBytes := e.exchange(req, cc)
		e.mu.Lock()
		e.live = false
		e.mu.Unlock()
		if kind == 0 {
			if e.cl != nil && e.cl.lb.cswrr != nil {
				e.orca = e.cl.observeOrca(e.host, &head.Headers)
			}
			return nil
		}
		if kind == FailTimeout && idleBound {
			kind = FailIdle
		}
		e.release(false)
		if kind == FailReset && cc.Reused() && !gotBytes && try == 0 && req.Stream == nil && e.own == nil {
			// A pooled connection the upstream closed while idle: the
			// request is replayed once on a fresh one, as Envoy does for a
			// connection that fails before any response byte.
			continue
		}
		return &ExchangeError{kind, err}
	}
}

// exchange writes the request and reads the response head; gotBytes
// reports whether response bytes arrived (a replay would not be safe).
func (e *h1Exchange) exchange(req *Request, cc *ClientConn) (FailKind, error, bool) {
	framing, length := http1.NoBody, int64(0)
	switch {
	case req.Stream != nil && req.Length >= 0:
		framing, length = http1.Length, req.Length
	case req.Stream != nil:
		framing, length = http1.Chunked, -1
	case len(req.Body) > 0:
		framing, length = http1.Length, int64(len(req.Body))
	}
	extra := ""
	if req.Upgrade != "" {
		extra = "upgrade"
	}
	w := http1.AppendRequestHead(cc.W[:0], req.Method, req.Path, req.Authority, req.Headers, framing, length, extra)
	if e.http1().properCase {
		http1.ProperCaseHead(w)
	}
	headLen := len(w)
	// A small whole body goes out with the head, in one write.
	inline := req.Stream == nil && len(w)+len(req.Body) <= 64*1024
	if inline {
		w = append(w, req.Body...)
	}
	cc.W = w
	if _, err := cc.Conn.Write(w); err != nil {
		return writeFail(err), err, false
	}
	e.sent += headLen
	if req.Stream == nil {
		if !inline {
			if _, err := cc.Conn.Write(req.Body); err != nil {
				return writeFail(err), err, false
			}
		}
		e.sent += len(req.Body)
	} else {
		if err := e.streamBody(req, cc, framing == http1.Chunked); err != nil {
			var se *sourceError
			if errors.As(err, &se) {
				return FailSource, se.err, false
			}
			return writeFail(err), err, false
		}
	}
	for {
		head, err := cc.R.Head(64 * 1024)
		if err != nil {
			switch {
			case isTimeout(err):
				return FailTimeout, err, cc.R.Buffered() > 0
			case errors.Is(err, http1.ErrHeadersTooLarge):
				return FailProtocol, err, true
			}
			return FailReset, err, cc.R.Buffered() > 0
		}
		e.head.Reset()
		if err := http1.ParseResponse(head, e.head, 0); err != nil {
			return FailProtocol, err, true
		}
		cc.R.Consume(len(head))
		e.rcv += len(head)
		if e.head.Status >= 100 && e.head.Status < 200 && e.head.Status != 101 {
			cc.R.EndMessage() // 100 Continue and other informational responses are dropped
			continue
		}
		fr, n := e.head.Framing(e.method)
		e.body.Reset(cc.R, fr, n)
		return 0, nil, true
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

// streamBody copies the request body to the connection.
func (e *h1Exchange) streamBody(req *Request, cc *ClientConn, chunked bool) error {
	write := func(p []byte) error {
		if len(p) == 0 {
			return nil
		}
		if chunked {
			cc.W = http1.AppendChunk(cc.W[:0], p)
			n, err := cc.Conn.Write(cc.W)
			e.sent += n
			return err
		}
		n, err := cc.Conn.Write(p)
		e.sent += n
		return err
	}
	if err := write(req.Body); err != nil {
		return err
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, err := req.Stream.Read(buf)
		if n > 0 {
			if werr := write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return &sourceError{err}
		}
	}
	if chunked {
		var tr *headers.Map
		if req.Trailers != nil && e.http1().trailers {
			// Envoy's HTTP/1 codec drops proxied trailers unless
			// enable_trailers is set.
			tr = req.Trailers()
		}
		cc.W = http1.AppendLastChunk(cc.W[:0], tr)
		if e.http1().properCase {
			http1.ProperCaseHead(cc.W)
		}
		n, err := cc.Conn.Write(cc.W)
		e.sent += n
		return err
	}
	return nil
}

func writeFail(err error) FailKind {
	if isTimeout(err) {
		return FailTimeout
	}
	return FailReset
}

func (e *h1Exchange) Body() io.Reader { return e }

// Read reads the response body; the idle timeout restarts with every read.
func (e *h1Exchange) Read(p []byte) (int, error) {
	if e.idle > 0 && e.idleBound {
		d := time.Now().Add(e.idle)
		if !e.deadline.IsZero() && e.deadline.Before(d) {
			d = e.deadline
		}
		e.cc.Conn.SetReadDeadline(d)
	}
	return e.body.Read(p)
}

func (e *h1Exchange) Framing(method string) (int64, bool, bool) {
	fr, n := e.head.Framing(method)
	switch fr {
	case http1.NoBody:
		if method == "HEAD" && e.head.ContentLength >= 0 {
			return e.head.ContentLength, true, false
		}
		return 0, true, false
	case http1.Length:
		return n, false, false
	}
	return -1, false, true
}

// http1 is the cluster's HTTP/1 codec options (none for an exchange
// without a cluster, such as a health check's).
func (e *h1Exchange) http1() http1Options {
	if e.cl == nil {
		return http1Options{}
	}
	return e.cl.http1
}

func (e *h1Exchange) Trailers() *headers.Map {
	if e.http1().trailers && e.body.Framing() == http1.Chunked && e.body.Trailers().Len() > 0 {
		return e.body.Trailers()
	}
	return nil
}

func (e *h1Exchange) Reusable() bool {
	fr, _ := e.head.Framing(e.method)
	return e.head.KeepAlive && fr != http1.ToClose
}

func (e *h1Exchange) Discard() {
	if e.cc == nil {
		e.Close(false)
		return
	}
	// Read a small body so the connection can be reused; else close it.
	fr, n := e.head.Framing(e.method)
	reusable := e.head.KeepAlive && (fr == http1.NoBody || (fr == http1.Length && n <= 16*1024))
	if reusable && fr == http1.Length {
		if _, err := io.Copy(io.Discard, &e.body); err != nil {
			reusable = false
		}
	}
	e.Close(reusable)
}

func (e *h1Exchange) Close(complete bool) {
	if complete && !e.orca && e.cl != nil && e.cl.lb.cswrr != nil {
		e.cl.observeOrca(e.host, e.Trailers())
	}
	e.release(complete && e.Reusable())
	e.cl, e.host, e.own, e.head, e.method = nil, nil, nil, nil, ""
	e.sent, e.rcv, e.cancelled, e.idleBound, e.orca = 0, 0, false, false, false
	h1Exchanges.Put(e)
}

// release gives the connection back (or closes it).
func (e *h1Exchange) release(reusable bool) {
	cc := e.cc
	if cc == nil {
		return
	}
	e.mu.Lock()
	e.cc = nil
	e.mu.Unlock()
	if e.own != nil {
		return // the caller's connection
	}
	cc.Conn.SetDeadline(time.Time{})
	e.cl.Release(cc, reusable)
}

func (e *h1Exchange) Cancel() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cancelled = true
	if e.live && e.cc != nil {
		e.cc.Conn.SetDeadline(aLongTimeAgo)
	}
}

func (e *h1Exchange) Hijack() (net.Conn, []byte, bool) {
	cc := e.cc
	if cc == nil || e.head.Status != 101 {
		return nil, nil, false
	}
	cc.Conn.SetDeadline(time.Time{})
	return cc.Conn, cc.R.BufferedBytes(), true
}

func (e *h1Exchange) Sent() int     { return e.sent }
func (e *h1Exchange) Received() int { return e.rcv }

// --- HTTP/2 ---

// h2Exchange is a stream on an HTTP/2 connection (x/net/http2's client).
type h2Exchange struct {
	cl     *Cluster
	host   *Host
	addr   string
	rt     func(*http.Request) (*http.Response, error)
	resp   *http.Response
	cancel context.CancelFunc
	method string
	tr     *headers.Map
	sent   int
	// orca: an ORCA load report was read (headers or trailers).
	orca bool

	mu        sync.Mutex
	cancelled bool
}

func (e *h2Exchange) Send(req *Request, head *http1.ResponseHead) error {
	parent := req.Ctx
	if parent == nil {
		parent = context.Background()
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if !req.Deadline.IsZero() {
		ctx, cancel = context.WithDeadline(parent, req.Deadline)
	} else {
		ctx, cancel = context.WithCancel(parent)
	}
	e.mu.Lock()
	e.cancel = cancel
	if e.cancelled {
		cancel()
	}
	e.mu.Unlock()
	addr := e.addr
	if e.host != nil {
		addr = e.host.Address
	}
	// x/net's HTTP/2 client sends the URL's scheme as :scheme.
	scheme := req.Scheme
	if scheme == "" {
		scheme = "http"
	}
	hr := &http.Request{
		Method:     req.Method,
		URL:        &url.URL{Scheme: scheme, Host: addr, Opaque: req.Path},
		Host:       req.Authority,
		Header:     make(http.Header, req.Headers.Len()),
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
	}
	if strings.HasPrefix(req.Path, "*") {
		hr.URL.Opaque = ""
		hr.URL.Path = "*"
	}
	for _, f := range req.Headers.Fields() {
		// RFC 9113 §8.2.2: TE may only carry "trailers" over HTTP/2.
		if f.Name == "te" && f.Value != "trailers" {
			continue
		}
		hr.Header[f.Name] = append(hr.Header[f.Name], f.Value)
		e.sent += len(f.Name) + len(f.Value)
	}
	switch {
	case req.Stream != nil:
		var r io.Reader = &sourceReader{req.Stream}
		if len(req.Body) > 0 {
			r = io.MultiReader(bytes.NewReader(req.Body), r)
		}
		hr.ContentLength = req.Length
		// Request trailers are announced so the transport sends them after
		// the body: x/net/http2 sends trailers only when some were
		// declared before the headers went out, so the names the request
		// declares in its Trailer field (RFC 9110 §6.6.2) are entered now
		// and the values copied in when the body ends.
		hr.Trailer = http.Header{}
		for _, v := range req.Headers.Values("trailer") {
			for _, name := range strings.Split(v, ",") {
				name = strings.TrimSpace(name)
				// The names a trailer may not carry (RFC 9110 §6.5.1), which
				// x/net refuses to send: a client must not be able to make
				// the upstream request fail with them.
				switch strings.ToLower(name) {
				case "", "content-length", "transfer-encoding", "trailer", "host", "connection", "te":
					continue
				}
				if http1.IsToken(name) {
					hr.Trailer[http.CanonicalHeaderKey(name)] = nil
				}
			}
		}
		// x/net writes the Trailer field from hr.Trailer itself.
		hr.Header.Del("Trailer")
		hr.Body = &trailerBody{r: r, get: req.Trailers, tr: hr.Trailer}
	case len(req.Body) > 0:
		hr.Body = io.NopCloser(bytes.NewReader(req.Body))
		hr.ContentLength = int64(len(req.Body))
	default:
		hr.Body = http.NoBody
	}
	e.method = req.Method
	resp, err := e.rt(hr.WithContext(ctx))
	if err != nil {
		cancel()
		var ce *ConnectError
		var se *sourceError
		switch {
		case errors.As(err, &se):
			return &ExchangeError{FailSource, se.err}
		case errors.As(err, &ce):
			return &ExchangeError{FailConnect, err}
		case ctx.Err() != nil || isTimeout(err):
			return &ExchangeError{FailTimeout, err}
		}
		return &ExchangeError{FailReset, err}
	}
	e.resp = resp
	head.Reset()
	head.Status = resp.StatusCode
	for k, vs := range resp.Header {
		lk := headers.Lower(k)
		for _, v := range vs {
			head.Headers.Add(lk, v)
		}
	}
	head.ContentLength = resp.ContentLength
	head.KeepAlive = true
	if e.cl != nil && e.cl.lb.cswrr != nil {
		e.orca = e.cl.observeOrca(e.host, &head.Headers)
	}
	return nil
}

// sourceReader marks errors of the request body source.
type sourceReader struct{ r io.Reader }

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		return n, &sourceError{err}
	}
	return n, err
}

// trailerBody copies the request trailers into the announced trailer map
// once the body ends.
type trailerBody struct {
	r   io.Reader
	get func() *headers.Map
	tr  http.Header
}

func (t *trailerBody) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err == io.EOF && t.get != nil {
		if rt := t.get(); rt != nil {
			for _, f := range rt.Fields() {
				switch f.Name {
				case "content-length", "transfer-encoding", "trailer", "host", "connection", "te":
					continue // never a trailer (RFC 9110 §6.5.1)
				}
				if f.Name == "" || f.Name[0] == ':' || !http1.IsToken(f.Name) {
					continue
				}
				k := http.CanonicalHeaderKey(f.Name)
				t.tr[k] = append(t.tr[k], f.Value)
			}
		}
	}
	return n, err
}

func (t *trailerBody) Close() error { return nil }

func (e *h2Exchange) Body() io.Reader { return e.resp.Body }

func (e *h2Exchange) Framing(method string) (int64, bool, bool) {
	length := e.resp.ContentLength
	if method == "HEAD" || e.resp.StatusCode == 204 || e.resp.StatusCode == 304 {
		if length < 0 {
			length = 0
		}
		return length, true, false
	}
	return length, length == 0 && len(e.resp.Trailer) == 0, length < 0
}

func (e *h2Exchange) Trailers() *headers.Map {
	if e.tr == nil && len(e.resp.Trailer) > 0 {
		var tm headers.Map
		for k, vs := range e.resp.Trailer {
			lk := headers.Lower(k)
			for _, v := range vs {
				tm.Add(lk, v)
			}
		}
		e.tr = &tm
	}
	return e.tr
}

func (e *h2Exchange) Reusable() bool { return true }
func (e *h2Exchange) Discard()       { e.Close(false) }

func (e *h2Exchange) Close(bool) {
	if e.resp != nil && !e.orca && e.cl != nil && e.cl.lb.cswrr != nil {
		// The trailers are there once the body was read to its end
		// (gRPC servers send their report in them).
		e.orca = true
		e.cl.observeOrca(e.host, e.Trailers())
	}
	if e.resp != nil {
		e.resp.Body.Close()
	}
	e.mu.Lock()
	if e.cancel != nil {
		e.cancel()
	}
	e.mu.Unlock()
}

func (e *h2Exchange) Cancel() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cancelled = true
	if e.cancel != nil {
		e.cancel()
	}
}

func (e *h2Exchange) Hijack() (net.Conn, []byte, bool) { return nil, nil, false }
func (e *h2Exchange) Sent() int                        { return e.sent }
func (e *h2Exchange) Received() int                    { return 0 }
