package runtime

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/stats"
)

func staticLayer(t *testing.T, name string, kv map[string]any) *bootstrapv3.RuntimeLayer {
	t.Helper()
	st, err := structpb.NewStruct(kv)
	if err != nil {
		t.Fatal(err)
	}
	return &bootstrapv3.RuntimeLayer{Name: name, LayerSpecifier: &bootstrapv3.RuntimeLayer_StaticLayer{StaticLayer: st}}
}

func diskLayer(name, root, sub string, appendCluster bool) *bootstrapv3.RuntimeLayer {
	return &bootstrapv3.RuntimeLayer{Name: name, LayerSpecifier: &bootstrapv3.RuntimeLayer_DiskLayer_{DiskLayer: &bootstrapv3.RuntimeLayer_DiskLayer{
		SymlinkRoot: root, Subdirectory: sub, AppendServiceCluster: appendCluster}}}
}

func adminLayer(name string) *bootstrapv3.RuntimeLayer {
	return &bootstrapv3.RuntimeLayer{Name: name, LayerSpecifier: &bootstrapv3.RuntimeLayer_AdminLayer_{AdminLayer: &bootstrapv3.RuntimeLayer_AdminLayer{}}}
}

func rtdsLayer(name, resource string) *bootstrapv3.RuntimeLayer {
	return &bootstrapv3.RuntimeLayer{Name: name, LayerSpecifier: &bootstrapv3.RuntimeLayer_RtdsLayer_{RtdsLayer: &bootstrapv3.RuntimeLayer_RtdsLayer{
		Name: resource, RtdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}}}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, v := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// swap points root/current at root/<target> by renaming a new symlink
// over it, the atomic swap Envoy's docs prescribe.
func swap(t *testing.T, root, target string) {
	t.Helper()
	tmp := filepath.Join(root, "current.tmp")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join(root, target), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(root, "current")); err != nil {
		t.Fatal(err)
	}
}

