package accesslog

import (
	"log/slog"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
)

// Services are what the loggers that export over the network (gRPC
// access log service, OpenTelemetry) use once their config is in use.
type Services struct {
	// Async reaches the clusters named by grpc_service / http_service.
	Async *asyncclient.Client
	// Node is the bootstrap's node: the identifier of an access log
	// stream and the built-in labels of OpenTelemetry logs.
	Node *corev3.Node
	// Log receives export failures (nil: slog.Default()).
	Log *slog.Logger
	// Runtime is the server's runtime, which access-log filters'
	// runtime_key values are read from at log time (nil: the defaults).
	Runtime *runtime.Loader
}

// SetServices gives the set the server's services. Loggers read them
// when they export, so loggers compiled before the call use them too.
func (fs *Files) SetServices(s Services) { fs.svc.Store(&s) }

func (fs *Files) services() Services {
	if s := fs.svc.Load(); s != nil {
		return *s
	}
	return Services{}
}

func (s Services) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// Envoy's defaults for the gRPC loggers (PROTOBUF_GET_MS_OR_DEFAULT of
// buffer_flush_interval, buffer_size_bytes).
const (
	defaultFlushInterval = time.Second
	defaultBufferBytes   = 16384
	// maxUnsizedEntries bounds the buffer when buffer_size_bytes is 0
	// (Envoy sends every entry at once and buffers without limit in the
	// stream; here the bound keeps memory finite when the collector is
	// gone).
	maxUnsizedEntries = 1024
	// exportTimeout bounds one send (a stream message or an export RPC)
	// when grpc_service sets no timeout: a collector that stops reading
	// holds the sender this long at most, then its stream is reset.
	exportTimeout = 5 * time.Second
)

// exporter sends one batch of entries; it runs on the batcher's
// goroutine, never on a request's path. close releases its stream.
type exporter interface {
	export(b *batcher, batch []proto.Message) error
	close()
}

// batcher is the buffer of one gRPC logger, shared by every access log
// with the same config (Envoy's GrpcAccessLoggerCache): entries are
// added on the request path, under a lock and without I/O; a goroutine
// exports them every flush interval or when buffer_size_bytes
// accumulate. At most one batch waits while another is being sent:
// beyond that, entries are dropped and counted (logs_dropped), so a
// slow or unreachable collector costs bounded memory and never blocks
// a request.
type batcher struct {
	fs       *Files
	what     string // for log lines
	interval time.Duration
	maxBytes int
	exp      exporter
	written  *stats.Counter
	dropped  *stats.Counter

	mu      sync.Mutex
	pending []proto.Message
	size    int
	ready   []proto.Message // full batch waiting for the sender
	running bool
	closed  bool
	kick    chan struct{}
	stop    chan struct{}
	// loops counts the running sender (0 or 1); shutdown waits for it.
	loops sync.WaitGroup

	// errMu guards the failure log's rate limit: one line per interval.
	errMu    sync.Mutex
	lastErr  time.Time
	failures int
}

func newBatcher(fs *Files, what string, interval time.Duration, maxBytes int, exp exporter, sc stats.Scope) *batcher {
	return &batcher{fs: fs, what: what, interval: interval, maxBytes: maxBytes, exp: exp,
		written: sc.Counter("logs_written"), dropped: sc.Counter("logs_dropped"),
		kick: make(chan struct{}, 1), stop: make(chan struct{})}
}

// full says the pending batch reached buffer_size_bytes.
func (b *batcher) full() bool {
	if b.maxBytes == 0 {
		return len(b.pending) > 0
	}
	return b.size >= b.maxBytes
}

// overLimit says no entry may be added to the pending batch.
func (b *batcher) overLimit() bool {
	if b.maxBytes == 0 {
		return len(b.pending) >= maxUnsizedEntries
	}
	return b.size >= b.maxBytes
}

// add buffers one entry of the given size, as Envoy's canLogMore: a
// full buffer is handed to the sender; if the sender still holds the
// previous one, the entry is dropped.
func (b *batcher) add(m proto.Message) {
	n := proto.Size(m)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.dropped.Inc()
		return
	}
	if b.overLimit() {
		if !b.handOff() {
			b.mu.Unlock()
			b.dropped.Inc()
			return
		}
	}
	b.written.Inc()
	b.pending = append(b.pending, m)
	b.size += n
	if b.full() {
		b.handOff()
	}
	if !b.running {
		b.running = true
		b.loops.Add(1)
		go b.loop()
	}
	b.mu.Unlock()
}

