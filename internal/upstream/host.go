package upstream

import (
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Health flags of a host, as Envoy reports them in /clusters health_flags.
const (
	FlagFailedActiveHC        uint32 = 1 << iota // /failed_active_hc
	FlagFailedOutlier                            // /failed_outlier_check
	FlagFailedEDSHealth                          // /failed_eds_health
	FlagDegradedEDS                              // /degraded_eds_health
	FlagPendingActiveHC                          // /pending_active_hc
	FlagPendingDynamicRemoval                    // /pending_dynamic_removal
)

// Host is one upstream endpoint of a cluster. A Host outlives config
// updates that keep its address, so its connections, health and stats
// carry over.
type Host struct {
	// Address is what is dialed ("ip:port"), also the /clusters key.
	Address string
	// cfg holds the attributes an update may change while requests read
	// them; it is replaced, never modified.
	cfg atomic.Pointer[HostConfig]

	flags    atomic.Uint32
	activeRq atomic.Int64

	stats *HostStats
	pool  *pool
	// od is the cluster's outlier detector (nil without outlier_detection);
	// outlier is this host's state in it.
	od      *outlierDetector
	outlier atomic.Pointer[outlierHost]
	// slowStartFrom is when the host's slow start began (unix nanoseconds):
	// its creation, or its first passed health check.
	slowStartFrom atomic.Int64
	// removed is set once the host left its cluster's host set: its
	// connections are closed when released, not pooled (nothing would
	// reuse or sweep them), and its pending requests are failed.
	removed atomic.Bool
	// sniPools holds per-SNI pools (auto_sni), by server name.
	sniPools sync.Map
	// transport is the host's transport socket resolved from the
	// cluster's transport_socket_matches (Cluster.transportFor).
	transport atomic.Pointer[transportChoice]
}

// HostConfig are a host's configured attributes.
type HostConfig struct {
	// Hostname is the name the endpoint was configured with (DNS clusters,
	// endpoint.hostname); auto_host_rewrite uses it.
	Hostname string
	Weight   uint32
	Priority uint32
	Locality *corev3.Locality
	// LocalityWeight is the locality's load_balancing_weight (0 if unset).
	LocalityWeight uint32
	Metadata       *corev3.Metadata
	// HealthCheckPort is the endpoint's health_check_config.port_value:
	// active health checks dial it instead of the traffic port (0: the
	// traffic port), as Envoy's; Contour's healthPort.
	HealthCheckPort uint32
}

func newHost(addr string, cfg HostConfig) *Host {
	h := &Host{Address: addr}
	h.cfg.Store(&cfg)
	return h
}

// Config returns the host's current attributes.
func (h *Host) Config() *HostConfig { return h.cfg.Load() }

// healthAddr is the address active health checks dial: the host's, with
// health_check_config's port when the endpoint has one.
func (h *Host) healthAddr() string {
	p := h.cfg.Load().HealthCheckPort
	if p == 0 {
		return h.Address
	}
	host, _, err := net.SplitHostPort(h.Address)
	if err != nil {
		return h.Address
	}
	return net.JoinHostPort(host, strconv.Itoa(int(p)))
}

// Hostname returns the configured host name ("" if none).
func (h *Host) Hostname() string { return h.cfg.Load().Hostname }

// Weight returns the load-balancing weight.
func (h *Host) Weight() uint32 { return h.cfg.Load().Weight }

// Priority returns the priority level.
func (h *Host) Priority() uint32 { return h.cfg.Load().Priority }

// HostStats are per-host counters shown by /clusters.
type HostStats struct {
	CxTotal       atomic.Uint64
	CxActive      atomic.Int64
	CxConnectFail atomic.Uint64
	RqTotal       atomic.Uint64
	RqActive      atomic.Int64
	RqError       atomic.Uint64
	RqSuccess     atomic.Uint64
	RqTimeout     atomic.Uint64
}

// Stats returns the host's counters.
func (h *Host) Stats() *HostStats { return h.stats }

// Healthy reports whether the host may receive traffic.
func (h *Host) Healthy() bool {
	return h.flags.Load()&(FlagFailedActiveHC|FlagFailedOutlier|FlagFailedEDSHealth|FlagPendingActiveHC) == 0
}

// Degraded reports whether the host is degraded (used only when there are
// not enough healthy hosts).
func (h *Host) Degraded() bool { return h.flags.Load()&FlagDegradedEDS != 0 }

// Flags returns the raw health flags.
func (h *Host) Flags() uint32 { return h.flags.Load() }

// setFlag sets or clears f and reports whether the healthy state changed.
func (h *Host) setFlag(f uint32, on bool) bool {
	for {
		old := h.flags.Load()
		nv := old &^ f
		if on {
			nv = old | f
		}
		if h.flags.CompareAndSwap(old, nv) {
			return (old == 0) != (nv == 0) || old&FlagDegradedEDS != nv&FlagDegradedEDS
		}
	}
}

// ActiveRequests returns the host's requests in flight (least-request LB).
func (h *Host) ActiveRequests() int64 { return h.activeRq.Load() }

// HealthFlagsString renders the flags as Envoy's /clusters does.
func (h *Host) HealthFlagsString() string {
	f := h.flags.Load()
	if f == 0 {
		return "healthy"
	}
	var parts []string
	for _, x := range []struct {
		f uint32
		s string
	}{
		{FlagFailedActiveHC, "/failed_active_hc"},
		{FlagFailedOutlier, "/failed_outlier_check"},
		{FlagFailedEDSHealth, "/failed_eds_health"},
		{FlagDegradedEDS, "/degraded_eds_health"},
		{FlagPendingActiveHC, "/pending_active_hc"},
		{FlagPendingDynamicRemoval, "/pending_dynamic_removal"},
	} {
		if f&x.f != 0 {
			parts = append(parts, x.s)
		}
	}
	return strings.Join(parts, "")
}
