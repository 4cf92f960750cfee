// Package applog writes Legate's own log lines (not access logs) in
// Envoy's shape: a log/slog handler that lays out each record with the
// format flags of Envoy's --log-format and the bootstrap's
// application_log_config (spdlog's pattern flags: %Y-%m-%d %T.%e, %l, %n,
// %v, …), as text or as JSON lines, optionally with C-style escapes
// (--log-format-escaped). Swap lets the bootstrap's format replace the
// command line's after the logger has been handed out.
package applog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// DefaultFormat is Envoy's default --log-format.
const DefaultFormat = "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v"

// LoggerName is what %n prints for a record that names no component:
// Envoy's "main" (see Component for the others).
const LoggerName = "main"

// Options configure a Handler.
type Options struct {
	// Format is the text layout (Envoy's --log-format); "" is DefaultFormat.
	Format string
	// JSON, when set, lays out each line as a JSON object whose values are
	// formats (application_log_config.log_format.json_format); Format is
	// then unused.
	JSON map[string]string
	// Escaped escapes C-style escape sequences in messages
	// (--log-format-escaped), so that one record stays one line.
	Escaped bool
	// Level is the minimum level (nil: info), unless Components is set.
	Level slog.Leveler
	// Components, when set, are the per-component levels (Envoy's
	// loggers): a record is written when its level reaches its
	// component's (the "logger" attribute, see Component; DefaultComponent
	// when it names none). Level is then unused.
	Components *Registry
}

// Handler is a slog.Handler writing Envoy-formatted lines.
type Handler struct {
	mu      *sync.Mutex
	w       io.Writer
	text    []part
	json    []jsonField
	escaped bool
	level   slog.Leveler
	comps   *Registry
	// component is the component bound with WithAttrs ("" for none).
	component string
	// attrs are the pre-rendered " key=value" pairs of WithAttrs; group is
	// the WithGroup prefix.
	attrs string
	group string
}

type jsonField struct {
	key   string
	parts []part
}

// part is one piece of a format: a literal or a flag.
type part struct {
	lit  string
	flag byte
}

// New returns a handler writing to w.
func New(w io.Writer, o Options) (*Handler, error) {
	h := &Handler{mu: &sync.Mutex{}, w: w, escaped: o.Escaped, level: o.Level, comps: o.Components}
	if h.level == nil {
		h.level = slog.LevelInfo
	}
	if o.JSON != nil {
		keys := make([]string, 0, len(o.JSON))
		for k := range o.JSON {
			keys = append(keys, k)
		}
		// JSON objects print their keys sorted (Envoy's Struct is a map).
		slices.Sort(keys)
		for _, k := range keys {
			ps, err := parse(o.JSON[k])
			if err != nil {
				return nil, fmt.Errorf("json_format.%s: %w", k, err)
			}
			h.json = append(h.json, jsonField{k, ps})
		}
		return h, nil
	}
	f := o.Format
	if f == "" {
		f = DefaultFormat
	}
	ps, err := parse(f)
	if err != nil {
		return nil, err
	}
	h.text = ps
	return h, nil
}

// flags are the format flags Envoy documents for --log-format.
const flags = "vtPnlLaAbBcCYDxmdHIMSefFprRTXz%@sg#!_j"

func parse(f string) ([]part, error) {
	var out []part
	var lit strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			lit.WriteByte(f[i])
			continue
		}
		if i+1 >= len(f) {
			return nil, fmt.Errorf("log format %q ends in a lone %%", f)
		}
		c := f[i+1]
		i++
		if c == '%' {
			lit.WriteByte('%')
			continue
		}
		if strings.IndexByte(flags, c) < 0 {
			return nil, fmt.Errorf("log format %q: %%%c is not a format flag Legate implements (see Envoy's --log-format flags)", f, c)
		}
		if lit.Len() > 0 {
			out = append(out, part{lit: lit.String()})
			lit.Reset()
		}
		out = append(out, part{flag: c})
	}
	if lit.Len() > 0 {
		out = append(out, part{lit: lit.String()})
	}
	return out, nil
}

