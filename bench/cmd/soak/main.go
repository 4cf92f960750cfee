// Command soak runs legate proxy (the binary) for a long time under what
// production does to it and what attackers try, and reports whether its
// memory stays flat and which requests failed:
//
//   - steady HTTP/1.1 and HTTP/2 load through an xDS-configured listener;
//   - config churn from go-control-plane every few seconds (endpoints
//     move, route timeouts change, a second listener comes and goes);
//   - upstream kills: one backend stops for a few seconds, then returns;
//   - floods every so often: HTTP/2 rapid reset, empty DATA frames,
//     PRIORITY frames (each must end in GOAWAY ENHANCE_YOUR_CALM), and
//     client aborts mid-body.
//
// RSS (from /proc) is sampled every interval. `make soak` runs it for
// 30 minutes inside a private network namespace (loopback only); it is
// not part of `make test`.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var (
	duration   = flag.Duration("duration", 30*time.Minute, "how long to soak")
	sample     = flag.Duration("sample", 30*time.Second, "RSS sampling interval")
	legateBin  = flag.String("legate", "bin/legate", "legate binary")
	workers    = flag.Int("workers", 8, "load workers")
	out        = flag.String("out", "bench/results/soak.md", "report file")
	floodEvery = flag.Duration("flood-every", 45*time.Second, "interval between floods")
)

const nodeID = "soak"

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// backend is an upstream that can be killed and brought back on its port.
type backend struct {
	name string
	addr string
	mu   sync.Mutex
	srv  *http.Server
}

func (b *backend) start() error {
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		return err
	}
	b.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte(b.name))
	})}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go srv.Serve(ln)
	return nil
}

func (b *backend) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		b.srv.Close()
		b.srv = nil
	}
}

func freeAddr() string {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	return ln.Addr().String()
}

func sockAddr(a string) *corev3.Address {
	h, p, _ := net.SplitHostPort(a)
	port, _ := strconv.Atoi(p)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: h, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}
}

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

// failLog is the proxy's access log of failed requests (status >= 500):
// the report explains each failure by its code, flags and details.
var failLog = filepath.Join(os.TempDir(), fmt.Sprintf("soak-failures-%d.log", os.Getpid()))

const failFormat = "%START_TIME% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_HOST% %DURATION% %PROTOCOL%\n"

func httpListener(name, addr string) *listenerv3.Listener {
	router, _ := anypb.New(&routerv3.Router{})
	fal, _ := anypb.New(&filev3.FileAccessLog{Path: failLog, AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
		Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: failFormat}}}}}})
	failed := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{StatusCodeFilter: &accesslogv3.StatusCodeFilter{
		Comparison: &accesslogv3.ComparisonFilter{Op: accesslogv3.ComparisonFilter_GE, Value: &corev3.RuntimeUInt32{DefaultValue: 500, RuntimeKey: "soak.failed"}}}}}
	hcm, _ := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: name, CodecType: hcmv3.HttpConnectionManager_AUTO,
		AccessLog:      []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.file", Filter: failed, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: fal}}},
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "routes", ConfigSource: ads()}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}}})
	return &listenerv3.Listener{Name: name, Address: sockAddr(addr), FilterChains: []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{{Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}}}
}

