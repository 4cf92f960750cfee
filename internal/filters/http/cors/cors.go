// Package cors is envoy.filters.http.cors: it answers CORS preflight
// requests and adds the CORS response headers to simple requests, from the
// CorsPolicy of the route (typed_per_filter_config, merged field by field
// from the route to the virtual host, or the deprecated cors fields of the
// route and virtual host), as Envoy's cors_filter.cc.
package cors

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
)

// Name is the filter's name; the route's deprecated cors fields are
// compiled as its per-route config.
const Name = "envoy.filters.http.cors"

func init() {
	httpfilter.Register(Name, []string{"envoy.cors"}, &corsv3.Cors{}, &corsv3.CorsPolicy{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePolicy}, "")
}

type filterConfig struct {
	originValid, originInvalid *stats.Counter
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	if err := config.CheckFields(msg, path); err != nil {
		return nil, err
	}
	sc := ctx.Scope("cors.")
	return &filterConfig{originValid: sc.Counter("origin_valid"), originInvalid: sc.Counter("origin_invalid")}, nil
}

// Policy is a compiled CorsPolicy; a field left unset defers to the next,
// less specific policy.
type Policy struct {
	origins                                         []func(string) bool
	hasOrigins                                      bool
	methods, headers, expose, maxAge                string
	credentials, privateNetwork, forwardNotMatching *bool
	enabled, shadow                                 *runtime.Fractional
}

func boolp(b interface{ GetValue() bool }, set bool) *bool {
	if !set {
		return nil
	}
	v := b.GetValue()
	return &v
}

func fraction(rt *runtime.Loader, p *corev3.RuntimeFractionalPercent) *runtime.Fractional {
	if p == nil {
		return nil
	}
	f := runtime.NewFractional(rt, p)
	return &f
}

func compilePolicy(ctx *httpfilter.Context, msg proto.Message, path string) (any, error) {
	p := msg.(*corsv3.CorsPolicy)
	if err := config.CheckFields(p, path, "allow_origin_string_match", "allow_methods", "allow_headers", "expose_headers",
		"max_age", "allow_credentials", "filter_enabled", "shadow_enabled", "allow_private_network_access",
		"forward_not_matching_preflights"); err != nil {
		return nil, err
	}
	c := &Policy{
		methods: p.GetAllowMethods(), headers: p.GetAllowHeaders(), expose: p.GetExposeHeaders(), maxAge: p.GetMaxAge(),
		credentials:        boolp(p.GetAllowCredentials(), p.GetAllowCredentials() != nil),
		privateNetwork:     boolp(p.GetAllowPrivateNetworkAccess(), p.GetAllowPrivateNetworkAccess() != nil),
		forwardNotMatching: boolp(p.GetForwardNotMatchingPreflights(), p.GetForwardNotMatchingPreflights() != nil),
		enabled:            fraction(ctx.Runtime, p.GetFilterEnabled()), shadow: fraction(ctx.Runtime, p.GetShadowEnabled()),
	}
	for i, sm := range p.GetAllowOriginStringMatch() {
		m, err := route.CompileStringMatcher(sm, config.Index(config.Join(path, "allow_origin_string_match"), i))
		if err != nil {
			return nil, err
		}
		c.origins = append(c.origins, m)
	}
	c.hasOrigins = len(c.origins) > 0
	return c, nil
}

func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

type filter struct {
	cfg      *filterConfig
	cb       httpfilter.Callbacks
	policies []*Policy // most specific first
	// polBuf backs policies: a route rarely has more than its own and
	// its virtual host's, so the filter allocates nothing more.
	polBuf [2]*Policy
	isCORS bool
	origin string // the request's origin, when allowed
}

// policies are the route's CorsPolicies, most specific first: the
// typed_per_filter_config entries, else the deprecated cors fields.
func (f *filter) loadPolicies() {
	f.policies = f.polBuf[:0]
	for _, v := range f.cb.AllPerRouteConfigs() {
		if p, ok := v.(*Policy); ok {
			f.policies = append(f.policies, p)
		}
	}
	if len(f.policies) > 0 {
		return
	}
	if rt := f.cb.Route(); rt != nil {
		if p, ok := rt.Cors.(*Policy); ok {
			f.policies = append(f.policies, p)
		}
		if p, ok := rt.VHost.Cors.(*Policy); ok {
			f.policies = append(f.policies, p)
		}
	}
}

