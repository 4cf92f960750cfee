package route

import (
	"errors"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
)

// TestOptionalFilterConfig: FilterConfig.is_optional skips only a config
// of a filter Legate lacks, as Envoy; an invalid config of a filter it has
// is still an error (it used to be dropped silently).
func TestOptionalFilterConfig(t *testing.T) {
	invalid := errors.New("max_request_bytes: value must be greater than 0")
	opts := Options{PerFilterConfig: func(name string, a *anypb.Any, path string) (any, error) {
		switch name {
		case "missing":
			return nil, &extension.NotImplementedError{Path: path, Msg: "not implemented by legate"}
		case "invalid":
			return nil, config.Errorf(path, "%v", invalid)
		}
		return name, nil
	}}
	y := `name: rc
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - match: {prefix: /}
    direct_response: {status: 200}
    typed_per_filter_config:
      %s: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, is_optional: true, config: {"@type": type.googleapis.com/google.protobuf.Struct}}`
	for _, tc := range []struct{ name, err string }{
		{"missing", ""},
		{"invalid", "greater than 0"},
		{"ok", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := &routev3.RouteConfiguration{}
			if _, err := config.Decode([]byte(strings.Replace(y, "%s", tc.name, 1)), rc, "route_config"); err != nil {
				t.Fatal(err)
			}
			_, err := Compile(rc, "route_config", opts)
			if tc.err == "" && err != nil {
				t.Fatalf("error %v", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}

// A FilterConfig may be given as a TypedStruct (as every Any may): it is
// unwrapped into its fields, disabled included.
func TestFilterConfigInTypedStruct(t *testing.T) {
	opts := Options{PerFilterConfig: func(name string, a *anypb.Any, path string) (any, error) { return name, nil }}
	y := `name: rc
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - match: {prefix: /}
    direct_response: {status: 200}
typed_per_filter_config:
  f: {"@type": type.googleapis.com/xds.type.v3.TypedStruct, type_url: type.googleapis.com/envoy.config.route.v3.FilterConfig, value: {disabled: true}}`
	rc := &routev3.RouteConfiguration{}
	if _, err := config.Decode([]byte(y), rc, "route_config"); err != nil {
		t.Fatal(err)
	}
	tbl, err := Compile(rc, "route_config", opts)
	if err != nil {
		t.Fatal(err)
	}
	fc := tbl.PerFilter["f"]
	if fc == nil || !fc.Disabled {
		t.Fatalf("per-filter config %+v, want the TypedStruct's FilterConfig with disabled: true", fc)
	}
}
