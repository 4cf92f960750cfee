package listener

import (
	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/matcher"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// compileChainMatcher compiles Listener.filter_chain_matcher: a unified
// matcher over the connection's network inputs whose actions name a filter
// chain (a google.protobuf.StringValue), as Envoy's FilterChainManager with
// a matcher. The chains then need unique names and no filter_chain_match
// (Envoy refuses both otherwise); no match means the default filter chain.
func compileChainMatcher(pl *listenerv3.Listener, path string, cs *chainSet) error {
	byName := map[string]*filterChain{}
	for i, c := range cs.chains {
		p := config.Index(config.Join(path, "filter_chains"), i)
		fc := pl.GetFilterChains()[i]
		if fc.GetName() == "" {
			return config.Errorf(config.Join(p, "name"), "with filter_chain_matcher every filter chain needs a name")
		}
		if _, dup := byName[fc.GetName()]; dup {
			return config.Errorf(config.Join(p, "name"), "filter chain name %q is not unique", fc.GetName())
		}
		if fc.GetFilterChainMatch() != nil {
			return config.Errorf(config.Join(p, "filter_chain_match"), "filter_chain_match cannot be used with filter_chain_matcher")
		}
		byName[fc.GetName()] = c
	}
	m, err := matcher.Compile(pl.GetFilterChainMatcher(), config.Join(path, "filter_chain_matcher"), func(tc *xdscorev3.TypedExtensionConfig, ap string) (any, error) {
		var name wrapperspb.StringValue
		if err := tc.GetTypedConfig().UnmarshalTo(&name); err != nil {
			return nil, config.Errorf(config.Join(ap, "typed_config"), "a filter chain matcher's action is a google.protobuf.StringValue naming a filter chain: %v", err)
		}
		if _, ok := byName[name.GetValue()]; !ok {
			return nil, config.Errorf(config.Join(ap, "typed_config"), "filter chain %q is not defined", name.GetValue())
		}
		// The name, not the chain: a filter-chain-only update keeps the
		// running chains that did not change, and the names find them.
		return name.GetValue(), nil
	})
	if err != nil {
		return err
	}
	cs.matcher, cs.byName = m, byName
	return nil
}

// matchChain selects a chain with the listener's filter_chain_matcher.
func (cs *chainSet) matchChain(f connFacts) *filterChain {
	direct := f.directSrc
	if !direct.IsValid() {
		direct = f.src
	}
	info := &streaminfo.Info{
		DownstreamLocal: f.dst, DownstreamRemote: f.src, DownstreamDirectRemote: direct,
		RequestedServerName: f.sni, TransportProtocol: f.transport, ApplicationProtocols: f.alpn,
	}
	if a, ok := cs.matcher.Match(&matcher.Data{Info: info}); ok {
		if name, _ := a.(string); cs.byName[name] != nil {
			return cs.byName[name]
		}
	}
	return cs.def
}
