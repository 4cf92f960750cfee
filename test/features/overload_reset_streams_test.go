// The overload manager's reset_high_memory_stream action: streams
// holding the most buffer memory are reset under pressure.

package features_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// resetStreamsConfig is a proxy whose buffer filter holds request bodies
// (up to 4 MiB), with buffer accounts tracked from 4 KiB (power 13, as
// Envoy's integration test) and reset_high_memory_stream on a scaled
// trigger over the injected resource monitor reading pressureFile.
func resetStreamsConfig(upAddr, pressureFile, logPath string, withBufferFactory bool) cfg {
	bf := ""
	if withBufferFactory {
		bf = "\n  buffer_factory_config: {minimum_account_to_track_power_of_two: 13}"
	}
	return cfg{
		hcm: `access_log: [{name: envoy.access_loggers.file, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `,
            log_format: {text_format_source: {inline_string: "%REQ(x-name)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"}}}}]
          http_filters:
          - {name: envoy.filters.http.buffer, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 4194304}}
          - {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}`,
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", upAddr) + "]",
		extra: `overload_manager:
  refresh_interval: 0.05s` + bf + `
  resource_monitors:
  - name: envoy.resource_monitors.injected_resource
    typed_config: {"@type": type.googleapis.com/envoy.extensions.resource_monitors.injected_resource.v3.InjectedResourceConfig, filename: ` + pressureFile + `}
  actions:
  - name: envoy.overload_actions.reset_high_memory_stream
    triggers: [{name: envoy.resource_monitors.injected_resource, scaled: {scaling_threshold: 0.9, saturation_threshold: 0.98}}]
`,
	}
}

// setPressure moves a new pressure into place, as Envoy's tests do.
func setPressure(t *testing.T, file string, p float64) {
	t.Helper()
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%g", p)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
}

// raisePressure changes the pressure (by a little each time, so that each
// refresh changes the action's state and runs a reset pass) until the
// counter of reset streams reaches want: the proxy may not have read a
// body yet when the pressure first rises.
func raisePressure(t *testing.T, p *testutil.Proxy, file string, base float64, want int64) {
	t.Helper()
	i := 0
	testutil.Eventually(t, 10*time.Second, func() bool {
		setPressure(t, file, base+float64(i%5)*0.001)
		i++
		time.Sleep(60 * time.Millisecond)
		return p.Stat(t, "envoy.overload_actions.reset_high_memory_stream.count") >= want
	}, "no stream reset")
}

// TestOverloadResetHighMemoryStream: two uploads wait in the buffer
// filter, 64 KiB and 100 bytes of them sent; at pressure 0.95 (62 % of
// the scaled trigger: the streams of 16 KiB and more are eligible) the
// large one is reset — an HTTP/2 RST_STREAM, over HTTP/1 a closed
// connection — as Envoy, with no response, flag OM, details "overload";
// the small one then completes. Without buffer_factory_config the action
// is refused, as Envoy.
func TestOverloadResetHighMemoryStream(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	dir := t.TempDir()
	pressure, logPath := filepath.Join(dir, "pressure"), filepath.Join(dir, "access.log")
	setPressure(t, pressure, 0)

	if _, err := testutil.TryStartProxy(t, resetStreamsConfig(up.Addr, pressure, logPath, false).String(), nil); err == nil ||
		!strings.Contains(err.Error(), "requires buffer_factory_config") {
		t.Fatalf("without buffer_factory_config: %v, want the action refused naming buffer_factory_config", err)
	}

	p := start(t, resetStreamsConfig(up.Addr, pressure, logPath, true))
	if got := p.Stat(t, "envoy.overload_actions.reset_high_memory_stream.count"); got != 0 {
		t.Fatalf("reset count %d before any pressure", got)
	}

	t.Run("HTTP/2", func(t *testing.T) {
		setPressure(t, pressure, 0)
		before := p.Stat(t, "envoy.overload_actions.reset_high_memory_stream.count")
		c := testutil.H2CClient()
		type result struct {
			code int
			body string
			err  error
		}
		upload := func(name string, first, total int) (*io.PipeWriter, chan result) {
			pr, pw := io.Pipe()
			done := make(chan result, 1)
			go func() {
				req, _ := http.NewRequest("POST", p.URL("http", "/"+name), pr)
				req.ContentLength = int64(total)
				req.Header.Set("x-name", name)
				resp, err := c.Do(req)
				if err != nil {
					done <- result{err: err}
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				done <- result{code: resp.StatusCode, body: string(b), err: err}
			}()
			go pw.Write(make([]byte, first))
			return pw, done
		}
		_, largeDone := upload("large", 64<<10, 1<<20)
		smallW, smallDone := upload("small", 100, 200)
		testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "http.ingress.downstream_rq_active") == 2 }, "uploads not in the proxy")

		raisePressure(t, p, pressure, 0.95, before+1)
		var large result
		select {
		case large = <-largeDone:
		case <-time.After(5 * time.Second):
			t.Fatal("the large upload was not reset")
		}
		if large.err == nil || !strings.Contains(large.err.Error(), "stream error") {
			t.Errorf("large upload: %d %q %v, want a stream reset", large.code, large.body, large.err)
		}
		setPressure(t, pressure, 0)
		go func() {
			smallW.Write(make([]byte, 100))
			smallW.Close()
		}()
		var small result
		select {
		case small = <-smallDone:
		case <-time.After(30 * time.Second):
			t.Fatal("the small upload never finished")
		}
		if small.err != nil || small.code != 200 || !strings.Contains(small.body, "upstream=up") {
			t.Errorf("small upload: %d %q %v, want 200 from up", small.code, small.body, small.err)
		}
		if got := p.Stat(t, "envoy.overload_actions.reset_high_memory_stream.count"); got != before+1 {
			t.Errorf("reset count %d, want %d", got, before+1)
		}
		waitLog(t, logPath, "large 0 OM overload", "small 200 - via_upstream")
	})

	t.Run("HTTP/1.1", func(t *testing.T) {
		setPressure(t, pressure, 0)
		before := p.Stat(t, "envoy.overload_actions.reset_high_memory_stream.count")
		resets := p.Stat(t, "http.ingress.downstream_rq_rx_reset")
		conn, err := net.Dial("tcp", p.Addr("http"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /large1 HTTP/1.1\r\nHost: x\r\nx-name: large1\r\nContent-Length: %d\r\n\r\n", 1<<20)
		conn.Write(make([]byte, 64<<10))
		raisePressure(t, p, pressure, 0.95, before+1)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		if line != "" || err != io.EOF {
			t.Errorf("HTTP/1.1 large upload: read %q %v, want the connection closed with no response", line, err)
		}
		setPressure(t, pressure, 0)
		if got := p.Stat(t, "http.ingress.downstream_rq_rx_reset"); got != resets+1 {
			t.Errorf("downstream_rq_rx_reset %d, want %d", got, resets+1)
		}
		waitLog(t, logPath, "large1 0 OM overload")
	})
}

// waitLog waits for the access log to hold each line.
func waitLog(t *testing.T, path string, lines ...string) {
	t.Helper()
	var got []byte
	testutil.Eventually(t, 5*time.Second, func() bool {
		got, _ = os.ReadFile(path)
		for _, l := range lines {
			if !strings.Contains(string(got), l+"\n") {
				return false
			}
		}
		return true
	}, "access log %q lacks %q", got, lines)
}

// TestOverloadResetStreamWaitingUpstream: with no buffering filter, the
// router's copy of the body kept for retries is the stream's memory; a
// stream reset while it waits for a slow upstream's response is cut there
// (the upstream request is cancelled) and the client gets RST_STREAM, no
// 5xx; a small request on the same connection is served.
func TestOverloadResetStreamWaitingUpstream(t *testing.T) {
	release := make(chan struct{})
	upstreamGone := make(chan struct{}, 1)
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Header.Get("x-name") == "large" {
			select {
			case <-r.Context().Done():
				upstreamGone <- struct{}{}
				return
			case <-release:
			}
		}
		io.WriteString(w, "done")
	}))
	t.Cleanup(func() { close(release) })
	dir := t.TempDir()
	pressure, logPath := filepath.Join(dir, "pressure"), filepath.Join(dir, "access.log")
	setPressure(t, pressure, 0)
	c := resetStreamsConfig(up.Addr, pressure, logPath, true)
	c.hcm = strings.Replace(c.hcm, `          - {name: envoy.filters.http.buffer, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 4194304}}
