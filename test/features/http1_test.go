// HTTP/1: HTTP/1.0 and pipelining.

package features_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestHTTP10AndPipelining(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	p := start(t, cfg{
		hcm:      "http_protocol_options: {accept_http_10: true, default_host_for_http_10: legacy.example}",
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: u}}"),
		clusters: "[" + staticCluster("u", "", u.Addr) + "]",
	})
	out := rawExchange(t, p.Addr("http"), "GET /old HTTP/1.0\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.0 200") || !strings.Contains(out, "host=legacy.example") {
		t.Fatalf("HTTP/1.0 request: %q", out)
	}
	// Three pipelined requests on one connection are answered in order.
	conn, err := net.Dial("tcp", p.Addr("http"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	br := bufio.NewReader(conn)
	for i := 1; i <= 3; i++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), "path=/"+string(rune('0'+i))) {
			t.Fatalf("response %d out of order: %s", i, b)
		}
	}
}
