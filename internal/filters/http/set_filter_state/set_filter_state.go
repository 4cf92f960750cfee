// Package set_filter_state is Envoy's set-filter-state filter
// (envoy.filters.http.set_filter_state): when the request headers arrive it
// evaluates each on_request_headers value — a substitution format string
// over the request — and stores the result in the stream's filter state
// under object_key, as Envoy's generic string object (factory envoy.string),
// for later filters, the router (%FILTER_STATE(key:PLAIN)% in
// request_headers_to_add), filter-state matchers and access logs.
//
// It follows source/extensions/filters/common/set_filter_state/filter_config.cc
// and source/extensions/filters/http/set_filter_state/config.cc:
//   - values apply in order, so a later value with the same key wins;
//   - the factory is factory_key, or object_key when it is empty; Legate
//     implements envoy.string only, so Envoy's well-known keys
//     (envoy.tcp_proxy.cluster, …) are refused as not implemented, and any
//     other key without factory_key is refused as Envoy does ("does not
//     have an object factory");
//   - skip_if_empty skips a value whose format renders as the empty string
//     (a text format renders a missing operator as "-" unless
//     omit_empty_values is set, as in Envoy);
//   - read_only is deprecated and has no effect (Envoy no longer checks
//     read-only filter state: a later write replaces the object);
//   - shared_with_upstream (ONCE or TRANSITIVE) shares the object with the
//     upstream connection: an internal_upstream transport socket hands it
//     to the internal listener the connection goes to (whose connection's
//     filter state then holds it), and connections are pooled by its
//     value, as Envoy hashes it into the pool key; the two modes are the
//     same here (a passed object is not shared further), and
//     %UPSTREAM_FILTER_STATE% is not implemented;
//   - the typed_per_filter_config form (the same Config) applies after the
//     filter's own values, least specific first (route configuration,
//     virtual host, route, weighted cluster), so the most specific wins;
//     only the filter's own clear_route_cache is honoured, as in Envoy.
package set_filter_state

