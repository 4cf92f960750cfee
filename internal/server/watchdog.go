package server

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/stats"
)

// watchdog is Envoy's watchdog over a Go runtime. Envoy's threads touch
// their watchdog from their event loops, and a thread that does not touch
// it for miss_timeout is a miss. Legate has no thread per event loop: a
// goroutine woken every tick measures how late the scheduler runs it,
// which is how long no goroutine of the process could be sure to run
// (stop-the-world pauses, every P busy). A lateness above miss_timeout
// counts a miss, above megamiss_timeout a mega miss, and above
// kill_timeout (plus up to max_kill_timeout_jitter) ends the process, as
// Envoy's watchdog does with a thread stuck that long.
type watchdog struct {
	miss, megamiss, kill time.Duration
	missStat, megaStat   []*stats.Counter
	log                  *slog.Logger
	// exit ends the process (tests replace it).
	exit func(string)
}

// Envoy's defaults (source/server/configuration_impl.cc).
const (
	defaultWatchdogMiss     = 200 * time.Millisecond
	defaultWatchdogMegamiss = time.Second
)

// compileWatchdog reads the bootstrap's watchdog (deprecated) or
// watchdogs. Without either Envoy still runs its watchdogs with the
// defaults, and so does Legate.
func compileWatchdog(b *bootstrapv3.Bootstrap, st *stats.Store, log *slog.Logger) (*watchdog, error) {
	w := &watchdog{miss: defaultWatchdogMiss, megamiss: defaultWatchdogMegamiss, log: log,
		exit: func(msg string) { panic(msg) }}
	var cfgs []*bootstrapv3.Watchdog
	var paths []string
	switch {
	case b.GetWatchdog() != nil && b.GetWatchdogs() != nil:
		return nil, config.Errorf("watchdogs", "only one of watchdog or watchdogs should be set")
	case b.GetWatchdogs() != nil:
		wd := b.GetWatchdogs()
		if err := config.CheckFields(wd, "watchdogs", "main_thread_watchdog", "worker_watchdog"); err != nil {
			return nil, err
		}
		// The scheduler serves the main loop's work and the workers'
		// alike: one measurement counts for both, each with its limits.
		cfgs = []*bootstrapv3.Watchdog{wd.GetMainThreadWatchdog(), wd.GetWorkerWatchdog()}
		paths = []string{"watchdogs.main_thread_watchdog", "watchdogs.worker_watchdog"}
	default:
		cfgs, paths = []*bootstrapv3.Watchdog{b.GetWatchdog()}, []string{"watchdog"}
	}
	// Envoy's names whichever form configures them (its server tests find
	// main_thread.watchdog_miss and workers.watchdog_miss with an empty
	// bootstrap): the aggregates and each thread's, Legate's one worker
	// being worker_0.
	for _, prefix := range []string{"main_thread.", "workers.", "server.main_thread.", "server.worker_0."} {
		w.missStat = append(w.missStat, st.Counter(prefix+"watchdog_miss"))
		w.megaStat = append(w.megaStat, st.Counter(prefix+"watchdog_mega_miss"))
	}
	missSet, megaSet := false, false
	for i, c := range cfgs {
		if c == nil {
			continue
		}
		p := paths[i]
		if err := config.CheckFields(c, p, "miss_timeout", "megamiss_timeout", "kill_timeout", "max_kill_timeout_jitter",
			"multikill_timeout", "multikill_threshold", "actions"); err != nil {
			return nil, err
		}
		for j, a := range c.GetActions() {
			ap := config.Index(config.Join(p, "actions"), j)
			if _, err := extension.Lookup(extension.WatchdogAction, a.GetConfig().GetTypedConfig(), config.Join(ap, "config.typed_config")); err != nil {
				return nil, err
			}
		}
		if c.GetMultikillTimeout().AsDuration() > 0 {
			// One measurement stands for every thread: "more than a
			// threshold of threads stuck" has no separate meaning.
			return nil, config.Unsupported(config.Join(p, "multikill_timeout"), "multikill (Legate's watchdog watches the scheduler, not threads)")
		}
		// The tightest of the configured limits applies; a limit no
		// watchdog sets keeps Envoy's default.
		if d := c.GetMissTimeout().AsDuration(); c.GetMissTimeout() != nil && d > 0 && (!missSet || d < w.miss) {
			w.miss, missSet = d, true
		}
		if d := c.GetMegamissTimeout().AsDuration(); c.GetMegamissTimeout() != nil && d > 0 && (!megaSet || d < w.megamiss) {
			w.megamiss, megaSet = d, true
		}
		if k := c.GetKillTimeout().AsDuration(); k > 0 {
			if j := c.GetMaxKillTimeoutJitter().AsDuration(); j > 0 {
				// As Envoy: the jitter is drawn once, when the watchdog starts.
				k += time.Duration(rand.Int64N(int64(j) + 1))
			}
			if w.kill == 0 || k < w.kill {
				w.kill = k
			}
		}
	}
	return w, nil
}

// run measures the scheduler's lateness until quit closes.
func (w *watchdog) run(quit <-chan struct{}) {
	// Wake often enough to see a miss: a quarter of the miss timeout, at
	// least every 10 ms.
	tick := max(w.miss/4, 10*time.Millisecond)
	t := time.NewTimer(tick)
	defer t.Stop()
	want := time.Now().Add(tick)
	for {
		select {
		case <-quit:
			return
		case now := <-t.C:
			w.observe(now.Sub(want))
			want = time.Now().Add(tick)
			t.Reset(tick)
		}
	}
}

// observe counts one measured lateness.
func (w *watchdog) observe(late time.Duration) {
	if late > w.miss {
		for _, c := range w.missStat {
			c.Inc()
		}
	}
	if late > w.megamiss {
		for _, c := range w.megaStat {
			c.Inc()
		}
	}
	if w.kill > 0 && late > w.kill {
		msg := fmt.Sprintf("watchdog: the scheduler did not run for %s, above kill_timeout %s", late.Round(time.Millisecond), w.kill)
		w.log.Error(msg)
		w.exit(msg)
	}
}
