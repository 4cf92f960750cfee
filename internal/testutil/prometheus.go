package testutil

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Prometheus is a running Prometheus server (github.com/prometheus/
// prometheus/cmd/prometheus, built by scripts/deps.d/prometheus.sh) with
// its TSDB in a temporary directory and its HTTP API on a loopback port.
type Prometheus struct {
	// Addr is the host:port of the web UI and HTTP API (/api/v1/...).
	Addr string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *LogBuffer
}

// PrometheusBinary finds Prometheus (built by
// scripts/deps.d/prometheus.sh; see CachedBinary).
func PrometheusBinary(t testing.TB) string {
	t.Helper()
	return CachedBinary(t, "prometheus", "Prometheus", "scripts/deps.d/prometheus.sh")
}

// StartPrometheus writes config (a prometheus.yml; relative rule_files
// paths resolve against the directory it is written to, so pass absolute
// ones) and runs Prometheus on it, on a free loopback port, and waits
// until it is ready. It stops when the test ends; its log is reported if
// the test failed.
func StartPrometheus(t testing.TB, config string) *Prometheus {
	t.Helper()
	bin := PrometheusBinary(t)
	dir := t.TempDir()
	p := &Prometheus{Addr: fmt.Sprintf("127.0.0.1:%d", FreePort(t)), log: &LogBuffer{}}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin,
		"--config.file="+cfgFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+p.Addr,
		"--log.level=warn",
	)
	p.cmd.Dir = dir
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(p.cmd, p.done)
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", p.log.String())
		}
	})
	c := &http.Client{Timeout: time.Second}
	if err := pollReady(p.done, 60*time.Second, func() error {
		_, err := httpGet(c, "http://"+p.Addr+"/-/ready")
		return err
	}); err != nil {
		t.Fatalf("prometheus did not come up: %v\n%s", err, p.log.String())
	}
	return p
}

// Stop ends Prometheus and waits for it; calling it again does nothing.
func (p *Prometheus) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// PromSample is one series of an instant query's vector result (or the
// single value of a scalar result, with no labels).
type PromSample struct {
	Metric map[string]string
	Value  string
}

// Query evaluates an instant PromQL query at the current time
// (GET /api/v1/query) and returns its samples. An error is a failed
// request, a query Prometheus refused (bad syntax, evaluation error) or an
// unexpected result type.
func (p *Prometheus) Query(expr string) ([]PromSample, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	body, err := httpGet(c, "http://"+p.Addr+"/api/v1/query?query="+url.QueryEscape(expr))
	var r struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if jerr := json.Unmarshal(body, &r); jerr != nil {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("query %q: decode answer: %w", expr, jerr)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s: %s", expr, r.ErrorType, r.Error)
	}
	switch r.Data.ResultType {
	case "vector":
		var v []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(r.Data.Result, &v); err != nil {
			return nil, fmt.Errorf("query %q: decode vector: %w", expr, err)
		}
		out := make([]PromSample, len(v))
		for i, s := range v {
			out[i] = PromSample{Metric: s.Metric, Value: fmt.Sprint(s.Value[1])}
		}
		return out, nil
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(r.Data.Result, &v); err != nil {
			return nil, fmt.Errorf("query %q: decode scalar: %w", expr, err)
		}
		return []PromSample{{Value: fmt.Sprint(v[1])}}, nil
	}
	return nil, fmt.Errorf("query %q: result type %q, want vector or scalar", expr, r.Data.ResultType)
}

// PromRule is one rule as GET /api/v1/rules reports it.
type PromRule struct {
	Name      string `json:"name"`
	Query     string `json:"query"`
	Type      string `json:"type"` // alerting or recording
	Health    string `json:"health"`
	LastError string `json:"lastError"`
	State     string `json:"state"`
}

// PromRuleGroup is one rule group of GET /api/v1/rules.
type PromRuleGroup struct {
	Name           string     `json:"name"`
	File           string     `json:"file"`
	Rules          []PromRule `json:"rules"`
	LastEvaluation string     `json:"lastEvaluation"`
}

// Rules returns the loaded rule groups (GET /api/v1/rules).
func (p *Prometheus) Rules() ([]PromRuleGroup, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	body, err := httpGet(c, "http://"+p.Addr+"/api/v1/rules")
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Groups []PromRuleGroup `json:"groups"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("rules: decode answer: %w", err)
	}
	return r.Data.Groups, nil
}

// PromTarget is one active scrape target of GET /api/v1/targets.
type PromTarget struct {
	ScrapePool string `json:"scrapePool"`
	ScrapeURL  string `json:"scrapeUrl"`
	Health     string `json:"health"` // up, down or unknown
	LastError  string `json:"lastError"`
}

// Targets returns the active scrape targets (GET /api/v1/targets).
func (p *Prometheus) Targets() ([]PromTarget, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	body, err := httpGet(c, "http://"+p.Addr+"/api/v1/targets?state=active")
	if err != nil {
		return nil, err
	}
	var r struct {
		Data struct {
			ActiveTargets []PromTarget `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("targets: decode answer: %w", err)
	}
	return r.Data.ActiveTargets, nil
}
