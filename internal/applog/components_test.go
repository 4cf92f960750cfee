package applog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestParseComponentLevels(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []ComponentLevel
		err  string
	}{
		{"", nil, ""},
		{"upstream:debug,connection:trace", []ComponentLevel{{"upstream", slog.LevelDebug}, {"connection", Levels["trace"]}}, ""},
		{"main:warn", []ComponentLevel{{"main", slog.LevelWarn}}, ""},
		{"upstream", nil, "error: component log level not correctly specified 'upstream'"},
		{"upstream:debug:x", nil, "error: component log level not correctly specified 'upstream:debug:x'"},
		{"upstream:loud", nil, "error: invalid log level specified 'loud'"},
		{"legate:debug", nil, "error: invalid component specified 'legate'"},
		{"upstream:debug,bogus:info", nil, "error: invalid component specified 'bogus'"},
	} {
		got, err := ParseComponentLevels(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("%q: %v, %v; want %v", tc.in, got, err, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%q: [%d] = %v, want %v", tc.in, i, got[i], tc.want[i])
			}
		}
	}
}

func TestRegistry(t *testing.T) {
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelWarn)
	r := NewRegistry(lv)
	if RegistryFor(lv) != r {
		t.Fatal("RegistryFor does not find the registry of its level")
	}
	if err := r.Set(map[string]slog.Level{"upstream": slog.LevelDebug, "nope": slog.LevelInfo}); err == nil || err.Error() != "unknown logger name" {
		t.Errorf("unknown name: %v", err)
	}
	if r.Level("upstream") != slog.LevelWarn {
		t.Error("a refused change was partly applied")
	}
	for _, tc := range []struct {
		set       map[string]slog.Level
		all       *slog.Level
		component string
		want      slog.Level
		min       slog.Level
	}{
		{set: map[string]slog.Level{"upstream": slog.LevelDebug}, component: "upstream", want: slog.LevelDebug, min: slog.LevelDebug},
		{component: "main", want: slog.LevelWarn, min: slog.LevelDebug},
		{component: "not-a-component", want: slog.LevelWarn, min: slog.LevelDebug}, // DefaultComponent's
		{all: ptr(slog.LevelError), component: "upstream", want: slog.LevelError, min: slog.LevelError},
		{set: map[string]slog.Level{"http": Levels["trace"], "router": slog.LevelInfo}, component: "router", want: slog.LevelInfo, min: Levels["trace"]},
	} {
		if tc.all != nil {
			r.SetAll(*tc.all)
			if lv.Level() != *tc.all {
				t.Errorf("SetAll did not set the process level")
			}
		}
		if tc.set != nil {
			if err := r.Set(tc.set); err != nil {
				t.Fatal(err)
			}
		}
		if got := r.Level(tc.component); got != tc.want {
			t.Errorf("%v: Level(%s) = %v, want %v", tc.set, tc.component, got, tc.want)
		}
		if r.Min() != tc.min {
			t.Errorf("%v: Min = %v, want %v", tc.set, r.Min(), tc.min)
		}
	}
	n := 0
	r.Each(func(string, slog.Level) { n++ })
	if n != len(Components) || Components[0] != "admin" {
		t.Errorf("Each visited %d of %d", n, len(Components))
	}
}

func ptr[T any](v T) *T { return &v }

// Records are filtered by their component's level, through a Handler with
// component levels and through a Swap (whose destination, as the
// bootstrap's application_log_config handler, has only the process level).
func TestComponentFiltering(t *testing.T) {
	for _, viaSwap := range []bool{false, true} {
		var b bytes.Buffer
		lv := new(slog.LevelVar) // info
		r := NewRegistry(lv)
		if err := r.Set(map[string]slog.Level{"upstream": slog.LevelDebug, "admin": slog.LevelError}); err != nil {
			t.Fatal(err)
		}
		var h slog.Handler
		if viaSwap {
			dest, _ := New(&b, Options{Format: "[%l][%n] %v", Level: lv})
			sw := NewSwap(dest)
			sw.SetComponents(r)
			h = sw
		} else {
			h, _ = New(&b, Options{Format: "[%l][%n] %v", Components: r})
		}
		log := slog.New(h)
		for _, tc := range []struct {
			log   *slog.Logger
			level slog.Level
			msg   string
			want  string // "" for dropped
		}{
			{Component(log, "upstream"), slog.LevelDebug, "host added", "[debug][upstream] host added"},
			{Component(log, "upstream").With("cluster", "c"), slog.LevelDebug, "x", "[debug][upstream] x cluster=c"},
			{Component(log, "admin"), slog.LevelWarn, "dropped", ""},
			{Component(log, "admin"), slog.LevelError, "kept", "[error][admin] kept"},
			{log, slog.LevelDebug, "main is at info", ""},
			{log, slog.LevelInfo, "started", "[info][main] started"},
			{log.With("a", 1), slog.LevelDebug, "still main", ""},
			{Component(log.WithGroup("g"), "upstream"), slog.LevelDebug, "grouped", ""}, // a grouped "logger" is an attribute, not the component
		} {
			b.Reset()
			tc.log.Log(t.Context(), tc.level, tc.msg)
			if got := strings.TrimSuffix(b.String(), "\n"); got != tc.want {
				t.Errorf("swap=%v %q: got %q, want %q", viaSwap, tc.msg, got, tc.want)
			}
		}
		// A record naming its component inline is filtered by it too.
		b.Reset()
		log.Debug("inline", ComponentKey, "upstream")
		log.Debug("inline dropped", ComponentKey, "router")
		if got := b.String(); got != "[debug][upstream] inline\n" {
			t.Errorf("swap=%v inline component: %q", viaSwap, got)
		}
		// Changing a level takes effect on loggers already handed out.
		up := Component(log, "upstream")
		r.SetAll(slog.LevelError)
		b.Reset()
		up.Info("now off")
		if b.Len() != 0 {
			t.Errorf("swap=%v: level change not seen: %q", viaSwap, b.String())
		}
	}
}

func TestComponentPanicsOnUnknownName(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Component accepted a name that is not Envoy's")
		}
	}()
	Component(slog.Default(), "legate")
}
