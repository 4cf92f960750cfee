package overload

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	injectedv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/injected_resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/legateproxy/legate/internal/stats"
)

// resetConfig is an overload manager with the injected monitor reading
// file and reset_high_memory_stream on a scaled trigger.
func resetConfig(t *testing.T, file string, bf *overloadv3.BufferFactoryConfig) *overloadv3.OverloadManager {
	t.Helper()
	mon, err := anypb.New(&injectedv3.InjectedResourceConfig{Filename: file})
	if err != nil {
		t.Fatal(err)
	}
	return &overloadv3.OverloadManager{
		BufferFactoryConfig: bf,
		ResourceMonitors:    []*overloadv3.ResourceMonitor{{Name: "envoy.resource_monitors.injected_resource", ConfigType: &overloadv3.ResourceMonitor_TypedConfig{TypedConfig: mon}}},
		Actions: []*overloadv3.OverloadAction{{Name: ResetHighMemoryStream, Triggers: []*overloadv3.Trigger{{
			Name:         "envoy.resource_monitors.injected_resource",
			TriggerOneof: &overloadv3.Trigger_Scaled{Scaled: &overloadv3.ScaledTrigger{ScalingThreshold: 0.9, SaturationThreshold: 0.98}},
		}}}},
	}
}

func TestResetActionNeedsBufferFactoryConfig(t *testing.T) {
	_, err := Compile(resetConfig(t, "/nonexistent", nil), stats.NewStore(), slog.Default())
	if err == nil || !strings.Contains(err.Error(), "requires buffer_factory_config") || !strings.Contains(err.Error(), "overload_manager.actions[0].name") {
		t.Fatalf("got %v, want an error naming buffer_factory_config at overload_manager.actions[0].name", err)
	}
}

func TestResetActionResetsOnEveryChange(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pressure")
	write := func(s string) {
		// Moved into place, as Envoy's tests update the file.
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	write("0.5")
	st := stats.NewStore()
	m, err := Compile(resetConfig(t, file, &overloadv3.BufferFactoryConfig{MinimumAccountToTrackPowerOfTwo: 13}), st, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Value("overload.envoy.resource_monitors.injected_resource.skipped_updates"); !ok {
		t.Error("no overload.<monitor>.skipped_updates")
	}
	tr := m.Tracker()
	// As Envoy's integration test: 4, 8 and 16 KiB streams, tracked from
	// 4 KiB (power 13), in buckets 0, 1 and 2.
	var small, medium, large atomic.Int32
	tr.NewAccount(func() { small.Add(1) }).Charge(4096)
	tr.NewAccount(func() { medium.Add(1) }).Charge(2 * 4096)
	tr.NewAccount(func() { large.Add(1) }).Charge(4 * 4096)
	count := st.Counter(ResetStreamsCount)
	m.update()
	if count.Value() != 0 {
		t.Fatalf("below the scaling threshold: %d resets", count.Value())
	}
	write("0.95") // 62.5 %: six buckets, 2 to 7
	m.update()
	if large.Load() != 1 || medium.Load() != 0 || count.Value() != 1 {
		t.Fatalf("at 0.95: large %d, medium %d, count %d", large.Load(), medium.Load(), count.Value())
	}
	m.update()    // no change, no reset
	write("0.96") // 75 %: buckets 1 to 7
	m.update()
	if medium.Load() != 1 || small.Load() != 0 || count.Value() != 2 {
		t.Fatalf("at 0.96: medium %d, small %d, count %d", medium.Load(), small.Load(), count.Value())
	}
	write("0.80")
	m.update()
	if small.Load() != 0 || count.Value() != 2 {
		t.Fatalf("back to 0.80: small %d, count %d", small.Load(), count.Value())
	}
}

func TestInjectedMonitor(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pressure")
	st := stats.NewStore()
	mon, err := injectedMonitor(nil, "inj", &injectedv3.InjectedResourceConfig{Filename: file}, "p", st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mon.read(); err == nil {
		t.Fatal("a missing file read without error")
	}
	for _, c := range []struct {
		content string
		want    float64
		err     string
	}{
		{"0.25\n", 0.25, ""},
		{" 1 ", 1, ""},
		{"abc", 0, "failed to parse"},
		{"1.5", 0, "out of range"},
		{"-0.1", 0, "out of range"},
		{"0", 0, ""},
	} {
		tmp := file + ".tmp"
		os.WriteFile(tmp, []byte(c.content), 0o644)
		os.Rename(tmp, file)
		p, err := mon.read()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: got %v, want an error with %q", c.content, err, c.err)
			}
			continue
		}
		if err != nil || p != c.want {
			t.Errorf("%q: got %v %v, want %v", c.content, p, err, c.want)
		}
	}
	if _, err := injectedMonitor(nil, "inj", &injectedv3.InjectedResourceConfig{}, "p", st); err == nil {
		t.Error("an empty filename compiled")
	}
}
