package route

import (
	"strings"
	"testing"
)

// TestMetadataMatchCompile checks that a route's envoy.lb metadata_match
// is compiled and that a weighted cluster's overrides and extends it.
func TestMetadataMatchCompile(t *testing.T) {
	tbl := compileYAML(t, `
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: {prefix: /a}
    route: {cluster: c, metadata_match: {filter_metadata: {envoy.lb: {version: v1, stage: prod}, other: {x: y}}}}
  - match: {prefix: /w}
    route:
      metadata_match: {filter_metadata: {envoy.lb: {version: v1, stage: prod}}}
      weighted_clusters: {clusters: [{name: c, weight: 1, metadata_match: {filter_metadata: {envoy.lb: {stage: canary, zone: z}}}}, {name: d, weight: 1}]}
  - match: {prefix: /n}
    route: {cluster: c}
`)
	rt := tbl.Route(req("GET", "h", "/a"))
	if got, want := rt.Action.MetadataMatch.String(), `stage="prod",version="v1"`; got != want {
		t.Errorf("route metadata_match %q, want %q", got, want)
	}
	rt = tbl.Route(req("GET", "h", "/w"))
	if got, want := rt.Action.Weighted[0].MetadataMatch.String(), `stage="canary",version="v1",zone="z"`; got != want {
		t.Errorf("weighted cluster metadata_match %q, want %q", got, want)
	}
	if got := rt.Action.Weighted[1].MetadataMatch.String(); !strings.Contains(got, `stage="prod"`) {
		t.Errorf("weighted cluster without metadata_match got %q, want the route's", got)
	}
	if rt := tbl.Route(req("GET", "h", "/n")); rt.Action.MetadataMatch != nil {
		t.Errorf("route without metadata_match got %v", rt.Action.MetadataMatch)
	}
}
