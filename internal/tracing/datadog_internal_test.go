package tracing

import (
	"strings"
	"testing"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/stats"
)

// TestDatadogPropagation: what Start extracts (Datadog headers first,
// then W3C trace context) and what Inject writes.
func TestDatadogPropagation(t *testing.T) {
	drv, err := compileDatadog(&Context{Stats: stats.NewStore()}, &tracev3.DatadogConfig{CollectorCluster: "agent"}, "tracing")
	if err != nil {
		t.Fatal(err)
	}
	d := drv.(*datadog)
	for _, tc := range []struct {
		name    string
		in      []string
		sampled bool
		want    map[string]string // header → value, or prefix when it ends in "*"
	}{
		{"datadog", []string{"x-datadog-trace-id", "42", "x-datadog-parent-id", "7", "x-datadog-sampling-priority", "2",
			"x-datadog-origin", "rum", "x-datadog-tags", "_dd.p.tid=00000000000000ff,_dd.p.dm=-3"}, true,
			map[string]string{"x-datadog-trace-id": "42", "x-datadog-sampling-priority": "2", "x-datadog-origin": "rum",
				"traceparent": "00-00000000000000ff000000000000002a-*", "x-datadog-tags": "_dd.p.dm=-3,_dd.p.tid=00000000000000ff",
				"tracestate": "dd=s:2;p:*"}},
		{"datadog without priority, dropped by Envoy", []string{"x-datadog-trace-id", "42", "x-datadog-parent-id", "7"}, false,
			map[string]string{"x-datadog-trace-id": "42", "x-datadog-sampling-priority": "-1", "traceparent": "*-00"}},
		{"datadog wins over w3c", []string{"x-datadog-trace-id", "42", "x-datadog-parent-id", "7",
			"traceparent", "00-0000000000000000000000000000abcd-00000000000000ef-01"}, true,
			map[string]string{"x-datadog-trace-id": "42", "x-datadog-sampling-priority": "1"}},
		{"w3c with dd member", []string{"traceparent", "00-0000000000000001000000000000abcd-00000000000000ef-01",
			"tracestate", "dd=s:2;o:syn;t.dm:-4,other=x"}, true,
			map[string]string{"x-datadog-trace-id": "43981", "x-datadog-sampling-priority": "2", "x-datadog-origin": "syn",
				"x-datadog-tags": "_dd.p.dm=-4,_dd.p.tid=0000000000000001", "tracestate": "dd=s:2;p:*"}},
		{"w3c not sampled", []string{"traceparent", "00-0000000000000000000000000000abcd-00000000000000ef-00"}, true,
			map[string]string{"x-datadog-trace-id": "43981", "x-datadog-sampling-priority": "0", "traceparent": "*-00"}},
		{"malformed datadog id", []string{"x-datadog-trace-id", "x", "x-datadog-parent-id", "7"}, true,
			map[string]string{"x-datadog-sampling-priority": "1", "x-datadog-tags": "_dd.p.dm=-0,*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &headers.Request{Method: "GET", Path: "/", Authority: "h"}
			for i := 0; i < len(tc.in); i += 2 {
				req.Add(tc.in[i], tc.in[i+1])
			}
			sp := d.Start(req, "ingress", false, tc.sampled)
			out := &headers.Map{}
			sp.Inject(out)
			for k, want := range tc.want {
				got := out.Get(k)
				switch {
				case strings.HasPrefix(want, "*"):
					if !strings.HasSuffix(got, want[1:]) {
						t.Errorf("%s = %q, want …%s", k, got, want[1:])
					}
				case strings.HasSuffix(want, "*"):
					if !strings.HasPrefix(got, want[:len(want)-1]) {
						t.Errorf("%s = %q, want %s…", k, got, want[:len(want)-1])
					}
				case got != want:
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if tc.name == "w3c with dd member" && !strings.HasSuffix(out.Get("tracestate"), ",other=x") {
				t.Errorf("tracestate %q lost the other vendor's member", out.Get("tracestate"))
			}
		})
	}
}

// TestDatadogConfig: remote_config and a missing cluster are refused.
func TestDatadogConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  *tracev3.DatadogConfig
		err  string
	}{
		{"ok", &tracev3.DatadogConfig{CollectorCluster: "a", ServiceName: "s", CollectorHostname: "h"}, ""},
		{"remote config", &tracev3.DatadogConfig{CollectorCluster: "a", RemoteConfig: &tracev3.DatadogRemoteConfig{}}, "remote_config"},
		{"no cluster", &tracev3.DatadogConfig{}, "collector_cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compileDatadog(&Context{Stats: stats.NewStore()}, tc.cfg, "tracing.provider.typed_config")
			if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}
