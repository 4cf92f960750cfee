package hcm

import (
	"bytes"
	"context"
	"errors"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/overload"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/netx"
)

var h2Preface = listener.H2Preface

// serveHTTP runs the HTTP connection manager on a connection: it picks the
// codec (by ALPN, by the HTTP/2 preface for codec_type AUTO, or as
// configured) and serves requests until the connection ends — or, for an
// idle HTTP/1 connection, until it parks (h1idle.loop).
func serveHTTP(f *hcmFilter, tc *listener.Conn) {
	cfg, d := f.cfg, f.d
	conn := netx.Wrap(tc.Conn)
	cs := newConnState(tc)
	st := cfg.stats
	st.cxTotal.Inc()
	st.cxActive.Inc()
	// h1 is set once h1idle.loop owns the connection's end.
	h1 := false
	defer func() {
		if !h1 {
			connEnd(cfg, cs)
		}
	}()
	r := http1.NewReader(conn)
	useH2 := cfg.codec == codecHTTP2
	if cfg.codec == codecAuto {
		if a, ok := conn.(interface{ NegotiatedProtocol() string }); ok && a.NegotiatedProtocol() != "" {
			useH2 = a.NegotiatedProtocol() == "h2"
		} else {
			if cfg.idleTimeout > 0 {
				conn.SetReadDeadline(time.Now().Add(cfg.ov.Scale(overload.ConnIdle, cfg.idleTimeout)))
			}
			var err error
			useH2, err = sniffH2(r)
			if err != nil {
				return
			}
		}
	}
	if useH2 {
		st.cxHTTP2.Inc()
		st.cxHTTP2Active.Inc()
		defer st.cxHTTP2Active.Dec()
		conn.SetReadDeadline(time.Time{})
		pc := listener.NewPrefixConn(conn, r.BufferedBytes())
		f.h2.serve(pc, cs, d, tc)
		return
	}
	st.cxHTTP1.Inc()
	st.cxHTTP1Active.Inc()
	w := &h1idle{cfg: cfg, d: d, tc: tc, conn: conn, r: r, cs: cs}
	if _, ok := conn.(*netx.Conn); ok && cfg.parkDelay > 0 {
		// Only plain TCP connections park: a TLS connection's state (and
		// an HTTP/2 connection's, which x/net/http2 serves on its own
		// goroutines) lives on its goroutines, so they keep them.
		w.parker = netx.SharedParker()
	}
	tc.SetDrain(w.drain)
	h1 = true
	w.loop()
}

// connEnd is the connection manager's count of a connection that ended.
func connEnd(cfg *hcmConfig, cs *connState) {
	st := cfg.stats
	st.cxActive.Dec()
	st.cxDestroy.Inc()
	st.cxLengthMs.Record(float64(time.Since(cs.tc.Start).Milliseconds()))
}

// The park delay: how long an idle HTTP/1 keep-alive connection keeps its
// goroutine before it parks. It adapts per connection, between
// defaultParkDelay and maxParkDelay: a connection starts with the short
// one, and each time a request wakes it less than maxParkDelay after it
// parked (it was not idle after all) its delay doubles; a wake-up after
// longer puts it back to the short one.
//
// Measured (bench/cmd/idleconns, 5,000 connections opened in ~1.5 s and
// measured 1 s later): what an idle connection costs in RSS is mostly the
// stacks of the connections not yet parked, which the runtime does not
// give back for minutes — 10.5 KiB per connection with a fixed 1 s
// delay, 3.0 with 100 ms, 2.1 with 20 ms (the connection's own objects
// and the runtime's per-socket state are ~1.3 KiB of it). A park and
// wake-up costs ~8 µs of CPU (a goroutine start, its stack growing again,
// epoll_ctl): a connection reused within its delay — any busy one — never
// parks and pays nothing (the delay is the read deadline the idle wait
// sets anyway); one with steady traffic a little slower than that parks
// a few times, until its delay has grown past its requests' spacing; a
// truly idle one parks once per idle period. maxParkDelay bounds what a
// connection that was busy costs when it goes idle.
const (
	defaultParkDelay = 20 * time.Millisecond
	maxParkDelay     = time.Second
)

