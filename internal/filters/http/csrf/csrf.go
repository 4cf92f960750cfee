// Package csrf is envoy.filters.http.csrf: it rejects state-changing
// requests (POST, PUT, DELETE, PATCH) whose source origin (the Origin
// header, else the Referer) is not the destination (the Host/:authority)
// nor one of the policy's additional_origins, with 403 "Invalid origin"
// (details csrf_origin_mismatch), as Envoy's csrf_filter.cc. The policy is
// the filter's CsrfPolicy or the route's most specific per-route one;
// filter_enabled and shadow_enabled are runtime fractional percents, and
// in shadow mode the filter only counts. Stats are
// http.<stat_prefix>.csrf.{missing_source_origin,request_invalid,
// request_valid}.
package csrf

import (
	"strings"

	csrfv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/csrf/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/strmatch"
)

// Name is the filter's name.
const Name = "envoy.filters.http.csrf"

// details is Envoy's response code details for a rejected request.
const details = "csrf_origin_mismatch"

func init() {
	httpfilter.Register(Name, []string{"envoy.csrf"}, &csrfv3.CsrfPolicy{}, &csrfv3.CsrfPolicy{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute}, "")
}

// Policy is a compiled CsrfPolicy.
type Policy struct {
	enabled runtime.Fractional
	// shadow is nil without shadow_enabled: Envoy's shadowEnabled() is
	// false then, whatever the runtime says.
	shadow     *runtime.Fractional
	additional []strmatch.Matcher
}

// filterConfig is the compiled filter: its policy and the stats, which
// per-route policies share.
type filterConfig struct {
	policy                                   *Policy
	missingSource, requestInvalid, requestOK *stats.Counter
}

// CompilePolicy compiles a CsrfPolicy at path.
func CompilePolicy(rt *runtime.Loader, p *csrfv3.CsrfPolicy, path string) (*Policy, error) {
	if err := config.CheckFields(p, path, "filter_enabled", "shadow_enabled", "additional_origins"); err != nil {
		return nil, err
	}
	out := &Policy{enabled: runtime.NewFractional(rt, p.GetFilterEnabled())}
	if s := p.GetShadowEnabled(); s != nil {
		f := runtime.NewFractional(rt, s)
		out.shadow = &f
	}
	for i, sm := range p.GetAdditionalOrigins() {
		m, err := strmatch.Compile(sm, config.Index(config.Join(path, "additional_origins"), i))
		if err != nil {
			return nil, err
		}
		out.additional = append(out.additional, m)
	}
	return out, nil
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	p, err := CompilePolicy(ctx.Runtime, msg.(*csrfv3.CsrfPolicy), path)
	if err != nil {
		return nil, err
	}
	// As Envoy: <connection manager stat prefix>csrf.<name>.
	sc := ctx.Scope("csrf.")
	return &filterConfig{policy: p, missingSource: sc.Counter("missing_source_origin"),
		requestInvalid: sc.Counter("request_invalid"), requestOK: sc.Counter("request_valid")}, nil
}

func compilePerRoute(ctx *httpfilter.Context, msg proto.Message, path string) (any, error) {
	return CompilePolicy(ctx.Runtime, msg.(*csrfv3.CsrfPolicy), path)
}

// NewFilter makes the stream's filter.
func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

type filter struct {
	cfg *filterConfig
	cb  httpfilter.Callbacks
}

