package model

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
)

// CORSPolicy is a virtual host's CORS policy (corsPolicy), rendered as the
// envoy.filters.http.cors per-filter config of the virtual host.
type CORSPolicy struct {
	AllowOrigin      []OriginMatch
	AllowCredentials bool
	AllowMethods     []string
	AllowHeaders     []string
	ExposeHeaders    []string
	// MaxAge is Access-Control-Max-Age in seconds: "" leaves Envoy's
	// default (no header), "0" disables caching.
	MaxAge              string
	AllowPrivateNetwork bool
	// AnswerUnmatchedPreflights answers a preflight from an origin not
	// allowed locally, without access-control-allow-origin, instead of
	// forwarding it (Envoy's forward_not_matching_preflights false): the
	// Gateway API's CORS filter; HTTPProxy keeps Envoy's default.
	AnswerUnmatchedPreflights bool
}

// OriginMatch is one allowed origin: exact (case-insensitive) or a regex.
type OriginMatch struct {
	Regex bool
	Value string
}

// IPFilter is an ipAllowPolicy or ipDenyPolicy, rendered as the
// envoy.filters.http.rbac per-filter config of a virtual host or route.
type IPFilter struct {
	// Allow admits only the rules' sources; otherwise it refuses them.
	Allow bool
	Rules []IPRule
}

// IPRule is one source range.
type IPRule struct {
	// Remote matches the client address after X-Forwarded-For
	// (source: Remote); otherwise the socket peer (source: Peer).
	Remote bool
	CIDR   netip.Prefix
}

// corsPolicy validates and converts a corsPolicy as Contour's
// toCORSPolicy does; the error text is Contour's.
func corsPolicy(p *contourv1.CORSPolicy) (*CORSPolicy, error) {
	if p == nil {
		return nil, nil
	}
	if len(p.AllowOrigin) == 0 {
		return nil, errors.New("invalid allowed origin configuration with length 0")
	}
	out := &CORSPolicy{AllowCredentials: p.AllowCredentials, AllowPrivateNetwork: p.AllowPrivateNetwork,
		AllowMethods: p.AllowMethods, AllowHeaders: p.AllowHeaders, ExposeHeaders: p.ExposeHeaders}
	for _, ao := range p.AllowOrigin {
		m, err := originMatch(ao)
		if err != nil {
			return nil, fmt.Errorf("invalid allowed origin %q: %w", ao, err)
		}
		out.AllowOrigin = append(out.AllowOrigin, m)
	}
	if len(p.AllowMethods) == 0 {
		return nil, errors.New("invalid allowed methods configuration with length 0")
	}
	if p.MaxAge != "" {
		d, err := time.ParseDuration(p.MaxAge)
		if err != nil {
			return nil, fmt.Errorf("unable to parse timeout string %q: %w", p.MaxAge, err)
		}
		if d < 0 {
			return nil, fmt.Errorf("invalid max age value %q", p.MaxAge)
		}
		// Envoy takes whole seconds; Contour rounds (%.0f).
		out.MaxAge = strconv.FormatFloat(d.Seconds(), 'f', 0, 64)
	}
	return out, nil
}

// originMatch is exact for "*" and for a well-formed Origin
// (scheme://host[:port]), else a regex, as Contour decides.
func originMatch(ao string) (OriginMatch, error) {
	if ao == "*" {
		return OriginMatch{Value: ao}, nil
	}
	u, err := url.Parse(ao)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Scheme+"://"+u.Host != ao {
		if _, err := regexp.Compile(ao); err != nil {
			return OriginMatch{}, errors.New("allowed origin is invalid exact match and invalid regex match")
		}
		return OriginMatch{Regex: true, Value: ao}, nil
	}
	return OriginMatch{Value: ao}, nil
}

