package upstream

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestAvoidingLoad(t *testing.T) {
	for _, tc := range []struct {
		name   string
		health []float64
		mask   uint64
		want   []int
		ok     bool
	}{
		{"P0 avoided, P1 takes all", []float64{100, 100}, 1, []int{0, 100}, true},
		{"P1 avoided", []float64{100, 100}, 2, []int{100, 100}, true},
		{"P0 avoided, P1 and P2 share by health", []float64{100, 50, 50}, 1, []int{0, 50, 100}, true},
		{"partly healthy rest normalized", []float64{100, 20, 20}, 1, []int{0, 50, 100}, true},
		{"everything avoided", []float64{100, 100}, 3, nil, false},
		{"nothing left healthy", []float64{100, 0}, 1, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := &hostSet{health: tc.health}
			got, ok := hs.avoidingLoad(tc.mask, nil)
			if ok != tc.ok || (ok && !equalInts(got, tc.want)) {
				t.Fatalf("avoidingLoad = %v %v, want %v %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHostFilter(t *testing.T) {
	lb := func(fields map[string]any) *Host {
		s, err := structpb.NewStruct(fields)
		if err != nil {
			t.Fatal(err)
		}
		return newHost("10.0.0.1:8080", HostConfig{Weight: 1, Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.lb": s}}})
	}
	old, _ := structpb.NewStruct(map[string]any{"version": "old"})
	empty := &structpb.Struct{}
	for _, tc := range []struct {
		name string
		f    *HostFilter
		h    *Host
		want bool
	}{
		{"nil filter", nil, lb(map[string]any{"canary": true}), false},
		{"canary", &HostFilter{Canary: true}, lb(map[string]any{"canary": true}), true},
		{"canary false", &HostFilter{Canary: true}, lb(map[string]any{"canary": false}), false},
		{"metadata match", &HostFilter{Metadata: []*structpb.Struct{old}}, lb(map[string]any{"version": "old", "zone": "a"}), true},
		{"metadata differs", &HostFilter{Metadata: []*structpb.Struct{old}}, lb(map[string]any{"version": "new"}), false},
		{"metadata missing", &HostFilter{Metadata: []*structpb.Struct{old}}, lb(map[string]any{}), false},
		{"empty labels omit nothing", &HostFilter{Metadata: []*structpb.Struct{empty}}, lb(map[string]any{"version": "old"}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.f.Rejects(tc.h); got != tc.want {
				t.Fatalf("Rejects = %v, want %v", got, tc.want)
			}
		})
	}
}
