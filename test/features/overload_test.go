// The overload manager: resource monitors and overload actions.

package features_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/testutil"
)

// statAddr is the stat prefix of a listener without stat_prefix: its
// configured address (the tests' listeners ask for port 0).
func statAddr(string) string { return stats.SanitizeName("127.0.0.1:0") }

func overloadYAML(maxHeap int64, actions string) string {
	return fmt.Sprintf(`overload_manager:
  refresh_interval: 0.05s
  resource_monitors:
  - name: envoy.resource_monitors.fixed_heap
    typed_config: {"@type": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig, max_heap_size_bytes: %d}
  actions: %s
`, maxHeap, actions)
}

// TestOverloadManager: Envoy's fixed_heap monitor and overload actions —
// over the threshold new requests get 503 "envoy overloaded" (flag OM),
// with disable_http_keepalive responses close the connection; under it
// requests pass.
func TestOverloadManager(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	trig := func(name string, v float64) string {
		return fmt.Sprintf("{name: %s, triggers: [{name: envoy.resource_monitors.fixed_heap, threshold: {value: %g}}]}", name, v)
	}
	// A 1 MiB budget: the proxy's heap is far above it.
	over := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
		extra:    overloadYAML(1<<20, "["+trig("envoy.overload_actions.shrink_heap", 0.95)+", "+trig("envoy.overload_actions.stop_accepting_requests", 0.98)+"]"),
	})
	code, _, body := testutil.Get(t, testutil.Client(), over.URL("http", "/"))
	if code != 503 || body != "envoy overloaded" {
		t.Errorf("over the heap budget: %d %q, want 503 envoy overloaded", code, body)
	}
	for name, want := range map[string]int64{
		"overload.envoy.overload_actions.stop_accepting_requests.active": 1,
		"overload.envoy.overload_actions.shrink_heap.active":             1,
		"overload.envoy.resource_monitors.fixed_heap.pressure":           100,
		"http.ingress.downstream_rq_overload_close":                      1,
	} {
		if got := over.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	// A 64 GiB budget: nothing is shed; keep-alive off at pressure ≥ 0.
	under := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
		extra:    overloadYAML(64<<30, "["+trig("envoy.overload_actions.stop_accepting_requests", 0.98)+", "+trig("envoy.overload_actions.disable_http_keepalive", 0)+"]"),
	})
	resp, err := testutil.Client().Get(under.URL("http", "/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("under the budget with disable_http_keepalive: %d, Connection close = %v; want 200 and close", resp.StatusCode, resp.Close)
	}
}

// reject_incoming_connections closes each accepted connection at once
// (listener.<addr>.downstream_cx_overload_reject); stop_accepting_connections
// leaves new connections in the kernel's backlog, unanswered.
func TestOverloadConnectionActions(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	trig := func(name string) string {
		return fmt.Sprintf("{name: %s, triggers: [{name: envoy.resource_monitors.fixed_heap, threshold: {value: 0.5}}]}", name)
	}
	for _, action := range []string{"envoy.overload_actions.reject_incoming_connections", "envoy.overload_actions.stop_accepting_connections"} {
		p := start(t, cfg{
			vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
			clusters: "[" + staticCluster("up", "", up.Addr) + "]",
			extra:    overloadYAML(1<<20, "["+trig(action)+"]"),
		})
		testutil.Eventually(t, 3*time.Second, func() bool { return p.Stat(t, "overload."+action+".active") == 1 }, "%s never active", action)
		c, err := net.DialTimeout("tcp", p.Addr("http"), time.Second)
		if err != nil {
			t.Fatalf("%s: dial: %v", action, err)
		}
		c.SetDeadline(time.Now().Add(700 * time.Millisecond))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		n, err := c.Read(make([]byte, 100))
		c.Close()
		if n != 0 {
			t.Errorf("%s: got a response", action)
		}
		var ne net.Error
		timedOut := errors.As(err, &ne) && ne.Timeout()
		rejects := p.Stat(t, "listener."+statAddr(p.Addr("http"))+".downstream_cx_overload_reject")
		switch action {
		case "envoy.overload_actions.reject_incoming_connections":
			if timedOut || rejects != 1 {
				t.Errorf("reject: timed out %v (want a close), downstream_cx_overload_reject %d", timedOut, rejects)
			}
		default:
			if !timedOut || rejects != 0 || p.Stat(t, "listener."+statAddr(p.Addr("http"))+".downstream_cx_total") != 0 {
				t.Errorf("stop accepting: timed out %v (want to wait in the backlog), accepted %d", timedOut, p.Stat(t, "listener."+statAddr(p.Addr("http"))+".downstream_cx_total"))
			}
		}
	}
}

