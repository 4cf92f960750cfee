package ratelimit

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/stats"
)

func status(code rlsv3.RateLimitResponse_Code, rpu, remaining uint32, unit rlsv3.RateLimitResponse_RateLimit_Unit, name string, reset int64) *rlsv3.RateLimitResponse_DescriptorStatus {
	return &rlsv3.RateLimitResponse_DescriptorStatus{Code: code, LimitRemaining: remaining, DurationUntilReset: durationpb.New(0),
		CurrentLimit: &rlsv3.RateLimitResponse_RateLimit{RequestsPerUnit: rpu, Unit: unit, Name: name}}
}

func withReset(s *rlsv3.RateLimitResponse_DescriptorStatus, sec int64) *rlsv3.RateLimitResponse_DescriptorStatus {
	s.DurationUntilReset = &durationpb.Duration{Seconds: sec}
	return s
}

func fields(fs []headers.Field) string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Name+": "+f.Value)
	}
	return strings.Join(out, "; ")
}

// TestXRateLimitHeaders: the draft-03 headers come from the status with
// the least remaining (the first of equals), the limit lists every
// enabled status's quota policy, and descriptor-level options override
// the filter's setting, as Envoy's XRateLimitHeaderUtils.
func TestXRateLimitHeaders(t *testing.T) {
	const ok, over = rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT
	sec, minute, hour := rlsv3.RateLimitResponse_RateLimit_SECOND, rlsv3.RateLimitResponse_RateLimit_MINUTE, rlsv3.RateLimitResponse_RateLimit_HOUR
	unknown := rlsv3.RateLimitResponse_RateLimit_UNKNOWN
	d := func(opts ...route.XRateLimitOption) []route.Descriptor {
		var ds []route.Descriptor
		for _, o := range opts {
			ds = append(ds, route.Descriptor{XRateLimit: o})
		}
		return ds
	}
	un, off, on := route.XRateLimitUnspecified, route.XRateLimitOff, route.XRateLimitDraft03
	cases := []struct {
		name     string
		ds       []route.Descriptor
		def      bool
		statuses []*rlsv3.RateLimitResponse_DescriptorStatus
		want     string
	}{
		{"one", d(un), true, []*rlsv3.RateLimitResponse_DescriptorStatus{withReset(status(ok, 10, 7, minute, "", 0), 42)},
			"x-ratelimit-limit: 10, 10;w=60; x-ratelimit-remaining: 7; x-ratelimit-reset: 42"},
		{"least remaining and names", d(un, un, un), true, []*rlsv3.RateLimitResponse_DescriptorStatus{
			status(ok, 10, 5, sec, "per-ip", 0), withReset(status(over, 1000, 0, hour, "", 0), 9), status(ok, 3, 2, unknown, "", 0)},
			`x-ratelimit-limit: 1000, 10;w=1;name="per-ip", 1000;w=3600; x-ratelimit-remaining: 0; x-ratelimit-reset: 9`},
		{"first of equals", d(un, un), true, []*rlsv3.RateLimitResponse_DescriptorStatus{status(ok, 10, 1, sec, "a", 0), status(ok, 20, 1, sec, "b", 0)},
			`x-ratelimit-limit: 10, 10;w=1;name="a", 20;w=1;name="b"; x-ratelimit-remaining: 1; x-ratelimit-reset: 0`},
		{"no current limit", d(un), true, []*rlsv3.RateLimitResponse_DescriptorStatus{{Code: ok}}, ""},
		{"filter off", d(un), false, []*rlsv3.RateLimitResponse_DescriptorStatus{status(ok, 10, 7, minute, "", 0)}, ""},
		{"descriptor on", d(on), false, []*rlsv3.RateLimitResponse_DescriptorStatus{status(ok, 10, 7, minute, "", 0)},
			"x-ratelimit-limit: 10, 10;w=60; x-ratelimit-remaining: 7; x-ratelimit-reset: 0"},
		{"minimum descriptor off", d(off, un), true, []*rlsv3.RateLimitResponse_DescriptorStatus{status(ok, 10, 1, sec, "", 0), status(ok, 20, 5, sec, "", 0)}, ""},
		{"other descriptor off", d(un, off), true, []*rlsv3.RateLimitResponse_DescriptorStatus{status(ok, 10, 1, sec, "", 0), status(ok, 20, 5, sec, "", 0)},
			"x-ratelimit-limit: 10, 10;w=1; x-ratelimit-remaining: 1; x-ratelimit-reset: 0"},
	}
	for _, tc := range cases {
		if got := fields(appendXRateLimit(nil, tc.ds, tc.def, tc.statuses)); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
}

// TestRetryAfter: the longest reset among the over-limit statuses, at
// least one second; none without an over-limit status.
func TestRetryAfter(t *testing.T) {
	const ok, over = rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT
	s := rlsv3.RateLimitResponse_RateLimit_SECOND
	for _, tc := range []struct {
		statuses []*rlsv3.RateLimitResponse_DescriptorStatus
		want     string
	}{
		{[]*rlsv3.RateLimitResponse_DescriptorStatus{withReset(status(over, 1, 0, s, "", 0), 30), withReset(status(over, 1, 0, s, "", 0), 50), withReset(status(ok, 1, 0, s, "", 0), 90)}, "50"},
		{[]*rlsv3.RateLimitResponse_DescriptorStatus{withReset(status(over, 1, 0, s, "", 0), 0)}, "1"},
		{[]*rlsv3.RateLimitResponse_DescriptorStatus{withReset(status(ok, 1, 0, s, "", 0), 9)}, ""},
	} {
		if got := retryAfter(tc.statuses); got != tc.want {
			t.Errorf("retryAfter = %q, want %q", got, tc.want)
		}
	}
}

// TestCompileErrors: the service must be envoy_grpc over transport V3;
// what Legate does not implement is an error naming its path.
func TestCompileErrors(t *testing.T) {
	const svc = `rate_limit_service: {transport_api_version: V3, grpc_service: {envoy_grpc: {cluster_name: rls}}}`
	cases := []struct{ yaml, want string }{
		{`{domain: d, rate_limit_service: {transport_api_version: V3, grpc_service: {google_grpc: {target_uri: x, stat_prefix: s, channel_credentials: {local_credentials: {}}, call_credentials: [{google_compute_engine: {}}]}}}}`, "filter.rate_limit_service.grpc_service.google_grpc.call_credentials[0]"},
		{`{domain: d, rate_limit_service: {transport_api_version: V3, grpc_service: {envoy_grpc: {cluster_name: rls}, retry_policy: {}}}}`, "grpc_service.retry_policy: field GrpcService.retry_policy is not supported"},
		{`{domain: d, rate_limits: [{stage: 1, actions: [{remote_address: {}}]}], ` + svc + `}`, "filter.rate_limits[0].stage: stage is not supported"},
		{`{domain: d, response_headers_to_add: [{header: {key: x, value: "%BOGUS%"}}], ` + svc + `}`, "filter.response_headers_to_add[0]"},
	}
	for _, tc := range cases {
		msg := &rlv3.RateLimit{}
		if _, err := config.Decode([]byte(tc.yaml), msg, ""); err != nil {
			t.Fatalf("%s: %v", tc.yaml, err)
		}
		_, err := compile(&httpfilter.Context{Stats: stats.NewStore()}, msg, "filter")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %s", tc.yaml, err, tc.want)
		}
	}
	// The loader upgrades V2 and an unset (AUTO) version in config text;
	// a config over xDS has no text to upgrade, and Envoy refuses both.
	for _, v := range []corev3.ApiVersion{corev3.ApiVersion_AUTO, corev3.ApiVersion_V2} {
		msg := &rlv3.RateLimit{}
		if _, err := config.Decode([]byte(`{domain: d, `+svc+`}`), msg, ""); err != nil {
			t.Fatal(err)
		}
		msg.GetRateLimitService().TransportApiVersion = v
		_, err := compile(&httpfilter.Context{Stats: stats.NewStore()}, msg, "filter")
		if want := "filter.rate_limit_service.transport_api_version: V2 (and AUTO)"; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("transport_api_version %s: got %v, want %s", v, err, want)
		}
	}
}

