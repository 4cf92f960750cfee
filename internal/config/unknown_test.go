package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// --allow-unknown-static-fields: unknown fields in YAML, in a typed_config
// and in a binary bootstrap are errors by default and warnings with it.
func TestAllowUnknownStaticFields(t *testing.T) {
	dir := t.TempDir()
	yamlPath := filepath.Join(dir, "envoy.yaml")
	os.WriteFile(yamlPath, []byte(`
static_resources:
  clusters:
  - name: a
    connect_timeout: 1s
    newer_envoy_field: 3
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: a
          some_future_option: true
`), 0o644)
	// A binary bootstrap whose first cluster carries field 9999, which no
	// Envoy defines: Bootstrap.static_resources (2) → clusters (2).
	cl, _ := proto.Marshal(&clusterv3.Cluster{Name: "a"})
	cl = protowire.AppendVarint(protowire.AppendTag(cl, 9999, protowire.VarintType), 1)
	b := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType),
		protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), cl))
	if err := proto.Unmarshal(b, &bootstrapv3.Bootstrap{}); err != nil {
		t.Fatal(err)
	}
	pbPath := filepath.Join(dir, "envoy.pb")
	os.WriteFile(pbPath, b, 0o644)

	for _, tc := range []struct {
		path  string
		paths []string
	}{
		{yamlPath, []string{"static_resources.clusters[0].newer_envoy_field", "typed_config.some_future_option"}},
		{pbPath, []string{"static_resources.clusters[0]"}},
	} {
		_, _, _, err := LoadBootstrapWith(tc.path, "", LoadOptions{})
		if err == nil {
			t.Fatalf("%s: unknown fields accepted without --allow-unknown-static-fields", filepath.Base(tc.path))
		}
		for _, p := range tc.paths {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("%s: error does not name %s: %v", filepath.Base(tc.path), p, err)
			}
		}
		bs, warns, _, err := LoadBootstrapWith(tc.path, "", LoadOptions{AllowUnknownFields: true})
		if err != nil {
			t.Fatalf("%s with --allow-unknown-static-fields: %v", filepath.Base(tc.path), err)
		}
		if bs.GetStaticResources().GetClusters()[0].GetName() != "a" {
			t.Errorf("%s: the rest of the config was not kept", filepath.Base(tc.path))
		}
		n := 0
		for _, w := range warns {
			if w.Unknown {
				n++
			}
		}
		if n != len(tc.paths) {
			t.Errorf("%s: %d unknown-field warnings, want %d: %v", filepath.Base(tc.path), n, len(tc.paths), warns)
		}
	}
}
