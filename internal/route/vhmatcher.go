package route

import (
	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networkinputsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/common_inputs/network/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/matcher"
)

// A virtual host's matcher (VirtualHost.matcher, instead of routes) picks
// its routes with the unified matcher API, as Envoy's VirtualHostImpl
// does: the matcher runs on the request headers and its action is an
// envoy.config.route.v3.Route or an envoy.config.route.v3.RouteList; the
// route (or the first route of the list, in order) whose own match also
// accepts the request is the route. Nothing matched is no route (404 NR).
// The routes compile as the routes of a route list do (c.route), so every
// route feature applies to them; as in Envoy, their clusters are not
// validated (RouteMatchActionFactory creates them with validate_clusters
// false).

func init() {
	extension.Register(extension.Extension{Name: "route", Category: extension.MatchingAction, Config: &routev3.Route{},
		Factory: routeAction(func(c *compiler, cfg proto.Message, path string, vh *VirtualHost) (routeList, error) {
			rt, err := c.route(cfg.(*routev3.Route), path, vh)
			if err != nil {
				return nil, err
			}
			return routeList{rt}, nil
		}), Notes: "the action of a virtual host's matcher: one route, which must also match the request"})
	extension.Register(extension.Extension{Name: "route_match_action", Category: extension.MatchingAction, Config: &routev3.RouteList{},
		Factory: routeAction(func(c *compiler, cfg proto.Message, path string, vh *VirtualHost) (routeList, error) {
			rl := cfg.(*routev3.RouteList)
			if err := config.CheckFields(rl, path, "routes"); err != nil {
				return nil, err
			}
			var out routeList
			for i, pr := range rl.GetRoutes() {
				rt, err := c.route(pr, config.Index(config.Join(path, "routes"), i), vh)
				if err != nil {
					return nil, err
				}
				out = append(out, rt)
			}
			return out, nil
		}), Notes: "the action of a virtual host's matcher: routes matched in order"})
}

// routeAction is the factory of a virtual host matcher's action: it
// compiles the action's routes.
type routeAction func(c *compiler, cfg proto.Message, path string, vh *VirtualHost) (routeList, error)

// routeList is the compiled action of a virtual host's matcher: the
// candidate routes, in order (one for a Route action).
type routeList []*Route

// vhostMatcher compiles a virtual host's matcher at path.
func (c *compiler) vhostMatcher(m *xdsmatcherv3.Matcher, path string, vh *VirtualHost) (*matcher.Matcher, error) {
	c.noValidate++
	defer func() { c.noValidate-- }()
	return matcher.CompileWith(m, path, matcher.Options{
		Input: routeInput,
		Action: func(tc *xdscorev3.TypedExtensionConfig, p string) (any, error) {
			tp := config.Join(p, "typed_config")
			r, err := extension.Lookup(extension.MatchingAction, tc.GetTypedConfig(), tp)
			if err != nil {
				return nil, err
			}
			f, ok := r.Ext.Factory.(routeAction)
			if !ok {
				return nil, config.Errorf(tp, "the action of a virtual host's matcher must be an envoy.config.route.v3.Route or envoy.config.route.v3.RouteList, not %s",
					r.Config.ProtoReflect().Descriptor().FullName())
			}
			return f(c, r.Config, tp, vh)
		},
	})
}

// routeInput admits the inputs a route table matches on: request headers
// (HttpRequestHeaderMatchInput), as Envoy's RouteActionValidationVisitor.
// Envoy also admits filter state, which a route lookup here does not see.
func routeInput(cfg proto.Message, path string) error {
	switch cfg.(type) {
	case *matcherv3.HttpRequestHeaderMatchInput:
		return nil
	case *networkinputsv3.FilterStateInput:
		return config.Errorf(path, "a filter_state input in a virtual host's matcher is not implemented by legate: routes are chosen from the request headers (envoy.type.matcher.v3.HttpRequestHeaderMatchInput)")
	}
	return config.Errorf(path, "route table can only match on request headers (envoy.type.matcher.v3.HttpRequestHeaderMatchInput), saw %s",
		cfg.ProtoReflect().Descriptor().FullName())
}

// matchRoute runs the virtual host's matcher, then the candidates' own
// matches.
func (vh *VirtualHost) matchRoute(r *headers.Request) *Route {
	a, ok := vh.matcher.Match(&matcher.Data{Req: r})
	if !ok {
		return nil
	}
	for _, rt := range a.(routeList) {
		if rt.match.matches(r) {
			return rt
		}
	}
	return nil
}
