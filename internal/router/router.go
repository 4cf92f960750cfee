package router

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/proxyproto"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

// failKind classifies a failed upstream attempt.
type failKind uint8

const (
	failNone failKind = iota
	failConnect
	failReset              // connection closed or reset before the response head
	failTimeout            // global timeout
	failPerTry             // per-try timeout
	failOverflow           // circuit breaker
	failProtocol           // malformed upstream response
	failNoHealthy          // no host to pick
	failDownstream         // the client went away while the request was sent
	failDownstreamProtocol // the client's request body was malformed
	failRequestTimeout     // request_timeout expired while the body was read
	failIdle               // the stream (or route) idle timeout expired
	failLocalReply         // an upstream filter answered the request
)

// idleTimeout is the route's idle_timeout, or the connection manager's
// stream_idle_timeout (0 disables).
func (s *Stream) idleTimeout() time.Duration {
	if s.Route != nil && s.Route.Action != nil && s.Route.Action.IdleTimeout >= 0 {
		return s.Route.Action.IdleTimeout
	}
	return s.cfg.StreamIdleTimeout
}

// retryBufferLimit bounds the request body kept for retries and mirrors
// (Envoy's default per_connection_buffer_limit_bytes).
const retryBufferLimit = 1 << 20

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

// attempt is the state of the upstream exchange of one request.
type attempt struct {
	cl *upstream.Cluster
	// agg is the route's aggregate cluster (nil: none); each attempt then
	// sets cl to the child it picked.
	agg       *upstream.Cluster
	wc        *route.WeightedCluster
	policy    *route.RetryPolicy
	retryOn   route.RetryOn
	retries   uint32
	body      []byte // buffered request body (replayable), when bodyMode == bodyBuffered
	bodyMode  uint8
	deadline  time.Time
	perTry    time.Duration
	lb        upstream.LBContext
	tried     [4]*upstream.Host
	path      string
	authority string
	// result of the last attempt
	host    *upstream.Host
	ex      upstream.Exchange // the exchange whose response head arrived
	ureq    upstream.Request
	head    http1.ResponseHead
	fail    failKind
	failErr error
	sentAt  time.Time
	// live is the exchange in progress (downstreamGone cancels it) from
	// Open to Close; gone is set once the client left.
	liveMu sync.Mutex
	live   upstream.Exchange
	gone   atomic.Bool
}

// setLive records the exchange in progress (nil: none) for downstreamGone.
func (at *attempt) setLive(ex upstream.Exchange) {
	at.liveMu.Lock()
	at.live = ex
	at.liveMu.Unlock()
}

// closeExchange ends the attempt's exchange; complete says the response
// body was read to its end.
func (at *attempt) closeExchange(complete bool) {
	if at.ex == nil {
		return
	}
	at.setLive(nil)
	at.ex.Close(complete)
	at.ex = nil
}

// downstreamGone is called (from the close watcher's goroutine) when the
// client closed its connection mid-request: the upstream exchange in
// progress is cut and the stream ends without retries (flag DC).
func (s *Stream) downstreamGone() {
	at := &s.at
	at.liveMu.Lock()
	defer at.liveMu.Unlock()
	at.gone.Store(true)
	if at.live != nil {
		at.live.Cancel()
	}
}

const (
	bodyNone uint8 = iota
	bodyBuffered
	bodyStream
)

