// Package upstream implements Envoy clusters: service discovery (STATIC,
// STRICT_DNS, LOGICAL_DNS, EDS), load balancers (round robin, least
// request, random, ring hash, Maglev) with priorities and panic mode,
// active health checks, circuit breakers, and connection pools for
// HTTP/1.1 and HTTP/2 upstreams, and the HTTP/3 client (http3.go).
//
// Routes never hold a *Cluster: they hold a *Ref, a stable handle whose
// atomic pointer the Manager swaps when a cluster is added, changed or
// removed. A host-set change (DNS, EDS, health) swaps only that cluster's
// host set, so nothing else is rebuilt.
package upstream

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/quic-go/quic-go"

	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/userspace"
)

// Protocol is the protocol used to talk to a cluster's hosts.
type Protocol uint8

// Upstream protocols.
const (
	HTTP1 Protocol = iota
	HTTP2
	UseDownstream // HttpProtocolOptions.use_downstream_protocol_config
)

// TransportSocket wraps new upstream connections (TLS); nil means plain TCP.
type TransportSocket interface {
	// Client runs the handshake; sni overrides the configured server name
	// when set (auto_sni).
	Client(ctx context.Context, conn net.Conn, sni string) (net.Conn, error)
	// ALPN returns the negotiated protocol of a wrapped connection, or "".
	ALPN(conn net.Conn) string
}

// Stats are a cluster's Envoy-named statistics (cluster.<name>.*).
type Stats struct {
	RqTotal, RqCompleted, RqTimeout, RqPerTryTimeout, RqRetry, RqRetrySuccess *stats.Counter
	RqRetryOverflow, RqRxReset, RqTxReset, RqCancelled, RqMaintenance         *stats.Counter
	// CxDestroyLocalWithActiveRq counts upstream connections closed by the
	// proxy with a request on them (the client went away).
	CxDestroyLocalWithActiveRq    *stats.Counter
	CxNoneHealthy, LBHealthyPanic *stats.Counter
	RqActive                      *stats.Gauge
	RqStatus                      *stats.StatusCounters
	RqTime                        *stats.Histogram
	CxRxBytes, CxTxBytes          *stats.Counter
	// InternalRedirectSucceeded and InternalRedirectFailed count the
	// redirect responses the router followed and those it passed on
	// (upstream_internal_redirect_succeeded_total / _failed_total).
	InternalRedirectSucceeded, InternalRedirectFailed *stats.Counter

	cxTotal, cxHTTP1Total, cxHTTP2Total, cxConnectFail, cxConnectTimeout              *stats.Counter
	cxDestroy, cxDestroyLocal, cxDestroyRemote, cxMaxRequests, cxOverflow             *stats.Counter
	rqPendingTotal, rqPendingOverflow, membershipChange                               *stats.Counter
	updateAttempt, updateSuccess, updateFailure, updateEmpty, updateNoRebuild         *stats.Counter
	cxActive, rqPendingActive, membershipTotal, membershipHealthy, membershipDegraded *stats.Gauge
	cxConnectMs                                                                       *stats.Histogram

	hc healthStats
}

