package upstream

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// overrideUnset marks an override_host_status that was configured with
// no statuses: no override host is honoured (Envoy's empty status set),
// unlike an unset field (0), which means the default set.
const overrideUnset = 1 << 31

// defaultOverrideStatuses is Envoy's set when override_host_status is
// unset: UNKNOWN, HEALTHY and DEGRADED (HostUtility::createOverrideHostStatus).
const defaultOverrideStatuses = 1<<corev3.HealthStatus_UNKNOWN | 1<<corev3.HealthStatus_HEALTHY | 1<<corev3.HealthStatus_DEGRADED

// compileOverrideStatuses turns common_lb_config.override_host_status into
// the bit set lbConfig keeps.
func compileOverrideStatuses(st *corev3.HealthStatusSet) uint32 {
	out := uint32(overrideUnset)
	for _, s := range st.GetStatuses() {
		if s >= 0 && s < 31 {
			out |= 1 << uint32(s)
		}
	}
	return out
}

// overrideAllows reports whether a host may serve as an override host
// under the cluster's override_host_status. Legate keeps health flags, not
// Envoy's detailed status, so a host maps to the statuses its flags stand
// for: failed active HC, outlier ejection, EDS UNHEALTHY/DRAINING/TIMEOUT
// and a pending first health check are UNHEALTHY, EDS DEGRADED is
// DEGRADED, and a host with no flag is HEALTHY (or UNKNOWN: the EDS
// default, so either status in the set admits it).
func (cfg *lbConfig) overrideAllows(h *Host) bool {
	set := cfg.overrideStatuses
	if set == 0 {
		set = defaultOverrideStatuses
	}
	var want uint32
	switch {
	case !h.Healthy():
		want = 1 << corev3.HealthStatus_UNHEALTHY
	case h.Degraded():
		want = 1 << corev3.HealthStatus_DEGRADED
	default:
		want = 1<<corev3.HealthStatus_HEALTHY | 1<<corev3.HealthStatus_UNKNOWN
	}
	return set&want != 0
}

// pickOverride applies ctx.Override, as Envoy's cluster manager does
// before the load balancer (HostUtility::selectOverrideHost): the host of
// that address in the cluster's current host set, if its health status is
// allowed. ok false means the load balancer should pick; a strict
// override that cannot be honoured returns (nil, true), so the request
// fails with no host (HostUtility::allowLBChooseHost), and records
// whether the host was missing altogether.
func (c *Cluster) pickOverride(ctx *LBContext) (*Host, bool) {
	o := ctx.Override
	ctx.OverrideNotFound = false
	found := c.hosts.Load().byAddress(o.Address)
	if found != nil && c.lb.overrideAllows(found) {
		return found, true
	}
	if !o.Strict {
		return nil, false
	}
	ctx.OverrideNotFound = found == nil
	return nil, true
}

// byAddress finds a host by its address: through an index for large sets
// (a sticky session looks its host up on every request, as Envoy's
// cross-priority host map), by a scan for small ones.
func (hs *hostSet) byAddress(addr string) *Host {
	if hs.addrIndex != nil {
		return hs.addrIndex[addr]
	}
	for _, h := range hs.all {
		if h.Address == addr {
			return h
		}
	}
	return nil
}
