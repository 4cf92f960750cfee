package extension

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
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
