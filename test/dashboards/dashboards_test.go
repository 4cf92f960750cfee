// Package dashboards_test checks the Grafana dashboards (deploy/grafana)
// and the Prometheus alert rules (deploy/prometheus) against a running
// Legate: a real controller reading a manifests folder serves xDS (mTLS)
// to a real proxy that health-checks two upstreams (one failing its
// checks) and carries traffic with 2xx, 4xx and 5xx answers; a real
// Prometheus (scripts/deps.d/prometheus.sh) scrapes the proxy's
// /stats/prometheus and the controller's /metrics and loads the alert
// rules. Every panel query and every dashboard variable must return data,
// and every alert rule must load, evaluate with health "ok", and have data
// once its threshold is taken away (see alertProbe).
package dashboards_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"gopkg.in/yaml.v3"

	"github.com/legateproxy/legate/internal/certgen"
	"github.com/legateproxy/legate/internal/controller"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/controller/xdsgen"
	"github.com/legateproxy/legate/internal/testutil"
	xdsserver "github.com/legateproxy/legate/internal/xds/server"
)

// Labels the scrape config gives both targets, as a Kubernetes pod
// scrape (prometheus-operator PodMonitor, kubernetes_sd relabeling) does;
// the dashboards' $namespace and $pod variables select on them.
const (
	testNamespace = "legate-test"
	proxyPod      = "legate-proxy-0"
	controllerPod = "legate-controller-0"
)

