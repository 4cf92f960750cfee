package testutil

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Jaeger is a running Jaeger all-in-one (Jaeger v2, github.com/
// jaegertracing/jaeger/cmd/jaeger) with in-memory storage: it receives
// OTLP over gRPC and over HTTP and serves its query API, each on a
// loopback port of its own, and nothing else.
type Jaeger struct {
	// OTLPGRPCAddr and OTLPHTTPAddr receive OTLP (host:port, for a
	// cluster); OTLP/HTTP takes POST /v1/traces.
	OTLPGRPCAddr, OTLPHTTPAddr string
	// ZipkinAddr receives Zipkin v2 spans (POST /api/v2/spans, JSON or
	// protobuf).
	ZipkinAddr string
	// QueryAddr serves the query API (/api/services, /api/traces).
	QueryAddr string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *LogBuffer
}

// jaegerConfig is the collector configuration: the OTLP receiver, a
// batch processor with a short timeout (spans are queryable soon after
// they arrive), memory storage and the query extension. Jaeger's own
// telemetry is off: no metrics port, and no traces of itself sent to the
// default OTLP endpoint.
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp, zipkin]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics: {level: none}
    traces: {level: none}
    logs: {level: warn}
extensions:
  jaeger_storage:
    backends:
      mem:
        memory: {max_traces: 10000}
  jaeger_query:
    storage: {traces: mem}
    http: {endpoint: "%s"}
    grpc: {endpoint: "%s"}
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "%s"}
      http: {endpoint: "%s"}
  zipkin: {endpoint: "%s"}
processors:
  batch: {timeout: 50ms}
exporters:
  jaeger_storage_exporter: {trace_storage: mem}