func newStats(s stats.Scope) *Stats {
	return &Stats{
		RqTotal: s.Counter("upstream_rq_total"), RqCompleted: s.Counter("upstream_rq_completed"),
		RqTimeout: s.Counter("upstream_rq_timeout"), RqPerTryTimeout: s.Counter("upstream_rq_per_try_timeout"),
		RqRetry: s.Counter("upstream_rq_retry"), RqRetrySuccess: s.Counter("upstream_rq_retry_success"),
		RqRetryOverflow: s.Counter("upstream_rq_retry_overflow"), RqRxReset: s.Counter("upstream_rq_rx_reset"),
		CxDestroyLocalWithActiveRq: s.Counter("upstream_cx_destroy_local_with_active_rq"),
		RqTxReset:                  s.Counter("upstream_rq_tx_reset"), RqCancelled: s.Counter("upstream_rq_cancelled"),
		RqMaintenance:             s.Counter("upstream_rq_maintenance_mode"),
		InternalRedirectSucceeded: s.Counter("upstream_internal_redirect_succeeded_total"),
		InternalRedirectFailed:    s.Counter("upstream_internal_redirect_failed_total"),
		CxNoneHealthy:             s.Counter("upstream_cx_none_healthy"), LBHealthyPanic: s.Counter("lb_healthy_panic"),
		RqActive:  s.Gauge("upstream_rq_active"),
		RqStatus:  stats.NewStatusCounters(s, "upstream_rq", true),
		RqTime:    s.Histogram("upstream_rq_time"),
		CxRxBytes: s.Counter("upstream_cx_rx_bytes_total"), CxTxBytes: s.Counter("upstream_cx_tx_bytes_total"),

		cxTotal: s.Counter("upstream_cx_total"), cxHTTP1Total: s.Counter("upstream_cx_http1_total"),
		cxHTTP2Total: s.Counter("upstream_cx_http2_total"), cxConnectFail: s.Counter("upstream_cx_connect_fail"),
		cxConnectTimeout: s.Counter("upstream_cx_connect_timeout"), cxDestroy: s.Counter("upstream_cx_destroy"),
		cxDestroyLocal: s.Counter("upstream_cx_destroy_local"), cxDestroyRemote: s.Counter("upstream_cx_destroy_remote"),
		cxMaxRequests: s.Counter("upstream_cx_max_requests"), cxOverflow: s.Counter("upstream_cx_overflow"),
		rqPendingTotal: s.Counter("upstream_rq_pending_total"), rqPendingOverflow: s.Counter("upstream_rq_pending_overflow"),
		membershipChange: s.Counter("membership_change"),
		updateAttempt:    s.Counter("update_attempt"), updateSuccess: s.Counter("update_success"),
		updateFailure: s.Counter("update_failure"), updateEmpty: s.Counter("update_empty"),
		updateNoRebuild: s.Counter("update_no_rebuild"),
		cxActive:        s.Gauge("upstream_cx_active"), rqPendingActive: s.Gauge("upstream_rq_pending_active"),
		membershipTotal: s.Gauge("membership_total"), membershipHealthy: s.Gauge("membership_healthy"),
		membershipDegraded: s.Gauge("membership_degraded"),
		cxConnectMs:        s.Histogram("upstream_cx_connect_ms"),
		hc:                 newHealthStats(s.Scope("health_check.")),
	}
}

// breakers are one priority's circuit breaker thresholds and the
// requests and retries counted against them.
type breakers struct {
	maxConnections, maxPending, maxRequests, maxRetries uint32
	// retryBudget, when set, replaces maxRetries with a share of the active
	// and pending requests (at least minRetryConcurrency).
	retryBudget         float64 // percent
	minRetryConcurrency uint32
	hasBudget           bool
	trackRemaining      bool

	rqActive, retries atomic.Int64
	gauges            breakerGauges
}

// breakerGauges are circuit_breakers.<priority>.* as Envoy names them.
type breakerGauges struct {
	cxOpen, pendingOpen, rqOpen, retryOpen                       *stats.Gauge
	remainingCx, remainingPending, remainingRq, remainingRetries *stats.Gauge
}

func newBreakerGauges(s stats.Scope) breakerGauges {
	return breakerGauges{
		cxOpen: s.Gauge("cx_open"), pendingOpen: s.Gauge("rq_pending_open"), rqOpen: s.Gauge("rq_open"), retryOpen: s.Gauge("rq_retry_open"),
		remainingCx: s.Gauge("remaining_cx"), remainingPending: s.Gauge("remaining_pending"),
		remainingRq: s.Gauge("remaining_rq"), remainingRetries: s.Gauge("remaining_retries"),
	}
}

// Priority selects a circuit-breaker priority (route priority).
type Priority uint8

// Routing priorities.
const (
	PriorityDefault Priority = iota
	PriorityHigh
)

func (c *Cluster) breakersFor(p Priority) *breakers {
	if p == PriorityHigh {
		return &c.highBreakers
	}
	return &c.breakers
}

func setOpen(g *stats.Gauge, open bool) {
	v := int64(0)
	if open {
		v = 1
	}
	if g.Value() != v {
		g.Set(v)
	}
}

