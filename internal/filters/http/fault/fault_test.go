package fault_test

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// Envoy's fault-injection example: faults at 0 % in the config, turned on
// through a disk runtime layer (files under symlink_root/subdirectory).
const cfg = `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
layered_runtime:
  layers:
  - name: disk_layer_0
    disk_layer: {symlink_root: {{.Root}}/current, subdirectory: envoy}
  - name: admin_layer_0
    admin_layer: {}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: {{.Root}}/access.log,
            log_format: {text_format: "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"}}}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/headers"}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                    abort: {header_abort: {}, percentage: {numerator: 100}}
                    delay: {header_delay: {}, percentage: {numerator: 100}}
              - match: {prefix: "/capped"}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                    abort: {http_status: 500, percentage: {numerator: 100}}
                    max_active_faults: 0
              - match: {prefix: "/"}
                route: {cluster: backend}
          http_filters:
          - name: envoy.filters.http.fault
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
              abort: {http_status: 503, percentage: {numerator: 0, denominator: HUNDRED}}
              delay: {fixed_delay: 0.05s, percentage: {numerator: 0, denominator: HUNDRED}}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    type: STATIC
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Port}}}}}}]}]}
`

func get(t *testing.T, u string, hdr ...string) (int, string) {
	t.Helper()
	code, _, body := testutil.Get(t, testutil.Client(), u, hdr...)
	return code, body
}

// setRuntime writes a runtime tree and swaps the symlink to it, as the
// example's operator does.
func setRuntime(t *testing.T, root, name string, kv map[string]string) {
	dir := filepath.Join(root, name, "envoy")
	for k, v := range kv {
		p := filepath.Join(dir, strings.ReplaceAll(k, ".", "/"))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(root, "current.tmp")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join(root, name), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(root, "current")); err != nil {
		t.Fatal(err)
	}
}

func TestFault(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	_, port := up.Host()
	root := t.TempDir()
	setRuntime(t, root, "v0", map[string]string{"unrelated.key": "1"})
	p := testutil.StartProxy(t, cfg, map[string]string{"Root": root, "Port": port})
	u := p.URL("http", "/")
	if code, _ := get(t, u); code != 200 {
		t.Fatalf("faults at 0 %%: status %d", code)
	}
	// The runtime turns the abort on (fault.http.abort.abort_percent).
	setRuntime(t, root, "v1", map[string]string{"fault.http.abort.abort_percent": "100"})
	testutil.Eventually(t, 5*time.Second, func() bool { code, _ := get(t, u); return code == 503 }, "the disk runtime layer never enabled the abort")
	code, body := get(t, u)
	if code != 503 || body != "fault filter abort" {
		t.Errorf("abort: %d %q", code, body)
	}
	// The admin layer overrides the disk layer: abort off, delay on.
	resp, err := http.PostForm("http://"+p.Admin+"/runtime_modify", url.Values{"fault.http.abort.abort_percent": {"0"}, "fault.http.delay.fixed_delay_percent": {"100"}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("runtime_modify: %v %v", resp, err)
	}
	if code, _ := get(t, u); code != 200 {
		t.Errorf("delayed request: %d", code)
	}
	r, _ := http.Get("http://" + p.Admin + "/runtime")
	rb, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if !strings.Contains(string(rb), `"fault.http.abort.abort_percent"`) || !strings.Contains(string(rb), "disk_layer_0") {
		t.Errorf("/runtime: %s", rb)
	}
	// Back to the disk layer's values (abort at 100 %) for the rest: an
	// empty value removes an admin key.
	http.PostForm("http://"+p.Admin+"/runtime_modify", url.Values{"fault.http.abort.abort_percent": {""}, "fault.http.delay.fixed_delay_percent": {""}})
	// Header-controlled faults on a route with its own config (the
	// runtime percentages apply to them too, as in Envoy).
	if code, _ := get(t, p.URL("http", "/headers"), "x-envoy-fault-abort-request", "418"); code != 418 {
		t.Errorf("header abort: %d", code)
	}
	if code, _ := get(t, p.URL("http", "/headers"), "x-envoy-fault-abort-request", "418", "x-envoy-fault-abort-request-percentage", "0"); code != 200 {
		t.Errorf("header percentage 0 still aborted: %d", code)
	}
	if code, _ := get(t, p.URL("http", "/headers"), "x-envoy-fault-delay-request", "20"); code != 200 {
		t.Errorf("header delay: %d", code)
	}
	// max_active_faults 0: every fault overflows.
	if code, _ := get(t, p.URL("http", "/capped")); code != 200 {
		t.Errorf("max_active_faults 0: %d", code)
	}
	for name, want := range map[string]int64{"http.ingress.fault.aborts_injected": 3, "http.ingress.fault.delays_injected": 2,
		"http.ingress.fault.faults_overflow": 1} {
		if got := p.Stat(t, name); got < want || (name != "http.ingress.fault.aborts_injected" && got != want) {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	// The gauge drops when the streams end (just after their responses).
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "http.ingress.fault.active_faults") == 0 }, "active_faults never back to 0")
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(root, "access.log"))
		return strings.Contains(string(b), "/ 503 FI fault_filter_abort") && strings.Contains(string(b), "/ 200 DI via_upstream")
	}, "access log lacks the FI and DI flags")
}