// parkDelayEnv overrides defaultParkDelay, for tests only (a Go duration;
// "off" never parks). It is no configuration: Envoy has no such knob.
const parkDelayEnv = "LEGATE_TEST_IDLE_PARK_DELAY"

// idleParkDelay is the park delay connection managers compile with.
func idleParkDelay() time.Duration {
	v := os.Getenv(parkDelayEnv)
	if v == "" {
		return defaultParkDelay
	}
	if v == "off" {
		return 0
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return d
	}
	return defaultParkDelay
}

// h1idle is what an HTTP/1 connection keeps while it waits for its next
// request: enough to honour the idle timeout, max_connection_duration
// and drains. Between requests the connection holds no h1conn (its
// stream and header maps go back to the pool) and no read buffer; once
// it has waited parkDelay it also gives up its goroutine: its socket
// waits in the parker (netx.Parker) and the listener's Conn.Resume starts
// a goroutine that continues loop when the parker wakes it (input, the
// peer closing, the idle deadline, or a drain).
type h1idle struct {
	cfg *hcmConfig
	d   *listener.Context
	tc  *listener.Conn
	// conn (tc.Conn with netx's I/O) and its reader r are nil while the
	// connection is parked: a parked connection keeps as little as it
	// can, and they are made again when it resumes.
	conn   net.Conn
	r      *http1.Reader
	cs     *connState
	parker *netx.Parker // where the connection parks; nil: it does not
	parked netx.Parked

	mu sync.Mutex
	// waiting: the connection's goroutine is reading for the next
	// request (a drain interrupts it by moving the read deadline).
	waiting bool
	// state is where the connection is in parking (idleActive while it
	// has a goroutine).
	state idleState
	// resumed says the wait continues after a park, with the same
	// deadline: the current wait's idle deadline (zero: none).
	resumed bool
	// parkShift doubles the park delay that many times (see
	// defaultParkDelay); parkedAt is when the connection last parked
	// (monotonic, since monoEpoch).
	parkShift uint8
	deadline  time.Time
	parkedAt  time.Duration
}

// monoEpoch is what parkedAt counts from.
var monoEpoch = time.Now()

// parkDelay is the connection's current park delay.
func (w *h1idle) parkDelay() time.Duration {
	return min(w.cfg.parkDelay<<w.parkShift, max(w.cfg.parkDelay, maxParkDelay))
}

// woken adapts the park delay to a request that woke the parked
// connection.
func (w *h1idle) woken() {
	if time.Since(monoEpoch)-w.parkedAt < maxParkDelay {
		if w.parkDelay() < maxParkDelay {
			w.parkShift++
		}
		return
	}
	w.parkShift = 0
}

type idleState uint8

const (
	// idleActive: the connection has its goroutine.
	idleActive idleState = iota
	// idleUnwinding: the goroutine is returning to the listener, which
	// then calls park.
	idleUnwinding
	// idleParked: in the parker, no goroutine.
	idleParked
)

// waitResult is how the wait for the next request ended.
type waitResult uint8

const (
	waitReady  waitResult = iota // the next request's first byte is buffered
	waitClose                    // the connection must close
	waitParked                   // the connection detached to park
)

// loop serves the connection's requests until it closes, or until it
// parks. It runs on the connection's goroutine: the listener's at first,
// then one that Conn.Resume starts after each park.
func (w *h1idle) loop() {
	parked := false
	defer func() {
		if !parked {
			w.end()
		}
	}()
	if w.r == nil {
		// Resumed after a park.
		w.conn = netx.Wrap(w.tc.Conn)
		w.r = http1.NewReader(w.conn)
	}
	for {
		switch w.wait() {
		case waitClose:
			return
		case waitParked:
			parked = true
			return
		}
		c := h1Pool.Get().(*h1conn)
		c.init(w.cfg, w.d, w.conn, w.r, w.cs)
		more := c.serve()
		c.release()
		h1Pool.Put(c)
		if !more {
			return
		}
	}
}

// end is the connection manager's end of an HTTP/1 connection (the
// listener's end follows when loop returns).
func (w *h1idle) end() {
	w.tc.SetDrain(nil)
	w.cfg.stats.cxHTTP1Active.Dec()
	connEnd(w.cfg, w.cs)
}

