package direct_response

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	drv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/direct_response/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/listener"
)

func compileYAML(t *testing.T, y string) (*filter, error) {
	t.Helper()
	c := &drv3.Config{}
	if _, err := config.Decode([]byte(y), c, "dr"); err != nil {
		t.Fatal(err)
	}
	return compile(c, "dr")
}

func TestConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "r")
	os.WriteFile(file, []byte("file body"), 0o600)
	t.Setenv("LEGATE_DR_TEST", "env body")
	for _, c := range []struct{ cfg, want, errPath string }{
		{`{response: {inline_string: hi}}`, "hi", ""},
		{`{response: {inline_bytes: aGk=}}`, "hi", ""},
		{`{response: {filename: ` + file + `}}`, "file body", ""},
		{`{response: {environment_variable: LEGATE_DR_TEST}}`, "env body", ""},
		{`{}`, "", ""},
		{`{response: {environment_variable: LEGATE_DR_TEST_UNSET}}`, "", "dr.response.environment_variable"},
		{`{response: {filename: /nonexistent/x}}`, "", "dr.response.filename"},
		{`{response: {filename: ` + file + `, watched_directory: {path: /tmp}}}`, "", "dr.response.watched_directory"},
	} {
		f, err := compileYAML(t, c.cfg)
		switch {
		case c.errPath == "" && err != nil:
			t.Errorf("%s: %v", c.cfg, err)
		case c.errPath != "" && (err == nil || !strings.Contains(err.Error(), c.errPath)):
			t.Errorf("%s: error %v, want one naming %s", c.cfg, err, c.errPath)
		case err == nil && string(f.response) != c.want:
			t.Errorf("%s: response %q, want %q", c.cfg, f.response, c.want)
		}
	}
}

func TestServe(t *testing.T) {
	f, _ := compileYAML(t, `{response: {inline_string: "banner\n"}}`)
	a, b := net.Pipe()
	go func() {
		f.ServeConn(&listener.Conn{Conn: a})
		a.Close() // the listener closes it
	}()
	got, _ := io.ReadAll(b)
	if string(got) != "banner\n" {
		t.Errorf("got %q", got)
	}
}
