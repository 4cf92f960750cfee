// Global rate limiting: envoy.filters.http.ratelimit and
// envoy.filters.network.ratelimit against Envoy's real Rate Limit Service
// (github.com/envoyproxy/ratelimit) and redis, started by
// testutil.StartRateLimitService (scripts/deps.d/ratelimit.sh installs them).

package features_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/testutil"
)

// rlsConfig is the service's rate limit configuration: per hour, so that a
// test never sees a window reset (awayFromHourBoundary makes sure).
const rlsConfig = `domain: legate
descriptors:
  - key: generic_key
    value: limited
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: remote_address
    rate_limit: {unit: hour, requests_per_unit: 4}
  - key: generic_key
    value: tcp
    rate_limit: {unit: hour, requests_per_unit: 2}
`

// awayFromHourBoundary waits out the last seconds of an hour, when the
// service's hourly counters would reset in the middle of the test.
func awayFromHourBoundary() {
	now := time.Now()
	if left := now.Truncate(time.Hour).Add(time.Hour).Sub(now); left < 20*time.Second {
		time.Sleep(left + time.Second)
	}
}

// rlsCluster is a STATIC HTTP/2 cluster for the service's gRPC address.
func rlsCluster(addr string) string {
	return staticCluster("rls", "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}", addr)
}

// rateLimitFilter renders the HCM's http_filters: the rate limit filter
// (domain legate, draft-03 headers) and the router.
func rateLimitFilter(extra string) string {
	return `http_filters: [{name: envoy.filters.http.ratelimit, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit, domain: legate, timeout: 2s, enable_x_ratelimit_headers: DRAFT_VERSION_03, ` + extra + `rate_limit_service: {transport_api_version: V3, grpc_service: {envoy_grpc: {cluster_name: rls}}}}}, {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`
}

// rateLimitRoutes: the virtual host limits by remote_address; /generic and
// /user have their own rate_limits (which override the virtual host's),
// /ip uses the virtual host's, /free ignores them (RateLimitPerRoute).
const rateLimitRoutes = `[{name: all, domains: ['*'], rate_limits: [{actions: [{remote_address: {}}]}], routes: [
  {match: {prefix: /generic}, route: {cluster: up, rate_limits: [{actions: [{generic_key: {descriptor_value: limited}}]}]}},
  {match: {prefix: /user}, route: {cluster: up, rate_limits: [{actions: [{request_headers: {header_name: x-user, descriptor_key: user}}]}]}},
  {match: {prefix: /ip}, route: {cluster: up}},
  {match: {prefix: /free}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.ratelimit: {"@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute, vh_rate_limits: IGNORE}}}]}]`

