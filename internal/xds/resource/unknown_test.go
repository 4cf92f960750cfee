package resource

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// withUnknownField is a Cluster serialized with a field number no Envoy
// version defines inside its connect_timeout (as a newer management
// server's resource would carry).
func withUnknownField(t *testing.T) *anypb.Any {
	t.Helper()
	dur := protowire.AppendTag(nil, 9999, protowire.VarintType)
	dur = protowire.AppendVarint(dur, 1)
	ct := &durationpb.Duration{}
	if err := proto.Unmarshal(dur, ct); err != nil {
		t.Fatal(err)
	}
	ct.Seconds = 1
	c := &clusterv3.Cluster{Name: "c", ConnectTimeout: ct}
	b, err := proto.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return &anypb.Any{TypeUrl: ClusterURL, Value: b}
}

// Envoy's three behaviours for unknown fields in dynamic resources: warn
// and count (default), reject (--reject-unknown-dynamic-fields), ignore
// (--ignore-unknown-dynamic-fields).
func TestUnknownFieldPolicy(t *testing.T) {
	defer SetUnknownFieldPolicy(WarnUnknown)
	ct := ForURL(ClusterURL)
	a := withUnknownField(t)

	before := UnknownFieldsSeen.Load()
	if _, err := ct.Decode(a); err != nil {
		t.Fatalf("warn policy refused the resource: %v", err)
	}
	if UnknownFieldsSeen.Load() != before+1 {
		t.Errorf("unknown fields not counted under the default policy")
	}

	SetUnknownFieldPolicy(RejectUnknown)
	_, err := ct.Decode(a)
	if err == nil || !strings.Contains(err.Error(), "cluster c: unknown fields at connect_timeout") {
		t.Fatalf("reject policy: %v", err)
	}

	SetUnknownFieldPolicy(IgnoreUnknown)
	before = UnknownFieldsSeen.Load()
	if _, err := ct.Decode(a); err != nil || UnknownFieldsSeen.Load() != before {
		t.Errorf("ignore policy: err %v, counted %d", err, UnknownFieldsSeen.Load()-before)
	}

	// A resource without unknown fields is never counted or refused.
	SetUnknownFieldPolicy(RejectUnknown)
	clean, _ := anypb.New(&clusterv3.Cluster{Name: "c", ConnectTimeout: durationpb.New(1e9)})
	if _, err := ct.Decode(clean); err != nil {
		t.Errorf("clean resource refused: %v", err)
	}
}
