// Package health_check is envoy.filters.http.health_check: requests that
// match its headers are answered by the proxy itself — 200 while the
// server passes health checks (and the listed clusters have enough healthy
// hosts), 503 with x-envoy-immediate-health-check-fail once
// /healthcheck/fail was called or the server drains. In pass_through_mode
// they go upstream unless the server is failing.
package health_check

import (
	healthcheckv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

func init() {
	httpfilter.Register("envoy.filters.http.health_check", []string{"envoy.health_check"}, &healthcheckv3.HealthCheck{}, nil,
		httpfilter.Factory{Compile: compile}, "cache_time is not implemented")
}

type healthCheck struct {
	passThrough bool
	matchers    []func(*headers.Request) bool
	minHealthy  map[string]float64
	failing     func() bool
	clusters    *upstream.Manager
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	cfg := msg.(*healthcheckv3.HealthCheck)
	if err := config.CheckFields(cfg, path, "pass_through_mode", "headers", "cluster_min_healthy_percentages", "cache_time"); err != nil {
		return nil, err
	}
	if cfg.GetCacheTime() != nil {
		return nil, config.Unsupported(config.Join(path, "cache_time"), "cache_time (caching pass-through health check responses)")
	}
	f := &healthCheck{passThrough: cfg.GetPassThroughMode().GetValue(), minHealthy: map[string]float64{},
		failing: ctx.HealthCheckFailing, clusters: ctx.Clusters}
	for i, h := range cfg.GetHeaders() {
		m, err := route.CompileHeaderMatcher(h, config.Index(config.Join(path, "headers"), i))
		if err != nil {
			return nil, err
		}
		f.matchers = append(f.matchers, m)
	}
	for name, p := range cfg.GetClusterMinHealthyPercentages() {
		f.minHealthy[name] = p.GetValue()
	}
	return f, nil
}

func (f *healthCheck) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: f, cb: cb}
}

type filter struct {
	cfg *healthCheck
	cb  httpfilter.Callbacks
}

var immediateFail = []httpfilter.HeaderValue{{Key: "x-envoy-immediate-health-check-fail", Value: "true"}}

func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	c := f.cfg
	for _, m := range c.matchers {
		if !m(h) {
			return httpfilter.Continue
		}
	}
	// A health check request, as Envoy's StreamInfo::healthCheck: access
	// logs' not_health_check_filter leaves it out.
	f.cb.StreamInfo().HealthCheck = true
	if c.failing != nil && c.failing() {
		f.cb.SendLocalReply(503, "", httpfilter.LocalReply{Details: "health_check_failed", Flag: streaminfo.FailedLocalHealthCheck, Headers: immediateFail})
		return httpfilter.StopIteration
	}
	if c.passThrough {
		return httpfilter.Continue
	}
	for name, min := range c.minHealthy {
		cl := c.clusters.Get(name)
		if cl == nil {
			f.cb.SendLocalReply(503, "", httpfilter.LocalReply{Details: "health_check_cluster_missing"})
			return httpfilter.StopIteration
		}
		total := len(cl.Hosts())
		if total == 0 || float64(cl.HealthyCount())*100/float64(total) < min {
			f.cb.SendLocalReply(503, "", httpfilter.LocalReply{Details: "health_check_cluster_unhealthy"})
			return httpfilter.StopIteration
		}
	}
	f.cb.SendLocalReply(200, "", httpfilter.LocalReply{Details: "health_check_ok"})
	return httpfilter.StopIteration
}
