// Package sni_dynamic_forward_proxy is
// envoy.filters.network.sni_dynamic_forward_proxy: before tcp_proxy sends a
// connection to a dynamic forward proxy cluster, it resolves the
// connection's SNI (from tls_inspector, or the envoy.upstream.dynamic_host
// filter state) through the DNS cache it shares with the cluster, and
// records the upstream port (port_value, unless envoy.upstream.dynamic_port
// is already set) for the cluster to connect to, as Envoy's filter.
package sni_dynamic_forward_proxy

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strconv"

	snidfpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/sni_dynamic_forward_proxy/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

// The connection filter-state keys Envoy's filter reads and writes.
const (
	// DynamicHostKey overrides the SNI as the host to resolve.
	DynamicHostKey = "envoy.upstream.dynamic_host"
	// DynamicPortKey is the upstream port (1-65535).
	DynamicPortKey = "envoy.upstream.dynamic_port"
	// UpstreamAddressKey receives the resolved address with
	// save_upstream_address.
	UpstreamAddressKey = "envoy.stream.upstream_address"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.filters.network.sni_dynamic_forward_proxy", Category: extension.NetworkFilter,
		Config: &snidfpv3.FilterConfig{}, Factory: listener.ConnFilterFactory(compile)})
}

type filter struct {
	cache    *upstream.DNSCache
	port     uint32
	saveAddr bool
	log      *slog.Logger
}

func compile(ctx *listener.Context, msg proto.Message, _ listener.ChainOptions, path string) (listener.ConnFilter, error) {
	c := msg.(*snidfpv3.FilterConfig)
	if err := config.CheckFields(c, path, "dns_cache_config", "port_value", "save_upstream_address"); err != nil {
		return nil, err
	}
	dc, err := upstream.DNSCacheFor(c.GetDnsCacheConfig(), config.Join(path, "dns_cache_config"))
	if err != nil {
		return nil, err
	}
	return &filter{cache: dc, port: c.GetPortValue(), saveAddr: c.GetSaveUpstreamAddress(), log: cmp.Or(ctx.Log, slog.Default())}, nil
}

// errOverflow closes a connection when the DNS cache or its pending
// requests are over their limits, as Envoy (a NoFlush close).
var errOverflow = errors.New("sni_dynamic_forward_proxy: DNS cache overflow")

// OnNewConnection resolves the connection's host before tcp_proxy runs
// (Envoy's ProxyFilter::onNewConnection, which holds the connection until
// the cache entry is loaded).
func (f *filter) OnNewConnection(tc *listener.Conn) error {
	host := tc.SNI
	if v, ok := tc.FilterState[DynamicHostKey]; ok && v != nil {
		host = v.String()
	}
	if host == "" {
		return nil // nothing to resolve: tcp_proxy goes on as configured
	}
	port := f.port
	if p, ok := DynamicPort(tc.FilterState); ok {
		port = p
	} else if port != 0 {
		// Envoy records the configured port for the cluster (runtime
		// feature dfp_mixed_scheme, on by default).
		tc.SetFilterState(DynamicPortKey, streaminfo.StringObject(strconv.FormatUint(uint64(port), 10)))
	}
	addrs, err := f.cache.Resolve(context.Background(), host)
	switch {
	case errors.Is(err, upstream.ErrPendingOverflow), errors.Is(err, upstream.ErrDNSCacheOverflow):
		f.log.Debug("sni_dynamic_forward_proxy: overflow, connection closed", "host", host, "error", err)
		return errOverflow
	case err != nil || len(addrs) == 0:
		// As Envoy, the connection goes on; the cluster finds no host
		// for it and tcp_proxy closes it.
		f.log.Info("sni_dynamic_forward_proxy: DNS resolution failed", "host", host, "error", err)
		return nil
	}
	if f.saveAddr {
		tc.SetFilterState(UpstreamAddressKey, streaminfo.StringObject(netip.AddrPortFrom(addrs[0], uint16(port)).String()))
	}
	return nil
}

// DynamicPort returns the envoy.upstream.dynamic_port filter state when it
// is a port (1-65535).
func DynamicPort(fs map[string]streaminfo.FilterStateValue) (uint32, bool) {
	v, ok := fs[DynamicPortKey]
	if !ok || v == nil {
		return 0, false
	}
	p, err := strconv.ParseUint(v.String(), 10, 32)
	if err != nil || p == 0 || p > 65535 {
		return 0, false
	}
	return uint32(p), true
}
