package upstream

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	dfpclusterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/dynamic_forward_proxy/v3"
	dnscachev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/dynamic_forward_proxy/v3"
	cares "github.com/envoyproxy/go-control-plane/envoy/extensions/network/dns_resolver/cares/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
)

// clusterTypeFactory compiles a cluster_type extension into c.
type clusterTypeFactory func(cfg proto.Message, c *Cluster, path string) error

func init() {
	extension.Register(extension.Extension{Name: "envoy.clusters.dynamic_forward_proxy", Category: extension.ClusterType,
		Config: &dfpclusterv3.ClusterConfig{}, Factory: clusterTypeFactory(compileDFP),
		Notes: "sub-clusters and coalesced connections are not implemented"})
}

// DNSCache is a dynamic forward proxy's DNS cache, shared by name between
// the filter that resolves a request's host and the cluster that uses it.
type DNSCache struct {
	Name     string
	resolver *net.Resolver
	family   string // "ip4", "ip6" or "ip"
	refresh  time.Duration
	timeout  time.Duration
	maxHosts int

	mu      sync.Mutex
	entries map[string]*dnsEntry
}

type dnsEntry struct {
	addrs    []netip.Addr
	err      error
	resolved time.Time
	done     chan struct{}
}

var (
	cachesMu sync.Mutex
	caches   = map[string]*DNSCache{}
)

// DNSCacheFor returns the cache configured by c (one per name, as Envoy).
func DNSCacheFor(c *dnscachev3.DnsCacheConfig, path string) (*DNSCache, error) {
	if err := config.CheckFields(c, path, "name", "dns_lookup_family", "dns_refresh_rate", "dns_min_refresh_rate", "host_ttl",
		"max_hosts", "dns_cache_circuit_breaker", "typed_dns_resolver_config", "dns_query_timeout", "use_tcp_for_dns_lookups",
		"dns_failure_refresh_rate", "disable_dns_refresh_on_failure"); err != nil {
		return nil, err
	}
	cachesMu.Lock()
	defer cachesMu.Unlock()
	if dc := caches[c.GetName()]; dc != nil {
		return dc, nil
	}
	dc := &DNSCache{Name: c.GetName(), resolver: net.DefaultResolver, family: "ip", refresh: time.Minute, timeout: 5 * time.Second,
		maxHosts: 1024, entries: map[string]*dnsEntry{}}
	switch c.GetDnsLookupFamily() {
	case clusterv3.Cluster_V4_ONLY:
		dc.family = "ip4"
	case clusterv3.Cluster_V6_ONLY:
		dc.family = "ip6"
	}
	if d := c.GetDnsRefreshRate(); d != nil {
		dc.refresh = d.AsDuration()
	}
	if d := c.GetDnsQueryTimeout(); d != nil {
		dc.timeout = d.AsDuration()
	}
	if v := c.GetMaxHosts(); v != nil {
		dc.maxHosts = int(v.GetValue())
	}
	if tc := c.GetTypedDnsResolverConfig(); tc != nil {
		r, err := extension.Lookup(extension.DNSResolver, tc.GetTypedConfig(), config.Join(path, "typed_dns_resolver_config.typed_config"))
		if err != nil {
			return nil, err
		}
		var servers []string
		for _, a := range r.Config.(*cares.CaresDnsResolverConfig).GetResolvers() {
			servers = append(servers, sockAddr(a))
		}
		if len(servers) > 0 {
			dc.resolver = resolverFor(servers)
		}
	}
	caches[c.GetName()] = dc
	return dc, nil
}

func resolverFor(servers []string) *net.Resolver {
	i := 0
	var mu sync.Mutex
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		mu.Lock()
		s := servers[i%len(servers)]
		i++
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, s)
	}}
}

// Resolve returns the addresses of host (a name or an IP literal),
// resolving it once for every caller and caching the answer for the
// refresh rate.
func (dc *DNSCache) Resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	dc.mu.Lock()
	e := dc.entries[host]
	if e != nil && e.done != nil {
		select {
		case <-e.done:
			if time.Since(e.resolved) < dc.refresh {
				dc.mu.Unlock()
				return e.addrs, e.err
			}
		default:
			dc.mu.Unlock()
			select {
			case <-e.done:
				return e.addrs, e.err
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	if e == nil && len(dc.entries) >= dc.maxHosts {
		dc.mu.Unlock()
		return nil, fmt.Errorf("DNS cache %s is full (max_hosts %d)", dc.Name, dc.maxHosts)
	}
	ne := &dnsEntry{done: make(chan struct{})}
	dc.entries[host] = ne
	dc.mu.Unlock()
	rctx, cancel := context.WithTimeout(context.Background(), dc.timeout)
	ips, err := dc.resolver.LookupNetIP(rctx, dc.family, host)
	cancel()
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	if err == nil && len(ips) == 0 {
		err = fmt.Errorf("no addresses for %s", host)
	}
	ne.addrs, ne.err, ne.resolved = ips, err, time.Now()
	close(ne.done)
	return ips, err
}

// DFP is a dynamic forward proxy cluster: a request's host (its
// authority, maybe rewritten by the filter) is resolved through the DNS
// cache and becomes the upstream host.
type DFP struct {
	Cache *DNSCache
	c     *Cluster
	mu    sync.Mutex
	hosts map[string]*Host
}

func compileDFP(msg proto.Message, c *Cluster, path string) error {
	cfg := msg.(*dfpclusterv3.ClusterConfig)
	if err := config.CheckFields(cfg, path, "dns_cache_config", "allow_insecure_cluster_options"); err != nil {
		return err
	}
	dc, err := DNSCacheFor(cfg.GetDnsCacheConfig(), config.Join(path, "dns_cache_config"))
	if err != nil {
		return err
	}
	c.DFP = &DFP{Cache: dc, c: c, hosts: map[string]*Host{}}
	return nil
}

// DefaultPort is the port of an authority without one: 443 to a TLS
// cluster, else 80, as Envoy.
func (d *DFP) DefaultPort() string {
	if d.c.transport != nil {
		return "443"
	}
	return "80"
}

func (d *DFP) pick(ctx *LBContext) *Host {
	if ctx == nil || ctx.Authority == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(ctx.Authority)
	if err != nil {
		host, port = ctx.Authority, d.DefaultPort()
	}
	rctx, cancel := context.WithTimeout(context.Background(), d.Cache.timeout)
	defer cancel()
	addrs, err := d.Cache.Resolve(rctx, host)
	if err != nil || len(addrs) == 0 {
		return nil
	}
	p, _ := strconv.Atoi(port)
	addr := netip.AddrPortFrom(addrs[0], uint16(p)).String()
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.hosts[addr]
	if h == nil {
		h = newHost(addr, HostConfig{Weight: 1, Hostname: host})
		h.stats, h.pool, h.od = &HostStats{}, &pool{}, d.c.outlier
		d.hosts[addr] = h
		d.c.Stats.membershipChange.Inc()
	}
	return h
}
