package source

import (
	"sort"
	"sync"

	xdsclient "github.com/legateproxy/legate/internal/xds/client"
)

// Watches keeps the named subscriptions of one type (RDS, EDS, SDS) in
// step with the accepted resources that name them: Set declares, for each
// transport, the names wanted now. A transport is subscribed on first use;
// names no longer wanted are unsubscribed (the server stops sending them),
// as Envoy drops a route configuration's subscription with the last
// listener that used it.
type Watches struct {
	typeURL string
	handler xdsclient.Handler
	stats   func(Transport) *xdsclient.Stats

	mu         sync.Mutex
	subscribed map[Transport][]string
}

// NewWatches returns the watches of a type; stats gives a transport's
// statistics (nil: none).
func NewWatches(typeURL string, h xdsclient.Handler, stats func(Transport) *xdsclient.Stats) *Watches {
	return &Watches{typeURL: typeURL, handler: h, stats: stats, subscribed: map[Transport][]string{}}
}

// Set subscribes exactly the wanted names on each transport.
func (w *Watches) Set(want map[Transport][]string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for t, names := range want {
		names = dedupe(names)
		cur, ok := w.subscribed[t]
		switch {
		case !ok:
			var st *xdsclient.Stats
			if w.stats != nil {
				st = w.stats(t)
			}
			t.Subscribe(w.typeURL, names, w.handler, st)
		case !equal(cur, names):
			t.SetNames(w.typeURL, names)
		}
		w.subscribed[t] = names
	}
	for t, cur := range w.subscribed {
		if _, ok := want[t]; !ok && len(cur) > 0 {
			t.SetNames(w.typeURL, []string{})
			w.subscribed[t] = []string{}
		}
	}
}

func dedupe(names []string) []string {
	out := append([]string{}, names...)
	sort.Strings(out)
	n := 0
	for i, s := range out {
		if i == 0 || s != out[n-1] {
			out[n] = s
			n++
		}
	}
	return out[:n]
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