// forward sends the request to the route's cluster, with retries, and
// relays the response.
func (s *Stream) forward() {
	a := s.Route.Action
	ref, name, wc := s.PickRef, s.PickName, s.WC
	var cl *upstream.Cluster
	if ref != nil {
		cl = ref.Get()
	} else if name != "" {
		cl = s.cfg.Clusters.Get(name)
	}
	if cl == nil {
		s.cfg.Stats.NoCluster.Inc()
		s.ds.LocalReply(a.NotFoundStatus, "", "cluster_not_found", streaminfo.NoClusterFound)
		return
	}
	s.Info.UpstreamCluster = cl.Name
	prio := upstream.PriorityDefault
	if a.HighPriority {
		prio = upstream.PriorityHigh
	}
	if !cl.TryStartRequest(prio) {
		s.ds.LocalReply(503, "upstream connect error or disconnect/reset before headers. reset reason: overflow", "upstream_reset_before_response_started{overflow}", streaminfo.UpstreamOverflow)
		return
	}
	defer cl.EndRequest(prio)

	at := &s.at
	at.cl, at.wc = cl, wc
	if cl.Aggregate != nil {
		at.agg = cl
	}
	s.setupAttempt(at, a)
	if tcp := s.tcpUpstream(cl); tcp || s.Upgrade == "connect" {
		s.startAttempt()
		s.forwardTunnel(at, tcp)
		return
	}
	if s.Upgrade != "" {
		s.startAttempt()
		s.forwardUpgrade(at)
		return
	}
	s.prepareUpstreamHeaders(at, a)
	if !s.planBody(at) {
		return
	}
	s.mirror(a, at)
	s.Info.LastDownstreamRxByte = s.Info.Since()
	// A client that goes away while the request waits ends it: the
	// upstream request is reset and no retry follows, as in Envoy.
	// The method value is made once per Stream (a closure per request
	// otherwise); the Stream outlives its requests (Reset keeps it).
	if s.goneFn == nil {
		s.goneFn = s.downstreamGone
	}
	stop := s.ds.WatchClose(s.goneFn)
	defer stop()
	for {
		s.Info.UpstreamRequestAttemptCount++
		if s.Route.VHost.IncludeAttemptCount {
			s.Req.Map.Set("x-envoy-attempt-count", strconv.Itoa(s.Info.UpstreamRequestAttemptCount))
		}
		s.startAttempt()
		s.runAttempt(at)
		if !s.shouldRetry(at) {
			break
		}
		if !cl.TryRetry(prio) {
			// Retry overflow: as Envoy, the client gets this attempt's
			// outcome (the upstream response, or the local failure).
			break
		}
		if s.Attempts != nil {
			status := 0
			if at.fail == failNone && at.ex != nil {
				status = at.head.Status
			}
			s.Attempts.EndAttempt(status)
		}
		s.discardAttempt(at)
		cl.Stats.RqRetry.Inc()
		at.retries++
		wait := backoff(at.policy, at.retries)
		if !at.deadline.IsZero() && time.Now().Add(wait).After(at.deadline) {
			cl.EndRetry(prio)
			at.fail = failTimeout
			s.finishFailure(at)
			return
		}
		// The back-off ends early when the client goes away: pending retries
		// are cancelled, as Envoy resets the upstream request.
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.ds.Context().Done():
			t.Stop()
			cl.EndRetry(prio)
			s.cfg.Stats.RqRxReset.Inc()
			s.Info.SetFlag(streaminfo.DownstreamConnectionTermination)
			return
		}
		cl.EndRetry(prio)
	}
	if at.fail != failNone {
		s.finishFailure(at)
		return
	}
	if at.retries > 0 && !s.Info.ResponseFlags.Has(streaminfo.UpstreamRetryLimitExceeded) {
		cl.Stats.RqRetrySuccess.Inc()
	}
	if p := a.InternalRedirect; p != nil && p.Handles(at.head.Status) && s.followRedirect(at, p) {
		return
	}
	s.relayResponse(at)
}

// setupAttempt resolves timeouts and the retry policy, honouring Envoy's
// request headers (x-envoy-upstream-rq-timeout-ms, x-envoy-max-retries,
// x-envoy-retry-on) from trusted requests; they were removed from external
// ones by sanitization.
func (s *Stream) setupAttempt(at *attempt, a *route.RouteAction) {
	m := &s.Req.Map
	timeout := a.Timeout
	expectedSet := false
	if s.cfg.RespectExpectedRqTimeout {
		// As Envoy's FilterUtility::finalTimeout: the egress Envoy's
		// expected timeout is the route's, and its upstream timeout header
		// (sanitized there) is not consulted.
		// A header that does not parse still decides the branch (Envoy
		// tests for its presence), and the route's timeout stays.
		if v := m.Get("x-envoy-expected-rq-timeout-ms"); v != "" {
			expectedSet = true
			if ms, err := strconv.ParseUint(v, 10, 32); err == nil {
				timeout = time.Duration(ms) * time.Millisecond
			}
		}
	}
	if v := m.Get("x-envoy-upstream-rq-timeout-ms"); v != "" && !expectedSet {
		if ms, err := strconv.ParseUint(v, 10, 32); err == nil {
			timeout = time.Duration(ms) * time.Millisecond
		}
		m.Del("x-envoy-upstream-rq-timeout-ms")
	}
	if s.IsGRPC && a.HonorGRPCTimeout() {
		if d, ok := parseGRPCTimeout(m.Get("grpc-timeout")); ok {
			if a.MaxGRPCTimeout > 0 && d > a.MaxGRPCTimeout {
				d = a.MaxGRPCTimeout
			}
			timeout = max(d-a.GRPCTimeoutOffset, time.Millisecond)
		}
	}
	at.policy = a.RetryPolicy
	if at.policy == nil {
		at.policy = s.Route.VHost.RetryPolicy
	}
	retryOn, grpcOn, maxRetries := m.Get("x-envoy-retry-on"), m.Get("x-envoy-retry-grpc-on"), m.Get("x-envoy-max-retries")
	m.Del("x-envoy-retry-on")
	m.Del("x-envoy-retry-grpc-on")
	m.Del("x-envoy-max-retries")
	if retryOn != "" || grpcOn != "" || maxRetries != "" {
		policy := route.RetryPolicy{NumRetries: 1, BackoffBase: 25 * time.Millisecond, BackoffMax: 250 * time.Millisecond}
		if at.policy != nil {
			policy = *at.policy
		}
		for _, v := range []string{retryOn, grpcOn} {
			on, _ := route.ParseRetryOn(v)
			policy.On |= on
		}
		if n, err := strconv.ParseUint(maxRetries, 10, 32); err == nil {
			policy.NumRetries = uint32(n)
		}
		at.policy = &policy
	}
	if v := m.Get("x-envoy-upstream-rq-per-try-timeout-ms"); v != "" {
		if ms, err := strconv.ParseUint(v, 10, 32); err == nil && at.policy != nil {
			p := *at.policy
			p.PerTryTimeout = time.Duration(ms) * time.Millisecond
			at.policy = &p
		}
		m.Del("x-envoy-upstream-rq-per-try-timeout-ms")
	}
	if at.policy != nil {
		at.retryOn = at.policy.On
		at.perTry = at.policy.PerTryTimeout
	}
	if timeout > 0 {
		at.deadline = s.Info.StartTime.Add(timeout)
	}
	// x-envoy-expected-rq-timeout-ms tells the upstream how long we wait.
	expected := timeout
	if at.perTry > 0 && (expected == 0 || at.perTry < expected) {
		expected = at.perTry
	}
	if !s.cfg.SuppressEnvoyHeaders && expected > 0 {
		v := a.TimeoutMs
		if expected != a.Timeout {
			v = strconv.FormatInt(expected.Milliseconds(), 10)
		}
		m.Set("x-envoy-expected-rq-timeout-ms", v)
	}
	if od := at.cl.OrigDst; od != nil {
		// ORIGINAL_DST: the connection's (restored) destination, or the
		// request's header with use_http_header.
		at.lb.OriginalDst = s.OriginalDst
		if od.UseHTTPHeader {
			// Pseudo-headers too: terminate_http1_connect.yaml names
			// :authority, the CONNECT target.
			at.lb.OriginalDstHeader = s.Req.Get(od.HeaderName)
		}
	}
	// The subset load balancer's criteria: a weighted cluster's (already
	// merged with the route's), else the route's.
	at.lb.MetadataMatch = a.MetadataMatch
	if at.wc != nil {
		at.lb.MetadataMatch = at.wc.MetadataMatch
	}
	if at.policy != nil && (at.policy.PreviousHosts || at.policy.Reject != nil) {
		// host_selection_retry_max_attempts counts the picks after the
		// first (Envoy's chooseHost: hostSelectionRetryCount() + 1; the
		// count is 1 when unset). runAttempt applies them on retries only.
		at.lb.MaxSelectAttempts = max(at.policy.HostSelectionMaxAttempts, 1) + 1
	}
	s.hashKey(at, a)
}