// TestDashboardsAndAlerts runs the whole chain (upstreams, controller,
// proxy, traffic, Prometheus) and checks every dashboard query and alert
// rule against it.
func TestDashboardsAndAlerts(t *testing.T) {
	testutil.PrometheusBinary(t) // skip (or fail in CI) before starting anything
	root := testutil.RepoRoot(t)
	dashboards := loadDashboards(t, filepath.Join(root, "deploy", "grafana"))
	rulesFile := filepath.Join(root, "deploy", "prometheus", "alerts.yaml")

	// Upstreams: one good host, and one on the same port of another
	// loopback address whose health check fails (so that healthy <
	// total hosts). The good one answers /fail with 503 and /missing with
	// 404, so that every response class has data.
	port := sharedPort(t, "127.0.0.1", "127.0.0.2")
	serve(t, "127.0.0.1", port, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/missing":
			w.WriteHeader(http.StatusNotFound)
		default:
			w.Write([]byte("ok"))
		}
	}))
	serve(t, "127.0.0.2", port, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))

	dir := t.TempDir()
	writeFile(t, dir, "web.yaml", fmt.Sprintf(`
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: %[1]d}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: %[1]d, protocol: TCP}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {ready: true}
- addresses: ["127.0.0.2"]
  conditions: {ready: true}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: web, namespace: default}
spec:
  virtualhost: {fqdn: web.example.com}
  routes:
  - services: [{name: web, port: 80}]
    healthCheckPolicy: {path: /healthz, intervalSeconds: 1, timeoutSeconds: 1, unhealthyThresholdCount: 1, healthyThresholdCount: 1}
---
# Invalid on purpose (its Service does not exist): the invalid-HTTPProxy
# panel and alert need a series.
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: broken, namespace: default}
spec:
  virtualhost: {fqdn: broken.example.com}
  routes:
  - services: [{name: no-such-service, port: 80}]
`, port))

	cp := startController(t, dir)
	proxy := startProxy(t, cp)
	base := fmt.Sprintf("http://127.0.0.1:%d", cp.httpPort)
	testutil.Eventually(t, 15*time.Second, func() bool { return status(base+"/", "web.example.com") == 200 },
		"the proxy never routed web.example.com to the healthy upstream")

	// A client the controller refuses (plaintext to the mTLS port) and one
	// that NACKs: the xDS alert rules need their series.
	if c, err := net.DialTimeout("tcp", cp.xdsAddr, time.Second); err == nil {
		c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		c.Read(make([]byte, 64))
		c.Close()
	}
	nackOnce(t, cp)

	// Traffic for the whole scrape window: 200s, 404s, 503s, bounded.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		paths := []string{"/", "/", "/", "/missing", "/fail"}
		for i := 0; i < 20000 && ctx.Err() == nil; i++ {
			status(base+paths[i%len(paths)], "web.example.com")
			time.Sleep(5 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { stop(); wg.Wait() })

	prom := testutil.StartPrometheus(t, fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
- job_name: legate-proxy
  metrics_path: /stats/prometheus
  static_configs:
  - targets: [%q]
    labels: {namespace: %q, pod: %q}
- job_name: legate-controller
  static_configs:
  - targets: [%q]
    labels: {namespace: %q, pod: %q}
`, rulesFile, proxy.Admin, testNamespace, proxyPod, cp.httpAddr, testNamespace, controllerPod))

	// Data is in once both targets are up and rates over a few scrapes
	// exist (rate needs two samples; histogram_quantile needs increases).
	deadline := time.Now().Add(45 * time.Second) // a bound for a loaded CI machine
	waitFor := func(qs ...string) {
		t.Helper()
		for _, q := range qs {
			for {
				r, err := prom.Query(q)
				if err == nil && len(r) > 0 {
					break
				}
				if time.Now().After(deadline) {
					// What the proxy itself says of its hosts, to tell a
					// proxy-side cause from a Prometheus-side one.
					_, _, membership := testutil.Get(t, testutil.Client(), "http://"+proxy.Admin+"/stats?filter=membership|health_check")
					_, _, clusters := testutil.Get(t, testutil.Client(), "http://"+proxy.Admin+"/clusters")
					// And what Prometheus holds of the membership
					// series, to tell a missing series from a value.
					var held strings.Builder
					for _, mq := range []string{"envoy_cluster_membership_healthy", "envoy_cluster_membership_total", "scrape_duration_seconds"} {
						r, err := prom.Query(mq)
						fmt.Fprintf(&held, "%s: %v (error %v)\n", mq, r, err)
					}
					t.Fatalf("Prometheus has no data for %s (error %v); targets: %s\nPrometheus has:\n%s\nproxy stats:\n%s\nproxy clusters:\n%s", q, err, targets(prom), held.String(), membership, clusters)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	waitFor(`up{job="legate-proxy"} == 1`, `up{job="legate-controller"} == 1`)

	// A configuration change once Prometheus has scraped the controller:
	// a rebuild, its build time and xDS pushes fall inside the rate windows.
	writeFile(t, dir, "second.yaml", `
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: second, namespace: default}
spec:
  virtualhost: {fqdn: second.example.com}
  routes:
  - services: [{name: web, port: 80}]
`)

	waitFor(
		`sum(rate(envoy_cluster_upstream_rq_time_bucket[1m])) > 0`,
		`sum(rate(envoy_http_downstream_rq_xx{envoy_response_code_class="5"}[1m])) > 0`,
		`envoy_cluster_membership_healthy < envoy_cluster_membership_total`,
		`sum(rate(legate_controller_build_seconds_count[1m])) > 0`,
		`sum(rate(envoy_http_rds_update_success[1m])) > 0`,
	)

	vars := map[string]string{
		"__rate_interval": "1m", "__interval": "5s", "__range": "1m",
		"namespace": ".*", "pod": ".*", "cluster": ".*", "listener": ".*", "http_prefix": ".*", "instance": ".*", "job": ".*",
	}
	for _, d := range dashboards {
		for _, v := range d.variables() {
			t.Run(d.file+"/var/"+v.Name, func(t *testing.T) {
				q := labelValuesQuery(t, expand(t, v.query(), vars))
				r, err := prom.Query(q)
				if err != nil || len(r) == 0 {
					t.Errorf("variable %s: %s returned %d series, error %v", v.Name, q, len(r), err)
				}
			})
		}
		for _, p := range d.panels() {
			for _, tg := range p.Targets {
				t.Run(d.file+"/"+p.Title+"/"+tg.RefID, func(t *testing.T) {
					q := expand(t, tg.Expr, vars)
					r, err := prom.Query(q)
					if err != nil {
						t.Fatalf("panel %q: %v", p.Title, err)
					}
					if !finite(r) {
						t.Errorf("panel %q: %s returned no data (or only NaN): %v", p.Title, q, r)
					}
				})
			}
		}
	}

	// Alert rules: every rule of the file is loaded and, after at least
	// one evaluation, healthy.
	want := loadRuleNames(t, rulesFile)
	var groups []testutil.PromRuleGroup
	testutil.Eventually(t, 10*time.Second, func() bool {
		var err error
		groups, err = prom.Rules()
		if err != nil {
			return false
		}
		for _, g := range groups {
			if g.LastEvaluation == "" || strings.HasPrefix(g.LastEvaluation, "0001-") {
				return false
			}
		}
		return len(groups) > 0
	}, "Prometheus never evaluated the rule groups")
	loaded := map[string]testutil.PromRule{}
	for _, g := range groups {
		for _, r := range g.Rules {
			loaded[r.Name] = r
		}
	}
	// The rules see what the test set up: 20% of the answers are 5xx and
	// one HTTPProxy is invalid (pending: both have a for:), while the web
	// cluster keeps a healthy host.
	active := map[string]string{"LegateProxyHigh5xxRate": "pending", "LegateControllerInvalidHTTPProxies": "pending", "LegateUpstreamNoHealthyHosts": "inactive"}
	testutil.Eventually(t, 10*time.Second, func() bool {
		gs, err := prom.Rules()
		if err != nil {
			return false
		}
		seen := 0
		for _, g := range gs {
			for _, r := range g.Rules {
				if st, ok := active[r.Name]; ok {
					seen++
					if r.State != st {
						return false
					}
				}
			}
		}
		// A renamed or removed rule must fail too, not pass unchecked.
		return seen == len(active)
	}, "alert states never became %v", active)
	for _, name := range want {
		t.Run("alert/"+name, func(t *testing.T) {
			r, ok := loaded[name]
			if !ok {
				t.Fatalf("rule %s is not loaded", name)
			}
			if r.Health != "ok" {
				t.Fatalf("rule %s health %q: %s", name, r.Health, r.LastError)
			}
			probe := alertProbe(r.Query)
			res, err := prom.Query(probe)
			if err != nil {
				t.Fatalf("rule %s: %v", name, err)
			}
			if len(res) == 0 {
				t.Errorf("rule %s: %s (its expression without the threshold) returned no data", name, probe)
			}
		})
	}
}

// finite reports whether a result has a sample with a number (a rate
// over no traffic, or a quantile of no observations, is NaN: no data on
// a graph).
func finite(r []testutil.PromSample) bool {
	for _, s := range r {
		if s.Value != "NaN" && s.Value != "+Inf" && s.Value != "-Inf" {
			return true
		}
	}
	return false
}

// TestPrometheusRuleMatchesRulesFile checks that the PrometheusRule
// carries exactly the groups of the canonical rules file.
func TestPrometheusRuleMatchesRulesFile(t *testing.T) {
	dir := filepath.Join(testutil.RepoRoot(t), "deploy", "prometheus")
	read := func(name string) map[string]any {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return m
	}
	plain, cr := read("alerts.yaml"), read("prometheusrule.yaml")
	if cr["apiVersion"] != "monitoring.coreos.com/v1" || cr["kind"] != "PrometheusRule" {
		t.Errorf("prometheusrule.yaml is %v %v, want monitoring.coreos.com/v1 PrometheusRule", cr["apiVersion"], cr["kind"])
	}
	spec, _ := cr["spec"].(map[string]any)
	a, _ := json.Marshal(plain["groups"])
	b, _ := json.Marshal(spec["groups"])
	if string(a) != string(b) || len(a) < 10 {
		t.Errorf("prometheusrule.yaml spec.groups differ from alerts.yaml groups: regenerate it from alerts.yaml:\n%s\n%s", a, b)
	}
}

// alertProbe is an alert expression without its threshold. Every rule in
// deploy/prometheus ends in one comparison with a number ("... > 0.05",
// "... == 0", "... < 1"); what is left is the signal the alert watches,
// which must have data while healthy (the full expression is empty then,
// as a quiet alert is).
var threshold = regexp.MustCompile(`\s*(==|!=|>=|<=|>|<)\s*(bool\s+)?[0-9.eE+-]+\s*$`)

func alertProbe(expr string) string {
	return threshold.ReplaceAllString(strings.TrimSpace(expr), "")
}

// Grafana's dashboard JSON model: only what the test reads.
type dashboard struct {
	file       string
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Schema     int     `json:"schemaVersion"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Title   string   `json:"title"`
	Type    string   `json:"type"`
	Panels  []panel  `json:"panels"` // a collapsed row's panels
	Targets []target `json:"targets"`
	Source  struct {
		UID string `json:"uid"`
	} `json:"datasource"`
}

