package controller

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	contourv1alpha1 "github.com/legateproxy/legate/api/projectcontour/v1alpha1"
	"github.com/legateproxy/legate/internal/controller/contourconfig"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

// TestContourConfigFile: a Contour configuration file (what
// --config-path loads) reaches Legate's proxy: disablePermitInsecure
// redirects a permitInsecure route, tls.minimum-protocol-version refuses
// TLS 1.2 clients, timeouts.connection-idle-timeout closes idle
// connections, and every request is in the access log in Envoy's
// default format (on by default, as Contour).
func TestContourConfigFile(t *testing.T) {
	cfg, err := contourconfig.Parse(strings.NewReader(`
disablePermitInsecure: true
tls:
  minimum-protocol-version: "1.3"
timeouts:
  connection-idle-timeout: 500ms
cluster:
  max-requests-per-connection: 1
  per-connection-buffer-limit-bytes: 32768
  circuit-breakers: {max-connections: 100}
listener:
  http2-max-concurrent-streams: 50
  per-connection-buffer-limit-bytes: 65536
`))
	if err != nil {
		t.Fatal(err)
	}
	up := testutil.StartUpstream(t, testutil.EchoHandler("cc"))
	ca := testutil.NewCA(t, "contourconfig-ca")
	leaf := ca.Issue(t, "cc.example.com", "cc.example.com")
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	dir := t.TempDir()
	writeFile(t, dir, "objs.yaml", services("svc-cc")+slice("svc-cc", up.Addr)+fmt.Sprintf(`---
apiVersion: v1
kind: Secret
metadata: {name: cc-tls, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: cc, namespace: default}
spec:
  virtualhost: {fqdn: cc.example.com, tls: {secretName: cc-tls}}
  routes:
  - conditions: [{prefix: /open}]
    permitInsecure: true
    services: [{name: svc-cc, port: 80}]
  - services: [{name: svc-cc, port: 80}]
`, b64(leaf.CertPEM), b64(leaf.KeyPEM)))
	st := source.NewStore()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := source.WatchManifests(ctx, dir, st, testLogger(t), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	accessLog := filepath.Join(t.TempDir(), "access.log")
	x := startCP(t, st, cpOptions{contour: cfg, accessLog: accessLog})
	p := startProxy(t, x)

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	httpsClient := func(maxVersion uint16) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "cc.example.com", MaxVersion: maxVersion},
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", x.httpsPort))
			}}}
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", x.httpPort)
	plain := fromClient("127.0.0.1")
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, _, _ := do(t, httpsClient(0), "GET", "https://cc.example.com/logged", "cc.example.com")
		return code == 200
	}, "proxy never served cc.example.com over HTTPS")
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}

	t.Run("disablePermitInsecure", func(t *testing.T) {
		code, h, _ := do(t, plain, "GET", base+"/open", "cc.example.com")
		if code != 301 || h.Get("Location") != "https://cc.example.com/open" {
			t.Errorf("GET http://cc.example.com/open = %d %v, want a 301 to HTTPS despite permitInsecure", code, h)
		}
	})

	t.Run("tls.minimum-protocol-version", func(t *testing.T) {
		code, _, body := do(t, httpsClient(tls.VersionTLS12), "GET", "https://cc.example.com/", "cc.example.com")
		if code != 0 {
			t.Errorf("TLS 1.2 client got %d %q, want the handshake refused", code, body)
		}
	})

	t.Run("timeouts.connection-idle-timeout", func(t *testing.T) {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", x.httpPort))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /open HTTP/1.1\r\nHost: cc.example.com\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		start := time.Now()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = br.ReadByte()
		if elapsed := time.Since(start); !errors.Is(err, io.EOF) || elapsed > 3*time.Second {
			t.Errorf("idle keep-alive connection: %v after %s, want closed by the proxy after about 500ms (Envoy's default is 1h, Contour's 60s)", err, elapsed)
		}
	})

	t.Run("cluster.max-requests-per-connection", func(t *testing.T) {
		// One request per upstream connection: every one the proxy
		// forwarded reached the limit and closed its connection.
		for i := 0; i < 3; i++ {
			if code, _, _ := do(t, httpsClient(0), "GET", "https://cc.example.com/x", "cc.example.com"); code != 200 {
				t.Fatalf("request %d = %d", i, code)
			}
		}
		rq, cx := p.Stat(t, "cluster.default_svc-cc_80.upstream_rq_total"), p.Stat(t, "cluster.default_svc-cc_80.upstream_cx_total")
		if rq < 3 || cx != rq || p.Stat(t, "cluster.default_svc-cc_80.upstream_cx_max_requests") < rq-1 {
			t.Errorf("upstream requests %d over %d connections (upstream_cx_max_requests %d), want one request per connection", rq, cx, p.Stat(t, "cluster.default_svc-cc_80.upstream_cx_max_requests"))
		}
	})

	t.Run("access log in Envoy's default format", func(t *testing.T) {
		// [START_TIME] "METHOD PATH PROTOCOL" CODE FLAGS RX TX DURATION
		// UPSTREAM_TIME "XFF" "USER-AGENT" "REQUEST-ID" "AUTHORITY" "UPSTREAM_HOST";
		// X-Forwarded-For has the client's address (use_remote_address).
		line := regexp.MustCompile(`(?m)^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET /logged HTTP/1\.1" 200 - 0 \d+ \d+ \d+ "127\.0\.0\.1" "Go-http-client/1\.1" "[0-9a-f-]{36}" "cc\.example\.com" "` + regexp.QuoteMeta(up.Addr) + `"$`)
		redirect := regexp.MustCompile(`(?m)^\[[^]]+\] "GET /open HTTP/1\.1" 301 - 0 0 \d+ - "127\.0\.0\.1" "Go-http-client/1\.1" "[0-9a-f-]{36}" "cc\.example\.com" "-"$`)
		var b []byte
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if b, _ = os.ReadFile(accessLog); line.Match(b) && redirect.Match(b) {
				return
			}
		}
		t.Errorf("access log lacks the requests in Envoy's default format:\n%s", b)
	})
}