// idleDeadline is when an idle connection closes: the idle timeout from
// now, or the end of max_connection_duration if sooner (zero: never).
// now may be zero when there is no idle timeout.
func idleDeadline(cfg *hcmConfig, cs *connState, now time.Time) time.Time {
	var deadline time.Time
	if cfg.idleTimeout > 0 {
		// Timers are scaled by reduce_timeouts when armed, as Envoy's
		// scaled timers.
		deadline = now.Add(cfg.ov.Scale(overload.ConnIdle, cfg.idleTimeout))
	}
	if cfg.maxConnDuration > 0 {
		if end := cs.tc.Start.Add(cfg.ov.Scale(overload.ConnMax, cfg.maxConnDuration)); deadline.IsZero() || end.Before(deadline) {
			deadline = end
		}
	}
	return deadline
}

// wait returns waitReady once the next request's first byte is buffered,
// waitClose when the connection must close (idle timeout, drain, peer
// closed), or waitParked when it has waited parkDelay and detached from
// its goroutine (which must then return at once).
func (w *h1idle) wait() waitResult {
	if w.r.Buffered() > 0 {
		// Never parks with input buffered (a pipelined request).
		return waitReady
	}
	st := w.cfg.stats
	w.mu.Lock()
	if w.cs.draining.Load() {
		w.waiting = false
		w.mu.Unlock()
		st.cxDrainClose.Inc()
		return waitClose
	}
	var now time.Time
	if w.cfg.idleTimeout > 0 || w.parker != nil {
		now = time.Now()
	}
	fromPark := w.resumed
	if fromPark {
		// Back from the parker: the same wait goes on.
		w.resumed = false
	} else {
		w.deadline = idleDeadline(w.cfg, w.cs, now)
	}
	// The park delay is folded into the read deadline the wait sets
	// anyway: a connection whose next request comes sooner pays nothing.
	dl, parking := w.deadline, false
	if w.parker != nil {
		if pd := parkAt(now, w.parkDelay()); dl.IsZero() || pd.Before(dl) {
			dl, parking = pd, true
		}
	}
	w.waiting = true
	// Set under mu: a drain either saw waiting (and moves the deadline
	// after this) or is seen above.
	w.conn.SetReadDeadline(dl)
	w.mu.Unlock()
	_, err := w.r.Peek(1)
	w.mu.Lock()
	w.waiting = false
	if err == nil {
		if fromPark && w.parker != nil {
			w.woken()
		}
		w.mu.Unlock()
		return waitReady
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		w.mu.Unlock()
		return waitClose
	}
	if w.cs.draining.Load() {
		w.mu.Unlock()
		st.cxDrainClose.Inc()
		return waitClose
	}
	if parking {
		// Silent for parkDelay: give up the goroutine. The parker wakes
		// the connection at its idle deadline, if nothing comes first.
		if w.tc.Detach(w.park) {
			w.state = idleUnwinding
			w.mu.Unlock()
			return waitParked
		}
		// Not on a listener's goroutine: wait on this one, with a reader
		// that forgot the timeout.
		w.parker = nil
		w.resumed = true
		w.r = http1.NewReader(w.conn)
		w.mu.Unlock()
		return w.wait()
	}
	w.mu.Unlock()
	st.cxIdleTimeout.Inc()
	return waitClose
}

// parkAt is when a wait that starts at now parks: parkDelay later,
// rounded up to a multiple of a quarter of it, so that connections that
// go idle close together park together — in one wake-up of the runtime's
// poller rather than one each.
func parkAt(now time.Time, d time.Duration) time.Time {
	t := now.Add(d)
	if q := int64(d / 4); q > 0 {
		if r := t.UnixNano() % q; r > 0 {
			t = t.Add(time.Duration(q - r))
		}
	}
	return t
}