type target struct {
	RefID string `json:"refId"`
	Expr  string `json:"expr"`
}

type variable struct {
	Name  string          `json:"name"`
	Type  string          `json:"type"`
	Query json.RawMessage `json:"query"`
}

// query is a query variable's PromQL (Grafana stores it as a string or
// as {"query": "...", "refId": ...}).
func (v variable) query() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	json.Unmarshal(v.Query, &o)
	return o.Query
}

func (d dashboard) panels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			out = append(out, p)
		}
	}
	walk(d.Panels)
	return out
}

func (d dashboard) variables() []variable {
	var out []variable
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			out = append(out, v)
		}
	}
	return out
}

// loadDashboards reads every dashboard and checks what Grafana needs to
// import it portably: a uid, a recent schema, the ${datasource} variable
// on every panel, and a PromQL expression on every target.
func loadDashboards(t *testing.T, dir string) []dashboard {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) == 0 {
		t.Fatalf("no dashboards in %s", dir)
	}
	var out []dashboard
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d := dashboard{file: filepath.Base(f)}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || d.Title == "" || d.Schema < 39 {
			t.Errorf("%s: uid %q title %q schemaVersion %d: want a uid, a title and schemaVersion >= 39", d.file, d.UID, d.Title, d.Schema)
		}
		hasDS := false
		for _, v := range d.Templating.List {
			hasDS = hasDS || (v.Name == "datasource" && v.Type == "datasource")
		}
		if !hasDS {
			t.Errorf("%s: no datasource variable", d.file)
		}
		for _, p := range d.panels() {
			if p.Source.UID != "${datasource}" {
				t.Errorf("%s: panel %q datasource uid %q, want ${datasource}", d.file, p.Title, p.Source.UID)
			}
			if len(p.Targets) == 0 && p.Type != "text" {
				t.Errorf("%s: panel %q has no query", d.file, p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q target %s has no expr", d.file, p.Title, tg.RefID)
				}
			}
		}
		out = append(out, d)
	}
	return out
}

