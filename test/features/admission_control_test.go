// Client-side throttling: envoy.filters.http.admission_control.

package features_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestAdmissionControl: envoy.filters.http.admission_control — while the
// upstream fails (503s, failures by the default HTTP criteria), the
// filter starts rejecting requests itself with an empty 503 (details
// denied_by_admission_control) that never reach the upstream, counted in
// admission_control.rq_rejected; once the upstream succeeds again and the
// failures leave the 2 s sampling window, every request passes again.
// Rejection is probabilistic: the test only asks that it happens, with
// generous bounds, never how fast.
func TestAdmissionControl(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	var served atomic.Int64
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if failing.Load() {
			w.WriteHeader(503)
			w.Write([]byte("upstream down"))
			return
		}
		w.Write([]byte("ok"))
	}))
	logPath := filepath.Join(t.TempDir(), "a.log")
	p := start(t, cfg{
		hcm: `access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `, log_format: {text_format: "%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n"}}}]
		  http_filters: [{name: envoy.filters.http.admission_control, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.admission_control.v3.AdmissionControl,
		    enabled: {default_value: true, runtime_key: admission_control.enabled},
		    sampling_window: 2s,
		    aggression: {default_value: 1.0, runtime_key: admission_control.aggression},
		    sr_threshold: {default_value: {value: 95.0}, runtime_key: admission_control.sr_threshold},
		    max_rejection_probability: {default_value: {value: 90.0}, runtime_key: admission_control.max_rejection_probability},
		    success_criteria: {http_criteria: {http_success_status: [{start: 100, end: 400}, {start: 404, end: 404}]}, grpc_criteria: {grpc_success_status: [0, 1]}}}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()
	sent, localRejects := 0, 0
	testutil.Eventually(t, 60*time.Second, func() bool {
		for i := 0; i < 20; i++ {
			code, _, body := testutil.Get(t, c, p.URL("http", "/"))
			sent++
			switch {
			case code == 503 && body == "":
				localRejects++
			case code == 503 && body == "upstream down":
			default:
				t.Fatalf("while failing: %d %q", code, body)
			}
		}
		return localRejects >= 20
	}, "no request was rejected while the upstream failed")
	if got := p.Stat(t, "http.ingress.admission_control.rq_rejected"); got != int64(localRejects) {
		t.Errorf("rq_rejected = %d, want %d", got, localRejects)
	}
	if got := served.Load(); got != int64(sent-localRejects) {
		t.Errorf("the upstream served %d requests, want %d (rejected ones never reach it)", got, sent-localRejects)
	}
	if got := p.Stat(t, "http.ingress.admission_control.rq_failure"); got != served.Load() {
		t.Errorf("rq_failure = %d, want %d", got, served.Load())
	}

	failing.Store(false)
	testutil.Eventually(t, 60*time.Second, func() bool {
		for i := 0; i < 30; i++ {
			if code, _, _ := testutil.Get(t, c, p.URL("http", "/")); code != 200 {
				return false
			}
		}
		return true
	}, "requests are still rejected after the upstream recovered")
	if got := p.Stat(t, "http.ingress.admission_control.rq_success"); got < 30 {
		t.Errorf("rq_success = %d, want at least 30", got)
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "503 denied_by_admission_control\n")
	}, "the access log lacks denied_by_admission_control")
}

// TestAdmissionControlConfigErrors: configs Envoy refuses are refused.
func TestAdmissionControlConfigErrors(t *testing.T) {
	for _, tc := range []struct{ fields, want string }{
		{`success_criteria: {}, sr_threshold: {default_value: {value: 0.5}, runtime_key: k}`, "Success rate threshold cannot be less than 1.0%"},
		{`success_criteria: {http_criteria: {http_success_status: [{start: 500, end: 700}]}}`, "invalid HTTP range: [500, 700)"},
		{`success_criteria: {grpc_criteria: {grpc_success_status: [20]}}`, "invalid gRPC code 20"},
	} {
		_, err := testutil.TryStartProxy(t, cfg{
			hcm: `http_filters: [{name: envoy.filters.http.admission_control, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.admission_control.v3.AdmissionControl, ` + tc.fields + `}},
			  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
			vhosts:   vhost("{match: {prefix: /}, direct_response: {status: 200}}"),
			clusters: "[]",
		}.String(), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.fields, err, tc.want)
		}
	}
}
