package upstream

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	dnscachev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/dynamic_forward_proxy/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// cacheWith compiles a DNS cache whose lookups answer from hosts (the
// /etc/hosts seam of the resolver), so the cache's own rules are tested.
func cacheWith(t *testing.T, c *dnscachev3.DnsCacheConfig, hosts func(string) []netip.Addr) *DNSCache {
	t.Helper()
	c.Name = t.Name()
	dc, err := DNSCacheFor(c, "dns_cache_config")
	if err != nil {
		t.Fatal(err)
	}
	dc.resolver.hosts = hosts
	return dc
}

func TestDNSCacheHostTTL(t *testing.T) {
	addr := func(string) []netip.Addr { return []netip.Addr{netip.MustParseAddr("192.0.2.1")} }
	for _, tc := range []struct {
		name    string
		hostTTL time.Duration
		wantErr error
	}{
		{"idle host evicted", time.Millisecond, nil},
		{"busy cache overflows", time.Hour, ErrDNSCacheOverflow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dc := cacheWith(t, &dnscachev3.DnsCacheConfig{MaxHosts: wrapperspb.UInt32(1), HostTtl: durationpb.New(tc.hostTTL)}, addr)
			if _, err := dc.Resolve(context.Background(), "a.example"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
			_, err := dc.Resolve(context.Background(), "b.example")
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("second host: %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestDNSCachePendingOverflow(t *testing.T) {
	release := make(chan struct{})
	dc := cacheWith(t, &dnscachev3.DnsCacheConfig{DnsCacheCircuitBreaker: &dnscachev3.DnsCacheCircuitBreakers{MaxPendingRequests: wrapperspb.UInt32(1)}},
		func(string) []netip.Addr { <-release; return []netip.Addr{netip.MustParseAddr("192.0.2.2")} })
	first := make(chan error, 1)
	go func() { _, err := dc.Resolve(context.Background(), "slow.example"); first <- err }()
	for dc.pending.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if _, err := dc.Resolve(context.Background(), "slow.example"); !errors.Is(err, ErrPendingOverflow) {
		t.Fatalf("second waiter: %v, want %v", err, ErrPendingOverflow)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first waiter: %v", err)
	}
	// Resolved now: a cached answer waits for nothing.
	if _, err := dc.Resolve(context.Background(), "slow.example"); err != nil {
		t.Fatal(err)
	}
}

func TestDNSCacheConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    *dnscachev3.DnsCacheConfig
		want string
	}{
		{"refresh on failure disabled", &dnscachev3.DnsCacheConfig{DisableDnsRefreshOnFailure: true}, "disable_dns_refresh_on_failure"},
		{"accepted", &dnscachev3.DnsCacheConfig{DnsLookupFamily: clusterv3.Cluster_V4_ONLY, DnsCacheCircuitBreaker: &dnscachev3.DnsCacheCircuitBreakers{}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.Name = t.Name()
			_, err := DNSCacheFor(tc.c, "dns_cache_config")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
}