// Enabled reports whether level is logged.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool {
	if h.comps != nil {
		return enabledFor(h.comps, h.component, l)
	}
	return l >= h.level.Level()
}

// enabledFor is the level check of a handler with component levels: a
// handler bound to a component checks its level; one that is not lets
// through what any component logs, for Handle to check the component the
// record names.
func enabledFor(r *Registry, component string, l slog.Level) bool {
	if component != "" {
		return l >= r.Level(component)
	}
	return l >= r.Min()
}

// recordComponent is the component of r logged through a handler bound
// to bound ("" for none): bound, else the record's "logger" attribute,
// else DefaultComponent.
func recordComponent(bound string, r slog.Record) string {
	if bound != "" {
		return bound
	}
	name := DefaultComponent
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == ComponentKey {
			name = a.Value.String()
			return false
		}
		return true
	})
	return name
}

// WithAttrs returns a handler that adds attrs to every record. A
// "logger" attribute (outside any group) binds the component.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range attrs {
		if a.Key == ComponentKey && h.group == "" {
			c.component = a.Value.String()
			continue
		}
		appendAttr(&b, h.group, a)
	}
	c.attrs = b.String()
	return &c
}

// WithGroup returns a handler that prefixes attribute keys with name.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.group = h.group + name + "."
	return &c
}

// Handle writes one line.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	if h.comps != nil && r.Level < h.comps.Level(recordComponent(h.component, r)) {
		return nil
	}
	var msg strings.Builder
	msg.WriteString(r.Message)
	msg.WriteString(h.attrs)
	name := LoggerName
	if h.component != "" {
		name = h.component
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == ComponentKey && h.group == "" {
			if h.component == "" {
				name = a.Value.String()
			}
			return true
		}
		appendAttr(&msg, h.group, a)
		return true
	})
	m := msg.String()
	if h.escaped {
		m = Escape(m)
	}
	rec := record{r: r, msg: m, name: name, inJSON: h.json != nil}
	var line bytes.Buffer
	if h.json != nil {
		obj := make(map[string]string, len(h.json))
		for _, f := range h.json {
			var b bytes.Buffer
			for _, p := range f.parts {
				rec.write(&b, p)
			}
			obj[f.key] = b.String()
		}
		enc := json.NewEncoder(&line)
		enc.SetEscapeHTML(false) // "<" stays "<", as in Envoy's lines
		if err := enc.Encode(obj); err != nil {
			return err
		}
	} else {
		for _, p := range h.text {
			rec.write(&line, p)
		}
		line.WriteByte('\n')
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.w.Write(line.Bytes())
	return err
}

func appendAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		g := group
		if a.Key != "" {
			g += a.Key + "."
		}
		for _, ga := range a.Value.Group() {
			appendAttr(b, g, ga)
		}
		return
	}
	b.WriteByte(' ')
	b.WriteString(group)
	b.WriteString(a.Key)
	b.WriteByte('=')
	v := a.Value.String()
	if v == "" || strings.ContainsAny(v, " \t\n\"=") {
		v = strconv.Quote(v)
	}
	b.WriteString(v)
}

// record is one record being laid out.
type record struct {
	r      slog.Record
	msg    string
	name   string
	frame  *runtime.Frame
	inJSON bool
}

func (rc *record) source() runtime.Frame {
	if rc.frame == nil {
		f := runtime.Frame{}
		if rc.r.PC != 0 {
			f, _ = runtime.CallersFrames([]uintptr{rc.r.PC}).Next()
		}
		rc.frame = &f
	}
	return *rc.frame
}

var pid = strconv.Itoa(os.Getpid())

