package catalog

import "testing"

// TestV2NamesResolve: every deprecated v2 name stands for an Envoy
// extension the catalog knows, whose config type it finds (but the TLS
// socket's, which depends on the side), once per category.
func TestV2NamesResolve(t *testing.T) {
	seen := map[catName]bool{}
	for _, v := range V2Names() {
		k := catName{v.Category, v.Name}
		if seen[k] {
			t.Errorf("%s in %s is listed twice", v.Name, v.Category)
		}
		seen[k] = true
		if got, ok := CanonicalName(v.Category, v.Name); !ok || got != v.V3 {
			t.Errorf("CanonicalName(%s, %s) = %q, %v; want %s", v.Category, v.Name, got, ok, v.V3)
		}
		if !IsName(v.V3) {
			t.Errorf("%s → %s: no Envoy extension has that name", v.Name, v.V3)
			continue
		}
		typ, ok := ConfigType(v.V3)
		if sided[v.V3] {
			if ok {
				t.Errorf("ConfigType(%s) = %s, want none (the side picks it)", v.V3, typ)
			}
			continue
		}
		if !ok {
			t.Errorf("%s → %s: ConfigType finds no config type", v.Name, v.V3)
			continue
		}
		if _, ok := Find(typ); !ok && removed[v.V3] == "" {
			t.Errorf("%s → %s → %s: not a catalog type", v.Name, v.V3, typ)
		}
	}
	if _, ok := CanonicalName(HTTPFilters, "envoy.filters.http.buffer"); ok {
		t.Error("a v3 name resolved as a deprecated one")
	}
	if _, ok := CanonicalName(NetworkFilters, "envoy.router"); ok {
		t.Error("an HTTP filter's v2 name resolved as a network filter's")
	}
}

// TestConfigType: the rule and the hand-kept exceptions give the config
// message of an extension name — here every name the loader upgraded
// `config:` blocks and bare names of before the catalog (the same types),
// and names the rule cannot tell.
func TestConfigType(t *testing.T) {
	for name, want := range map[string]string{
		"envoy.filters.network.http_connection_manager": "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
		"envoy.filters.network.tcp_proxy":               "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
		"envoy.filters.network.echo":                    "envoy.extensions.filters.network.echo.v3.Echo",
		"envoy.filters.network.rbac":                    "envoy.extensions.filters.network.rbac.v3.RBAC",
		"envoy.filters.network.ext_authz":               "envoy.extensions.filters.network.ext_authz.v3.ExtAuthz",
		"envoy.filters.network.ratelimit":               "envoy.extensions.filters.network.ratelimit.v3.RateLimit",
		"envoy.filters.network.redis_proxy":             "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy",
		"envoy.filters.network.mongo_proxy":             "envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy",
		"envoy.filters.network.sni_cluster":             "envoy.extensions.filters.network.sni_cluster.v3.SniCluster",
		"envoy.filters.http.router":                     "envoy.extensions.filters.http.router.v3.Router",
		"envoy.filters.http.cors":                       "envoy.extensions.filters.http.cors.v3.Cors",
		"envoy.filters.http.buffer":                     "envoy.extensions.filters.http.buffer.v3.Buffer",
		"envoy.filters.http.fault":                      "envoy.extensions.filters.http.fault.v3.HTTPFault",
		"envoy.filters.http.gzip":                       "envoy.extensions.filters.http.gzip.v3.Gzip",
		"envoy.filters.http.health_check":               "envoy.extensions.filters.http.health_check.v3.HealthCheck",
		"envoy.filters.http.lua":                        "envoy.extensions.filters.http.lua.v3.Lua",
		"envoy.filters.http.ext_authz":                  "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
		"envoy.filters.http.ratelimit":                  "envoy.extensions.filters.http.ratelimit.v3.RateLimit",
		"envoy.filters.http.grpc_web":                   "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb",
		"envoy.filters.http.grpc_http1_bridge":          "envoy.extensions.filters.http.grpc_http1_bridge.v3.Config",
		"envoy.filters.http.grpc_json_transcoder":       "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
		"envoy.filters.http.jwt_authn":                  "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
		"envoy.filters.http.rbac":                       "envoy.extensions.filters.http.rbac.v3.RBAC",
		"envoy.filters.http.local_ratelimit":            "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
		"envoy.filters.http.compressor":                 "envoy.extensions.filters.http.compressor.v3.Compressor",
		"envoy.access_loggers.file":                     "envoy.extensions.access_loggers.file.v3.FileAccessLog",
		"envoy.access_loggers.stdout":                   "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
		"envoy.access_loggers.stderr":                   "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
		"envoy.filters.listener.tls_inspector":          "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
		"envoy.filters.listener.http_inspector":         "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
		"envoy.filters.listener.original_dst":           "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
		"envoy.filters.listener.proxy_protocol":         "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol",
		"envoy.transport_sockets.raw_buffer":            "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
		"envoy.stat_sinks.statsd":                       "envoy.config.metrics.v3.StatsdSink",
		"envoy.tracers.zipkin":                          "envoy.config.trace.v3.ZipkinConfig",
	} {
		if got, ok := ConfigType(name); !ok || got != want {
			t.Errorf("ConfigType(%s) = %q, %v; want %s", name, got, ok, want)
		}
	}
	for _, name := range []string{"envoy.transport_sockets.tls", "envoy.filters.http.nonexistent", "envoy.buffer"} {
		if got, ok := ConfigType(name); ok {
			t.Errorf("ConfigType(%s) = %s, want none", name, got)
		}
	}
	for name, typ := range configTypes {
		if _, ok := Find(typ); !ok {
			t.Errorf("configTypes[%s] = %s: not a catalog type", name, typ)
		}
	}
}

// Names found missing from the list, and the config type an upgrade of
// their v2 `config:` uses.
func TestV2NamesAdded(t *testing.T) {
	for _, tc := range []struct{ category, v2, v3, typ string }{
		{HTTPFilters, "envoy.squash", "envoy.filters.http.squash", "envoy.extensions.filters.http.squash.v3.Squash"},
		{StatsSinks, "envoy.graphite_statsd", "envoy.stat_sinks.graphite_statsd", "envoy.extensions.stat_sinks.graphite_statsd.v3.GraphiteStatsdSink"},
		{HTTPFilters, "envoy.buffer", "envoy.filters.http.buffer", "envoy.extensions.filters.http.buffer.v3.Buffer"},
	} {
		got, ok := CanonicalName(tc.category, tc.v2)
		if !ok || got != tc.v3 {
			t.Errorf("CanonicalName(%s, %s) = %q, %v; want %s", tc.category, tc.v2, got, ok, tc.v3)
			continue
		}
		if typ, ok := ConfigType(got); !ok || typ != tc.typ {
			t.Errorf("ConfigType(%s) = %q, %v; want %s", got, typ, ok, tc.typ)
		}
	}
}