// DecodeHeaders checks a state-changing request's origin.
func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	p := f.cfg.policy
	if pr, ok := f.cb.PerRouteConfig().(*Policy); ok {
		p = pr
	}
	enabled := p.enabled.Roll()
	shadow := p.shadow != nil && p.shadow.Roll()
	if !enabled && !shadow {
		return httpfilter.Continue
	}
	if !isModifyMethod(h.Method) {
		return httpfilter.Continue
	}
	valid := true
	source := hostAndPort(h.Map.Get("origin"))
	if source == "" {
		source = hostAndPort(h.Map.Get("referer"))
	}
	if source == "" {
		valid = false
		f.cfg.missingSource.Inc()
	}
	if !p.originValid(source, h) {
		valid = false
		f.cfg.requestInvalid.Inc()
	}
	if valid {
		f.cfg.requestOK.Inc()
		return httpfilter.Continue
	}
	if !enabled {
		return httpfilter.Continue // shadow mode: stats only
	}
	f.cb.SendLocalReply(403, "Invalid origin", httpfilter.LocalReply{Details: details})
	return httpfilter.StopIteration
}

// originValid is Envoy's isValid: the source is the target, or matches
// one of additional_origins. Note that a missing source equals a missing
// target (Envoy compares the empty strings).
func (p *Policy) originValid(source string, h *headers.Request) bool {
	if source == targetOrigin(h) {
		return true
	}
	for i := range p.additional {
		if p.additional[i].Match(source) {
			return true
		}
	}
	return false
}

func isModifyMethod(m string) bool {
	return m == "POST" || m == "PUT" || m == "DELETE" || m == "PATCH"
}

// targetOrigin is the host and port of "<scheme>://<host>", as Envoy's
// targetOriginValue builds it.
func targetOrigin(h *headers.Request) string {
	if h.Authority == "" {
		return ""
	}
	scheme := h.Scheme
	if scheme == "" {
		scheme = "http"
	}
	return hostAndPort(scheme + "://" + h.Authority)
}

// hostAndPort is Envoy's: the host[:port] of an absolute URL (Origin and
// Referer carry one), or the value itself when it does not parse as one
// (Origin: null, a bare host).
func hostAndPort(v string) string {
	if v == "" {
		return ""
	}
	if hp, ok := urlHostAndPort(v); ok {
		return hp
	}
	return v
}

// urlHostAndPort parses an absolute URL as Envoy's Http::Utility::Url
// (http_parser_parse_url, not CONNECT): scheme "://" [userinfo "@"] host
// [":" port] then an optional path, query or fragment. IPv6 hosts keep
// their brackets, as Envoy adjusts them back in.
func urlHostAndPort(v string) (string, bool) {
	i := 0
	for i < len(v) && (v[i] >= 'a' && v[i] <= 'z' || v[i] >= 'A' && v[i] <= 'Z') {
		i++
	}
	if i == 0 || !strings.HasPrefix(v[i:], "://") {
		return "", false
	}
	auth := v[i+3:]
	if j := strings.IndexAny(auth, "/?#"); j >= 0 {
		auth = auth[:j]
	}
	if j := strings.LastIndexByte(auth, '@'); j >= 0 {
		auth = auth[j+1:]
	}
	host, port := auth, ""
	if strings.HasPrefix(auth, "[") {
		end := strings.IndexByte(auth, ']')
		if end < 0 {
			return "", false
		}
		host, port = auth[:end+1], auth[end+1:]
		if len(host) == 2 {
			return "", false
		}
	} else if j := strings.IndexByte(auth, ':'); j >= 0 {
		host, port = auth[:j], auth[j:]
		if host == "" {
			return "", false
		}
		for k := 0; k < len(host); k++ {
			if !isHostChar(host[k]) {
				return "", false
			}
		}
	} else {
		if host == "" {
			return "", false
		}
		for k := 0; k < len(host); k++ {
			if !isHostChar(host[k]) {
				return "", false
			}
		}
	}
	if port != "" {
		if port[0] != ':' || len(port) == 1 || len(port) > 6 {
			return "", false
		}
		n := 0
		for k := 1; k < len(port); k++ {
			if port[k] < '0' || port[k] > '9' {
				return "", false
			}
			n = n*10 + int(port[k]-'0')
		}
		if n > 65535 {
			return "", false
		}
	}
	return auth, true
}

// isHostChar is http_parser's IS_HOST_CHAR (non-strict mode).
func isHostChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' || c == '~'
}
