package hcm

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/legateproxy/legate/internal/stats"
)

// HTTP/2 frame types and flags the guard looks at (RFC 9113 §6).
const (
	h2FrameData         = 0x0
	h2FrameHeaders      = 0x1
	h2FramePriority     = 0x2
	h2FrameRSTStream    = 0x3
	h2FrameGoAway       = 0x7
	h2FrameWindowUpdate = 0x8
	h2FrameContinuation = 0x9

	h2FlagEndStream = 0x1

	// h2EnhanceYourCalm is the GOAWAY error code for a peer that floods
	// (RFC 9113 §7).
	h2EnhanceYourCalm = 0xb
)

// h2ClientPreface is what a client sends before its first frame.
const h2ClientPrefaceLen = 24 // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// h2Limits are the per-connection flood limits, as Envoy's
// http2_protocol_options and its premature-reset runtime keys, with
// Envoy's defaults.
type h2Limits struct {
	// maxEmpty is max_consecutive_inbound_frames_with_empty_payload (1):
	// more DATA, HEADERS or CONTINUATION frames in a row with an empty
	// payload and no END_STREAM close the connection.
	maxEmpty uint32
	// maxPriority is max_inbound_priority_frames_per_stream (100): more
	// than maxPriority × (1 + streams opened) PRIORITY frames close it.
	maxPriority uint32
	// maxWindowUpdate is max_inbound_window_update_frames_per_data_frame_sent
	// (10): more than 5 + 2 × (streams opened + maxWindowUpdate × DATA
	// frames sent) WINDOW_UPDATE frames close it.
	maxWindowUpdate uint32
	// prematureTotal is overload.premature_reset_total_stream_count (500):
	// once this many streams closed, the connection closes if at least half
	// were reset prematurely; before, as soon as half of it were.
	prematureTotal uint64
	// prematureLifetime is overload.premature_reset_min_stream_lifetime_seconds
	// (1 s): a stream reset within it, before any response, is premature.
	prematureLifetime time.Duration
}

var defaultH2Limits = h2Limits{maxEmpty: 1, maxPriority: 100, maxWindowUpdate: 10, prematureTotal: 500, prematureLifetime: time.Second}

// h2GuardStats are Envoy's counters for what the guard sees.
type h2GuardStats struct {
	rxReset, emptyFlood, priorityFlood, windowUpdateFlood *stats.Counter
	prematureResets                                       *stats.Counter
}

// frameScanner finds the frame headers in a byte stream cut anywhere.
type frameScanner struct {
	skip int     // preface bytes still to pass over
	hdr  [9]byte // the frame header being read
	n    int     // bytes of hdr read
	left uint32  // payload bytes of the current frame still to pass over
}

// h2Frame is a frame header.
type h2Frame struct {
	length uint32
	typ    byte
	flags  byte
	stream uint32
}

// scan passes over p and calls fn for each complete frame header.
func (s *frameScanner) scan(p []byte, fn func(h2Frame) bool) bool {
	for len(p) > 0 {
		switch {
		case s.skip > 0:
			k := min(s.skip, len(p))
			s.skip -= k
			p = p[k:]
		case s.left > 0:
			k := min(int(s.left), len(p))
			s.left -= uint32(k)
			p = p[k:]
		default:
			k := copy(s.hdr[s.n:], p)
			s.n += k
			p = p[k:]
			if s.n < 9 {
				return true
			}
			s.n = 0
			f := h2Frame{length: uint32(s.hdr[0])<<16 | uint32(s.hdr[1])<<8 | uint32(s.hdr[2]), typ: s.hdr[3], flags: s.hdr[4],
				stream: binary.BigEndian.Uint32(s.hdr[5:9]) & 0x7fffffff}
			s.left = f.length
			if !fn(f) {
				return false
			}
		}
	}
	return true
}

// atBoundary reports whether the stream is between frames.
func (s *frameScanner) atBoundary() bool { return s.skip == 0 && s.n == 0 && s.left == 0 }

// errH2Flood ends a connection the guard closed.
var errH2Flood = errors.New("http2: connection closed for flooding")

// h2Guard watches an HTTP/2 connection's frames in both directions, as
// Envoy's codec and connection manager do, and closes it with GOAWAY
// (ENHANCE_YOUR_CALM) when the client floods: premature stream resets
// (CVE-2023-44487, rapid reset), empty frames, PRIORITY or WINDOW_UPDATE
// frames beyond Envoy's limits. The codec (x/net/http2) reads and writes
// through it; only frame headers are parsed.
type h2Guard struct {
	net.Conn
	limits h2Limits
	st     *h2GuardStats

	rd frameScanner // reader goroutine only

	// wmu serializes writes (the codec's, and the GOAWAY of an abort);
	// wr is under it.
	wmu sync.Mutex
	wr  frameScanner

	// mu guards the state below; it is never held across network I/O.
	mu      sync.Mutex
	aborted bool
	// streams opened by the client and not yet closed, with their start.
	open      map[uint32]h2Open
	lastID    uint32
	opened    uint64
	closed    uint64
	premature uint64
	empty     uint32
	priority  uint64
	winUpdate uint64
	dataSent  uint64
	closeOnce sync.Once
	drained   chan struct{} // closed once an aborted connection's lingering read ends
}

type h2Open struct {
	start     time.Time
	responded bool
}

func newH2Guard(c net.Conn, l h2Limits, st *h2GuardStats) *h2Guard {
	return &h2Guard{Conn: c, limits: l, st: st, rd: frameScanner{skip: h2ClientPrefaceLen}, open: map[uint32]h2Open{}, drained: make(chan struct{})}
}

