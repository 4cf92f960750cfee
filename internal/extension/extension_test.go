package extension

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestLookupMissing: an Envoy extension Legate lacks (core or contrib) is
// "not implemented", a type that does not exist is "unknown" with a
// suggestion; both are Missing (an is_optional filter may be skipped).
func TestLookupMissing(t *testing.T) {
	for _, tc := range []struct {
		name, url string
		notImpl   bool
	}{
		{"core extension", "type.googleapis.com/envoy.extensions.filters.http.cache.v3.CacheConfig", true},
		{"contrib extension", "type.googleapis.com/envoy.extensions.filters.http.golang.v3alpha.Config", true},
		{"typo", "type.googleapis.com/envoy.extensions.filters.http.cahce.v3.CacheConfig", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Lookup(HTTPFilter, &anypb.Any{TypeUrl: tc.url}, "http_filters[0].typed_config")
			var ni *NotImplementedError
			var ut *UnknownTypeError
			switch {
			case tc.notImpl && !errors.As(err, &ni):
				t.Errorf("error %v, want not implemented", err)
			case !tc.notImpl && !errors.As(err, &ut):
				t.Errorf("error %v, want unknown @type", err)
			}
			if !Missing(err) {
				t.Errorf("Missing(%v) = false", err)
			}
		})
	}
	if Missing(errors.New("other")) {
		t.Error("Missing of another error")
	}
}

// TestLookupUnimplementedCategories: categories Legate registers nothing
// in still tell Envoy's extensions ("not implemented") from typos.
func TestLookupUnimplementedCategories(t *testing.T) {
	for _, tc := range []struct {
		cat Category
		url string
	}{
		{Formatter, "envoy.extensions.formatter.cel.v3.Cel"},
		{AccessLogFilter, "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"},
		{RetryPriority, "envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"},
		{HealthChecker, "envoy.extensions.health_checkers.redis.v3.Redis"},
	} {
		_, err := Lookup(tc.cat, &anypb.Any{TypeUrl: "type.googleapis.com/" + tc.url}, "x.typed_config")
		var ni *NotImplementedError
		if !errors.As(err, &ni) {
			t.Errorf("%s %s: error %v, want not implemented", tc.cat, tc.url, err)
		}
		_, err = Lookup(tc.cat, &anypb.Any{TypeUrl: "type.googleapis.com/" + tc.url + "x"}, "x.typed_config")
		var ut *UnknownTypeError
		if !errors.As(err, &ut) {
			t.Errorf("%s %sx: error %v, want unknown @type", tc.cat, tc.url, err)
		}
	}
}

// An implemented filter's own config given as a per-route config names
// the filter and its per-route type (it used to say "not implemented").
func TestLookupPerRouteWrongType(t *testing.T) {
	Register(Extension{Name: "test.filter", Category: HTTPFilter, Config: &durationpb.Duration{}, PerRoute: &timestamppb.Timestamp{}, Factory: struct{}{}})
	a, _ := anypb.New(&durationpb.Duration{})
	_, err := LookupPerRoute(a, "typed_per_filter_config[\"test.filter\"]")
	if err == nil || !strings.Contains(err.Error(), "is the config of HTTP filter test.filter; its per-route config is google.protobuf.Timestamp") {
		t.Fatalf("error %v", err)
	}
	b, _ := anypb.New(&timestamppb.Timestamp{})
	if _, err := LookupPerRoute(b, "p"); err != nil {
		t.Fatalf("the per-route type: %v", err)
	}
}