// ipFilter validates and converts ipAllowPolicy/ipDenyPolicy as Contour's
// toIPFilterRules: bare addresses become /32 or /128, one bad CIDR makes
// the whole filter invalid (every bad CIDR is reported). It returns nil,
// nil when neither list is set.
func ipFilter(st *ProxyStatus, allow, deny []contourv1.IPFilterPolicy) (*IPFilter, error) {
	var list []contourv1.IPFilterPolicy
	out := &IPFilter{}
	switch {
	case len(allow) > 0 && len(deny) > 0:
		st.errorf(ErrIPFilter, "IncompatibleIPAddressFilters", "cannot specify both `ipAllowPolicy` and `ipDenyPolicy`")
		return nil, errors.New("invalid ip filter")
	case len(allow) > 0:
		out.Allow, list = true, allow
	case len(deny) > 0:
		list = deny
	default:
		return nil, nil
	}
	var bad error
	for _, p := range list {
		s := p.CIDR
		if !strings.Contains(s, "/") {
			if strings.Contains(s, ":") {
				s += "/128"
			} else {
				s += "/32"
			}
		}
		// net.ParseCIDR, as Contour, for its error text.
		_, ipn, err := net.ParseCIDR(s)
		if err != nil {
			st.errorf(ErrIPFilter, "InvalidCIDR", "%s failed to parse: %s", p.CIDR, err)
			bad = err
			continue
		}
		addr, _ := netip.AddrFromSlice(ipn.IP)
		ones, _ := ipn.Mask.Size()
		pfx := netip.PrefixFrom(addr.Unmap(), ones)
		switch p.Source {
		case "Peer", "Remote":
		default:
			// The CRD's enum refuses other values; a manifests folder has no
			// schema, so say so here rather than guess.
			st.errorf(ErrIPFilter, "InvalidSource", "%s: source %q is not valid (use Peer or Remote)", p.CIDR, p.Source)
			bad = fmt.Errorf("source %q is not Peer or Remote", p.Source)
			continue
		}
		out.Rules = append(out.Rules, IPRule{Remote: p.Source == "Remote", CIDR: pfx})
	}
	if bad != nil {
		return nil, bad
	}
	return out, nil
}

// CookieRewrite rewrites the attributes of one Set-Cookie, by cookie name
// (cookieRewritePolicies); nil fields are left as the upstream set them.
type CookieRewrite struct {
	Name     string
	Path     *string
	Domain   *string
	Secure   *bool
	SameSite *string
}

