// TCP proxy: envoy.filters.network.tcp_proxy.

package features_test

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestTCPProxy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1024)
				n, _ := c.Read(buf)
				c.Write([]byte("echo:" + string(buf[:n])))
			}()
		}
	}()
	h, port, _ := net.SplitHostPort(ln.Addr().String())
	p := testutil.StartProxy(t, fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: db, cluster: echo}}]}]
  clusters: [{name: echo, type: STATIC, load_assignment: {cluster_name: echo, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}}]
`, h, port), nil)
	conn, err := net.Dial("tcp", p.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("hello"))
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, _ := io.ReadAll(conn)
	if string(b) != "echo:hello" {
		t.Fatalf("tcp_proxy: %q", b)
	}
	testutil.Eventually(t, 3*time.Second, func() bool { return p.Stat(t, "tcp.db.downstream_cx_total") == 1 }, "tcp stats")
}