// srcRoot is the repository's directory in source paths (this file is
// internal/applog/applog.go under it).
var srcRoot = func() string {
	_, file, _, _ := runtime.Caller(0)
	return strings.TrimSuffix(file, "internal/applog/applog.go")
}()

func (rc *record) write(b *bytes.Buffer, p part) {
	if p.flag == 0 {
		b.WriteString(p.lit)
		return
	}
	t := rc.r.Time.Local()
	switch p.flag {
	case 'v':
		b.WriteString(rc.msg)
	case '_':
		// The message with its newlines escaped (Envoy's custom flag).
		b.WriteString(strings.ReplaceAll(rc.msg, "\n", `\n`))
	case 'j':
		// The message as the inside of a JSON string (Envoy's custom flag).
		// In a JSON line the whole value is marshalled afterwards, which
		// escapes it once, as Envoy's template substitution does.
		if rc.inJSON {
			b.WriteString(rc.msg)
			break
		}
		q, _ := json.Marshal(rc.msg)
		b.Write(q[1 : len(q)-1])
	case 't':
		// Envoy prints the worker thread's id; a goroutine has none, so
		// this is the OS thread that logged.
		b.WriteString(strconv.Itoa(syscall.Gettid()))
	case 'P':
		b.WriteString(pid)
	case 'n':
		b.WriteString(rc.name)
	case 'l':
		b.WriteString(LevelName(rc.r.Level))
	case 'L':
		b.WriteString(strings.ToUpper(LevelName(rc.r.Level)[:1]))
	case 'a':
		b.WriteString(t.Format("Mon"))
	case 'A':
		b.WriteString(t.Format("Monday"))
	case 'b':
		b.WriteString(t.Format("Jan"))
	case 'B':
		b.WriteString(t.Format("January"))
	case 'c':
		b.WriteString(t.Format("Mon Jan _2 15:04:05 2006"))
	case 'C':
		b.WriteString(t.Format("06"))
	case 'Y':
		b.WriteString(t.Format("2006"))
	case 'D', 'x':
		b.WriteString(t.Format("01/02/06"))
	case 'm':
		b.WriteString(t.Format("01"))
	case 'd':
		b.WriteString(t.Format("02"))
	case 'H':
		b.WriteString(t.Format("15"))
	case 'I':
		b.WriteString(t.Format("03"))
	case 'M':
		b.WriteString(t.Format("04"))
	case 'S':
		b.WriteString(t.Format("05"))
	case 'e':
		fmt.Fprintf(b, "%03d", t.Nanosecond()/1e6)
	case 'f':
		fmt.Fprintf(b, "%06d", t.Nanosecond()/1e3)
	case 'F':
		fmt.Fprintf(b, "%09d", t.Nanosecond())
	case 'p':
		b.WriteString(t.Format("PM"))
	case 'r':
		b.WriteString(t.Format("03:04:05 PM"))
	case 'R':
		b.WriteString(t.Format("15:04"))
	case 'T', 'X':
		b.WriteString(t.Format("15:04:05"))
	case 'z':
		b.WriteString(t.Format("-07:00"))
	case '@':
		f := rc.source()
		fmt.Fprintf(b, "%s:%d", filepath.Base(f.File), f.Line)
	case 's':
		b.WriteString(filepath.Base(rc.source().File))
	case 'g':
		// Envoy prints the path from its source root; so does Legate.
		b.WriteString(strings.TrimPrefix(rc.source().File, srcRoot))
	case '#':
		b.WriteString(strconv.Itoa(rc.source().Line))
	case '!':
		fn := rc.source().Function
		if i := strings.LastIndexByte(fn, '.'); i >= 0 {
			fn = fn[i+1:]
		}
		b.WriteString(fn)
	}
}

// Levels are Envoy's level names on slog's scale (trace below debug,
// critical above error).
var Levels = map[string]slog.Level{
	"trace": slog.LevelDebug - 4, "debug": slog.LevelDebug, "info": slog.LevelInfo,
	"warning": slog.LevelWarn, "warn": slog.LevelWarn, "error": slog.LevelError,
	"critical": slog.LevelError + 4, "off": slog.LevelError + 8,
}

