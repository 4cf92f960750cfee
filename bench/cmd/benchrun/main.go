// Command benchrun compares Legate with nginx and HAProxy on this machine,
// in one run: the same upstream (an nginx returning a fixed 100-byte
// body), equivalent proxy configs (one worker, keep-alive to the
// upstream), measured alternately over several rounds. It reports
// requests/s, latency, proxy CPU-microseconds per request (from
// /proc/PID/stat), RSS after load and memory per idle connection, with
// ratios, as a table and as JSON + markdown under bench/results/.
//
// Run it with `make bench` (bench/run.sh installs what is missing).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// Ports on 127.0.0.1 used by the run.
const (
	portUpstream = 18080
	portH1       = 18081 // + proxy index
	portH2       = 18091 // + proxy index
)

var body100 = strings.Repeat("x", 99) + "\n"

type proxy struct {
	Name  string
	Index int
	start func(dir string, accessLog bool) (*exec.Cmd, error)
	h2    bool
}

type scenario struct {
	Name    string
	Tool    string // wrk or h2load
	Conns   int
	Close   bool
	Log     bool
	Streams int
}

// Result is one proxy in one scenario (medians over rounds).
type Result struct {
	Proxy       string  `json:"proxy"`
	Scenario    string  `json:"scenario"`
	RPS         float64 `json:"requests_per_second"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	CPUusPerReq float64 `json:"proxy_cpu_us_per_request"`
	RSSKiB      int64   `json:"rss_kib_after_load"`
	Errors      int64   `json:"errors"`
	Skipped     string  `json:"skipped,omitempty"`
	rounds      []sample
}

type sample struct {
	rps, p50, p99, cpu float64
	rss, errs          int64
}

// Report is the whole run.
type Report struct {
	Date        string             `json:"date"`
	Machine     map[string]string  `json:"machine"`
	Method      string             `json:"method"`
	Results     []*Result          `json:"results"`
	IdleKiBConn map[string]float64 `json:"idle_memory_kib_per_connection"`
	Ratios      []Ratio            `json:"ratios"`
}

// Ratio compares Legate with a peer in one scenario.
type Ratio struct {
	Scenario  string  `json:"scenario"`
	Peer      string  `json:"peer"`
	RPS       float64 `json:"legate_rps_over_peer"`
	CPUPerReq float64 `json:"legate_cpu_per_request_over_peer"`
}

var (
	duration = flag.Duration("duration", 5*time.Second, "duration of each measurement")
	rounds   = flag.Int("rounds", 3, "rounds (medians are reported)")
	outDir   = flag.String("out", "bench/results", "where latest.json and latest.md go")
	legate   = flag.String("legate", "bin/legate", "legate binary")
	idleN    = flag.Int("idle-conns", 5000, "idle connections for the memory measurement")
	pin      = flag.Bool("pin", true, "pin the load generator to CPU 0 and servers to CPU 1 (taskset)")
)

var started []*exec.Cmd

func stopAll() {
	for _, c := range started {
		if c.Process != nil {
			c.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, c := range started {
		if c.Process == nil {
			continue
		}
		done := make(chan struct{})
		go func(c *exec.Cmd) { c.Wait(); close(done) }(c)
		select {
		case <-done:
		case <-time.After(time.Until(deadline)):
			c.Process.Kill()
		}
	}
	started = nil
}

func onCPU(cpu string, name string, args ...string) *exec.Cmd {
	if *pin {
		if _, err := exec.LookPath("taskset"); err == nil && runtime.NumCPU() >= 2 {
			return exec.Command("taskset", append([]string{"-c", cpu, name}, args...)...)
		}
	}
	return exec.Command(name, args...)
}

func startCmd(c *exec.Cmd, logf string) error {
	f, err := os.Create(logf)
	if err != nil {
		return err
	}
	c.Stdout, c.Stderr = f, f
	if err := c.Start(); err != nil {
		return err
	}
	started = append(started, c)
	return nil
}

func waitPort(port int) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on 127.0.0.1:%d after 10 s", port)
}

func render(path, tmpl string, data any) error {
	var b bytes.Buffer
	if err := template.Must(template.New("").Parse(tmpl)).Execute(&b, data); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

const nginxUpstreamConf = `worker_processes 1;
daemon off;
pid {{.Dir}}/upstream.pid;
error_log {{.Dir}}/upstream-error.log warn;
events { worker_connections 15000; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:{{.Port}} reuseport backlog=4096;
    location / { default_type text/plain; return 200 "{{.Body}}"; }
  }
}
`

const nginxProxyConf = `worker_processes 1;
worker_rlimit_nofile 16000;
daemon off;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/nginx-error.log warn;
events { worker_connections 15000; }
http {
  {{if .Log}}access_log {{.Dir}}/nginx-access.log;{{else}}access_log off;{{end}}
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  upstream backend { server 127.0.0.1:{{.Upstream}}; keepalive 256; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:{{.H1}} backlog=4096;
    listen 127.0.0.1:{{.H2}} http2 backlog=4096;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
`

const haproxyConf = `global
  nbthread 1
  maxconn 8000
  {{if .Log}}log stdout format raw local0{{end}}
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  option http-keep-alive
  http-reuse always
  {{if .Log}}log global
  option httplog{{end}}
frontend fe
  bind 127.0.0.1:{{.H1}}
  bind 127.0.0.1:{{.H2}} proto h2
  default_backend be
backend be
  server s1 127.0.0.1:{{.Upstream}}
`

const legateConf = `static_resources:
  listeners:
  {{range .Ports}}
  - name: l{{.}}
    address: {socket_address: {address: 127.0.0.1, port_value: {{.}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: AUTO
          generate_request_id: false
          {{if $.Log}}access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {{$.Dir}}/legate-access.log{{end}}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route: {cluster: backend}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  {{end}}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Upstream}}}}}
