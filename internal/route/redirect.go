package route

import (
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	allowlistedv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/internal_redirect/allow_listed_routes/v3"
	previousroutesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/internal_redirect/previous_routes/v3"
	safecrossv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/internal_redirect/safe_cross_scheme/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
)

// InternalRedirect is a compiled InternalRedirectPolicy (Envoy's
// InternalRedirectPolicyImpl): which upstream 3xx responses the router
// follows itself, re-running the request through the connection manager
// against the Location, instead of passing them to the client.
type InternalRedirect struct {
	// Max is max_internal_redirects (default 1): redirects one request
	// may take, all routes together.
	Max uint32
	// codes holds redirect_response_codes (default 302); of the codes,
	// Envoy honours 301, 302, 303, 307 and 308 and ignores the others.
	codes [5]bool
	// AllowCrossScheme lets an http request follow an https Location and
	// the other way round.
	AllowCrossScheme bool
	// CopyHeaders are response_headers_to_copy: response headers that
	// replace the request's in the redirected request.
	CopyHeaders []string
	// Predicates accept or refuse the target route (Envoy's
	// envoy.internal_redirect_predicates), in order.
	Predicates []RedirectPredicate
}

// RedirectPredicate is an internal redirect predicate
// (InternalRedirectPredicate::acceptTargetRoute): whether a redirect from
// the route named from to the route named target may be taken, given the
// routes the request was redirected to from from so far (visited) and
// whether the request and the target are https.
type RedirectPredicate interface {
	Accept(from, target string, visited []string, downstreamHTTPS, targetHTTPS bool) bool
}

var redirectCodes = [5]int{301, 302, 303, 307, 308}

// Handles says the policy follows responses with this status.
func (p *InternalRedirect) Handles(status int) bool {
	for i, c := range redirectCodes {
		if c == status {
			return p.codes[i]
		}
	}
	return false
}

// redirectPredicate is the factory of an internal redirect predicate.
type redirectPredicate func(cfg proto.Message) RedirectPredicate

func init() {
	extension.Register(extension.Extension{Name: "envoy.internal_redirect_predicates.previous_routes", Category: extension.InternalRedirectPredicate,
		Config: &previousroutesv3.PreviousRoutesConfig{}, Factory: redirectPredicate(func(proto.Message) RedirectPredicate { return previousRoutes{} })})
	extension.Register(extension.Extension{Name: "envoy.internal_redirect_predicates.allow_listed_routes", Category: extension.InternalRedirectPredicate,
		Config: &allowlistedv3.AllowListedRoutesConfig{}, Factory: redirectPredicate(func(m proto.Message) RedirectPredicate {
			names := map[string]bool{}
			for _, n := range m.(*allowlistedv3.AllowListedRoutesConfig).GetAllowedRouteNames() {
				names[n] = true
			}
			return allowListed(names)
		})})
	extension.Register(extension.Extension{Name: "envoy.internal_redirect_predicates.safe_cross_scheme", Category: extension.InternalRedirectPredicate,
		Config: &safecrossv3.SafeCrossSchemeConfig{}, Factory: redirectPredicate(func(proto.Message) RedirectPredicate { return safeCrossScheme{} })})
}

// previousRoutes refuses a target route the request was already
// redirected to from the same route (Envoy's PreviousRoutesPredicate).
type previousRoutes struct{}

func (previousRoutes) Accept(_, target string, visited []string, _, _ bool) bool {
	for _, v := range visited {
		if v == target {
			return false
		}
	}
	return true
}

// allowListed accepts only the named target routes.
type allowListed map[string]bool

func (a allowListed) Accept(_, target string, _ []string, _, _ bool) bool { return a[target] }

// safeCrossScheme refuses an https target for an http request (https to
// http and same-scheme redirects pass).
type safeCrossScheme struct{}

func (safeCrossScheme) Accept(_, _ string, _ []string, downstreamHTTPS, targetHTTPS bool) bool {
	return downstreamHTTPS || !targetHTTPS
}

// internalRedirect compiles a route action's internal redirect settings:
// internal_redirect_policy, or the deprecated internal_redirect_action
// HANDLE_INTERNAL_REDIRECT with max_internal_redirects.
func (c *compiler) internalRedirect(a *routev3.RouteAction, path string) (*InternalRedirect, error) {
	pol := a.GetInternalRedirectPolicy()
	//nolint:staticcheck // the deprecated fields of v2-era configs still mean what they meant
	if pol == nil && a.GetInternalRedirectAction() == routev3.RouteAction_HANDLE_INTERNAL_REDIRECT {
		pol = &routev3.InternalRedirectPolicy{MaxInternalRedirects: a.GetMaxInternalRedirects()} //nolint:staticcheck
	}
	if pol == nil {
		return nil, nil
	}
	path = config.Join(path, "internal_redirect_policy")
	if err := config.CheckFields(pol, path, "max_internal_redirects", "redirect_response_codes", "predicates",
		"allow_cross_scheme_redirect", "response_headers_to_copy"); err != nil {
		return nil, err
	}
	p := &InternalRedirect{Max: 1, AllowCrossScheme: pol.GetAllowCrossSchemeRedirect()}
	if m := pol.GetMaxInternalRedirects(); m != nil {
		p.Max = m.GetValue()
	}
	codes := pol.GetRedirectResponseCodes()
	if len(codes) == 0 {
		codes = []uint32{302}
	}
	for _, code := range codes {
		for i, c := range redirectCodes {
			if uint32(c) == code {
				p.codes[i] = true
			}
		}
	}
	for i, h := range pol.GetResponseHeadersToCopy() {
		lh := headers.Lower(h)
		// Envoy's validation: the request's routing headers cannot be
		// overwritten from a response.
		if strings.HasPrefix(lh, ":") || lh == "host" {
			return nil, config.Errorf(config.Index(config.Join(path, "response_headers_to_copy"), i), "%q cannot be copied from a redirect response (pseudo-headers and host are the redirect's own)", h)
		}
		p.CopyHeaders = append(p.CopyHeaders, lh)
	}
	for i, tc := range pol.GetPredicates() {
		r, err := extension.Lookup(extension.InternalRedirectPredicate, tc.GetTypedConfig(), config.Join(config.Index(config.Join(path, "predicates"), i), "typed_config"))
		if err != nil {
			return nil, err
		}
		p.Predicates = append(p.Predicates, r.Ext.Factory.(redirectPredicate)(r.Config))
	}
	return p, nil
}