// LevelName renders a level with Envoy's names.
func LevelName(l slog.Level) string {
	switch {
	case l < slog.LevelDebug:
		return "trace"
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warning"
	case l < slog.LevelError+4:
		return "error"
	case l < slog.LevelError+8:
		return "critical"
	}
	return "off"
}

// Escape escapes s as Envoy's --log-format-escaped does (absl::CEscape):
// \n, \r, \t, quotes and backslashes by name, other control bytes in
// octal; trailing whitespace (the line's end) is kept as is.
func Escape(s string) string {
	end := len(strings.TrimRight(s, " \t\r\n"))
	var b strings.Builder
	for i := 0; i < end; i++ {
		switch c := s[i]; {
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\\', c == '\'', c == '"':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, "\\%03o", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteString(s[end:])
	return b.String()
}

// Swap is a handler whose destination can be replaced after loggers have
// been handed out: the command line's format until the bootstrap's
// application_log_config has been read.
type Swap struct {
	cur *atomic.Pointer[slog.Handler]
	// comps are the component levels (nil: the destination's level
	// decides), shared by every Swap derived from this one.
	comps *atomic.Pointer[Registry]
	// ops are the WithAttrs/WithGroup calls made on this handler, applied
	// in order to the current destination.
	ops []op
	// component is the component a WithAttrs bound ("" for none).
	component string
	grouped   bool
}

type op struct {
	attrs []slog.Attr
	group string
}

// NewSwap returns a Swap writing to h.
func NewSwap(h slog.Handler) *Swap {
	s := &Swap{cur: &atomic.Pointer[slog.Handler]{}, comps: &atomic.Pointer[Registry]{}}
	s.cur.Store(&h)
	return s
}

// SetComponents makes the component levels decide what this Swap, and
// every handler derived from it, writes, whatever the destination's own
// level: the bootstrap's application_log_config handler is built with the
// process level only.
func (s *Swap) SetComponents(r *Registry) { s.comps.Store(r) }

// Set replaces the destination of this Swap and of every handler derived
// from it.
func (s *Swap) Set(h slog.Handler) { s.cur.Store(&h) }

func (s *Swap) target() slog.Handler {
	h := *s.cur.Load()
	for _, o := range s.ops {
		if o.group != "" {
			h = h.WithGroup(o.group)
		} else {
			h = h.WithAttrs(o.attrs)
		}
	}
	return h
}

// Enabled asks the current destination.
func (s *Swap) Enabled(ctx context.Context, l slog.Level) bool {
	if r := s.comps.Load(); r != nil {
		return enabledFor(r, s.component, l)
	}
	return (*s.cur.Load()).Enabled(ctx, l)
}

// Handle writes r to the current destination (with component levels, when
// its component's level lets it through).
func (s *Swap) Handle(ctx context.Context, r slog.Record) error {
	if c := s.comps.Load(); c != nil && r.Level < c.Level(recordComponent(s.component, r)) {
		return nil
	}
	return s.target().Handle(ctx, r)
}

// WithAttrs returns a Swap that adds attrs.
func (s *Swap) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := &Swap{cur: s.cur, comps: s.comps, ops: append(slices.Clip(s.ops), op{attrs: attrs}), component: s.component, grouped: s.grouped}
	if !s.grouped {
		for _, a := range attrs {
			if a.Key == ComponentKey {
				c.component = a.Value.String()
			}
		}
	}
	return c
}

// WithGroup returns a Swap that groups later attributes under name.
func (s *Swap) WithGroup(name string) slog.Handler {
	if name == "" {
		return s
	}
	return &Swap{cur: s.cur, comps: s.comps, ops: append(slices.Clip(s.ops), op{group: name}), component: s.component, grouped: true}
}
