package hcm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/legateproxy/legate/internal/stats"
)

func framesSeed(tb testing.TB) []byte {
	var b bytes.Buffer
	b.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&b, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82, 0x86, 0x84}, EndHeaders: true})
	fr.WriteData(1, false, []byte("hello"))
	fr.WriteData(1, true, nil)
	fr.WriteRSTStream(3, http2.ErrCodeCancel)
	fr.WritePriority(5, http2.PriorityParam{Weight: 1})
	fr.WriteWindowUpdate(0, 100)
	fr.WritePing(false, [8]byte{1})
	return b.Bytes()
}

func testStats() (*stats.Store, *h2GuardStats) {
	st := stats.NewStore()
	return st, &h2GuardStats{rxReset: st.Counter("rx_reset"), emptyFlood: st.Counter("empty"), priorityFlood: st.Counter("priority"),
		windowUpdateFlood: st.Counter("window_update"), outboundFlood: st.Counter("outbound_flood"),
		outboundControlFlood: st.Counter("outbound_control_flood"), headerOverflow: st.Counter("header_overflow"),
		prematureResets: st.Counter("premature"), protocolError: st.Counter("protocol_error")}
}

func testGuard() *h2Guard {
	_, gs := testStats()
	return newH2Guard(nil, defaultH2Limits, gs)
}

// FuzzFrameScanner: the guard's frame scanner sees the same frames
// however the byte stream is cut, and the guard's checks never panic on
// arbitrary input.
func FuzzFrameScanner(f *testing.F) {
	seed := framesSeed(f)
	f.Add(seed, []byte{1, 9, 24, 3})
	f.Add(seed[:30], []byte{0})
	f.Add([]byte(http2.ClientPreface+"\x00\x00\x00\x04\x00\x00\x00\x00\x00"), []byte{5})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		var whole []h2Frame
		s := frameScanner{skip: h2ClientPrefaceLen}
		s.scan(data, func(fr h2Frame) bool { whole = append(whole, fr); return true })
		var split []h2Frame
		s = frameScanner{skip: h2ClientPrefaceLen}
		rest := data
		for _, c := range cuts {
			n := min(int(c), len(rest))
			s.scan(rest[:n], func(fr h2Frame) bool { split = append(split, fr); return true })
			rest = rest[n:]
		}
		s.scan(rest, func(fr h2Frame) bool { split = append(split, fr); return true })
		if len(whole) != len(split) {
			t.Fatalf("%d frames whole, %d when cut at %v", len(whole), len(split), cuts)
		}
		for i := range whole {
			if whole[i] != split[i] {
				t.Fatalf("frame %d: %+v whole, %+v cut", i, whole[i], split[i])
			}
		}
		if s.pos != uint64(len(data)) {
			t.Fatalf("scanned %d bytes of %d", s.pos, len(data))
		}
		g := testGuard()
		g.mu.Lock()
		g.rd.visit(data, g)
		g.wr.visit(data, (*h2Out)(g))
		g.mu.Unlock()
	})
}

// TestPrematureResetRule is Envoy's rule, table-driven: abort once half of
// the total were premature before the total closed, or at least half of
// the closed streams once the total is reached.
func TestPrematureResetRule(t *testing.T) {
	for _, tc := range []struct {
		name               string
		premature, regular int
		abortAt            int // 1-based stream index that aborts; 0: never
	}{
		{"all premature", 300, 0, 250},
		{"regular first", 300, 300, 600},
		{"below half after the total", 200, 400, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := testGuard()
			abort := 0
			n := 0
			close := func(premature bool) {
				n++
				if !g.streamClosed(premature) && abort == 0 {
					abort = n
				}
			}
			for i := 0; i < tc.regular; i++ {
				close(false)
			}
			for i := 0; i < tc.premature; i++ {
				close(true)
			}
			if abort != tc.abortAt {
				t.Errorf("aborted at stream %d, want %d", abort, tc.abortAt)
			}
		})
	}
}

// chunkConn is a client connection: Read returns its chunks in order (no
// more than one per call, as a socket returns what arrived), then EOF;
// Write blocks while block is set, as towards a client that does not read.
type chunkConn struct {
	net.Conn
	chunks [][]byte
	mu     sync.Mutex
	out    bytes.Buffer
	block  chan struct{} // nil: writes go through
	closed chan struct{}
	late   chan struct{} // closed by a write deadline
	once   sync.Once
	lonce  sync.Once
}