// snapshot is configuration version v: endpoints rotate among the
// backends, the route timeout changes, a second listener comes and goes.
func snapshot(v int, main, extra string, bs []*backend) (*cachev3.Snapshot, error) {
	var lbe []*endpointv3.LbEndpoint
	for i := 0; i < 2; i++ {
		b := bs[(v+i)%len(bs)]
		lbe = append(lbe, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(b.addr)}}})
	}
	cl := &clusterv3.Cluster{Name: "backend", ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()},
		OutlierDetection:     &clusterv3.OutlierDetection{},
		// Envoy's default allows 3 concurrent retries per cluster: at a
		// kill instant 8 workers fail together and most retries overflow
		// (upstream_rq_retry_overflow), answering 503. Production configs
		// raise it; so does the soak, so that a kill costs no request.
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRetries: wrapperspb.UInt32(64)}}}}
	prev, _ := anypb.New(&previoushostsv3.PreviousHostsPredicate{})
	rc := &routev3.RouteConfiguration{Name: "routes", VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"},
		Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "backend"},
				Timeout: durationpb.New(time.Duration(5+v%5) * time.Second),
				// A retry goes to another host (previous_hosts), as Envoy's
				// docs advise: the killed backend is not tried twice.
				RetryPolicy: &routev3.RetryPolicy{RetryOn: "connect-failure,reset,refused-stream,5xx", NumRetries: wrapperspb.UInt32(3),
					RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts",
						ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: prev}}},
					HostSelectionRetryMaxAttempts: 3}}}}}}}}
	listeners := []types.Resource{httpListener("main", main)}
	if v%4 < 2 {
		listeners = append(listeners, httpListener("extra", extra))
	}
	return cachev3.NewSnapshot(strconv.Itoa(v), map[resourcev3.Type][]types.Resource{
		resourcev3.ClusterType:  {cl},
		resourcev3.EndpointType: {&endpointv3.ClusterLoadAssignment{ClusterName: "backend", Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbe}}}},
		resourcev3.RouteType:    {rc},
		resourcev3.ListenerType: listeners,
	})
}

type counts struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	reasons    map[string]int
}

func (c *counts) fail(reason string) {
	c.failed.Add(1)
	c.mu.Lock()
	c.reasons[reason]++
	c.mu.Unlock()
}

