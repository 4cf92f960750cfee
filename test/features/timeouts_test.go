// Timeouts: the connection manager's request_timeout and idle_timeout,
// a route's idle_timeout.

package features_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestRequestAndIdleTimeouts(t *testing.T) {
	slow := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(400 * time.Millisecond)
		w.Write([]byte("late"))
	}))
	p := start(t, cfg{
		hcm: "request_timeout: 0.3s",
		vhosts: vhost("{match: {prefix: /idle}, route: {cluster: slow, timeout: 5s, idle_timeout: 0.1s}}",
			"{match: {prefix: /}, route: {cluster: slow, timeout: 5s}}"),
		clusters: "[" + staticCluster("slow", "", slow.Addr) + "]",
	})
	// A body that never finishes: request_timeout answers 408.
	conn, err := net.Dial("tcp", p.Addr("http"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly part")
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, _ := io.ReadAll(conn)
	if !strings.HasPrefix(string(b), "HTTP/1.1 408") || !strings.Contains(string(b), "request timeout") {
		t.Fatalf("request_timeout: %q", b)
	}
	// A route idle_timeout shorter than the upstream's silence: 408 stream timeout.
	code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/idle"))
	if code != 408 || body != "stream timeout" {
		t.Fatalf("route idle_timeout: %d %q", code, body)
	}
}

func TestSlowClientIdleTimeout(t *testing.T) {
	// A security test: raw inputs and faults, in a network namespace of its own.
	if !testutil.InNetns(t) {
		return
	}
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	p := start(t, cfg{
		hcm:      "common_http_protocol_options: {idle_timeout: 0.2s}",
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: u}}"),
		clusters: "[" + staticCluster("u", "", u.Addr) + "]",
	})
	conn, err := net.Dial("tcp", p.Addr("http"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a\r\n") // never finished
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, _ := io.ReadAll(conn)
	if !strings.HasPrefix(string(b), "HTTP/1.1 408") {
		t.Fatalf("a slow client gets 408, got %q", b)
	}
}