// parseGRPCTimeout parses a grpc-timeout header ("100m", "5S").
func parseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// hashKey computes the request hash for ring hash / Maglev from the
// route's hash policies, as Envoy's HashPolicyImpl.
func (s *Stream) hashKey(at *attempt, a *route.RouteAction) {
	var hash uint64
	have := false
	for i := range a.HashPolicies {
		hp := &a.HashPolicies[i]
		var v string
		var ok bool
		switch hp.Kind {
		case 0:
			v, ok = s.Req.Lookup(hp.Name)
			if ok && hp.RegexRewrite != nil {
				v = hp.RegexRewrite.ReplaceAllString(v, hp.RegexSubst)
			}
		case 1:
			v, ok = cookieValue(s.Req.Map.Values("cookie"), hp.Name)
			if !ok && hp.HasTTL() {
				v, ok = newCookieValue(s), true
				s.setCookie(hp, v)
			}
		case 2:
			v, ok = s.Info.DownstreamRemote.Addr().String(), s.Info.DownstreamRemote.IsValid()
		case 3:
			v, ok = queryValue(s.Req.Path, hp.Name)
		}
		if ok {
			h := xxhash.Sum64String(v)
			if have {
				hash = (hash<<1 | hash>>63) ^ h
			} else {
				hash = h
			}
			have = true
		}
		if hp.Terminal && have {
			break
		}
	}
	at.lb.HashKey, at.lb.HasHash = hash, have
}

func cookieValue(cookies []string, name string) (string, bool) {
	for _, line := range cookies {
		for _, part := range strings.Split(line, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if ok && k == name {
				// As Envoy, a quoted value is hashed without its quotes.
				if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
					v = v[1 : len(v)-1]
				}
				return v, true
			}
		}
	}
	return "", false
}

func queryValue(path, name string) (string, bool) {
	i := strings.IndexByte(path, '?')
	if i < 0 {
		return "", false
	}
	for _, kv := range strings.Split(path[i+1:], "&") {
		k, v, _ := strings.Cut(kv, "=")
		if k == name {
			return v, true
		}
	}
	return "", false
}

func newCookieValue(s *Stream) string {
	return strconv.FormatUint(xxhash.Sum64String(s.Info.DownstreamRemote.String()+strconv.FormatInt(time.Now().UnixNano(), 10)), 16)
}

// pendingCookie is set when a hash policy generated a cookie that the
// response must carry.
func (s *Stream) setCookie(hp *route.HashPolicy, v string) {
	c := hp.Name + "=\"" + v + "\""
	// A zero ttl makes a session cookie (no Max-Age), as Envoy does; this
	// is Contour's Cookie load-balancing strategy.
	if hp.CookieTTL > 0 {
		c += "; Max-Age=" + strconv.FormatInt(int64(hp.CookieTTL.Seconds()), 10)
	}
	if hp.CookiePath != "" {
		c += "; Path=" + hp.CookiePath
	}
	c += "; HttpOnly"
	s.newCookie = c
}

