// Package accesslog implements Envoy's access loggers — file, stdout and
// stderr, selected by @type — with Envoy's access-log filters. Entries are
// formatted on the request path into a shared, buffered writer per file,
// which a background flusher writes out every second (Envoy's
// file_flush_interval) or when 64 KiB accumulate; SIGUSR1 reopens files.
package accesslog

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
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
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Log writes an entry for a finished request if the filter admits it.
func (l *Logger) Log(info *streaminfo.Info) {
	if l.filter != nil && !l.filter(info) {
		return
	}
	bp := bufPool.Get().(*[]byte)
	b := l.entry.Append((*bp)[:0], info)
	l.out.write(b)
	*bp = b
	bufPool.Put(bp)
}

// Compile compiles an access_log list.
func Compile(logs []*accesslogv3.AccessLog, path string, st *stats.Store) ([]*Logger, error) {
	var out []*Logger
	for i, al := range logs {
		p := config.Index(path, i)
		if err := config.CheckFields(al, p, "name", "typed_config", "filter"); err != nil {
			return nil, err
		}
		l, err := compileOne(al, p, st)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

func compileOne(al *accesslogv3.AccessLog, path string, st *stats.Store) (*Logger, error) {
	l := &Logger{}
	if f := al.GetFilter(); f != nil {
		fl, err := compileFilter(f, config.Join(path, "filter"))
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
	if err := r.Ext.Factory.(loggerFactory)(r.Config, l, st, tp); err != nil {
		return nil, err
	}
	return l, nil
}

// loggerFactory compiles an access logger's typed_config into l.
type loggerFactory func(cfg proto.Message, l *Logger, st *stats.Store, path string) error

func init() {
	extension.Register(extension.Extension{Name: "envoy.access_loggers.file", Aliases: []string{"envoy.file_access_log"},
		Category: extension.AccessLogger, Config: &filev3.FileAccessLog{}, Factory: loggerFactory(compileFile)})
	extension.Register(extension.Extension{Name: "envoy.access_loggers.stdout", Category: extension.AccessLogger,
		Config: &streamv3.StdoutAccessLog{}, Factory: loggerFactory(func(cfg proto.Message, l *Logger, st *stats.Store, path string) error {
			return compileStream(cfg.(*streamv3.StdoutAccessLog), "/dev/stdout", l, st, path)
		})})
	extension.Register(extension.Extension{Name: "envoy.access_loggers.stderr", Category: extension.AccessLogger,
		Config: &streamv3.StderrAccessLog{}, Factory: loggerFactory(func(cfg proto.Message, l *Logger, st *stats.Store, path string) error {
			return compileStream(cfg.(*streamv3.StderrAccessLog), "/dev/stderr", l, st, path)
		})})
}

func compileFile(msg proto.Message, l *Logger, st *stats.Store, tp string) error {
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
	l.out, err = openWriter(fl.GetPath(), st)
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

func compileStream(m streamLog, dev string, l *Logger, st *stats.Store, tp string) error {
	if err := config.CheckFields(m, tp, "log_format"); err != nil {
		return err
	}
	l.out, _ = openWriter(dev, st)
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

var (
	writersMu sync.Mutex
	writers   = map[string]*writer{}
	flusher   sync.Once
)

func openWriter(path string, st *stats.Store) (*writer, error) {
	writersMu.Lock()
	defer writersMu.Unlock()
	if w := writers[path]; w != nil {
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
	s := st
	if s == nil {
		s = stats.NewStore()
	}
	sc := s.Scope("access_log_file.")
	w := &writer{path: path,
		buffered: sc.Counter("write_buffered"), completed: sc.Counter("write_completed"),
		flushedByTimer: sc.Counter("flushed_by_timer"), reopenFailed: sc.Counter("reopen_failed")}
	writers[path] = w
	flusher.Do(func() { go flushLoop() })
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

func flushLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for range t.C {
		for _, w := range allWriters() {
			if w.flush() {
				w.flushedByTimer.Inc()
			}
		}
	}
}

func allWriters() []*writer {
	writersMu.Lock()
	defer writersMu.Unlock()
	out := make([]*writer, 0, len(writers))
	for _, w := range writers {
		out = append(out, w)
	}
	return out
}

// Flush writes every buffered entry out (shutdown, tests).
func Flush() {
	for _, w := range allWriters() {
		w.flush()
	}
}

// Reopen closes and reopens every access log file (SIGUSR1, after log
// rotation), flushing first.
func Reopen() {
	for _, w := range allWriters() {
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
