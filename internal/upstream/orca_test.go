package upstream

import (
	"encoding/base64"
	"strings"
	"testing"

	orcav3 "github.com/cncf/xds/go/xds/data/orca/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/headers"
)

func TestParseOrcaLoadReport(t *testing.T) {
	full := &orcav3.OrcaLoadReport{CpuUtilization: 0.7, ApplicationUtilization: 0.8, MemUtilization: 0.9, Eps: 2, RpsFractional: 1000,
		NamedMetrics: map[string]float64{"foo": 123, "bar": 0.2}, Utilization: map[string]float64{"total": 0.5}}
	bin, err := proto.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	padded := base64.StdEncoding.EncodeToString(bin)
	unpadded := base64.RawStdEncoding.EncodeToString(bin)
	for _, tc := range []struct {
		name      string
		hdr, val  string
		want      *orcav3.OrcaLoadReport
		err       string
		noReport  bool
		extraName string
	}{
		{name: "none", hdr: "x-other", val: "1", noReport: true},
		{name: "text", hdr: OrcaHeader, want: full,
			val: "TEXT cpu_utilization=0.7,application_utilization=0.8,mem_utilization=0.9,rps_fractional=1000,eps=2,named_metrics.foo=123,named_metrics.bar=0.2,utilization.total=0.5"},
		{name: "text with colons and spaces", hdr: OrcaHeader, want: full,
			val: "TEXT cpu_utilization:0.7, application_utilization:0.8, mem_utilization:0.9, rps_fractional:1000, eps:2, named_metrics.foo:123, named_metrics.bar:0.2, utilization.total:0.5"},
		{name: "json", hdr: OrcaHeader, want: full,
			val: `JSON {"cpu_utilization": 0.7, "application_utilization": 0.8, "mem_utilization": 0.9, "rps_fractional": 1000, "eps": 2, "named_metrics": {"foo": 123, "bar": 0.2}, "utilization": {"total": 0.5}}`},
		{name: "bin prefix", hdr: OrcaHeader, val: "BIN " + padded, want: full},
		{name: "legacy bin", hdr: OrcaHeaderBin, val: padded, want: full},
		{name: "legacy bin unpadded (grpc-go)", hdr: OrcaHeaderBin, val: unpadded, want: full},
		{name: "bad prefix", hdr: OrcaHeader, val: "BADBAD x", err: "unsupported ORCA header format: BADBA"},
		{name: "empty", hdr: OrcaHeader, val: "", err: "unsupported ORCA header format: "},
		{name: "duplicate", hdr: OrcaHeader, val: "TEXT cpu_utilization=0.7,cpu_utilization=0.8", err: "duplicate metric: cpu_utilization"},
		{name: "unknown metric", hdr: OrcaHeader, val: "TEXT cpu_utilization=0.7,bogus=1", err: "unsupported metric name: bogus"},
		{name: "negative", hdr: OrcaHeader, val: "TEXT cpu_utilization=-1", err: "cannot be negative"},
		{name: "nan", hdr: OrcaHeader, val: "TEXT cpu_utilization=NaN", err: "cannot be NaN"},
		{name: "quoted", hdr: OrcaHeader, val: `TEXT cpu_utilization="0.7"`, err: "unable to parse custom backend load metric value(cpu_utilization)"},
		{name: "no value", hdr: OrcaHeader, val: "TEXT not-a-list-of-key-value-pairs", err: "metric values cannot be empty strings"},
		{name: "empty named key", hdr: OrcaHeader, val: "TEXT named_metrics.=1", err: "named metric key is empty"},
		{name: "bad json", hdr: OrcaHeader, val: "JSON {", err: "invalid JSON"},
		{name: "json unknown field", hdr: OrcaHeader, val: `JSON {"bogus": 1}`, err: "invalid JSON"},
		{name: "bad base64", hdr: OrcaHeaderBin, val: "!!!", err: "unable to decode"},
		{name: "bin wins over text", hdr: OrcaHeaderBin, val: padded, want: full, extraName: OrcaHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h headers.Map
			h.Add(tc.hdr, tc.val)
			if tc.extraName != "" {
				h.Add(tc.extraName, "TEXT cpu_utilization=0.1")
			}
			r, err := ParseOrcaLoadReport(&h)
			switch {
			case tc.noReport:
				if err != errNoOrca {
					t.Fatalf("error %v, want errNoOrca", err)
				}
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
			case err != nil:
				t.Fatal(err)
			case !proto.Equal(r, tc.want):
				t.Fatalf("got %v, want %v", r, tc.want)
			}
		})
	}
}

func TestOrcaMaxUtilization(t *testing.T) {
	r := &orcav3.OrcaLoadReport{CpuUtilization: 0.3, NamedMetrics: map[string]float64{"a": 0.4, "b": 0.9}, Utilization: map[string]float64{"x": 0.6}}
	for _, tc := range []struct {
		names []string
		want  float64
	}{
		{nil, 0},
		{[]string{"named_metrics.a"}, 0.4},
		{[]string{"named_metrics.a", "utilization.x"}, 0.6},
		{[]string{"named_metrics.*"}, 0.9},
		{[]string{"cpu_utilization", "named_metrics.missing"}, 0.3},
	} {
		if got := orcaMaxUtilization(tc.names, r); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.names, got, tc.want)
		}
	}
}