// TestContourConfigJSONAccessLog: accesslog-format json with Contour's
// default json-fields is accepted by the proxy and logs one JSON object
// per request; accesslog-level error leaves successful requests out.
func TestContourConfigJSONAccessLog(t *testing.T) {
	cfg, err := contourconfig.Parse(strings.NewReader("accesslog-format: json\naccesslog-level: error\n"))
	if err != nil {
		t.Fatal(err)
	}
	up := testutil.StartUpstream(t, testutil.EchoHandler("js"))
	dir := t.TempDir()
	writeFile(t, dir, "objs.yaml", services("svc-js")+slice("svc-js", up.Addr)+`---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: js, namespace: default}
spec:
  virtualhost: {fqdn: js.example.com}
  routes: [{services: [{name: svc-js, port: 80}]}]
`)
	st := source.NewStore()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := source.WatchManifests(ctx, dir, st, testLogger(t), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	accessLog := filepath.Join(t.TempDir(), "access.log")
	x := startCP(t, st, cpOptions{contour: cfg, accessLog: accessLog})
	startProxy(t, x)
	base := fmt.Sprintf("http://127.0.0.1:%d", x.httpPort)
	c := fromClient("127.0.0.1")
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, _, _ := do(t, c, "GET", base+"/ok", "js.example.com")
		return code == 200
	}, "proxy never routed js.example.com")
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}
	if code, _, _ := do(t, c, "GET", base+"/missing", "nohost.example.com"); code != 404 {
		t.Fatalf("unknown host = %d, want 404", code)
	}
	// Only errors are logged: the 404, and any 503 of /ok while the proxy
	// was getting its configuration (a route can arrive before its
	// cluster has warmed), never the 200s.
	var b []byte
	var lines []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ = os.ReadFile(accessLog)
		lines = nil
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l != "" && !(strings.Contains(l, `"path":"/ok"`) && strings.Contains(l, `"response_code":503`)) {
				lines = append(lines, l)
			}
		}
		if len(lines) > 0 {
			break
		}
	}
	if len(lines) != 1 {
		t.Fatalf("access log (level error) = %q, want only the 404 (and warm-up 503s)", b)
	}
	var entry map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &entry); err != nil {
		t.Fatalf("access log line %q is not JSON: %v", lines[0], err)
	}
	if entry["response_code"] != float64(404) || entry["path"] != "/missing" || entry["authority"] != "nohost.example.com" || entry["method"] != "GET" || entry["@timestamp"] == nil {
		t.Errorf("JSON access log entry %v", entry)
	}
}