// expand replaces Grafana variables ($name, ${name}, ${name:opt}) with
// test values; an unknown variable fails the test.
var grafanaVar = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)`)

func expand(t *testing.T, expr string, vars map[string]string) string {
	t.Helper()
	return grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		s := grafanaVar.FindStringSubmatch(m)
		name := s[1] + s[2]
		v, ok := vars[name]
		if !ok {
			t.Errorf("unknown Grafana variable %s in %s", m, expr)
		}
		return v
	})
}

// labelValuesQuery turns a variable's label_values(selector, label) into
// a query whose data has that label; plain PromQL stays as it is.
var labelValues = regexp.MustCompile(`^label_values\((?:(.*),\s*)?(\w+)\)$`)

func labelValuesQuery(t *testing.T, q string) string {
	t.Helper()
	m := labelValues.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		return q
	}
	if m[1] == "" {
		t.Fatalf("label_values(%s) without a metric selector queries every series: give one", m[2])
	}
	return fmt.Sprintf(`count by (%s) (%s)`, m[2], m[1])
}

// loadRuleNames reads the alert names of a Prometheus rules file.
func loadRuleNames(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var names []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if alertProbe(r.Expr) == strings.TrimSpace(r.Expr) {
				t.Errorf("alert %s: expression %q does not end in a threshold", r.Alert, r.Expr)
			}
			names = append(names, r.Alert)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		t.Fatalf("%s: no alert rules", file)
	}
	return names
}

func targets(p *testutil.Prometheus) string {
	ts, err := p.Targets()
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, x := range ts {
		fmt.Fprintf(&b, "%s %s %s %s; ", x.ScrapePool, x.ScrapeURL, x.Health, x.LastError)
	}
	return b.String()
}

// sharedPort returns a port free on every given loopback address.
func sharedPort(t *testing.T, addrs ...string) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		p := testutil.FreePort(t)
		ok := true
		for _, a := range addrs {
			l, err := net.Listen("tcp", net.JoinHostPort(a, fmt.Sprint(p)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return p
		}
	}
	t.Fatalf("no port free on all of %v", addrs)
	return 0
}

func serve(t *testing.T, host string, port int, h http.Handler) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(port)))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

var client = testutil.Client()

func status(url, host string) int {
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// cp is a controller run in the test process as `legate controller
// --manifests DIR` runs it: xDS over mTLS, /metrics with the Go and
// process collectors.
type cp struct {
	xdsAddr, httpAddr string
	httpPort          int
	certDir           string
	xds               *xdsserver.Server
}