// prepareUpstreamHeaders rewrites the path and host and applies the
// request header mutations.
func (s *Stream) prepareUpstreamHeaders(at *attempt, a *route.RouteAction) {
	m := &s.Req.Map
	at.path = s.Req.Path
	if p, changed := a.RewritePath(s.Req.Path); changed {
		m.Set("x-envoy-original-path", s.Req.Path)
		at.path = p
	}
	at.authority = s.Req.Authority
	switch {
	case at.wc != nil && at.wc.HostRewrite != "":
		at.authority = at.wc.HostRewrite
	case a.HostRewrite != "":
		at.authority = a.HostRewrite
	case a.HostRewriteHeader != "":
		if v := s.Req.Get(a.HostRewriteHeader); v != "" {
			at.authority = v
		}
	case a.HostRewritePath != nil:
		at.authority = a.HostRewritePath.ReplaceAllString(stripQueryPath(s.Req.Path), a.HostRewritePathSubst)
	case a.HostRewriteFormat != nil:
		if v := a.HostRewriteFormat.Append(s.scratch[:0], s.Info); len(v) > 0 {
			at.authority = string(v)
		}
	}
	if at.authority != s.Req.Authority && a.AppendXForwardedHost {
		m.Append("x-forwarded-host", s.Req.Authority)
	}
	s.scratch = s.Table.ApplyRequest(s.Route, at.wc, m, s.Info, s.scratch)
}

