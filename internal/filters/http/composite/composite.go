// Package composite is envoy.filters.http.composite: a filter that
// becomes, for each stream, the filter a matcher's ExecuteFilterAction
// names (compiled at config time through the registry), or passes the
// stream through when nothing matched.
//
// The matcher is the ExtensionWithMatcher around it
// (envoy.filters.http.match_delegate, whose ActionReceiver this filter
// config is) or the filter's own Composite.matcher, which a route's
// CompositePerRoute.matcher replaces. As Legate's match_delegate, the
// matcher is evaluated on the request headers when the stream starts, and
// the delegated filter then sees the whole stream with the composite's
// callbacks (Envoy's FactoryCallbacksWrapper hands it the same decoder and
// encoder callbacks).
//
// Stats (http.<stat_prefix>.composite.): filter_delegation_success, one
// per stream delegated, and filter_delegation_error (filters that could
// not be made: with configs compiled at load time, none).
//
// ExecuteFilterAction.sample_percent draws per stream; an action not
// drawn leaves the stream to pass through. dynamic_config (extension
// config discovery), filter_chain, filter_chain_name and
// Composite.named_filter_chains are not implemented.
package composite

import (
	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	compositev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/composite/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/filters/http/match_delegate"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/matcher"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
)

// Name is the filter's name; ActionName is Envoy's name of the
// ExecuteFilterAction factory.
const (
	Name       = "envoy.filters.http.composite"
	ActionName = "composite-action"
)

func init() {
	httpfilter.Register(Name, nil, &compositev3.Composite{}, &compositev3.CompositePerRoute{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"ExecuteFilterAction with typed_config and sample_percent, under ExtensionWithMatcher or its own matcher "+
			"(CompositePerRoute.matcher per route); dynamic_config, filter_chain, filter_chain_name and named_filter_chains "+
			"are not implemented")
	extension.Register(extension.Extension{Name: ActionName, Category: extension.MatchingAction,
		Config: &compositev3.ExecuteFilterAction{}, Factory: match_delegate.ActionFactory(compileAction)})
}

// action is a compiled ExecuteFilterAction: the filter to delegate to.
type action struct {
	name   string
	filter httpfilter.Config
	sample *runtime.Fractional
}

// compileAction compiles an ExecuteFilterAction, as Envoy's
// ExecuteFilterActionFactory: its typed_config is an HTTP filter compiled
// with the connection manager's context (its stat prefix).
func compileAction(ctx *httpfilter.Context, msg proto.Message, path string) (any, error) {
	a := msg.(*compositev3.ExecuteFilterAction)
	if err := config.CheckFields(a, path, "typed_config", "dynamic_config", "filter_chain", "filter_chain_name", "sample_percent"); err != nil {
		return nil, err
	}
	switch {
	case a.GetDynamicConfig() != nil && a.GetTypedConfig() != nil:
		// Envoy's message.
		return nil, config.Errorf(path, "Error: Only one of `dynamic_config` or `typed_config` can be set.")
	case a.GetDynamicConfig() != nil:
		return nil, config.Unsupported(config.Join(path, "dynamic_config"), "a delegated filter from extension config discovery", "typed_config")
	case a.GetFilterChain() != nil:
		return nil, config.Unsupported(config.Join(path, "filter_chain"), "a delegated chain of filters", "typed_config")
	case a.GetFilterChainName() != "":
		return nil, config.Unsupported(config.Join(path, "filter_chain_name"), "a named delegated chain of filters", "typed_config")
	case a.GetTypedConfig() == nil:
		return nil, config.Errorf(path, "an ExecuteFilterAction needs typed_config")
	}
	tp := config.Join(path, "typed_config")
	r, err := extension.Lookup(extension.HTTPFilter, a.GetTypedConfig().GetTypedConfig(), config.Join(tp, "typed_config"))
	if err != nil {
		return nil, err
	}
	f, ok := r.Ext.Factory.(httpfilter.Factory)
	if !ok || f.Terminal || f.UpstreamOnly || f.Compile == nil {
		return nil, config.Errorf(tp, "%s cannot be delegated to by the composite filter (it must be a non-terminal downstream HTTP filter)", r.Ext.Name)
	}
	fc, err := f.Compile(ctx, r.Config, config.Join(tp, "typed_config"))
	if err != nil {
		return nil, err
	}
	out := &action{name: a.GetTypedConfig().GetName(), filter: fc}
	if sp := a.GetSamplePercent(); sp != nil {
		fr := runtime.NewFractional(ctx.Runtime, sp)
		out.sample = &fr
	}
	return out, nil
}

// compileMatcher compiles a Composite or CompositePerRoute matcher, whose
// actions are ExecuteFilterActions.
func compileMatcher(ctx *httpfilter.Context, m *xdsmatcherv3.Matcher, path string) (*matcher.Matcher, error) {
	if m == nil {
		return nil, nil
	}
	return matcher.Compile(m, path, func(tc *xdscorev3.TypedExtensionConfig, p string) (any, error) {
		ar, err := extension.Lookup(extension.MatchingAction, tc.GetTypedConfig(), config.Join(p, "typed_config"))
		if err != nil {
			return nil, err
		}
		if _, ok := ar.Config.(*compositev3.ExecuteFilterAction); !ok {
			return nil, config.Errorf(p, "the composite filter's matcher takes ExecuteFilterAction actions only")
		}
		return compileAction(ctx, ar.Config, config.Join(p, "typed_config"))
	})
}

// filterConfig is a compiled Composite.
type filterConfig struct {
	matcher          *matcher.Matcher
	success, failure *stats.Counter
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*compositev3.Composite)
	if err := config.CheckFields(c, path, "named_filter_chains", "matcher"); err != nil {
		return nil, err
	}
	if len(c.GetNamedFilterChains()) > 0 {
		return nil, config.Unsupported(config.Join(path, "named_filter_chains"), "named delegated filter chains", "ExecuteFilterAction.typed_config")
	}
	m, err := compileMatcher(ctx, c.GetMatcher(), config.Join(path, "matcher"))
	if err != nil {
		return nil, err
	}
	// As Envoy: <stat_prefix>composite.* under the connection manager's
	// http.<stat_prefix>.
	sc := ctx.Scope("composite.")
	return &filterConfig{matcher: m, success: sc.Counter("filter_delegation_success"), failure: sc.Counter("filter_delegation_error")}, nil
}

