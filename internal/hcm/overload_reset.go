package hcm

import (
	"sync/atomic"

	"github.com/legateproxy/legate/internal/streaminfo"
)

// This file is the connection manager's side of the overload manager's
// reset_high_memory_stream action (Envoy's stream buffer accounts): with
// overload_manager.buffer_factory_config, each HTTP/1 and HTTP/2 stream
// has an overload.Account that the bodies it holds charge — what decoder
// and encoder filters buffer (StopAndBuffer), the request body waiting
// between the filters and the router, and the router's copy kept for
// retries and mirrors. When the action resets the stream, it ends as
// Envoy's codec reset does: no response (an HTTP/2 RST_STREAM, a closed
// HTTP/1 connection), response flag OM, details "overload",
// downstream_rq_rx_reset; the filters' OnDestroy and the access logs run
// as for any stream.
//
// Not charged: what x/net/http2 holds in a stream's receive window
// before the stream reads it, and response data a codec write is
// blocked on. HTTP/3 streams share the HTTP/2 stream's account (h3stream
// embeds h2stream); quic-go resets a stream whose handler aborts.

// overloadResetter is a codec stream the overload manager can reset from
// another goroutine: it makes the stream's blocked reads (and the
// upstream exchange it waits on) end at once; the stream then finishes
// without a response.
type overloadResetter interface {
	overloadReset()
}

// startAccount opens the stream's buffer account when the overload
// manager tracks buffers and the codec can be reset.
func (s *stream) startAccount() {
	t := s.cfg.ov.Tracker()
	if t == nil {
		return
	}
	r, ok := s.ds.(overloadResetter)
	if !ok {
		return
	}
	s.acct = t.NewAccount(r.overloadReset)
}

// chargeBuffers brings the account to what the stream's buffers hold
// now. With no account it costs one nil check.
func (s *stream) chargeBuffers() {
	if s.acct == nil {
		return
	}
	m := &s.fm
	held := s.acctExtra + int64(len(m.bodyQ)-m.bodyQOff) + int64(len(m.added)+len(m.addedResp))
	for i := range m.slots {
		held += int64(m.slots[i].buf.Len() + m.slots[i].ebuf.Len())
	}
	s.acct.Charge(held - s.acctHeld)
	s.acctHeld = held
}

// BufferAccounting reports whether the stream's buffers are accounted
// (the router then charges what it buffers through ChargeBuffered).
func (s *stream) BufferAccounting() bool { return s.acct != nil }

// ChargeBuffered charges n more bytes the router holds for the stream
// (its body copy for retries and mirrors) until the stream ends.
func (s *stream) ChargeBuffered(n int64) {
	if s.acct == nil || n == 0 {
		return
	}
	s.acctExtra += n
	s.chargeBuffers()
}

// overloadWasReset reports whether the overload manager reset the stream.
func (s *stream) overloadWasReset() bool { return s.acct.WasReset() }

// endAccount closes the account (no reset reaches the stream after it)
// and records a reset, before the access logs: as Envoy's onResetStream
// for StreamResetReason::OverloadManager.
func (s *stream) endAccount() {
	if s.acct == nil {
		return
	}
	s.acct.Close()
	s.acctHeld, s.acctExtra = 0, 0
	if !s.acct.WasReset() {
		return
	}
	s.cfg.stats.rqRxReset.Inc()
	// The reset broke the body read or the upstream exchange: that is the
	// overload manager's doing, not the client's.
	s.info.ResponseFlags &^= streaminfo.Flags(streaminfo.DownstreamConnectionTermination) | streaminfo.Flags(streaminfo.UpstreamConnectionTermination)
	s.info.SetFlag(streaminfo.OverloadManager)
	s.info.ResponseCodeDetails = "overload"
	if !s.respStarted {
		s.resp.Status = 0 // nothing was sent
	}
	s.closeConn = true
}

// overloadReset resets an HTTP/2 stream: its body reads fail at once and
// the upstream exchange it waits on is cancelled; the handler then ends
// with http.ErrAbortHandler, which x/net answers with RST_STREAM.
func (h *h2stream) overloadReset() {
	if h.r != nil && h.r.Body != nil {
		h.r.Body.Close()
	}
	if g := h.gone.Load(); g != nil {
		(*g)()
	}
}

// watchGone is h2stream's watchClose: x/net ends the stream's context on
// a client reset, so only an overload reset calls gone.
func (h *h2stream) watchGone(gone func()) func() {
	h.gone.Store(&gone)
	return func() { h.gone.Store(nil) }
}

// overloadReset resets an HTTP/1 stream as Envoy's HTTP/1 codec does: the
// connection closes (reads and writes in progress fail), and the upstream
// exchange the request waits on is cancelled.
func (c *h1conn) overloadReset() {
	c.watchMu.Lock()
	c.ctxGone = true
	if c.cancel != nil {
		c.cancel()
	}
	gone := c.watchGone
	c.watchMu.Unlock()
	c.conn.Close()
	if gone != nil {
		gone()
	}
}

// h2gone is the gone callback of an h2stream's watch.
type h2gone = atomic.Pointer[func()]