func run() error {
	// Upstreams and the control plane.
	var bs []*backend
	for i := 0; i < 4; i++ {
		b := &backend{name: fmt.Sprintf("b%d", i), addr: "127.0.0.1:0"}
		if err := b.start(); err != nil {
			return err
		}
		bs = append(bs, b)
	}
	cache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	cpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, serverv3.NewServer(context.Background(), cache, nil))
	go g.Serve(cpLn)
	defer g.Stop()
	mainAddr, extraAddr, adminAddr := freeAddr(), freeAddr(), freeAddr()
	version := 1
	snap, err := snapshot(version, mainAddr, extraAddr, bs)
	if err != nil {
		return err
	}
	cache.SetSnapshot(context.Background(), nodeID, snap)

	// The proxy, as a process of its own (its RSS is what is measured).
	dir, err := os.MkdirTemp("", "soak")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ch, cp, _ := net.SplitHostPort(cpLn.Addr().String())
	ah, ap, _ := net.SplitHostPort(adminAddr)
	boot := fmt.Sprintf(`
node: {id: %s, cluster: soak}
admin: {address: {socket_address: {address: %s, port_value: %s}}}
dynamic_resources:
  ads_config: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: xds}}]}
  cds_config: {ads: {}, resource_api_version: V3}
  lds_config: {ads: {}, resource_api_version: V3}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: xds, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
`, nodeID, ah, ap, ch, cp)
	bootPath := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(bootPath, []byte(boot), 0o644); err != nil {
		return err
	}
	proxy := exec.Command(*legateBin, "proxy", "-c", bootPath, "--log-level", "warn", "--drain-time-s", "1", "--enable-pprof")
	proxy.Stderr = os.Stderr
	if err := proxy.Start(); err != nil {
		return err
	}
	defer func() { proxy.Process.Kill(); proxy.Wait() }()
	url := "http://" + mainAddr + "/"
	if err := waitOK(url, 20*time.Second); err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	st := &counts{reasons: map[string]int{}}
	var wg sync.WaitGroup
	for i := 0; i < *workers; i++ {
		wg.Add(1)
		go func(h2 bool) {
			defer wg.Done()
			load(ctx, url, h2, st)
		}(i%2 == 1)
	}

	logf := func(format string, args ...any) {
		fmt.Println(time.Now().Format("15:04:05 ") + fmt.Sprintf(format, args...))
	}
	var floods []string
	type rssSample struct {
		at              time.Duration
		kib, anon, file int64
		mem             memory
	}
	var rss []rssSample
	sampleNow := func(at time.Duration) rssSample {
		st := procStatus(proxy.Process.Pid)
		return rssSample{at, st["VmRSS"], st["RssAnon"], st["RssFile"], readMemory(adminAddr)}
	}
	var heapEarly string
	start := time.Now()
	churn := time.NewTicker(3 * time.Second)
	kill := time.NewTicker(20 * time.Second)
	flood := time.NewTicker(*floodEvery)
	sampler := time.NewTicker(*sample)
	defer churn.Stop()
	defer kill.Stop()
	defer flood.Stop()
	defer sampler.Stop()
	rss = append(rss, sampleNow(0))
	killed := 0
	var kills []string
	os.Remove(failLog)
	if os.Getenv("SOAK_KEEP_FAILURES") == "" {
		defer os.Remove(failLog)
	}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-churn.C:
			version++
			if s, err := snapshot(version, mainAddr, extraAddr, bs); err == nil {
				cache.SetSnapshot(context.Background(), nodeID, s)
			}
		case <-kill.C:
			b := bs[killed%len(bs)]
			killed++
			kills = append(kills, fmt.Sprintf("%s %s (%s)", time.Now().UTC().Format("15:04:05.000"), b.name, b.addr))
			b.stop()
			go func() {
				time.Sleep(3 * time.Second)
				if err := b.start(); err != nil {
					logf("restart %s: %v", b.name, err)
				}
			}()
		case <-flood.C:
			for _, f := range []struct {
				name string
				fn   func(string) (time.Duration, bool)
			}{{"rapid reset", rapidReset}, {"empty DATA", emptyData}, {"PRIORITY", priorityFlood}} {
				d, ok := f.fn(mainAddr)
				floods = append(floods, fmt.Sprintf("%s: GOAWAY=%v after %v", f.name, ok, d.Round(time.Millisecond)))
			}
			clientAborts(mainAddr, 20)
		case <-sampler.C:
			rss = append(rss, sampleNow(time.Since(start)))
			if heapEarly == "" && time.Since(start) >= 2*time.Minute {
				heapEarly = heapTop(adminAddr)
			}
			logf("rss %d KiB, ok %d, failed %d, config v%d", rss[len(rss)-1].kib, st.ok.Load(), st.failed.Load(), version)
		}
	}
	wg.Wait()
	rss = append(rss, sampleNow(time.Since(start)))
	heapLate := heapTop(adminAddr)
	counters := adminStats(adminAddr, "cluster.backend.upstream_rq_retry", "cluster.backend.upstream_cx_total", "cluster.backend.upstream_cx_active",
		"cluster.backend.upstream_cx_destroy_local_with_active_rq", "cluster.backend.outlier_detection.ejections_enforced_total",
		"http.main.downstream_cx_total", "http.main.downstream_cx_active", "http.main.downstream_rq_rx_reset", "http2.")

	// Report.
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Soak %s (%s)\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), duration.String())
	fmt.Fprintf(&b, "%d workers (HTTP/1.1 and HTTP/2), config churn every 3 s (%d versions), a backend killed for 3 s every 20 s (%d kills), floods and 20 client aborts every %s.\n\n", *workers, version, killed, floodEvery)
	fmt.Fprintf(&b, "Requests: %d ok, %d failed", st.ok.Load(), st.failed.Load())
	if n := st.ok.Load() + st.failed.Load(); n > 0 {
		fmt.Fprintf(&b, " (%.4f %%)", 100*float64(st.failed.Load())/float64(n))
	}
	b.WriteString("\n\n")
	var rs []string
	for r, n := range st.reasons {
		rs = append(rs, fmt.Sprintf("- %d × %s", n, r))
	}
	sort.Strings(rs)
	if len(rs) > 0 {
		b.WriteString("Failures:\n" + strings.Join(rs, "\n") + "\n\n")
	}
	// The proxy's own account of each failure (its access log of
	// responses >= 500): code, response flags and details, with samples.
	if data, err := os.ReadFile(failLog); err == nil && len(data) > 0 {
		classes := map[string][]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			f := strings.Fields(line)
			if len(f) < 4 {
				continue
			}
			k := strings.Join(f[1:4], " ")
			classes[k] = append(classes[k], line)
		}
		var ks []string
		for k := range classes {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		b.WriteString("The proxy's access log of those failures (code, flags, details: count; first samples as `start code flags details upstream duration-ms protocol`):\n")
		for _, k := range ks {
			fmt.Fprintf(&b, "- `%s`: %d\n", k, len(classes[k]))
			for i, l := range classes[k] {
				if i == 3 {
					break
				}
				fmt.Fprintf(&b, "  - `%s`\n", l)
			}
		}
		b.WriteString("\nBackend kills (UTC, 3 s each): " + strings.Join(kills, "; ") + "\n\n")
	}
	// RSS split as the kernel counts it (anonymous memory vs pages of the
	// mapped binary), beside the Go runtime's own account (admin /memory):
	// physical is what the runtime holds from the OS, allocated the live
	// heap.
	b.WriteString("| t | RSS (MiB) | RssAnon | RssFile | Go physical | Go heap size | Go allocated | goroutines |\n|---|---|---|---|---|---|---|---|\n")
	mib := func(v uint64) float64 { return float64(v) / (1 << 20) }
	for _, s := range rss {
		fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %d |\n", s.at.Round(time.Second), float64(s.kib)/1024,
			float64(s.anon)/1024, float64(s.file)/1024, mib(s.mem.Physical), mib(s.mem.HeapSize), mib(s.mem.Allocated), s.mem.Goroutines)
	}
	if len(counters) > 0 {
		b.WriteString("\nThe proxy's counters at the end:\n```\n" + strings.Join(counters, "\n") + "\n```\n")
	}
	for _, h := range []struct{ when, top string }{{"after 2 minutes", heapEarly}, {"at the end", heapLate}} {
		if h.top != "" {
			fmt.Fprintf(&b, "\nHeap in use %s (`go tool pprof -top -inuse_space`, first lines):\n```\n%s\n```\n", h.when, h.top)
		}
	}
	fl := map[string]int{}
	for _, f := range floods {
		fl[f]++
	}
	b.WriteString("\nFloods (each line: outcome × times):\n")
	var fls []string
	for f, n := range fl {
		fls = append(fls, fmt.Sprintf("- %s × %d", f, n))
	}
	sort.Strings(fls)
	b.WriteString(strings.Join(fls, "\n") + "\n")
	fmt.Print(b.String())
	if *out != "" {
		os.MkdirAll(filepath.Dir(*out), 0o755)
		return os.WriteFile(*out, b.Bytes(), 0o644)
	}
	return nil
}