`

func proxies() []*proxy {
	return []*proxy{
		{Name: "legate", Index: 0, h2: true, start: func(dir string, log bool) (*exec.Cmd, error) {
			cfg := filepath.Join(dir, "legate.yaml")
			if err := render(cfg, legateConf, map[string]any{"Ports": []int{portH1, portH2}, "Upstream": portUpstream, "Log": log, "Dir": dir}); err != nil {
				return nil, err
			}
			c := onCPU("1", *legate, "proxy", "-c", cfg, "--log-level", "warning", "--concurrency", "1")
			return c, startCmd(c, filepath.Join(dir, "legate.out"))
		}},
		{Name: "nginx", Index: 1, h2: true, start: func(dir string, log bool) (*exec.Cmd, error) {
			cfg := filepath.Join(dir, "nginx.conf")
			if err := render(cfg, nginxProxyConf, map[string]any{"H1": portH1 + 1, "H2": portH2 + 1, "Upstream": portUpstream, "Log": log, "Dir": dir}); err != nil {
				return nil, err
			}
			c := onCPU("1", "nginx", "-c", cfg, "-e", filepath.Join(dir, "nginx-error.log"))
			return c, startCmd(c, filepath.Join(dir, "nginx.out"))
		}},
		{Name: "haproxy", Index: 2, h2: true, start: func(dir string, log bool) (*exec.Cmd, error) {
			cfg := filepath.Join(dir, "haproxy.cfg")
			if err := render(cfg, haproxyConf, map[string]any{"H1": portH1 + 2, "H2": portH2 + 2, "Upstream": portUpstream, "Log": log}); err != nil {
				return nil, err
			}
			c := onCPU("1", "haproxy", "-db", "-f", cfg)
			if log {
				f, err := os.Create(filepath.Join(dir, "haproxy-access.log"))
				if err != nil {
					return nil, err
				}
				c.Stdout, c.Stderr = f, f
				if err := c.Start(); err != nil {
					return nil, err
				}
				started = append(started, c)
				return c, nil
			}
			return c, startCmd(c, filepath.Join(dir, "haproxy.out"))
		}},
	}
}

// pids returns pid and its descendants (nginx's workers, taskset's child).
func pids(root int) []int {
	out := []int{root}
	ents, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// cpuTicks is utime+stime of the processes, in clock ticks (1/100 s).
func cpuTicks(ps []int) int64 {
	var t int64
	for _, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		t += u + s
	}
	return t
}

func rssKiB(ps []int) int64 {
	var total int64
	for _, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				v, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
				total += v
			}
		}
	}
	return total
}

var (
	reWrkReqs = regexp.MustCompile(`(\d+) requests in`)
	reWrkRPS  = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reWrkErr  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reWrkSock = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reWrkLat  = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$`)
	reH2Reqs  = regexp.MustCompile(`requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored`)
	reH2RPS   = regexp.MustCompile(`finished in [\d.]+\w+, ([\d.]+) req/s`)
	reH2Lat   = regexp.MustCompile(`time for request:\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s)`)
)

