package streaminfo_test

import (
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/streaminfo"
)

// TestFrozenDynamicMetadata: a shared Struct is installed as it is, and
// any later write to its namespace — one value, several, or another
// shared Struct — lands in a copy, so the shared one never changes.
func TestFrozenDynamicMetadata(t *testing.T) {
	shared := func() *structpb.Struct {
		return &structpb.Struct{Fields: map[string]*structpb.Value{"result": structpb.NewStringValue("allowed")}}
	}
	for _, c := range []struct {
		name  string
		write func(i *streaminfo.Info)
		want  map[string]string // the namespace's fields after the write
	}{
		{"no write", func(*streaminfo.Info) {}, map[string]string{"result": "allowed"}},
		{"one value", func(i *streaminfo.Info) { i.SetDynamicMetadataValue("ns", "k", structpb.NewStringValue("v")) },
			map[string]string{"result": "allowed", "k": "v"}},
		{"overwrite", func(i *streaminfo.Info) { i.SetDynamicMetadataValue("ns", "result", structpb.NewStringValue("denied")) },
			map[string]string{"result": "denied"}},
		{"fields", func(i *streaminfo.Info) {
			i.SetDynamicMetadata("ns", map[string]*structpb.Value{"a": structpb.NewStringValue("1")})
		}, map[string]string{"result": "allowed", "a": "1"}},
		{"another shared", func(i *streaminfo.Info) {
			i.SetFrozenDynamicMetadata("ns", &structpb.Struct{Fields: map[string]*structpb.Value{"b": structpb.NewStringValue("2")}})
		}, map[string]string{"result": "allowed", "b": "2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := shared()
			var i streaminfo.Info
			i.SetFrozenDynamicMetadata("ns", st)
			c.write(&i)
			if len(st.Fields) != 1 || st.Fields["result"].GetStringValue() != "allowed" {
				t.Fatalf("the shared Struct changed: %v", st.Fields)
			}
			got := i.DynamicMetadata["ns"].GetFields()
			if len(got) != len(c.want) {
				t.Fatalf("fields %v, want %v", got, c.want)
			}
			for k, v := range c.want {
				if got[k].GetStringValue() != v {
					t.Errorf("%s = %q, want %q", k, got[k].GetStringValue(), v)
				}
			}
			// A second write after the copy writes in place.
			i.SetDynamicMetadataValue("ns", "z", structpb.NewStringValue("last"))
			if st.Fields["z"] != nil || i.DynamicMetadata["ns"].Fields["z"].GetStringValue() != "last" {
				t.Errorf("second write: shared %v, request's %v", st.Fields, i.DynamicMetadata["ns"].Fields)
			}
		})
	}
	// More shared namespaces than the Info remembers: the extra ones are
	// copied at once, so writing to them is safe too.
	var i streaminfo.Info
	structs := map[string]*structpb.Struct{}
	for _, ns := range []string{"a", "b", "c", "d"} {
		structs[ns] = shared()
		i.SetFrozenDynamicMetadata(ns, structs[ns])
	}
	for ns, st := range structs {
		i.SetDynamicMetadataValue(ns, "x", structpb.NewStringValue("y"))
		if st.Fields["x"] != nil {
			t.Errorf("namespace %s: the shared Struct changed", ns)
		}
	}
}
