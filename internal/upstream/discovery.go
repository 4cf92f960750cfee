package upstream

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/legateproxy/legate/internal/config"
)

// discovery feeds a cluster its hosts.
type discovery interface {
	run(c *Cluster)
}

// staticDiscovery sets the hosts once (STATIC, and EDS which is fed from
// outside through SetLoadAssignment).
type staticDiscovery struct{ hosts []*Host }

func (s staticDiscovery) run(c *Cluster) {
	c.mu.Lock()
	c.setHosts(s.hosts)
	c.mu.Unlock()
	if c.health == nil {
		c.markReady()
	}
}

// endpointSpec is one configured endpoint before resolution.
type endpointSpec struct {
	host                string
	port                uint32
	weight              uint32
	priority            uint32
	locality            *corev3.Locality
	localityWeight      uint32
	metadata            *corev3.Metadata
	unhealthy, degraded bool
	hostname            string
	pipe                string // a Unix socket path instead of host:port
	// internal is an envoy_internal_address endpoint's host address
	// (envoy://<listener>/<endpoint id>) instead of host:port.
	internal string
	// hcPort is health_check_config.port_value.
	hcPort uint32
}

// hostsFromAssignment turns a load assignment into endpoint specs.
func hostsFromAssignment(la *endpointv3.ClusterLoadAssignment, path string) ([]endpointSpec, error) {
	var out []endpointSpec
	for i, le := range la.GetEndpoints() {
		for j, lbe := range le.GetLbEndpoints() {
			p := fmt.Sprintf("%s.endpoints[%d].lb_endpoints[%d]", path, i, j)
			ep := lbe.GetEndpoint()
			if ep == nil {
				return nil, fmt.Errorf("%s: only endpoint (not endpoint_name) is supported", p)
			}
			w := lbe.GetLoadBalancingWeight().GetValue()
			if w == 0 {
				w = 1
			}
			hs := lbe.GetHealthStatus()
			unhealthy := hs == corev3.HealthStatus_UNHEALTHY || hs == corev3.HealthStatus_DRAINING || hs == corev3.HealthStatus_TIMEOUT
			degraded := hs == corev3.HealthStatus_DEGRADED
			hc := ep.GetHealthCheckConfig()
			if hc != nil {
				hp := p + ".endpoint.health_check_config"
				if err := config.CheckFields(hc, hp, "port_value"); err != nil {
					return nil, err
				}
				if hc.GetPortValue() != 0 && ep.GetAddress().GetSocketAddress() == nil {
					return nil, config.Errorf(config.Join(hp, "port_value"), "a health check port needs a socket_address endpoint")
				}
			}
			if pipe := ep.GetAddress().GetPipe(); pipe != nil {
				// A Unix domain socket (Istio's xds-grpc and sds-grpc).
				if pipe.GetPath() == "" {
					return nil, fmt.Errorf("%s.endpoint.address.pipe.path: empty", p)
				}
				out = append(out, endpointSpec{pipe: pipe.GetPath(), weight: w, priority: le.GetPriority(),
					locality: le.GetLocality(), localityWeight: le.GetLoadBalancingWeight().GetValue(), metadata: lbe.GetMetadata(),
					unhealthy: unhealthy, degraded: degraded})
				continue
			}
			if ia := ep.GetAddress().GetEnvoyInternalAddress(); ia != nil {
				// An internal listener of this server (its name; the
				// endpoint id tells endpoints of one listener apart).
				if ia.GetServerListenerName() == "" {
					return nil, fmt.Errorf("%s.endpoint.address.envoy_internal_address.server_listener_name: empty", p)
				}
				out = append(out, endpointSpec{internal: internalAddress(ia.GetServerListenerName(), ia.GetEndpointId()), weight: w, priority: le.GetPriority(),
					locality: le.GetLocality(), localityWeight: le.GetLoadBalancingWeight().GetValue(), metadata: lbe.GetMetadata(), hostname: ep.GetHostname(),
					unhealthy: unhealthy, degraded: degraded})
				continue
			}
			sa := ep.GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, fmt.Errorf("%s.endpoint.address: socket_address, pipe or envoy_internal_address is required", p)
			}
			if sa.GetProtocol() != corev3.SocketAddress_TCP {
				return nil, fmt.Errorf("%s.endpoint.address.socket_address.protocol: only TCP is supported", p)
			}
			if _, ok := sa.GetPortSpecifier().(*corev3.SocketAddress_NamedPort); ok {
				return nil, fmt.Errorf("%s.endpoint.address.socket_address.named_port: not supported; use port_value", p)
			}
			out = append(out, endpointSpec{
				host: sa.GetAddress(), port: sa.GetPortValue(), weight: w, priority: le.GetPriority(),
				locality: le.GetLocality(), localityWeight: le.GetLoadBalancingWeight().GetValue(), metadata: lbe.GetMetadata(),
				unhealthy: unhealthy, degraded: degraded, hostname: ep.GetHostname(), hcPort: hc.GetPortValue(),
			})
		}
	}
	return out, nil
}

