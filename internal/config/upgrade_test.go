package config

import (
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
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
