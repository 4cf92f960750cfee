// HTTP/2 flood protection: rapid reset, empty frames, PRIORITY and
// WINDOW_UPDATE floods, SETTINGS and PING floods from a client that does
// not read (outbound control frames), HPACK bombs (header overflow).

package features_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/legateproxy/legate/internal/testutil"
)

// h2cClient is a raw HTTP/2 client: frames by hand, as an attacker.
type h2cClient struct {
	t    *testing.T
	conn net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

func dialH2C(t *testing.T, addr string) *h2cClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &h2cClient{t: t, conn: conn, fr: http2.NewFramer(conn, conn)}
	c.enc = hpack.NewEncoder(&c.hbuf)
	io.WriteString(conn, http2.ClientPreface)
	c.fr.WriteSettings()
	return c
}

func (c *h2cClient) headers(id uint32, endStream bool) error {
	c.hbuf.Reset()
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}} {
		c.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true, EndStream: endStream})
}

// floodUntilClosed writes frame (built by write) over and over, never
// reading, until the proxy closes the connection or the time is up; it
// returns the frames written and whether the connection was closed.
func (c *h2cClient) floodUntilClosed(within time.Duration, write func(*http2.Framer)) (int, bool) {
	var one bytes.Buffer
	write(http2.NewFramer(&one, nil))
	const batch = 1024
	buf := bytes.Repeat(one.Bytes(), batch)
	c.conn.SetWriteDeadline(time.Now().Add(within))
	sent := 0
	for {
		if _, err := c.conn.Write(buf); err != nil {
			var ne net.Error
			return sent, !(errors.As(err, &ne) && ne.Timeout())
		}
		sent += batch
	}
}

// rssKB is this process's resident set (the proxy runs in it), in KiB.
func rssKB() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return -1
}

// floodFigures logs what a flood cost, for docs/security.md.
type floodFigures struct {
	name     string
	start    time.Time
	rss      int64
	upstream *atomic.Int64
	before   int64
}

func startFigures(name string, upstream *atomic.Int64) *floodFigures {
	return &floodFigures{name: name, start: time.Now(), rss: rssKB(), upstream: upstream, before: upstream.Load()}
}

func (f *floodFigures) log(t *testing.T, closed time.Duration, what string) {
	t.Helper()
	t.Logf("FIGURES %s: closed %v after the flood began; %d upstream requests; RSS %d → %d KiB; %s",
		f.name, closed.Round(time.Millisecond), f.upstream.Load()-f.before, f.rss, rssKB(), what)
}

// goAway reads frames until a GOAWAY (its error code) or the end.
func (c *h2cClient) goAway(within time.Duration) (http2.ErrCode, bool) {
	c.conn.SetReadDeadline(time.Now().Add(within))
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return 0, false
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			return ga.ErrCode, true
		}
	}
}