func (e endpointSpec) toHost(ip netip.Addr) *Host {
	cfg := HostConfig{Hostname: e.hostname, Weight: e.weight, Priority: e.priority, Locality: e.locality, LocalityWeight: e.localityWeight, Metadata: e.metadata, HealthCheckPort: e.hcPort}
	if cfg.Hostname == "" && e.host != ip.String() {
		cfg.Hostname = e.host
	}
	h := newHost(net.JoinHostPort(ip.String(), strconv.Itoa(int(e.port))), cfg)
	if e.unhealthy {
		h.flags.Store(FlagFailedEDSHealth)
	}
	if e.degraded {
		h.flags.Store(FlagDegradedEDS)
	}
	return h
}

// staticHosts resolves specs that must already be IP addresses.
func staticHosts(specs []endpointSpec, path string) ([]*Host, error) {
	hosts := make([]*Host, 0, len(specs))
	for _, s := range specs {
		if s.pipe != "" || s.internal != "" {
			addr := s.internal
			if s.pipe != "" {
				addr = pipeAddress(s.pipe)
			}
			h := newHost(addr, HostConfig{Hostname: s.hostname, Weight: s.weight, Priority: s.priority,
				Locality: s.locality, LocalityWeight: s.localityWeight, Metadata: s.metadata})
			if s.unhealthy {
				h.flags.Store(FlagFailedEDSHealth)
			}
			if s.degraded {
				h.flags.Store(FlagDegradedEDS)
			}
			hosts = append(hosts, h)
			continue
		}
		ip, err := netip.ParseAddr(s.host)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not an IP address: a STATIC or EDS cluster needs IP endpoints (use STRICT_DNS or LOGICAL_DNS for names)", path, s.host)
		}
		hosts = append(hosts, s.toHost(ip))
	}
	return hosts, nil
}

// dnsDiscovery resolves names periodically (STRICT_DNS, LOGICAL_DNS).
type dnsDiscovery struct {
	specs       []endpointSpec
	logical     bool
	family      clusterv3.Cluster_DnsLookupFamily
	refresh     time.Duration
	failRefresh time.Duration
	resolver    *net.Resolver
	timeout     time.Duration
	last        [][]*Host // per spec, the hosts of its last good resolution
	// ttl resolves with TTLs when respect_dns_ttl is set.
	ttl *ttlResolver
	// dns are the resolver settings (no_default_search_domain).
	dns    DNSSettings
	jitter time.Duration // dns_jitter
}

func (d *dnsDiscovery) run(c *Cluster) {
	first := true
	for {
		wait := d.resolveOnce(c)
		if first {
			first = false
			if c.health == nil {
				c.markReady()
			}
		}
		select {
		case <-c.stop:
			return
		case <-time.After(wait):
		}
	}
}