func stripQueryPath(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

// planBody decides how the request body reaches the upstream: buffered
// (replayable for retries and mirrors, up to 1 MiB) or streamed.
func (s *Stream) planBody(at *attempt) bool {
	n := s.ds.BodyLength()
	if n == 0 {
		at.bodyMode = bodyNone
		s.ds.BodyConsumed()
		return true
	}
	replay := at.policy != nil || len(s.Route.Action.Mirrors) > 0
	if !replay || n > retryBufferLimit {
		at.bodyMode = bodyStream
		return true
	}
	buf := bytes.NewBuffer(make([]byte, 0, max(n, 0)))
	read := readerFunc(s.ds.ReadBody)
	if c, ok := s.ds.(bufferCharger); ok && c.BufferAccounting() {
		// The copy kept for retries and mirrors is the stream's buffer
		// memory (the overload manager's reset_high_memory_stream).
		read = func(p []byte) (int, error) {
			n, err := s.ds.ReadBody(p)
			c.ChargeBuffered(int64(n))
			return n, err
		}
	}
	lr := io.LimitReader(read, retryBufferLimit+1)
	if _, err := buf.ReadFrom(lr); err != nil {
		if errors.Is(err, ErrRequestTimeout) {
			s.ds.BodyConsumed()
			s.ds.LocalReply(408, "request timeout", "request_overall_timeout", 0)
			return false
		}
		s.ds.BodyConsumed()
		s.ds.CloseConnection()
		var pe *http1.ProtocolError
		if errors.As(err, &pe) {
			// A malformed body is the client's fault: 400, flag DPE.
			s.ds.LocalReply(400, "Bad Request", pe.Detail, streaminfo.DownstreamProtocolError)
			return false
		}
		s.Info.SetFlag(streaminfo.DownstreamConnectionTermination)
		s.Resp.Status = 0
		return false
	}
	if buf.Len() > retryBufferLimit {
		// Too large to replay: stream the rest after what was read.
		at.body = buf.Bytes()
		at.bodyMode = bodyStream
		at.policy, at.retryOn = nil, 0
		return true
	}
	s.ds.BodyConsumed()
	s.Info.BytesReceived = uint64(buf.Len())
	at.body = buf.Bytes()
	at.bodyMode = bodyBuffered
	return true
}

type readerFunc func([]byte) (int, error)

// bufferCharger is a Downstream whose buffers are accounted (the
// connection manager's stream with overload_manager.buffer_factory_config):
// what the router holds for it is charged until the stream ends.
type bufferCharger interface {
	BufferAccounting() bool
	ChargeBuffered(n int64)
}

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// pick chooses the attempt's host. For an aggregate cluster the child is
// chosen per attempt (Envoy's linearized priorities) and the rest of the
// attempt runs on the child's settings: at.cl becomes the child.
func (s *Stream) pick(at *attempt) *upstream.Host {
	if at.agg != nil {
		at.cl = at.agg
	}
	at.lb.Authority = at.authority // dynamic_forward_proxy resolves it
	// stateful_session's host, on the first attempt only: as Envoy's
	// overrideHostToSelect, a retry picks with the load balancer (and its
	// retry predicates) so it can leave a failing sticky host.
	at.lb.Override = nil
	if s.Info.UpstreamRequestAttemptCount <= 1 {
		at.lb.Override = s.Info.UpstreamOverrideHost
	}
	cl, h := at.cl.Choose(&at.lb, s.cfg.Clusters.Get)
	at.cl = cl
	return h
}

// runAttempt makes one attempt: pick a host, send, read the response head.
// startAttempt tells the observer an upstream request is about to go.
func (s *Stream) startAttempt() {
	if s.Attempts != nil {
		s.Attempts.StartAttempt()
	}
}

func (s *Stream) runAttempt(at *attempt) {
	at.fail, at.failErr, at.ex = failNone, nil, nil
	at.lb.Exclude = at.lb.Exclude[:0]
	// Retry host predicates only judge the picks of a retry, as Envoy's
	// shouldSelectAnotherHost ("we only care about host selection when
	// performing a retry").
	at.lb.Reject = nil
	if at.policy != nil && s.Info.UpstreamRequestAttemptCount > 1 {
		at.lb.Reject = at.policy.Reject
	}
	if at.policy != nil && at.policy.PreviousHosts {
		for _, h := range at.tried {
			if h != nil {
				at.lb.Exclude = append(at.lb.Exclude, h)
			}
		}
	}
	at.lb.AvoidLevels = at.lb.AvoidLevels[:0]
	if at.policy != nil && at.policy.PreviousPriorities > 0 {
		f := at.policy.PreviousPriorities
		// previous_priorities: Envoy recomputes the avoided levels every
		// update_frequency attempts, from all the hosts attempted so far.
		n := s.Info.UpstreamRequestAttemptCount // this attempt included
		if n > len(at.tried)+1 {
			n = len(at.tried) + 1
		}
		for _, h := range at.tried[:(n-1)/f*f] {
			if h != nil {
				at.lb.AvoidLevels = append(at.lb.AvoidLevels, h)
			}
		}
	}
	h := s.pick(at)
	if h == nil {
		at.cl.Stats.CxNoneHealthy.Inc()
		at.fail = failNoHealthy
		return
	}
	at.host = h
	if s.Route.Action.AutoHostRewrite && h.Hostname() != "" {
		// auto_host_rewrite: the Host is the chosen host's name (DNS clusters,
		// or endpoints with a hostname).
		at.authority = h.Hostname()
	}
	if n := s.Info.UpstreamRequestAttemptCount; n <= len(at.tried) {
		at.tried[n-1] = h
	}
	s.Info.UpstreamHost = h.Address
	s.Info.UpstreamHostname = h.Hostname()
	at.cl.Stats.RqTotal.Inc()
	h.HostStarted()
	proto := at.cl.Protocol
	if proto == upstream.UseDownstream {
		proto = upstream.HTTP1
		if s.Info.Protocol == "HTTP/2" {
			proto = upstream.HTTP2
		}
	}
	tryDeadline := at.deadline
	if at.perTry > 0 {
		if d := time.Now().Add(at.perTry); tryDeadline.IsZero() || d.Before(tryDeadline) {
			tryDeadline = d
		}
	}
	s.exchange(at, proto, tryDeadline)
	if at.gone.Load() {
		// The client left during the attempt: whatever the upstream did,
		// it is not the host's fault and nothing is retried.
		if at.fail == failNone {
			s.releaseAttempt(at)
		}
		at.fail = failDownstream
		s.cfg.Stats.CxDestroyRemoteActiveRq.Inc()
		at.cl.Stats.CxDestroyLocalWithActiveRq.Inc()
		s.Info.SetFlag(streaminfo.DownstreamConnectionTermination)
	}
	switch at.fail {
	case failNone:
		h.OutlierResult(int(at.head.Status))
	case failConnect:
		h.OutlierResult(upstream.ResultConnectFailed)
	case failTimeout, failPerTry:
		h.OutlierResult(upstream.ResultTimeout)
	case failReset, failProtocol:
		h.OutlierResult(upstream.ResultReset)
	}
	switch at.fail {
	case failNone:
	case failDownstream, failDownstreamProtocol, failLocalReply:
		// Client faults (and upstream filters' answers) are not the host's (Envoy does not count them
		// in outlier detection either).
		h.HostAbandoned()
	default:
		h.HostFinished(false, at.fail == failTimeout || at.fail == failPerTry)
	}
}

// exchange sends the request to at.host and reads the response head; on
// success at.ex holds the exchange for the relay.
func (s *Stream) exchange(at *attempt, proto upstream.Protocol, deadline time.Time) {
	ex := at.cl.Open(at.host, proto)
	if ch, ok := at.cl.UpstreamFilters.(*upstreamChain); ok {
		ex = s.filterExchange(ch, ex)
	}
	at.setLive(ex)
	r := &at.ureq
	*r = upstream.Request{Method: s.Req.Method, Path: at.path, Authority: at.authority, Headers: &s.Req.Map,
		Deadline: deadline, IdleTimeout: s.idleTimeout(), SNI: s.upstreamSNI(at), ProxyProtocol: s.proxyProtocol(at)}
	if at.cl.PassesFilterState() {
		r.FilterState = s.Info.UpstreamSharedObjects()
	}
	// Envoy's setUpstreamScheme: the request's :scheme goes upstream, or
	// with match_upstream the upstream transport's.
	r.Scheme = s.Req.Scheme
	if s.cfg.SchemeMatchUpstream {
		r.Scheme = "http"
		if at.cl.ImplementsSecureTransport() {
			r.Scheme = "https"
		}
	}
	if proto == upstream.HTTP2 {
		// An HTTP/2 stream ends with the client's context. An HTTP/1.1
		// exchange is cut by Cancel (downstreamGone) instead: asking the
		// HTTP/1 codec for a context would make one per request.
		r.Ctx = s.ds.Context()
	}
	switch at.bodyMode {
	case bodyBuffered:
		r.Body, r.Length = at.body, int64(len(at.body))
	case bodyStream:
		s.ds.BodyConsumed()
		s.Info.BytesReceived += uint64(len(at.body))
		r.Body, r.Stream, r.Length, r.Trailers = at.body, readerFunc(s.countingRead), s.ds.BodyLength(), s.ds.RequestTrailers
		if r.Length < 0 {
			r.Length = -1
		}
	}
	at.sentAt = time.Now()
	if s.Info.FirstUpstreamTxByte == 0 {
		s.Info.FirstUpstreamTxByte = s.Info.Since()
	}
	err := ex.Send(r, &at.head)
	s.Info.UpstreamBytesSent += uint64(ex.Sent())
	s.Info.UpstreamBytesReceived += uint64(ex.Received())
	s.Info.LastUpstreamTxByte = s.Info.Since()
	if err != nil {
		at.setLive(nil)
		ex.Close(false)
		at.fail, at.failErr = s.failOf(at, err, deadline)
		return
	}
	if s.Info.FirstUpstreamRxByte == 0 {
		s.Info.FirstUpstreamRxByte = s.Info.Since()
	}
	at.ex = ex
}

// failOf maps an exchange error to the router's failure kinds.
func (s *Stream) failOf(at *attempt, err error, deadline time.Time) (failKind, error) {
	var ee *upstream.ExchangeError
	if !errors.As(err, &ee) {
		return failReset, err
	}
	switch ee.Kind {
	case upstream.FailConnect:
		return failConnect, ee.Err
	case upstream.FailOverflow:
		return failOverflow, ee.Err
	case upstream.FailTimeout:
		return s.timeoutKind(at, deadline), ee.Err
	case upstream.FailIdle:
		return failIdle, ee.Err
	case upstream.FailProtocol:
		return failProtocol, ee.Err
	case upstream.FailSource:
		switch {
		case errors.Is(ee.Err, errUpstreamReplied):
			return failLocalReply, ee.Err
		case errors.Is(ee.Err, ErrRequestTimeout):
			return failRequestTimeout, ee.Err
		case errors.Is(ee.Err, errDownstreamProtocol):
			return failDownstreamProtocol, ee.Err
		}
		return failDownstream, ee.Err
	}
	return failReset, ee.Err
}

func (s *Stream) timeoutKind(at *attempt, deadline time.Time) failKind {
	if !at.deadline.IsZero() && !deadline.Before(at.deadline) {
		return failTimeout
	}
	return failPerTry
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, errDeadline)
}

