// Package accesslog implements Envoy's access loggers — file, stdout and
// stderr, selected by @type — with Envoy's access-log filters. Entries are
// formatted on the request path into a shared, buffered writer per file,
// which a background flusher writes out every second (Envoy's
// file_flush_interval) or when 64 KiB accumulate; SIGUSR1 reopens files.
// The writers belong to a Files set that one server owns (Envoy's access
// log manager), so two servers in a process do not share files or stats.
//
// The loggers that export over the network — envoy.access_loggers.http_grpc
// and tcp_grpc (the access log service, grpc.go) and open_telemetry (OTLP
// logs, otel.go) — build their record on the request path and hand it to a
// bounded buffer (batch.go) that one goroutine per config exports every
// buffer_flush_interval, through the clusters the server gives the set
// (SetServices); a full buffer drops entries and counts them.
package accesslog

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/format"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// Logger is one configured access log.
type Logger struct {
	filter filter
	entry  format.Entry
	out    *writer
	// sink is a logger that builds its own record (the gRPC and
	// OpenTelemetry loggers) instead of a formatted line.
	sink sink
}

// sink receives the stream info of every admitted request.
type sink interface {
	log(info *streaminfo.Info)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Log writes an entry for a finished request if the filter admits it.
func (l *Logger) Log(info *streaminfo.Info) {
	if l.filter != nil && !l.filter(info) {
		return
	}
	if l.sink != nil {
		l.sink.log(info)
		return
	}
	bp := bufPool.Get().(*[]byte)
	b := l.entry.Append((*bp)[:0], info)
	l.out.write(b)
	*bp = b
	bufPool.Put(bp)
}

// Compile compiles an access_log list; file sinks come from files.
func Compile(logs []*accesslogv3.AccessLog, path string, files *Files) ([]*Logger, error) {
	var out []*Logger
	for i, al := range logs {
		p := config.Index(path, i)
		if err := config.CheckFields(al, p, "name", "typed_config", "filter"); err != nil {
			return nil, err
		}
		l, err := compileOne(al, p, files)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

func compileOne(al *accesslogv3.AccessLog, path string, files *Files) (*Logger, error) {
	l := &Logger{}
	if f := al.GetFilter(); f != nil {
		fl, err := compileFilter(f, config.Join(path, "filter"), files)
		if err != nil {
			return nil, err
		}
		l.filter = fl
	}
	tp := config.Join(path, "typed_config")
	r, err := extension.Lookup(extension.AccessLogger, al.GetTypedConfig(), tp)
	if err != nil {
		return nil, err
	}
	if err := r.Ext.Factory.(loggerFactory)(r.Config, l, files, tp); err != nil {
		return nil, err
	}
	return l, nil
}

// loggerFactory compiles an access logger's typed_config into l.
type loggerFactory func(cfg proto.Message, l *Logger, files *Files, path string) error

func init() {
	extension.Register(extension.Extension{Name: "envoy.access_loggers.file",
		Category: extension.AccessLogger, Config: &filev3.FileAccessLog{}, Factory: loggerFactory(compileFile)})
	extension.Register(extension.Extension{Name: "envoy.access_loggers.stdout", Category: extension.AccessLogger,
		Config: &streamv3.StdoutAccessLog{}, Factory: loggerFactory(func(cfg proto.Message, l *Logger, files *Files, path string) error {
			return compileStream(cfg.(*streamv3.StdoutAccessLog), "/dev/stdout", l, files, path)
		})})
	extension.Register(extension.Extension{Name: "envoy.access_loggers.stderr", Category: extension.AccessLogger,
		Config: &streamv3.StderrAccessLog{}, Factory: loggerFactory(func(cfg proto.Message, l *Logger, files *Files, path string) error {
			return compileStream(cfg.(*streamv3.StderrAccessLog), "/dev/stderr", l, files, path)
		})})
}

func compileFile(msg proto.Message, l *Logger, files *Files, tp string) error {
	fl := msg.(*filev3.FileAccessLog)
	if err := config.CheckFields(fl, tp, "path", "log_format", "format", "json_format", "typed_json_format"); err != nil {
		return err
	}
	var err error
	switch f := fl.GetAccessLogFormat().(type) {
	case *filev3.FileAccessLog_LogFormat:
		l.entry, err = format.FromSubstitutionFormatString(f.LogFormat, config.Join(tp, "log_format"))
	case *filev3.FileAccessLog_Format:
		var tf *format.Formatter
		if tf, err = format.Compile(f.Format); err == nil {
			l.entry = format.Text{F: tf}
		}
	case *filev3.FileAccessLog_JsonFormat:
		l.entry, err = format.CompileJSON(f.JsonFormat, false)
	case *filev3.FileAccessLog_TypedJsonFormat:
		l.entry, err = format.CompileJSON(f.TypedJsonFormat, false)
	default:
		l.entry, err = defaultEntry()
	}
	if err != nil {
		return config.Errorf(tp, "%v", err)
	}
	l.out, err = files.open(fl.GetPath())
	if err != nil {
		return config.Errorf(config.Join(tp, "path"), "%v", err)
	}
	return nil
}

// streamLog is StdoutAccessLog or StderrAccessLog.
type streamLog interface {
	proto.Message
	GetLogFormat() *corev3.SubstitutionFormatString
}

func compileStream(m streamLog, dev string, l *Logger, files *Files, tp string) error {
	if err := config.CheckFields(m, tp, "log_format"); err != nil {
		return err
	}
	l.out, _ = files.open(dev)
	var err error
	if f := m.GetLogFormat(); f != nil {
		l.entry, err = format.FromSubstitutionFormatString(f, config.Join(tp, "log_format"))
	} else {
		l.entry, err = defaultEntry()
	}
	return err
}

func defaultEntry() (format.Entry, error) {
	tf, err := format.Compile(format.DefaultFormat)
	return format.Text{F: tf}, err
}

// --- writers ---

// writer is a buffered, shared sink for one path.
type writer struct {
	path string
	mu   sync.Mutex
	f    *os.File
	buf  []byte
	// failing is set while the file cannot be opened (logged once).
	failing bool
	// stats: access_log_file.* as Envoy.
	buffered, completed, flushedByTimer, reopenFailed *stats.Counter
}

// Files is one server's set of access-log writers, one per path, and
// their flusher.
type Files struct {
	st      *stats.Store
	svc     atomic.Pointer[Services]
	grpc    grpcLoggers
	mu      sync.Mutex
	writers map[string]*writer
	started bool
	closed  bool
	stop    chan struct{}
	done    chan struct{}
}

// NewFiles returns an empty set whose writers count in st
// (access_log_file.*).
func NewFiles(st *stats.Store) *Files {
	if st == nil {
		st = stats.NewStore()
	}
	return &Files{st: st, writers: map[string]*writer{}, stop: make(chan struct{}), done: make(chan struct{})}
}

// open returns the writer of a path, shared by every logger that names it.
func (fs *Files) open(path string) (*writer, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if w := fs.writers[path]; w != nil {
		return w, nil
	}
	// Compiling a config has no side effects: the file is opened (and
	// created) when the first entry is written; here only its directory
	// is checked, so a wrong path is still a config error, as in Envoy.
	if path != "/dev/stdout" && path != "/dev/stderr" {
		if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() {
			if err == nil {
				err = fmt.Errorf("not a directory")
			}
			return nil, fmt.Errorf("open access log %s: %w (check the directory exists and is writable)", path, err)
		}
	}
	sc := fs.st.Scope("access_log_file.")
	w := &writer{path: path,
		buffered: sc.Counter("write_buffered"), completed: sc.Counter("write_completed"),
		flushedByTimer: sc.Counter("flushed_by_timer"), reopenFailed: sc.Counter("reopen_failed")}
	fs.writers[path] = w
	if !fs.started {
		fs.started = true
		go fs.flushLoop()
	}
	return w, nil
}

func openFile(path string) (*os.File, error) {
	switch path {
	case "/dev/stdout":
		return os.Stdout, nil
	case "/dev/stderr":
		return os.Stderr, nil
	}
	return os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
}

func (w *writer) write(b []byte) {
	w.mu.Lock()
	w.buf = append(w.buf, b...)
	full := len(w.buf) >= 64*1024
	w.mu.Unlock()
	w.buffered.Inc()
	if full {
		w.flush()
	}
}

func (w *writer) flush() bool {
	w.mu.Lock()
	if len(w.buf) == 0 {
		w.mu.Unlock()
		return false
	}
	b := w.buf
	w.buf = make([]byte, 0, cap(b))
	if w.f == nil {
		f, err := openFile(w.path)
		if err != nil {
			// Entries are dropped (bounded memory) and counted; the next
			// flush tries again. The failure is logged once, not every
			// second, until the file opens.
			first := !w.failing
			w.failing = true
			w.mu.Unlock()
			w.reopenFailed.Inc()
			if first {
				slog.Error("access log cannot be opened; entries are dropped until it can (counter access_log_file.reopen_failed)", "path", w.path, "error", err)
			}
			return false
		}
		if w.failing {
			slog.Info("access log opened after failures", "path", w.path)
		}
		w.f, w.failing = f, false
	}
	f := w.f
	w.mu.Unlock()
	f.Write(b)
	w.completed.Inc()
	return true
}

func (fs *Files) flushLoop() {
	defer close(fs.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-fs.stop:
			return
		case <-t.C:
			for _, w := range fs.all() {
				if w.flush() {
					w.flushedByTimer.Inc()
				}
			}
		}
	}
}

func (fs *Files) all() []*writer {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := make([]*writer, 0, len(fs.writers))
	for _, w := range fs.writers {
		out = append(out, w)
	}
	return out
}

// Flush writes every buffered entry out (tests).
func (fs *Files) Flush() {
	for _, w := range fs.all() {
		w.flush()
	}
}

// Close flushes, stops the flusher and closes the files (shutdown).
func (fs *Files) Close() {
	fs.grpc.close()
	fs.mu.Lock()
	started, closed := fs.started, fs.closed
	fs.started, fs.closed = true, true // no flusher may start after Close
	fs.mu.Unlock()
	if started && !closed {
		close(fs.stop)
		<-fs.done
	}
	for _, w := range fs.all() {
		w.flush()
		w.mu.Lock()
		if w.f != nil && w.f != os.Stdout && w.f != os.Stderr {
			w.f.Close()
		}
		w.f = nil
		w.mu.Unlock()
	}
}

// Reopen closes and reopens every access log file (SIGUSR1, after log
// rotation), flushing first.
func (fs *Files) Reopen() {
	for _, w := range fs.all() {
		w.flush()
		if w.path == "/dev/stdout" || w.path == "/dev/stderr" {
			continue
		}
		f, err := openFile(w.path)
		if err != nil {
			w.reopenFailed.Inc()
			continue
		}
		w.mu.Lock()
		old := w.f
		w.f = f
		w.mu.Unlock()
		if old != nil {
			old.Close()
		}
	}
}