// Cluster is a compiled, running cluster.
type Cluster struct {
	// cmUpdated is cluster_manager.cluster_updated (nil without stats).
	cmUpdated *stats.Counter
	Name      string
	Proto     *clusterv3.Cluster
	Stats     *Stats
	// AddedViaAPI is set for clusters from CDS (shown in /clusters).
	AddedViaAPI bool
	// VersionInfo and LastUpdated describe the config that created it.
	VersionInfo string
	LastUpdated time.Time

	Protocol           Protocol
	connectTimeout     time.Duration
	maxRequestsPerConn uint32
	lb                 lbConfig
	breakers           breakers
	highBreakers       breakers
	// maxConnectionsPerHost is per_host_thresholds' max_connections (0:
	// none): a host at it gets no new connection (Envoy's
	// HostImpl::canCreateConnection).
	maxConnectionsPerHost uint32
	transport             TransportSocket
	// tsMatches are transport_socket_matches (transportFor); tsDefaultCount
	// counts hosts that matched none (cluster.<name>.default.total_match_count).
	tsMatches      []transportMatch
	tsDefaultCount *stats.Counter
	// internal is the server's internal listener registry, which
	// envoy_internal_address hosts are reached through (nil: none).
	internal *userspace.Registry
	// sendsPP: the transport socket writes a PROXY protocol header, so
	// connections are pooled per downstream address pair (transport.go).
	sendsPP bool
	h2      *h2Client
	// h3 is the HTTP/3 client (HTTP3 and AutoHTTP3 clusters, http3.go);
	// h3conf its QUIC config, h3alt AutoHTTP3's alternate protocols cache.
	h3     *h3Client
	h3conf *quic.Config
	h3alt  *altSvcCache
	// IdleTimeout closes pooled connections unused this long (upstream
	// common_http_protocol_options.idle_timeout, 1h by default).
	IdleTimeout time.Duration
	// keepAlive is upstream_connection_options.tcp_keepalive.
	keepAlive net.KeepAliveConfig
	// bind is the upstream_bind_config its connections bind (nil: none).
	bind *BindConfig
	// closeOnHCFail closes a host's connections when it fails health checks.
	closeOnHCFail bool
	// AutoSNI sets the TLS server name from the request's host
	// (upstream_http_protocol_options.auto_sni); AutoSNIHeader names the
	// header to take it from instead (override_auto_sni_header).
	AutoSNI           bool
	AutoSNIHeader     string
	autoSANValidation bool
	// h2opts is what the HTTP/2 client applies of http2_protocol_options.
	h2opts h2Options
	// eventLog is the outlier detection event log (nil: none).
	eventLog *OutlierEventLog
	// http1 is the HTTP/1 codec's options (http_protocol_options):
	// Proper-Case request header names and whether trailers are carried.
	http1 http1Options

	hosts atomic.Pointer[hostSet]
	// subset is lb_subset_config (nil: none); its subsets are rebuilt
	// with hosts.
	subset *subsetConfig
	// slowStartTimer is set while a slow-start rebuild is scheduled.
	slowStartTimer atomic.Bool
	cx             atomic.Int64 // HTTP/1 connections, for max_connections
	rqPending      *stats.Gauge

	mu       sync.Mutex // guards host-set rebuilds
	byAddr   map[string]*Host
	discover discovery
	health   *healthChecker
	outlier  *outlierDetector
	stop     chan struct{}
	stopOnce sync.Once
	log      *slog.Logger
	ready    chan struct{} // closed when initialized (first resolution, first HC round)
	// EDS is set for clusters whose hosts come from SetLoadAssignment.
	EDS bool
	// OrigDst is set for ORIGINAL_DST clusters, DFP for dynamic forward
	// proxy clusters.
	OrigDst *OrigDst
	DFP     *DFP
	// Aggregate is set for aggregate clusters (envoy.clusters.aggregate):
	// they have no hosts of their own; each attempt picks a child
	// (aggregate.go).
	Aggregate *Aggregate
	// UpstreamPool is the router's connection pool for the cluster
	// (upstream_config; tunnel.go).
	UpstreamPool UpstreamPool
	// UpstreamFilters is the compiled upstream HTTP filter chain
	// (HttpProtocolOptions.http_filters; nil: none), which the router runs
	// around each upstream request.
	UpstreamFilters any
	// protocolOptions are the compiled typed_extension_protocol_options
	// of extensions other than HttpProtocolOptions, by extension name
	// (ProtocolOptionsFactory).
	protocolOptions map[string]any
	readyOnce       sync.Once
}

// ProtocolOptions returns what the extension named name compiled from the
// cluster's typed_extension_protocol_options (nil: none given).
func (c *Cluster) ProtocolOptions(name string) any { return c.protocolOptions[name] }

// Hosts returns every host, in configuration order.
func (c *Cluster) Hosts() []*Host { return c.hosts.Load().all }

// HealthyCount returns the number of healthy hosts.
func (c *Cluster) HealthyCount() int { return c.hosts.Load().healthyCount }

