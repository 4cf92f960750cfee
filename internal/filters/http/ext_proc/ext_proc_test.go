package ext_proc

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
)

func TestMergePerRoute(t *testing.T) {
	streamed := &mode{reqHeaders: true, reqBody: extprocv3.ProcessingMode_STREAMED}
	buffered := &mode{respBody: extprocv3.ProcessingMode_BUFFERED}
	tA, tB := &target{cluster: "a"}, &target{cluster: "b"}
	kv := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, Value: v} }
	for _, tc := range []struct {
		name        string
		less, more  *perRoute
		wantMode    *mode
		wantTarget  *target
		wantMD      map[string]string
		wantFwd     []string
		wantDisable bool
	}{
		{name: "more specific mode wins", less: &perRoute{mode: streamed}, more: &perRoute{mode: buffered}, wantMode: buffered},
		{name: "less specific mode kept", less: &perRoute{mode: streamed, target: tA}, more: &perRoute{}, wantMode: streamed, wantTarget: tA},
		{name: "disabled drops the mode", less: &perRoute{mode: streamed}, more: &perRoute{disabled: true}, wantDisable: true},
		{name: "target override", less: &perRoute{target: tA}, more: &perRoute{target: tB}, wantTarget: tB},
		{name: "metadata merged by key", less: &perRoute{md: []*corev3.HeaderValue{kv("a", "1"), kv("b", "1")}}, more: &perRoute{md: []*corev3.HeaderValue{kv("b", "2"), kv("c", "3")}},
			wantMD: map[string]string{"a": "1", "b": "2", "c": "3"}},
		{name: "namespaces replaced whole", less: &perRoute{fwdNS: []string{"x", "y"}, fwdSet: true}, more: &perRoute{fwdNS: []string{"z"}, fwdSet: true}, wantFwd: []string{"z"}},
		{name: "namespaces inherited", less: &perRoute{fwdNS: []string{"x"}, fwdSet: true}, more: &perRoute{}, wantFwd: []string{"x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := merge(tc.less, tc.more)
			if m.disabled != tc.wantDisable || m.mode != tc.wantMode || m.target != tc.wantTarget {
				t.Fatalf("merged %+v", m)
			}
			if tc.wantMD != nil {
				if len(m.md) != len(tc.wantMD) {
					t.Fatalf("metadata %v", m.md)
				}
				for _, h := range m.md {
					if tc.wantMD[h.GetKey()] != h.GetValue() {
						t.Fatalf("metadata %v", m.md)
					}
				}
			}
			if tc.wantFwd != nil && (len(m.fwdNS) != len(tc.wantFwd) || m.fwdNS[0] != tc.wantFwd[0]) {
				t.Fatalf("forwarding namespaces %v", m.fwdNS)
			}
		})
	}
}

func TestReplaceSpaces(t *testing.T) {
	if got := replaceSpaces("Invalid attempt to modify\tx"); got != "Invalid_attempt_to_modify_x" {
		t.Fatal(got)
	}
}

func TestRemoveContentLength(t *testing.T) {
	for _, tc := range []struct {
		mode extprocv3.ProcessingMode_BodySendMode
		hdrs bool
		want bool
	}{
		{extprocv3.ProcessingMode_NONE, true, false},
		{extprocv3.ProcessingMode_STREAMED, true, true},
		{extprocv3.ProcessingMode_BUFFERED_PARTIAL, true, true},
		{extprocv3.ProcessingMode_BUFFERED, true, false},
		{extprocv3.ProcessingMode_BUFFERED, false, true},
	} {
		s := &dirState{bodyMode: tc.mode, sendHeaders: tc.hdrs}
		if got := s.removeContentLength(); got != tc.want {
			t.Errorf("%v headers=%v: %v, want %v", tc.mode, tc.hdrs, got, tc.want)
		}
	}
}