// TestRateLimit: requests under the service's limit pass (200) with the
// x-ratelimit-* headers and the service's own response headers; the next
// one is answered 429 with x-envoy-ratelimited and never reaches the
// upstream. Descriptors come from generic_key, request_headers (a missing
// header sends none) and the virtual host's remote_address, and a route
// can ignore the virtual host's limits. Stats are
// cluster.<route target cluster>.ratelimit.ok/over_limit, as Envoy's.
func TestRateLimit(t *testing.T) {
	awayFromHourBoundary()
	rls := testutil.StartRateLimitService(t, map[string]string{"legate.yaml": rlsConfig}, "LIMIT_RESPONSE_HEADERS_ENABLED=true")
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	p := start(t, cfg{
		hcm:      rateLimitFilter(""),
		vhosts:   rateLimitRoutes,
		clusters: "[" + staticCluster("up", "", up.Addr) + ", " + rlsCluster(rls.GRPCAddr) + "]",
	})
	c := testutil.Client()
	codes := func(n int, path string, hdr ...string) (out []int, last http.Header) {
		for i := 0; i < n; i++ {
			code, h, _ := testutil.Get(t, c, p.URL("http", path), hdr...)
			out, last = append(out, code), h
		}
		return out, last
	}

	// generic_key: 3 an hour.
	code, h, body := testutil.Get(t, c, p.URL("http", "/generic"))
	if code != 200 || upstreamOf(body) != "upstream=up" {
		t.Fatalf("first request: %d %q", code, body)
	}
	if got := h.Get("x-ratelimit-limit"); got != "3, 3;w=3600" {
		t.Errorf("x-ratelimit-limit %q, want %q", got, "3, 3;w=3600")
	}
	if got := h.Get("x-ratelimit-remaining"); got != "2" {
		t.Errorf("x-ratelimit-remaining %q, want 2", got)
	}
	if reset, err := strconv.Atoi(h.Get("x-ratelimit-reset")); err != nil || reset <= 0 || reset > 3600 {
		t.Errorf("x-ratelimit-reset %q", h.Get("x-ratelimit-reset"))
	}
	if h.Get("x-envoy-ratelimited") != "" {
		t.Error("x-envoy-ratelimited on a request under the limit")
	}
	// The service's own headers (LIMIT_RESPONSE_HEADERS_ENABLED) come
	// through response_headers_to_add.
	if h.Get("ratelimit-limit") == "" {
		t.Errorf("the service's response_headers_to_add are missing: %v", h)
	}
	hits := up.Hits()
	got, h := codes(3, "/generic")
	if fmt.Sprint(got) != "[200 200 429]" {
		t.Fatalf("/generic codes %v, want [200 200 429]", got)
	}
	if h.Get("x-envoy-ratelimited") != "true" || h.Get("x-ratelimit-remaining") != "0" || h.Get("x-ratelimit-limit") != "3, 3;w=3600" {
		t.Errorf("429 headers: %v", h)
	}
	if up.Hits() != hits+2 {
		t.Errorf("the rate limited request reached the upstream (%d hits, want %d)", up.Hits(), hits+2)
	}

	// request_headers: 2 an hour per user; no header, no descriptor.
	if got, _ := codes(3, "/user", "x-user", "alice"); fmt.Sprint(got) != "[200 200 429]" {
		t.Errorf("alice: %v, want [200 200 429]", got)
	}
	if got, _ := codes(1, "/user", "x-user", "bob"); fmt.Sprint(got) != "[200]" {
		t.Errorf("bob: %v, want [200]", got)
	}
	okBefore := p.Stat(t, "cluster.up.ratelimit.ok")
	if got, _ := codes(5, "/user"); fmt.Sprint(got) != "[200 200 200 200 200]" {
		t.Errorf("no x-user: %v, want all 200", got)
	}
	// remote_address from the virtual host: 4 an hour.
	if got, _ := codes(5, "/ip"); fmt.Sprint(got) != "[200 200 200 200 429]" {
		t.Errorf("/ip: %v, want [200 200 200 200 429]", got)
	}
	// vh_rate_limits IGNORE: no call at all.
	if got, _ := codes(6, "/free"); fmt.Sprint(got) != "[200 200 200 200 200 200]" {
		t.Errorf("/free: %v, want all 200", got)
	}
	// ok: 3 generic + 2 alice + 1 bob + 4 ip; over_limit: generic, alice, ip.
	for name, want := range map[string]int64{
		"cluster.up.ratelimit.ok":         10,
		"cluster.up.ratelimit.over_limit": 3,
		"cluster.up.ratelimit.error":      -1,
		"cluster.up.upstream_rq_429":      3,
	} {
		if got := p.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	if okBefore != 6 {
		t.Errorf("cluster.up.ratelimit.ok before the requests without x-user = %d, want 6", okBefore)
	}
}

// TestRateLimitFailureMode: with the service stopped, failure_mode_deny
// false lets requests through (ratelimit.error and failure_mode_allowed
// count them) and failure_mode_deny true answers 500.
func TestRateLimitFailureMode(t *testing.T) {
	awayFromHourBoundary()
	rls := testutil.StartRateLimitService(t, map[string]string{"legate.yaml": rlsConfig})
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	proxy := func(deny bool) *testutil.Proxy {
		return start(t, cfg{
			hcm:      rateLimitFilter(fmt.Sprintf("failure_mode_deny: %v, ", deny)),
			vhosts:   rateLimitRoutes,
			clusters: "[" + staticCluster("up", "", up.Addr) + ", " + rlsCluster(rls.GRPCAddr) + "]",
		})
	}
	allow, deny := proxy(false), proxy(true)
	c := testutil.Client()
	for _, p := range []*testutil.Proxy{allow, deny} {
		if code, _, _ := testutil.Get(t, c, p.URL("http", "/user"), "x-user", "carol"); code != 200 {
			t.Fatalf("with the service up: %d", code)
		}
	}
	rls.Stop()
	for i := 0; i < 3; i++ {
		if code, _, body := testutil.Get(t, c, allow.URL("http", "/user"), "x-user", "dave"); code != 200 || upstreamOf(body) != "upstream=up" {
			t.Errorf("failure_mode_deny false, service down: %d %q, want 200 from the upstream", code, body)
		}
		if code, _, _ := testutil.Get(t, c, deny.URL("http", "/user"), "x-user", "dave"); code != 500 {
			t.Errorf("failure_mode_deny true, service down: %d, want 500", code)
		}
	}
	for _, x := range []struct {
		p    *testutil.Proxy
		name string
		want int64
	}{
		{allow, "cluster.up.ratelimit.error", 3}, {allow, "cluster.up.ratelimit.failure_mode_allowed", 3}, {allow, "cluster.up.ratelimit.ok", 1},
		{deny, "cluster.up.ratelimit.error", 3}, {deny, "cluster.up.ratelimit.failure_mode_allowed", -1},
	} {
		if got := x.p.Stat(t, x.name); got != x.want {
			t.Errorf("%s = %d, want %d", x.name, got, x.want)
		}
	}
}

// TestRateLimitNetworkFilter: envoy.filters.network.ratelimit asks the
// service once per connection with its fixed descriptors; the third
// connection is over the limit and closed before anything is proxied.
func TestRateLimitNetworkFilter(t *testing.T) {
	awayFromHourBoundary()
	rls := testutil.StartRateLimitService(t, map[string]string{"legate.yaml": rlsConfig})
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	h, port, _ := net.SplitHostPort(up.Addr)
	p := testutil.StartProxy(t, fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - {name: envoy.filters.network.ratelimit, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.ratelimit.v3.RateLimit, stat_prefix: tcp, domain: legate, timeout: 2s, descriptors: [{entries: [{key: generic_key, value: tcp}]}], rate_limit_service: {transport_api_version: V3, grpc_service: {envoy_grpc: {cluster_name: rls}}}}}
      - {name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: tcp, cluster: up}}
  clusters: [{name: up, type: STATIC, load_assignment: {cluster_name: up, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}}, %s]
`, h, port, rlsCluster(rls.GRPCAddr)), nil)
	exchange := func() string {
		conn, err := net.Dial("tcp", p.Addr("tcp"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		b, _ := io.ReadAll(conn)
		return firstLine(string(b))
	}
	var got []string
	for i := 0; i < 3; i++ {
		got = append(got, exchange())
	}
	if strings.Join(got, "|") != "HTTP/1.1 200 OK|HTTP/1.1 200 OK|" {
		t.Fatalf("connections: %q, want two proxied and the third closed", got)
	}
	for name, want := range map[string]int64{
		"ratelimit.tcp.total": 3, "ratelimit.tcp.ok": 2, "ratelimit.tcp.over_limit": 1, "ratelimit.tcp.cx_closed": 1,
		"ratelimit.tcp.error": 0, "ratelimit.tcp.active": 0,
	} {
		if got := p.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

// fakeRLS is an in-process RateLimitService that records requests and
// answers with a response the test sets.
type fakeRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
	mu   sync.Mutex
	reqs []*rlsv3.RateLimitRequest
	resp *rlsv3.RateLimitResponse
}

func (f *fakeRLS) ShouldRateLimit(_ context.Context, r *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, r)
	return f.resp, nil
}

func (f *fakeRLS) set(r *rlsv3.RateLimitResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resp = r
}

// last renders the last request as domain [k=v,k=v] [k=v].
func (f *fakeRLS) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		return ""
	}
	r := f.reqs[len(f.reqs)-1]
	s := r.GetDomain()
	for _, d := range r.GetDescriptors() {
		var es []string
		for _, e := range d.GetEntries() {
			es = append(es, e.GetKey()+"="+e.GetValue())
		}
		s += " [" + strings.Join(es, ",") + "]"
	}
	return s
}

func startFakeRLS(t *testing.T) (*fakeRLS, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRLS{resp: &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}}
	srv := grpc.NewServer()
	rlsv3.RegisterRateLimitServiceServer(srv, f)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return f, ln.Addr().String()
}

// TestRateLimitServiceAnswers: what the filter sends (the route's then the
// virtual host's descriptors with include_vh_rate_limits, source_cluster
// from the node, destination_cluster, the per-route domain) and what it
// does with each part of the answer — request_headers_to_add go
// upstream, response_headers_to_add and dynamic_metadata reach the
// response, an over-limit answer's raw_body and content-type make the
// reply with response_headers_to_add and Retry-After, a custom
// rate_limited_status, and RESOURCE_EXHAUSTED for gRPC.
func TestRateLimitServiceAnswers(t *testing.T) {
	rls, addr := startFakeRLS(t)
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	p := start(t, cfg{
		hcm: rateLimitFilter(`rate_limited_status: {code: ServiceUnavailable}, rate_limited_as_resource_exhausted: true, stat_prefix: edge, `+
			`response_headers_to_add: [{header: {key: x-limited-by, value: "%REQ(x-user)%"}}], `) + `
codec_type: AUTO`,
		vhosts: `[{name: all, domains: ['*'], rate_limits: [{actions: [{source_cluster: {}}, {destination_cluster: {}}]}], routes: [
  {match: {prefix: /}, route: {cluster: up, include_vh_rate_limits: true, rate_limits: [{actions: [{request_headers: {header_name: x-user, descriptor_key: user}}]}]},
   response_headers_to_add: [{header: {key: x-md, value: "%DYNAMIC_METADATA(envoy.filters.http.ratelimit:tier)%"}}],
   typed_per_filter_config: {envoy.filters.http.ratelimit: {"@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute, domain: routed}}}]}]`,
		clusters: "[" + staticCluster("up", "", up.Addr) + ", " + rlsCluster(addr) + "]",
		extra:    "node: {id: n1, cluster: edge-cluster}\n",
	})
	c := testutil.Client()

	rls.set(&rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK,
		RequestHeadersToAdd:  []*corev3.HeaderValue{{Key: "X-RL-Tenant", Value: "acme"}},
		ResponseHeadersToAdd: []*corev3.HeaderValue{{Key: "x-rl-note", Value: "fine"}},
		DynamicMetadata:      &structpb.Struct{Fields: map[string]*structpb.Value{"tier": structpb.NewStringValue("gold")}}})
	code, h, body := testutil.Get(t, c, p.URL("http", "/a"), "x-user", "alice")
	if code != 200 || !strings.Contains(body, "header:x-rl-tenant=acme") {
		t.Errorf("OK answer: %d, the upstream saw %q", code, body)
	}
	if h.Get("x-rl-note") != "fine" || h.Get("x-md") != "gold" {
		t.Errorf("OK answer headers: %v", h)
	}
	if got, want := rls.last(), "routed [user=alice] [source_cluster=edge-cluster,destination_cluster=up]"; got != want {
		t.Errorf("request %q, want %q", got, want)
	}

	rls.set(&rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OVER_LIMIT, RawBody: []byte(`{"error":"slow down"}`),
		ResponseHeadersToAdd: []*corev3.HeaderValue{{Key: "content-type", Value: "application/json"}},
		Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{{Code: rlsv3.RateLimitResponse_OVER_LIMIT,
			CurrentLimit:       &rlsv3.RateLimitResponse_RateLimit{RequestsPerUnit: 5, Unit: rlsv3.RateLimitResponse_RateLimit_MINUTE},
			DurationUntilReset: durationpb.New(17 * time.Second)}}})
	hits := up.Hits()
	code, h, body = testutil.Get(t, c, p.URL("http", "/a"), "x-user", "bob")
	if code != 503 || body != `{"error":"slow down"}` || h.Get("content-type") != "application/json" {
		t.Errorf("over limit: %d %q content-type %q", code, body, h.Get("content-type"))
	}
	if h.Get("x-envoy-ratelimited") != "true" || h.Get("x-limited-by") != "bob" || h.Get("x-ratelimit-limit") != "5, 5;w=60" || h.Get("x-ratelimit-reset") != "17" {
		t.Errorf("over limit headers: %v", h)
	}
	if h.Get("retry-after") != "" {
		t.Errorf("retry-after without enable_retry_after_header: %q", h.Get("retry-after"))
	}
	if up.Hits() != hits {
		t.Error("the rate limited request reached the upstream")
	}
	// gRPC: 200 with grpc-status RESOURCE_EXHAUSTED (8).
	code, h, _ = testutil.Do(t, testutil.H2CClient(), "POST", p.URL("http", "/svc/M"), "x", "content-type", "application/grpc", "x-user", "g")
	if gs := h.Get("grpc-status"); code != 200 || gs != "8" {
		t.Errorf("gRPC over limit: %d grpc-status %q, want 200 and 8", code, gs)
	}
	for name, want := range map[string]int64{
		"cluster.up.ratelimit.edge.ok": 1, "cluster.up.ratelimit.edge.over_limit": 2, "cluster.up.upstream_rq_503": 2,
		"cluster.up.internal.upstream_rq_503": 2, "cluster.up.ratelimit.ok": -1,
	} {
		if got := p.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

// TestRateLimitRetryAfter: enable_retry_after_header adds Retry-After to
// the filter's 429 (the longest reset of the over-limit statuses), unless
// the service sent one; disable_x_envoy_ratelimited_header drops
// x-envoy-ratelimited.
func TestRateLimitRetryAfter(t *testing.T) {
	rls, addr := startFakeRLS(t)
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	p := start(t, cfg{
		hcm:      rateLimitFilter(`enable_retry_after_header: true, disable_x_envoy_ratelimited_header: true, `),
		vhosts:   vhost(`{match: {prefix: /}, route: {cluster: up, rate_limits: [{actions: [{generic_key: {descriptor_value: x}}]}]}}`),
		clusters: "[" + staticCluster("up", "", up.Addr) + ", " + rlsCluster(addr) + "]",
	})
	over := func(sec ...int64) *rlsv3.RateLimitResponse {
		r := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OVER_LIMIT}
		for _, s := range sec {
			r.Statuses = append(r.Statuses, &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OVER_LIMIT, DurationUntilReset: durationpb.New(time.Duration(s) * time.Second)})
		}
		return r
	}
	c := testutil.Client()
	rls.set(over(3, 40))
	code, h, _ := testutil.Get(t, c, p.URL("http", "/"))
	if code != 429 || h.Get("retry-after") != "40" || h.Get("x-envoy-ratelimited") != "" {
		t.Errorf("429: %d retry-after %q x-envoy-ratelimited %q", code, h.Get("retry-after"), h.Get("x-envoy-ratelimited"))
	}
	r := over(0)
	r.ResponseHeadersToAdd = []*corev3.HeaderValue{{Key: "retry-after", Value: "99"}}
	rls.set(r)
	if _, h, _ := testutil.Get(t, c, p.URL("http", "/")); fmt.Sprint(h.Values("retry-after")) != "[99]" {
		t.Errorf("the service's retry-after was overwritten: %v", h.Values("retry-after"))
	}
}