// Pick chooses a host for a request, or returns nil when there is none.
func (c *Cluster) Pick(ctx *LBContext) *Host {
	if ctx != nil && ctx.Override != nil {
		if h, ok := c.pickOverride(ctx); ok {
			return h
		}
	}
	if c.OrigDst != nil {
		return c.OrigDst.pick(ctx)
	}
	if c.DFP != nil {
		return c.DFP.pick(ctx)
	}
	if c.subset != nil {
		return c.subset.pick(c, ctx)
	}
	return c.hosts.Load().pick(&c.lb, ctx)
}

// ChargeCode counts one upstream response of the given status, as
// Envoy's CodeStatsImpl::chargeBasicResponseStat: upstream_rq_completed,
// upstream_rq_<class>xx and upstream_rq_<code>.
func (s *Stats) ChargeCode(status int) {
	s.RqCompleted.Inc()
	s.RqStatus.Inc(status)
}

// Ready returns a channel closed once the cluster has finished its initial
// discovery and health-check round (Envoy's cluster initialization).
func (c *Cluster) Ready() <-chan struct{} { return c.ready }

func (c *Cluster) markReady() { c.readyOnce.Do(func() { close(c.ready) }) }

// TryStartRequest counts a request against the priority's max_requests;
// false means the circuit breaker is open (503 UO).
func (c *Cluster) TryStartRequest(p Priority) bool {
	b := c.breakersFor(p)
	n := b.rqActive.Add(1)
	if n > int64(b.maxRequests) {
		b.rqActive.Add(-1)
		c.Stats.RqPendingOverflowInc()
		return false
	}
	if n == int64(b.maxRequests) {
		setOpen(b.gauges.rqOpen, true)
	}
	if b.trackRemaining {
		b.gauges.remainingRq.Set(int64(b.maxRequests) - n)
	}
	c.Stats.RqActive.Inc()
	return true
}

// EndRequest releases what TryStartRequest took.
func (c *Cluster) EndRequest(p Priority) {
	b := c.breakersFor(p)
	n := b.rqActive.Add(-1)
	if n == int64(b.maxRequests)-1 {
		setOpen(b.gauges.rqOpen, false)
	}
	if b.trackRemaining {
		b.gauges.remainingRq.Set(int64(b.maxRequests) - n)
	}
	c.Stats.RqActive.Dec()
}

// maxRetries is the priority's retry limit: max_retries, or the retry
// budget's share of active and pending requests.
func (c *Cluster) maxRetries(b *breakers) int64 {
	if !b.hasBudget {
		return int64(b.maxRetries)
	}
	budget := int64(b.retryBudget * float64(b.rqActive.Load()+c.rqPending.Value()) / 100)
	return max(budget, int64(b.minRetryConcurrency))
}

// TryRetry counts a retry against the priority's retry limit; false means
// overflow (upstream_rq_retry_overflow).
func (c *Cluster) TryRetry(p Priority) bool {
	b := c.breakersFor(p)
	limit := c.maxRetries(b)
	n := b.retries.Add(1)
	if n > limit {
		b.retries.Add(-1)
		c.Stats.RqRetryOverflow.Inc()
		setOpen(b.gauges.retryOpen, true)
		return false
	}
	setOpen(b.gauges.retryOpen, n >= limit)
	if b.trackRemaining {
		b.gauges.remainingRetries.Set(limit - n)
	}
	return true
}

// EndRetry releases what TryRetry took.
func (c *Cluster) EndRetry(p Priority) {
	b := c.breakersFor(p)
	n := b.retries.Add(-1)
	limit := c.maxRetries(b)
	setOpen(b.gauges.retryOpen, n >= limit)
	if b.trackRemaining {
		b.gauges.remainingRetries.Set(limit - n)
	}
}

// RqPendingOverflowInc counts a request refused by a circuit breaker.
func (s *Stats) RqPendingOverflowInc() { s.rqPendingOverflow.Inc() }

// HostStarted and HostFinished track a host's active requests (least
// request LB) and its /clusters counters.
func (h *Host) HostStarted() {
	h.activeRq.Add(1)
	h.stats.RqTotal.Add(1)
	h.stats.RqActive.Add(1)
}

// HostFinished records the end of a request on h.
func (h *Host) HostFinished(success, timeout bool) {
	h.activeRq.Add(-1)
	h.stats.RqActive.Add(-1)
	switch {
	case timeout:
		h.stats.RqTimeout.Add(1)
		h.stats.RqError.Add(1)
	case success:
		h.stats.RqSuccess.Add(1)
	default:
		h.stats.RqError.Add(1)
	}
}

