package upstream

import (
	"bytes"
	"context"
	"encoding/hex"
	datav3 "github.com/envoyproxy/go-control-plane/envoy/data/core/v3"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/stats"
)

type healthStats struct {
	attempt, success, failure, networkFailure, verifyCluster *stats.Counter
	healthy                                                  *stats.Gauge
}

func newHealthStats(s stats.Scope) healthStats {
	return healthStats{
		attempt: s.Counter("attempt"), success: s.Counter("success"), failure: s.Counter("failure"),
		networkFailure: s.Counter("network_failure"), verifyCluster: s.Counter("verify_cluster"),
		healthy: s.Gauge("healthy"),
	}
}

// healthChecker runs one active health check (cluster health_checks[0])
// against every host of a cluster, with Envoy's thresholds and intervals.
type healthChecker struct {
	c                                                                  *Cluster
	timeout                                                            time.Duration
	interval, noTraffic, unhealthyInterval, healthyEdge, unhealthyEdge time.Duration
	noTrafficHealthy                                                   time.Duration
	jitter                                                             time.Duration
	jitterPct                                                          float64
	unhealthyThr                                                       uint32
	healthyThr                                                         uint32
	check                                                              func(ctx context.Context, h *Host) (ok bool, network bool)
	// forget releases per-host state of the checker (gRPC connections).
	forget                      func(h *Host)
	alwaysLog, alwaysLogSuccess bool
	events                      *eventLog

	mu      sync.Mutex
	running map[*Host]chan struct{}
	pending int // hosts whose first check is still to come (cluster init)
}

// hostHC is the per-host checking state.
type hostHC struct {
	successes, failures uint32
}

func newHealthChecker(c *Cluster, hc *corev3.HealthCheck, path string) (*healthChecker, error) {
	if ch := hc.GetCustomHealthCheck(); ch != nil {
		// Custom health checkers (redis, thrift, …) go through the
		// registry: "not implemented by legate", or "unknown @type".
		if _, err := extension.Lookup(extension.HealthChecker, ch.GetTypedConfig(), config.Join(path, "custom_health_check.typed_config")); err != nil {
			return nil, err
		}
	}
	if err := config.CheckFields(hc, path, "timeout", "interval", "interval_jitter", "interval_jitter_percent",
		"unhealthy_threshold", "healthy_threshold", "no_traffic_interval", "no_traffic_healthy_interval", "unhealthy_interval",
		"healthy_edge_interval", "unhealthy_edge_interval", "http_health_check", "tcp_health_check", "grpc_health_check",
		"always_log_health_check_failures", "reuse_connection", "event_log_path", "always_log_health_check_success"); err != nil {
		return nil, err
	}
	d := func(v interface{ AsDuration() time.Duration }, def time.Duration) time.Duration {
		if v == nil {
			return def
		}
		if x := v.AsDuration(); x > 0 {
			return x
		}
		return def
	}
	hk := &healthChecker{
		c:                c,
		timeout:          hc.GetTimeout().AsDuration(),
		interval:         hc.GetInterval().AsDuration(),
		jitter:           hc.GetIntervalJitter().AsDuration(),
		jitterPct:        float64(hc.GetIntervalJitterPercent()),
		unhealthyThr:     hc.GetUnhealthyThreshold().GetValue(),
		healthyThr:       hc.GetHealthyThreshold().GetValue(),
		alwaysLog:        hc.GetAlwaysLogHealthCheckFailures(),
		alwaysLogSuccess: hc.GetAlwaysLogHealthCheckSuccess(),
		running:          map[*Host]chan struct{}{},
	}
	if hc.GetNoTrafficInterval() != nil {
		hk.noTraffic = d(hc.GetNoTrafficInterval(), 60*time.Second)
	} else {
		hk.noTraffic = 60 * time.Second
	}
	hk.noTrafficHealthy = d(hc.GetNoTrafficHealthyInterval(), hk.noTraffic)
	hk.unhealthyInterval = d(hc.GetUnhealthyInterval(), hk.interval)
	hk.healthyEdge = d(hc.GetHealthyEdgeInterval(), hk.unhealthyInterval)
	hk.unhealthyEdge = d(hc.GetUnhealthyEdgeInterval(), hk.unhealthyInterval)
	if hk.unhealthyThr == 0 {
		hk.unhealthyThr = 1
	}
	if hk.healthyThr == 0 {
		hk.healthyThr = 1
	}
	switch {
	case hc.GetHttpHealthCheck() != nil:
		chk, err := httpCheck(c, hc.GetHttpHealthCheck(), config.Join(path, "http_health_check"))
		if err != nil {
			return nil, err
		}
		hk.check = chk
	case hc.GetTcpHealthCheck() != nil:
		chk, err := tcpCheck(c, hc.GetTcpHealthCheck(), config.Join(path, "tcp_health_check"))
		if err != nil {
			return nil, err
		}
		hk.check = chk
	case hc.GetGrpcHealthCheck() != nil:
		chk, forget, err := grpcCheck(c, hc.GetGrpcHealthCheck(), config.Join(path, "grpc_health_check"))
		if err != nil {
			return nil, err
		}
		hk.check, hk.forget = chk, forget
	default:
		return nil, config.Unsupported(path, "this health checker", "http_health_check", "tcp_health_check", "grpc_health_check")
	}
	if p := hc.GetEventLogPath(); p != "" {
		kind := datav3.HealthCheckerType_HTTP
		switch {
		case hc.GetTcpHealthCheck() != nil:
			kind = datav3.HealthCheckerType_TCP
		case hc.GetGrpcHealthCheck() != nil:
			kind = datav3.HealthCheckerType_GRPC
		}
		ev, err := newEventLog(c, p, config.Join(path, "event_log_path"), kind)
		if err != nil {
			return nil, err
		}
		hk.events = ev
	}
	return hk, nil
}