// reduce_timeouts with a saturated trigger shrinks the idle timeout to
// its min_timeout: an idle keep-alive connection closes after 0.3 s
// instead of the configured hour.
func TestOverloadReduceTimeouts(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	p := start(t, cfg{
		hcm:      "common_http_protocol_options: {idle_timeout: 3600s}",
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
		extra: overloadYAML(1<<20, `[{name: envoy.overload_actions.reduce_timeouts,
      triggers: [{name: envoy.resource_monitors.fixed_heap, scaled: {scaling_threshold: 0.1, saturation_threshold: 0.2}}],
      typed_config: {"@type": type.googleapis.com/envoy.config.overload.v3.ScaleTimersOverloadActionConfig,
        timer_scale_factors: [{timer: HTTP_DOWNSTREAM_CONNECTION_IDLE, min_timeout: 0.3s}]}}]`),
	})
	testutil.Eventually(t, 3*time.Second, func() bool {
		return p.Stat(t, "overload.envoy.overload_actions.reduce_timeouts.scale_percent") == 100
	}, "reduce_timeouts never saturated")
	c, err := net.Dial("tcp", p.Addr("http"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	// The response, then the close: ReadAll returns at EOF.
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 200") {
		t.Fatalf("response: %q", b)
	}
	testutil.Eventually(t, 3*time.Second, func() bool { return p.Stat(t, "http.ingress.downstream_cx_idle_timeout") == 1 }, "no idle timeout counted")
}

// transport_socket_connect_timeout closes a connection whose TLS handshake
// does not finish in time (downstream_cx_transport_socket_connect_timeout).
func TestTransportSocketConnectTimeout(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	ca := testutil.NewCA(t, "ca")
	cert := ca.Issue(t, "srv", "localhost")
	p := testutil.StartProxy(t, fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: tls
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - transport_socket_connect_timeout: 0.3s
      transport_socket: {name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext,
        common_tls_context: {tls_certificates: [{certificate_chain: %s, private_key: %s}]}}}
      filters: [{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: up}}]
  clusters: [%s]
`, pemInline(cert.CertPEM), pemInline(cert.KeyPEM), staticCluster("up", "", up.Addr)), nil)
	c, err := net.Dial("tcp", p.Addr("tls"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 10)) // no ClientHello: the proxy must close
	if err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("silent TLS client: read %v after %v", err, time.Since(start))
	}
	testutil.Eventually(t, 3*time.Second, func() bool {
		return p.Stat(t, "listener."+statAddr(p.Addr("tls"))+".downstream_cx_transport_socket_connect_timeout") == 1
	}, "timeout not counted")
	// The timeout bounds only the handshake: a connection that got through
	// is still served after it.
	tc, err := tls.Dial("tcp", p.Addr("tls"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	time.Sleep(600 * time.Millisecond)
	io.WriteString(tc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	tc.SetReadDeadline(time.Now().Add(3 * time.Second))
	b := make([]byte, 12)
	if _, err := io.ReadFull(tc, b); err != nil || string(b) != "HTTP/1.1 200" {
		t.Fatalf("a connection past its handshake was cut: %q %v", b, err)
	}
	if n := p.Stat(t, "listener."+statAddr(p.Addr("tls"))+".downstream_cx_transport_socket_connect_timeout"); n != 1 {
		t.Errorf("timeouts counted: %d, want 1", n)
	}
}
