// Package match_delegate is Envoy's ExtensionWithMatcher for HTTP filters
// (envoy.filters.http.match_delegate): it wraps another HTTP filter and
// skips it for the streams whose request its xds_matcher matches with the
// SkipFilter action. A wrapped filter whose compiled config is an
// ActionReceiver (the composite filter) also takes the other actions its
// package registers as ActionFactory (ExecuteFilterAction): the matched
// action decides the stream's filter.
package match_delegate

import (
	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	matchingv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/matching/v3"
	skipv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/matcher/action/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/matcher"
)

func init() {
	httpfilter.Register("envoy.filters.http.match_delegate", []string{"envoy.common.matching"}, &matchingv3.ExtensionWithMatcher{}, nil,
		httpfilter.Factory{Compile: compile},
		"the matcher is evaluated on the request headers when the stream starts; per-route configs of the wrapped filter are not looked up")
	extension.Register(extension.Extension{Name: "envoy.filters.common.matcher.action.skip_filter", Category: extension.MatchingAction,
		Config: &skipv3.SkipFilter{}, Factory: struct{}{}})
}

type skip struct{}

// ActionFactory is the Factory of a matching action, other than
// SkipFilter, that a wrapped filter takes: it compiles the action's
// config (with the connection manager's compile context) into the value
// the filter's ActionReceiver gets.
type ActionFactory func(ctx *httpfilter.Context, cfg proto.Message, path string) (any, error)

// ActionReceiver is a wrapped filter's compiled config that takes matched
// actions (Envoy's onMatchCallback): NewFilterWithAction makes the
// stream's filter for the action the matcher selected.
type ActionReceiver interface {
	NewFilterWithAction(cb httpfilter.Callbacks, action any) httpfilter.Filter
}

func compile(ctx *httpfilter.Context, cfg proto.Message, path string) (httpfilter.Config, error) {
	c := cfg.(*matchingv3.ExtensionWithMatcher)
	if err := config.CheckFields(c, path, "extension_config", "xds_matcher", "matcher"); err != nil {
		return nil, err
	}
	if c.GetMatcher() != nil {
		return nil, config.Unsupported(config.Join(path, "matcher"), "the deprecated envoy.config.common.matcher.v3.Matcher", "xds_matcher")
	}
	ep := config.Join(path, "extension_config")
	r, err := extension.Lookup(extension.HTTPFilter, c.GetExtensionConfig().GetTypedConfig(), config.Join(ep, "typed_config"))
	if err != nil {
		return nil, err
	}
	f, ok := r.Ext.Factory.(httpfilter.Factory)
	if !ok || f.Terminal {
		return nil, config.Errorf(ep, "%s cannot be wrapped in a matcher", r.Ext.Name)
	}
	inner, err := f.Compile(ctx, r.Config, config.Join(ep, "typed_config"))
	if err != nil {
		return nil, err
	}
	m, err := matcher.Compile(c.GetXdsMatcher(), config.Join(path, "xds_matcher"), func(tc *xdscorev3.TypedExtensionConfig, p string) (any, error) {
		ar, err := extension.Lookup(extension.MatchingAction, tc.GetTypedConfig(), config.Join(p, "typed_config"))
		if err != nil {
			return nil, err
		}
		if _, ok := ar.Config.(*skipv3.SkipFilter); ok {
			return skip{}, nil
		}
		af, ok := ar.Ext.Factory.(ActionFactory)
		if _, takes := inner.(ActionReceiver); !ok || !takes {
			return nil, config.Errorf(p, "the action of %s's matcher must be SkipFilter (%s takes no other action)", r.Ext.Name, r.Ext.Name)
		}
		return af(ctx, ar.Config, config.Join(p, "typed_config"))
	})
	if err != nil {
		return nil, err
	}
	return httpfilter.ConfigFunc(func(cb httpfilter.Callbacks) httpfilter.Filter {
		if a, ok := m.Match(&matcher.Data{Req: cb.RequestHeaders(), Info: cb.StreamInfo()}); ok {
			if _, isSkip := a.(skip); isSkip {
				return nil // no callbacks: the filter is skipped for this stream
			}
			if rc, ok := inner.(ActionReceiver); ok {
				return rc.NewFilterWithAction(cb, a)
			}
		}
		return inner.NewFilter(cb)
	}), nil
}
