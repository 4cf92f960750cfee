package config

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/trace/v2"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/oauth2/v3"
	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// TestPreviousTypeUpgrade: a v2-era @type (here the fixed heap monitor's
// v2alpha name, still in Envoy's own configs/) becomes its v3 type, read
// from the v3 message's versioning annotation, with a warning that shows
// the v3 form.
func TestPreviousTypeUpgrade(t *testing.T) {
	b := &bootstrapv3.Bootstrap{}
	warns, err := Decode([]byte(`
overload_manager:
  resource_monitors:
  - name: envoy.resource_monitors.fixed_heap
    typed_config:
      "@type": type.googleapis.com/envoy.config.resource_monitor.fixed_heap.v2alpha.FixedHeapConfig
      max_heap_size_bytes: 1073741824
`), b, "")
	if err != nil {
		t.Fatal(err)
	}
	got := b.GetOverloadManager().GetResourceMonitors()[0].GetTypedConfig().GetTypeUrl()
	if got != "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig" {
		t.Errorf("@type %s", got)
	}
	if len(warns) == 0 || !strings.Contains(warns[0].Message, "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig") {
		t.Errorf("warnings %v", warns)
	}
}

// TestV2NameUpgrades: a deprecated v2 name is renamed to its v3 name with
// a warning, by the category of the place it is used in (envoy.ext_authz is
// the HTTP filter in http_filters, the network filter in filters), and a
// `config:` block or a bare name gets the @type of the extension's config
// message from the catalog — for any Envoy extension, not only those with
// a v2 name.
func TestV2NameUpgrades(t *testing.T) {
	for _, tc := range []struct {
		name     string
		msg      proto.Message
		yaml     string
		wantName string // the v3 name the config carries after the upgrade
		wantType string
		renamed  bool   // a "deprecated v2 name" warning
		wantErr  string // instead
	}{
		{name: "HTTP filter", msg: &hcmv3.HttpConnectionManager{},
			yaml:     "http_filters: [{name: envoy.ext_authz, config: {failure_mode_allow: true}}]",
			wantName: "envoy.filters.http.ext_authz", wantType: "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz", renamed: true},
		{name: "network filter of the same v2 name", msg: &listenerv3.Listener{},
			yaml:     "filter_chains: [{filters: [{name: envoy.ext_authz, config: {stat_prefix: x}}]}]",
			wantName: "envoy.filters.network.ext_authz", wantType: "envoy.extensions.filters.network.ext_authz.v3.ExtAuthz", renamed: true},
		{name: "bare listener filter", msg: &listenerv3.Listener{},
			yaml:     "listener_filters: [{name: envoy.listener.tls_inspector}]",
			wantName: "envoy.filters.listener.tls_inspector", wantType: "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector", renamed: true},
		{name: "access logger", msg: &accesslogv3.AccessLog{},
			yaml:     "{name: envoy.file_access_log, config: {path: /dev/stdout}}",
			wantName: "envoy.access_loggers.file", wantType: "envoy.extensions.access_loggers.file.v3.FileAccessLog", renamed: true},
		{name: "upstream tls", msg: &clusterv3.Cluster{},
			yaml:     "{name: c, transport_socket: {name: tls, config: {sni: example.com}}}",
			wantName: "envoy.transport_sockets.tls", wantType: "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", renamed: true},
		{name: "downstream tls", msg: &listenerv3.Listener{},
			yaml:     "filter_chains: [{transport_socket: {name: tls}}]",
			wantName: "envoy.transport_sockets.tls", wantType: "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", renamed: true},
		{name: "raw_buffer", msg: &clusterv3.Cluster{},
			yaml:     "{name: c, transport_socket: {name: raw_buffer}}",
			wantName: "envoy.transport_sockets.raw_buffer", wantType: "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer", renamed: true},
		{name: "v3 name with a v2 config block", msg: &hcmv3.HttpConnectionManager{},
			yaml:     "http_filters: [{name: envoy.filters.http.csrf, config: {filter_enabled: {default_value: {numerator: 1}}}}]",
			wantName: "envoy.filters.http.csrf", wantType: "envoy.extensions.filters.http.csrf.v3.CsrfPolicy"},
		{name: "stats sink", msg: &bootstrapv3.Bootstrap{},
			yaml:     "stats_sinks: [{name: envoy.statsd, config: {address: {socket_address: {address: 127.0.0.1, port_value: 8125}}}}]",
			wantName: "envoy.stat_sinks.statsd", wantType: "envoy.config.metrics.v3.StatsdSink", renamed: true},
		{name: "tracer", msg: &bootstrapv3.Bootstrap{},
			yaml:     "tracing: {http: {name: envoy.zipkin, config: {collector_cluster: z, collector_endpoint: /api/v2/spans}}}",
			wantName: "envoy.tracers.zipkin", wantType: "envoy.config.trace.v3.ZipkinConfig", renamed: true},
		{name: "a tracer Legate does not run", msg: &bootstrapv3.Bootstrap{},
			yaml:     "tracing: {http: {name: envoy.lightstep, config: {collector_cluster: l, access_token_file: /t}}}",
			wantName: "envoy.tracers.lightstep", wantType: "envoy.config.trace.v3.LightstepConfig", renamed: true},
		{name: "network filter's v2 name in http_filters", msg: &hcmv3.HttpConnectionManager{},
			yaml:    "http_filters: [{name: envoy.ratelimit, config: {domain: x}}]",
			wantErr: "v2 `config:` for unknown extension \"envoy.ratelimit\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			warns, err := Decode([]byte(tc.yaml), tc.msg, "")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			renamed := 0
			for _, w := range warns {
				if strings.Contains(w.Message, "deprecated v2 name") {
					renamed++
				}
			}
			if tc.renamed != (renamed == 1) || renamed > 1 {
				t.Errorf("%d rename warnings, want renamed=%v: %v", renamed, tc.renamed, warns)
			}
			s := compactJSON(t, tc.msg)
			if !strings.Contains(s, `"name":"`+tc.wantName+`"`) {
				t.Errorf("name is not %s: %s", tc.wantName, s)
			}
			if !strings.Contains(s, "type.googleapis.com/"+tc.wantType+`"`) {
				t.Errorf("@type is not %s: %s", tc.wantType, s)
			}
		})
	}
}