// park puts the detached connection in the parker; the listener calls it
// once the connection's goroutine has unwound. Should that fail (or a
// drain came meanwhile) the connection resumes at once, and does not try
// to park again.
func (w *h1idle) park() {
	w.mu.Lock()
	// Its reader's sticky timeout goes with it.
	w.conn, w.r = nil, nil
	if !w.cs.draining.Load() {
		err := errors.ErrUnsupported
		if sc, ok := w.tc.Conn.(syscall.Conn); ok {
			var rc syscall.RawConn
			if rc, err = sc.SyscallConn(); err == nil {
				err = w.parker.Park(rc, &w.parked, w.deadline, w)
			}
		}
		if err == nil {
			w.state, w.parkedAt = idleParked, time.Since(monoEpoch)
			w.mu.Unlock()
			return
		}
		w.d.Log.Debug("cannot park an idle connection; it keeps its goroutine", "remote", w.cs.tc.Remote.String(), "error", err)
		w.parker = nil
	}
	w.state, w.resumed = idleActive, true
	w.mu.Unlock()
	w.tc.Resume(w.loop)
}

// Wake is the parker's call (netx.Waker): the parked connection's socket
// is readable or closed, its deadline passed, or a drain woke it. A new
// goroutine continues the wait, which finds out which.
func (w *h1idle) Wake() {
	w.mu.Lock()
	w.state, w.resumed = idleActive, true
	w.mu.Unlock()
	w.tc.Resume(w.loop)
}

// drain asks the connection to close after the current request, and wakes
// it if it is waiting for one (on its goroutine or in the parker).
func (w *h1idle) drain() {
	w.cs.draining.Store(true)
	w.mu.Lock()
	if w.waiting {
		w.conn.SetReadDeadline(time.Now())
	}
	parked, p := w.state == idleParked, w.parker
	w.mu.Unlock()
	if parked {
		p.Wake(&w.parked)
	}
}

// sniffH2 reads until it can tell whether the connection starts with the
// HTTP/2 client preface.
func sniffH2(r *http1.Reader) (bool, error) {
	for {
		b, err := r.Peek(len(h2Preface))
		if err != nil {
			return false, err
		}
		if !bytes.HasPrefix(h2Preface, b) {
			return false, nil
		}
		if len(b) == len(h2Preface) {
			return true, nil
		}
		if r.Buffered() >= len(h2Preface) {
			return bytes.Equal(b, h2Preface), nil
		}
		// A prefix of the preface so far: wait for more bytes.
		if err := r.ReadMore(); err != nil {
			return false, err
		}
	}
}

// h1conn serves HTTP/1.1 requests on one downstream connection. It is
// the downstream codec of its (single, reused) stream.
type h1conn struct {
	cfg  *hcmConfig
	d    *listener.Context
	conn net.Conn
	r    *http1.Reader
	cs   *connState
	st   stream
	head http1.RequestHead
	body http1.BodyReader

	w          []byte
	chunked    bool
	headOnly   bool
	closeAfter bool
	hijacked   bool
	// tunnel is set once a 2xx answered a CONNECT: the response body is
	// the tunnel's raw bytes.
	tunnel   bool
	writeErr error
	// readDeadline is the request_timeout deadline for reading the body.
	readDeadline time.Time

	// The close watcher (see watchClose): a per-connection timer that,
	// once a request has waited watchDelay for its upstream, reads the
	// connection in the background to notice the client closing.
	watchMu    sync.Mutex
	watchState uint8
	watchTimer *time.Timer
	// stopFn is c.stopWatch, made once per pooled h1conn (a method value
	// is a closure allocated at each evaluation).
	stopFn    func()
	watchDone chan struct{}
	watchGone func()
	pending   []byte // bytes of a pipelined next request the watcher read
	// ctx is the request's context, made on first use and cancelled when
	// the client goes (ctxGone).
	ctx     context.Context
	cancel  context.CancelFunc
	ctxGone bool
}

const (
	watchIdle uint8 = iota
	watchArmed
	watchRunning
)

// watchDelay is how long a request waits for its upstream before its
// connection is watched for the client closing: fast requests never pay
// for the background read.
const watchDelay = 10 * time.Millisecond

// aLongTimeAgo interrupts a blocked read (net/http uses the same trick).
var aLongTimeAgo = time.Unix(1, 0)

var h1Pool = sync.Pool{New: func() any { return &h1conn{} }}

