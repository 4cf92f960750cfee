package hcm

import (
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	uuidv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/request_id/uuid/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// request_id_extension: the UUID extension's two fields, defaults on;
// anything else is refused with its path.
func TestCompileRequestID(t *testing.T) {
	mk := func(m proto.Message) *hcmv3.RequestIDExtension {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		return &hcmv3.RequestIDExtension{TypedConfig: a}
	}
	for _, tc := range []struct {
		name        string
		ext         *hcmv3.RequestIDExtension
		pack, rid   bool
		errContains string
	}{
		{name: "unset", pack: true, rid: true},
		{name: "empty uuid", ext: mk(&uuidv3.UuidRequestIdConfig{}), pack: true, rid: true},
		{name: "no typed_config", ext: &hcmv3.RequestIDExtension{}, pack: true, rid: true},
		{name: "pack off", ext: mk(&uuidv3.UuidRequestIdConfig{PackTraceReason: wrapperspb.Bool(false)}), pack: false, rid: true},
		{name: "sampling off", ext: mk(&uuidv3.UuidRequestIdConfig{UseRequestIdForTraceSampling: wrapperspb.Bool(false)}), pack: true, rid: false},
		{name: "both explicit on", ext: mk(&uuidv3.UuidRequestIdConfig{PackTraceReason: wrapperspb.Bool(true), UseRequestIdForTraceSampling: wrapperspb.Bool(true)}), pack: true, rid: true},
		{name: "another extension", ext: mk(&structpb.Struct{}), errContains: "hcm.request_id_extension.typed_config"},
	} {
		pack, rid, err := compileRequestID(tc.ext, "hcm.request_id_extension")
		switch {
		case tc.errContains != "":
			if err == nil || !strings.Contains(err.Error(), tc.errContains) {
				t.Errorf("%s: error %v, want one naming %s", tc.name, err, tc.errContains)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case pack != tc.pack || rid != tc.rid:
			t.Errorf("%s: pack %v sampling %v, want %v %v", tc.name, pack, rid, tc.pack, tc.rid)
		}
	}
}
