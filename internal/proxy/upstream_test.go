package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestHTTP2Upstream(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("h2"))
	h2 := "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}"
	down := "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, use_downstream_protocol_config: {}}}"
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /h2}, route: {cluster: h2}}", "{match: {prefix: /down}, route: {cluster: down}}"),
		clusters: "[" + staticCluster("h2", h2, u.Addr) + ", " + staticCluster("down", down, u.Addr) + "]",
	})
	_, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/h2"))
	if !strings.Contains(body, "proto=HTTP/2.0") {
		t.Fatalf("explicit http2: upstream saw\n%s", body)
	}
	_, _, body = testutil.Get(t, testutil.Client(), p.URL("http", "/down"))
	if !strings.Contains(body, "proto=HTTP/1.1") {
		t.Fatalf("use_downstream_protocol with HTTP/1.1 downstream: upstream saw\n%s", body)
	}
	_, _, body = testutil.Get(t, testutil.H2CClient(), p.URL("http", "/down"))
	if !strings.Contains(body, "proto=HTTP/2.0") {
		t.Fatalf("use_downstream_protocol with HTTP/2 downstream: upstream saw\n%s", body)
	}
	if n := p.Stat(t, "cluster.h2.upstream_cx_http2_total"); n != 1 {
		t.Errorf("upstream_cx_http2_total = %d", n)
	}
}

func TestDNSClusters(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("dns"))
	_, port := u.Host()
	for _, typ := range []string{"STRICT_DNS", "LOGICAL_DNS"} {
		t.Run(typ, func(t *testing.T) {
			p := start(t, cfg{
				vhosts: vhost("{match: {prefix: /}, route: {cluster: d, auto_host_rewrite: true}}"),
				clusters: fmt.Sprintf("[{name: d, type: %s, dns_lookup_family: V4_ONLY, dns_refresh_rate: 0.2s, connect_timeout: 1s, load_assignment: {cluster_name: d, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: localhost, port_value: %s}}}}]}]}}]",
					typ, port),
			})
			code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/"))
			if code != 200 || !strings.Contains(body, "upstream=dns") {
				t.Fatalf("%d %s", code, body)
			}
			if !strings.Contains(body, "host=localhost") {
				t.Errorf("auto_host_rewrite should send the DNS name as host:\n%s", body)
			}
			if n := p.Stat(t, "cluster.d.update_success"); n < 1 {
				t.Errorf("update_success = %d", n)
			}
		})
	}
}

func TestActiveHealthChecks(t *testing.T) {
	var sick atomic.Bool
	mk := func(name string, flaky bool) *testutil.Upstream {
		return testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" {
				if flaky && sick.Load() {
					w.WriteHeader(503)
					return
				}
				if r.Host != "hc.example" || r.UserAgent() != "Envoy/HC" {
					w.WriteHeader(400) // must see the configured host and Envoy's UA
					return
				}
				return
			}
			w.Write([]byte(name))
		}))
	}
	good, bad := mk("good", false), mk("flaky", true)
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /}, route: {cluster: hc}}"),
		clusters: "[" + staticCluster("hc", "health_checks: [{timeout: 1s, interval: 0.05s, no_traffic_interval: 0.05s, unhealthy_threshold: 2, healthy_threshold: 2, http_health_check: {path: /healthz, host: hc.example}}]",
			good.Addr, bad.Addr) + "]",
	})
	c := testutil.Client()
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		_, _, b := testutil.Get(t, c, p.URL("http", "/"))
		seen[b]++
	}
	if seen["good"] == 0 || seen["flaky"] == 0 {
		t.Fatalf("both hosts should serve while healthy: %v", seen)
	}
	sick.Store(true)
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.hc.membership_healthy") == 1 }, "flaky host not ejected")
	for i := 0; i < 20; i++ {
		if _, _, b := testutil.Get(t, c, p.URL("http", "/")); b != "good" {
			t.Fatalf("request %d went to an unhealthy host: %q", i, b)
		}
	}
	_, _, clusters := testutil.Get(t, c, "http://"+p.Admin+"/clusters")
	if !strings.Contains(clusters, bad.Addr+"::health_flags::/failed_active_hc") {
		t.Errorf("/clusters does not show the failed host:\n%s", clusters)
	}
	sick.Store(false)
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.hc.membership_healthy") == 2 }, "flaky host not restored")
}

func TestWeightedClustersAndLeastRequest(t *testing.T) {
	a := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	b := testutil.StartUpstream(t, testutil.EchoHandler("b"))
	p := start(t, cfg{
		vhosts: vhost(
			"{match: {prefix: /w}, route: {weighted_clusters: {clusters: [{name: a, weight: 80}, {name: b, weight: 20}]}}}",
			"{match: {prefix: /lr}, route: {cluster: lr}}",
		),
		clusters: "[" + staticCluster("a", "", a.Addr) + ", " + staticCluster("b", "", b.Addr) + ", " +
			staticCluster("lr", "lb_policy: LEAST_REQUEST, least_request_lb_config: {choice_count: 2}", a.Addr, b.Addr) + "]",
	})
	c := testutil.Client()
	seen := map[string]int{}
	for i := 0; i < 500; i++ {
		_, h, _ := testutil.Get(t, c, p.URL("http", "/w"))
		seen[h.Get("x-upstream")]++
	}
	if seen["a"] < 350 || seen["a"] > 450 {
		t.Errorf("80/20 weights gave %v", seen)
	}
	seen = map[string]int{}
	for i := 0; i < 100; i++ {
		_, h, _ := testutil.Get(t, c, p.URL("http", "/lr"))
		seen[h.Get("x-upstream")]++
	}
	if seen["a"] == 0 || seen["b"] == 0 {
		t.Errorf("least request used one host only: %v", seen)
	}
}

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

func TestPathNormalization(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	p := start(t, cfg{
		hcm:      "normalize_path: true\nmerge_slashes: true\npath_with_escaped_slashes_action: REJECT_REQUEST",
		vhosts:   vhost("{match: {prefix: /public/}, route: {cluster: u}}"),
		clusters: "[" + staticCluster("u", "", u.Addr) + "]",
	})
	cases := []struct {
		path   string
		status int
		seen   string
	}{
		{"/public/a/../b", 200, "path=/public/b"},
		{"/public//x///y", 200, "path=/public/x/y"},
		{"/public/%61bc", 200, "path=/public/abc"},
		{"/public/../admin", 404, ""},
		{"/public/a%2Fb", 400, ""},
		{"/../../etc/passwd", 400, ""},
	}
	for _, tc := range cases {
		out := rawExchange(t, p.Addr("http"), "GET "+tc.path+" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(out, fmt.Sprintf("HTTP/1.1 %d", tc.status)) || !strings.Contains(out, tc.seen) {
			t.Errorf("%s: got %q", tc.path, firstLine(out))
		}
	}
}
