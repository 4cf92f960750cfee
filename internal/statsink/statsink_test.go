package statsink_test

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

const cfg = `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
stats_flush_interval: 0.1s
stats_sinks:
- name: envoy.stat_sinks.statsd
  typed_config: {"@type": type.googleapis.com/envoy.config.metrics.v3.StatsdSink, address: {socket_address: {address: 127.0.0.1, port_value: {{.UDP}}, protocol: UDP}}}
- name: envoy.stat_sinks.dog_statsd
  typed_config: {"@type": type.googleapis.com/envoy.config.metrics.v3.DogStatsdSink, address: {socket_address: {address: 127.0.0.1, port_value: {{.Dog}}, protocol: UDP}}, prefix: legate}
- name: envoy.stat_sinks.statsd
  typed_config: {"@type": type.googleapis.com/envoy.config.metrics.v3.StatsdSink, tcp_cluster_name: statsd_tcp}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]}]}
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
  clusters:
  - name: statsd_tcp
    type: STATIC
    load_assignment: {cluster_name: statsd_tcp, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.TCP}}}}}}]}]}
`

type collector struct {
	mu    sync.Mutex
	lines []string
}

func (c *collector) add(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, strings.Split(strings.TrimSpace(s), "\n")...)
}

func (c *collector) has(s string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		if l == s {
			return true
		}
	}
	return false
}

func udpCollector(t *testing.T) (*collector, string) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	c := &collector{}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			c.add(string(buf[:n]))
		}
	}()
	_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
	return c, port
}

func TestStatsdSinks(t *testing.T) {
	statsd, udpPort := udpCollector(t)
	dog, dogPort := udpCollector(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	tcp := &collector{}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				sc := bufio.NewScanner(conn)
				for sc.Scan() {
					tcp.add(sc.Text())
				}
			}()
		}
	}()
	_, tcpPort, _ := net.SplitHostPort(ln.Addr().String())
	p := testutil.StartProxy(t, cfg, map[string]string{"UDP": udpPort, "Dog": dogPort, "TCP": tcpPort})
	for i := 0; i < 3; i++ {
		resp, err := testutil.Client().Get(p.URL("http", "/"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		return statsd.has("envoy.http.ingress.downstream_rq_total:3|c") || statsd.has("envoy.http.ingress.downstream_rq_total:2|c") || statsd.has("envoy.http.ingress.downstream_rq_total:1|c")
	}, "statsd: no downstream_rq_total counter delta")
	testutil.Eventually(t, 5*time.Second, func() bool {
		dog.mu.Lock()
		defer dog.mu.Unlock()
		for _, l := range dog.lines {
			if strings.HasPrefix(l, "legate.http.downstream_rq_total:") && strings.Contains(l, "|c|#envoy.http_conn_manager_prefix:ingress") {
				return true
			}
		}
		return false
	}, "dog_statsd: no tagged counter")
	testutil.Eventually(t, 5*time.Second, func() bool {
		tcp.mu.Lock()
		defer tcp.mu.Unlock()
		for _, l := range tcp.lines {
			if strings.HasPrefix(l, "envoy.http.ingress.downstream_cx_active:") && strings.HasSuffix(l, "|g") {
				return true
			}
		}
		return false
	}, "TCP statsd through the cluster: no gauge")
}