// TestContourConfigurationResource: a ContourConfiguration applied to a
// real API server (the CRD of deploy/crds) is read as `legate controller
// --contour-config-name` reads it and reaches Legate's proxy:
// disablePermitInsecure redirects a permitInsecure route, the json
// access log has the configured fields, and connectionIdleTimeout closes
// idle connections. Its status says Valid=True, which kubectl shows; an
// object with a field Legate does not implement and a bad value is
// refused with both paths, and its status says Valid=False with them.
func TestContourConfigurationResource(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Kubernetes test binaries")
	}
	env, cfg := kubetest.StartAPIServer(t)
	client := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	ctx := context.Background()
	mustCreate(t, client.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "legate-system"}})
	for _, doc := range strings.Split(`
apiVersion: projectcontour.io/v1alpha1
kind: ContourConfiguration
metadata: {name: contour}
spec:
  httpproxy: {disablePermitInsecure: true}
  envoy:
    http: {port: 18080, accessLog: /dev/stderr}
    logging:
      accessLogFormat: json
      accessLogJSONFields: ["@timestamp", method, path, response_code, "custom=%REQ(X-CUSTOM)%"]
    timeouts: {connectionIdleTimeout: 500ms}
---
apiVersion: projectcontour.io/v1alpha1
kind: ContourConfiguration
metadata: {name: unsupported}
spec:
  featureFlags: [useEndpointSlices]
  envoy: {logging: {accessLogFormat: text}}
`, "---\n") {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatal(err)
		}
		if _, err := dyn.Resource(contourv1alpha1.ContourConfigurationGVR).Namespace("legate-system").Create(ctx, &u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create ContourConfiguration: %v", err)
		}
	}
	valid := func(name string) map[string]any {
		u, err := dyn.Resource(contourv1alpha1.ContourConfigurationGVR).Namespace("legate-system").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m, _ := c.(map[string]any); m["type"] == "Valid" {
				return m
			}
		}
		return nil
	}

	t.Run("unsupported", func(t *testing.T) {
		_, err := contourconfig.LoadResource(ctx, dyn, "legate-system", "unsupported", testLogger(t))
		for _, want := range []string{"ContourConfiguration legate-system/unsupported", "spec.featureFlags: not implemented by Legate", `spec.envoy.logging.accessLogFormat "text": use envoy or json`} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v, want one containing %q", err, want)
			}
		}
		c := valid("unsupported")
		errs, _ := c["errors"].([]any)
		if c["status"] != "False" || c["reason"] != "ErrorPresent" || !strings.Contains(fmt.Sprint(c["message"]), "spec.featureFlags") || len(errs) != 2 {
			t.Errorf("Valid condition %v, want False with the two errors", c)
		}
		if _, err := contourconfig.LoadResource(ctx, dyn, "legate-system", "missing", nil); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("missing object: %v", err)
		}
	})

	cc, err := contourconfig.LoadResource(ctx, dyn, "legate-system", "contour", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if c := valid("contour"); c["status"] != "True" || c["reason"] != "Valid" {
		t.Errorf("Valid condition %v, want True", c)
	}
	if f := cc.Flags(); f["http-port"] != "18080" || f["envoy-http-access-log"] != "/dev/stderr" {
		t.Errorf("flags %v", f)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kc, env.KubeConfig, 0o600)
	out, err := exec.Command(filepath.Join(kubetest.KubeAssets(t), "kubectl"), "--kubeconfig", kc, "-n", "legate-system", "get", "contourconfigurations").CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^contour\s+True\s+Valid\s`).Match(out) || !regexp.MustCompile(`(?m)^unsupported\s+False\s+ErrorPresent\s`).Match(out) {
		t.Errorf("kubectl get contourconfigurations: %v\n%s", err, out)
	}

	up := testutil.StartUpstream(t, testutil.EchoHandler("ccr"))
	leaf := testutil.NewCA(t, "ccr-ca").Issue(t, "ccr.example.com", "ccr.example.com")
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	dir := t.TempDir()
	writeFile(t, dir, "objs.yaml", services("svc-ccr")+slice("svc-ccr", up.Addr)+fmt.Sprintf(`---
apiVersion: v1
kind: Secret
metadata: {name: ccr-tls, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: ccr, namespace: default}
spec:
  virtualhost: {fqdn: ccr.example.com, tls: {secretName: ccr-tls}}
  routes:
  - conditions: [{prefix: /}]
    permitInsecure: true
    services: [{name: svc-ccr, port: 80}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: plain, namespace: default}
spec:
  virtualhost: {fqdn: plain.example.com}
  routes: [{services: [{name: svc-ccr, port: 80}]}]
`, b64(leaf.CertPEM), b64(leaf.KeyPEM)))
	st := source.NewStore()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := source.WatchManifests(wctx, dir, st, testLogger(t), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	accessLog := filepath.Join(t.TempDir(), "access.log")
	x := startCP(t, st, cpOptions{contour: cc, accessLog: accessLog})
	startProxy(t, x)
	base := fmt.Sprintf("http://127.0.0.1:%d", x.httpPort)
	c := fromClient("127.0.0.1")
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, _, _ := do(t, c, "GET", base+"/logged", "plain.example.com", "X-Custom", "v1")
		return code == 200
	}, "proxy never routed plain.example.com")
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}

	t.Run("httpproxy.disablePermitInsecure", func(t *testing.T) {
		testutil.Eventually(t, 10*time.Second, func() bool {
			code, h, _ := do(t, c, "GET", base+"/open", "ccr.example.com")
			return code == 301 && h.Get("Location") == "https://ccr.example.com/open"
		}, "GET http://ccr.example.com/open is not a 301 to HTTPS despite permitInsecure")
	})

	t.Run("envoy.logging json fields", func(t *testing.T) {
		var b []byte
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if b, _ = os.ReadFile(accessLog); strings.Contains(string(b), `"/logged"`) {
				break
			}
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var e map[string]any
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("access log line %q is not JSON: %v", line, err)
			}
			if e["path"] != "/logged" {
				continue
			}
			if e["method"] != "GET" || e["response_code"] != float64(200) || e["custom"] != "v1" || e["@timestamp"] == nil || e["authority"] != nil {
				t.Errorf("entry %v, want only @timestamp, method, path, response_code and custom", e)
			}
			return
		}
		t.Errorf("access log lacks GET /logged:\n%s", b)
	})

	t.Run("envoy.timeouts.connectionIdleTimeout", func(t *testing.T) {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", x.httpPort))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: plain.example.com\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		start := time.Now()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = br.ReadByte()
		if elapsed := time.Since(start); !errors.Is(err, io.EOF) || elapsed > 3*time.Second {
			t.Errorf("idle keep-alive connection: %v after %s, want closed by the proxy after about 500ms", err, elapsed)
		}
	})
}
