package upstream

// What the UDP proxy (envoy.filters.udp_listener.udp_proxy) needs of a
// cluster beyond picking hosts: its sessions count against the
// max_connections circuit breaker, as Envoy's udp_proxy takes the cluster's
// connections resource for each session.

// TryStartSession counts a UDP session against the default priority's
// max_connections; false means the breaker is open: the datagram that
// would have opened the session is dropped and counted in
// upstream_cx_overflow, as Envoy's udp_proxy does.
func (c *Cluster) TryStartSession() bool {
	b := &c.breakers
	n := c.cx.Add(1)
	if n > int64(b.maxConnections) {
		c.cx.Add(-1)
		c.Stats.cxOverflow.Inc()
		setOpen(b.gauges.cxOpen, true)
		return false
	}
	if n == int64(b.maxConnections) {
		setOpen(b.gauges.cxOpen, true)
	}
	if b.trackRemaining {
		b.gauges.remainingCx.Set(int64(b.maxConnections) - n)
	}
	return true
}

// EndSession releases what TryStartSession took.
func (c *Cluster) EndSession() { c.cxDone() }

// StatName is the name the cluster's stats are under (alt_stat_name, else
// its name), unsanitized.
func (c *Cluster) StatName() string {
	if n := c.Proto.GetAltStatName(); n != "" {
		return n
	}
	return c.Name
}

// Removed reports whether the host has left its cluster's host set (an
// EDS or DNS update): sessions bound to it end, as Envoy's udp_proxy
// removes them on the cluster's member update.
func (h *Host) Removed() bool { return h.removed.Load() }

// CountSessionOverflow counts a datagram dropped because the UDP proxy's
// own session table is full (upstream_cx_overflow, as a breaker overflow).
func (c *Cluster) CountSessionOverflow() {
	c.Stats.cxOverflow.Inc()
}
