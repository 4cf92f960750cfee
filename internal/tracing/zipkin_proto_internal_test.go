package tracing

import (
	"testing"

	zipkinpb "github.com/openzipkin/zipkin-go/proto/zipkin_proto3"
	"google.golang.org/protobuf/proto"
)

// TestProtoSpans: the v2 model encodes to a ListOfSpans that Zipkin's
// own decoder reads back.
func TestProtoSpans(t *testing.T) {
	for _, tc := range []struct {
		name string
		span map[string]any
		kind string
	}{
		{"server, shared, 128-bit", map[string]any{"traceId": "0123456789abcdef0123456789abcdef", "id": "1122334455667788", "parentId": "8877665544332211",
			"name": "op", "kind": "SERVER", "timestamp": int64(1700000000000000), "duration": int64(1500), "shared": true,
			"localEndpoint": map[string]any{"serviceName": "svc"}, "tags": map[string]string{"k": "v"}}, "SERVER"},
		{"client, 64-bit, debug", map[string]any{"traceId": "0123456789abcdef", "id": "1122334455667788",
			"name": "up", "kind": "CLIENT", "timestamp": int64(1700000000000000), "duration": int64(1), "debug": true,
			"localEndpoint": map[string]any{"serviceName": "svc"}, "tags": map[string]string{}}, "CLIENT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := protoSpans([]map[string]any{tc.span})
			if err != nil {
				t.Fatal(err)
			}
			got, err := zipkinpb.ParseSpans(b, false)
			if err != nil || len(got) != 1 {
				t.Fatalf("decode: %v (%d spans)", err, len(got))
			}
			s := got[0]
			if want := tc.span["traceId"].(string); (s.TraceID.String() != want && s.TraceID.String() != "0000000000000000"+want) || s.ID.String() != tc.span["id"] || s.Name != tc.span["name"] || string(s.Kind) != tc.kind {
				t.Errorf("decoded %+v", s)
			}
			if p, ok := tc.span["parentId"]; ok && (s.ParentID == nil || s.ParentID.String() != p) {
				t.Errorf("parent %v, want %v", s.ParentID, p)
			}
			if s.LocalEndpoint.ServiceName != "svc" || s.Shared != (tc.span["shared"] == true) {
				t.Errorf("decoded %+v", s)
			}
			// zipkin-go's decoder takes debug from its caller: read the field.
			var l zipkinpb.ListOfSpans
			if err := proto.Unmarshal(b, &l); err != nil || l.GetSpans()[0].GetDebug() != (tc.span["debug"] == true) {
				t.Errorf("debug %v (%v)", l.GetSpans()[0].GetDebug(), err)
			}
			if s.Timestamp.UnixMicro() != tc.span["timestamp"] || s.Duration.Microseconds() != tc.span["duration"] {
				t.Errorf("times %v %v", s.Timestamp, s.Duration)
			}
		})
	}
}