// setHosts starts checking new hosts and stops checking removed ones.
func (hk *healthChecker) setHosts(hosts []*Host) {
	hk.mu.Lock()
	defer hk.mu.Unlock()
	keep := map[*Host]bool{}
	for _, h := range hosts {
		keep[h] = true
		if _, ok := hk.running[h]; !ok {
			stop := make(chan struct{})
			hk.running[h] = stop
			hk.pending++
			go hk.loop(h, stop)
		}
	}
	for h, stop := range hk.running {
		if !keep[h] {
			close(stop)
			delete(hk.running, h)
			if hk.forget != nil {
				hk.forget(h)
			}
		}
	}
	if len(hosts) == 0 {
		hk.c.markReady()
	}
}

func (hk *healthChecker) firstDone() {
	hk.mu.Lock()
	hk.pending--
	done := hk.pending <= 0
	hk.mu.Unlock()
	if done {
		hk.c.markReady()
	}
}

func (hk *healthChecker) loop(h *Host, stop chan struct{}) {
	st := hostHC{}
	first := true
	for {
		ctx, cancel := context.WithTimeout(context.Background(), hk.timeout)
		hk.c.Stats.hc.attempt.Inc()
		ok, network := hk.check(ctx, h)
		cancel()
		wasHealthy := h.flags.Load()&FlagFailedActiveHC == 0
		var next time.Duration
		if ok {
			hk.c.Stats.hc.success.Inc()
			st.failures = 0
			st.successes++
			// At start-up one success is enough (Envoy: only a single
			// successful check is required during initialization).
			if !wasHealthy && (first || st.successes >= hk.healthyThr) {
				hk.mark(h, false)
				hk.events.added(h, first)
				next = hk.healthyEdge
			} else if hk.alwaysLogSuccess {
				hk.events.succeeded(h)
			}
		} else {
			hk.c.Stats.hc.failure.Inc()
			if network {
				hk.c.Stats.hc.networkFailure.Inc()
			}
			st.successes = 0
			st.failures++
			if hk.alwaysLog || wasHealthy {
				hk.c.log.Warn("health check failed", "cluster", hk.c.Name, "host", h.Address, "consecutive_failures", st.failures)
			}
			if hk.alwaysLog || first {
				hk.events.failed(h, first)
			}
			if wasHealthy && st.failures >= hk.unhealthyThr {
				hk.mark(h, true)
				hk.events.ejected(h)
				next = hk.unhealthyEdge
			}
		}
		if first {
			first = false
			if h.setFlag(FlagPendingActiveHC, false) {
				hk.c.healthChanged()
			}
			hk.firstDone()
		}
		if next == 0 {
			switch {
			case h.flags.Load()&FlagFailedActiveHC != 0:
				next = hk.unhealthyInterval
			case hk.c.Stats.RqTotal.Value() == 0 && h.Healthy():
				next = hk.noTrafficHealthy
			case hk.c.Stats.RqTotal.Value() == 0:
				next = hk.noTraffic
			default:
				next = hk.interval
			}
		}
		if hk.jitter > 0 {
			next += time.Duration(rand.Int64N(int64(hk.jitter)))
		}
		next = jitter(next, hk.jitterPct)
		next = clampInterval(hk.c.lb.rt, next)
		select {
		case <-stop:
			return
		case <-hk.c.stop:
			return
		case <-time.After(next):
		}
	}
}

