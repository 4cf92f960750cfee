package hcm

import (
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/http2/hpack"

	"github.com/legateproxy/legate/internal/stats"
)

// HTTP/2 frame types and flags the guard looks at (RFC 9113 §6).
const (
	h2FrameData         = 0x0
	h2FrameHeaders      = 0x1
	h2FramePriority     = 0x2
	h2FrameRSTStream    = 0x3
	h2FrameSettings     = 0x4
	h2FramePing         = 0x6
	h2FrameGoAway       = 0x7
	h2FrameWindowUpdate = 0x8
	h2FrameContinuation = 0x9

	h2FlagEndStream  = 0x1
	h2FlagAck        = 0x1 // SETTINGS and PING
	h2FlagEndHeaders = 0x4
	h2FlagPadded     = 0x8
	h2FlagPriority   = 0x20

	// GOAWAY error codes (RFC 9113 §7).
	h2ProtocolError   = 0x1
	h2CompressionErr  = 0x9
	h2EnhanceYourCalm = 0xb // a peer that floods
)

// h2ClientPreface is what a client sends before its first frame.
const h2ClientPrefaceLen = 24 // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// h2HPACKTableSize is the dynamic table size x/net/http2's server
// advertises and decodes with (Server.MaxDecoderHeaderTableSize unset);
// the guard's decoder must use the same to stay in step with it.
const h2HPACKTableSize = 4096

// h2Limits are the per-connection flood limits, as Envoy's
// http2_protocol_options, its premature-reset runtime keys and its
// request header limits, with Envoy's defaults.
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
	// maxOutbound is max_outbound_frames (10000) and maxOutboundControl
	// max_outbound_control_frames (1000): more frames owed to the client
	// and not yet written (see h2Guard.owed) close the connection.
	maxOutbound, maxOutboundControl uint32
	// prematureTotal is overload.premature_reset_total_stream_count (500):
	// once this many streams closed, the connection closes if at least half
	// were reset prematurely; before, as soon as half of it were.
	prematureTotal uint64
	// prematureLifetime is overload.premature_reset_min_stream_lifetime_seconds
	// (1 s): a stream reset within it, before any response, is premature.
	prematureLifetime time.Duration
	// maxHeaderBytes is max_request_headers_kb (60 KiB) and maxHeaders
	// common_http_protocol_options.max_headers_count (100): a header block
	// whose decoded fields (name + value bytes, pseudo-headers included,
	// cookie crumbs joined as one) exceed either resets its stream, as
	// Envoy's codec does (http2.header_overflow).
	maxHeaderBytes, maxHeaders int
}

var defaultH2Limits = h2Limits{maxEmpty: 1, maxPriority: 100, maxWindowUpdate: 10, maxOutbound: 10000, maxOutboundControl: 1000,
	prematureTotal: 500, prematureLifetime: time.Second, maxHeaderBytes: 60 * 1024, maxHeaders: 100}

// codecMaxHeaderBytes is the MaxHeaderBytes x/net/http2 gets: high enough
// that it never truncates (and answers 431 to) a header list the guard
// accepts — it counts 32 bytes more per field than Envoy and each cookie
// crumb apart — so that the guard's verdict, a stream reset, is the one
// that applies.
func (l *h2Limits) codecMaxHeaderBytes() int { return 2*l.maxHeaderBytes + 32*l.maxHeaders }

// hpackMaxString is x/net/http2's limit on one decoded HPACK string (its
// header list limit, MaxHeaderBytes plus 320): the guard's decoder fails
// exactly where the codec's does.
func (l *h2Limits) hpackMaxString() int { return l.codecMaxHeaderBytes() + 320 }

// holdMax bounds the bytes of one header block held back for its verdict:
// a block that needs more before its decoded size says anything is an
// overflow.
func (l *h2Limits) holdMax() int { return max(256<<10, 4*l.maxHeaderBytes) }

// h2GuardStats are Envoy's counters for what the guard sees.
type h2GuardStats struct {
	rxReset, emptyFlood, priorityFlood, windowUpdateFlood *stats.Counter
	outboundFlood, outboundControlFlood, headerOverflow   *stats.Counter
	prematureResets, protocolError                        *stats.Counter
}

