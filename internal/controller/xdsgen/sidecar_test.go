package xdsgen

// Golden tests of sidecar configuration (Envoy Gateway style): the
// objects in testdata/sidecar/in, one sidecar node and options per case,
// and every resource rendered as YAML in testdata/sidecar/<case>.golden.
// `go test ./internal/controller/xdsgen -run TestSidecarGolden -update`
// rewrites the golden files; review their diff.

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/mesh"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func sidecarObjects(t *testing.T) *source.Objects {
	t.Helper()
	objs, err := source.LoadManifests("testdata/sidecar/in")
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

var web1 = mesh.NodeID{IP: netip.MustParseAddr("10.0.0.10"), Pod: "web-1", Namespace: "shop"}

func sidecarCases() []struct {
	name string
	node mesh.NodeID
	opt  SidecarOptions
} {
	return []struct {
		name string
		node mesh.NodeID
		opt  SidecarOptions
	}{
		{"permissive-allow-any", web1, SidecarOptions{}},
		{"strict-registry-only", web1, SidecarOptions{MTLS: MTLSStrict, OutboundPolicy: OutboundRegistryOnly, TrustDomain: "example.org"}},
		// A pod the store does not know (yet): outbound only.
		{"unknown-pod", mesh.NodeID{IP: netip.MustParseAddr("10.0.9.9"), Pod: "new-0", Namespace: "old"}, SidecarOptions{}},
	}
}

// sidecarMessages lists the resources in the order of the golden file.
func sidecarMessages(r *SidecarResources) []proto.Message {
	var msgs []proto.Message
	for _, x := range r.Listeners {
		msgs = append(msgs, x)
	}
	for _, x := range r.Routes {
		msgs = append(msgs, x)
	}
	for _, x := range r.Clusters {
		msgs = append(msgs, x)
	}
	for _, x := range r.Endpoints {
		msgs = append(msgs, x)
	}
	return msgs
}

func sidecarYAML(t *testing.T, r *SidecarResources) []byte {
	t.Helper()
	return goldenYAML(t, sidecarMessages(r), map[string]any{"notes": r.Notes})
}

// goldenYAML renders resources (as Any, proto field names) under
// "resources", with the other keys of doc, as YAML.
func goldenYAML(t *testing.T, msgs []proto.Message, doc map[string]any) []byte {
	t.Helper()
	var list []json.RawMessage
	for _, m := range msgs {
		j, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(mustAny(m))
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, j)
	}
	doc["resources"] = list
	j, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

// checkGolden compares a rendering with its golden file, or rewrites the
// file under -update (and reports false: nothing more to check).
func checkGolden(t *testing.T, path string, got []byte) bool {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return false
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the rendering (run with -update and review the diff):\n%s", path, firstDiff(string(want), string(got)))
	}
	return true
}

func TestSidecarGolden(t *testing.T) {
	objs := sidecarObjects(t)
	for _, tc := range sidecarCases() {
		t.Run(tc.name, func(t *testing.T) {
			r := Sidecar(objs, tc.node, tc.opt)
			for _, m := range sidecarMessages(r) {
				if v, ok := m.(interface{ ValidateAll() error }); ok {
					if err := v.ValidateAll(); err != nil {
						t.Errorf("%T fails Envoy's validation: %v", m, err)
					}
				}
			}
			got := sidecarYAML(t, r)
			if !checkGolden(t, filepath.Join("testdata", "sidecar", tc.name+".golden"), got) {
				return
			}
			// Deterministic: a second rendering is identical.
			if again := sidecarYAML(t, Sidecar(objs, tc.node, tc.opt)); !bytes.Equal(got, again) {
				t.Error("two renderings of the same objects differ")
			}
		})
	}
}

func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return "line " + itoa(i+1) + ":\n- " + a + "\n+ " + b
		}
	}
	return ""
}

func TestPortProtocol(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, tc := range []struct {
		name string
		app  *string
		want protocol
	}{
		{"http", nil, protoHTTP},
		{"http-web", nil, protoHTTP},
		{"HTTP", nil, protoHTTP},
		{"http2", nil, protoHTTP2},
		{"grpc-api", nil, protoHTTP2},
		{"h2c", nil, protoHTTP2},
		{"https", nil, protoTCP},
		{"httpx", nil, protoTCP},
		{"tcp", nil, protoTCP},
		{"", nil, protoTCP},
		{"web", s("http"), protoHTTP},
		{"http", s("tcp"), protoTCP},
		{"x", s("kubernetes.io/h2c"), protoHTTP2},
		{"x", s("grpc"), protoHTTP2},
	} {
		if got := portProtocol(tc.name, tc.app); got != tc.want {
			t.Errorf("portProtocol(%q, %v) = %v, want %v", tc.name, tc.app, got, tc.want)
		}
	}
}

func TestSidecarOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		opt SidecarOptions
		ok  bool
	}{
		{SidecarOptions{}, true},
		{SidecarOptions{MTLS: MTLSStrict, OutboundPolicy: OutboundRegistryOnly, TrustDomain: "example.org"}, true},
		{SidecarOptions{MTLS: "DISABLE"}, false},
		{SidecarOptions{OutboundPolicy: "allow_any"}, false},
		{SidecarOptions{TrustDomain: "spiffe://x"}, false},
	} {
		if err := tc.opt.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v", tc.opt, err)
		}
	}
}
