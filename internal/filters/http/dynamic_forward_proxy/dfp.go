// Package dynamic_forward_proxy is envoy.filters.http.dynamic_forward_proxy:
// for requests routed to a dynamic forward proxy cluster, the request's
// host (optionally rewritten per route) is resolved through the shared
// DNS cache before the router runs, so the cluster can send the request
// there; a name that does not resolve is a 503 with response flag DF.
package dynamic_forward_proxy

import (
	"context"
	"errors"
	"net"

	dfpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_forward_proxy/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

func init() {
	httpfilter.Register("envoy.filters.http.dynamic_forward_proxy", nil, &dfpv3.FilterConfig{}, &dfpv3.PerRouteConfig{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute}, "sub-clusters are not implemented")
}

type filterConfig struct{ cache *upstream.DNSCache }

func compile(_ *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*dfpv3.FilterConfig)
	if err := config.CheckFields(c, path, "dns_cache_config"); err != nil {
		return nil, err
	}
	dc, err := upstream.DNSCacheFor(c.GetDnsCacheConfig(), config.Join(path, "dns_cache_config"))
	if err != nil {
		return nil, err
	}
	return &filterConfig{cache: dc}, nil
}

type perRoute struct{ literal, header string }

func compilePerRoute(_ *httpfilter.Context, msg proto.Message, path string) (any, error) {
	p := msg.(*dfpv3.PerRouteConfig)
	return &perRoute{literal: p.GetHostRewriteLiteral(), header: headers.Lower(p.GetHostRewriteHeader())}, nil
}

func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

type filter struct {
	cfg *filterConfig
	cb  httpfilter.Callbacks
}

func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	rt := f.cb.Route()
	if rt == nil || rt.Action == nil || rt.Action.Cluster == nil {
		return httpfilter.Continue
	}
	cl := rt.Action.Cluster.Get()
	if cl == nil || cl.DFP == nil {
		return httpfilter.Continue // not a dynamic forward proxy cluster
	}
	if pr, ok := f.cb.PerRouteConfig().(*perRoute); ok {
		switch {
		case pr.literal != "":
			h.Authority = pr.literal
		case pr.header != "":
			if v := h.Map.Get(pr.header); v != "" {
				h.Authority = v
			}
		}
	}
	host := h.Authority
	if hn, _, err := net.SplitHostPort(host); err == nil {
		host = hn
	}
	_, err := cl.DFP.Cache.Resolve(context.Background(), host)
	// Envoy's proxy_filter local replies: overflow of the cache or of its
	// circuit breaker, else a failed resolution (flag DF).
	switch {
	case errors.Is(err, upstream.ErrPendingOverflow):
		f.cb.SendLocalReply(503, "Dynamic forward proxy pending request overflow", httpfilter.LocalReply{Details: "dynamic_forward_proxy_pending_request_overflow"})
		return httpfilter.StopIteration
	case errors.Is(err, upstream.ErrDNSCacheOverflow):
		f.cb.SendLocalReply(503, "DNS cache overflow", httpfilter.LocalReply{Details: "dns_cache_overflow"})
		return httpfilter.StopIteration
	case err != nil:
		f.cb.Log().Info("dynamic forward proxy: DNS resolution failed", "host", host, "error", err)
		f.cb.SendLocalReply(503, "DNS resolution failure", httpfilter.LocalReply{Details: "dns_resolution_failure", Flag: streaminfo.DNSResolutionFailed})
		return httpfilter.StopIteration
	}
	return httpfilter.Continue
}