// HostAbandoned ends a request the downstream gave up on (it closed, or
// sent a malformed body): neither a success nor an error of the host, so
// a client fault never counts against it.
func (h *Host) HostAbandoned() {
	h.activeRq.Add(-1)
	h.stats.RqActive.Add(-1)
}

// adopt gives a new host of c its own stats and connection pool and c's
// outlier detector.
func (c *Cluster) adopt(h *Host) {
	h.stats, h.pool, h.od = &HostStats{}, &pool{}, c.outlier
}

// setHosts replaces the host list (keeping Host objects whose address is
// unchanged) and rebuilds the host set. Called with c.mu held.
func (c *Cluster) setHosts(hosts []*Host) {
	next := make(map[string]*Host, len(hosts))
	list := make([]*Host, 0, len(hosts))
	changed := len(hosts) != len(c.byAddr)
	for _, h := range hosts {
		if old, ok := c.byAddr[h.Address]; ok {
			// Keep the running host; take the new weight, priority, metadata.
			old.cfg.Store(h.cfg.Load())
			old.setFlag(FlagFailedEDSHealth, h.flags.Load()&FlagFailedEDSHealth != 0)
			old.setFlag(FlagDegradedEDS, h.flags.Load()&FlagDegradedEDS != 0)
			h = old
		} else {
			changed = true
			c.adopt(h)
			if c.lb.slowStart > 0 && c.health == nil {
				h.slowStartFrom.Store(time.Now().UnixNano())
			}
			if c.health != nil {
				h.flags.Store(h.flags.Load() | FlagFailedActiveHC | FlagPendingActiveHC)
			}
		}
		if _, dup := next[h.Address]; dup {
			continue
		}
		next[h.Address] = h
		list = append(list, h)
	}
	for addr, h := range c.byAddr {
		if _, ok := next[addr]; !ok {
			c.removeHost(h)
			if c.outlier != nil {
				c.outlier.removed(h)
			}
		}
	}
	c.byAddr = next
	if changed {
		c.Stats.membershipChange.Inc()
	}
	c.rebuild(list)
	if c.health != nil {
		c.health.setHosts(list)
	}
}

// rebuild swaps in a new host set built from hosts. While hosts are in
// slow start it is rebuilt every twentieth of the window, so their
// round-robin weights ramp up.
func (c *Cluster) rebuild(hosts []*Host) {
	hs := buildHostSet(hosts, &c.lb)
	c.hosts.Store(hs)
	if c.cmUpdated != nil {
		c.cmUpdated.Inc()
	}
	if c.subset != nil {
		c.subset.rebuild(hosts)
	}
	if c.lb.inSlowStart(hosts, time.Now()) && c.slowStartTimer.CompareAndSwap(false, true) {
		step := max(c.lb.slowStart/20, 50*time.Millisecond)
		time.AfterFunc(step, func() {
			c.slowStartTimer.Store(false)
			select {
			case <-c.stop:
			default:
				c.healthChanged()
			}
		})
	}
	healthy, degraded := 0, 0
	for _, h := range hosts {
		if h.Healthy() {
			healthy++
		}
		if h.Degraded() {
			degraded++
		}
	}
	c.Stats.membershipTotal.Set(int64(len(hosts)))
	c.Stats.membershipHealthy.Set(int64(healthy))
	c.Stats.membershipDegraded.Set(int64(degraded))
}

// healthChanged rebuilds the host set after a host's health flags changed.
func (c *Cluster) healthChanged() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rebuild(c.hosts.Load().all)
}

// Close stops discovery and health checking and closes idle connections.
// In-flight requests finish; their connections close on release.
func (c *Cluster) Close() {
	c.stopOnce.Do(func() {
		close(c.stop)
		if c.OrigDst != nil {
			close(c.OrigDst.stop)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, h := range c.byAddr {
			c.closeIdle(h, 0)
		}
		if c.h2 != nil {
			c.h2.close()
		}
		if c.h3 != nil {
			c.h3.close()
		}
		if c.health != nil {
			c.health.events.close()
		}
	})
}

// sweepIdle closes pooled connections idle longer than the idle timeout.
func (c *Cluster) sweepIdle() {
	if c.IdleTimeout <= 0 {
		return
	}
	c.mu.Lock()
	hosts := c.hosts.Load().all
	c.mu.Unlock()
	for _, h := range hosts {
		c.closeIdle(h, c.IdleTimeout)
		if c.perDownstreamPools() {
			h.prunePools()
		}
	}
}