func (hk *healthChecker) mark(h *Host, failed bool) {
	if !failed && hk.c.lb.slowStart > 0 && h.slowStartFrom.Load() == 0 {
		// With active health checks, slow start begins at the first pass.
		h.slowStartFrom.Store(time.Now().UnixNano())
	}
	if h.setFlag(FlagFailedActiveHC, failed) {
		hk.c.healthChanged()
	}
	if failed {
		if hk.c.closeOnHCFail {
			hk.c.closeIdle(h, 0)
		}
		hk.c.log.Warn("host marked unhealthy by active health check", "cluster", hk.c.Name, "host", h.Address)
	} else {
		hk.c.log.Info("host marked healthy by active health check", "cluster", hk.c.Name, "host", h.Address)
	}
	hk.c.Stats.hc.healthy.Set(int64(hk.c.HealthyCount()))
}

// httpCheck builds an HTTP/1.1 health check: GET path with the configured
// host (the cluster name by default), success on expected_statuses
// (default [200, 201)).
func httpCheck(c *Cluster, hc *corev3.HealthCheck_HttpHealthCheck, path string) (func(context.Context, *Host) (bool, bool), error) {
	if err := config.CheckFields(hc, path, "host", "path", "expected_statuses", "request_headers_to_add", "request_headers_to_remove", "codec_client_type"); err != nil {
		return nil, err
	}
	switch hc.GetCodecClientType().String() {
	case "HTTP1", "HTTP2":
	default:
		return nil, config.Unsupported(config.Join(path, "codec_client_type"), hc.GetCodecClientType().String(), "HTTP1", "HTTP2")
	}
	host := hc.GetHost()
	if host == "" {
		host = c.Name
	}
	type rng struct{ lo, hi int64 }
	var ranges []rng
	for i, r := range hc.GetExpectedStatuses() {
		// Envoy refuses these at load (a range without end would never
		// match: end is exclusive).
		p := config.Index(config.Join(path, "expected_statuses"), i)
		switch {
		case r.GetStart() >= r.GetEnd():
			return nil, config.Errorf(p, "Invalid http status range: expecting start < end, but found start=%d and end=%d (end is exclusive: {start: 200, end: 201} accepts 200)", r.GetStart(), r.GetEnd())
		case r.GetStart() < 100:
			return nil, config.Errorf(p, "Invalid http status range: expecting start >= 100, but found start=%d", r.GetStart())
		case r.GetEnd() > 600:
			return nil, config.Errorf(p, "Invalid http status range: expecting end <= 600, but found end=%d", r.GetEnd())
		}
		ranges = append(ranges, rng{r.GetStart(), r.GetEnd()})
	}
	if len(ranges) == 0 {
		ranges = []rng{{200, 201}}
	}
	var hdrs headers.Map
	remove := map[string]bool{}
	for _, r := range hc.GetRequestHeadersToRemove() {
		remove[headers.Lower(r)] = true
	}
	if !remove["user-agent"] {
		hdrs.Add("user-agent", "Envoy/HC")
	}
	for _, a := range hc.GetRequestHeadersToAdd() {
		hdrs.Add(headers.Lower(a.GetHeader().GetKey()), a.GetHeader().GetValue())
	}
	expected := func(code int) bool {
		for _, rg := range ranges {
			if int64(code) >= rg.lo && int64(code) < rg.hi {
				return true
			}
		}
		return false
	}
	if hc.GetCodecClientType().String() == "HTTP2" {
		return h2Check(c, host, hc.GetPath(), &hdrs, expected), nil
	}
	return func(ctx context.Context, h *Host) (bool, bool) {
		conn, err := dialCheck(ctx, c, h)
		if err != nil {
			return false, true
		}
		defer conn.Close()
		if t := c.transportFor(h); t != nil {
			if conn, err = t.Client(ctx, conn, ""); err != nil {
				return false, true
			}
		}
		ex := OpenConn(conn)
		defer ex.Close(false)
		req := Request{Method: "GET", Path: hc.GetPath(), Authority: host, Headers: &hdrs, Ctx: ctx}
		if dl, ok := ctx.Deadline(); ok {
			req.Deadline = dl
		}
		var resp http1.ResponseHead
		if err := ex.Send(&req, &resp); err != nil {
			return false, true
		}
		return expected(resp.Status), false
	}, nil
}