func ms(v, unit string) float64 {
	f, _ := strconv.ParseFloat(v, 64)
	switch unit {
	case "us":
		return f / 1000
	case "s":
		return f * 1000
	}
	return f
}

// load runs the load generator and returns requests done, rps, p50, p99 and errors.
func load(sc scenario, port int) (int64, float64, float64, float64, int64, error) {
	secs := strconv.Itoa(int(duration.Seconds()))
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	var c *exec.Cmd
	if sc.Tool == "h2load" {
		c = onCPU("0", "h2load", "-D", secs, "-c", strconv.Itoa(sc.Conns), "-m", strconv.Itoa(sc.Streams), "-t", "1", url)
	} else {
		args := []string{"-t", "1", "-c", strconv.Itoa(sc.Conns), "-d", secs + "s", "--latency", "--timeout", "5s"}
		if sc.Close {
			args = append(args, "-H", "Connection: close")
		}
		c = onCPU("0", "wrk", append(args, url)...)
	}
	out, err := c.CombinedOutput()
	if err != nil {
		return 0, 0, 0, 0, 0, fmt.Errorf("%s: %v\n%s", sc.Tool, err, out)
	}
	s := string(out)
	if sc.Tool == "h2load" {
		m := reH2Reqs.FindStringSubmatch(s)
		if m == nil {
			return 0, 0, 0, 0, 0, fmt.Errorf("h2load output not understood:\n%s", s)
		}
		done, _ := strconv.ParseInt(m[2], 10, 64)
		failed, _ := strconv.ParseInt(m[3], 10, 64)
		errored, _ := strconv.ParseInt(m[4], 10, 64)
		rps := 0.0
		if r := reH2RPS.FindStringSubmatch(s); r != nil {
			rps, _ = strconv.ParseFloat(r[1], 64)
		}
		mean := 0.0
		if l := reH2Lat.FindStringSubmatch(s); l != nil {
			mean = ms(l[1], l[2])
		}
		return done, rps, mean, 0, failed + errored, nil
	}
	m := reWrkReqs.FindStringSubmatch(s)
	r := reWrkRPS.FindStringSubmatch(s)
	if m == nil || r == nil {
		return 0, 0, 0, 0, 0, fmt.Errorf("wrk output not understood:\n%s", s)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	rps, _ := strconv.ParseFloat(r[1], 64)
	var errs int64
	if e := reWrkErr.FindStringSubmatch(s); e != nil {
		errs, _ = strconv.ParseInt(e[1], 10, 64)
	}
	if e := reWrkSock.FindStringSubmatch(s); e != nil {
		for _, v := range e[1:] {
			x, _ := strconv.ParseInt(v, 10, 64)
			errs += x
		}
	}
	var p50, p99 float64
	for _, l := range reWrkLat.FindAllStringSubmatch(s, -1) {
		if l[1] == "50" {
			p50 = ms(l[2], l[3])
		} else {
			p99 = ms(l[2], l[3])
		}
	}
	return n, rps, p50, p99, errs, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// idleMemory opens n keep-alive connections, sends one request on each,
// and returns the proxy's RSS growth per connection in KiB.
func idleMemory(ps []int, port, n int) (float64, error) {
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	if lim.Cur < uint64(n+1000) {
		lim.Cur = min(uint64(n+1000), lim.Max)
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	runtime.GC()
	time.Sleep(300 * time.Millisecond)
	before := rssKiB(ps)
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	buf := make([]byte, 4096)
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
		if err != nil {
			return 0, fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(req); err != nil {
			return 0, err
		}
		if _, err := c.Read(buf); err != nil {
			return 0, fmt.Errorf("connection %d: %w", i, err)
		}
	}
	time.Sleep(time.Second)
	after := rssKiB(ps)
	return float64(after-before) / float64(n), nil
}

func machine() map[string]string {
	m := map[string]string{"cpus": strconv.Itoa(runtime.NumCPU()), "go": runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		b := make([]byte, 0, 65)
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b = append(b, byte(c))
		}
		m["kernel"] = string(b)
	}
	ver := func(name string, args ...string) string {
		out, _ := exec.Command(name, args...).CombinedOutput()
		l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return l
	}
	m["nginx"] = ver("nginx", "-v")
	m["haproxy"] = ver("haproxy", "-v")
	m["wrk"] = ver("wrk", "-v")
	m["h2load"] = ver("h2load", "--version")
	m["legate"] = ver(*legate, "version")
	m["pinning"] = fmt.Sprintf("%v (load generator on CPU 0; proxy and upstream on CPU 1)", *pin)
	return m
}

func main() {
	flag.Parse()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() { <-sig; stopAll(); os.Exit(130) }()
	defer stopAll()
	if err := run(); err != nil {
		stopAll()
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
}

func run() error {
	dir, err := os.MkdirTemp("", "legate-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, p := range []int{portUpstream, portH1, portH1 + 1, portH1 + 2, portH2, portH2 + 1, portH2 + 2} {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			c.Close()
			return fmt.Errorf("port %d on 127.0.0.1 is in use: stop what listens there", p)
		}
	}
	if err := render(filepath.Join(dir, "upstream.conf"), nginxUpstreamConf, map[string]any{"Port": portUpstream, "Body": strings.TrimSuffix(body100, "\n") + `\n`, "Dir": dir}); err != nil {
		return err
	}
	up := onCPU("1", "nginx", "-c", filepath.Join(dir, "upstream.conf"), "-e", filepath.Join(dir, "upstream-error.log"))
	if err := startCmd(up, filepath.Join(dir, "upstream.out")); err != nil {
		return err
	}
	if err := waitPort(portUpstream); err != nil {
		return err
	}

	scenarios := []scenario{
		{Name: "h1-keepalive-8", Tool: "wrk", Conns: 8},
		{Name: "h1-keepalive-64", Tool: "wrk", Conns: 64},
		{Name: "h1-keepalive-256", Tool: "wrk", Conns: 256},
		{Name: "h1-conn-per-request-8", Tool: "wrk", Conns: 8, Close: true},
		{Name: "h2c-16x10", Tool: "h2load", Conns: 16, Streams: 10},
		{Name: "h1-keepalive-64-accesslog", Tool: "wrk", Conns: 64, Log: true},
	}
	ps := proxies()
	results := map[string]*Result{}
	rep := &Report{Date: time.Now().UTC().Format(time.RFC3339), Machine: machine(), IdleKiBConn: map[string]float64{},
		Method: fmt.Sprintf("%d rounds of %s per scenario, proxies alternated within each round (A B C A B C ...); medians. "+
			"Upstream: nginx, 1 worker, fixed %d-byte body, keep-alive. Proxies: 1 worker/thread each, keep-alive to the upstream, "+
			"access log off unless the scenario says accesslog. Latency: wrk --latency percentiles; h2load reports no percentiles, so its mean is shown as p50 and p99 is empty. CPU = utime+stime of the proxy's processes from /proc/PID/stat over the run, per completed request.",
			*rounds, *duration, len(body100))}
	for _, logOn := range []bool{false, true} {
		for round := 0; round < *rounds; round++ {
			for _, p := range ps {
				cmd, err := p.start(dir, logOn)
				if err != nil {
					return fmt.Errorf("start %s: %w", p.Name, err)
				}
				if err := waitPort(portH1 + p.Index); err != nil {
					return fmt.Errorf("%s: %w", p.Name, err)
				}
				pp := pids(cmd.Process.Pid)
				for _, sc := range scenarios {
					if sc.Log != logOn {
						continue
					}
					key := p.Name + "/" + sc.Name
					r := results[key]
					if r == nil {
						r = &Result{Proxy: p.Name, Scenario: sc.Name}
						results[key] = r
						rep.Results = append(rep.Results, r)
					}
					port := portH1 + p.Index
					if sc.Tool == "h2load" {
						port = portH2 + p.Index
					}
					t0 := cpuTicks(pp)
					n, rps, p50, p99, errs, err := load(sc, port)
					if err != nil {
						r.Skipped = err.Error()
						continue
					}
					t1 := cpuTicks(pp)
					cpu := 0.0
					if n > 0 {
						cpu = float64(t1-t0) * 1e4 / float64(n) // ticks are 10 ms = 1e4 µs
					}
					r.rounds = append(r.rounds, sample{rps, p50, p99, cpu, rssKiB(pp), errs})
					fmt.Fprintf(os.Stderr, "round %d %-8s %-26s %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  %6.1f CPU-µs/req  errors %d\n",
						round+1, p.Name, sc.Name, rps, p50, p99, cpu, errs)
				}
				if !logOn && round == 0 {
					kib, err := idleMemory(pp, portH1+p.Index, *idleN)
					if err != nil {
						fmt.Fprintf(os.Stderr, "idle memory for %s: %v\n", p.Name, err)
					} else {
						rep.IdleKiBConn[p.Name] = kib
						fmt.Fprintf(os.Stderr, "%s: %.2f KiB per idle connection (%d connections)\n", p.Name, kib, *idleN)
					}
				}
				cmd.Process.Signal(syscall.SIGTERM)
				done := make(chan struct{})
				go func() { cmd.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					cmd.Process.Kill()
					<-done
				}
				if p.Name == "nginx" {
					time.Sleep(200 * time.Millisecond) // nginx workers exit after the master
				}
			}
		}
	}
	for _, r := range rep.Results {
		var rps, p50, p99, cpu []float64
		for _, s := range r.rounds {
			rps, p50, p99, cpu = append(rps, s.rps), append(p50, s.p50), append(p99, s.p99), append(cpu, s.cpu)
			r.Errors += s.errs
			r.RSSKiB = max(r.RSSKiB, s.rss)
		}
		r.RPS, r.P50ms, r.P99ms, r.CPUusPerReq = median(rps), median(p50), median(p99), median(cpu)
	}
	for _, sc := range scenarios {
		l := results["legate/"+sc.Name]
		for _, peer := range []string{"nginx", "haproxy"} {
			o := results[peer+"/"+sc.Name]
			if l == nil || o == nil || o.RPS == 0 || o.CPUusPerReq == 0 {
				continue
			}
			rep.Ratios = append(rep.Ratios, Ratio{Scenario: sc.Name, Peer: peer, RPS: l.RPS / o.RPS, CPUPerReq: l.CPUusPerReq / o.CPUusPerReq})
		}
	}
	md := markdown(rep)
	fmt.Print(md)
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	j, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(*outDir, "latest.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*outDir, "latest.md"), []byte(md), 0o644)
}

func markdown(rep *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Legate vs nginx vs HAProxy — %s\n\n", rep.Date)
	keys := make([]string, 0, len(rep.Machine))
	for k := range rep.Machine {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "- %s: %s\n", k, rep.Machine[k])
	}
	fmt.Fprintf(&b, "\n%s\n\n", rep.Method)
	b.WriteString("| scenario | proxy | requests/s | p50 ms | p99 ms | proxy CPU µs/request | RSS after load KiB | errors |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.Results {
		if r.Skipped != "" && len(r.rounds) == 0 {
			fmt.Fprintf(&b, "| %s | %s | skipped: %s | | | | | |\n", r.Scenario, r.Proxy, strings.ReplaceAll(firstLine(r.Skipped), "|", "/"))
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.2f | %.2f | %.1f | %d | %d |\n", r.Scenario, r.Proxy, r.RPS, r.P50ms, r.P99ms, r.CPUusPerReq, r.RSSKiB, r.Errors)
	}
	b.WriteString("\n## Legate relative to its peers\n\n| scenario | peer | requests/s ratio (higher is better) | CPU per request ratio (lower is better) |\n|---|---|---|---|\n")
	for _, r := range rep.Ratios {
		fmt.Fprintf(&b, "| %s | %s | %.2f | %.2f |\n", r.Scenario, r.Peer, r.RPS, r.CPUPerReq)
	}
	b.WriteString("\n## Memory per idle keep-alive connection\n\n| proxy | KiB per connection |\n|---|---|\n")
	for _, p := range []string{"legate", "nginx", "haproxy"} {
		if v, ok := rep.IdleKiBConn[p]; ok {
			fmt.Fprintf(&b, "| %s | %.2f |\n", p, v)
		}
	}
	return b.String()
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