`, "", 1)
	c.vhosts = vhost("{match: {prefix: /}, route: {cluster: up, retry_policy: {retry_on: 5xx, num_retries: 1}}}")
	p := start(t, c)

	client := testutil.H2CClient()
	largeErr := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("POST", p.URL("http", "/large"), strings.NewReader(strings.Repeat("x", 64<<10)))
		req.Header.Set("x-name", "large")
		resp, err := client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			err = fmt.Errorf("got a response: %d %q", resp.StatusCode, b)
		}
		largeErr <- err
	}()
	testutil.Eventually(t, 5*time.Second, func() bool { return up.Hits() == 1 }, "the large request never reached the upstream")
	raisePressure(t, p, pressure, 0.95, 1)
	select {
	case err := <-largeErr:
		if err == nil || !strings.Contains(err.Error(), "stream error") {
			t.Errorf("large request: %v, want a stream reset", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the large request was not reset")
	}
	select {
	case <-upstreamGone:
	case <-time.After(5 * time.Second):
		t.Error("the upstream request was not cancelled")
	}
	setPressure(t, pressure, 0)
	code, _, body := testutil.Do(t, client, "POST", p.URL("http", "/small"), "hello", "x-name", "small")
	if code != 200 || body != "done" {
		t.Errorf("small request: %d %q, want 200 done", code, body)
	}
	waitLog(t, logPath, "large 0 OM overload", "small 200 - via_upstream")
	if got := p.Stat(t, "http.ingress.downstream_rq_rx_reset"); got != 1 {
		t.Errorf("downstream_rq_rx_reset %d, want 1", got)
	}
}
