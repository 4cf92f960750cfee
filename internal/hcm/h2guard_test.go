package hcm

import (
	"bytes"
	"testing"

	"golang.org/x/net/http2"

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

func testGuard() *h2Guard {
	st := stats.NewStore()
	gs := &h2GuardStats{rxReset: st.Counter("a"), emptyFlood: st.Counter("b"), priorityFlood: st.Counter("c"),
		windowUpdateFlood: st.Counter("d"), prematureResets: st.Counter("e")}
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
		g := testGuard()
		g.mu.Lock()
		g.rd.scan(data, g.inbound)
		g.wr.scan(data, g.outbound)
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
