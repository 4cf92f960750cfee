// Draining: GOAWAY on HTTP/2 connections when the server drains.

package features_test

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// waitGoAway reads frames on an HTTP/2 connection until GOAWAY (true) or
// the deadline (false).
func waitGoAway(t *testing.T, c net.Conn, d time.Duration) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	fr := http2.NewFramer(c, c)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return false
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			return true
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		}
	}
}

func h2Conn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, http2.ClientPreface)
	http2.NewFramer(c, c).WriteSettings()
	return c
}

// Regression: HTTP/2 drain was one sync.Once per filter chain, so after
// /healthcheck/fail then /healthcheck/ok, later HTTP/2 connections never got
// GOAWAY when draining again.
func TestHTTP2DrainAfterHealthcheckOK(t *testing.T) {
	p := start(t, cfg{vhosts: vhost(`{match: {prefix: /}, direct_response: {status: 200}}`), clusters: "[]"})
	post := func(path string) {
		resp, err := http.Post("http://"+p.Admin+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	c1 := h2Conn(t, p.Addr("http"))
	time.Sleep(100 * time.Millisecond) // let the proxy take the connection
	post("/healthcheck/fail")
	if !waitGoAway(t, c1, 5*time.Second) {
		t.Fatal("the first drain sent no GOAWAY")
	}
	post("/healthcheck/ok")
	c2 := h2Conn(t, p.Addr("http"))
	time.Sleep(100 * time.Millisecond)
	post("/healthcheck/fail")
	if !waitGoAway(t, c2, 5*time.Second) {
		t.Fatal("a connection opened after /healthcheck/ok got no GOAWAY on the next drain")
	}
}

// An HTTP/2 connection is drained on its own: max_connection_duration
// sends GOAWAY to the connection that reached it, not to the others on
// the same filter chain (they used to share one codec generation, so one
// connection's drain reached every connection opened before it).
func TestHTTP2DrainIsPerConnection(t *testing.T) {
	p := start(t, cfg{
		hcm:    `common_http_protocol_options: {max_connection_duration: 1.5s}`,
		vhosts: vhost(`{match: {prefix: /}, direct_response: {status: 200}}`), clusters: "[]",
	})
	first := h2Conn(t, p.Addr("http"))
	time.Sleep(time.Second)
	second := h2Conn(t, p.Addr("http"))
	if !waitGoAway(t, first, 5*time.Second) {
		t.Fatal("the connection that reached max_connection_duration got no GOAWAY")
	}
	// The second connection has about a second left: it must not have been
	// drained with the first.
	if waitGoAway(t, second, 300*time.Millisecond) {
		t.Fatal("draining one HTTP/2 connection sent GOAWAY to another")
	}
	if !waitGoAway(t, second, 5*time.Second) {
		t.Fatal("the second connection got no GOAWAY at its own max_connection_duration")
	}
	if got := p.Stat(t, "http.ingress.downstream_cx_max_duration_reached"); got != 2 {
		t.Errorf("downstream_cx_max_duration_reached = %d, want 2", got)
	}
}
