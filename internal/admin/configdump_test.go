package admin

import (
	"encoding/json"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func testDump(t *testing.T) *adminv3.ConfigDump {
	t.Helper()
	ccd := &adminv3.ClustersConfigDump{VersionInfo: "v1"}
	for _, n := range []string{"alpha", "beta"} {
		a, err := anypb.New(&clusterv3.Cluster{Name: n, ConnectTimeout: durationpb.New(1e9), AltStatName: n + "_stat"})
		if err != nil {
			t.Fatal(err)
		}
		ccd.StaticClusters = append(ccd.StaticClusters, &adminv3.ClustersConfigDump_StaticCluster{Cluster: a, LastUpdated: timestamppb.Now()})
	}
	cd := &adminv3.ConfigDump{}
	b, _ := anypb.New(&adminv3.BootstrapConfigDump{})
	c, _ := anypb.New(ccd)
	cd.Configs = append(cd.Configs, b, c)
	return cd
}

func TestSelectDump(t *testing.T) {
	for _, tc := range []struct {
		name          string
		resource      string
		hasResource   bool
		mask          string
		hasMask       bool
		re            string
		code          int
		wantJSON      []string // each config, as compact proto JSON
		wantErrSubstr string
	}{
		{name: "resource", resource: "static_clusters", hasResource: true, code: 200},
		{name: "resource+mask through the Any", resource: "static_clusters", hasResource: true, mask: "cluster.name,cluster.alt_stat_name", hasMask: true, code: 200,
			wantJSON: []string{
				`{"@type":"type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster","cluster":{"@type":"type.googleapis.com/envoy.config.cluster.v3.Cluster","name":"alpha","altStatName":"alpha_stat"}}`,
				`{"@type":"type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster","cluster":{"@type":"type.googleapis.com/envoy.config.cluster.v3.Cluster","name":"beta","altStatName":"beta_stat"}}`,
			}},
		{name: "resource+name_regex", resource: "static_clusters", hasResource: true, mask: "cluster.name", hasMask: true, re: "b.*", code: 200,
			wantJSON: []string{`{"@type":"type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster","cluster":{"@type":"type.googleapis.com/envoy.config.cluster.v3.Cluster","name":"beta"}}`}},
		{name: "mask only fits one config", mask: "version_info", hasMask: true, code: 200,
			wantJSON: []string{`{"@type":"type.googleapis.com/envoy.admin.v3.ClustersConfigDump","versionInfo":"v1"}`}},
		{name: "mask through a repeated field is invalid", resource: "static_clusters", hasResource: true, mask: "cluster.name.x", hasMask: true, code: 400, wantErrSubstr: "could not be successfully used"},
		{name: "not found", resource: "nope", hasResource: true, code: 404, wantErrSubstr: "nope not found in config dump"},
		{name: "not repeated", resource: "version_info", hasResource: true, code: 400, wantErrSubstr: "version_info is not a repeated field"},
		{name: "mask fits nothing", mask: "nope", hasMask: true, code: 400, wantErrSubstr: "FieldMask nope could not be successfully applied to any configs."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var re *regexp.Regexp
			if tc.re != "" {
				re = regexp.MustCompile("^(?:" + tc.re + ")$")
			}
			out, code, msg := selectDump(testDump(t), tc.resource, tc.hasResource, tc.mask, tc.hasMask, re)
			if code != tc.code {
				t.Fatalf("code = %d (%s), want %d", code, msg, tc.code)
			}
			if code != http.StatusOK {
				if !contains(msg, tc.wantErrSubstr) {
					t.Errorf("message %q lacks %q", msg, tc.wantErrSubstr)
				}
				return
			}
			if tc.wantJSON == nil {
				if len(out.Configs) != 2 {
					t.Errorf("configs = %d", len(out.Configs))
				}
				return
			}
			if len(out.Configs) != len(tc.wantJSON) {
				t.Fatalf("configs = %d, want %d", len(out.Configs), len(tc.wantJSON))
			}
			for i, a := range out.Configs {
				got, _ := protojson.Marshal(a)
				if !jsonEqual(t, string(got), tc.wantJSON[i]) {
					t.Errorf("config %d = %s\nwant %s", i, got, tc.wantJSON[i])
				}
			}
		})
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}