// handOff moves the pending batch to the sender when it has room (mu
// held).
func (b *batcher) handOff() bool {
	if b.ready != nil {
		return false
	}
	b.ready, b.pending, b.size = b.pending, nil, 0
	select {
	case b.kick <- struct{}{}:
	default:
	}
	return true
}

// loop exports batches: a full one at once, the rest every flush
// interval (Envoy's flush timer). It ends when a tick finds nothing to
// send, releasing its stream, so an idle logger — or one whose config
// was replaced — holds no goroutine and no connection.
func (b *batcher) loop() {
	defer b.loops.Done()
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		byTimer := false
		select {
		case <-b.kick:
		case <-t.C:
			byTimer = true
		case <-b.stop:
			b.mu.Lock()
			batch := append(b.ready, b.pending...)
			b.ready, b.pending, b.size = nil, nil, 0
			b.mu.Unlock()
			if len(batch) > 0 {
				b.send(batch) // the last entries, as at Envoy's shutdown
			}
			b.exp.close()
			return
		}
		b.mu.Lock()
		batch := b.ready
		b.ready = nil
		if byTimer && batch == nil {
			batch, b.pending, b.size = b.pending, nil, 0
		}
		if byTimer && batch == nil {
			b.running = false
			b.mu.Unlock()
			b.exp.close()
			return
		}
		b.mu.Unlock()
		if batch != nil {
			b.send(batch)
			// What filled up meanwhile goes next.
			b.mu.Lock()
			if b.full() {
				b.handOff()
			}
			b.mu.Unlock()
		}
	}
}

// send exports a batch. A failure drops it (counted in logs_dropped:
// Envoy's stream would have buffered it up to its watermark, then
// dropped new entries) and is logged at most once per flush interval.
func (b *batcher) send(batch []proto.Message) {
	err := b.exp.export(b, batch)
	if err == nil {
		return
	}
	b.dropped.Add(uint64(len(batch)))
	b.errMu.Lock()
	b.failures++
	now := time.Now()
	if now.Sub(b.lastErr) < max(b.interval, time.Second) {
		b.errMu.Unlock()
		return
	}
	n := b.failures
	b.lastErr, b.failures = now, 0
	b.errMu.Unlock()
	b.fs.services().logger().Warn(b.what+" export failed; its entries are dropped (counter logs_dropped)",
		"error", err, "failed_exports", n)
}

// shutdown sends what is buffered and stops the sender.
func (b *batcher) shutdown() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	// No sender starts after this (add checks closed); a running one
	// sends what is buffered and ends, one that is ending anyway ends.
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	b.loops.Wait()
}

// grpcLoggers is one server's cache of gRPC loggers by config (Envoy's
// GrpcAccessLoggerCache keys by the config's hash and the logger type):
// access logs with the same config share one buffer and one stream, and
// a listener update that keeps the config keeps them.
type grpcLoggers struct {
	mu sync.Mutex
	m  map[string]*batcher
}

func (g *grpcLoggers) get(key string, create func() *batcher) *batcher {
	g.mu.Lock()
	defer g.mu.Unlock()
	if b := g.m[key]; b != nil {
		return b
	}
	if g.m == nil {
		g.m = map[string]*batcher{}
	}
	b := create()
	g.m[key] = b
	return b
}

// close flushes every logger at once, waiting at most shutdownWait: a
// collector that hangs must not hold the server's shutdown (its senders
// end on their own when their export times out).
func (g *grpcLoggers) close() {
	g.mu.Lock()
	all := make([]*batcher, 0, len(g.m))
	for _, b := range g.m {
		all = append(all, b)
	}
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, b := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.shutdown()
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(shutdownWait):
	}
}

// shutdownWait bounds how long closing the loggers waits for their last
// exports.
const shutdownWait = 2 * time.Second

// cacheKey is the deterministic encoding of a config plus its kind.
func cacheKey(kind string, m proto.Message) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	return kind + "\x00" + string(b)
}

// grpcTarget is a compiled GrpcService (envoy_grpc or google_grpc): its
// timeout bounds one send here, as no stream outlives a send that never
// completes.
type grpcTarget = asyncclient.GRPCService

// compileGRPCService compiles a logger's GrpcService.
func compileGRPCService(gs *corev3.GrpcService, path string) (*grpcTarget, error) {
	return asyncclient.CompileGRPCService(gs, path, exportTimeout)
}
