package admission_control

import (
	"math"
	"strings"
	"testing"
	"time"

	acv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/admission_control/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func compileJSON(t *testing.T, js string) (*filterConfig, error) {
	t.Helper()
	var c acv3.AdmissionControl
	if err := protojson.Unmarshal([]byte(js), &c); err != nil {
		t.Fatal(err)
	}
	fc, err := compile(&httpfilter.Context{Stats: stats.NewStore(), StatPrefix: "http.p."}, &c, "c")
	if err != nil {
		return nil, err
	}
	return fc.(*filterConfig), nil
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ js, err string }{
		{`{}`, "success_criteria is required"},
		{`{"success_criteria": {}, "sr_threshold": {"default_value": {"value": 0.5}, "runtime_key": "k"}}`, "c.sr_threshold: Success rate threshold cannot be less than 1.0%."},
		{`{"success_criteria": {"http_criteria": {"http_success_status": [{"start": 200, "end": 700}]}}}`, "c.success_criteria.http_criteria.http_success_status[0]: invalid HTTP range: [200, 700)"},
		{`{"success_criteria": {"http_criteria": {"http_success_status": [{"start": 300, "end": 200}]}}}`, "invalid HTTP range: [300, 200)"},
		{`{"success_criteria": {"http_criteria": {"http_success_status": [{"start": 99, "end": 200}]}}}`, "invalid HTTP range: [99, 200)"},
		{`{"success_criteria": {"grpc_criteria": {"grpc_success_status": [0, 17]}}}`, "c.success_criteria.grpc_criteria.grpc_success_status[1]: invalid gRPC code 17"},
	} {
		if _, err := compileJSON(t, tc.js); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want %q", tc.js, err, tc.err)
		}
	}
}

func TestEvaluator(t *testing.T) {
	def, _ := compileJSON(t, `{"success_criteria": {}}`)
	custom, _ := compileJSON(t, `{"success_criteria": {"http_criteria": {"http_success_status": [{"start": 200, "end": 300}, {"start": 404, "end": 405}]}, "grpc_criteria": {"grpc_success_status": [0, 14]}}}`)
	for _, tc := range []struct {
		e      evaluator
		status int
		want   bool
	}{
		{def.eval, 200, true}, {def.eval, 404, true}, {def.eval, 499, true}, {def.eval, 500, false}, {def.eval, 503, false},
		{custom.eval, 200, true}, {custom.eval, 299, true}, {custom.eval, 300, false}, {custom.eval, 404, true}, {custom.eval, 403, false},
	} {
		if got := tc.e.httpSuccess(tc.status); got != tc.want {
			t.Errorf("httpSuccess(%d) = %v", tc.status, got)
		}
	}
	// An empty range, as in Envoy's docs, is accepted and matches nothing.
	if empty, err := compileJSON(t, `{"success_criteria": {"http_criteria": {"http_success_status": [{"start": 404, "end": 404}]}}}`); err != nil || empty.eval.httpSuccess(404) {
		t.Errorf("[404, 404): %v", err)
	}
	for code, want := range map[uint32]bool{0: true, 1: true, 2: true, 4: false, 8: false, 13: false, 14: false, 16: true, invalidGRPC: false} {
		if def.eval.grpcSuccess(code) != want {
			t.Errorf("default grpcSuccess(%d) = %v", code, !want)
		}
	}
	if !custom.eval.grpcSuccess(14) || custom.eval.grpcSuccess(2) {
		t.Error("grpc_criteria not applied")
	}
}

func TestProbability(t *testing.T) {
	def, _ := compileJSON(t, `{"success_criteria": {}}`)
	tuned, _ := compileJSON(t, `{"success_criteria": {}, "aggression": {"default_value": 2, "runtime_key": "a"},
	  "sr_threshold": {"default_value": {"value": 50}, "runtime_key": "s"}, "max_rejection_probability": {"default_value": {"value": 100}, "runtime_key": "m"}}`)
	for _, tc := range []struct {
		c                *filterConfig
		total, successes uint64
		want             float64
	}{
		{def, 0, 0, 0},
		{def, 100, 100, 0},
		{def, 100, 95, 0},                       // at the threshold
		{def, 100, 0, math.Min(0.8, 100.0/101)}, // capped by max_rejection_probability (80 %)
		{def, 100, 90, (100 - 90/0.95) / 101},
		{tuned, 100, 60, 0},                             // above 50 %
		{tuned, 100, 25, math.Sqrt((100 - 50.0) / 101)}, // aggression 2: the square root
		{tuned, 100, 0, math.Sqrt(100.0 / 101)},
	} {
		if got := tc.c.rejectionProbability(tc.total, tc.successes); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("p(%d, %d) = %v, want %v", tc.total, tc.successes, got, tc.want)
		}
	}
}

func TestControllerWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	c := &controller{window: 3 * time.Second, now: func() time.Time { return now }}
	for i := 0; i < 6; i++ {
		c.record(i%2 == 0)
	}
	if n, s := c.counts(); n != 6 || s != 3 {
		t.Fatalf("counts %d/%d, want 6/3", n, s)
	}
	if got := c.averageRPS(); got != 2 {
		t.Errorf("averageRPS = %d, want 6/3s = 2", got)
	}
	now = now.Add(1500 * time.Millisecond)
	c.record(false)
	if n, s := c.counts(); n != 7 || s != 3 {
		t.Fatalf("counts %d/%d, want 7/3", n, s)
	}
	// The first bucket leaves the window 3 s after it opened.
	now = now.Add(1500 * time.Millisecond)
	if n, s := c.counts(); n != 1 || s != 0 {
		t.Fatalf("counts after the first bucket expired %d/%d, want 1/0", n, s)
	}
	now = now.Add(10 * time.Second)
	if n, _ := c.counts(); n != 0 {
		t.Fatalf("counts after the window %d, want 0", n)
	}
	if got := c.averageRPS(); got != 0 {
		t.Errorf("averageRPS of an empty window = %d", got)
	}
}

type fakeCallbacks struct {
	httpfilter.Callbacks
	status int
	detail string
	info   streaminfo.Info
}

func (f *fakeCallbacks) StreamInfo() *streaminfo.Info { return &f.info }

func (f *fakeCallbacks) SendLocalReply(status int, _ string, r httpfilter.LocalReply) {
	f.status, f.detail = status, r.Details
}

// run passes one request through a filter, answered with status (or
// rejected), and reports the local reply's status (0 for none).
func run(c *filterConfig, status int, grpcStatus string) int {
	cb := &fakeCallbacks{}
	f := c.NewFilter(cb).(*filter)
	f.DecodeHeaders(&headers.Request{Method: "GET", Path: "/"}, true)
	if cb.status != 0 {
		return cb.status
	}
	resp := &headers.Response{Status: status}
	if grpcStatus != "" {
		resp.Map.Add("content-type", "application/grpc")
		f.EncodeHeaders(resp, false)
		tr := &headers.Map{}
		tr.Add("grpc-status", grpcStatus)
		f.EncodeTrailers(tr)
		return 0
	}
	f.EncodeHeaders(resp, true)
	return 0
}

func TestFilter(t *testing.T) {
	c, err := compileJSON(t, `{"success_criteria": {}, "max_rejection_probability": {"default_value": {"value": 100}, "runtime_key": "m"}}`)
	if err != nil {
		t.Fatal(err)
	}
	// The highest draw: only a probability above 0.9999 rejects.
	draw := uint64(9999)
	c.rand = func(uint64) uint64 { return draw }
	for i := 0; i < 10; i++ {
		if got := run(c, 503, ""); got != 0 {
			t.Fatalf("request %d rejected on the highest draw", i)
		}
	}
	// 10 failures: p = 10/11; a draw of 0 rejects.
	draw = 0
	if got := run(c, 200, ""); got != 503 {
		t.Fatalf("not rejected after 10 failures: %d", got)
	}
	draw = 9090 // 10000 * 10/11 = 9090.9 > 9090
	if got := run(c, 200, ""); got != 503 {
		t.Fatalf("not rejected on a draw just below the probability")
	}
	draw = 9091
	if got := run(c, 200, ""); got != 0 {
		t.Fatalf("rejected on a draw above the probability: %d", got)
	}
	if n, s := c.ctl.counts(); n != 11 || s != 1 {
		t.Errorf("window %d/%d, want 11/1 (the rejected request is not sampled)", n, s)
	}
	// gRPC: UNAVAILABLE (14) in the trailers is a failure, OK a success.
	run(c, 200, "14")
	run(c, 200, "0")
	if n, s := c.ctl.counts(); n != 13 || s != 2 {
		t.Errorf("window %d/%d after gRPC responses, want 13/2", n, s)
	}
	if c.rejected.Value() != 2 || c.success.Value() != 2 || c.failure.Value() != 11 {
		t.Errorf("stats rejected %d success %d failure %d", c.rejected.Value(), c.success.Value(), c.failure.Value())
	}

	// rps_threshold: below it nothing is rejected.
	rps, _ := compileJSON(t, `{"success_criteria": {}, "rps_threshold": {"default_value": 1000, "runtime_key": "r"}}`)
	rps.rand = func(uint64) uint64 { return 0 }
	for i := 0; i < 20; i++ {
		if got := run(rps, 500, ""); got != 0 {
			t.Fatalf("rejected below rps_threshold")
		}
	}
	// enabled false: a pass-through.
	off, _ := compileJSON(t, `{"success_criteria": {}, "enabled": {"default_value": false, "runtime_key": "e"}}`)
	off.rand = func(uint64) uint64 { return 0 }
	for i := 0; i < 20; i++ {
		if got := run(off, 500, ""); got != 0 {
			t.Fatalf("rejected while disabled")
		}
	}
	if n, _ := off.ctl.counts(); n != 0 {
		t.Errorf("a disabled filter sampled %d responses", n)
	}
}