// resolveOnce resolves every name and swaps the hosts in; it returns the
// time to the next resolution. A name that fails to resolve keeps the
// addresses it had (Envoy keeps the last good result).
func (d *dnsDiscovery) resolveOnce(c *Cluster) time.Duration {
	c.Stats.updateAttempt.Inc()
	if d.last == nil {
		d.last = make([][]*Host, len(d.specs))
	}
	var hosts []*Host
	failed := false
	var minTTL time.Duration
	for i, s := range d.specs {
		ips, ttl, err := d.lookup(s.host)
		if ttl > 0 && (minTTL == 0 || ttl < minTTL) {
			minTTL = ttl
		}
		if err != nil {
			failed = true
			c.log.Warn("DNS resolution failed", "cluster", c.Name, "name", s.host, "error", err)
			hosts = append(hosts, d.last[i]...)
			continue
		}
		if d.logical {
			ips = ips[:1]
		}
		d.last[i] = d.last[i][:0]
		for _, ip := range ips {
			d.last[i] = append(d.last[i], s.toHost(ip))
		}
		hosts = append(hosts, d.last[i]...)
	}
	if failed {
		c.Stats.updateFailure.Inc()
	} else {
		c.Stats.updateSuccess.Inc()
	}
	if len(hosts) == 0 {
		c.Stats.updateEmpty.Inc()
	}
	c.mu.Lock()
	c.setHosts(hosts)
	// setHosts kept the running Host objects; remember those.
	for i := range d.last {
		for j, h := range d.last[i] {
			if cur, ok := c.byAddr[h.Address]; ok {
				d.last[i][j] = cur
			}
		}
	}
	c.mu.Unlock()
	if failed {
		return d.failRefresh
	}
	next := d.refresh
	if d.ttl != nil && minTTL > 0 {
		next = minTTL // respect_dns_ttl: refresh when the records expire
	}
	if d.jitter > 0 {
		next += time.Duration(rand.Int64N(int64(d.jitter)))
	}
	return next
}

func (d *dnsDiscovery) lookup(name string) ([]netip.Addr, time.Duration, error) {
	if ip, err := netip.ParseAddr(name); err == nil {
		return []netip.Addr{ip}, 0, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	var v4, v6 []netip.Addr
	var addrs []netip.Addr
	var ttl time.Duration
	var err error
	if d.ttl != nil {
		addrs, ttl, err = d.ttl.lookup(ctx, name, "ip")
	} else {
		addrs, err = d.resolver.LookupNetIP(ctx, "ip", d.dns.absolute(name))
	}
	if err != nil {
		return nil, 0, err
	}
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	var out []netip.Addr
	switch d.family {
	case clusterv3.Cluster_V4_ONLY:
		out = v4
	case clusterv3.Cluster_V6_ONLY:
		out = v6
	case clusterv3.Cluster_V4_PREFERRED:
		out = v4
		if len(out) == 0 {
			out = v6
		}
	case clusterv3.Cluster_ALL:
		out = append(v4, v6...)
	default: // AUTO: IPv6 if there is any, else IPv4
		out = v6
		if len(out) == 0 {
			out = v4
		}
	}
	if len(out) == 0 {
		return nil, 0, fmt.Errorf("no %s addresses for %s", d.family, name)
	}
	return out, ttl, nil
}

// jitter returns d plus up to pct percent of random extra.
func jitter(d time.Duration, pct float64) time.Duration {
	if pct <= 0 || d <= 0 {
		return d
	}
	return d + time.Duration(rand.Float64()*pct/100*float64(d))
}

// pipeAddress is how a Unix socket host's address is written: "unix:"
// then the path ("@" starts an abstract socket, as in Envoy).
func pipeAddress(path string) string { return "unix:" + path }

// dialNetwork splits a host address into the network and address to dial.
func dialNetwork(addr string) (string, string) {
	if strings.HasPrefix(addr, "unix:") {
		return "unix", addr[len("unix:"):]
	}
	return "tcp", addr
}