func waitOK(url string, within time.Duration) error {
	end := time.Now().Add(within)
	for time.Now().Before(end) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s never answered 200", url)
}

func load(ctx context.Context, url string, h2c bool, st *counts) {
	var rt http.RoundTripper = &http.Transport{MaxIdleConnsPerHost: 4}
	if h2c {
		rt = &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	}
	c := &http.Client{Transport: rt, Timeout: 10 * time.Second}
	for ctx.Err() == nil {
		resp, err := c.Get(url)
		if err != nil {
			if ctx.Err() == nil {
				st.fail("transport: " + shorten(err.Error()))
			}
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			st.fail(fmt.Sprintf("status %d (%s)", resp.StatusCode, resp.Header.Get("x-envoy-response-flags")))
			continue
		}
		st.ok.Add(1)
	}
}

func shorten(s string) string {
	if i := strings.LastIndex(s, ": "); i > 0 {
		return s[i+2:]
	}
	return s
}

// h2conn opens a raw HTTP/2 connection.
func h2conn(addr string) (net.Conn, *http2.Framer, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, nil, err
	}
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	return c, fr, nil
}

func headersBlock() []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	return b.Bytes()
}

// awaitGoAway reads until a GOAWAY ENHANCE_YOUR_CALM (true) or the end.
func awaitGoAway(c net.Conn, fr *http2.Framer, start time.Time) (time.Duration, bool) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return time.Since(start), false
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			return time.Since(start), ga.ErrCode == http2.ErrCodeEnhanceYourCalm
		}
	}
}