// TestOverrideOption: Envoy accepts RateLimitPerRoute.override_option
// (hidden as not implemented) and never reads it, so Legate compiles the
// per-route config as if it were unset and logs one warning naming it.
func TestOverrideOption(t *testing.T) {
	cases := []struct {
		yaml string
		warn string // substring of the logged warning, "" for none
	}{
		{`{vh_rate_limits: INCLUDE}`, ""},
		{`{override_option: DEFAULT}`, ""},
		{`{vh_rate_limits: INCLUDE, override_option: INCLUDE_POLICY}`, "override_option INCLUDE_POLICY is ignored, as by Envoy"},
		{`{override_option: IGNORE_POLICY, domain: other}`, "override_option IGNORE_POLICY is ignored, as by Envoy"},
	}
	for _, tc := range cases {
		pr := &rlv3.RateLimitPerRoute{}
		if _, err := config.Decode([]byte(tc.yaml), pr, ""); err != nil {
			t.Fatalf("%s: %v", tc.yaml, err)
		}
		var logs bytes.Buffer
		ctx := &httpfilter.Context{Log: slog.New(slog.NewTextHandler(&logs, nil))}
		got, err := compilePerRoute(ctx, pr, "per_route")
		if err != nil {
			t.Errorf("%s: %v", tc.yaml, err)
			continue
		}
		if r := got.(*perRoute); r.vh != pr.GetVhRateLimits() || r.domain != pr.GetDomain() {
			t.Errorf("%s: compiled %+v", tc.yaml, r)
		}
		if tc.warn == "" {
			if logs.Len() != 0 {
				t.Errorf("%s: unexpected log %q", tc.yaml, logs.String())
			}
			continue
		}
		if out := logs.String(); !strings.Contains(out, tc.warn) || !strings.Contains(out, "level=WARN") || !strings.Contains(out, "path=per_route.override_option") {
			t.Errorf("%s: log %q, want a warning with %q at per_route.override_option", tc.yaml, out, tc.warn)
		}
		// A nil context (no logger) compiles too.
		if _, err := compilePerRoute(nil, pr, "per_route"); err != nil {
			t.Errorf("%s: nil context: %v", tc.yaml, err)
		}
	}
}

// TestCompileDefaults: Envoy's defaults — 20ms timeout, 429, 500 on
// error, both request types, the filter's name as metadata namespace —
// and a rate_limited_status under 400 means 429.
func TestCompileDefaults(t *testing.T) {
	msg := &rlv3.RateLimit{}
	y := `{domain: d, rate_limited_status: {code: OK}, rate_limit_service: {transport_api_version: V3, grpc_service: {envoy_grpc: {cluster_name: rls}}}}`
	if _, err := config.Decode([]byte(y), msg, ""); err != nil {
		t.Fatal(err)
	}
	c, err := compile(&httpfilter.Context{Stats: stats.NewStore()}, msg, "filter")
	if err != nil {
		t.Fatal(err)
	}
	f := c.(*filterConfig)
	got := fmt.Sprintf("%v %v %v %v %v %v %v", f.timeout, f.rateLimitedStatus, f.statusOnError, f.reqType, f.mdNamespace, f.envoyRateLimitedHeader, f.failureAllowed())
	if want := fmt.Sprintf("20ms 429 500 %v %s true true", requestBoth, Name); got != want {
		t.Errorf("defaults %s, want %s", got, want)
	}
}
