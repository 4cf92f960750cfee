package runtime

import (
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func loader(t *testing.T, kv map[string]any) *Loader {
	t.Helper()
	st, err := structpb.NewStruct(kv)
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(&bootstrapv3.LayeredRuntime{Layers: []*bootstrapv3.RuntimeLayer{
		{Name: "static", LayerSpecifier: &bootstrapv3.RuntimeLayer_StaticLayer{StaticLayer: st}},
		{Name: "admin", LayerSpecifier: &bootstrapv3.RuntimeLayer_AdminLayer_{AdminLayer: &bootstrapv3.RuntimeLayer_AdminLayer{}}},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func pct(num uint32, key string) *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{RuntimeKey: key, DefaultValue: &typev3.FractionalPercent{Numerator: num}}
}

func TestFractional(t *testing.T) {
	l := loader(t, map[string]any{"on": 100, "off": 0})
	for _, tc := range []struct {
		name string
		p    *corev3.RuntimeFractionalPercent
		rt   *Loader
		want bool
	}{
		{"unset is off", nil, l, false},
		{"default 100", pct(100, ""), l, true},
		{"default 0", pct(0, ""), l, false},
		{"key overrides default up", pct(0, "on"), l, true},
		{"key overrides default down", pct(100, "off"), l, false},
		{"absent key keeps default", pct(100, "missing"), l, true},
		{"no loader keeps default", pct(100, "off"), nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFractional(tc.rt, tc.p)
			for range 20 {
				if got := f.Roll(); got != tc.want {
					t.Fatalf("Roll() = %v, want %v", got, tc.want)
				}
			}
		})
	}
	// The admin layer changes the answer without recompiling.
	f := NewFractional(l, pct(100, "live"))
	if err := l.SetAdmin(map[string]string{"live": "0"}); err != nil {
		t.Fatal(err)
	}
	if f.Roll() {
		t.Fatal("admin override to 0 % not seen")
	}
}

func TestFeatureFlag(t *testing.T) {
	l := loader(t, map[string]any{"yes": "true", "no": "false", "junk": "maybe"})
	flag := func(def bool, key string) *corev3.RuntimeFeatureFlag {
		return &corev3.RuntimeFeatureFlag{RuntimeKey: key, DefaultValue: wrapperspb.Bool(def)}
	}
	for _, tc := range []struct {
		name string
		f    *corev3.RuntimeFeatureFlag
		want bool
	}{
		{"unset is on", nil, true},
		{"no default is on", &corev3.RuntimeFeatureFlag{RuntimeKey: "x"}, true},
		{"default false", flag(false, ""), false},
		{"key turns on", flag(false, "yes"), true},
		{"key turns off", flag(true, "no"), false},
		{"invalid value keeps default", flag(false, "junk"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NewFeatureFlag(l, tc.f).Enabled(); got != tc.want {
				t.Fatalf("Enabled() = %v, want %v", got, tc.want)
			}
		})
	}
}
