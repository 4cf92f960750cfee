package server_test

import (
	"net"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestGlobalConnectionMonitor: the downstream_connections overload monitor
// caps connections across listeners (over the cap they are closed and
// counted in downstream_cx_overflow), except on a listener with
// ignore_global_conn_limit — Istio's stats and health ports.
func TestGlobalConnectionMonitor(t *testing.T) {
	// An upstream that accepts and holds connections open.
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	p := testutil.StartProxy(t, `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
overload_manager:
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config: {"@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig, max_active_downstream_connections: 1}
static_resources:
  listeners:
  - name: limited
    stat_prefix: limited
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [{name: tcp, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: none}}]}]
  - name: exempt
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    ignore_global_conn_limit: true
    filter_chains: [{filters: [{name: tcp, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: e, cluster: none}}]}]
  clusters:
  - {name: none, type: STATIC, connect_timeout: 5s, load_assignment: {cluster_name: none, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.}}}}}}]}]}}
`, portOf(up.Addr().String()))
	// open dials and reports whether the proxy kept the connection open.
	open := func(addr string) (net.Conn, bool) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		ne, ok := err.(net.Error)
		return c, ok && ne.Timeout() // still open: the read timed out
	}
	first, ok := open(p.Addr("limited"))
	defer first.Close()
	if !ok {
		t.Fatal("the first connection was closed")
	}
	second, ok := open(p.Addr("limited"))
	defer second.Close()
	if ok {
		t.Error("a second connection over max_active_downstream_connections 1 was kept")
	}
	exempt, ok := open(p.Addr("exempt"))
	defer exempt.Close()
	if !ok {
		t.Error("ignore_global_conn_limit: the exempt listener refused a connection")
	}
	if n := p.Stat(t, "listener.limited.downstream_cx_overflow"); n != 1 {
		t.Errorf("downstream_cx_overflow = %d", n)
	}
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}