// TestCanonicalName: the names route tables key typed_per_filter_config by
// resolve as HTTP filter names (envoy.ext_authz is the HTTP filter's), and
// names deprecated for one extension resolve wherever they are used.
func TestCanonicalName(t *testing.T) {
	for name, want := range map[string]string{
		"envoy.buffer":                  "envoy.filters.http.buffer",
		"envoy.ext_authz":               "envoy.filters.http.ext_authz",
		"envoy.rate_limit":              "envoy.filters.http.ratelimit",
		"envoy.http_connection_manager": "envoy.filters.network.http_connection_manager",
		"envoy.listener.tls_inspector":  "envoy.filters.listener.tls_inspector",
	} {
		if got, ok := CanonicalName(name); !ok || got != want {
			t.Errorf("CanonicalName(%s) = %q, %v; want %s", name, got, ok, want)
		}
	}
	if got, ok := CanonicalName("envoy.filters.http.buffer"); ok {
		t.Errorf("CanonicalName of a v3 name = %s", got)
	}
}

// TestTypeURLSuccessors: old @types the versioning annotations miss find
// their v3 message by Envoy's package moves (envoy.config.filter.* to
// envoy.extensions.filters.*, v3alpha to v3), through an intermediate
// previous type where the v3 message names one; only linked v3 types are
// answers, and the warning is given exactly when the URL changes.
func TestTypeURLSuccessors(t *testing.T) {
	for _, tc := range []struct{ from, want string }{
		{"envoy.config.filter.http.ext_authz.v2.ExtAuthz", "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"},
		{"envoy.config.filter.http.ext_authz.v2.ExtAuthzPerRoute", "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"},
		{"envoy.config.filter.http.ext_authz.v3.ExtAuthz", "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"},
		{"envoy.config.filter.network.ext_authz.v2.ExtAuthz", "envoy.extensions.filters.network.ext_authz.v3.ExtAuthz"},
		{"envoy.config.filter.http.rate_limit.v2.RateLimit", "envoy.extensions.filters.http.ratelimit.v3.RateLimit"},
		{"envoy.extensions.filters.http.oauth2.v3alpha.OAuth2", "envoy.extensions.filters.http.oauth2.v3.OAuth2"},
		{"envoy.config.filter.http.router.v2.Router", "envoy.extensions.filters.http.router.v3.Router"},
		// No such v3 message: left for the registry to report.
		{"envoy.config.filter.http.nonexistent.v2.Foo", "envoy.config.filter.http.nonexistent.v2.Foo"},
		{"envoy.extensions.filters.http.oauth2.v3alpha.Missing", "envoy.extensions.filters.http.oauth2.v3alpha.Missing"},
		// Current v3 types and other APIs' versions are left alone.
		{"envoy.extensions.filters.http.ext_authz.v3.ExtAuthz", "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"},
		{"example.filter.v2.ExtAuthz", "example.filter.v2.ExtAuthz"},
	} {
		warned := ""
		got := upgradeTypeURL(typePrefix+tc.from, func(u string) { warned = u })
		if got != typePrefix+tc.want {
			t.Errorf("%s: upgraded to %s, want %s", tc.from, got, tc.want)
		}
		if changed := tc.from != tc.want; changed != (warned == got) || !changed && warned != "" {
			t.Errorf("%s: warned %q (changed %v)", tc.from, warned, changed)
		}
	}
	// A linked message keeps its name, even in an old package.
	if got, ok := successorByPackage("envoy.config.trace.v2.ZipkinConfig"); ok {
		t.Errorf("linked v2 ZipkinConfig moved to %s", got)
	}
}