func newChunkConn(chunks ...[]byte) *chunkConn {
	return &chunkConn{chunks: chunks, closed: make(chan struct{}), late: make(chan struct{})}
}

func (c *chunkConn) Read(p []byte) (int, error) {
	for len(c.chunks) > 0 && len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	return n, nil
}

func (c *chunkConn) Write(p []byte) (int, error) {
	if c.block != nil {
		select {
		case <-c.block:
		case <-c.closed:
			return 0, net.ErrClosed
		case <-c.late:
			return 0, os.ErrDeadlineExceeded
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func (c *chunkConn) Close() error { c.once.Do(func() { close(c.closed) }); return nil }
func (c *chunkConn) SetWriteDeadline(t time.Time) error {
	if !t.IsZero() {
		c.lonce.Do(func() { close(c.late) }) // a blocked write fails at once
	}
	return nil
}
func (c *chunkConn) SetReadDeadline(time.Time) error { return nil }

// h2Client builds a client's byte stream.
type h2Client struct {
	buf  bytes.Buffer
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

func newH2Client() *h2Client {
	c := &h2Client{}
	c.buf.WriteString(http2.ClientPreface)
	c.fr = http2.NewFramer(&c.buf, nil)
	c.enc = hpack.NewEncoder(&c.hbuf)
	c.fr.WriteSettings()
	return c
}

// block encodes fields (the pseudo-headers of a GET first) into a header
// block.
func (c *h2Client) block(fields ...string) []byte {
	c.hbuf.Reset()
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "example.com"}, {":path", "/"}} {
		c.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	for i := 0; i+1 < len(fields); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return bytes.Clone(c.hbuf.Bytes())
}

func (c *h2Client) headers(id uint32, block []byte, p http2.HeadersFrameParam) {
	p.StreamID, p.BlockFragment, p.EndHeaders = id, block, true
	c.fr.WriteHeaders(p)
}

// codecView reads what the guard passes on as x/net's server reads it:
// frames with their header blocks decoded (the decoder's table shared by
// the whole connection), and whether the codec would reset each stream
// for its HEADERS frame (a priority on itself).
type codecFrame struct {
	typ    http2.FrameType
	stream uint32
	reset  bool
	fields []hpack.HeaderField
}

func codecView(t *testing.T, r io.Reader, maxHeaderBytes int) ([]codecFrame, error) {
	t.Helper()
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(r, pre); err != nil {
		return nil, err
	}
	fr := http2.NewFramer(io.Discard, r)
	fr.MaxHeaderListSize = uint32(maxHeaderBytes + 320)
	fr.ReadMetaHeaders = hpack.NewDecoder(h2HPACKTableSize, nil)
	fr.SetMaxReadFrameSize(1 << 20)
	var out []codecFrame
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		cf := codecFrame{typ: f.Header().Type, stream: f.Header().StreamID}
		if mh, ok := f.(*http2.MetaHeadersFrame); ok {
			cf.reset = mh.HasPriority() && mh.Priority.StreamDep == mh.StreamID
			cf.fields = mh.Fields
		}
		out = append(out, cf)
	}
}

// cutEvery cuts b into pieces of n bytes.
func cutEvery(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// TestGuardHeaderOverflow: a header block over max_request_headers_kb or
// max_headers_count has its stream reset by the codec (its HEADERS frame
// gets a priority on itself), counted in http2.header_overflow and as a
// premature reset; other blocks reach the codec byte for byte, and the
// HPACK table stays shared (a later block indexing the dynamic table
// decodes the same), however the bytes arrive.
func TestGuardHeaderOverflow(t *testing.T) {
	big := strings.Repeat("b", 4000)
	c := newH2Client()
	c.headers(1, c.block("user-agent", "test", "accept", "*/*"), http2.HeadersFrameParam{EndStream: true})
	// A literal indexed once, then referenced: 30 × 4000 bytes decoded.
	bomb := append([]string{"x-bomb", big}, strings.Split(strings.Repeat("x-bomb,"+big+",", 29), ",")...)
	c.headers(3, c.block(bomb[:60]...), http2.HeadersFrameParam{EndStream: true})
	c.headers(5, c.block(bomb[:60]...), http2.HeadersFrameParam{EndStream: true, PadLength: 7})
	c.headers(7, c.block(bomb[:60]...), http2.HeadersFrameParam{EndStream: true, Priority: http2.PriorityParam{StreamDep: 1, Weight: 3}})
	// 101 fields (pseudo-headers count, as in Envoy).
	var many []string
	for i := 0; i < 97; i++ {
		many = append(many, "h"+strings.Repeat("x", i%7), "v")
	}
	c.headers(9, c.block(many...), http2.HeadersFrameParam{EndStream: true})
	// 96 fields, with 20 cookie crumbs (one header), then a block split in
	// CONTINUATION frames: both pass.
	var crumbs []string
	for i := 0; i < 20; i++ {
		crumbs = append(crumbs, "cookie", "c"+strings.Repeat("k", i)+"=1")
	}
	c.headers(11, c.block(append(crumbs, many[:2*72]...)...), http2.HeadersFrameParam{EndStream: true})
	blk := c.block("x-bomb", big, "user-agent", "test")
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 13, BlockFragment: blk[:5], EndStream: true})
	c.fr.WriteContinuation(13, false, blk[5:100])
	c.fr.WriteContinuation(13, true, blk[100:])
	// Trailers over the limit on an open stream lose END_STREAM.
	c.headers(15, c.block(), http2.HeadersFrameParam{})
	c.headers(15, c.block(bomb[:60]...), http2.HeadersFrameParam{EndStream: true})
	c.headers(17, c.block("x-bomb", big), http2.HeadersFrameParam{EndStream: true})
	input := c.buf.Bytes()

	for _, cut := range []int{1, 7, 9, 100, 4096, len(input)} {
		store, gs := testStats()
		cc := newChunkConn(cutEvery(bytes.Clone(input), cut)...)
		g := newH2Guard(cc, defaultH2Limits, gs)
		frames, err := codecView(t, g, defaultH2Limits.codecMaxHeaderBytes())
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		resets := map[uint32]bool{}
		var headers []codecFrame
		for _, f := range frames {
			if f.typ == http2.FrameHeaders {
				headers = append(headers, f)
				if f.reset {
					resets[f.stream] = true
				}
			}
		}
		want := map[uint32]bool{3: true, 5: true, 7: true, 9: true}
		if len(resets) != len(want) {
			t.Errorf("cut %d: streams reset %v, want %v", cut, resets, want)
		}
		for id := range want {
			if !resets[id] {
				t.Errorf("cut %d: stream %d not reset", cut, id)
			}
		}
		// The trailers of 15 lost END_STREAM; what the codec decoded of
		// the passing blocks is what the client sent.
		if v, _ := store.Value("header_overflow"); v != 5 {
			t.Errorf("cut %d: header_overflow = %d, want 5", cut, v)
		}
		last := headers[len(headers)-1]
		if last.stream != 17 || len(last.fields) != 5 || last.fields[4].Value != big {
			t.Errorf("cut %d: last block decoded as %d fields on stream %d", cut, len(last.fields), last.stream)
		}
		if v, _ := store.Value("premature"); v != 0 {
			t.Errorf("cut %d: premature reset flood after 4 resets", cut)
		}
		if g.premature != 5 || g.resetsOwed != 5 || len(g.resets) != 5 {
			t.Errorf("cut %d: premature %d, resets owed %d (%d streams)", cut, g.premature, g.resetsOwed, len(g.resets))
		}
		if _, ok := g.open[3]; ok {
			t.Errorf("cut %d: reset stream still open", cut)
		}
	}

	// Byte for byte when nothing overflows.
	c = newH2Client()
	for id := uint32(1); id < 20; id += 2 {
		c.headers(id, c.block("user-agent", "test", "cookie", "a=1", "cookie", "b=2"), http2.HeadersFrameParam{EndStream: true, PadLength: uint8(3 * (id % 3 / 2))})
		c.fr.WriteData(id, false, []byte("body"))
	}
	input = c.buf.Bytes()
	for _, cut := range []int{1, 5, 9, 64, len(input)} {
		_, gs := testStats()
		g := newH2Guard(newChunkConn(cutEvery(bytes.Clone(input), cut)...), defaultH2Limits, gs)
		got, err := io.ReadAll(g)
		if err != nil || !bytes.Equal(got, input) {
			t.Fatalf("cut %d: the codec got %d bytes (%v), not the %d sent", cut, len(got), err, len(input))
		}
		if g.hold != nil {
			t.Errorf("cut %d: bytes held at the end", cut)
		}
	}
}

// TestGuardHPACKError: a block the decoder rejects closes the connection
// (COMPRESSION_ERROR), as the codec's decoder would.
func TestGuardHPACKError(t *testing.T) {
	c := newH2Client()
	c.headers(1, []byte{0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, http2.HeadersFrameParam{EndStream: true})
	store, gs := testStats()
	cc := newChunkConn(c.buf.Bytes())
	g := newH2Guard(cc, defaultH2Limits, gs)
	_, err := io.ReadAll(g)
	if err != errH2Flood {
		t.Fatalf("read: %v", err)
	}
	if v, _ := store.Value("protocol_error"); v != 1 {
		t.Errorf("protocol_error = %d", v)
	}
	if b := cc.out.Bytes(); len(b) != 17 || b[3] != h2FrameGoAway || binary.BigEndian.Uint32(b[13:]) != h2CompressionErr {
		t.Errorf("wrote %x, want GOAWAY COMPRESSION_ERROR", b)
	}
}

// TestGuardOutboundFloods: PING and SETTINGS frames oblige ACKs; when the
// client does not read them (the codec's write blocks), more than
// max_outbound_control_frames owed close the connection at once
// (http2.outbound_control_flood); max_outbound_frames counts them and the
// frames of the blocked write (checked first, as Envoy). ACKs written
// settle what is owed: one SETTINGS ACK all SETTINGS before it.
func TestGuardOutboundFloods(t *testing.T) {
	frame := func(write func(*http2.Framer)) []byte {
		var b bytes.Buffer
		write(http2.NewFramer(&b, nil))
		return b.Bytes()
	}
	ping := frame(func(fr *http2.Framer) { fr.WritePing(false, [8]byte{1}) })
	pingAck := frame(func(fr *http2.Framer) { fr.WritePing(true, [8]byte{1}) })
	settings := frame(func(fr *http2.Framer) { fr.WriteSettings() })
	settingsAck := frame(func(fr *http2.Framer) { fr.WriteSettingsAck() })
	data := frame(func(fr *http2.Framer) { fr.WriteData(1, false, []byte("x")) })
	for _, tc := range []struct {
		name     string
		limits   func(*h2Limits)
		frame    []byte
		answered int    // frames read and answered before the client stops reading
		acks     []byte // the answers
		blocked  []byte // the write that blocks
		stat     string
		floodAt  int // the frame, after the client stops reading, that closes
	}{
		{"PING", nil, ping, 0, nil, settingsAck, "outbound_control_flood", 1001},
		{"PING answered", nil, ping, 600, bytes.Repeat(pingAck, 600), settingsAck, "outbound_control_flood", 1001},
		{"PING half answered", nil, ping, 600, bytes.Repeat(pingAck, 300), settingsAck, "outbound_control_flood", 701},
		{"SETTINGS", nil, settings, 0, nil, pingAck, "outbound_control_flood", 1001},
		{"SETTINGS answered by one ACK", nil, settings, 600, settingsAck, pingAck, "outbound_control_flood", 1001},
		{"small max_outbound_control_frames", func(l *h2Limits) { l.maxOutboundControl = 10 }, ping, 0, nil, settingsAck, "outbound_control_flood", 11},
		{"small max_outbound_frames", func(l *h2Limits) { l.maxOutbound = 5 }, ping, 0, nil, data, "outbound_flood", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := defaultH2Limits
			if tc.limits != nil {
				tc.limits(&l)
			}
			store, gs := testStats()
			pre := append([]byte(http2.ClientPreface), settings...)
			cc := newChunkConn(pre, bytes.Repeat(tc.frame, tc.answered))
			g := newH2Guard(cc, l, gs)
			if _, err := io.ReadFull(g, make([]byte, len(pre)+tc.answered*len(tc.frame))); err != nil {
				t.Fatal(err)
			}
			g.Write(settingsAck) // the client's first SETTINGS
			if len(tc.acks) > 0 {
				g.Write(tc.acks)
			}
			cc.block = make(chan struct{}) // the client stops reading
			go g.Write(tc.blocked)
			for {
				g.mu.Lock()
				w := g.inflight > 0 || g.wr.pos > uint64(len(settingsAck)+len(tc.acks))
				g.mu.Unlock()
				if w {
					break
				}
				time.Sleep(time.Millisecond)
			}
			buf := make([]byte, len(tc.frame))
			n := 0
			var err error
			for n < 5000 && err == nil {
				cc.chunks = append(cc.chunks, tc.frame)
				if _, err = io.ReadFull(g, buf); err == nil {
					n++
				}
			}
			if err != errH2Flood || n+1 != tc.floodAt {
				t.Fatalf("read %d frames, then %v; want a flood at frame %d", n, err, tc.floodAt)
			}
			if v, _ := store.Value(tc.stat); v != 1 {
				t.Errorf("%s = %d", tc.stat, v)
			}
			select {
			case <-cc.closed:
			case <-time.After(time.Second):
				t.Fatal("not closed at once")
			}
		})
	}
}

// benchBlocks returns a connection's first request block and a later one
// (its table entries indexed), for a browser-like request of 10 fields.
func benchBlocks() (first, later []byte) {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	req := []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"}, {Name: ":authority", Value: "www.example.com"},
		{Name: ":path", Value: "/assets/app.js?v=1234"}, {Name: "user-agent", Value: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"},
		{Name: "accept", Value: "*/*"}, {Name: "accept-encoding", Value: "gzip, deflate, br"}, {Name: "accept-language", Value: "en-US,en;q=0.9"},
		{Name: "referer", Value: "https://www.example.com/"}, {Name: "cookie", Value: "session=0123456789abcdef"}}
	for _, f := range req {
		enc.WriteField(f)
	}
	first = bytes.Clone(b.Bytes())
	b.Reset()
	for _, f := range req {
		enc.WriteField(f)
	}
	return first, bytes.Clone(b.Bytes())
}

// BenchmarkGuardHeaders: the guard's cost for one request's HEADERS frame
// (10 fields, the HPACK table warm), read as the codec reads it (frame
// header, then payload), against a passthrough read of the same bytes.
func BenchmarkGuardHeaders(b *testing.B) {
	first, later := benchBlocks()
	frame := func(id uint32, block []byte) []byte {
		var buf bytes.Buffer
		http2.NewFramer(&buf, nil).WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true, EndStream: true})
		return buf.Bytes()
	}
	const batch = 1024
	build := func(start uint32) []byte {
		var all []byte
		for i := uint32(0); i < batch; i++ {
			all = append(all, frame(start+2*i, later)...)
		}
		return all
	}
	for _, mode := range []string{"guard", "passthrough"} {
		b.Run(mode, func(b *testing.B) {
			_, gs := testStats()
			conn := &loopConn{}
			conn.next = append([]byte(http2.ClientPreface), frame(1, first)...)
			g := newH2Guard(conn, defaultH2Limits, gs)
			var r io.Reader = g
			if mode == "passthrough" {
				r = conn
			}
			hdr := make([]byte, 9)
			payload := make([]byte, 1<<10)
			io.ReadFull(r, make([]byte, len(http2.ClientPreface)))
			readFrame := func() {
				io.ReadFull(r, hdr)
				n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
				if _, err := io.ReadFull(r, payload[:n]); err != nil {
					b.Fatal(err)
				}
			}
			readFrame()
			id := uint32(3)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%batch == 0 {
					b.StopTimer()
					conn.next = build(id)
					id += 2 * batch
					// The streams are answered: the guard forgets them.
					g.mu.Lock()
					clear(g.open)
					g.mu.Unlock()
					b.StartTimer()
				}
				readFrame()
			}
			b.StopTimer()
			if v, _ := g.st.headerOverflow.Value(), 0; v != 0 {
				b.Fatal("overflow")
			}
		})
	}
}