func (c *h1conn) init(cfg *hcmConfig, d *listener.Context, conn net.Conn, r *http1.Reader, cs *connState) {
	c.cfg, c.d, c.conn, c.r, c.cs = cfg, d, conn, r, cs
	c.st.cfg, c.st.conn, c.st.ds, c.st.d = cfg, cs, c, d
	c.hijacked, c.writeErr, c.closeAfter, c.tunnel = false, nil, false, false
}

func (c *h1conn) release() {
	// The timer stays with the pooled h1conn (its function is this
	// h1conn's watchRead, which does nothing unless a request armed it):
	// a new one per request was an allocation each.
	if c.watchTimer != nil {
		c.watchTimer.Stop()
	}
	c.r.Release()
	c.st.reset()
	c.st.cfg, c.st.conn, c.st.ds, c.st.d = nil, nil, nil, nil
	if cap(c.w) > 64*1024 {
		c.w = nil
	}
	c.w = c.w[:0]
	c.cfg, c.d, c.conn, c.r, c.cs = nil, nil, nil, nil, nil
}

// serve reads and serves requests while input is buffered (the first
// byte of a request is buffered when it is called). It returns true when
// the connection stays open to wait for its next request, false when it
// must close.
func (c *h1conn) serve() bool {
	cfg := c.cfg
	st := cfg.stats
	for {
		reqStart := time.Now()
		deadline := idleDeadline(cfg, c.cs, reqStart)
		c.conn.SetReadDeadline(deadline)
		if cfg.requestHeadersTimeout > 0 {
			// request_headers_timeout runs from the request's first byte,
			// which is here.
			hd := reqStart.Add(cfg.requestHeadersTimeout)
			if deadline.IsZero() || hd.Before(deadline) {
				c.conn.SetReadDeadline(hd)
			}
		}
		raw, err := c.r.Head(cfg.maxHeaderBytes)
		if err != nil {
			c.readError(err)
			return false
		}
		st.cxRxBytes.Add(uint64(len(raw)))
		c.head.Reset()
		c.head.Minor = 1
		if err := http1.ParseRequest(raw, &c.head, cfg.maxHeadersCount); err != nil {
			c.protocolError(err)
			return false
		}
		c.r.Consume(len(raw))
		if c.head.Method == "CONNECT" && (c.head.Chunked || c.head.ContentLength > 0) {
			// RFC 9110 §9.3.6: content on a CONNECT has no defined
			// semantics; Envoy's codec refuses it.
			detail := "http1.body_disallowed"
			if c.head.Chunked {
				detail = "http1.invalid_transfer_encoding"
			}
			c.protocolError(&http1.ProtocolError{Status: 400, Detail: detail})
			return false
		}
		st.rqHTTP1.Inc()
		var dl time.Time
		if cfg.streamIdleTimeout > 0 {
			dl = time.Now().Add(cfg.ov.Scale(overload.StreamIdle, cfg.streamIdleTimeout))
		}
		c.readDeadline = time.Time{}
		if cfg.requestTimeout > 0 {
			// request_timeout bounds receiving the whole request.
			c.readDeadline = reqStart.Add(cfg.requestTimeout)
			if dl.IsZero() || c.readDeadline.Before(dl) {
				c.conn.SetReadDeadline(c.readDeadline)
				c.conn.SetWriteDeadline(dl)
				dl = time.Time{}
			}
		}
		if !dl.IsZero() || cfg.requestTimeout == 0 {
			c.conn.SetDeadline(dl)
		}
		closeConn := c.serveOne()
		c.r.EndMessage()
		c.endRequest()
		if closeConn {
			return false
		}
		if c.r.Buffered() == 0 {
			c.r.Release()
			return true
		}
	}
}

// serveOne serves the parsed request and reports whether the connection
// must close.
func (c *h1conn) serveOne() bool {
	h := &c.head
	s := &c.st
	s.reset()
	s.req.Method, s.req.Path, s.req.Authority = h.Method, h.Path, h.Authority
	s.req.Scheme = c.cs.scheme()
	s.req.Map.CopyFrom(&h.Headers)
	f, n := h.Framing()
	if h.Method == "CONNECT" {
		// What follows a CONNECT's head is the tunnel's payload, until the
		// connection closes (Envoy's codec hands it on as the body).
		f, n = http1.ToClose, -1
	}
	c.body.Reset(c.r, f, n)
	c.chunked, c.headOnly = false, h.Method == "HEAD"
	c.closeAfter = !h.KeepAlive
	if h.Expect100 && f != http1.NoBody && !c.cfg.proxy100Continue {
		c.w = append(c.w, "HTTP/1.1 100 Continue\r\n\r\n"...)
		c.flush()
	}
	s.serve()
	if !s.bodyConsumed && !c.body.Done() {
		s.drainRequestBody()
	}
	if !c.body.Done() {
		s.closeConn = true
	}
	return c.hijacked || c.writeErr != nil || s.closeConn || c.closeAfter
}