// frameScanner finds the frame headers in a byte stream cut anywhere.
type frameScanner struct {
	skip int     // preface bytes still to pass over
	hdr  [9]byte // the frame header being read
	n    int     // bytes of hdr read
	left uint32  // payload bytes of the current frame still to pass over
	feed bool    // the current frame's payload goes to the visitor
	pos  uint64  // bytes scanned so far
}

// h2Frame is a frame header.
type h2Frame struct {
	length uint32
	typ    byte
	flags  byte
	stream uint32
}

// frameVisitor sees the frames a frameScanner finds.
type frameVisitor interface {
	// frame is called for each frame header; feed asks for its payload;
	// ok false stops the scan.
	frame(f h2Frame) (feed, ok bool)
	// payload gets the payload of a fed frame, in pieces; end marks the
	// last (an empty frame gets one call with none).
	payload(p []byte, end bool) bool
}

// frameFunc visits frame headers only.
type frameFunc func(h2Frame) bool

func (fn frameFunc) frame(f h2Frame) (bool, bool) { return false, fn(f) }
func (frameFunc) payload([]byte, bool) bool       { return true }

// scan passes over p and calls fn for each complete frame header.
func (s *frameScanner) scan(p []byte, fn func(h2Frame) bool) bool { return s.visit(p, frameFunc(fn)) }

