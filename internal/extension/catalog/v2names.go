package catalog

// This file is kept by hand: the deprecated names are in no proto.

// Categories of extension points, as Envoy names them, that deprecated
// names belong to.
const (
	HTTPFilters      = "envoy.filters.http"
	NetworkFilters   = "envoy.filters.network"
	ListenerFilters  = "envoy.filters.listener"
	AccessLoggers    = "envoy.access_loggers"
	TransportSockets = "envoy.transport_sockets"
	StatsSinks       = "envoy.stats_sinks"
	Tracers          = "envoy.tracers"
)

// V2Name is a deprecated extension name of Envoy's v2 era (envoy.buffer)
// and the extension it stands for.
type V2Name struct {
	// Name is the deprecated name.
	Name string
	// Category is the extension point the name is used in: one v2 name
	// may stand for two extensions (envoy.ext_authz is the HTTP and the
	// network filter).
	Category string
	// V3 is the extension's name (envoy.filters.http.buffer).
	V3 string
}

// v2Names is every deprecated name Legate accepts, with a warning. They are
// the names Envoy 1.14 to 1.17 registered its factories under besides the
// canonical ones — the REGISTER_FACTORY(…){"<deprecated name>"} lines of
// envoyproxy/envoy source/extensions/**/config.cc, reported by
// ExtensionNameUtil::checkDeprecatedExtensionName
// (source/extensions/common/utility.h) and dropped with the v2 API — and
// the v1/v2 well-known names go-control-plane exported in pkg/util
// (wellknown.go) before v3. One newer extension has one too: the graphite
// statsd sink registers as envoy.graphite_statsd besides its own name.
var v2Names = [...]V2Name{
	// HTTP filters
	{"envoy.buffer", HTTPFilters, "envoy.filters.http.buffer"},
	{"envoy.cors", HTTPFilters, "envoy.filters.http.cors"},
	{"envoy.csrf", HTTPFilters, "envoy.filters.http.csrf"},
	{"envoy.ext_authz", HTTPFilters, "envoy.filters.http.ext_authz"},
	{"envoy.fault", HTTPFilters, "envoy.filters.http.fault"},
	{"envoy.grpc_http1_bridge", HTTPFilters, "envoy.filters.http.grpc_http1_bridge"},
	{"envoy.grpc_json_transcoder", HTTPFilters, "envoy.filters.http.grpc_json_transcoder"},
	{"envoy.grpc_web", HTTPFilters, "envoy.filters.http.grpc_web"},
	{"envoy.gzip", HTTPFilters, "envoy.filters.http.gzip"},
	{"envoy.health_check", HTTPFilters, "envoy.filters.http.health_check"},
	{"envoy.http_dynamo_filter", HTTPFilters, "envoy.filters.http.dynamo"},
	{"envoy.ip_tagging", HTTPFilters, "envoy.filters.http.ip_tagging"},
	{"envoy.lua", HTTPFilters, "envoy.filters.http.lua"},
	{"envoy.rate_limit", HTTPFilters, "envoy.filters.http.ratelimit"},
	{"envoy.router", HTTPFilters, "envoy.filters.http.router"},
	{"envoy.squash", HTTPFilters, "envoy.filters.http.squash"},
	// network filters
	{"envoy.client_ssl_auth", NetworkFilters, "envoy.filters.network.client_ssl_auth"},
	{"envoy.echo", NetworkFilters, "envoy.filters.network.echo"},
	{"envoy.ext_authz", NetworkFilters, "envoy.filters.network.ext_authz"},
	{"envoy.http_connection_manager", NetworkFilters, "envoy.filters.network.http_connection_manager"},
	{"envoy.mongo_proxy", NetworkFilters, "envoy.filters.network.mongo_proxy"},
	{"envoy.ratelimit", NetworkFilters, "envoy.filters.network.ratelimit"},
	{"envoy.redis_proxy", NetworkFilters, "envoy.filters.network.redis_proxy"},
	{"envoy.tcp_proxy", NetworkFilters, "envoy.filters.network.tcp_proxy"},
	// listener filters
	{"envoy.listener.http_inspector", ListenerFilters, "envoy.filters.listener.http_inspector"},
	{"envoy.listener.original_dst", ListenerFilters, "envoy.filters.listener.original_dst"},
	{"envoy.listener.proxy_protocol", ListenerFilters, "envoy.filters.listener.proxy_protocol"},
	{"envoy.listener.tls_inspector", ListenerFilters, "envoy.filters.listener.tls_inspector"},
	// access loggers
	{"envoy.file_access_log", AccessLoggers, "envoy.access_loggers.file"},
	{"envoy.http_grpc_access_log", AccessLoggers, "envoy.access_loggers.http_grpc"},
	{"envoy.tcp_grpc_access_log", AccessLoggers, "envoy.access_loggers.tcp_grpc"},
	{"envoy.wasm_access_log", AccessLoggers, "envoy.access_loggers.wasm"},
	// transport sockets
	{"raw_buffer", TransportSockets, "envoy.transport_sockets.raw_buffer"},
	{"tls", TransportSockets, "envoy.transport_sockets.tls"},
	// stats sinks
	{"envoy.dog_statsd", StatsSinks, "envoy.stat_sinks.dog_statsd"},
	{"envoy.graphite_statsd", StatsSinks, "envoy.stat_sinks.graphite_statsd"},
	{"envoy.metrics_service", StatsSinks, "envoy.stat_sinks.metrics_service"},
	{"envoy.statsd", StatsSinks, "envoy.stat_sinks.statsd"},
	// tracers
	{"envoy.dynamic.ot", Tracers, "envoy.tracers.dynamic_ot"},
	{"envoy.lightstep", Tracers, "envoy.tracers.lightstep"},
	{"envoy.zipkin", Tracers, "envoy.tracers.zipkin"},
}

// removed are the extensions with a v2 name that Envoy has since removed
// (squash, in 1.24), so the catalog, made from today's protos, lacks them:
// `legate config upgrade` still translates them (it is a converter), to
// the name and config type Envoy's last release with them used.
var removed = map[string]string{
	"envoy.filters.http.squash": "envoy.extensions.filters.http.squash.v3.Squash",
}

func init() {
	for name, typ := range removed {
		if _, ok := configByName[name]; !ok {
			configByName[name] = typ
		}
	}
}

type catName struct{ cat, name string }

var v3ByV2 = func() map[catName]string {
	m := make(map[catName]string, len(v2Names))
	for _, v := range v2Names {
		m[catName{v.Category, v.Name}] = v.V3
	}
	return m
}()

// V2Names returns every deprecated v2 name, by category.
func V2Names() []V2Name { return v2Names[:] }

// CanonicalName returns the name of the extension a deprecated v2 name
// stands for in category (envoy.buffer in envoy.filters.http →
// envoy.filters.http.buffer), and false for any other name.
func CanonicalName(category, name string) (string, bool) {
	v3, ok := v3ByV2[catName{category, name}]
	return v3, ok
}
