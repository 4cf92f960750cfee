package upstream

import (
	"net/netip"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/legateproxy/legate/internal/config"
)

// OrigDst is an ORIGINAL_DST cluster: its hosts are the original
// destinations of the connections it serves (restored by the original_dst
// listener filter), or the address in a request header when
// use_http_header is set; a host unused for cleanup_interval goes away.
type OrigDst struct {
	// UseHTTPHeader takes the destination from HeaderName
	// (x-envoy-original-dst-host by default).
	UseHTTPHeader bool
	HeaderName    string
	portOverride  uint16
	cleanup       time.Duration

	c     *Cluster
	mu    sync.Mutex
	hosts map[netip.AddrPort]*Host
	used  map[*Host]bool
	stop  chan struct{}
}

func (c *Cluster) compileOrigDst(pc *clusterv3.Cluster, path string) error {
	if pc.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED {
		return config.Errorf(config.Join(path, "lb_policy"), "cluster: LB policy %s is not valid for Cluster type ORIGINAL_DST. Only 'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'", pc.GetLbPolicy())
	}
	if pc.GetLoadAssignment() != nil && len(pc.GetLoadAssignment().GetEndpoints()) > 0 {
		return config.Errorf(config.Join(path, "load_assignment"), "ORIGINAL_DST clusters must have no endpoints")
	}
	o := &OrigDst{HeaderName: "x-envoy-original-dst-host", cleanup: 5 * time.Second, c: c,
		hosts: map[netip.AddrPort]*Host{}, used: map[*Host]bool{}, stop: make(chan struct{})}
	if cfg := pc.GetOriginalDstLbConfig(); cfg != nil {
		p := config.Join(path, "original_dst_lb_config")
		if err := config.CheckFields(cfg, p, "use_http_header", "http_header_name", "upstream_port_override"); err != nil {
			return err
		}
		o.UseHTTPHeader = cfg.GetUseHttpHeader()
		if cfg.GetHttpHeaderName() != "" {
			o.HeaderName = cfg.GetHttpHeaderName()
		}
		if v := cfg.GetUpstreamPortOverride(); v != nil {
			if v.GetValue() == 0 || v.GetValue() > 65535 {
				return config.Errorf(config.Join(p, "upstream_port_override"), "must be a port (1-65535)")
			}
			o.portOverride = uint16(v.GetValue())
		}
	}
	if d := pc.GetCleanupInterval(); d != nil {
		o.cleanup = d.AsDuration()
	}
	c.OrigDst = o
	return nil
}

// pick returns the host for the request's original destination (nil when
// it has none, or names this proxy's own listener... as Envoy, no check).
func (o *OrigDst) pick(ctx *LBContext) *Host {
	if ctx == nil {
		return nil
	}
	dst := ctx.OriginalDst
	if o.UseHTTPHeader && ctx.OriginalDstHeader != "" {
		ap, err := netip.ParseAddrPort(ctx.OriginalDstHeader)
		if err != nil {
			return nil
		}
		dst = ap
	}
	if !dst.IsValid() {
		return nil
	}
	if o.portOverride != 0 {
		dst = netip.AddrPortFrom(dst.Addr(), o.portOverride)
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	o.mu.Lock()
	defer o.mu.Unlock()
	h := o.hosts[dst]
	if h == nil {
		h = newHost(dst.String(), HostConfig{Weight: 1})
		o.c.adopt(h)
		o.hosts[dst] = h
		o.c.Stats.membershipChange.Inc()
		o.membershipLocked()
	}
	o.used[h] = true
	return h
}

func (o *OrigDst) start() {
	go func() {
		t := time.NewTicker(o.cleanup)
		defer t.Stop()
		for {
			select {
			case <-o.stop:
				return
			case <-t.C:
				o.sweep()
			}
		}
	}()
}

// sweep removes the hosts no request used since the last sweep.
func (o *OrigDst) sweep() {
	o.mu.Lock()
	var gone []*Host
	for a, h := range o.hosts {
		if !o.used[h] && h.ActiveRequests() == 0 {
			delete(o.hosts, a)
			gone = append(gone, h)
		}
	}
	o.used = map[*Host]bool{}
	if len(gone) > 0 {
		// As Envoy's cleanup: the hosts leave the cluster's membership.
		o.c.Stats.membershipChange.Inc()
		o.membershipLocked()
	}
	o.mu.Unlock()
	for _, h := range gone {
		o.c.closeIdle(h, 0)
	}
}

// membershipLocked sets the membership gauges from the hosts (called
// with mu held); an ORIGINAL_DST host is healthy, it has no checks.
func (o *OrigDst) membershipLocked() {
	o.c.Stats.membershipTotal.Set(int64(len(o.hosts)))
	o.c.Stats.membershipHealthy.Set(int64(len(o.hosts)))
}

// Hosts lists the current hosts (for /clusters).
func (o *OrigDst) Hosts() []*Host {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]*Host, 0, len(o.hosts))
	for _, h := range o.hosts {
		out = append(out, h)
	}
	return out
}
