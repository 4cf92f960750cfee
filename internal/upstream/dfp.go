package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	dfpclusterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/dynamic_forward_proxy/v3"
	dnscachev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/dynamic_forward_proxy/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
)

// clusterTypeFactory compiles a cluster_type extension into c.
type clusterTypeFactory func(cfg proto.Message, c *Cluster, path string, deps Deps) error

func init() {
	extension.Register(extension.Extension{Name: "envoy.clusters.dynamic_forward_proxy", Category: extension.ClusterType,
		Config: &dfpclusterv3.ClusterConfig{}, Factory: clusterTypeFactory(compileDFP),
		Notes: "sub-clusters and coalesced connections are not implemented"})
}

// DNSCache is a dynamic forward proxy's DNS cache, shared by name between
// the filter that resolves a request's host and the cluster that uses it.
// It resolves through the same TTL-aware resolver as STRICT_DNS clusters.
type DNSCache struct {
	Name     string
	resolver *ttlResolver
	family   string // "ip4", "ip6" or "ip"
	// refresh is dns_refresh_rate, minRefresh dns_min_refresh_rate: a
	// resolved host is re-resolved after its DNS TTL, but no sooner than
	// minRefresh (Envoy's DnsCacheConfig docs); without a TTL (an
	// /etc/hosts answer) after refresh. failRefresh is
	// dns_failure_refresh_rate's base interval (default: refresh).
	refresh, minRefresh, failRefresh time.Duration
	timeout                          time.Duration
	// hostTTL is host_ttl: a host unused that long is dropped, making room
	// under max_hosts.
	hostTTL    time.Duration
	maxHosts   int
	maxPending int64 // dns_cache_circuit_breaker.max_pending_requests
	pending    atomic.Int64

	mu      sync.Mutex
	entries map[string]*dnsEntry
}

type dnsEntry struct {
	addrs    []netip.Addr
	err      error
	resolved time.Time
	fresh    time.Duration // how long the answer stands
	used     time.Time     // guarded by DNSCache.mu
	done     chan struct{}
}

// Resolve's overload errors: the cache holds max_hosts hosts none of which
// is idle past host_ttl, or more requests wait for resolution than
// dns_cache_circuit_breaker.max_pending_requests allows.
var (
	ErrDNSCacheOverflow = errors.New("DNS cache overflow")
	ErrPendingOverflow  = errors.New("dynamic forward proxy pending request overflow")
)

var (
	cachesMu sync.Mutex
	caches   = map[string]*DNSCache{}
)

// DNSCacheFor returns the cache configured by c (one per name, as Envoy).
// A cache resolves with its own typed_dns_resolver_config, else the
// system's resolver (Envoy's DnsCacheImpl::selectDnsResolver reads only
// the cache's config, never the bootstrap's).
func DNSCacheFor(c *dnscachev3.DnsCacheConfig, path string) (*DNSCache, error) {
	if err := config.CheckFields(c, path, "name", "dns_lookup_family", "dns_refresh_rate", "dns_min_refresh_rate", "host_ttl",
		"max_hosts", "dns_cache_circuit_breaker", "typed_dns_resolver_config", "dns_query_timeout", "use_tcp_for_dns_lookups",
		"dns_failure_refresh_rate", "disable_dns_refresh_on_failure"); err != nil {
		return nil, err
	}
	if c.GetDisableDnsRefreshOnFailure() {
		return nil, config.Unsupported(config.Join(path, "disable_dns_refresh_on_failure"), "disable_dns_refresh_on_failure")
	}
	if cb := c.GetDnsCacheCircuitBreaker(); cb != nil {
		if err := config.CheckFields(cb, config.Join(path, "dns_cache_circuit_breaker"), "max_pending_requests"); err != nil {
			return nil, err
		}
	}
	cachesMu.Lock()
	defer cachesMu.Unlock()
	if dc := caches[c.GetName()]; dc != nil {
		return dc, nil
	}
	dc := &DNSCache{Name: c.GetName(), family: "ip", refresh: time.Minute, minRefresh: 5 * time.Second, timeout: 5 * time.Second,
		hostTTL: 5 * time.Minute, maxHosts: 1024, maxPending: 1024, entries: map[string]*dnsEntry{}}
	switch c.GetDnsLookupFamily() {
	case clusterv3.Cluster_V4_ONLY:
		dc.family = "ip4"
	case clusterv3.Cluster_V6_ONLY:
		dc.family = "ip6"
	}
	if d := c.GetDnsRefreshRate(); d != nil {
		dc.refresh = d.AsDuration()
	}
	if d := c.GetDnsMinRefreshRate(); d != nil {
		dc.minRefresh = d.AsDuration()
	}
	dc.failRefresh = dc.refresh
	if d := c.GetDnsFailureRefreshRate().GetBaseInterval(); d != nil {
		dc.failRefresh = d.AsDuration()
	}
	if d := c.GetHostTtl(); d != nil {
		dc.hostTTL = d.AsDuration()
	}
	if d := c.GetDnsQueryTimeout(); d != nil {
		dc.timeout = d.AsDuration()
	}
	if v := c.GetMaxHosts(); v != nil {
		dc.maxHosts = int(v.GetValue())
	}
	if v := c.GetDnsCacheCircuitBreaker().GetMaxPendingRequests(); v != nil {
		dc.maxPending = int64(v.GetValue())
	}
	var dns DNSSettings
	if tc := c.GetTypedDnsResolverConfig(); tc != nil {
		if err := CompileDNSResolver(tc, config.Join(path, "typed_dns_resolver_config"), &dns); err != nil {
			return nil, err
		}
	}
	dns.UseTCP = dns.UseTCP || c.GetUseTcpForDnsLookups()
	dc.resolver = dns.ttlResolver()
	caches[c.GetName()] = dc
	return dc, nil
}

