package upstream

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// expected_statuses ranges are refused as Envoy refuses them: {start: 200}
// without end (end is exclusive) would never pass a check.
func TestHealthCheckStatusRanges(t *testing.T) {
	for _, tc := range []struct {
		r   *typev3.Int64Range
		err string
	}{
		{&typev3.Int64Range{Start: 200, End: 300}, ""},
		{&typev3.Int64Range{Start: 200}, "expecting start < end, but found start=200 and end=0"},
		{&typev3.Int64Range{Start: 50, End: 300}, "expecting start >= 100"},
		{&typev3.Int64Range{Start: 200, End: 700}, "expecting end <= 600"},
	} {
		hc := &corev3.HealthCheck_HttpHealthCheck{Path: "/", ExpectedStatuses: []*typev3.Int64Range{tc.r}}
		_, err := httpCheck(&Cluster{Name: "c"}, hc, "hc")
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%v refused: %v", tc.r, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), "hc.expected_statuses[0]") || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v: got %v, want %q", tc.r, err, tc.err)
		}
	}
}
