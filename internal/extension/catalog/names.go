package catalog

import "strings"

// This file is kept by hand: what the protos do not tell.
//
// The generated entries give every config message of an extension's
// package, under a name derived from the package. A package often holds
// several top-level messages (the config, its per-route config, helper
// messages), and a few extensions have a name other than their package's
// (the stream access loggers are envoy.access_loggers.stdout and .stderr).
// ConfigType picks the config message of a name by a rule; configTypes
// lists the exceptions.

// configTypes are the names whose config message the rule of ConfigType
// does not find: Envoy's registered names that differ from the package
// (and the message their typed_config holds), and packages whose config
// message is not named after the package.
var configTypes = map[string]string{
	"envoy.access_loggers.stdout":                                  "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
	"envoy.access_loggers.stderr":                                  "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
	"envoy.access_loggers.http_grpc":                               "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
	"envoy.access_loggers.tcp_grpc":                                "envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig",
	"envoy.clusters.dynamic_forward_proxy":                         "envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig",
	"envoy.filters.http.dynamic_forward_proxy":                     "envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig",
	"envoy.filters.http.fault":                                     "envoy.extensions.filters.http.fault.v3.HTTPFault",
	"envoy.filters.http.aws_lambda":                                "envoy.extensions.filters.http.aws_lambda.v3.Config",
	"envoy.filters.http.ext_proc":                                  "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
	"envoy.filters.http.header_to_metadata":                        "envoy.extensions.filters.http.header_to_metadata.v3.Config",
	"envoy.filters.http.jwt_authn":                                 "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
	"envoy.clusters.aggregate":                                     "envoy.extensions.clusters.aggregate.v3.ClusterConfig",
	"envoy.filters.http.grpc_http1_reverse_bridge":                 "envoy.extensions.filters.http.grpc_http1_reverse_bridge.v3.FilterConfig",
	"envoy.filters.http.grpc_stats":                                "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
	"envoy.filters.http.match_delegate":                            "envoy.extensions.common.matching.v3.ExtensionWithMatcher",
	"envoy.filters.http.set_metadata":                              "envoy.extensions.filters.http.set_metadata.v3.Config",
	"envoy.resource_monitors.global_downstream_max_connections":    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
	"envoy.tracers.opentelemetry.resource_detectors.environment":   "envoy.extensions.tracers.opentelemetry.resource_detectors.v3.EnvironmentResourceDetectorConfig",
	"envoy.tracers.opentelemetry.resource_detectors.static_config": "envoy.extensions.tracers.opentelemetry.resource_detectors.v3.StaticConfigResourceDetectorConfig",
	"envoy.tracers.opentelemetry.samplers.always_on":               "envoy.extensions.tracers.opentelemetry.samplers.v3.AlwaysOnSamplerConfig",
	"envoy.transport_sockets.upstream_proxy_protocol":              "envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport",
}

// sided are the names whose config message depends on the side of the
// connection (a downstream or an upstream TLS or QUIC transport): the
// caller, which knows the side, picks it.
var sided = map[string]bool{"envoy.transport_sockets.tls": true, "envoy.transport_sockets.quic": true}

var configByName = func() map[string]string {
	byName := map[string][]string{}
	for i := range entries {
		byName[entries[i].Name] = append(byName[entries[i].Name], entries[i].Type)
	}
	m := make(map[string]string, len(byName)+len(configTypes))
	for name, types := range byName {
		if t := pickConfig(name, types); t != "" && !sided[name] {
			m[name] = t
		}
	}
	for name, t := range configTypes {
		m[name] = t
	}
	return m
}()

// pickConfig is the rule: the only message of the package, else the one
// named after the package (http_connection_manager →
// HttpConnectionManager, rbac → RBAC), else none.
func pickConfig(name string, types []string) string {
	if len(types) == 1 {
		return types[0]
	}
	want := strings.ReplaceAll(name[strings.LastIndexByte(name, '.')+1:], "_", "")
	found := ""
	for _, t := range types {
		if strings.EqualFold(t[strings.LastIndexByte(t, '.')+1:], want) {
			if found != "" {
				return ""
			}
			found = t
		}
	}
	return found
}

// ConfigType returns the type name of the typed_config of the Envoy
// extension called name (envoy.filters.http.buffer →
// envoy.extensions.filters.http.buffer.v3.Buffer), implemented by Legate or
// not; false when no extension has this name, or when its config message
// is not one (envoy.transport_sockets.tls: a downstream or an upstream
// context). Deprecated v2 names are resolved with CanonicalName first.
func ConfigType(name string) (string, bool) {
	t, ok := configByName[name]
	return t, ok
}

// IsName reports whether name is the name of an Envoy extension: one
// derived from a package, or one of configTypes.
func IsName(name string) bool {
	if _, ok := configByName[name]; ok || sided[name] {
		return true
	}
	for i := range entries {
		if entries[i].Name == name {
			return true
		}
	}
	return false
}