// BenchmarkGuardFirstHeaders: the same request as a connection's first
// (its fields literals, added to the table): a new guard, its decoder
// and the decoded strings, against a passthrough read.
func BenchmarkGuardFirstHeaders(b *testing.B) {
	first, _ := benchBlocks()
	var buf bytes.Buffer
	buf.WriteString(http2.ClientPreface)
	http2.NewFramer(&buf, nil).WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: true, EndStream: true})
	in := buf.Bytes()
	for _, mode := range []string{"guard", "passthrough"} {
		b.Run(mode, func(b *testing.B) {
			_, gs := testStats()
			p := make([]byte, 1<<10)
			conn := &loopConn{}
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				conn.next = in
				var r io.Reader = conn
				if mode == "guard" {
					r = newH2Guard(conn, defaultH2Limits, gs)
				}
				io.ReadFull(r, p[:len(http2.ClientPreface)])
				io.ReadFull(r, p[:9])
				if _, err := io.ReadFull(r, p[:len(first)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// loopConn returns next as a socket would, one Read at a time.
type loopConn struct {
	net.Conn
	next []byte
}

func (c *loopConn) Read(p []byte) (int, error) {
	if len(c.next) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.next)
	c.next = c.next[n:]
	return n, nil
}

// FuzzGuardHPACK: header blocks (HPACK from the fuzzer, or real blocks
// encoded with hpack.Encoder in the seeds) in HEADERS and CONTINUATION
// frames cut as the plan says, through the guard as the codec reads.
// The guard must never panic, and must agree with a decoder of its own
// on every block: a block over the limits (name + value bytes, fields
// with cookie crumbs as one) is reset (its HEADERS frame depends on
// itself) and counted once; any other frame reaches the codec byte for
// byte; and its accounting (open streams, resets owed) adds up.
func FuzzGuardHPACK(f *testing.F) {
	first, later := benchBlocks()
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	enc.WriteField(hpack.HeaderField{Name: "x-bomb", Value: strings.Repeat("z", 3000)})
	bombInsert := bytes.Clone(b.Bytes())
	b.Reset()
	for i := 0; i < 30; i++ {
		enc.WriteField(hpack.HeaderField{Name: "x-bomb", Value: strings.Repeat("z", 3000)})
	}
	bombRefs := bytes.Clone(b.Bytes())
	seeds := [][]byte{first, later, append(bytes.Clone(first), later...), append(bombInsert, bombRefs...), bombRefs,
		{0x82, 0x86, 0x84, 0x41, 0x0f, 'w', 'w', 'w', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o', 'm'},
		{0x3f, 0xe1, 0x1f}, // table size update, 4096
		{0x20, 0x20, 0x82}, // two size updates to 0
		{0x00, 0x00, 0x00}, // an empty literal
		{0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, // index overflow
		{0x40, 0x83, 0xff, 0xff, 0xff, 0x00},                               // invalid Huffman
	}
	for _, s := range seeds {
		f.Add(s, []byte{0xff}, uint16(1024), uint8(8))
		f.Add(s, []byte{0x03, 0x45, 0x81, 0x02, 0xc0}, uint16(200), uint8(4))
	}
	f.Add(append(bombInsert, bombRefs...), []byte{0x10, 0x20, 0x30, 0x7f, 0x88}, uint16(60*1024/16), uint8(100))
	// Found by fuzzing: a 3-byte block over the field count (the priority
	// is inserted at the end of the frame), empty fragments, a plan that
	// never takes a byte.
	f.Add([]byte("A\x00\x82"), []byte("0"), uint16(1024), uint8(0))
	f.Add([]byte("AA000000000000000000A\x1c0000000000A\x8b00000000001A%0000000000"), []byte(" "), uint16(1019), uint8(8))
	f.Add([]byte("\x03000"), []byte(" "), uint16(200), uint8(4))
	f.Fuzz(func(t *testing.T, hp, plan []byte, maxBytes uint16, maxCount uint8) {
		l := defaultH2Limits
		l.maxHeaderBytes, l.maxHeaders = int(maxBytes)+1, int(maxCount)+1
		l.prematureTotal = 0 // no premature-reset flood
		l.maxEmpty = 1 << 31 // nor empty-frame one (empty fragments)
		l.maxOutbound, l.maxOutboundControl = 1<<31, 1<<31
		// The client's stream: blocks cut from hp by the plan. A plan
		// byte: the low 5 bits are the fragment length (×8 with 0x20),
		// 0x40 ends the block, 0x80 pads (or sets a priority on) a HEADERS
		// frame.
		var in bytes.Buffer
		in.WriteString(http2.ClientPreface)
		fr := http2.NewFramer(&in, nil)
		fr.WriteSettings()
		type block struct {
			stream uint32
			bytes  []byte
		}
		var blocks []block
		id := uint32(1)
		open := false
		rest := hp
		for i := 0; len(rest) > 0 || open; i++ {
			c := byte(0xff)
			if len(plan) > 0 {
				c = plan[i%len(plan)]
			}
			n := int(c & 0x1f)
			if c&0x20 != 0 {
				n *= 8
			}
			if i >= 64 {
				n = len(rest) // the rest in one last fragment
			}
			n = min(n, len(rest))
			end := c&0x40 != 0 || len(rest) == n
			frag := rest[:n]
			rest = rest[n:]
			if !open {
				p := http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: true, EndHeaders: end}
				if c&0x80 != 0 {
					if id%4 == 1 {
						p.PadLength = c & 0x0f
					} else {
						p.Priority = http2.PriorityParam{StreamDep: 1, Weight: c}
					}
				}
				fr.WriteHeaders(p)
				blocks = append(blocks, block{stream: id})
				id += 2
			} else {
				fr.WriteContinuation(blocks[len(blocks)-1].stream, end, frag)
			}
			blocks[len(blocks)-1].bytes = append(blocks[len(blocks)-1].bytes, frag...)
			open = !end
		}
		input := in.Bytes()

		// What the verdicts must be, by a decoder of the test's own.
		dec := hpack.NewDecoder(h2HPACKTableSize, nil)
		dec.SetMaxStringLength(l.hpackMaxString())
		over := map[uint32]bool{}
		broken := false
		for _, bl := range blocks {
			size, count, cookie := 0, 0, false
			dec.SetEmitFunc(func(f hpack.HeaderField) {
				if f.Name == "cookie" && cookie {
					size += len(f.Value) + 2
					return
				}
				cookie = cookie || f.Name == "cookie"
				size += len(f.Name) + len(f.Value)
				count++
			})
			_, err := dec.Write(bl.bytes)
			if err == nil {
				err = dec.Close()
			}
			if err != nil && (size <= l.maxHeaderBytes && count <= l.maxHeaders) {
				broken = true // the guard closes the connection here
				break
			}
			if size > l.maxHeaderBytes || count > l.maxHeaders {
				over[bl.stream] = true
			}
			if err != nil {
				broken = true
				break
			}
		}

		store, gs := testStats()
		cut := 1
		if len(plan) > 0 {
			cut = int(plan[0]) + 1
		}
		g := newH2Guard(newChunkConn(cutEvery(bytes.Clone(input), cut)...), l, gs)
		out, err := io.ReadAll(g)
		if err != nil && err != errH2Flood {
			t.Fatalf("read: %v", err)
		}
		if err == errH2Flood && !broken {
			t.Fatalf("closed, but every block decodes")
		}
		if broken {
			return // the decoders disagree only on what the guard closed for
		}
		// Walk what the codec got against what was sent.
		s := frameScanner{skip: h2ClientPrefaceLen}
		var got []h2Frame
		s.scan(out, func(f h2Frame) bool { got = append(got, f); return true })
		s = frameScanner{skip: h2ClientPrefaceLen}
		var sent []h2Frame
		s.scan(input, func(f h2Frame) bool { sent = append(sent, f); return true })
		if len(got) != len(sent) {
			t.Fatalf("%d frames sent, %d passed", len(sent), len(got))
		}
		resets := 0
		for i, f := range got {
			w := sent[i]
			if f.typ == h2FrameHeaders && over[f.stream] {
				resets++
				if f.flags&h2FlagPriority == 0 || (w.flags&h2FlagPriority == 0 && f.length != w.length+5) {
					t.Fatalf("block of stream %d over the limits not rewritten: %+v", f.stream, f)
				}
				continue
			}
			if f != w {
				t.Fatalf("frame %d changed: sent %+v, passed %+v", i, w, f)
			}
		}
		if v, _ := store.Value("header_overflow"); int(v) != len(over) || resets != len(over) {
			t.Fatalf("header_overflow %d, %d rewritten, %d blocks over", v, resets, len(over))
		}
		if g.resetsOwed != uint64(len(over)) || len(g.resets) != len(over) {
			t.Fatalf("resets owed %d (%d streams), %d blocks over", g.resetsOwed, len(g.resets), len(over))
		}
		for id := range over {
			if _, ok := g.open[id]; ok {
				t.Fatalf("stream %d reset but open", id)
			}
		}
		if len(g.open)+len(over) != len(blocks) || g.hold != nil {
			t.Fatalf("%d open + %d reset of %d streams; %d bytes held", len(g.open), len(over), len(blocks), len(g.hold))
		}
	})
}
