package admin

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/applog"
)

// levelServer is a Server with only a process log level.
type levelServer struct {
	Server
	lv *slog.LevelVar
}

func (s levelServer) LogLevel() *slog.LevelVar { return s.lv }

// /logging as Envoy's LogsHandler: the list of every logger, level= for
// all, <name>= for one, paths= for several; a bad request is a 400 with
// the error and the usage, and changes nothing.
func TestLogging(t *testing.T) {
	lv := new(slog.LevelVar)
	reg := applog.NewRegistry(lv)
	a := &Admin{srv: levelServer{lv: lv}}
	for _, tc := range []struct {
		query string
		code  int
		body  []string // substrings of the answer
		want  map[string]string
	}{
		{"", 200, []string{"active loggers:\n  admin: info\n  alternate_protocols_cache: info\n", "  upstream: info\n", "  golang: info\n\n"}, map[string]string{"upstream": "info"}},
		{"?upstream=debug", 200, []string{"  upstream: debug\n", "  main: info\n"}, map[string]string{"upstream": "debug", "main": "info"}},
		{"?paths=connection:trace,http2:critical", 200, nil, map[string]string{"connection": "trace", "http2": "critical", "upstream": "debug"}},
		{"?level=warning", 200, []string{"  upstream: warning\n"}, map[string]string{"upstream": "warning", "connection": "warning"}},
		{"?legate=debug", 400, []string{"error: unknown logger name\n\nusage: /logging?<name>=<level> (change single level)\n", "levels: trace debug info warning error critical off \n", "active loggers:\n"}, map[string]string{"main": "warning"}},
		{"?paths=upstream:debug,nope:info", 400, []string{"error: unknown logger name"}, map[string]string{"upstream": "warning"}},
		{"?paths=upstream:", 400, []string{"error: empty logger name or empty logger level"}, nil},
		{"?upstream=loud", 400, []string{"error: unknown logger level"}, map[string]string{"upstream": "warning"}},
		{"?level=warn", 400, []string{"error: unknown logger level"}, nil}, // Envoy's admin takes spdlog's names only
		{"?level=debug&upstream=info", 400, []string{"error: invalid number of parameters"}, map[string]string{"upstream": "warning"}},
		{"?level=debug", 200, nil, map[string]string{"main": "debug", "golang": "debug"}},
	} {
		rec := httptest.NewRecorder()
		a.handleLogging(rec, httptest.NewRequest(http.MethodPost, "/logging"+tc.query, nil))
		body := rec.Body.String()
		if rec.Code != tc.code {
			t.Errorf("%s: code %d, want %d\n%s", tc.query, rec.Code, tc.code, body)
		}
		for _, s := range tc.body {
			if !strings.Contains(body, s) {
				t.Errorf("%s: answer lacks %q:\n%s", tc.query, s, body)
			}
		}
		for name, want := range tc.want {
			if got := LevelName(reg.Level(name)); got != want {
				t.Errorf("%s: %s is at %s, want %s", tc.query, name, got, want)
			}
		}
	}
	if lv.Level() != slog.LevelDebug {
		t.Errorf("level= did not set the process level: %v", lv.Level())
	}
}