// cookieRewrites validates cookieRewritePolicies as Contour's
// cookieRewritePolicies (error text included).
func cookieRewrites(ps []contourv1.CookieRewritePolicy) ([]CookieRewrite, error) {
	var out []CookieRewrite
	seen := map[string]bool{}
	for _, p := range ps {
		if seen[p.Name] {
			return nil, fmt.Errorf("duplicate cookie rewrite rule for cookie %q", p.Name)
		}
		seen[p.Name] = true
		c := CookieRewrite{Name: p.Name, Secure: p.Secure, SameSite: p.SameSite}
		if p.PathRewrite != nil {
			c.Path = &p.PathRewrite.Value
		}
		if p.DomainRewrite != nil {
			c.Domain = &p.DomainRewrite.Value
		}
		if c.Path == nil && c.Domain == nil && c.Secure == nil && c.SameSite == nil {
			return nil, fmt.Errorf("no attributes rewritten for cookie %q", p.Name)
		}
		// Contour's CRD patterns: a ';' or control character would add
		// attributes of its own to the Set-Cookie.
		for _, v := range []struct {
			field string
			val   *string
		}{{"name", &c.Name}, {"pathRewrite.value", c.Path}, {"domainRewrite.value", c.Domain}} {
			if v.val != nil && !validCookieValue(*v.val, v.field == "pathRewrite.value") {
				return nil, fmt.Errorf("cookie %q: %s %q must be non-empty, without ';', '=' or control characters", p.Name, v.field, *v.val)
			}
		}
		if c.SameSite != nil {
			switch *c.SameSite {
			case "Strict", "Lax", "None":
			default:
				// The CRD's enum; a manifests folder has no schema.
				return nil, fmt.Errorf("cookie %q: sameSite %q is not Strict, Lax or None", p.Name, *c.SameSite)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// validCookieValue reports whether s can go into a Set-Cookie attribute
// as is: non-empty, no ';' (it would start another attribute), no control
// characters, and no '=' unless allowEq (a path may have one).
func validCookieValue(s string, allowEq bool) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return r == ';' || r == '=' && !allowEq || r < 0x20 || r == 0x7f
	})
}

// LocalRateLimit is a local (per proxy) token bucket, Contour's
// rateLimitPolicy.local: requests per unit, plus burst.
type LocalRateLimit struct {
	MaxTokens, TokensPerFill uint32
	FillInterval             time.Duration
	// StatusCode answers limited requests; 0 is Envoy's 429.
	StatusCode           uint32
	ResponseHeadersToAdd []KV
}

// localRateLimit validates a rateLimitPolicy.local as Contour's
// localRateLimitPolicy does (the error texts are Contour's).
func localRateLimit(in *contourv1.LocalRateLimitPolicy) (*LocalRateLimit, error) {
	if in == nil {
		return nil, nil
	}
	if in.Requests == 0 {
		return nil, fmt.Errorf("local.requests must be greater than 0")
	}
	var fill time.Duration
	switch in.Unit {
	case "second":
		fill = time.Second
	case "minute":
		fill = time.Minute
	case "hour":
		fill = time.Hour
	default:
		return nil, fmt.Errorf("local.unit must be one of 'second', 'minute', or 'hour'")
	}
	if in.ResponseStatusCode > 0 && (in.ResponseStatusCode < 400 || in.ResponseStatusCode > 599) {
		return nil, fmt.Errorf("local.responseStatusCode must be either unset or between 400 and 599")
	}
	out := &LocalRateLimit{MaxTokens: in.Requests + in.Burst, TokensPerFill: in.Requests, FillInterval: fill, StatusCode: in.ResponseStatusCode}
	// As Contour: the headers go through its headers policy checks.
	hp, err := headersPolicy(&contourv1.HeadersPolicy{Set: in.ResponseHeadersToAdd}, false)
	if err != nil {
		return nil, err
	}
	if hp != nil {
		out.ResponseHeadersToAdd = hp.Set
	}
	return out, nil
}

// internalRedirect compiles a route's internalRedirectPolicy as Contour's
// internalRedirectPolicy. The CRD's enums (301, 302, 303, 307, 308 and
// Always / Never / SafeOnly) are checked here too, since manifests mode
// and old CRDs do not enforce them and Envoy would silently drop an
// unsupported code.
func internalRedirect(p *contourv1.HTTPInternalRedirectPolicy) (*InternalRedirect, error) {
	if p == nil {
		return nil, nil
	}
	ir := &InternalRedirect{MaxRedirects: p.MaxInternalRedirects, DenyRepeatedRoute: p.DenyRepeatedRouteRedirect}
	for _, c := range p.RedirectResponseCodes {
		switch c {
		case 301, 302, 303, 307, 308:
			ir.Codes = append(ir.Codes, uint32(c))
		default:
			return nil, fmt.Errorf("redirectResponseCodes: %d is not a redirect code that can be followed (use 301, 302, 303, 307 or 308)", c)
		}
	}
	switch p.AllowCrossSchemeRedirect {
	case "", "Never":
		ir.CrossScheme = "never"
	case "SafeOnly":
		ir.CrossScheme = "safeOnly"
	case "Always":
		ir.CrossScheme = "always"
	default:
		return nil, fmt.Errorf("allowCrossSchemeRedirect %q: must be Always, Never or SafeOnly", p.AllowCrossSchemeRedirect)
	}
	return ir, nil
}
