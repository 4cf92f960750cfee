package server

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/stats"
)

// allMiss are Envoy's miss counters, whichever form configures the watchdog.
const allMiss = "main_thread.watchdog_miss,workers.watchdog_miss,server.main_thread.watchdog_miss,server.worker_0.watchdog_miss"

func TestCompileWatchdog(t *testing.T) {
	for _, tc := range []struct {
		name, yaml        string
		miss, megamiss    time.Duration
		kill              time.Duration
		missStats, err    string
		killAtLeastAtMost [2]time.Duration
	}{
		{name: "defaults", miss: 200 * time.Millisecond, megamiss: time.Second, missStats: allMiss},
		{name: "legacy watchdog", yaml: `watchdog: {miss_timeout: 0.1s, megamiss_timeout: 0.5s, kill_timeout: 10s}`,
			miss: 100 * time.Millisecond, megamiss: 500 * time.Millisecond, kill: 10 * time.Second, missStats: allMiss},
		{name: "watchdogs: the tighter limits apply", yaml: `watchdogs: {main_thread_watchdog: {miss_timeout: 0.3s}, worker_watchdog: {miss_timeout: 0.1s, kill_timeout: 20s}}`,
			miss: 100 * time.Millisecond, megamiss: time.Second, kill: 20 * time.Second, missStats: allMiss},
		{name: "watchdogs: a limit only one sets", yaml: `watchdogs: {main_thread_watchdog: {kill_timeout: 30s}, worker_watchdog: {miss_timeout: 0.5s}}`,
			miss: 500 * time.Millisecond, megamiss: time.Second, kill: 30 * time.Second, missStats: allMiss},
		{name: "kill jitter", yaml: `watchdog: {kill_timeout: 10s, max_kill_timeout_jitter: 1s}`, miss: 200 * time.Millisecond, megamiss: time.Second,
			killAtLeastAtMost: [2]time.Duration{10 * time.Second, 11 * time.Second}, missStats: allMiss},
		{name: "both forms", yaml: `{watchdog: {}, watchdogs: {}}`, err: "only one of watchdog or watchdogs"},
		{name: "multikill", yaml: `watchdog: {multikill_timeout: 5s}`, err: "watchdog.multikill_timeout"},
		{name: "an action Legate lacks", yaml: `watchdog: {actions: [{config: {name: p, typed_config: {"@type": type.googleapis.com/envoy.extensions.watchdog.profile_action.v3.ProfileActionConfig}}, event: KILL}]}`,
			err: "not implemented"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &bootstrapv3.Bootstrap{}
			if tc.yaml != "" {
				if _, err := config.Decode([]byte(tc.yaml), b, "bootstrap"); err != nil {
					t.Fatal(err)
				}
			}
			st := stats.NewStore()
			w, err := compileWatchdog(b, st, slog.Default())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if w.miss != tc.miss || w.megamiss != tc.megamiss {
				t.Errorf("miss %s megamiss %s, want %s %s", w.miss, w.megamiss, tc.miss, tc.megamiss)
			}
			if r := tc.killAtLeastAtMost; r[1] > 0 {
				if w.kill < r[0] || w.kill > r[1] {
					t.Errorf("kill %s, want within %v", w.kill, r)
				}
			} else if w.kill != tc.kill {
				t.Errorf("kill %s, want %s", w.kill, tc.kill)
			}
			var names []string
			for _, c := range w.missStat {
				names = append(names, c.Name())
			}
			if got := strings.Join(names, ","); got != tc.missStats {
				t.Errorf("miss stats %s, want %s", got, tc.missStats)
			}
		})
	}
}

// TestWatchdogObserve: a lateness counts a miss above miss_timeout, a mega
// miss above megamiss_timeout, and ends the process above kill_timeout.
func TestWatchdogObserve(t *testing.T) {
	st := stats.NewStore()
	var killed string
	w := &watchdog{miss: 100 * time.Millisecond, megamiss: time.Second, kill: 5 * time.Second, log: slog.Default(),
		missStat: []*stats.Counter{st.Counter("server.watchdog_miss")}, megaStat: []*stats.Counter{st.Counter("server.watchdog_mega_miss")},
		exit: func(msg string) { killed = msg }}
	for _, late := range []time.Duration{time.Millisecond, 150 * time.Millisecond, 2 * time.Second} {
		w.observe(late)
	}
	if m, mm := st.Counter("server.watchdog_miss").Value(), st.Counter("server.watchdog_mega_miss").Value(); m != 2 || mm != 1 {
		t.Errorf("misses %d, mega misses %d; want 2 and 1", m, mm)
	}
	if killed != "" {
		t.Fatalf("killed below kill_timeout: %s", killed)
	}
	w.observe(6 * time.Second)
	if !strings.Contains(killed, "kill_timeout") {
		t.Errorf("not killed above kill_timeout (%q)", killed)
	}
}