func startController(t *testing.T, manifests string) *cp {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st := source.NewStore()
	if err := source.WatchManifests(ctx, manifests, st, log, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	x := &cp{httpPort: testutil.FreePort(t), certDir: t.TempDir()}
	xs := xdsserver.New(log, xdsserver.NewMetrics(reg))
	x.xds = xs
	c := controller.New(st, xs, controller.Options{Log: log, Registry: reg,
		XDS: xdsgen.Options{HTTPAddress: "127.0.0.1", HTTPPort: uint32(x.httpPort), HTTPSPort: uint32(testutil.FreePort(t))}})
	set, err := certgen.Generate(certgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Write(x.certDir); err != nil {
		t.Fatal(err)
	}
	xl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	x.xdsAddr, x.httpAddr = xl.Addr().String(), hl.Addr().String()
	go xs.ServeTLS(ctx, xl, xdsserver.TLSFiles{CA: x.file(certgen.CAFile), Cert: x.file(certgen.ControllerCertFile), Key: x.file(certgen.ControllerKeyFile)})
	go c.ServeHTTP(ctx, hl, reg)
	go c.Run(ctx)
	testutil.Eventually(t, 10*time.Second, c.Ready, "controller never built its first configuration")
	return x
}

func (x *cp) file(name string) string { return filepath.Join(x.certDir, name) }

// startProxy runs the proxy on the bootstrap `legate bootstrap` prints.
func startProxy(t *testing.T, x *cp) *testutil.Proxy {
	t.Helper()
	h, p, _ := net.SplitHostPort(x.xdsAddr)
	var port int
	fmt.Sscan(p, &port)
	y := controller.Bootstrap(controller.BootstrapOptions{XDSHost: h, XDSPort: port, AdminHost: "127.0.0.1", NodeID: proxyPod, Cluster: "legate",
		TLS: &controller.BootstrapTLS{CAFile: x.file(certgen.CAFile), CertFile: x.file(certgen.ProxyCertFile), KeyFile: x.file(certgen.ProxyKeyFile), ServerName: certgen.ServerName}})
	return testutil.StartProxy(t, y, nil)
}

// nackOnce opens an ADS stream with the proxies' certificate, takes the
// clusters and rejects them, as a proxy that cannot apply a config does.
func nackOnce(t *testing.T, x *cp) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(x.file(certgen.ProxyCertFile), x.file(certgen.ProxyKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(x.file(certgen.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conn, err := grpc.NewClient(x.xdsAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: certgen.ServerName})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "nack-probe", Cluster: "legate"}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("ADS: %v", err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: 3, Message: "rejected by the dashboards test"}}); err != nil {
		t.Fatal(err)
	}
	// The server counts the NACK when it reads the request.
	testutil.Eventually(t, 10*time.Second, func() bool { return len(x.xds.NACKs()) > 0 }, "the controller never saw the NACK")
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
