package config

import (
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
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
			js, err := protojson.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			s := string(js)
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