// TestHTTP2Floods: each flood Envoy defends against closes the
// connection with GOAWAY (ENHANCE_YOUR_CALM) and counts it under Envoy's
// name, while a normal HTTP/2 client is not affected.
func TestHTTP2Floods(t *testing.T) {
	if !testutil.InNetns(t) {
		return
	}
	var upstream atomic.Int64
	u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstream.Add(1)
		time.Sleep(20 * time.Millisecond)
		w.Write([]byte("ok"))
	}))
	h, port := u.Host()
	p := testutil.StartProxy(t, fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: main
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
          codec_type: AUTO
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: backend}}]}]
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
`, h, port), nil)
	addr := p.Addr("main")

	t.Run("normal client", func(t *testing.T) {
		c := testutil.H2CClient()
		for i := 0; i < 50; i++ {
			code, _, body := testutil.Get(t, c, p.URL("main", "/"))
			if code != 200 || body != "ok" {
				t.Fatalf("request %d: %d %q", i, code, body)
			}
		}
	})

	t.Run("rapid reset", func(t *testing.T) {
		before := upstream.Load()
		fig := startFigures("rapid reset", &upstream)
		c := dialH2C(t, addr)
		sent := 0
		for id := uint32(1); id < 2*2000; id += 2 {
			if c.headers(id, true) != nil || c.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				break // the proxy closed the connection
			}
			sent++
		}
		code, ok := c.goAway(5 * time.Second)
		if !ok || code != http2.ErrCodeEnhanceYourCalm {
			t.Fatalf("after %d reset streams: GOAWAY %v (code %v), want ENHANCE_YOUR_CALM", sent, ok, code)
		}
		closed := time.Since(fig.start)
		if n := p.Stat(t, "http.edge.downstream_rq_too_many_premature_resets"); n != 1 {
			t.Errorf("downstream_rq_too_many_premature_resets = %d", n)
		}
		if n := p.Stat(t, "http2.rx_reset"); n < 250 {
			t.Errorf("http2.rx_reset = %d", n)
		}
		time.Sleep(200 * time.Millisecond)
		if got := upstream.Load() - before; got > 500 {
			t.Errorf("%d upstream requests from %d reset streams: the flood reached the upstream", got, sent)
		}
		fig.log(t, closed, fmt.Sprintf("%d streams sent and reset before the GOAWAY", sent))
	})

	t.Run("empty DATA frames", func(t *testing.T) {
		fig := startFigures("empty frames", &upstream)
		c := dialH2C(t, addr)
		c.headers(1, false)
		for i := 0; i < 20; i++ {
			if c.fr.WriteData(1, false, nil) != nil {
				break
			}
		}
		if code, ok := c.goAway(5 * time.Second); !ok || code != http2.ErrCodeEnhanceYourCalm {
			t.Fatalf("GOAWAY %v code %v", ok, code)
		}
		fig.log(t, time.Since(fig.start), "GOAWAY read")
		if n := p.Stat(t, "http2.inbound_empty_frames_flood"); n != 1 {
			t.Errorf("http2.inbound_empty_frames_flood = %d", n)
		}
	})

	t.Run("PRIORITY frames", func(t *testing.T) {
		c := dialH2C(t, addr)
		for i := 0; i < 300; i++ {
			if c.fr.WritePriority(uint32(2*i+1), http2.PriorityParam{Weight: 1}) != nil {
				break
			}
		}
		if code, ok := c.goAway(5 * time.Second); !ok || code != http2.ErrCodeEnhanceYourCalm {
			t.Fatalf("GOAWAY %v code %v", ok, code)
		}
		if n := p.Stat(t, "http2.inbound_priority_frames_flood"); n != 1 {
			t.Errorf("http2.inbound_priority_frames_flood = %d", n)
		}
	})

	t.Run("WINDOW_UPDATE frames", func(t *testing.T) {
		c := dialH2C(t, addr)
		for i := 0; i < 100; i++ {
			if c.fr.WriteWindowUpdate(0, 1) != nil {
				break
			}
		}
		if code, ok := c.goAway(5 * time.Second); !ok || code != http2.ErrCodeEnhanceYourCalm {
			t.Fatalf("GOAWAY %v code %v", ok, code)
		}
		if n := p.Stat(t, "http2.inbound_window_update_frames_flood"); n != 1 {
			t.Errorf("http2.inbound_window_update_frames_flood = %d", n)
		}
	})

	// A client that sends SETTINGS or PING frames, each obliging an ACK,
	// and never reads the ACKs: once more than max_outbound_control_frames
	// (1000) are owed the connection closes, while other clients are
	// served. (x/net/http2 alone acknowledges SETTINGS once for all it has
	// read and never closes for them; for PINGs it closes at 10 000 queued
	// ACKs, without the stat.)
	for _, fl := range []struct {
		name  string
		write func(*http2.Framer)
	}{
		{"SETTINGS", func(fr *http2.Framer) { fr.WriteSettings() }},
		{"PING", func(fr *http2.Framer) { fr.WritePing(false, [8]byte{1, 2, 3}) }},
	} {
		t.Run(fl.name+" flood, client not reading", func(t *testing.T) {
			before := p.Stat(t, "http2.outbound_control_flood")
			fig := startFigures(fl.name, &upstream)
			c := dialH2C(t, addr)
			type result struct {
				sent   int
				closed bool
				after  time.Duration
			}
			done := make(chan result, 1)
			go func() {
				n, closed := c.floodUntilClosed(30*time.Second, fl.write)
				done <- result{n, closed, time.Since(fig.start)}
			}()
			// Another client is served meanwhile.
			if code, _, body := testutil.Get(t, testutil.H2CClient(), p.URL("main", "/")); code != 200 || body != "ok" {
				t.Errorf("a normal client during the flood: %d %q", code, body)
			}
			r := <-done
			if !r.closed {
				t.Fatalf("%d %s frames sent in 30 s, the connection still open", r.sent, fl.name)
			}
			if n := p.Stat(t, "http2.outbound_control_flood") - before; n != 1 {
				t.Errorf("http2.outbound_control_flood counted %d times", n)
			}
			fig.log(t, r.after, fmt.Sprintf("%d %s frames sent", r.sent, fl.name))
		})
	}

	// An HPACK bomb: a 4000-byte literal entered in the dynamic table once,
	// then referenced 1000 times (one byte each) in every new stream's
	// header block: 4 MB of headers per 1 KB block. Each stream is reset
	// as Envoy's codec resets it (http2.header_overflow), none reaches the
	// upstream, and the resets, premature, close the connection.
	t.Run("HPACK bomb", func(t *testing.T) {
		overflow := p.Stat(t, "http2.header_overflow")
		premature := p.Stat(t, "http.edge.downstream_rq_too_many_premature_resets")
		fig := startFigures("HPACK bomb", &upstream)
		c := dialH2C(t, addr)
		// :method GET, :scheme http, :path / (static table), :authority x
		// (literal, not indexed).
		pseudo := []byte{0x82, 0x86, 0x84, 0x01, 0x01, 'x'}
		refs := bytes.Repeat([]byte{0x80 | 62}, 1000) // dynamic table entry 1
		literal := append([]byte{0x40, 6}, "x-bomb"...)
		literal = append(literal, 0x7f, 0xa1, 0x1e) // value length 4000 (127 + 3873)
		literal = append(literal, bytes.Repeat([]byte{'b'}, 4000)...)
		sent := 0
		for id := uint32(1); id < 2*2000; id += 2 {
			block := append(append([]byte(nil), pseudo...), refs...)
			if id == 1 {
				block = append(append(append([]byte(nil), pseudo...), literal...), refs...)
			}
			if c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true, EndStream: true}) != nil {
				break
			}
			sent++
		}
		code, ok := c.goAway(5 * time.Second)
		if !ok || code != http2.ErrCodeEnhanceYourCalm {
			t.Fatalf("after %d bomb streams: GOAWAY %v (code %v), want ENHANCE_YOUR_CALM", sent, ok, code)
		}
		closed := time.Since(fig.start)
		n := p.Stat(t, "http2.header_overflow") - overflow
		if n < 250 || n > int64(sent) {
			t.Errorf("http2.header_overflow counted %d times for %d streams", n, sent)
		}
		if n := p.Stat(t, "http.edge.downstream_rq_too_many_premature_resets") - premature; n != 1 {
			t.Errorf("downstream_rq_too_many_premature_resets counted %d times", n)
		}
		time.Sleep(100 * time.Millisecond)
		if got := upstream.Load() - fig.before; got > 0 {
			t.Errorf("%d bomb requests reached the upstream", got)
		}
		fig.log(t, closed, fmt.Sprintf("%d bomb streams sent, %d reset for header overflow", sent, n))
	})

	// The proxy keeps serving.
	if code, _, _ := testutil.Get(t, testutil.H2CClient(), p.URL("main", "/")); code != 200 {
		t.Fatalf("after the floods: %d", code)
	}
}

// TestHTTP2OutboundControlFramesLimit: http2_protocol_options.
// max_outbound_control_frames is honoured. A client opens a large window,
// asks for a large body and does not read it, so the proxy's writes
// block; then it sends 300 PINGs. With the default limit (1000) the
// connection stays; with max_outbound_control_frames: 100 it closes,
// counted in http2.outbound_control_flood.
func TestHTTP2OutboundControlFramesLimit(t *testing.T) {
	if !testutil.InNetns(t) {
		return
	}
	var written atomic.Int64
	u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("x"), 32<<10)
		for i := 0; i < 64<<20/len(chunk) && r.Context().Err() == nil; i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			written.Add(int64(len(chunk)))
		}
	}))
	h, port := u.Host()
	listener := func(name, h2opts string) string {
		return fmt.Sprintf(`
  - name: %s
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %s
          codec_type: AUTO
          %s
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: backend}}]}]`, name, name, h2opts)
	}
	p := testutil.StartProxy(t, fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:%s%s
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
`, listener("default", ""), listener("small", "http2_protocol_options: {max_outbound_control_frames: 100}"), h, port), nil)

	for _, tc := range []struct {
		listener string
		flood    bool
	}{{"default", false}, {"small", true}} {
		t.Run(tc.listener, func(t *testing.T) {
			before := p.Stat(t, "http2.outbound_control_flood")
			c := dialH2C(t, p.Addr(tc.listener))
			c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
			c.fr.WriteWindowUpdate(0, 1<<30)
			c.headers(1, true)
			// The proxy's writes block once the socket buffers are full:
			// the upstream body stops flowing.
			last, still := int64(-1), 0
			for deadline := time.Now().Add(20 * time.Second); still < 30; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the body kept flowing (%d bytes)", written.Load())
				}
				if n := written.Load(); n == last && n > 0 {
					still++
				} else {
					last, still = n, 0
				}
			}
			var pings bytes.Buffer
			fr := http2.NewFramer(&pings, nil)
			for i := 0; i < 300; i++ {
				fr.WritePing(false, [8]byte{byte(i)})
			}
			if _, err := c.conn.Write(pings.Bytes()); err != nil {
				t.Fatal(err)
			}
			if tc.flood {
				testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "http2.outbound_control_flood")-before == 1 },
					"no outbound_control_flood with 300 PINGs owed")
				// Closed: a write fails once the proxy's reset arrives.
				testutil.Eventually(t, 5*time.Second, func() bool { _, err := c.conn.Write(pings.Bytes()[:17]); return err != nil },
					"the connection is still open")
				return
			}
			time.Sleep(time.Second)
			if n := p.Stat(t, "http2.outbound_control_flood") - before; n != 0 {
				t.Errorf("outbound_control_flood counted %d times with the default limit", n)
			}
		})
	}
}