// readError handles a failure to read a request head.
func (c *h1conn) readError(err error) {
	st := c.cfg.stats
	switch {
	case errors.Is(err, http1.ErrHeadersTooLarge):
		c.head.Reset()
		c.head.Minor = 1
		st.cxHeadersTooLarge.Inc()
		c.rawReply(431, "http1.headers_too_large")
	case errors.Is(err, os.ErrDeadlineExceeded):
		if c.cs.draining.Load() {
			st.cxDrainClose.Inc()
			return
		}
		if c.r.Buffered() > 0 {
			c.head.Reset()
			c.head.Minor = 1
			st.rqHeadersTimeout.Inc()
			c.rawReply(408, "request_header_timeout")
			return
		}
		st.cxIdleTimeout.Inc()
	case errors.Is(err, io.ErrUnexpectedEOF):
		st.rqRxReset.Inc()
	}
}

// protocolError answers a malformed request and closes.
func (c *h1conn) protocolError(err error) {
	st := c.cfg.stats
	st.cxProtocolError.Inc()
	var pe *http1.ProtocolError
	status, detail := 400, "http1.codec_error"
	if errors.As(err, &pe) {
		status, detail = pe.Status, pe.Detail
	}
	if status == 431 {
		st.cxHeadersTooLarge.Inc()
	}
	c.d.Log.Debug("rejected malformed HTTP/1 request", "remote", c.cs.tc.Remote.String(), "status", status, "detail", detail)
	c.rawReply(status, detail)
}

// rawReply answers a request that could not be parsed (so no stream
// exists): a local reply with connection: close, counted and logged.
func (c *h1conn) rawReply(status int, detail string) {
	s := &c.st
	s.reset()
	s.info.StartTime = time.Now()
	s.info.Protocol = "HTTP/1.1"
	s.info.Request = &s.req
	s.info.Response = &s.resp
	s.info.DownstreamRemote = c.cs.tc.Remote
	s.info.DownstreamDirectRemote = c.cs.directRemote()
	s.info.DownstreamConnRemote = c.cs.tc.Remote
	s.info.DownstreamLocal = c.cs.tc.Local
	c.cfg.stats.rqTotal.Inc()
	c.cfg.stats.rqActive.Inc()
	s.resp.Status = status
	s.info.ResponseCodeDetails = detail
	s.closeConn = true
	s.bodyConsumed = true
	c.closeAfter = true
	s.finalizeResponseHeaders()
	c.cfg.stats.rqStatus.Inc(status)
	c.writeHead(status, &s.resp.Map, 0, true)
	c.finish(nil)
	s.done()
}

// --- downstream implementation ---

func (c *h1conn) readBody(p []byte) (int, error) {
	n, err := c.body.Read(p)
	if err != nil && !c.readDeadline.IsZero() && errors.Is(err, os.ErrDeadlineExceeded) {
		c.cfg.stats.rqTimeout.Inc()
		return n, errRequestTimeout
	}
	return n, err
}

func (c *h1conn) bodyLength() int64 {
	switch c.body.Framing() {
	case http1.NoBody:
		return 0
	case http1.Length:
		if c.body.Done() {
			return 0
		}
		return c.body.Remaining()
	}
	if c.body.Done() {
		return 0
	}
	return -1
}

// reqTrailers returns the request's trailers. Without
// http_protocol_options.enable_trailers Envoy's HTTP/1 codec drops them,
// so this does too.
func (c *h1conn) reqTrailers() *headers.Map {
	t := c.body.Trailers()
	if !c.cfg.enableTrailers && t != nil {
		t.Reset()
	}
	return t
}