func rapidReset(addr string) (time.Duration, bool) {
	c, fr, err := h2conn(addr)
	if err != nil {
		return 0, false
	}
	defer c.Close()
	start := time.Now()
	hb := headersBlock()
	go func() {
		for id := uint32(1); id < 20000; id += 2 {
			if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb, EndHeaders: true, EndStream: true}) != nil ||
				fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				return
			}
		}
	}()
	return awaitGoAway(c, fr, start)
}

func emptyData(addr string) (time.Duration, bool) {
	c, fr, err := h2conn(addr)
	if err != nil {
		return 0, false
	}
	defer c.Close()
	start := time.Now()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: headersBlock(), EndHeaders: true})
	go func() {
		for i := 0; i < 100000; i++ {
			if fr.WriteData(1, false, nil) != nil {
				return
			}
		}
	}()
	return awaitGoAway(c, fr, start)
}

func priorityFlood(addr string) (time.Duration, bool) {
	c, fr, err := h2conn(addr)
	if err != nil {
		return 0, false
	}
	defer c.Close()
	start := time.Now()
	go func() {
		for i := 0; i < 100000; i++ {
			if fr.WritePriority(uint32(2*i+1), http2.PriorityParam{Weight: 1}) != nil {
				return
			}
		}
	}()
	return awaitGoAway(c, fr, start)
}

// clientAborts sends requests whose clients leave mid-body.
func clientAborts(addr string, n int) {
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue
		}
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
		c.Close()
	}
}

// memory is the proxy's admin /memory answer, with its goroutine count.
type memory struct {
	Allocated, HeapSize, Physical uint64
	Goroutines                    int
}

// readMemory asks the proxy's admin for /memory (Envoy's admin.v3.Memory,
// uint64 as JSON strings) and the goroutine count from pprof.
func readMemory(admin string) memory {
	var m memory
	var js struct {
		Allocated string `json:"allocated"`
		HeapSize  string `json:"heap_size"`
		Physical  string `json:"total_physical_bytes"`
	}
	if body := adminGet(admin, "/memory"); json.Unmarshal(body, &js) == nil {
		m.Allocated, _ = strconv.ParseUint(js.Allocated, 10, 64)
		m.HeapSize, _ = strconv.ParseUint(js.HeapSize, 10, 64)
		m.Physical, _ = strconv.ParseUint(js.Physical, 10, 64)
	}
	// First line: "goroutine profile: total N".
	if f := strings.Fields(strings.SplitN(string(adminGet(admin, "/debug/pprof/goroutine?debug=1")), "\n", 2)[0]); len(f) == 4 {
		m.Goroutines, _ = strconv.Atoi(f[3])
	}
	return m
}

func adminGet(admin, path string) []byte {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + admin + path)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

// adminStats returns the proxy's stats lines starting with any prefix.
func adminStats(admin string, prefixes ...string) []string {
	var out []string
	for _, line := range strings.Split(string(adminGet(admin, "/stats")), "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
				break
			}
		}
	}
	return out
}

// heapTop is the top of the proxy's in-use heap profile, by go tool pprof.
func heapTop(admin string) string {
	out, err := exec.Command("go", "tool", "pprof", "-top", "-inuse_space", "-nodecount=15", *legateBin,
		"http://"+admin+"/debug/pprof/heap").Output()
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "flat ") {
			lines = lines[max(0, i-2):]
			break
		}
	}
	return strings.Join(lines, "\n")
}

// procStatus reads a process's memory lines from /proc/PID/status, in KiB
// (VmRSS, RssAnon, RssFile, …).
func procStatus(pid int) map[string]int64 {
	out := map[string]int64{}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == "kB" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			out[strings.TrimSuffix(f[0], ":")] = n
		}
	}
	return out
}