var errDeadline = errors.New("deadline exceeded")

// countingRead reads the downstream body for the upstream exchange and
// counts it; a failure says whose fault it is.
func (s *Stream) countingRead(p []byte) (int, error) {
	n, err := s.ds.ReadBody(p)
	s.Info.BytesReceived += uint64(n)
	if err != nil && err != io.EOF {
		s.ds.CloseConnection()
		if errors.Is(err, ErrRequestTimeout) {
			return n, ErrRequestTimeout
		}
		var pe *http1.ProtocolError
		if errors.As(err, &pe) {
			return n, &downstreamProtocolError{pe}
		}
		s.Info.SetFlag(streaminfo.DownstreamConnectionTermination)
		return n, errDownstream
	}
	return n, err
}

var errDownstream = errors.New("downstream closed while sending the request body")

// errDownstreamProtocol matches a downstreamProtocolError.
var errDownstreamProtocol = errors.New("malformed downstream request body")

// downstreamProtocolError is a request body the client framed wrongly
// (a bad chunk size, say), found while it was streamed upstream.
type downstreamProtocolError struct{ pe *http1.ProtocolError }

func (e *downstreamProtocolError) Error() string {
	return errDownstreamProtocol.Error() + ": " + e.pe.Error()
}
func (e *downstreamProtocolError) Is(target error) bool { return target == errDownstreamProtocol }
func (e *downstreamProtocolError) Unwrap() error        { return e.pe }

// shouldRetry decides from the attempt's outcome and the retry policy.
func (s *Stream) shouldRetry(at *attempt) bool {
	p := at.policy
	if p == nil || at.retries >= p.NumRetries || at.bodyMode == bodyStream {
		if p != nil && at.retries >= p.NumRetries && at.retries > 0 && s.retriable(at) {
			s.Info.SetFlag(streaminfo.UpstreamRetryLimitExceeded)
		}
		return false
	}
	if !at.deadline.IsZero() && !time.Now().Before(at.deadline) {
		return false
	}
	return s.retriable(at)
}

// retriable reports whether the outcome matches the retry conditions.
func (s *Stream) retriable(at *attempt) bool {
	on := at.retryOn
	switch at.fail {
	case failNone:
		st := at.head.Status
		switch {
		case on&route.Retry5xx != 0 && st >= 500:
			return true
		case on&route.RetryGatewayError != 0 && (st == 502 || st == 503 || st == 504):
			return true
		case on&route.RetryRetriable4xx != 0 && st == 409:
			return true
		case on&route.RetryRetriableStatusCodes != 0:
			for _, c := range at.policy.StatusCodes {
				if int(c) == st {
					return true
				}
			}
		}
		if on&route.RetryRetriableHeaders != 0 && at.policy.RetriableHeadersMatch(&at.head.Headers) {
			return true
		}
		if on&(route.RetryGRPCCancelled|route.RetryGRPCDeadlineExceeded|route.RetryGRPCInternal|route.RetryGRPCResourceExhausted|route.RetryGRPCUnavailable) != 0 {
			if gs := at.head.Headers.Get("grpc-status"); gs != "" {
				code, _ := strconv.Atoi(gs)
				switch {
				case code == 1 && on&route.RetryGRPCCancelled != 0,
					code == 4 && on&route.RetryGRPCDeadlineExceeded != 0,
					code == 13 && on&route.RetryGRPCInternal != 0,
					code == 8 && on&route.RetryGRPCResourceExhausted != 0,
					code == 14 && on&route.RetryGRPCUnavailable != 0:
					return true
				}
			}
		}
		return false
	case failConnect:
		return on&(route.Retry5xx|route.RetryGatewayError|route.RetryConnectFailure|route.RetryReset|route.RetryResetBeforeRequest) != 0
	case failReset, failProtocol:
		return on&(route.Retry5xx|route.RetryGatewayError|route.RetryReset) != 0
	case failPerTry:
		return on&(route.Retry5xx|route.RetryGatewayError|route.RetryReset) != 0
	}
	return false
}