// Resolve returns the addresses of host (a name or an IP literal),
// resolving it once for every caller and caching the answer as long as
// its TTL (or the refresh rates) allow.
func (dc *DNSCache) Resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	now := time.Now()
	dc.mu.Lock()
	e := dc.entries[host]
	if e != nil {
		e.used = now
		select {
		case <-e.done:
			if now.Sub(e.resolved) < e.fresh {
				dc.mu.Unlock()
				return e.addrs, e.err
			}
		default:
			dc.mu.Unlock()
			return dc.wait(ctx, e)
		}
	}
	if e == nil && len(dc.entries) >= dc.maxHosts {
		dc.evictIdle(now)
	}
	if e == nil && len(dc.entries) >= dc.maxHosts {
		dc.mu.Unlock()
		return nil, fmt.Errorf("DNS cache %s holds max_hosts %d: %w", dc.Name, dc.maxHosts, ErrDNSCacheOverflow)
	}
	// The name usually comes from a request's Host header, whose bytes
	// live only as long as the request (http1's zero-copy parse): the
	// cache keeps its own copy.
	host = strings.Clone(host)
	ne := &dnsEntry{done: make(chan struct{}), used: now}
	dc.entries[host] = ne
	dc.mu.Unlock()
	go dc.resolve(ne, host)
	return dc.wait(ctx, ne)
}

// wait waits for e's resolution, counted against max_pending_requests.
func (dc *DNSCache) wait(ctx context.Context, e *dnsEntry) ([]netip.Addr, error) {
	if dc.pending.Add(1) > dc.maxPending {
		dc.pending.Add(-1)
		return nil, ErrPendingOverflow
	}
	defer dc.pending.Add(-1)
	select {
	case <-e.done:
		return e.addrs, e.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (dc *DNSCache) resolve(e *dnsEntry, host string) {
	rctx, cancel := context.WithTimeout(context.Background(), dc.timeout)
	ips, ttl, err := dc.resolver.lookup(rctx, host, dc.family)
	cancel()
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	e.fresh = dc.refresh
	switch {
	case err != nil:
		e.fresh = dc.failRefresh
	case ttl > 0:
		e.fresh = max(ttl, dc.minRefresh)
	}
	e.addrs, e.err, e.resolved = ips, err, time.Now()
	close(e.done)
}

// evictIdle drops resolved hosts unused for host_ttl; dc.mu is held.
func (dc *DNSCache) evictIdle(now time.Time) {
	for h, e := range dc.entries {
		select {
		case <-e.done:
			if now.Sub(e.used) >= dc.hostTTL {
				delete(dc.entries, h)
			}
		default:
		}
	}
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

func compileDFP(msg proto.Message, c *Cluster, path string, _ Deps) error {
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
	if secureTransport(d.c.transport) {
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
		d.c.adopt(h)
		d.hosts[addr] = h
		d.c.Stats.membershipChange.Inc()
	}
	return h
}