// perRoute is a compiled CompositePerRoute: its matcher replaces the
// filter's.
type perRoute struct{ matcher *matcher.Matcher }

func compilePerRoute(ctx *httpfilter.Context, msg proto.Message, path string) (any, error) {
	c := msg.(*compositev3.CompositePerRoute)
	if err := config.CheckFields(c, path, "matcher"); err != nil {
		return nil, err
	}
	m, err := compileMatcher(ctx, c.GetMatcher(), config.Join(path, "matcher"))
	if err != nil {
		return nil, err
	}
	return &perRoute{matcher: m}, nil
}

// NewFilter evaluates the filter's own matcher (or the route's
// CompositePerRoute one); with none, or no match, the stream passes
// through.
func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	m := c.matcher
	if pr, ok := cb.PerRouteConfig().(*perRoute); ok && pr.matcher != nil {
		m = pr.matcher
	}
	if m == nil {
		return nil
	}
	a, ok := m.Match(&matcher.Data{Req: cb.RequestHeaders(), Info: cb.StreamInfo()})
	if !ok {
		return nil
	}
	return c.NewFilterWithAction(cb, a)
}

// NewFilterWithAction delegates the stream to the action's filter (Envoy's
// onMatchCallback); a filter with no callbacks passes it through.
func (c *filterConfig) NewFilterWithAction(cb httpfilter.Callbacks, a any) httpfilter.Filter {
	act, ok := a.(*action)
	if !ok {
		return nil
	}
	if act.sample != nil && !act.sample.Roll() {
		return nil // not drawn: as Envoy, the action is skipped
	}
	c.success.Inc()
	return act.filter.NewFilter(cb)
}
