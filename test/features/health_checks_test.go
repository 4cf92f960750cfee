// Active health checks: HTTP, gRPC and HTTP/2 checks, ejection and
// restoration, the event log.

package features_test

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/legateproxy/legate/internal/testutil"
)

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

// TestGRPCAndHTTP2HealthChecks: grpc_health_check (grpc.health.v1 with a
// service name) ejects a NOT_SERVING host and restores it, writing Envoy's
// health check events to event_log_path; an HTTP health check with
// codec_client_type HTTP2 reaches an h2c upstream over HTTP/2.
func TestGRPCAndHTTP2HealthChecks(t *testing.T) {
	type backend struct {
		addr string
		hs   *health.Server
	}
	mk := func() backend {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer()
		hs := health.NewServer()
		hs.SetServingStatus("echo", healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(s, hs)
		go s.Serve(l)
		t.Cleanup(s.Stop)
		return backend{l.Addr().String(), hs}
	}
	a, b := mk(), mk()
	var h2seen atomic.Bool
	h2up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && r.ProtoMajor == 2 {
			h2seen.Store(true)
		}
	}))
	events := filepath.Join(t.TempDir(), "hc-events.log")
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /}, route: {cluster: g}}"),
		clusters: "[" + staticCluster("g", "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}, "+
			"health_checks: [{timeout: 1s, interval: 0.1s, no_traffic_interval: 0.1s, unhealthy_threshold: 2, healthy_threshold: 1, event_log_path: "+events+", grpc_health_check: {service_name: echo}}]", a.addr, b.addr) + ", " +
			staticCluster("h2", "health_checks: [{timeout: 1s, interval: 0.1s, no_traffic_interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /healthz, codec_client_type: HTTP2}}]", h2up.Addr) + "]",
	})
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.g.membership_healthy") == 2 }, "gRPC-checked hosts never healthy")
	b.hs.SetServingStatus("echo", healthpb.HealthCheckResponse_NOT_SERVING)
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.g.membership_healthy") == 1 }, "NOT_SERVING host not ejected")
	b.hs.SetServingStatus("echo", healthpb.HealthCheckResponse_SERVING)
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.g.membership_healthy") == 2 }, "host not restored")
	// The event is written after the host's state changes, off the
	// checker's path: wait for it.
	for _, want := range []string{`"health_checker_type":"GRPC"`, `"eject_unhealthy_event":{"failure_type":"ACTIVE"`, `"add_healthy_event":{"first_check":false}`, `"cluster_name":"g"`} {
		var log []byte
		testutil.Eventually(t, 3*time.Second, func() bool { log, _ = os.ReadFile(events); return strings.Contains(string(log), want) }, "event log lacks %s", want)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.h2.membership_healthy") == 1 && h2seen.Load() }, "HTTP/2 health check never reached the h2c upstream over HTTP/2")
}