import (
	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/set_filter_state/v3"
	setfilterstatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/set_filter_state/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/format"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func init() {
	httpfilter.Register("envoy.filters.http.set_filter_state", nil, &setfilterstatev3.Config{}, &setfilterstatev3.Config{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"values are Envoy's generic string objects (factory_key envoy.string); the well-known object factories (envoy.tcp_proxy.cluster, envoy.network.upstream_server_name, …) are not implemented")
}

// stringFactory is Envoy's generic string object factory.
const stringFactory = "envoy.string"

// wellKnown are Envoy's filter-state object factories other than
// envoy.string (docs/root/configuration/advanced/well_known_filter_state.rst):
// a key Envoy accepts but Legate does not implement.
var wellKnown = map[string]bool{
	"envoy.network.upstream_server_name":                  true,
	"envoy.network.application_protocols":                 true,
	"envoy.network.upstream_subject_alt_names":            true,
	"envoy.network.ip":                                    true,
	"envoy.tcp_proxy.cluster":                             true,
	"envoy.udp_proxy.cluster":                             true,
	"envoy.network.transport_socket.original_dst_address": true,
	"envoy.filters.listener.original_dst.local_ip":        true,
	"envoy.filters.listener.original_dst.remote_ip":       true,
	"envoy.upstream.dynamic_host":                         true,
	"envoy.upstream.dynamic_port":                         true,
	"envoy.tcp_proxy.disable_tunneling":                   true,
	"envoy.tcp_proxy.per_connection_idle_timeout_ms":      true,
	"envoy.hash_key":                                      true,
	"envoy.ratelimit.hits_addend":                         true,
}

// value is one compiled FilterStateValue.
type value struct {
	key         string
	format      format.Entry
	skipIfEmpty bool
	// shared is shared_with_upstream other than NONE.
	shared bool
}

// values is a compiled on_request_headers list (also the per-route config).
type values []value

func compile(_ *httpfilter.Context, cfg proto.Message, path string) (httpfilter.Config, error) {
	c := cfg.(*setfilterstatev3.Config)
	if err := config.CheckFields(c, path, "on_request_headers", "clear_route_cache"); err != nil {
		return nil, err
	}
	vs, err := compileValues(c.GetOnRequestHeaders(), path)
	if err != nil {
		return nil, err
	}
	fc := &filterConfig{values: vs, clearRouteCache: c.GetClearRouteCache()}
	return httpfilter.ConfigFunc(func(cb httpfilter.Callbacks) httpfilter.Filter { return &filter{cfg: fc, cb: cb} }), nil
}

// compilePerRoute compiles the per-route form; its clear_route_cache has no
// effect (Envoy reads only the filter's own).
func compilePerRoute(_ *httpfilter.Context, cfg proto.Message, path string) (any, error) {
	c := cfg.(*setfilterstatev3.Config)
	if err := config.CheckFields(c, path, "on_request_headers", "clear_route_cache"); err != nil {
		return nil, err
	}
	return compileValues(c.GetOnRequestHeaders(), path)
}

func compileValues(list []*commonv3.FilterStateValue, path string) (values, error) {
	var out values
	for i, v := range list {
		p := config.Index(config.Join(path, "on_request_headers"), i)
		if err := config.CheckFields(v, p, "object_key", "factory_key", "format_string", "read_only",
			"shared_with_upstream", "skip_if_empty"); err != nil {
			return nil, err
		}
		key := v.GetObjectKey()
		factory, fpath := v.GetFactoryKey(), config.Join(p, "factory_key")
		if factory == "" {
			factory, fpath = key, config.Join(p, "object_key")
		}
		switch {
		case factory == stringFactory:
		case wellKnown[factory]:
			return nil, config.Errorf(fpath, "filter state object factory %q is not implemented by legate (supported: %s, Envoy's generic string object)", factory, stringFactory)
		default:
			return nil, config.Errorf(fpath, "'%s' does not have an object factory (for a string value under a custom key, set factory_key: %s)", factory, stringFactory)
		}
		fs := v.GetFormatString()
		if fs == nil {
			return nil, config.Errorf(config.Join(p, "format_string"), "a filter state value needs a format_string")
		}
		f, err := format.FromSubstitutionFormatString(fs, config.Join(p, "format_string"))
		if err != nil {
			return nil, err
		}
		out = append(out, value{key: key, format: f, skipIfEmpty: v.GetSkipIfEmpty(),
			shared: v.GetSharedWithUpstream() != commonv3.FilterStateValue_NONE})
	}
	return out, nil
}

// apply evaluates the values against the stream and stores them.
func (vs values) apply(info *streaminfo.Info) {
	for _, v := range vs {
		s := string(v.format.Append(nil, info))
		if s == "" && v.skipIfEmpty {
			continue
		}
		info.SetFilterState(v.key, streaminfo.StringObject(s))
		// A later write replaces the object with its own sharing.
		info.ShareWithUpstream(v.key, v.shared)
	}
}

type filterConfig struct {
	values          values
	clearRouteCache bool
}

type filter struct {
	cfg *filterConfig
	cb  httpfilter.Callbacks
}

// DecodeHeaders applies the filter's values, then the per-route ones from
// the least specific to the most specific, then clears the route cache if
// asked to.
func (f *filter) DecodeHeaders(*headers.Request, bool) httpfilter.Status {
	info := f.cb.StreamInfo()
	f.cfg.values.apply(info)
	prs := f.cb.AllPerRouteConfigs() // most specific first
	for i := len(prs) - 1; i >= 0; i-- {
		if vs, ok := prs[i].(values); ok {
			vs.apply(info)
		}
	}
	if f.cfg.clearRouteCache {
		f.cb.ClearRouteCache()
	}
	return httpfilter.Continue
}