`

// jaegerBinary finds Jaeger (built by scripts/deps.d/jaeger.sh).
func jaegerBinary(t testing.TB) string {
	t.Helper()
	return CachedBinary(t, "jaeger", "Jaeger", "scripts/deps.d/jaeger.sh")
}

// CachedBinary finds a test dependency the project's scripts build into
// $LEGATE_CACHE/bin (default ~/.cache/legate/bin), or on PATH. A missing
// one skips the test while LEGATE_REQUIRE_NETNS is unset, and fails it
// otherwise (make test, CI), so that CI never passes by skipping; what
// names it in the message, script the script that builds it.
func CachedBinary(t testing.TB, name, what, script string) string {
	t.Helper()
	cache := os.Getenv("LEGATE_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "legate")
	}
	bin := filepath.Join(cache, "bin", name)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	msg := what + " (" + bin + ") is not installed: run scripts/deps.sh (" + script + ")"
	if _, set := os.LookupEnv("LEGATE_REQUIRE_NETNS"); set {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// StartJaeger starts Jaeger on free loopback ports and waits until its
// query API answers and both OTLP ports accept connections. It stops when
// the test ends; its log is reported if the test failed.
func StartJaeger(t testing.TB) *Jaeger {
	t.Helper()
	bin := jaegerBinary(t)
	dir := t.TempDir()
	addr := func() string { return fmt.Sprintf("127.0.0.1:%d", FreePort(t)) }
	j := &Jaeger{OTLPGRPCAddr: addr(), OTLPHTTPAddr: addr(), ZipkinAddr: addr(), QueryAddr: addr(), log: &LogBuffer{}}
	queryGRPC := addr()
	cfgFile := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(cfgFile, fmt.Appendf(nil, jaegerConfig, j.QueryAddr, queryGRPC, j.OTLPGRPCAddr, j.OTLPHTTPAddr, j.ZipkinAddr), 0o644); err != nil {
		t.Fatal(err)
	}
	j.cmd = exec.Command(bin, "--config", "file:"+cfgFile)
	j.cmd.Dir = dir
	j.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	j.cmd.Stdout, j.cmd.Stderr = j.log, j.log
	if err := j.cmd.Start(); err != nil {
		t.Fatalf("start jaeger: %v", err)
	}
	j.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(j.cmd, j.done)
	t.Cleanup(func() {
		j.Stop()
		if t.Failed() {
			t.Logf("jaeger log:\n%s", j.log.String())
		}
	})
	if err := j.waitReady(60 * time.Second); err != nil {
		t.Fatalf("jaeger did not come up: %v\n%s", err, j.log.String())
	}
	return j
}

// Stop ends Jaeger and waits for it; calling it again does nothing.
func (j *Jaeger) Stop() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cmd == nil {
		return
	}
	j.cmd.Process.Kill()
	<-j.done
	j.cmd = nil
}

func (j *Jaeger) waitReady(timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	return pollReady(j.done, timeout, func() error {
		if _, err := httpGet(c, "http://"+j.QueryAddr+"/api/services"); err != nil {
			return err
		}
		for _, a := range []string{j.OTLPGRPCAddr, j.OTLPHTTPAddr, j.ZipkinAddr} {
			if err := tcpAccepts(a); err != nil {
				return err
			}
		}
		return nil
	})
}

// JaegerTrace is a trace as the query API returns it.
type JaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []JaegerSpan             `json:"spans"`
	Processes map[string]JaegerProcess `json:"processes"`
}

// JaegerSpan is one span of a JaegerTrace; Jaeger shows OpenTelemetry
// attributes as tags, the span kind as the span.kind tag and an error
// status as otel.status_code ERROR.
type JaegerSpan struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []JaegerRef `json:"references"`
	StartTime     int64       `json:"startTime"`
	Duration      int64       `json:"duration"`
	Tags          []JaegerTag `json:"tags"`
	ProcessID     string      `json:"processID"`
}

// JaegerRef is a span reference (refType CHILD_OF: the parent).
type JaegerRef struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// JaegerTag is a tag (or process tag).
type JaegerTag struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// JaegerProcess is the process (resource) that reported spans.
type JaegerProcess struct {
	ServiceName string      `json:"serviceName"`
	Tags        []JaegerTag `json:"tags"`
}

// Tag returns a tag's value as text ("" if absent).
func (s JaegerSpan) Tag(key string) string { return tagValue(s.Tags, key) }

// Tag returns a process tag's value as text ("" if absent).
func (p JaegerProcess) Tag(key string) string { return tagValue(p.Tags, key) }

func tagValue(tags []JaegerTag, key string) string {
	for _, t := range tags {
		if t.Key == key {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

// Parent returns the span id of the CHILD_OF reference ("" for a root).
func (s JaegerSpan) Parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Service is the service name of the process that reported the span.
func (tr JaegerTrace) Service(s JaegerSpan) string { return tr.Processes[s.ProcessID].ServiceName }

// Traces asks the query API for the traces of a service (the last hour).
func (j *Jaeger) Traces(service string) ([]JaegerTrace, error) {
	return j.query("/api/traces?" + url.Values{"service": {service}, "lookback": {"1h"}, "limit": {"100"}}.Encode())
}

// Trace asks the query API for one trace by id.
func (j *Jaeger) Trace(id string) (JaegerTrace, error) {
	trs, err := j.query("/api/traces/" + url.PathEscape(id))
	if err != nil {
		return JaegerTrace{}, err
	}
	if len(trs) != 1 {
		return JaegerTrace{}, fmt.Errorf("trace %s: %d traces", id, len(trs))
	}
	return trs[0], nil
}

func (j *Jaeger) query(pathQuery string) ([]JaegerTrace, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + j.QueryAddr + pathQuery)
	if err != nil {
		return nil, fmt.Errorf("jaeger query: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("jaeger query: %w", err)
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("jaeger query %s: status %d: %s", pathQuery, resp.StatusCode, b)
	}
	var out struct {
		Data []JaegerTrace `json:"data"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("jaeger query %s: %w", pathQuery, err)
	}
	return out.Data, nil
}

// WaitTrace polls the query API until the trace has at least n spans and
// returns it; it fails the test after timeout.
func (j *Jaeger) WaitTrace(t testing.TB, id string, n int, timeout time.Duration) JaegerTrace {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var tr JaegerTrace
	var err error
	for time.Now().Before(deadline) {
		tr, err = j.Trace(id)
		if err == nil && len(tr.Spans) >= n {
			return tr
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("trace %s did not reach %d spans in %v: %d spans, %v", id, n, timeout, len(tr.Spans), err)
	return tr
}