// releaseAttempt drops an attempt's response unread: the client left.
func (s *Stream) releaseAttempt(at *attempt) {
	at.closeExchange(false)
}

// discardAttempt releases a response that will be retried.
func (s *Stream) discardAttempt(at *attempt) {
	if at.ex == nil {
		return
	}
	at.host.HostFinished(false, false)
	if !s.cfg.NoDynamicStats {
		at.cl.Stats.ChargeCode(at.head.Status)
	}
	at.setLive(nil)
	at.ex.Discard()
	at.ex = nil
}

// backoff returns Envoy's jittered exponential back-off for retry n.
func backoff(p *route.RetryPolicy, n uint32) time.Duration {
	base, maxI := 25*time.Millisecond, 250*time.Millisecond
	if p != nil {
		base, maxI = p.BackoffBase, p.BackoffMax
	}
	upper := base
	for i := uint32(1); i < n && upper < maxI; i++ {
		upper *= 2
	}
	if upper > maxI {
		upper = maxI
	}
	return time.Duration(rand.Int64N(int64(upper) + 1))
}

// finishFailure answers with the local reply for a failed attempt.
func (s *Stream) finishFailure(at *attempt) {
	const prefix = "upstream connect error or disconnect/reset before headers. "
	cs := at.cl.Stats
	switch at.fail {
	case failNoHealthy:
		status := 503
		if o := at.lb.Override; o != nil && at.lb.OverrideNotFound && o.NotFoundStatus != 0 {
			// A strict override host missing from the cluster answers with
			// status_on_strict_destination_not_found (Envoy 1.38).
			status = o.NotFoundStatus
		}
		s.ds.LocalReply(status, "no healthy upstream", "no_healthy_upstream", streaminfo.NoHealthyUpstream)
	case failOverflow:
		s.ds.LocalReply(503, prefix+"reset reason: overflow", "upstream_reset_before_response_started{overflow}", streaminfo.UpstreamOverflow)
	case failConnect:
		reason := ""
		if at.failErr != nil {
			reason = transportFailure(at.failErr)
			s.Info.UpstreamTransportFailureReason = reason
		}
		body := prefix + "reset reason: remote connection failure"
		if reason != "" {
			body += ", transport failure reason: " + reason
		}
		s.ds.LocalReply(503, body, "upstream_reset_before_response_started{remote_connection_failure}", streaminfo.UpstreamConnectionFailure)
	case failReset:
		cs.RqRxReset.Inc()
		s.ds.LocalReply(503, prefix+"reset reason: connection termination", "upstream_reset_before_response_started{connection_termination}", streaminfo.UpstreamConnectionTermination)
	case failProtocol:
		s.ds.LocalReply(502, prefix+"reset reason: protocol error", "upstream_reset_before_response_started{protocol_error}", streaminfo.UpstreamProtocolError)
	case failTimeout:
		cs.RqTimeout.Inc()
		s.ds.LocalReply(504, "upstream request timeout", "upstream_response_timeout", streaminfo.UpstreamRequestTimeout)
	case failPerTry:
		cs.RqPerTryTimeout.Inc()
		s.ds.LocalReply(504, "upstream request timeout", "upstream_per_try_timeout", streaminfo.UpstreamRequestTimeout)
	case failDownstream:
		s.Info.SetFlag(streaminfo.DownstreamConnectionTermination)
	case failDownstreamProtocol:
		// As Envoy's codec error on a request body: 400, flag DPE, the
		// connection closes; the upstream request was reset.
		details := "http1.codec_error"
		var pe *http1.ProtocolError
		if errors.As(at.failErr, &pe) && pe.Detail != "" {
			details = pe.Detail
		}
		s.ds.CloseConnection()
		s.ds.LocalReply(400, "Bad Request", details, streaminfo.DownstreamProtocolError)
	case failRequestTimeout:
		s.ds.LocalReply(408, "request timeout", "request_overall_timeout", 0)
	case failIdle:
		s.cfg.Stats.RqIdleTimeout.Inc()
		s.ds.LocalReply(408, "stream timeout", "stream_idle_timeout", streaminfo.StreamIdleTimeout)
	}
}

// transportFailure renders a connect error as Envoy's transport failure
// reason ("delayed connect error: 111" for a refused connection).
func transportFailure(err error) string {
	var se *os.SyscallError
	if errors.As(err, &se) {
		if errno, ok := se.Err.(interface{ Error() string }); ok {
			_ = errno
		}
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "connection refused"):
		return "delayed connect error: Connection refused"
	case errors.Is(err, upstream.ErrConnectTimeout) || strings.Contains(msg, "timeout"):
		return "connect timeout"
	}
	return msg
}

