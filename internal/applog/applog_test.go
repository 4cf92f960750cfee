package applog

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

func newRecord(level slog.Level, msg string) slog.Record {
	return slog.NewRecord(time.Date(2018, 3, 27, 15, 25, 6, 8789123, time.Local), level, msg, 0)
}

func TestFormatFlags(t *testing.T) {
	for _, tc := range []struct {
		format, want string
		level        slog.Level
		msg          string
	}{
		{"%Y-%m-%d %T.%e", "2018-03-27 15:25:06.008", slog.LevelInfo, "x"},
		{"%f|%F|%C|%D|%R|%r|%p", "008789|008789123|18|03/27/18|15:25|03:25:06 PM|PM", slog.LevelInfo, "x"},
		{"%a %A %b %B", "Tue Tuesday Mar March", slog.LevelInfo, "x"},
		{"[%l][%L][%n] %v", "[warning][W][main] hello", slog.LevelWarn, "hello"},
		{"%l %L", "trace T", slog.LevelDebug - 4, ""},
		{"%l", "critical", slog.LevelError + 4, ""},
		{"100%% %v", "100% a\nb", slog.LevelInfo, "a\nb"},
		{"%_", `a\nb`, slog.LevelInfo, "a\nb"},
		{"%j", `say \"hi\"\n`, slog.LevelInfo, "say \"hi\"\n"},
	} {
		var b bytes.Buffer
		h, err := New(&b, Options{Format: tc.format, Level: slog.LevelDebug - 8})
		if err != nil {
			t.Fatalf("%q: %v", tc.format, err)
		}
		if err := h.Handle(t.Context(), newRecord(tc.level, tc.msg)); err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSuffix(b.String(), "\n"); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.format, got, tc.want)
		}
	}
}

// The default layout is Envoy's, with the source location and the
// record's attributes after the message.
func TestDefaultFormat(t *testing.T) {
	var b bytes.Buffer
	h, err := New(&b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	slog.New(h).With("cluster", "a").Warn("host ejected", "host", "127.0.0.1:80", "reason", "consecutive 5xx")
	re := regexp.MustCompile(`^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\]\[\d+\]\[warning\]\[main\] \[internal/applog/applog_test\.go:\d+\] host ejected cluster=a host=127\.0\.0\.1:80 reason="consecutive 5xx"\n$`)
	if !re.MatchString(b.String()) {
		t.Errorf("default format: %q", b.String())
	}
	b.Reset()
	slog.New(h).Info("below warning is logged at info")
	slog.New(h).Debug("debug is not")
	if strings.Count(b.String(), "\n") != 1 {
		t.Errorf("level filter: %q", b.String())
	}
}

func TestUnknownFlagRefused(t *testing.T) {
	for _, f := range []string{"%Q", "%v %", "%k"} {
		if _, err := New(&bytes.Buffer{}, Options{Format: f}); err == nil {
			t.Errorf("%q accepted", f)
		}
	}
}

func TestEscaped(t *testing.T) {
	if got := Escape("a\nb\t\"c\"\\\x01 \n"); got != `a\nb\t\"c\"\\\001 `+"\n" {
		t.Errorf("Escape: %q", got)
	}
	var b bytes.Buffer
	h, _ := New(&b, Options{Format: "%v", Escaped: true})
	slog.New(h).Info("two\nlines")
	if b.String() != `two\nlines`+"\n" {
		t.Errorf("escaped record: %q", b.String())
	}
}

func TestJSONFormatFromConfig(t *testing.T) {
	st, _ := structpb.NewStruct(map[string]any{"level": "%l", "msg": "%j", "logger": "%n"})
	alc := &bootstrapv3.Bootstrap_ApplicationLogConfig{LogFormat: &bootstrapv3.Bootstrap_ApplicationLogConfig_LogFormat{
		LogFormat: &bootstrapv3.Bootstrap_ApplicationLogConfig_LogFormat_JsonFormat{JsonFormat: st}}}
	var b bytes.Buffer
	h, err := FromConfig(alc, &b, slog.LevelInfo, false)
	if err != nil {
		t.Fatal(err)
	}
	slog.New(h).Error("bad \"config\"", "path", "a.b")
	var got map[string]string
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("not a JSON line: %q: %v", b.String(), err)
	}
	if got["level"] != "error" || got["msg"] != `bad "config" path=a.b` || got["logger"] != "main" {
		t.Errorf("JSON line: %v", got)
	}
	// %v is refused in a JSON format, as Envoy does.
	bad, _ := structpb.NewStruct(map[string]any{"msg": "%v"})
	alc.LogFormat.LogFormat = &bootstrapv3.Bootstrap_ApplicationLogConfig_LogFormat_JsonFormat{JsonFormat: bad}
	if _, err := FromConfig(alc, &b, slog.LevelInfo, false); err == nil {
		t.Errorf("%%v accepted in json_format")
	}
}

// Loggers handed out before Set write to the new destination after it,
// with their attributes and groups.
func TestSwap(t *testing.T) {
	var a, b bytes.Buffer
	ha, _ := New(&a, Options{Format: "A %v"})
	hb, _ := New(&b, Options{Format: "B %v"})
	sw := NewSwap(ha)
	log := slog.New(sw).With("k", 1).WithGroup("g")
	log.Info("one", "x", 2)
	sw.Set(hb)
	log.Info("two", "x", 3)
	if a.String() != "A one k=1 g.x=2\n" || b.String() != "B two k=1 g.x=3\n" {
		t.Errorf("swap: %q %q", a.String(), b.String())
	}
}
