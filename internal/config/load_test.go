package config

import (
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

func TestDecodeLeniencies(t *testing.T) {
	cases := []struct {
		name      string
		yaml      string
		wantErr   string // substring; "" means success
		wantWarns []string
		check     func(t *testing.T, b *bootstrapv3.Bootstrap)
	}{
		{
			name: "duration and timestamp as {seconds, nanos}",
			yaml: `
static_resources:
  clusters:
  - name: a
    connect_timeout: {seconds: 2, nanos: 500000000}
    dns_refresh_rate: {seconds: 7}`,
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				c := b.GetStaticResources().GetClusters()[0]
				if c.GetConnectTimeout().AsDuration().Milliseconds() != 2500 || c.GetDnsRefreshRate().AsDuration().Seconds() != 7 {
					t.Fatalf("durations: %v %v", c.GetConnectTimeout().AsDuration(), c.GetDnsRefreshRate().AsDuration())
				}
			},
		},
		{
			name:    "duration mapping with a stray field",
			yaml:    "static_resources:\n  clusters:\n  - name: a\n    connect_timeout: {seconds: 2, millis: 3}",
			wantErr: `static_resources.clusters[0].connect_timeout.millis (line 4): unknown field "millis" in google.protobuf.Duration`,
		},
		{
			name: "lowercase enum and camelCase field",
			yaml: `
staticResources:
  clusters:
  - name: a
    type: strict_dns
    lbPolicy: least_request
    connectTimeout: 0.25s`,
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				c := b.GetStaticResources().GetClusters()[0]
				if c.GetType() != clusterv3.Cluster_STRICT_DNS || c.GetLbPolicy() != clusterv3.Cluster_LEAST_REQUEST {
					t.Fatalf("enums not parsed: %v %v", c.GetType(), c.GetLbPolicy())
				}
				if c.GetConnectTimeout().AsDuration().Milliseconds() != 250 {
					t.Fatalf("connect_timeout = %v", c.GetConnectTimeout().AsDuration())
				}
			},
		},
		{
			name: "ignore tag and merge key",
			yaml: `
x-defaults: !ignore &defaults
  connect_timeout: 1s
  type: STATIC
static_resources:
  clusters:
  - <<: *defaults
    name: a`,
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				c := b.GetStaticResources().GetClusters()[0]
				if c.GetConnectTimeout().AsDuration().Seconds() != 1 || c.GetType() != clusterv3.Cluster_STATIC {
					t.Fatalf("merge key not applied: %v", c)
				}
			},
		},
		{
			name:    "unknown field has a path",
			yaml:    "static_resources:\n  clusters:\n  - name: a\n    conect_timeout: 1s\n",
			wantErr: `static_resources.clusters[0].conect_timeout (line 4): unknown field "conect_timeout" in envoy.config.cluster.v3.Cluster`,
		},
		{
			name:    "bad enum lists the choices",
			yaml:    "static_resources:\n  clusters:\n  - name: a\n    type: dynamic\n",
			wantErr: `static_resources.clusters[0].type (line 4): unknown value "dynamic" for enum envoy.config.cluster.v3.Cluster.DiscoveryType`,
		},
		{
			name: "a type legate does not link is kept as a TypedStruct",
			yaml: `
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: x
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.nonexistent.v3.X`,
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				a := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig()
				ts := &xdstypev3.TypedStruct{}
				if err := a.UnmarshalTo(ts); err != nil {
					t.Fatalf("typed_config is %s, want a TypedStruct: %v", a.GetTypeUrl(), err)
				}
				if ts.GetTypeUrl() != "type.googleapis.com/envoy.extensions.filters.network.nonexistent.v3.X" {
					t.Fatalf("TypedStruct type_url = %q", ts.GetTypeUrl())
				}
			},
		},
		{
			name: "v2 config, hosts and envoy.router upgraded with warnings",
			yaml: `
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.http_connection_manager
        config:
          stat_prefix: x
          route_config: {virtual_hosts: [{name: a, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: c}}]}]}
          http_filters:
          - name: envoy.router
  clusters:
  - name: c
    hosts: [{socket_address: {address: 10.0.0.1, port_value: 80}}]`,
			wantWarns: []string{
				`filters[0].name (line 7): deprecated v2 name "envoy.http_connection_manager"`,
				"filters[0].config (line 8): v2 `config:` upgraded",
				`http_filters[0].name (line 12): deprecated v2 name "envoy.router"`,
				`http_filters[0] (line 12): "envoy.router" has no typed_config`,
				"clusters[0].hosts (line 15): v2 `hosts:` upgraded",
			},
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				c := b.GetStaticResources().GetClusters()[0]
				ep := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
				if c.GetLoadAssignment().GetClusterName() != "c" || ep.GetAddress() != "10.0.0.1" || ep.GetPortValue() != 80 {
					t.Fatalf("hosts not upgraded: %v", c.GetLoadAssignment())
				}
				hcm := &hcmv3.HttpConnectionManager{}
				if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
					t.Fatal(err)
				}
				if hcm.GetStatPrefix() != "x" || hcm.GetHttpFilters()[0].GetTypedConfig() == nil {
					t.Fatalf("config not upgraded: %v", hcm)
				}
			},
		},
		{
			name:    "validation error has a snake_case path",
			yaml:    "static_resources:\n  clusters:\n  - name: ''\n",
			wantErr: "static_resources.clusters[0].name (line 3): value length must be at least 1 runes",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "envoy.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			b, warns, err := LoadBootstrap(p, "")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if len(warns) != len(tc.wantWarns) {
				t.Errorf("got %d warnings, want %d: %v", len(warns), len(tc.wantWarns), warns)
			}
			for _, w := range tc.wantWarns {
				found := false
				for _, g := range warns {
					found = found || strings.Contains(g.String(), w)
				}
				if !found {
					t.Errorf("missing warning %q in %v", w, warns)
				}
			}
			if tc.check != nil {
				tc.check(t, b)
			}
		})
	}
}

func TestConfigYAMLOverlayMerges(t *testing.T) {
	p := filepath.Join(t.TempDir(), "b.yaml")
	os.WriteFile(p, []byte("node: {id: file}\nstatic_resources: {clusters: [{name: a}]}\n"), 0o644)
	b, _, err := LoadBootstrap(p, "node: {id: flag}\nstatic_resources: {clusters: [{name: b}]}")
	if err != nil {
		t.Fatal(err)
	}
	if b.GetNode().GetId() != "flag" || len(b.GetStaticResources().GetClusters()) != 2 {
		t.Fatalf("overlay not merged as proto merge: %v", b)
	}
}
