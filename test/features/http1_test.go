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

// rawHeadUpstream answers every request with a chunked "ok" body and an
// x-trailer trailer, and hands the request head it read (raw bytes, so
// the header case shows) to heads.
func rawHeadUpstream(t *testing.T) (addr string, heads chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	heads = make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				var head strings.Builder
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					head.WriteString(l)
					if l == "\r\n" {
						break
					}
				}
				heads <- head.String()
				io.WriteString(c, "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-up-name: v\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\nok\r\n0\r\nx-trailer: t\r\n\r\n")
			}()
		}
	}()
	return ln.Addr().String(), heads
}

// TestHeaderKeyFormatAndTrailers covers Http1ProtocolOptions on both
// sides: header_key_format proper_case_words re-cases the names Legate
// writes (response heads to clients, request heads to upstreams), and
// trailers cross HTTP/1 only with enable_trailers, which Envoy's codec
// needs too (without it, proxied trailers are dropped).
func TestHeaderKeyFormatAndTrailers(t *testing.T) {
	up, heads := rawHeadUpstream(t)
	plain := start(t, cfg{vhosts: vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up) + "]"})
	const opts = "{header_key_format: {proper_case_words: {}}, enable_trailers: true}"
	cased := start(t, cfg{
		hcm:    "http_protocol_options: " + opts,
		vhosts: vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: "+
			"{'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http_protocol_options: "+opts+"}}}", up) + "]"})
	const req = "GET /x HTTP/1.1\r\nhost: example.com\r\nx-my-header: 1\r\nconnection: close\r\n\r\n"

	resp := rawExchange(t, plain.Addr("http"), req)
	head := <-heads
	if !strings.Contains(head, "\r\nx-my-header: 1\r\n") || !strings.Contains(resp, "\r\ncontent-type: text/plain\r\n") {
		t.Errorf("without header_key_format names stay lower case:\nupstream saw %q\nclient saw %q", head, resp)
	}
	if strings.Contains(resp, "x-trailer") {
		t.Errorf("without enable_trailers the trailer crossed: %q", resp)
	}

	resp = rawExchange(t, cased.Addr("http"), req)
	head = <-heads
	for _, want := range []string{"\r\nX-My-Header: 1\r\n", "\r\nHost: example.com\r\n"} {
		if !strings.Contains(head, want) {
			t.Errorf("upstream request head lacks %q: %q", want, head)
		}
	}
	for _, want := range []string{"\r\nContent-Type: text/plain\r\n", "\r\nX-Up-Name: v\r\n", "\r\nTransfer-Encoding: chunked\r\n", "\r\nX-Trailer: t\r\n"} {
		if !strings.Contains(resp, want) {
			t.Errorf("client response lacks %q: %q", want, resp)
		}
	}
	if !strings.HasPrefix(resp, "HTTP/1.1 200 OK\r\n") {
		t.Errorf("status line changed: %q", firstLine(resp))
	}
}