// TestV2FormUpgrades: v2-era fields in v3 messages (FilterChain and
// Cluster tls_context, verify_subject_alt_name, V2/AUTO API versions)
// become their v3 form with one warning each; v3 forms get none.
func TestV2FormUpgrades(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  proto.Message
		yaml string
		want []string // substrings of the upgraded message's JSON
		warn string   // substring of the one warning, "" for none
	}{
		{name: "filter chain tls_context", msg: &listenerv3.Listener{},
			yaml: "filter_chains: [{tls_context: {require_client_certificate: true, common_tls_context: {alpn_protocols: [h2]}}}]",
			want: []string{`"transportSocket":{"name":"envoy.transport_sockets.tls","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext","commonTlsContext":{"alpnProtocols":["h2"]},"requireClientCertificate":true}}`},
			warn: "v2 `tls_context:` upgraded to `transport_socket: {name: envoy.transport_sockets.tls, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"},
		{name: "cluster tls_context", msg: &clusterv3.Cluster{},
			yaml: "{name: c, tls_context: {sni: example.com}}",
			want: []string{`"transportSocket":{"name":"envoy.transport_sockets.tls","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext","sni":"example.com"}}`},
			warn: "UpstreamTlsContext"},
		{name: "verify_subject_alt_name", msg: &tlsv3.CertificateValidationContext{},
			yaml: "{verify_subject_alt_name: [a.example.com, 'spiffe://x/y']}",
			want: []string{`"matchSubjectAltNames":[{"exact":"a.example.com"},{"exact":"spiffe://x/y"}]`},
			warn: "v2 `verify_subject_alt_name: [name, ...]` upgraded to `match_subject_alt_names: [{exact: name}, ...]`"},
		{name: "verify_subject_alt_name nested in a cluster's TLS", msg: &clusterv3.Cluster{},
			yaml: "{name: c, tls_context: {common_tls_context: {validation_context: {verify_subject_alt_name: [x]}}}}",
			want: []string{`"validationContext":{"matchSubjectAltNames":[{"exact":"x"}]}`},
			warn: ""}, // two warnings, checked by count below
		{name: "transport V2 on a config source", msg: &corev3.ApiConfigSource{},
			yaml: "{api_type: GRPC, transport_api_version: V2, grpc_services: [{envoy_grpc: {cluster_name: xds}}]}",
			want: []string{`"transportApiVersion":"V3"`},
			warn: "transport_api_version V2 upgraded to V3 (Envoy supports only the v3 xDS API): write transport_api_version: V3"},
		{name: "resource AUTO on a config source", msg: &corev3.ConfigSource{},
			yaml: "{ads: {}, resourceApiVersion: auto}",
			want: []string{`"resourceApiVersion":"V3"`},
			warn: "resource_api_version AUTO upgraded to V3"},
		{name: "transport V2 by number", msg: &corev3.ApiConfigSource{},
			yaml: "{api_type: GRPC, transport_api_version: 1}",
			want: []string{`"transportApiVersion":"V3"`},
			warn: "transport_api_version V2 upgraded"},
		{name: "ext_authz AUTO", msg: &hcmv3.HttpConnectionManager{},
			yaml: `http_filters: [{name: envoy.filters.http.ext_authz, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz, transport_api_version: AUTO, grpc_service: {envoy_grpc: {cluster_name: a}}}}]`,
			want: []string{`"transportApiVersion":"V3"`},
			warn: "transport_api_version AUTO upgraded to V3"},
		{name: "rate limit service without a version", msg: &rlv3.RateLimit{},
			yaml: "{domain: d, rate_limit_service: {grpc_service: {envoy_grpc: {cluster_name: rls}}}}",
			want: []string{`"rateLimitService":{"grpcService":{"envoyGrpc":{"clusterName":"rls"}},"transportApiVersion":"V3"}`},
			warn: "unset transport_api_version (AUTO, a v2-era default) upgraded to V3 (Envoy refuses it here): add transport_api_version: V3"},
		{name: "config source without a version is left alone", msg: &corev3.ApiConfigSource{},
			yaml: "{api_type: GRPC}",
			want: []string{`{"apiType":"GRPC"}`}},
		{name: "V3 is left alone", msg: &rlv3.RateLimit{},
			yaml: "{domain: d, rate_limit_service: {transport_api_version: V3, grpc_service: {envoy_grpc: {cluster_name: rls}}}}",
			want: []string{`"transportApiVersion":"V3"`}},
		{name: "override_option ignored by Envoy", msg: &rlv3.RateLimitPerRoute{},
			yaml: "{vh_rate_limits: INCLUDE, override_option: INCLUDE_POLICY}",
			want: []string{`"overrideOption":"INCLUDE_POLICY"`},
			warn: "override_option is ignored, as by Envoy (not implemented there): remove it"},
		{name: "override_option DEFAULT", msg: &rlv3.RateLimitPerRoute{},
			yaml: "{override_option: DEFAULT}",
			want: []string{`{}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			warns, err := Decode([]byte(tc.yaml), tc.msg, "")
			if err != nil {
				t.Fatal(err)
			}
			js := compactJSON(t, tc.msg)
			for _, w := range tc.want {
				if !strings.Contains(js, w) {
					t.Errorf("upgraded to %s\nwant it to contain %s", js, w)
				}
			}
			switch {
			case strings.HasPrefix(tc.name, "verify_subject_alt_name nested"):
				if len(warns) != 2 {
					t.Errorf("warnings %v, want tls_context's and verify_subject_alt_name's", warns)
				}
			case tc.warn == "":
				if len(warns) != 0 {
					t.Errorf("warnings %v, want none", warns)
				}
			case len(warns) != 1 || !strings.Contains(warns[0].Message, tc.warn):
				t.Errorf("warnings %v, want one with %q", warns, tc.warn)
			}
		})
	}
}

// compactJSON is msg's protojson form without whitespace, which protojson
// varies on purpose.
func compactJSON(t *testing.T, msg proto.Message) string {
	t.Helper()
	js, err := protojson.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, js); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestVerifySANWithMatchers: v2 required verify_subject_alt_name and
// match_subject_alt_names both to match; v3's single OR'ed list cannot say
// that, so the pair is an error rather than a weaker check.
func TestVerifySANWithMatchers(t *testing.T) {
	_, err := Decode([]byte("{verify_subject_alt_name: [b], match_subject_alt_names: [{prefix: a}]}"), &tlsv3.CertificateValidationContext{}, "")
	if err == nil || !strings.Contains(err.Error(), "cannot be upgraded") {
		t.Fatalf("err = %v, want the upgrade refused", err)
	}
}
