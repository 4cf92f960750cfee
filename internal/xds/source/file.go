package source

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/legateproxy/legate/internal/config"
	xdsclient "github.com/legateproxy/legate/internal/xds/client"
	"github.com/legateproxy/legate/internal/xds/resource"
)

// defaultPoll is how often a watched file is checked when
// path_config_source gives no poll_interval (Envoy uses inotify; polling
// the file's identity sees the same atomic moves).
const defaultPoll = 200 * time.Millisecond

// file delivers an xDS resource file (a DiscoveryResponse, or one
// resource) whenever it changes, as Envoy's filesystem subscription: an
// atomic move into place is the expected way to update it. There is no
// ACK or NACK; a rejected file counts update_rejected and the last good
// config keeps serving.
type file struct {
	path string
	poll time.Duration
	log  *slog.Logger

	// checking serializes checks (Start's first read and the poller).
	checking sync.Mutex
	mu       sync.Mutex
	decoder  resource.Type
	handler  xdsclient.Handler
	stats    *xdsclient.Stats
	last     string
	first    chan struct{}
	once     sync.Once
	stopCh   chan struct{}
	started  bool
}

func newFile(path string, poll time.Duration, log *slog.Logger) *file {
	if poll <= 0 {
		poll = defaultPoll
	}
	return &file{path: path, poll: poll, log: log, first: make(chan struct{}), stopCh: make(chan struct{})}
}

// Subscribe sets the type and its handler; a file carries one type,
// whatever its names.
func (f *file) Subscribe(typeURL string, _ []string, h xdsclient.Handler, st *xdsclient.Stats) {
	f.mu.Lock()
	f.decoder, f.handler, f.stats = resource.ForURL(typeURL), h, st
	f.last = "" // deliver the current content to the new handler
	f.mu.Unlock()
}

// SetNames is a no-op: the file's content is what it delivers.
func (f *file) SetNames(string, []string) {}

// Received is closed after the first read (successful or not).
func (f *file) Received(string) <-chan struct{} { return f.first }

// Start polls the file, beginning with a read. The read is not
// synchronous: a transport may be started from inside another type's
// handler (an RDS file named by an LDS update). Manager.Start reads the
// bootstrap's files synchronously first.
func (f *file) Start() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started {
		return
	}
	f.started = true
	go func() {
		f.check()
		f.run()
	}()
}

// Stop ends the polling.
func (f *file) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started {
		close(f.stopCh)
		f.started = false
	}
}

func (f *file) run() {
	t := time.NewTicker(f.poll)
	defer t.Stop()
	for {
		select {
		case <-f.stopCh:
			return
		case <-t.C:
			f.check()
		}
	}
}

// check reloads the file when its identity (inode, size, mtime) changed.
func (f *file) check() {
	f.checking.Lock()
	defer f.checking.Unlock()
	f.mu.Lock()
	dec, h, last := f.decoder, f.handler, f.last
	f.mu.Unlock()
	if h == nil {
		return
	}
	fi, err := os.Stat(f.path)
	id := "missing"
	if err == nil {
		id = fmt.Sprintf("%v/%d/%d", fileIdentity(fi), fi.Size(), fi.ModTime().UnixNano())
	}
	if id == last {
		return
	}
	f.mu.Lock()
	f.last = id
	f.mu.Unlock()
	if err != nil {
		f.log.Warn("xDS file is not readable; waiting for it", "path", f.path, "error", err)
		f.done()
		return
	}
	if f.stats != nil {
		f.stats.Attempt.Inc()
	}
	version, res, err := readResources(f.path, dec)
	if err != nil {
		xdsclient.Reject(h, res, err)
	} else {
		err = h.Update(version, res)
	}
	if err != nil {
		if f.stats != nil {
			f.stats.Rejected.Inc()
		}
		f.log.Warn("config file update rejected; the last good config keeps serving", "path", f.path, "error", err)
	} else if f.stats != nil {
		f.stats.Success.Inc()
	}
	f.done()
}

func (f *file) done() { f.once.Do(func() { close(f.first) }) }

// readResources reads a resource file (a DiscoveryResponse) and decodes
// its resources with t, by name. A decode failure returns the resources
// that did decode with the error.
func readResources(path string, t resource.Type) (string, map[string]*resource.Decoded, error) {
	dr := &discoveryv3.DiscoveryResponse{}
	if _, err := config.DecodeResourceFile(path, dr); err != nil {
		return "", nil, err
	}
	res, err := resource.DecodeAll(t, dr.GetResources())
	return dr.GetVersionInfo(), res, err
}

func fileIdentity(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
