// Mirrors in the model: HTTPProxy's mirror weight (Contour's share of
// requests mirrored) and Gateway API's requestMirror percent and fraction.

package model

import (
	"os"
	"path/filepath"
	"testing"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/legateproxy/legate/internal/controller/source"
)

func TestHTTPProxyMirrorWeight(t *testing.T) {
	for _, tc := range []struct {
		weight string
		want   uint32
	}{
		{"", 1000000},  // unset: every request, as Contour
		{"0", 1000000}, // Contour's edge case: 0 is 100 % too
		{"25", 250000}, // a percentage
		{"100", 1000000},
	} {
		t.Run("weight "+tc.weight, func(t *testing.T) {
			w := ""
			if tc.weight != "" {
				w = ", weight: " + tc.weight
			}
			objs := `apiVersion: v1
kind: Service
metadata: {name: s1, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: shadow, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: root, namespace: default}
spec:
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}, {name: shadow, port: 80, mirror: true` + w + `}]}]
`
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "objs.yaml"), []byte(objs), 0o644); err != nil {
				t.Fatal(err)
			}
			o, err := source.LoadManifests(dir)
			if err != nil {
				t.Fatal(err)
			}
			vh := Build(o, Options{}).Insecure["a.example.com"]
			if vh == nil || len(vh.Routes) != 1 || len(vh.Routes[0].Mirrors) != 1 {
				t.Fatalf("virtual host %+v", vh)
			}
			if m := vh.Routes[0].Mirrors[0]; m.PerMillion != tc.want || m.Cluster.Name == "" {
				t.Errorf("mirror = %+v, want %d per million", m, tc.want)
			}
		})
	}
}

func TestMirrorShare(t *testing.T) {
	i32 := func(v int32) *int32 { return &v }
	for _, tc := range []struct {
		name string
		f    gatewayv1.HTTPRequestMirrorFilter
		want uint32
	}{
		{"neither: all", gatewayv1.HTTPRequestMirrorFilter{}, 1000000},
		{"percent", gatewayv1.HTTPRequestMirrorFilter{Percent: i32(42)}, 420000},
		{"percent 0", gatewayv1.HTTPRequestMirrorFilter{Percent: i32(0)}, 0},
		{"fraction, default denominator 100", gatewayv1.HTTPRequestMirrorFilter{Fraction: &gatewayv1.Fraction{Numerator: 5}}, 50000},
		{"fraction 1/3", gatewayv1.HTTPRequestMirrorFilter{Fraction: &gatewayv1.Fraction{Numerator: 1, Denominator: i32(3)}}, 333333},
		{"fraction over 1 is capped", gatewayv1.HTTPRequestMirrorFilter{Fraction: &gatewayv1.Fraction{Numerator: 7, Denominator: i32(5)}}, 1000000},
	} {
		if got := mirrorShare(&tc.f); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