// Read passes the client's bytes to the codec, checking each frame.
func (g *h2Guard) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	if n > 0 {
		g.mu.Lock()
		ok := !g.aborted && g.rd.scan(p[:n], g.inbound)
		g.mu.Unlock()
		if !ok {
			g.abort()
			return 0, errH2Flood
		}
	}
	return n, err
}

// inbound checks one client frame (g.mu held); false closes the connection.
func (g *h2Guard) inbound(f h2Frame) bool {
	l := g.limits
	switch f.typ {
	case h2FrameData, h2FrameHeaders, h2FrameContinuation:
		if f.length == 0 && f.flags&h2FlagEndStream == 0 {
			g.empty++
			if g.empty > l.maxEmpty {
				g.st.emptyFlood.Inc()
				return false
			}
		} else {
			g.empty = 0
		}
		if f.typ == h2FrameHeaders && f.stream > g.lastID && f.stream%2 == 1 {
			g.lastID = f.stream
			g.opened++
			g.open[f.stream] = h2Open{start: time.Now()}
		}
	case h2FramePriority:
		g.priority++
		if g.priority > uint64(l.maxPriority)*(1+g.opened) {
			g.st.priorityFlood.Inc()
			return false
		}
	case h2FrameWindowUpdate:
		g.winUpdate++
		if g.winUpdate > 5+2*(g.opened+uint64(l.maxWindowUpdate)*g.dataSent) {
			g.st.windowUpdateFlood.Inc()
			return false
		}
	case h2FrameRSTStream:
		g.st.rxReset.Inc()
		if o, ok := g.open[f.stream]; ok {
			delete(g.open, f.stream)
			return g.streamClosed(!o.responded && time.Since(o.start) <= l.prematureLifetime)
		}
	}
	return true
}

// streamClosed counts a closed stream and applies Envoy's premature-reset
// rule (g.mu held).
func (g *h2Guard) streamClosed(premature bool) bool {
	g.closed++
	if premature {
		g.premature++
	}
	total := g.limits.prematureTotal
	if total == 0 {
		return true
	}
	if (g.closed >= total && 2*g.premature >= g.closed) || (g.closed < total && 2*g.premature >= total) {
		g.st.prematureResets.Inc()
		return false
	}
	return true
}

// Write passes the codec's bytes to the client, noting responses, stream
// ends and DATA frames.
func (g *h2Guard) Write(p []byte) (int, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	g.mu.Lock()
	if g.aborted {
		g.mu.Unlock()
		return 0, net.ErrClosed
	}
	g.wr.scan(p, g.outbound)
	g.mu.Unlock()
	return g.Conn.Write(p)
}

// outbound notes one server frame (g.mu held).
func (g *h2Guard) outbound(f h2Frame) bool {
	switch f.typ {
	case h2FrameData:
		g.dataSent++
	case h2FrameHeaders:
		if o, ok := g.open[f.stream]; ok && !o.responded {
			o.responded = true
			g.open[f.stream] = o
		}
	case h2FrameRSTStream:
		if o, ok := g.open[f.stream]; ok {
			delete(g.open, f.stream)
			g.streamClosed(!o.responded && time.Since(o.start) <= g.limits.prematureLifetime)
		}
		return true
	}
	if f.flags&h2FlagEndStream != 0 && (f.typ == h2FrameData || f.typ == h2FrameHeaders) {
		if _, ok := g.open[f.stream]; ok {
			delete(g.open, f.stream)
			g.streamClosed(false)
		}
	}
	return true
}

// abort sends GOAWAY (ENHANCE_YOUR_CALM) if the codec is between frames,
// shuts the write side and keeps reading for up to a second before the
// close, so the client can read the GOAWAY rather than a reset (Envoy's
// delayed close).
func (g *h2Guard) abort() {
	g.mu.Lock()
	if g.aborted {
		g.mu.Unlock()
		return
	}
	g.aborted = true
	lastID := g.lastID
	g.mu.Unlock()
	// A codec write blocked on a client that does not read ends within
	// the deadline and frees the writer; the GOAWAY goes out only between
	// frames.
	g.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	g.wmu.Lock()
	if g.wr.atBoundary() {
		var f [17]byte
		f[2] = 8 // payload length
		f[3] = h2FrameGoAway
		binary.BigEndian.PutUint32(f[9:13], lastID)
		binary.BigEndian.PutUint32(f[13:17], h2EnhanceYourCalm)
		g.Conn.Write(f[:])
	}
	g.wmu.Unlock()
	if cw, ok := g.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// Close closes the connection; after an abort it drains what the client
// still sends for up to a second first.
func (g *h2Guard) Close() error {
	g.mu.Lock()
	aborted := g.aborted
	g.mu.Unlock()
	if !aborted {
		return g.Conn.Close()
	}
	g.closeOnce.Do(func() {
		go func() {
			defer close(g.drained)
			g.Conn.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 4096)
			for {
				if _, err := g.Conn.Read(buf); err != nil {
					break
				}
			}
			g.Conn.Close()
		}()
	})
	return nil
}

// wait returns once an aborted connection is closed (at once otherwise),
// so the connection's owner does not close it under the lingering read.
func (g *h2Guard) wait() {
	g.mu.Lock()
	aborted := g.aborted
	g.mu.Unlock()
	if aborted {
		g.Close()
		<-g.drained
	}
}
