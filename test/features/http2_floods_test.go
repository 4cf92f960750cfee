// HTTP/2 flood protection: rapid reset, empty frames, PRIORITY and
// WINDOW_UPDATE floods.

package features_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
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
		t.Logf("%d streams sent and reset before GOAWAY; %d reached the upstream", sent, upstream.Load()-before)
	})

	t.Run("empty DATA frames", func(t *testing.T) {
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

	// The proxy keeps serving.
	if code, _, _ := testutil.Get(t, testutil.H2CClient(), p.URL("main", "/")); code != 200 {
		t.Fatalf("after the floods: %d", code)
	}
}