// relayResponse writes the upstream response to the client.
func (s *Stream) relayResponse(at *attempt) {
	ex, head := at.ex, &at.head
	// As Envoy, %RESPONSE_CODE_DETAILS% of a proxied response.
	s.Info.ResponseCodeDetails = "via_upstream"
	cl := at.cl
	s.Resp.Status = head.Status
	s.Resp.Map.CopyFrom(&head.Headers)
	if s.newCookie != "" {
		s.Resp.Add("set-cookie", s.newCookie)
	}
	headers.StripHopByHop(&s.Resp.Map)
	s.finishUpstreamHeaders(at)
	length, endStream, streaming := ex.Framing(s.Req.Method)
	s.ds.ResponseStarted()
	if s.Info.FirstDownstreamTxByte == 0 {
		s.Info.FirstDownstreamTxByte = s.Info.Since()
	}
	// As Envoy, response codes are counted when the headers pass through,
	// before they reach the client.
	if !s.cfg.NoDynamicStats {
		cl.Stats.ChargeCode(head.Status)
	}
	s.cfg.Stats.RqStatus.Inc(head.Status)
	if err := s.ds.EncodeHead(length, endStream); err != nil {
		if !errors.Is(err, ErrReplaced) {
			s.Info.SetFlag(streaminfo.DownstreamConnectionTermination)
		}
		at.closeExchange(false)
		at.host.HostFinished(false, false)
		return
	}
	ok := true
	var trailers *headers.Map
	if !endStream {
		ok = s.copyBody(ex.Body(), streaming, at)
		if ok {
			trailers = ex.Trailers()
		}
	}
	s.Info.LastUpstreamRxByte = s.Info.Since()
	if !ok {
		s.ds.CloseConnection()
	}
	s.ds.EncodeFinish(trailers)
	s.Info.LastDownstreamTxByte = s.Info.Since()
	at.closeExchange(ok)
	if !s.cfg.NoDynamicStats {
		cl.Stats.RqTime.Record(float64(time.Since(at.sentAt).Microseconds()) / 1000)
	}
	at.host.HostFinished(ok && head.Status < 500, false)
	s.ds.DrainRequestBody()
}

// finishUpstreamHeaders adds Envoy's response headers and the route's
// response mutations.
func (s *Stream) finishUpstreamHeaders(at *attempt) {
	m := &s.Resp.Map
	if !s.cfg.SuppressEnvoyHeaders {
		m.Set("x-envoy-upstream-service-time", strconv.FormatInt(time.Since(at.sentAt).Milliseconds(), 10))
	}
	if s.Route.VHost.IncludeAttemptCountResp {
		m.Set("x-envoy-attempt-count", strconv.Itoa(s.Info.UpstreamRequestAttemptCount))
	}
	s.scratch = s.Table.ApplyResponse(s.Route, at.wc, m, s.Info, s.scratch)
	s.ds.FinalizeResponseHeaders()
}

// copyBody relays a response body; streaming bodies (chunked, until
// close) are flushed as they arrive.
func (s *Stream) copyBody(src io.Reader, stream bool, at *attempt) bool {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			s.Info.BytesSent += uint64(n)
			if werr := s.ds.EncodeBody(buf[:n]); werr != nil {
				if !errors.Is(werr, ErrReplaced) {
					s.Info.SetFlag(streaminfo.DownstreamConnectionTermination)
				}
				return false
			}
			if stream {
				if werr := s.ds.EncodeFlush(); werr != nil {
					if !errors.Is(werr, ErrReplaced) {
						s.Info.SetFlag(streaminfo.DownstreamConnectionTermination)
					}
					return false
				}
			}
		}
		if err == io.EOF {
			return true
		}
		if err != nil {
			if isTimeout(err) {
				at.cl.Stats.RqTimeout.Inc()
				s.Info.SetFlag(streaminfo.UpstreamRequestTimeout)
			} else {
				s.Info.SetFlag(streaminfo.UpstreamConnectionTermination)
			}
			s.cfg.Stats.RqReset.Inc()
			return false
		}
	}
}

// proxyProtocol is the downstream connection's PROXY protocol record for
// a cluster whose transport socket sends PROXY headers (nil for others):
// the listener filter's, or the connection's own addresses, as Envoy's
// connection manager records them.
func (s *Stream) proxyProtocol(at *attempt) *proxyproto.Data {
	if !at.cl.SendsProxyProtocol() {
		return nil
	}
	remote := s.Info.DownstreamConnRemote
	if !remote.IsValid() {
		remote = s.Info.DownstreamDirectRemote
	}
	return proxyproto.Downstream(s.Info.FilterState, remote, s.Info.DownstreamLocal)
}

// upstreamSNI is the TLS server name for auto_sni clusters: the request's
// host (or the override header), without the port.
func (s *Stream) upstreamSNI(at *attempt) string {
	if !at.cl.AutoSNI {
		return ""
	}
	name := at.authority
	if at.cl.AutoSNIHeader != "" {
		if v := s.Req.Get(at.cl.AutoSNIHeader); v != "" {
			name = v
		}
	}
	host, _ := headers.SplitHostPort(name)
	return host
}