func (c *h1conn) context() context.Context {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	if c.ctx == nil {
		c.ctx, c.cancel = context.WithCancel(context.Background())
		if c.ctxGone {
			c.cancel()
		}
	}
	return c.ctx
}

// watchClose arms the close watcher for the current request. It only
// runs once the request body has been read and nothing else is buffered
// (a pipelined request already proves the client is there).
func (c *h1conn) watchClose(gone func()) func() {
	if !c.body.Done() || c.r.Buffered() > 0 || c.hijacked {
		return noStop
	}
	c.watchMu.Lock()
	c.watchGone = gone
	c.watchState = watchArmed
	if c.watchTimer == nil {
		c.watchTimer = time.AfterFunc(watchDelay, c.watchRead)
	} else {
		c.watchTimer.Reset(watchDelay)
	}
	c.watchMu.Unlock()
	if c.stopFn == nil {
		c.stopFn = c.stopWatch
	}
	return c.stopFn
}

// watchRead runs on the timer's goroutine: a blocking read that ends
// with the client's bytes (a pipelined request, kept for later), its
// close, or stopWatch interrupting it.
func (c *h1conn) watchRead() {
	c.watchMu.Lock()
	if c.watchState != watchArmed {
		c.watchMu.Unlock()
		return
	}
	c.watchState = watchRunning
	done := make(chan struct{})
	c.watchDone = done
	conn, gone := c.conn, c.watchGone
	c.watchMu.Unlock()
	defer close(done)
	var b [1]byte
	n, err := conn.Read(b[:])
	if n > 0 {
		c.watchMu.Lock()
		c.pending = append(c.pending[:0], b[0])
		c.watchMu.Unlock()
		return
	}
	if err != nil && !isTimeout(err) {
		// The client closed (or reset) the connection mid-request.
		c.watchMu.Lock()
		c.ctxGone = true
		if c.cancel != nil {
			c.cancel()
		}
		c.watchMu.Unlock()
		gone()
	}
}

// stopWatch disarms the watcher, interrupting a read in progress.
func (c *h1conn) stopWatch() {
	c.watchMu.Lock()
	switch c.watchState {
	case watchArmed:
		c.watchTimer.Stop()
	case watchRunning:
		done := c.watchDone
		c.watchMu.Unlock()
		c.conn.SetReadDeadline(aLongTimeAgo)
		<-done
		c.conn.SetReadDeadline(time.Time{})
		c.watchMu.Lock()
	}
	c.watchState, c.watchGone = watchIdle, nil
	c.watchMu.Unlock()
}

// endRequest resets the per-request watcher state; a byte the watcher
// read goes back in front of the input.
func (c *h1conn) endRequest() {
	c.watchMu.Lock()
	if c.cancel != nil {
		c.cancel()
	}
	c.ctx, c.cancel, c.ctxGone = nil, nil, false
	pending := c.pending
	c.pending = c.pending[:0]
	c.watchMu.Unlock()
	if len(pending) > 0 {
		c.r.Inject(pending)
	}
}