func TestLayerMerge(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, filepath.Join(root, "v1"), map[string]string{
		"envoy/a":            "disk",
		"envoy/nested/b":     "2\n",
		"envoy_override/c/a": "cluster-specific",
	})
	swap(t, root, "v1")
	st := stats.NewStore()
	l, err := NewWith(&bootstrapv3.LayeredRuntime{Layers: []*bootstrapv3.RuntimeLayer{
		staticLayer(t, "base", map[string]any{"a": "static", "s": "only-static", "n": map[string]any{"x": 1.5, "y": true}}),
		diskLayer("disk", filepath.Join(root, "current"), "envoy", false),
		diskLayer("override", filepath.Join(root, "current"), "envoy_override", true),
		rtdsLayer("rtds", "some_resource"),
		adminLayer("admin"),
	}}, Options{Stats: st, ServiceCluster: "c"})
	if err != nil {
		t.Fatal(err)
	}
	snap := l.Snapshot()
	for k, want := range map[string]string{"a": "cluster-specific", "s": "only-static", "n.x": "1.5", "n.y": "true", "nested.b": "2"} {
		if got, _ := snap.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if got, want := snap.Layers(), []string{"base", "disk", "override", "rtds", "admin"}; !reflect.DeepEqual(got, want) {
		t.Errorf("layers = %v, want %v", got, want)
	}
	if !l.SetRTDS("some_resource", map[string]string{"a": "rtds"}) {
		t.Fatal("SetRTDS found no layer")
	}
	if got, _ := l.Snapshot().Get("a"); got != "rtds" {
		t.Errorf("after RTDS a = %q", got)
	}
	if err := l.SetAdmin(map[string]string{"a": "admin"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.Snapshot().Get("a"); got != "admin" {
		t.Errorf("after admin a = %q", got)
	}
	if v := st.Gauge("runtime.admin_overrides_active").Value(); v != 1 {
		t.Errorf("admin_overrides_active = %d", v)
	}
	d := l.Snapshot().Dump()
	e := d["entries"].(map[string]any)["a"].(map[string]any)
	if got, want := e["layer_values"], []string{"static", "disk", "cluster-specific", "rtds", "admin"}; !reflect.DeepEqual(got, want) {
		t.Errorf("layer_values = %v, want %v", got, want)
	}
	if e["final_value"] != "admin" {
		t.Errorf("final_value = %v", e["final_value"])
	}
	// An empty value removes the admin key.
	if err := l.SetAdmin(map[string]string{"a": ""}); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.Snapshot().Get("a"); got != "rtds" {
		t.Errorf("after admin removal a = %q", got)
	}
	if v := st.Gauge("runtime.admin_overrides_active").Value(); v != 0 {
		t.Errorf("admin_overrides_active = %d", v)
	}
	if v := st.Gauge("runtime.num_layers").Value(); v != 5 {
		t.Errorf("num_layers = %d", v)
	}
	if v := st.Gauge("runtime.num_keys").Value(); v != int64(len(l.Snapshot().Keys())) {
		t.Errorf("num_keys = %d", v)
	}
	// Two disk layers loaded: Envoy counts override_dir_exists (its test
	// is "more than one").
	if v := st.Counter("runtime.override_dir_exists").Value(); v == 0 {
		t.Error("override_dir_exists not counted")
	}
	if v := st.Counter("runtime.load_success").Value(); v != 4 {
		t.Errorf("load_success = %d, want 4 (new, rtds, admin set, admin remove)", v)
	}
}

func TestDefaults(t *testing.T) {
	l, err := New(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l.Snapshot().Layers(), []string{"base", "admin"}; !reflect.DeepEqual(got, want) {
		t.Errorf("default layers = %v, want %v", got, want)
	}
	l, err = New(&bootstrapv3.LayeredRuntime{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l.Snapshot().Layers(), []string{""}; !reflect.DeepEqual(got, want) {
		t.Errorf("empty layered_runtime layers = %q, want %q", got, want)
	}
	if err := l.SetAdmin(map[string]string{"k": "v"}); err != nil {
		t.Errorf("the implied admin layer: %v", err)
	}
	l, _ = New(&bootstrapv3.LayeredRuntime{Layers: []*bootstrapv3.RuntimeLayer{staticLayer(t, "s", nil)}}, nil)
	if err := l.SetAdmin(map[string]string{"k": "v"}); err == nil || !strings.Contains(err.Error(), "No admin layer specified") {
		t.Errorf("SetAdmin without an admin layer: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	list, _ := structpb.NewStruct(map[string]any{"k": []any{1, 2}})
	for _, tc := range []struct {
		name   string
		layers []*bootstrapv3.RuntimeLayer
		want   string
	}{
		{"duplicate name", []*bootstrapv3.RuntimeLayer{adminLayer("x"), staticLayer(t, "x", nil)}, "Duplicate layer name: x"},
		{"two admin layers", []*bootstrapv3.RuntimeLayer{adminLayer("a"), adminLayer("b")}, "Too many admin layers"},
		{"list value", []*bootstrapv3.RuntimeLayer{{Name: "s", LayerSpecifier: &bootstrapv3.RuntimeLayer_StaticLayer{StaticLayer: list}}}, "Invalid runtime entry value for k"},
		{"no layer", []*bootstrapv3.RuntimeLayer{{Name: "e"}}, "has no layer"},
		{"rtds without source", []*bootstrapv3.RuntimeLayer{{Name: "r", LayerSpecifier: &bootstrapv3.RuntimeLayer_RtdsLayer_{RtdsLayer: &bootstrapv3.RuntimeLayer_RtdsLayer{Name: "r"}}}}, "rtds_config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(&bootstrapv3.LayeredRuntime{Layers: tc.layers}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParseStruct(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      map[string]any
		want    map[string]string
		wantErr string
	}{
		{"scalars", map[string]any{"s": "x", "n": 3.0, "b": false}, map[string]string{"s": "x", "n": "3", "b": "false"}, ""},
		{"nested", map[string]any{"a": map[string]any{"b": map[string]any{"c": "d"}}}, map[string]string{"a.b.c": "d"}, ""},
		{"fraction", map[string]any{"f": map[string]any{"numerator": 5.0, "denominator": "TEN_THOUSAND"}}, map[string]string{"f.numerator": "5", "f.denominator": "TEN_THOUSAND"}, ""},
		{"null", map[string]any{"a": map[string]any{"n": nil}}, nil, "Invalid runtime entry value for a.n"},
		{"list", map[string]any{"l": []any{"x"}}, nil, "Invalid runtime entry value for l"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := structpb.NewStruct(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseStruct(st)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseStruct = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestReadTree(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"plain":          "value",
		"trailing":       "value  \n\n",
		"comments":       "# a placeholder\n",
		"multi":          "one\n# skipped\ntwo \n",
		"leading":        "  kept",
		"a/b/c":          "deep",
		".hidden":        "dotfiles are keys too",
		"health_check/x": "5",
	})
	if err := os.Symlink(filepath.Join(dir, "plain"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	got, err := ReadTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"plain": "value", "trailing": "value", "comments": "", "multi": "one\ntwo",
		"leading": "  kept", "a.b.c": "deep", ".hidden": "dotfiles are keys too", "health_check.x": "5", "link": "value"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadTree =\n%q\nwant\n%q", got, want)
	}
	// Deeper than 16 levels: Envoy's error.
	deep := filepath.Join(dir, "d")
	p := deep
	for range 17 {
		p = filepath.Join(p, "x")
	}
	writeFiles(t, p, map[string]string{"k": "v"})
	if _, err := ReadTree(deep); err == nil || !strings.Contains(err.Error(), "Walk recursion depth exceeded 16") {
		t.Errorf("deep tree: %v", err)
	}
}

// A swap to a tree that does not load keeps the layer's last good values
// and counts load_error; a swap to a good one loads it; a swap to a
// missing directory drops the layer.
func TestDiskSwap(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, filepath.Join(root, "v1", "envoy"), map[string]string{"k": "one"})
	swap(t, root, "v1")
	st := stats.NewStore()
	l, err := NewWith(&bootstrapv3.LayeredRuntime{Layers: []*bootstrapv3.RuntimeLayer{
		diskLayer("disk", filepath.Join(root, "current"), "envoy", false), adminLayer("admin"),
	}}, Options{Stats: st, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	l.Start()
	defer l.Stop()
	get := func() string { v, _ := l.Snapshot().Get("k"); return v }
	if get() != "one" {
		t.Fatalf("k = %q", get())
	}
	// An edit in place is not a swap: Envoy does not see it.
	writeFiles(t, filepath.Join(root, "v1", "envoy"), map[string]string{"k": "edited"})
	time.Sleep(100 * time.Millisecond)
	if get() != "one" {
		t.Errorf("in-place edit picked up: %q", get())
	}
	bad := filepath.Join(root, "v2", "envoy")
	p := bad
	for range 17 {
		p = filepath.Join(p, "x")
	}
	writeFiles(t, p, map[string]string{"k": "v"})
	writeFiles(t, bad, map[string]string{"k": "two"})
	swap(t, root, "v2")
	eventually(t, func() bool { return st.Counter("runtime.load_error").Value() > 0 }, "load_error after a bad swap")
	if get() != "one" {
		// The layer keeps the values it last loaded.
		t.Errorf("after a bad swap k = %q, want the last good value", get())
	}
	writeFiles(t, filepath.Join(root, "v3", "envoy"), map[string]string{"k": "three"})
	swap(t, root, "v3")
	eventually(t, func() bool { return get() == "three" }, "k = three after a good swap")
	swap(t, root, "nowhere")
	eventually(t, func() bool { _, ok := l.Snapshot().Get("k"); return !ok }, "k gone after a swap to a missing directory")
	if got := l.Snapshot().Layers(); !reflect.DeepEqual(got, []string{"admin"}) {
		t.Errorf("layers without the disk directory = %v", got)
	}
}

func eventually(t *testing.T, f func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFraction(t *testing.T) {
	l, err := New(&bootstrapv3.LayeredRuntime{Layers: []*bootstrapv3.RuntimeLayer{
		staticLayer(t, "s", map[string]any{
			"int": 25, "float": 12.7, "big": 250, "word": "yes",
			"frac":  map[string]any{"numerator": 5, "denominator": "TEN_THOUSAND"},
			"frac2": map[string]any{"numerator": 7},
			"yaml":  "numerator: 3\ndenominator: MILLION",
		}),
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	def := &typev3.FractionalPercent{Numerator: 40, Denominator: typev3.FractionalPercent_TEN_THOUSAND}
	for _, tc := range []struct {
		key      string
		num, den uint32
	}{
		// An integer is a percentage whatever the default's denominator
		// (Envoy's "legacy semantics").
		{"int", 25, 100},
		{"float", 12, 100},
		{"big", 100, 100},
		{"frac", 5, 10000},
		{"frac2", 7, 100},
		{"yaml", 3, 1000000},
		{"word", 40, 10000},
		{"missing", 40, 10000},
		{"", 40, 10000},
	} {
		if num, den := l.Snapshot().Fraction(tc.key, def); num != tc.num || den != tc.den {
			t.Errorf("Fraction(%q) = %d/%d, want %d/%d", tc.key, num, den, tc.num, tc.den)
		}
	}
	if n := testing.AllocsPerRun(100, func() { l.Snapshot().Fraction("missing", def) }); n != 0 {
		t.Errorf("Fraction allocates %v times per call", n)
	}
}
