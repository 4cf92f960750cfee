// WebSocket upgrades.

package features_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestWebSocketUpgrade(t *testing.T) {
	echo := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			w.WriteHeader(400)
			return
		}
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
		brw.Flush()
		buf := make([]byte, 1024)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				conn.Write([]byte(strings.ToUpper(string(buf[:n]))))
			}
			if err != nil {
				return
			}
		}
	}))
	p := start(t, cfg{
		hcm:      "upgrade_configs: [{upgrade_type: websocket}]",
		vhosts:   vhost("{match: {prefix: /ws}, route: {cluster: echo}}", "{match: {prefix: /nows}, route: {cluster: echo, upgrade_configs: [{upgrade_type: websocket, enabled: false}]}}"),
		clusters: "[" + staticCluster("echo", "", echo.Addr) + "]",
	})
	conn, err := net.Dial("tcp", p.Addr("http"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(conn, "hello frames")
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(br, buf, len("hello frames"))
	if err != nil || string(buf[:n]) != "HELLO FRAMES" {
		t.Fatalf("echo through the upgraded connection: %q %v", buf[:n], err)
	}
	// Disabled on a route: 403 as Envoy.
	out := rawExchange(t, p.Addr("http"), "GET /nows HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 403") {
		t.Fatalf("upgrade disabled on the route: %q", firstLine(out))
	}
}
