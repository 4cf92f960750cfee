package kill_request

import (
	"log/slog"
	"testing"

	killv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/kill_request/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
)

type fakeCallbacks struct {
	httpfilter.Callbacks
	perRoute any
}

func (f *fakeCallbacks) PerRouteConfig() any { return f.perRoute }
func (f *fakeCallbacks) Log() *slog.Logger   { return slog.New(slog.DiscardHandler) }

func pct(n uint32, d typev3.FractionalPercent_DenominatorType) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: d}
}

func TestTruthy(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "TRUE": true, "t": true, "Yes": true, "y": true, "1": true,
		"false": false, "0": false, "no": false, "": false, " true": false, "2": false, "on": false} {
		if truthy(v) != want {
			t.Errorf("truthy(%q) = %v", v, !want)
		}
	}
}

// TestDecision checks when the filter kills, without killing: the crash
// itself is tested on a real process in test/features/kill_request_test.go.
func TestDecision(t *testing.T) {
	always := pct(100, typev3.FractionalPercent_HUNDRED)
	for _, tc := range []struct {
		name       string
		cfg, route *killv3.KillRequest
		reqHdr     []string
		respHdr    []string
		roll       uint32 // the random draw
		onRequest  bool
		onResponse bool
	}{
		{"no header", &killv3.KillRequest{Probability: always}, nil, nil, nil, 0, false, false},
		{"header true", &killv3.KillRequest{Probability: always}, nil, []string{"x-envoy-kill-request", "true"}, nil, 0, true, false},
		{"header false", &killv3.KillRequest{Probability: always}, nil, []string{"x-envoy-kill-request", "false"}, nil, 0, false, false},
		{"header garbage", &killv3.KillRequest{Probability: always}, nil, []string{"x-envoy-kill-request", "please"}, nil, 0, false, false},
		{"first value only", &killv3.KillRequest{Probability: always}, nil, []string{"x-envoy-kill-request", "no", "x-envoy-kill-request", "yes"}, nil, 0, false, false},
		{"no probability", &killv3.KillRequest{}, nil, []string{"x-envoy-kill-request", "1"}, nil, 0, false, false},
		{"probability misses", &killv3.KillRequest{Probability: pct(10, typev3.FractionalPercent_HUNDRED)}, nil, []string{"x-envoy-kill-request", "1"}, nil, 10, false, false},
		{"probability hits", &killv3.KillRequest{Probability: pct(10, typev3.FractionalPercent_HUNDRED)}, nil, []string{"x-envoy-kill-request", "1"}, nil, 9, true, false},
		{"ten thousand", &killv3.KillRequest{Probability: pct(1, typev3.FractionalPercent_TEN_THOUSAND)}, nil, []string{"x-envoy-kill-request", "1"}, nil, 0, true, false},
		{"custom header", &killv3.KillRequest{Probability: always, KillRequestHeader: "X-Chaos"}, nil, []string{"x-chaos", "y"}, nil, 0, true, false},
		{"custom header ignores default", &killv3.KillRequest{Probability: always, KillRequestHeader: "X-Chaos"}, nil, []string{"x-envoy-kill-request", "y"}, nil, 0, false, false},
		{"response direction: request header ignored", &killv3.KillRequest{Probability: always, Direction: killv3.KillRequest_RESPONSE}, nil, []string{"x-envoy-kill-request", "true"}, nil, 0, false, false},
		{"response direction", &killv3.KillRequest{Probability: always, Direction: killv3.KillRequest_RESPONSE}, nil, nil, []string{"x-envoy-kill-request", "true"}, 0, false, true},
		{"request direction ignores responses", &killv3.KillRequest{Probability: always}, nil, nil, []string{"x-envoy-kill-request", "true"}, 0, false, false},
		{"route probability off", &killv3.KillRequest{Probability: always}, &killv3.KillRequest{}, []string{"x-envoy-kill-request", "true"}, nil, 0, false, false},
		{"route enables", &killv3.KillRequest{}, &killv3.KillRequest{Probability: always}, []string{"x-envoy-kill-request", "true"}, nil, 0, true, false},
		{"route direction response", &killv3.KillRequest{Probability: always}, &killv3.KillRequest{Probability: always, Direction: killv3.KillRequest_RESPONSE}, []string{"x-envoy-kill-request", "true"}, nil, 0, false, false},
		// As Envoy: a kill request's route probability carries over to the
		// response side of the stream.
		{"route probability carries to the response", &killv3.KillRequest{Direction: killv3.KillRequest_RESPONSE}, &killv3.KillRequest{Probability: always, Direction: killv3.KillRequest_RESPONSE},
			[]string{"x-envoy-kill-request", "true"}, []string{"x-envoy-kill-request", "true"}, 0, false, true},
	} {
		fc, err := compile(nil, tc.cfg, "c")
		if err != nil {
			t.Fatal(err)
		}
		cb := &fakeCallbacks{}
		if tc.route != nil {
			if cb.perRoute, err = compilePerRoute(nil, tc.route, "r"); err != nil {
				t.Fatal(err)
			}
		}
		f := fc.NewFilter(cb).(*filter)
		f.roll = func(uint32) uint32 { return tc.roll }
		req := &headers.Request{Method: "GET", Path: "/"}
		for i := 0; i+1 < len(tc.reqHdr); i += 2 {
			req.Map.Add(tc.reqHdr[i], tc.reqHdr[i+1])
		}
		resp := &headers.Response{Status: 200}
		for i := 0; i+1 < len(tc.respHdr); i += 2 {
			resp.Map.Add(tc.respHdr[i], tc.respHdr[i+1])
		}
		if got := f.killOnRequest(req); got != tc.onRequest {
			t.Errorf("%s: kill on request %v, want %v", tc.name, got, tc.onRequest)
		}
		if got := f.killOnResponse(resp); got != tc.onResponse {
			t.Errorf("%s: kill on response %v, want %v", tc.name, got, tc.onResponse)
		}
	}
}

// The callbacks call crash when, and only when, the decision says so.
func TestCallbacksCrash(t *testing.T) {
	crashed := 0
	old := crash
	crash = func(*slog.Logger) { crashed++ }
	defer func() { crash = old }()
	fc, _ := compile(nil, &killv3.KillRequest{Probability: pct(100, typev3.FractionalPercent_HUNDRED), Direction: killv3.KillRequest_RESPONSE}, "c")
	f := fc.NewFilter(&fakeCallbacks{}).(*filter)
	req := &headers.Request{Method: "GET", Path: "/"}
	req.Map.Add(DefaultHeader, "true")
	if f.DecodeHeaders(req, true) != httpfilter.Continue || crashed != 0 {
		t.Fatalf("request side: crashed %d times", crashed)
	}
	resp := &headers.Response{Status: 200}
	resp.Map.Add(DefaultHeader, "true")
	f.EncodeHeaders(resp, true)
	if crashed != 1 {
		t.Fatalf("response side: crashed %d times, want 1", crashed)
	}
}
