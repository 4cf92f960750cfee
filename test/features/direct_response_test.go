// Network direct response: envoy.filters.network.direct_response writes
// its DataSource to every connection and closes it.

package features_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// terminalListener renders a listener called name whose one chain is the
// terminal network filter given (flow YAML).
func terminalListener(name, filter string) string {
	return fmt.Sprintf(`  - name: %s
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [%s]}]
`, name, filter)
}

func directResponse(response string) string {
	return fmt.Sprintf(`{name: envoy.filters.network.direct_response, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.direct_response.v3.Config%s}}`, response)
}

// readAllFrom dials addr, optionally sends data, and reads until the proxy
// closes the connection.
func readAllFrom(t *testing.T, addr, data string) (string, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if data != "" {
		io.WriteString(c, data)
	}
	return waitClosed(c)
}

func TestNetworkDirectResponse(t *testing.T) {
	file := filepath.Join(t.TempDir(), "banner")
	if err := os.WriteFile(file, []byte("from a file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	listeners := terminalListener("inline", directResponse(`, response: {inline_string: "hello from legate\n"}`)) +
		terminalListener("file", directResponse(fmt.Sprintf(`, response: {filename: %q}`, file))) +
		terminalListener("bytes", directResponse(`, response: {inline_bytes: "AAEC"}`)) +
		terminalListener("empty", directResponse(""))
	p := testutil.StartProxy(t, netBootstrap(listeners, ""), nil)

	for _, c := range []struct{ listener, want string }{
		{"inline", "hello from legate\n"}, {"file", "from a file\n"}, {"bytes", "\x00\x01\x02"}, {"empty", ""},
	} {
		got, closed := readAllFrom(t, p.Addr(c.listener), "")
		if got != c.want || !closed {
			t.Errorf("%s: read %q (closed=%v), want %q and a close", c.listener, got, closed, c.want)
		}
	}
	// What the client sends changes nothing.
	start := time.Now()
	if got, closed := readAllFrom(t, p.Addr("inline"), "GET / HTTP/1.1\r\n\r\n"); got != "hello from legate\n" || !closed {
		t.Errorf("after a request: read %q, closed=%v", got, closed)
	}
	if time.Since(start) > 2*time.Second {
		t.Error("the connection was not closed after the response")
	}
}

func TestNetworkDirectResponseConfigErrors(t *testing.T) {
	for _, c := range []struct{ listeners, want string }{
		{terminalListener("l", directResponse(`, response: {environment_variable: LEGATE_TEST_SURELY_UNSET_VAR}`)), "response.environment_variable"},
		{terminalListener("l", directResponse(`, response: {filename: /nonexistent/legate/banner}`)), "response.filename"},
		// A terminal filter ends the chain.
		{terminalListener("l", directResponse("")+`, {name: envoy.filters.network.echo, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo}}`), "terminal"},
	} {
		_, err := testutil.TryStartProxy(t, netBootstrap(c.listeners, ""), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want one naming %s", err, c.want)
		}
	}
}