func (c *h1conn) protocol() string {
	if c.head.Minor == 0 {
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}

func (c *h1conn) writeHead(status int, h *headers.Map, length int64, endStream bool) error {
	if c.writeErr != nil {
		return c.writeErr
	}
	// header_key_format proper_case_words: the head is serialized as
	// usual, then its names are re-cased in place (before any flush).
	start := len(c.w)
	closeConn := c.closeAfter || c.st.closeConn || c.cs.draining.Load()
	var f http1.Framing
	switch {
	case status < 200 || status == 204 || status == 304:
		f = http1.NoBody
	case length >= 0:
		f = http1.Length
	case c.respMinor() == 0:
		f = http1.ToClose
		closeConn = true
	default:
		f = http1.Chunked
		c.chunked = true
	}
	if status == 101 {
		c.w = http1.AppendUpgradeResponseHead(c.w, h, c.st.upgrade)
		c.properCase(start)
		return nil
	}
	if c.head.Method == "CONNECT" && status >= 200 && status < 300 {
		// RFC 9110 §9.3.6: a 2xx to CONNECT has no framing: the bytes that
		// follow are the tunnel's, and the connection serves nothing after.
		c.tunnel, c.chunked, c.closeAfter = true, false, true
		c.w = http1.AppendResponseHead(c.w, 1, status, h, http1.NoBody, 0, false)
		c.properCase(start)
		if endStream {
			return c.flush()
		}
		return nil
	}
	if closeConn {
		c.closeAfter = true
	}
	c.w = http1.AppendResponseHead(c.w, c.respMinor(), status, h, f, length, closeConn)
	c.properCase(start)
	if endStream && !c.chunked {
		return c.flush()
	}
	return nil
}

func (c *h1conn) writeBody(p []byte) error {
	if c.writeErr != nil {
		return c.writeErr
	}
	if c.headOnly {
		return nil
	}
	if c.chunked {
		c.w = http1.AppendChunkHeader(c.w, len(p))
	}
	if len(c.w)+len(p) > 64*1024 && len(p) > 16*1024 {
		// Large body: send what is pending, then the data straight.
		if err := c.flush(); err != nil {
			return err
		}
		if _, err := c.conn.Write(p); err != nil {
			c.writeErr = err
			return err
		}
		c.cfg.stats.cxTxBytes.Add(uint64(len(p)))
	} else {
		c.w = append(c.w, p...)
	}
	if c.chunked {
		c.w = append(c.w, "\r\n"...)
	}
	if len(c.w) >= 32*1024 {
		return c.flush()
	}
	return nil
}

// properCase re-cases the head written from c.w[start:] when
// header_key_format asks for proper_case_words.
func (c *h1conn) properCase(start int) {
	if c.cfg.properCaseHeaders {
		http1.ProperCaseHead(c.w[start:])
	}
}

func (c *h1conn) finish(trailers *headers.Map) error {
	if c.chunked && !c.headOnly {
		if !c.cfg.enableTrailers {
			// Envoy's HTTP/1 codec drops proxied trailers unless
			// enable_trailers is set.
			trailers = nil
		}
		start := len(c.w)
		c.w = http1.AppendLastChunk(c.w, trailers)
		if c.cfg.properCaseHeaders {
			// The last chunk's "0" line, then the trailer fields.
			http1.ProperCaseHead(c.w[start:])
		}
	}
	err := c.flush()
	if c.tunnel && err == nil {
		// The upstream ended the tunnel: the client sees the end of its
		// stream (a FIN) before the connection closes.
		if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
	return err
}

// startTunnel: the connection now carries a tunnel, bounded by the
// router's idle timeout rather than the request's deadlines.
func (c *h1conn) startTunnel() {
	c.readDeadline = time.Time{}
	c.closeAfter = true
	c.conn.SetDeadline(time.Time{})
}

// abortRead interrupts a read of the tunnel's payload, and a write to a
// client that does not read: the tunnel is cut.
func (c *h1conn) abortRead() { c.conn.SetDeadline(aLongTimeAgo) }

// clientGone probes the connection: setting a deadline fails once it is
// closed (the listener's drain closed it).
func (c *h1conn) clientGone() bool { return c.conn.SetReadDeadline(time.Time{}) != nil }

func (c *h1conn) flush() error {
	if len(c.w) == 0 || c.writeErr != nil {
		c.w = c.w[:0]
		return c.writeErr
	}
	n, err := c.conn.Write(c.w)
	c.cfg.stats.cxTxBytes.Add(uint64(n))
	c.w = c.w[:0]
	if err != nil {
		c.writeErr = err
	}
	return err
}

// respMinor is the HTTP/1 minor version of responses: HTTP/1.0 only to
// HTTP/1.0 requests that accept_http_10 admits (as Envoy), else HTTP/1.1.
func (c *h1conn) respMinor() int {
	if c.head.Minor == 0 && c.cfg.acceptHTTP10 && c.head.Method != "" {
		return 0
	}
	return 1
}

func (c *h1conn) hijack() (net.Conn, []byte, bool) {
	if err := c.flush(); err != nil {
		return nil, nil, false
	}
	c.hijacked = true
	c.conn.SetDeadline(time.Time{})
	return c.conn, append([]byte(nil), c.r.BufferedBytes()...), true
}

// isTimeout reports a deadline error (a read bounded by SetReadDeadline).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