func (f *filter) enabled() bool {
	// As Envoy: the most specific policy decides; with neither
	// filter_enabled nor shadow_enabled the filter is on.
	if len(f.policies) == 0 {
		return false
	}
	if e := f.policies[0].enabled; e != nil {
		return e.Roll()
	}
	return true
}

func (f *filter) shadowEnabled() bool {
	if len(f.policies) == 0 || f.policies[0].shadow == nil {
		return false
	}
	return f.policies[0].shadow.Roll()
}

func (f *filter) str(get func(*Policy) string) string {
	for _, p := range f.policies {
		if v := get(p); v != "" {
			return v
		}
	}
	return ""
}

func (f *filter) flag(get func(*Policy) *bool, def bool) bool {
	for _, p := range f.policies {
		if v := get(p); v != nil {
			return *v
		}
	}
	return def
}

func (f *filter) originAllowed(origin string) bool {
	for _, p := range f.policies {
		if !p.hasOrigins {
			continue
		}
		// The first policy with origins decides; a matcher that matches
		// "*" allows every origin, as in Envoy.
		for _, m := range p.origins {
			if m("*") || m(origin) {
				return true
			}
		}
		return false
	}
	return false
}

func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	if f.cb.Route() == nil || f.cb.Route().Action == nil {
		return httpfilter.Continue
	}
	f.loadPolicies()
	enabled, shadow := f.enabled(), f.shadowEnabled()
	if !enabled && !shadow {
		return httpfilter.Continue
	}
	origin := h.Map.Get("origin")
	if origin == "" {
		return httpfilter.Continue
	}
	allowed := f.originAllowed(origin)
	if allowed {
		f.cfg.originValid.Inc()
		f.origin = origin
	} else {
		f.cfg.originInvalid.Inc()
	}
	if !enabled {
		return httpfilter.Continue // shadow mode: stats only
	}
	f.isCORS = true
	reqMethod := h.Map.Get("access-control-request-method")
	if h.Method != "OPTIONS" || reqMethod == "" {
		return httpfilter.Continue
	}
	// A preflight (https://fetch.spec.whatwg.org/#cors-preflight-fetch).
	if !allowed && f.flag(func(p *Policy) *bool { return p.forwardNotMatching }, true) {
		return httpfilter.Continue
	}
	var rh []httpfilter.HeaderValue
	if allowed {
		rh = append(rh, httpfilter.HeaderValue{Key: "access-control-allow-origin", Value: origin})
	}
	if f.flag(func(p *Policy) *bool { return p.credentials }, false) {
		rh = append(rh, httpfilter.HeaderValue{Key: "access-control-allow-credentials", Value: "true"})
	}
	if m := f.str(func(p *Policy) string { return p.methods }); m != "" {
		if m == "*" {
			m = reqMethod
		}
		rh = append(rh, httpfilter.HeaderValue{Key: "access-control-allow-methods", Value: m})
	}
	if v := f.str(func(p *Policy) string { return p.headers }); v != "" {
		if v == "*" {
			v = h.Map.Get("access-control-request-headers")
		}
		rh = append(rh, httpfilter.HeaderValue{Key: "access-control-allow-headers", Value: v})
	}
	if v := f.str(func(p *Policy) string { return p.maxAge }); v != "" {
		rh = append(rh, httpfilter.HeaderValue{Key: "access-control-max-age", Value: v})
	}
	if f.flag(func(p *Policy) *bool { return p.privateNetwork }, false) && h.Map.Get("access-control-request-private-network") == "true" {
		rh = append(rh, httpfilter.HeaderValue{Key: "access-control-allow-private-network", Value: "true"})
	}
	// The answer passes through the encoder filters, this one included,
	// as Envoy's local reply does: EncodeHeaders adds
	// access-control-expose-headers to it as to any CORS response.
	f.cb.SendLocalReply(200, "", httpfilter.LocalReply{Details: "cors_response", Headers: rh})
	return httpfilter.StopIteration
}

func (f *filter) EncodeHeaders(h *headers.Response, _ bool) httpfilter.Status {
	if !f.isCORS || f.origin == "" {
		return httpfilter.Continue
	}
	h.Map.Set("access-control-allow-origin", f.origin)
	if f.flag(func(p *Policy) *bool { return p.credentials }, false) {
		h.Map.Set("access-control-allow-credentials", "true")
	}
	if v := f.str(func(p *Policy) string { return p.expose }); v != "" {
		h.Map.Set("access-control-expose-headers", v)
	}
	return httpfilter.Continue
}