// visit passes over p, giving v each complete frame header and the
// payloads it asks for.
func (s *frameScanner) visit(p []byte, v frameVisitor) bool {
	for len(p) > 0 {
		switch {
		case s.skip > 0:
			k := min(s.skip, len(p))
			s.skip -= k
			s.pos += uint64(k)
			p = p[k:]
		case s.left > 0:
			k := min(int(s.left), len(p))
			s.left -= uint32(k)
			s.pos += uint64(k)
			if s.feed && !v.payload(p[:k], s.left == 0) {
				return false
			}
			p = p[k:]
		default:
			k := copy(s.hdr[s.n:], p)
			s.n += k
			s.pos += uint64(k)
			p = p[k:]
			if s.n < 9 {
				return true
			}
			s.n = 0
			f := h2Frame{length: uint32(s.hdr[0])<<16 | uint32(s.hdr[1])<<8 | uint32(s.hdr[2]), typ: s.hdr[3], flags: s.hdr[4],
				stream: binary.BigEndian.Uint32(s.hdr[5:9]) & 0x7fffffff}
			s.left = f.length
			feed, ok := v.frame(f)
			if !ok {
				return false
			}
			s.feed = feed
			if feed && f.length == 0 && !v.payload(nil, true) {
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
// Envoy's codec and connection manager do, and closes it when the client
// floods: premature stream resets (CVE-2023-44487, rapid reset), empty
// frames, PRIORITY or WINDOW_UPDATE frames beyond Envoy's limits (GOAWAY
// ENHANCE_YOUR_CALM, then a lingering close), or more frames owed to a
// client than max_outbound_frames / max_outbound_control_frames (closed
// at once, as Envoy closes without flushing). It also decodes each
// inbound header block (HPACK) to apply Envoy's request header limits:
// a block over them has its stream reset without reaching the handler.
// The codec (x/net/http2) reads and writes through it.
type h2Guard struct {
	net.Conn
	limits h2Limits
	st     *h2GuardStats

	// Reader goroutine only: the inbound scanner and the header block
	// being decoded.
	rd  frameScanner
	dec *hpack.Decoder // created with the first HEADERS frame
	blk h2Block
	pl  h2Payload
	// hpackBad: the framing around the header blocks is broken (the codec
	// closes the connection for it), or the decoder failed (the guard
	// closes it); the guard stops decoding.
	hpackBad bool
	// Bytes read from the connection and scanned but not yet returned to
	// the codec: hold[holdOff:release] may be returned; from release on,
	// they wait for the verdict on their header block (its HEADERS frame
	// is rewritten if the stream must be reset) or are an incomplete
	// frame header. The end of hold is stream position rd.pos.
	hold             []byte
	holdBuf          *[]byte // hold's buffer, from holdBufs
	holdOff, release int
	rerr             error       // the read error that comes after hold
	rewrites         []h2Rewrite // verdicts whose HEADERS frames are to be rewritten
	goaway           uint32      // the GOAWAY code of an abort for a protocol error (else ENHANCE_YOUR_CALM)

	// wmu serializes writes (the codec's, and the GOAWAY of an abort);
	// wr and wbroken are under it.
	wmu     sync.Mutex
	wr      frameScanner
	wbroken bool      // a write failed part way: no GOAWAY can follow
	w       h2Written // what the write under way carries

	// mu guards the state below; it is never held across network I/O.
	mu      sync.Mutex
	aborted bool
	linger  bool // an abort drains what the client sends before the close (not for outbound floods)
	stop    bool // a check failed inside a decoder callback
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
	// Frames owed to the client (see owed).
	pingsOwed    uint64
	settingsOwed uint64
	resetsOwed   uint64
	resets       map[uint32]struct{} // streams the codec is to reset for the guard
	inflight     uint64              // frames in the Write under way
	closeOnce    sync.Once
	drained      chan struct{} // closed once an aborted connection is closed
}

type h2Open struct {
	start     time.Time
	responded bool
}

// h2Block is the header block being decoded (reader goroutine only).
type h2Block struct {
	open      bool // HEADERS seen, END_HEADERS not yet passed
	over      bool // verdict: over the limits (its stream is reset)
	newStream bool // the block opens a stream (else trailers)
	padded    bool
	prio      bool
	endStream bool
	cookie    bool
	stream    uint32
	start     uint64 // stream position of its HEADERS frame header
	size      int    // name + value bytes decoded so far
	count     int    // fields decoded so far (cookie crumbs as one)
}

// h2Payload walks the payload of the HEADERS or CONTINUATION frame being
// read: the pad length and priority fields of HEADERS are passed over,
// the field block fragment decoded, the padding dropped (RFC 9113 §6.2,
// §6.10).
type h2Payload struct {
	needPad    bool   // the pad length byte comes next
	skip       uint32 // priority bytes still to pass
	frag       uint32 // fragment bytes still to decode
	endHeaders bool
}

// h2Rewrite makes the codec reset a stream whose header block is over
// the limits, without decoding the block any differently (the HPACK
// state must stay shared): a HEADERS frame opening a stream gets a
// priority on itself (RFC 9113 §5.3.1: a stream error, PROTOCOL_ERROR,
// which x/net/http2 raises before it builds the request), trailers lose
// END_STREAM (a stream error too).
type h2Rewrite struct {
	pos    uint64 // stream position of the HEADERS frame header
	stream uint32
	kind   byte
	padded bool
}

const (
	rewriteInsertPriority = iota // no priority fields: insert them
	rewriteSetPriority           // priority fields present: make the stream depend on itself
	rewriteClearEndStream        // trailers
	rewriteNone                  // trailers without END_STREAM: the codec resets the stream anyway
)

func newH2Guard(c net.Conn, l h2Limits, st *h2GuardStats) *h2Guard {
	return &h2Guard{Conn: c, limits: l, st: st, rd: frameScanner{skip: h2ClientPrefaceLen}, open: map[uint32]h2Open{}, linger: true,
		drained: make(chan struct{})}
}

// holdBufs are the buffers of held bytes.
var holdBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// Read passes the client's bytes to the codec, checking each frame. A
// header block is held back until it is decoded (the codec could not use
// it earlier anyway), so that its HEADERS frame can be rewritten when its
// stream must be reset.
func (g *h2Guard) Read(p []byte) (int, error) {
	for {
		if g.holdOff < g.release {
			n := copy(p, g.hold[g.holdOff:g.release])
			g.holdOff += n
			if g.holdOff == len(g.hold) {
				g.freeHold()
			}
			return n, nil
		}
		if g.holdOff < len(g.hold) {
			if !g.fill() {
				return 0, errH2Flood
			}
			continue
		}
		if err := g.rerr; err != nil {
			g.rerr = nil // once, as the connection returned it
			return 0, err
		}
		n, err := g.Conn.Read(p)
		if n <= 0 {
			return n, err
		}
		k, ok := g.direct(p[:n], err)
		if !ok {
			return 0, errH2Flood
		}
		if k == n {
			return n, err
		}
		if k > 0 {
			return k, nil
		}
	}
}

// direct scans p, read straight into the codec's buffer; the part from
// the first byte that must be held moves to hold. It returns how much of
// p goes to the codec now.
func (g *h2Guard) direct(p []byte, err error) (int, bool) {
	start := g.rd.pos
	g.mu.Lock()
	ok := !g.aborted && g.rd.visit(p, g) && !g.stop
	g.mu.Unlock()
	if !ok {
		g.abort(g.abortCode())
		return 0, false
	}
	cut, held := g.holdFrom()
	if !held && len(g.rewrites) == 0 {
		return len(p), true
	}
	if !held {
		cut = g.rd.pos
	}
	if len(g.rewrites) > 0 {
		cut = min(cut, g.rewrites[0].pos)
	}
	if cut < start {
		// What must be held went to the codec already: cannot happen (with
		// nothing held, a block or a frame header starts in p); close
		// rather than let a request through.
		g.abort(h2EnhanceYourCalm)
		return 0, false
	}
	k := int(cut - start)
	g.holdBuf = holdBufs.Get().(*[]byte)
	g.hold = append((*g.holdBuf)[:0], p[k:]...)
	g.holdOff, g.rerr = 0, err
	if !g.settle() {
		return 0, false
	}
	return k, true
}

// fill reads more of a held header block.
func (g *h2Guard) fill() bool {
	if g.rerr != nil {
		g.release = len(g.hold) // nothing more comes: the codec gets what there is
		return true
	}
	if g.holdOff > 0 {
		n := copy(g.hold, g.hold[g.holdOff:])
		g.hold, g.release, g.holdOff = g.hold[:n], g.release-g.holdOff, 0
	}
	if len(g.hold) >= g.limits.holdMax() && g.blk.open && !g.blk.over {
		g.mu.Lock()
		g.overflow()
		stop := g.stop
		g.mu.Unlock()
		if stop {
			g.abort(h2EnhanceYourCalm)
			return false
		}
		return g.settle()
	}
	if len(g.hold) == cap(g.hold) {
		g.hold = slices.Grow(g.hold, cap(g.hold))
	}
	n, err := g.Conn.Read(g.hold[len(g.hold):cap(g.hold)])
	if n > 0 {
		b := g.hold[len(g.hold) : len(g.hold)+n]
		g.mu.Lock()
		ok := !g.aborted && g.rd.visit(b, g) && !g.stop
		g.mu.Unlock()
		if !ok {
			g.abort(g.abortCode())
			return false
		}
		g.hold = g.hold[:len(g.hold)+n]
	}
	g.rerr = err
	return g.settle()
}

// settle applies the pending rewrites to hold and moves release up to
// what may go to the codec.
func (g *h2Guard) settle() bool {
	end := len(g.hold)
	for i := len(g.rewrites) - 1; i >= 0; i-- {
		r := g.rewrites[i]
		j := end - int(g.rd.pos-r.pos)
		if j < g.holdOff || j+9 > len(g.hold) {
			// Its HEADERS frame went to the codec already: cannot happen, as
			// a block is held from its first byte; close rather than let the
			// request through.
			g.rewrites = g.rewrites[:0]
			g.abort(h2EnhanceYourCalm)
			return false
		}
		h := g.hold[j:]
		at := j + 9
		if r.padded {
			at++
		}
		if at > len(g.hold) || (r.kind == rewriteSetPriority && at+4 > len(g.hold)) {
			g.rewrites = g.rewrites[:0]
			g.abort(h2EnhanceYourCalm)
			return false
		}
		switch r.kind {
		case rewriteInsertPriority:
			n := uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2]) + 5
			h[0], h[1], h[2] = byte(n>>16), byte(n>>8), byte(n)
			h[4] |= h2FlagPriority
			var prio [5]byte
			binary.BigEndian.PutUint32(prio[:4], r.stream)
			prio[4] = 15 // weight 16
			g.hold = slices.Insert(g.hold, at, prio[:]...)
		case rewriteSetPriority:
			binary.BigEndian.PutUint32(g.hold[at:at+4], r.stream)
		case rewriteClearEndStream:
			h[4] &^= h2FlagEndStream
		}
	}
	g.rewrites = g.rewrites[:0]
	g.release = len(g.hold)
	if g.rerr == nil {
		if pos, held := g.holdFrom(); held {
			g.release = len(g.hold) - int(g.rd.pos-pos)
		}
	}
	return true
}

// holdFrom is the stream position from which bytes must be held: the
// HEADERS frame of a block without a verdict yet, or a frame header not
// read whole (which may be a HEADERS frame).
func (g *h2Guard) holdFrom() (uint64, bool) {
	var pos uint64
	held := false
	if g.blk.open && !g.blk.over && !g.hpackBad {
		pos, held = g.blk.start, true
	}
	if n := g.rd.n; n > 0 && (n < 4 || g.rd.hdr[3] == h2FrameHeaders) {
		if p := g.rd.pos - uint64(n); !held || p < pos {
			pos, held = p, true
		}
	}
	return pos, held
}

func (g *h2Guard) freeHold() {
	if g.holdBuf != nil && cap(g.hold) == cap(*g.holdBuf) {
		*g.holdBuf = g.hold[:0]
		holdBufs.Put(g.holdBuf)
	}
	g.hold, g.holdBuf, g.holdOff, g.release = nil, nil, 0, 0
}

// abortCode is the GOAWAY code for a failed check.
func (g *h2Guard) abortCode() uint32 {
	if g.goaway != 0 {
		return g.goaway
	}
	return h2EnhanceYourCalm
}

// frame checks one client frame and starts decoding header blocks
// (g.mu held).
func (g *h2Guard) frame(f h2Frame) (bool, bool) {
	newStream := f.typ == h2FrameHeaders && f.stream > g.lastID && f.stream%2 == 1
	ok := g.inbound(f)
	feed := false
	if !g.hpackBad {
		switch {
		case f.typ == h2FrameHeaders && !g.blk.open:
			feed = g.startBlock(f, newStream)
		case f.typ == h2FrameContinuation && g.blk.open && f.stream == g.blk.stream:
			g.pl = h2Payload{frag: f.length, endHeaders: f.flags&h2FlagEndHeaders != 0}
			feed = true
		case g.blk.open || f.typ == h2FrameContinuation:
			// A frame other than CONTINUATION inside a header block, or
			// CONTINUATION outside one: the codec closes the connection
			// (RFC 9113 §6.10).
			g.hpackBad = true
		}
	}
	return feed, ok && !g.stop
}

// startBlock begins a header block at a HEADERS frame (g.mu held).
func (g *h2Guard) startBlock(f h2Frame, newStream bool) bool {
	g.blk = h2Block{open: true, newStream: newStream, stream: f.stream, start: g.rd.pos - 9,
		padded: f.flags&h2FlagPadded != 0, prio: f.flags&h2FlagPriority != 0, endStream: f.flags&h2FlagEndStream != 0}
	g.pl = h2Payload{endHeaders: f.flags&h2FlagEndHeaders != 0}
	if g.blk.prio {
		g.pl.skip = 5
	}
	if g.blk.padded {
		if f.length == 0 {
			g.hpackBad = true // the codec rejects it (PROTOCOL_ERROR)
			return false
		}
		g.pl.needPad = true
		g.pl.frag = f.length - 1
	} else {
		if f.length < g.pl.skip {
			g.hpackBad = true
			return false
		}
		g.pl.frag = f.length - g.pl.skip
	}
	if g.dec == nil {
		g.dec = hpack.NewDecoder(h2HPACKTableSize, g.emit)
		g.dec.SetMaxStringLength(g.limits.hpackMaxString())
	}
	g.dec.SetEmitEnabled(true)
	return true
}

// payload decodes the field block fragment of a HEADERS or CONTINUATION
// frame (g.mu held).
func (g *h2Guard) payload(p []byte, end bool) bool {
	pl := &g.pl
	for len(p) > 0 && !g.hpackBad {
		switch {
		case pl.needPad:
			pad := uint32(p[0])
			p = p[1:]
			pl.needPad = false
			if pl.frag < pad+pl.skip {
				g.hpackBad = true // padding longer than the frame: the codec rejects it
				break
			}
			pl.frag -= pad + pl.skip
		case pl.skip > 0:
			k := min(uint32(len(p)), pl.skip)
			pl.skip -= k
			p = p[k:]
		case pl.frag > 0:
			k := min(uint32(len(p)), pl.frag)
			pl.frag -= k
			if _, err := g.dec.Write(p[:k]); err != nil {
				return g.hpackError()
			}
			p = p[k:]
		default:
			p = nil // padding
		}
	}
	if end && pl.endHeaders && g.blk.open && !g.hpackBad {
		g.blk.open = false
		if err := g.dec.Close(); err != nil {
			return g.hpackError()
		}
	}
	return !g.stop
}

// hpackError: the guard's decoder failed. The codec's, fed the same bytes,
// fails too unless it had stopped decoding strings it did not want (a
// field past its limits or an invalid one); as the decoders would no
// longer agree, the connection closes (COMPRESSION_ERROR).
func (g *h2Guard) hpackError() bool {
	g.hpackBad = true
	g.goaway = h2CompressionErr
	g.st.protocolError.Inc()
	return false
}

// emit counts one decoded field as Envoy's codec does (the header map's
// byte size and entry count; cookie crumbs are joined into one header
// with "; "), keeping nothing of it.
func (g *h2Guard) emit(f hpack.HeaderField) {
	b := &g.blk
	if b.over {
		return
	}
	if f.Name == "cookie" && b.cookie {
		b.size += len(f.Value) + 2
	} else {
		b.cookie = b.cookie || f.Name == "cookie"
		b.count++
		b.size += len(f.Name) + len(f.Value)
	}
	if b.size > g.limits.maxHeaderBytes || b.count > g.limits.maxHeaders {
		g.overflow()
	}
}

// overflow resets the stream of a header block over the limits, as
// Envoy's codec does (http2.header_overflow): its HEADERS frame is
// rewritten so that the codec answers RST_STREAM without building the
// request (g.mu held). The reset counts as a premature one, and as a
// control frame owed to the client.
func (g *h2Guard) overflow() {
	b := &g.blk
	b.over = true
	g.dec.SetEmitEnabled(false)
	g.st.headerOverflow.Inc()
	kind := byte(rewriteClearEndStream)
	if b.newStream {
		kind = rewriteInsertPriority
		if b.prio {
			kind = rewriteSetPriority
		}
	} else if !b.endStream {
		kind = rewriteNone
	}
	if kind != rewriteNone {
		g.rewrites = append(g.rewrites, h2Rewrite{pos: b.start, stream: b.stream, kind: kind, padded: b.padded})
	}
	if g.resets == nil {
		g.resets = map[uint32]struct{}{}
	}
	if _, ok := g.resets[b.stream]; !ok {
		g.resets[b.stream] = struct{}{}
		g.resetsOwed++
	}
	if o, ok := g.open[b.stream]; ok {
		delete(g.open, b.stream)
		if !g.streamClosed(b.newStream || g.isPremature(o)) {
			g.stop = true
		}
	}
	if !g.checkOwed() {
		g.stop = true
	}
}

func (g *h2Guard) isPremature(o h2Open) bool {
	return !o.responded && time.Since(o.start) <= g.limits.prematureLifetime
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
			return g.streamClosed(g.isPremature(o))
		}
	case h2FrameSettings:
		if f.flags&h2FlagAck == 0 && f.stream == 0 {
			g.settingsOwed++
			return g.checkOwed()
		}
	case h2FramePing:
		if f.flags&h2FlagAck == 0 && f.stream == 0 {
			g.pingsOwed++
			return g.checkOwed()
		}
	}
	return true
}