// tcpCheck builds a TCP health check: connect, send the payload, and expect
// every receive payload in the response, in order.
func tcpCheck(c *Cluster, hc *corev3.HealthCheck_TcpHealthCheck, path string) (func(context.Context, *Host) (bool, bool), error) {
	if err := config.CheckFields(hc, path, "send", "receive"); err != nil {
		return nil, err
	}
	payload := func(p *corev3.HealthCheck_Payload, path string) ([]byte, error) {
		switch v := p.GetPayload().(type) {
		case *corev3.HealthCheck_Payload_Text:
			b, err := hex.DecodeString(v.Text)
			if err != nil {
				return nil, config.Errorf(path, "text must be hex-encoded: %v", err)
			}
			return b, nil
		case *corev3.HealthCheck_Payload_Binary:
			return v.Binary, nil
		}
		return nil, nil
	}
	send, err := payload(hc.GetSend(), config.Join(path, "send"))
	if err != nil {
		return nil, err
	}
	var want [][]byte
	for i, r := range hc.GetReceive() {
		b, err := payload(r, config.Index(config.Join(path, "receive"), i))
		if err != nil {
			return nil, err
		}
		want = append(want, b)
	}
	return func(ctx context.Context, h *Host) (bool, bool) {
		conn, err := dialCheck(ctx, c, h)
		if err != nil {
			return false, true
		}
		defer conn.Close()
		if len(send) > 0 {
			if _, err := conn.Write(send); err != nil {
				return false, true
			}
		}
		if len(want) == 0 {
			return true, false
		}
		var got []byte
		buf := make([]byte, 4096)
		for {
			rest := got
			ok := true
			for _, w := range want {
				i := bytes.Index(rest, w)
				if i < 0 {
					ok = false
					break
				}
				rest = rest[i+len(w):]
			}
			if ok {
				return true, false
			}
			n, err := conn.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				return false, err != io.EOF
			}
		}
	}, nil
}

// dialCheck connects to a host for one health check, with the check's
// deadline on the connection.
func dialCheck(ctx context.Context, c *Cluster, h *Host) (net.Conn, error) {
	conn, err := c.dialAddr(ctx, h.healthAddr(), h, ConnOptions{})
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	return conn, nil
}