// owed returns the frames the client is owed and has not been written,
// as far as the guard can tell them from the frames it sees, with the
// control frames among them. Envoy counts the frames in its output
// buffer (max_outbound_frames), and among them the PING and SETTINGS
// ACKs and RST_STREAMs (max_outbound_control_frames); x/net/http2 keeps
// its queue to itself, so the guard counts:
//   - a PING ACK for each PING read, until a PING ACK is written;
//   - a SETTINGS ACK for each SETTINGS read since the last SETTINGS ACK
//     written (x/net acknowledges all SETTINGS it has processed with one
//     ACK, so one written ACK settles all);
//   - an RST_STREAM for each stream the guard made the codec reset
//     (header overflow), until it is written;
//   - the other frames of the write under way, until the socket takes
//     them (a client that does not read leaves it blocked).
//
// Frames are written when the socket has taken them. Not counted: the
// RST_STREAMs x/net sends on its own for stream errors and the response
// frames queued behind a blocked write; x/net bounds its queue (10 000
// control frames, then it closes the connection; at most one response
// frame per stream, as each handler waits for its frame to be written).
func (g *h2Guard) owed() (all, control uint64) {
	control = g.pingsOwed + g.settingsOwed + g.resetsOwed
	return control + g.inflight, control
}

// checkOwed applies max_outbound_frames then max_outbound_control_frames,
// in Envoy's order (g.mu held).
func (g *h2Guard) checkOwed() bool {
	all, control := g.owed()
	if all > uint64(g.limits.maxOutbound) {
		g.st.outboundFlood.Inc()
		g.linger = false
		return false
	}
	if control > uint64(g.limits.maxOutboundControl) {
		g.st.outboundControlFlood.Inc()
		g.linger = false
		return false
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

// h2Out visits the codec's frames for the guard (g.mu and g.wmu held),
// counting in g.w the frames owed to the client that the write carries.
type h2Out h2Guard

// h2Written counts what one write carries.
type h2Written struct {
	frames, pingAcks, resets uint64 // frames other than those below; PING ACKs; owed RST_STREAMs
	settingsAck              bool
}

func (o *h2Out) frame(f h2Frame) (bool, bool) {
	g := (*h2Guard)(o)
	w := &g.w
	switch {
	case f.typ == h2FramePing && f.flags&h2FlagAck != 0:
		w.pingAcks++
	case f.typ == h2FrameSettings && f.flags&h2FlagAck != 0:
		w.settingsAck = true
	case f.typ == h2FrameRSTStream && g.resets != nil && hasStream(g.resets, f.stream):
		delete(g.resets, f.stream)
		w.resets++
	default:
		w.frames++
	}
	return false, g.outbound(f)
}

func (*h2Out) payload([]byte, bool) bool { return true }

func hasStream(m map[uint32]struct{}, id uint32) bool { _, ok := m[id]; return ok }

// Write passes the codec's bytes to the client, noting responses, stream
// ends, DATA frames and the frames owed to the client it carries.
func (g *h2Guard) Write(p []byte) (int, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	g.mu.Lock()
	if g.aborted {
		g.mu.Unlock()
		return 0, net.ErrClosed
	}
	g.w = h2Written{}
	g.wr.visit(p, (*h2Out)(g))
	w := g.w
	g.inflight += w.frames
	g.mu.Unlock()
	n, err := g.Conn.Write(p)
	if n < len(p) {
		g.wbroken = true
	}
	g.mu.Lock()
	g.inflight -= w.frames
	g.pingsOwed -= min(g.pingsOwed, w.pingAcks)
	g.resetsOwed -= min(g.resetsOwed, w.resets)
	if w.settingsAck {
		g.settingsOwed = 0
	}
	g.mu.Unlock()
	return n, err
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
			g.streamClosed(g.isPremature(o))
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

// abort ends the connection: GOAWAY (with code) if the codec is between
// frames, then, for an inbound flood, the write side shut and up to a
// second of reading before the close, so that the client can read the
// GOAWAY rather than a reset (Envoy's delayed close); for an outbound
// flood (the client does not read what it is sent) the close is at once,
// as Envoy closes without flushing, and the GOAWAY gets only what room
// the socket has.
func (g *h2Guard) abort(code uint32) {
	g.mu.Lock()
	if g.aborted {
		g.mu.Unlock()
		return
	}
	g.aborted = true
	linger := g.linger
	lastID := g.lastID
	g.mu.Unlock()
	// A codec write blocked on a client that does not read ends within
	// the deadline and frees the writer; the GOAWAY goes out only between
	// frames.
	wait := time.Second
	if !linger {
		wait = 50 * time.Millisecond
	}
	g.Conn.SetWriteDeadline(time.Now().Add(wait))
	g.wmu.Lock()
	if g.wr.atBoundary() && !g.wbroken {
		var f [17]byte
		f[2] = 8 // payload length
		f[3] = h2FrameGoAway
		binary.BigEndian.PutUint32(f[9:13], lastID)
		binary.BigEndian.PutUint32(f[13:17], code)
		g.Conn.Write(f[:])
	}
	g.wmu.Unlock()
	if !linger {
		g.Conn.Close()
		return
	}
	closeWrite(g.Conn)
}

// closeWrite shuts the write side of c, under the prefix of sniffed bytes
// the connection manager may have put on it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite() // PrefixConn and TLS forward it
	}
}

// Close closes the connection; after an inbound flood it drains what the
// client still sends for up to a second first.
func (g *h2Guard) Close() error {
	g.mu.Lock()
	aborted, linger := g.aborted, g.linger
	g.mu.Unlock()
	if !aborted {
		return g.Conn.Close()
	}
	g.closeOnce.Do(func() {
		if !linger {
			g.Conn.Close()
			close(g.drained)
			return
		}
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
