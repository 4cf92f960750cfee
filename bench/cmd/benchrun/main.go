// Command benchrun compares Legate with nginx and HAProxy on this machine.
//
// It starts one upstream (nginx, one worker, answering every request with
// the same fixed 100-byte body), then each proxy in turn with equivalent
// configurations (one worker / thread, keep-alive to the upstream, access
// log off; a second pass with an access log to a file), and drives them
// with wrk (HTTP/1.1) and h2load (HTTP/2 cleartext, prior knowledge),
// alternating the proxies within each round (A B C A B C …) and reporting
// medians over the rounds. The load generator is pinned to one CPU and the
// proxy and upstream to another (taskset), when the machine allows.
//
// HTTPS scenarios terminate TLS at the proxies with one ECDSA P-256
// certificate made for the run: keep-alive, and one full handshake per
// request of TLS 1.3 or 1.2 only, with session resumption off at every
// proxy and checked (openssl s_client; Legate's listener counters). A pass
// with two workers per proxy runs unpinned. The start-up memory of
// `legate proxy` on the quickstart's configuration is measured once per
// round.
//
// For every scenario and proxy it records requests/s, p50/p99 latency,
// the proxy's CPU-microseconds per request (utime+stime of all of its
// processes from /proc/PID/stat), its RSS after the load, and separately
// its memory per idle keep-alive connection (bench/cmd/idleconns holding
// 5,000 connections). It prints a markdown report with the ratios
// Legate/nginx and Legate/HAProxy and writes it, with the same data as
// JSON, to bench/results/latest.{md,json}.
//
// Everything listens on 127.0.0.1, on free ports picked in 18100–18999.
// Every process it starts is stopped by PID when it exits, also on
// SIGINT/SIGTERM. Run it with `make bench` (bench/run.sh installs the
// tools and builds bin/legate, bin/benchrun and bin/idleconns).
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/template"
	"time"

	"golang.org/x/net/http2"

	"github.com/legateproxy/legate/internal/quickstart"
)

var (
	duration  = flag.Duration("duration", 5*time.Second, "duration of each measurement")
	rounds    = flag.Int("rounds", 3, "rounds; medians over them are reported")
	outDir    = flag.String("out", "bench/results", "directory for latest.json and latest.md")
	legateBin = flag.String("legate", "bin/legate", "legate binary")
	idleBin   = flag.String("idleconns", "bin/idleconns", "idleconns binary (bench/cmd/idleconns)")
	idleN     = flag.Int("idle-conns", 5000, "idle connections for the memory measurement (0 skips it)")
	pin       = flag.Bool("pin", true, "pin the load generator to one CPU and the proxy and upstream to another (taskset)")
	only      = flag.String("scenarios", "", "comma-separated scenario names to run (default: all)")
)

// body is the upstream's response body: 100 bytes.
var body = strings.Repeat("x", 99) + "\n"

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat;
// it is 100 on every Linux architecture Go supports.
const clockTicks = 100

// scenario is one load pattern.
type scenario struct {
	Name    string
	Tool    string // "wrk" or "h2load"
	Conns   int
	Streams int  // h2load: concurrent streams per connection
	Close   bool // wrk: Connection: close on every request
	Log     bool // the proxies write an access log
	// TLS is the proxies' listener the load goes to: "" plain HTTP,
	// "tls" HTTPS with the proxies' default versions, "tls1.3" / "tls1.2"
	// HTTPS with that version only and session resumption off.
	TLS     string
	Threads int // wrk threads (0: 1)
	// Workers is the proxies' workers / threads (0: 1). Above 1 nothing
	// is pinned: the proxy, the upstream and the load generator share
	// every allowed CPU.
	Workers int
}

// handshakes reports whether every request is a new TLS connection: the
// figure is then full handshakes per second.
func (sc scenario) handshakes() bool { return sc.TLS != "" && sc.Close }

func (sc scenario) threads() int { return max(1, sc.Threads) }

// variant is how the proxies are configured for a pass of scenarios; each
// pass starts every proxy afresh per round.
type variant struct {
	Log     bool // an access log to a file
	Workers int  // workers / threads (at least 1)
}

func (sc scenario) variant() variant { return variant{Log: sc.Log, Workers: max(1, sc.Workers)} }

// startupScenario is the start-up memory measurement's name for
// -scenarios: `legate proxy` on the quickstart's configuration.
const startupScenario = "startup-memory"

// startupGoalKiB is the goal for Legate's RSS once ready: < 25 MiB.
const startupGoalKiB = 25 * 1024

var allScenarios = []scenario{
	{Name: "h1-keepalive-8", Tool: "wrk", Conns: 8},
	{Name: "h1-keepalive-64", Tool: "wrk", Conns: 64},
	{Name: "h1-keepalive-256", Tool: "wrk", Conns: 256},
	{Name: "h1-conn-per-request-8", Tool: "wrk", Conns: 8, Close: true},
	{Name: "h2c-16x10", Tool: "h2load", Conns: 16, Streams: 10},
	{Name: "h1-tls-keepalive-64", Tool: "wrk", Conns: 64, TLS: "tls"},
	{Name: "tls13-handshake-8", Tool: "wrk", Conns: 8, Close: true, TLS: "tls1.3"},
	{Name: "tls12-handshake-8", Tool: "wrk", Conns: 8, Close: true, TLS: "tls1.2"},
	{Name: "h1-keepalive-64-accesslog", Tool: "wrk", Conns: 64, Log: true},
	{Name: "h1-keepalive-64-2cpu", Tool: "wrk", Conns: 64, Threads: 2, Workers: 2},
}

// Sample is one measurement of one proxy in one scenario.
type Sample struct {
	Round            int     `json:"round"`
	Requests         int64   `json:"requests"`
	RPS              float64 `json:"requests_per_second"`
	P50ms            float64 `json:"p50_ms"`
	P99ms            float64 `json:"p99_ms"`
	CPUusPerReq      float64 `json:"proxy_cpu_us_per_request"`
	UpstreamCPUusReq float64 `json:"upstream_cpu_us_per_request"`
	ClientCPU        float64 `json:"load_generator_cpu_fraction"`
	RSSKiB           int64   `json:"rss_kib_after_load"`
	Non2xx           int64   `json:"non_2xx"`
	SocketErrors     int64   `json:"socket_errors"`
	UpstreamConns    int64   `json:"upstream_connections_opened"`
	UpstreamRequests int64   `json:"upstream_requests"`
	AccessLogLines   int64   `json:"access_log_lines,omitempty"`
	// LegateHandshakes and LegateResumed are Legate's listener counters
	// ssl.handshake and ssl.session_reused over the run (TLS scenarios,
	// Legate only).
	LegateHandshakes  *int64 `json:"legate_ssl_handshake,omitempty"`
	LegateResumed     *int64 `json:"legate_ssl_session_reused,omitempty"`
	accessLogExpected bool
}

// Result is one proxy in one scenario: medians over the rounds.
type Result struct {
	Proxy            string   `json:"proxy"`
	Scenario         string   `json:"scenario"`
	RPS              float64  `json:"requests_per_second"`
	RPSSpread        float64  `json:"requests_per_second_spread"` // (max-min)/median over the rounds
	P50ms            float64  `json:"p50_ms"`
	P99ms            float64  `json:"p99_ms"`
	CPUusPerReq      float64  `json:"proxy_cpu_us_per_request"`
	RSSKiB           int64    `json:"rss_kib_after_load"`
	UpstreamConns    int64    `json:"upstream_connections_opened"`
	Errors           int64    `json:"errors"` // non-2xx + socket errors, summed over the rounds
	Skipped          string   `json:"skipped,omitempty"`
	Rounds           []Sample `json:"rounds,omitempty"`
	failedOnceReason string
}

// Idle is the memory-per-idle-connection measurement of one proxy.
type Idle struct {
	Proxy      string  `json:"proxy"`
	Conns      int     `json:"connections"`
	RSSBefore  int64   `json:"rss_kib_before"`
	RSSAfter   int64   `json:"rss_kib_after"`
	KiBPerConn float64 `json:"kib_per_connection"`
	Error      string  `json:"error,omitempty"`
}

// TLSCheck is what an OpenSSL client (openssl s_client, the library wrk
// uses, with its defaults) gets from one of a proxy's TLS listeners, and
// whether a client of another version is refused.
type TLSCheck struct {
	Proxy    string `json:"proxy"`
	Listener string `json:"listener"` // tls, tls1.3, tls1.2
	Version  string `json:"version"`
	Cipher   string `json:"cipher"`
	// Tickets is the NewSessionTicket messages that arrived after the
	// full handshake of a one-request connection.
	Tickets int `json:"session_tickets_received"`
	// Resumed: a second connection offering the first one's session
	// (-sess_out / -sess_in) resumed it. Checked on the handshake
	// listeners only, where it must be false.
	Resumed *bool `json:"resumed,omitempty"`
	// OtherRefused: a Go client limited to the other version was refused
	// (tls1.3 / tls1.2 listeners).
	OtherRefused *bool  `json:"other_version_refused,omitempty"`
	Error        string `json:"error,omitempty"`
}

// Startup is the start-up memory of `legate proxy` on the quickstart's
// configuration: RSS once the admin's /ready answers 200.
type Startup struct {
	Rounds   []StartupSample `json:"rounds,omitempty"`
	RSSKiB   int64           `json:"rss_kib_at_ready"` // median over the rounds
	HWMKiB   int64           `json:"vmhwm_kib_at_ready"`
	AnonKiB  int64           `json:"rss_anon_kib_at_ready"` // RssAnon: heap, stacks, Go runtime
	FileKiB  int64           `json:"rss_file_kib_at_ready"` // RssFile: the binary's pages read so far
	ReadyMS  float64         `json:"ms_to_ready"`
	Workers  int             `json:"workers"` // /server_info's command_line_options.concurrency
	GoalKiB  int64           `json:"goal_kib"`
	Met      bool            `json:"goal_met"`
	Error    string          `json:"error,omitempty"`
	Command  string          `json:"command"`
	Replaced []string        `json:"config_changes"` // what was changed in the quickstart's YAML
}

// StartupSample is one start.
type StartupSample struct {
	Round   int     `json:"round"`
	RSSKiB  int64   `json:"rss_kib_at_ready"`
	HWMKiB  int64   `json:"vmhwm_kib_at_ready"`
	AnonKiB int64   `json:"rss_anon_kib_at_ready"`
	FileKiB int64   `json:"rss_file_kib_at_ready"`
	ReadyMS float64 `json:"ms_to_ready"`
	Workers int     `json:"workers"`
}

// Ratio compares Legate with a peer in one scenario.
type Ratio struct {
	Scenario  string  `json:"scenario"`
	Peer      string  `json:"peer"`
	RPS       float64 `json:"legate_rps_over_peer"`
	CPUPerReq float64 `json:"legate_cpu_per_request_over_peer"`
}

// Report is the whole run.
type Report struct {
	Date      string            `json:"date"`
	Seconds   float64           `json:"wall_seconds"`
	Machine   map[string]string `json:"machine"`
	Method    string            `json:"method"`
	Results   []*Result         `json:"results"`
	Ratios    []Ratio           `json:"ratios"`
	Idle      []Idle            `json:"idle_memory"`
	TLS       []TLSCheck        `json:"tls_checks,omitempty"`
	Startup   *Startup          `json:"startup_memory,omitempty"`
	Notes     []string          `json:"notes"`
	Proxies   []string          `json:"proxies"`
	Scenarios []string          `json:"scenarios"`
}

func main() {
	flag.Parse()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		interrupted.Store(true)
		fmt.Fprintf(os.Stderr, "benchrun: %v: stopping everything it started\n", s)
		stopAll()
		time.Sleep(3 * time.Second) // let run return and clean up, but no longer
		os.Exit(130)
	}()
	defer func() {
		if r := recover(); r != nil {
			stopAll()
			panic(r)
		}
	}()
	err := run()
	stopAll()
	if interrupted.Load() {
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
}

// ---------------------------------------------------------------------
// Processes: every one started is tracked and stopped by PID.

type child struct {
	name  string
	cmd   *exec.Cmd
	done  chan struct{}
	out   string // file with its stdout and stderr ("" when captured)
	start uint64 // starttime from /proc/PID/stat
	known []stat // descendants seen so far (nginx's workers), stopped with it
}

// procs returns ch's process and its descendants, and remembers the
// descendants so that stop can end them even if ch exits first.
func (ch *child) procs() []stat {
	t := tree(ch.cmd.Process.Pid)
	mu.Lock()
	defer mu.Unlock()
	for _, d := range t {
		if d.pid != ch.cmd.Process.Pid && !slices.ContainsFunc(ch.known, func(k stat) bool { return k.pid == d.pid && k.start == d.start }) {
			ch.known = append(ch.known, d)
		}
	}
	return t
}

var (
	mu       sync.Mutex
	children = map[int]*child{}
	stopping bool

	// interrupted is set on SIGINT/SIGTERM/SIGHUP.
	interrupted atomic.Bool
	errStopped  = errors.New("interrupted")
)

// cpus is where the load generator and the servers run ("" = anywhere).
var clientCPU, serverCPU string

// command builds a command pinned to cpu when pinning is on.
func command(cpu, name string, args ...string) *exec.Cmd {
	var c *exec.Cmd
	if cpu != "" {
		c = exec.Command("taskset", append([]string{"-c", cpu, name}, args...)...)
	} else {
		c = exec.Command(name, args...)
	}
	// Own process group, so a terminal's ^C reaches benchrun (which stops
	// everything in order) rather than each server; and SIGKILL if
	// benchrun dies without cleaning up.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return c
}

// launch starts c with its output going to the file out (when not empty)
// and tracks it.
func launch(name string, c *exec.Cmd, out string) (*child, error) {
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		c.Stdout, c.Stderr = f, f
	}
	mu.Lock()
	defer mu.Unlock()
	if stopping {
		return nil, fmt.Errorf("stopping")
	}
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	ch := &child{name: name, cmd: c, done: make(chan struct{}), out: out}
	if st, ok := readStat(c.Process.Pid); ok {
		ch.start = st.start
	}
	children[c.Process.Pid] = ch
	go func() {
		_ = c.Wait()
		close(ch.done)
	}()
	return ch, nil
}

// stop ends ch and whatever it forked (nginx's workers): SIGTERM to the
// PID, SIGKILL after 5 s, then SIGKILL to any descendant still alive.
func stop(ch *child) {
	if ch == nil {
		return
	}
	pid := ch.cmd.Process.Pid
	ch.procs() // a last look for descendants
	mu.Lock()
	desc := slices.Clone(ch.known)
	mu.Unlock()
	select {
	case <-ch.done:
	default:
		_ = ch.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-ch.done:
		case <-time.After(5 * time.Second):
			_ = ch.cmd.Process.Kill()
			<-ch.done
		}
	}
	for _, d := range desc {
		deadline := time.Now().Add(2 * time.Second)
		for {
			st, ok := readStat(d.pid)
			if !ok || st.start != d.start {
				break // gone (or the PID was reused)
			}
			if time.Now().After(deadline) {
				_ = syscall.Kill(d.pid, syscall.SIGKILL)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	mu.Lock()
	delete(children, pid)
	mu.Unlock()
}

func stopAll() {
	mu.Lock()
	stopping = true
	var all []*child
	for _, ch := range children {
		all = append(all, ch)
	}
	mu.Unlock()
	var wg sync.WaitGroup
	for _, ch := range all {
		wg.Add(1)
		go func() { defer wg.Done(); stop(ch) }()
	}
	wg.Wait()
}

// exited reports whether ch has exited, with the tail of its output.
func exited(ch *child) error {
	select {
	case <-ch.done:
		tail := ""
		if ch.out != "" {
			b, _ := os.ReadFile(ch.out)
			if len(b) > 2000 {
				b = b[len(b)-2000:]
			}
			tail = "\n" + string(b)
		}
		return fmt.Errorf("%s exited: %v%s", ch.name, ch.cmd.ProcessState, tail)
	default:
		return nil
	}
}

// runTool runs a load generator to completion and returns its output and
// the CPU time it used.
func runTool(name string, c *exec.Cmd) ([]byte, time.Duration, error) {
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	ch, err := launch(name, c, "")
	if err != nil {
		return nil, 0, err
	}
	<-ch.done
	mu.Lock()
	delete(children, c.Process.Pid)
	mu.Unlock()
	cpu := c.ProcessState.UserTime() + c.ProcessState.SystemTime()
	if !c.ProcessState.Success() {
		return out.Bytes(), cpu, fmt.Errorf("%s: %v\n%s", name, c.ProcessState, out.Bytes())
	}
	return out.Bytes(), cpu, nil
}

// ---------------------------------------------------------------------
// /proc

type stat struct {
	pid, ppid    int
	utime, stime int64
	start        uint64
}

func readStat(pid int) (stat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return stat{}, false
	}
	f := strings.Fields(string(b[i+2:])) // f[0] is field 3 (state)
	if len(f) < 20 {
		return stat{}, false
	}
	s := stat{pid: pid}
	s.ppid, _ = strconv.Atoi(f[1])
	s.utime, _ = strconv.ParseInt(f[11], 10, 64)
	s.stime, _ = strconv.ParseInt(f[12], 10, 64)
	s.start, _ = strconv.ParseUint(f[19], 10, 64)
	return s, true
}

// tree returns root and its descendants (taskset execs its command, so
// the root is the server itself; nginx's master forks its workers).
func tree(root int) []stat {
	ents, _ := os.ReadDir("/proc")
	kids := map[int][]stat{}
	var out []stat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := readStat(pid)
		if !ok {
			continue
		}
		if pid == root {
			out = append(out, st)
		}
		kids[st.ppid] = append(kids[st.ppid], st)
	}
	if len(out) == 0 {
		return nil
	}
	for i := 0; i < len(out); i++ {
		out = append(out, kids[out[i].pid]...)
	}
	return out
}

// cpuTicks is utime+stime of the processes, in clock ticks.
func cpuTicks(ps []stat) int64 {
	var t int64
	for _, p := range ps {
		if st, ok := readStat(p.pid); ok && st.start == p.start {
			t += st.utime + st.stime
		}
	}
	return t
}

// rssKiB sums VmRSS over the processes (nginx: master + worker).
func rssKiB(ps []stat) int64 {
	var total int64
	for _, p := range ps {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/status")
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
				total += n
			}
		}
	}
	return total
}

// allowedCPUs parses Cpus_allowed_list of this process ("0-1,4").
func allowedCPUs() []int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil
	}
	var cpus []int
	for _, l := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(l, "Cpus_allowed_list:")
		if !ok {
			continue
		}
		for _, part := range strings.Split(strings.TrimSpace(v), ",") {
			lo, hi, isRange := strings.Cut(part, "-")
			a, err1 := strconv.Atoi(lo)
			z := a
			var err2 error
			if isRange {
				z, err2 = strconv.Atoi(hi)
			}
			if err1 != nil || err2 != nil {
				return nil
			}
			for c := a; c <= z; c++ {
				cpus = append(cpus, c)
			}
		}
	}
	return cpus
}

// ---------------------------------------------------------------------
// Ports

// freePorts picks n ports on 127.0.0.1 in 18100–18999 that nothing
// listens on (18081/18082 are the quickstart's backends).
func freePorts(n int) ([]int, error) {
	var out []int
	for p := 18100; p < 19000 && len(out) < n; p++ {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		_ = l.Close()
		out = append(out, p)
	}
	if len(out) < n {
		return nil, fmt.Errorf("only %d free ports in 127.0.0.1:18100-18999, need %d", len(out), n)
	}
	return out, nil
}

func waitPort(ch *child, port int) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if err := exited(ch); err != nil {
			return err
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: nothing listens on 127.0.0.1:%d after 15 s", ch.name, port)
}

// ---------------------------------------------------------------------
// Configurations

func render(path, tmpl string, data any) error {
	var b bytes.Buffer
	if err := template.Must(template.New("").Parse(tmpl)).Execute(&b, data); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// The upstream: one nginx worker, a fixed body, long keep-alive (nginx's
// default keepalive_requests of 1000 would make every proxy reconnect),
// and stub_status so that the run can count the connections and requests
// each proxy sends it.
const upstreamConf = `worker_processes 1;
worker_rlimit_nofile 16000;
daemon off;
pid {{.Dir}}/upstream.pid;
error_log {{.Dir}}/upstream-error.log warn;
events { worker_connections 15000; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:{{.Port}} backlog=4096;
    location = /upstream_status { stub_status; }
    location / { default_type text/plain; return 200 "{{.Body}}"; }
  }
}
`

// nginx as a proxy: one worker (or .Workers), an upstream keep-alive
// pool, HTTP/1.1 to the upstream with the Connection header cleared (what
// keeps the pool in use), access log buffered like Envoy's (64 KiB / 1 s
// flush). TLS: one server per listener, as ssl_protocols is per server;
// the default listener takes TLS 1.2 and 1.3, as Envoy's and HAProxy's
// defaults (nginx 1.22's own default lacks 1.3);
// the handshake listeners resume no session (no tickets, no cache) and
// send no TLS 1.3 tickets (NumTickets 0: without it OpenSSL still sends
// two stateful tickets that nothing can resume).
const nginxConf = `worker_processes {{.Workers}};
worker_rlimit_nofile 16000;
daemon off;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/nginx-error.log warn;
events { worker_connections 15000; }
http {
  {{if .Log}}access_log {{.AccessLog}} combined buffer=64k flush=1s;{{else}}access_log off;{{end}}
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  upstream backend { server 127.0.0.1:{{.Upstream}}; keepalive 256; keepalive_requests 1000000; keepalive_timeout 300s; }
  server {
    listen 127.0.0.1:{{.H1}} backlog=4096;
    {{if .H2}}listen 127.0.0.1:{{.H2}} http2 backlog=4096;{{end}}
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
{{- range .TLS}}
  server {
    listen 127.0.0.1:{{.Port}} ssl backlog=4096;
    ssl_certificate {{$.Cert}};
    ssl_certificate_key {{$.Key}};
    {{- if .Version}}
    ssl_protocols TLSv{{.Version}};
    ssl_session_tickets off;
    ssl_session_cache off;
    ssl_conf_command NumTickets 0;
    {{- else}}
    ssl_protocols TLSv1.2 TLSv1.3;
    {{- end}}
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
{{- end}}
}
`

// HAProxy: one thread (or .Workers), keep-alive on both sides, connection
// reuse across client connections (http-reuse always, as nginx's and
// Legate's pools). It cannot write a file itself: the access log goes to
// stdout, which is redirected to a file. TLS: the certificate and key in
// one PEM; the handshake listeners resume no session (no-tls-tickets, no
// session cache), though HAProxy still sends TLS 1.3 clients two stateful
// tickets that cannot resume anything (it has no setting for their number,
// haproxy/haproxy#1103).
const haproxyConf = `global
  nbthread {{.Workers}}
  maxconn 8000
  tune.ssl.cachesize 0
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
  {{if .H2}}bind 127.0.0.1:{{.H2}} proto h2{{end}}
{{- range .TLS}}
  bind 127.0.0.1:{{.Port}} ssl crt {{$.PEM}}{{if .Version}} ssl-min-ver TLSv{{.Version}} ssl-max-ver TLSv{{.Version}} no-tls-tickets{{end}}
{{- end}}
  default_backend be
backend be
  server s1 127.0.0.1:{{.Upstream}}
`

// Legate: an Envoy v3 bootstrap, one listener per port (codec AUTO serves
// HTTP/1.1 and h2c with prior knowledge on either), no request-ID
// generation (the others generate none), a STATIC cluster, the admin API
// (idle during the load; benchrun reads its /stats). TLS listeners: a
// DownstreamTlsContext with the certificate files; the handshake ones
// pin tls_minimum/maximum_protocol_version and turn both kinds of session
// resumption off.
const legateConf = `admin:
  address: {socket_address: {address: 127.0.0.1, port_value: {{.Admin}}}}
static_resources:
  listeners:
{{- range .Listeners}}
  - name: listener_{{.Port}}
    address: {socket_address: {address: 127.0.0.1, port_value: {{.Port}}}}
    filter_chains:
    - {{- if .TLS}}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          {{- if .Version}}
          disable_stateless_session_resumption: true
          disable_stateful_session_resumption: true
          {{- end}}
          common_tls_context:
            {{- if .Version}}
            tls_params: {tls_minimum_protocol_version: {{.EnvoyVersion}}, tls_maximum_protocol_version: {{.EnvoyVersion}}}
            {{- end}}
            tls_certificates:
            - certificate_chain: {filename: {{$.Cert}}}
              private_key: {filename: {{$.Key}}}
      {{- end}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: AUTO
          generate_request_id: false
{{- if $.Log}}
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {{$.AccessLog}}
{{- end}}
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route: {cluster: upstream}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{{- end}}
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Upstream}}}}}
`

// proxy is one proxy under test.
type proxy struct {
	Name   string
	H1, H2 int
	// TLS, TLS13 and TLS12 are its HTTPS listeners: default versions,
	// TLS 1.3 only and TLS 1.2 only (these two without session
	// resumption); Admin is Legate's admin API.
	TLS, TLS13, TLS12, Admin int
	noH2                     string // why HTTP/2 is not measured ("" if it is)
	accessLog                string
	dir                      string
	upstream                 int
	certs                    *certFiles
	start                    func(p *proxy, v variant) (*child, error)
}

// certFiles is the one ECDSA P-256 certificate every proxy serves.
type certFiles struct {
	Cert, Key, PEM string // certificate, PKCS #8 key, both in one file (HAProxy's crt)
	pool           *x509.CertPool
}

// tlsListener is one HTTPS listener in a configuration template.
type tlsListener struct {
	Port         int
	TLS          bool
	Version      string // "1.3", "1.2"; "" for the default versions
	EnvoyVersion string // TLSv1_3, TLSv1_2
}

// tlsListeners are p's HTTPS listeners.
func (p *proxy) tlsListeners() []tlsListener {
	return []tlsListener{{Port: p.TLS, TLS: true}, {Port: p.TLS13, TLS: true, Version: "1.3", EnvoyVersion: "TLSv1_3"}, {Port: p.TLS12, TLS: true, Version: "1.2", EnvoyVersion: "TLSv1_2"}}
}

// port is the listener a scenario's load goes to.
func (p *proxy) port(sc scenario) int {
	switch {
	case sc.Tool == "h2load":
		return p.H2
	case sc.TLS == "tls":
		return p.TLS
	case sc.TLS == "tls1.3":
		return p.TLS13
	case sc.TLS == "tls1.2":
		return p.TLS12
	}
	return p.H1
}

func (p *proxy) h2Port() int {
	if p.noH2 != "" {
		return 0
	}
	return p.H2
}

// serverCPUs is where the proxies and the upstream run in a variant: the
// server CPU, or anywhere with several workers.
func serverCPUs(v variant) string {
	if v.Workers > 1 {
		return ""
	}
	return serverCPU
}

func startLegate(p *proxy, v variant) (*child, error) {
	cfg := filepath.Join(p.dir, "legate.yaml")
	ls := []tlsListener{{Port: p.H1}}
	if p.h2Port() != 0 {
		ls = append(ls, tlsListener{Port: p.H2})
	}
	ls = append(ls, p.tlsListeners()...)
	if err := render(cfg, legateConf, map[string]any{"Listeners": ls, "Admin": p.Admin, "Upstream": p.upstream, "Log": v.Log, "AccessLog": p.accessLog,
		"Cert": p.certs.Cert, "Key": p.certs.Key}); err != nil {
		return nil, err
	}
	n := strconv.Itoa(v.Workers)
	c := command(serverCPUs(v), *legateBin, "proxy", "-c", cfg, "--log-level", "warn", "--concurrency", n, "--drain-time-s", "1")
	c.Env = append(os.Environ(), "GOMAXPROCS="+n)
	return launch("legate", c, filepath.Join(p.dir, "legate.out"))
}

func startNginx(p *proxy, v variant) (*child, error) {
	cfg := filepath.Join(p.dir, "nginx.conf")
	if err := render(cfg, nginxConf, map[string]any{"H1": p.H1, "H2": p.h2Port(), "TLS": p.tlsListeners(), "Cert": p.certs.Cert, "Key": p.certs.Key,
		"Upstream": p.upstream, "Log": v.Log, "AccessLog": p.accessLog, "Dir": p.dir, "Workers": v.Workers}); err != nil {
		return nil, err
	}
	c := command(serverCPUs(v), "nginx", "-c", cfg, "-e", filepath.Join(p.dir, "nginx-error.log"))
	return launch("nginx", c, filepath.Join(p.dir, "nginx.out"))
}

func startHAProxy(p *proxy, v variant) (*child, error) {
	cfg := filepath.Join(p.dir, "haproxy.cfg")
	if err := render(cfg, haproxyConf, map[string]any{"H1": p.H1, "H2": p.h2Port(), "TLS": p.tlsListeners(), "PEM": p.certs.PEM,
		"Upstream": p.upstream, "Log": v.Log, "Workers": v.Workers}); err != nil {
		return nil, err
	}
	c := command(serverCPUs(v), "haproxy", "-db", "-f", cfg)
	out := filepath.Join(p.dir, "haproxy.out")
	if v.Log {
		out = p.accessLog // stdout carries the access log
	}
	return launch("haproxy", c, out)
}

// makeCert writes a self-signed ECDSA P-256 certificate for 127.0.0.1 and
// localhost, its key and both in one PEM into dir: the one certificate of
// every proxy in this run.
func makeCert(dir string) (*certFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	cpem := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kpem := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	f := &certFiles{Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem"), PEM: filepath.Join(dir, "cert-key.pem"), pool: x509.NewCertPool()}
	f.pool.AddCert(cert)
	for path, b := range map[string][]byte{f.Cert: cpem, f.Key: kpem, f.PEM: append(slices.Clone(cpem), kpem...)} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// nginxH2 says why nginx cannot serve h2c, or "".
func nginxH2() string {
	out, err := exec.Command("nginx", "-V").CombinedOutput()
	if err != nil {
		return "nginx -V failed"
	}
	if !bytes.Contains(out, []byte("--with-http_v2_module")) {
		return "this nginx is built without http_v2_module"
	}
	return ""
}

// haproxyH2 says why HAProxy cannot serve h2c (proto h2 needs 1.9), or "".
func haproxyH2() string {
	out, _ := exec.Command("haproxy", "-v").CombinedOutput()
	m := regexp.MustCompile(`version (\d+)\.(\d+)`).FindSubmatch(out)
	if m == nil {
		return "unknown HAProxy version"
	}
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	if major < 1 || (major == 1 && minor < 9) {
		return "HAProxy before 1.9 has no proto h2 on bind"
	}
	return ""
}

// up starts p and checks that it proxies: a 200 with the upstream's body
// over HTTP/1.1, over h2c when measured, and over HTTPS on each TLS
// listener with the version it is limited to; Legate's server.concurrency
// must be the variant's workers. A failing h2c check turns HTTP/2 off for
// p with the reason.
func (p *proxy) up(v variant) (*child, error) {
	if v.Log {
		_ = os.Remove(p.accessLog)
	}
	ch, err := p.start(p, v)
	if err != nil {
		return nil, err
	}
	ports := []int{p.H1, p.TLS, p.TLS13, p.TLS12}
	if p.h2Port() != 0 {
		ports = append(ports, p.H2)
	}
	if p.Name == "legate" {
		ports = append(ports, p.Admin)
	}
	for _, port := range ports {
		if err := waitPort(ch, port); err != nil {
			stop(ch)
			return nil, err
		}
	}
	if _, err := check(&http.Client{Transport: &http.Transport{}}, fmt.Sprintf("http://127.0.0.1:%d/", p.H1)); err != nil {
		stop(ch)
		return nil, fmt.Errorf("%s does not proxy over HTTP/1.1: %w", p.Name, err)
	}
	for _, l := range p.tlsListeners() {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.certs.pool}}
		st, err := check(&http.Client{Transport: tr}, fmt.Sprintf("https://127.0.0.1:%d/", l.Port))
		if err == nil && l.Version != "" && tlsVersion(st.Version) != "TLSv"+l.Version {
			err = fmt.Errorf("negotiated %s", tlsVersion(st.Version))
		}
		if err != nil {
			stop(ch)
			return nil, fmt.Errorf("%s does not proxy over HTTPS on :%d (TLS %s): %w", p.Name, l.Port, cmp.Or(l.Version, "default versions"), err)
		}
	}
	if p.Name == "legate" {
		st, err := legateStats(p.Admin, `^server\.concurrency$`)
		if err == nil && st["server.concurrency"] != int64(v.Workers) {
			err = fmt.Errorf("server.concurrency is %d, want %d (--concurrency %d)", st["server.concurrency"], v.Workers, v.Workers)
		}
		if err != nil {
			stop(ch)
			return nil, fmt.Errorf("legate admin: %w", err)
		}
	}
	if p.h2Port() != 0 {
		h2c := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
		if _, err := check(&http.Client{Transport: h2c}, fmt.Sprintf("http://127.0.0.1:%d/", p.H2)); err != nil {
			p.noH2 = "h2c with prior knowledge failed: " + err.Error()
			fmt.Fprintf(os.Stderr, "%s: %s; HTTP/2 is skipped for it\n", p.Name, p.noH2)
		}
		h2c.CloseIdleConnections()
	}
	return ch, nil
}

// check GETs url and wants a 200 with the upstream's body; it returns the
// TLS state of an HTTPS response.
func check(c *http.Client, target string) (*tls.ConnectionState, error) {
	c.Timeout = 5 * time.Second
	defer c.CloseIdleConnections()
	resp, err := c.Get(target)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 || string(b) != body {
		return nil, fmt.Errorf("got %d with a %d-byte body, want 200 with the upstream's %d bytes", resp.StatusCode, len(b), len(body))
	}
	return resp.TLS, nil
}

// tlsVersion names a TLS version as OpenSSL does (TLSv1.3).
func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	}
	return fmt.Sprintf("0x%04x", v)
}

// legateStats reads Legate's admin /stats (text) for the counters and
// gauges whose names match filter (Envoy's regular-expression filter).
func legateStats(admin int, filter string) (map[string]int64, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/stats?filter=%s", admin, url.QueryEscape(filter)))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("/stats: %d %s", resp.StatusCode, b)
	}
	out := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(l, ": ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			out[name] = n
		}
	}
	return out, nil
}

// legateTLSCounters are the ssl.handshake and ssl.session_reused counters
// of Legate's listener on port.
func legateTLSCounters(admin, port int) (handshakes, resumed int64, err error) {
	prefix := fmt.Sprintf("listener.127.0.0.1_%d.ssl.", port)
	st, err := legateStats(admin, "^"+regexp.QuoteMeta(prefix)+`(handshake|session_reused)$`)
	if err != nil {
		return 0, 0, err
	}
	h, ok := st[prefix+"handshake"]
	if !ok {
		return 0, 0, fmt.Errorf("no %shandshake in Legate's /stats", prefix)
	}
	return h, st[prefix+"session_reused"], nil
}

// tlsChecks looks at each of p's TLS listeners as wrk's TLS library sees
// it: openssl s_client (its defaults, as wrk's) makes one request with
// Connection: close and keeps the session (-sess_out), then, on the
// handshake listeners, a second connection offers it (-sess_in), which
// must not resume; a Go client of the other version must be refused.
func (p *proxy) tlsChecks() []TLSCheck {
	var out []TLSCheck
	for _, l := range p.tlsListeners() {
		name := "tls"
		if l.Version != "" {
			name = "tls" + l.Version
		}
		c := TLSCheck{Proxy: p.Name, Listener: name}
		if _, err := exec.LookPath("openssl"); err != nil {
			c.Error = "openssl is not installed"
			out = append(out, c)
			continue
		}
		sess := filepath.Join(p.dir, "s_client.session")
		_ = os.Remove(sess)
		first, err := sClient(l.Port, "-sess_out", sess)
		if err != nil {
			c.Error = err.Error()
			out = append(out, c)
			continue
		}
		c.Version, c.Cipher, c.Tickets = first.version, first.cipher, first.tickets
		if first.reused {
			c.Error = "the first connection resumed a session"
		}
		if l.Version != "" {
			resumed := false
			if fi, err := os.Stat(sess); err == nil && fi.Size() > 0 {
				second, err := sClient(l.Port, "-sess_in", sess)
				if err != nil {
					c.Error = err.Error()
				}
				resumed = second.reused
			} // no session was kept: nothing to resume with
			c.Resumed = &resumed
			other := &tls.Config{RootCAs: p.certs.pool, MinVersion: tls.VersionTLS13}
			if l.Version == "1.3" {
				other = &tls.Config{RootCAs: p.certs.pool, MaxVersion: tls.VersionTLS12}
			}
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", l.Port), other)
			refused := err != nil
			if conn != nil {
				_ = conn.Close()
			}
			c.OtherRefused = &refused
		}
		out = append(out, c)
	}
	return out
}

// sClientResult is what one openssl s_client connection printed.
type sClientResult struct {
	reused          bool
	version, cipher string
	tickets         int
}

var reSClient = regexp.MustCompile(`(?m)^(New|Reused), (TLSv[\d.]+), Cipher is (\S+)`)

// sClient runs openssl s_client against 127.0.0.1:port with one HTTP/1.1
// request (Connection: close) on stdin and -ign_eof, so that it reads the
// response and whatever session tickets come with it until the proxy
// closes; args are its session options.
func sClient(port int, args ...string) (sClientResult, error) {
	var r sClientResult
	c := exec.Command("openssl", append([]string{"s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", port), "-ign_eof"}, args...)...)
	c.Stdin = strings.NewReader("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, io.Discard
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	ch, err := launch("openssl s_client", c, "")
	if err != nil {
		return r, err
	}
	select {
	case <-ch.done:
	case <-time.After(10 * time.Second):
		stop(ch)
		return r, fmt.Errorf("openssl s_client to :%d did not finish in 10 s", port)
	}
	stop(ch) // already exited: forgets it
	m := reSClient.FindSubmatch(out.Bytes())
	if m == nil {
		return r, fmt.Errorf("openssl s_client to :%d: no handshake in its output:\n%s", port, firstLine(out.String()))
	}
	if !bytes.Contains(out.Bytes(), []byte("HTTP/1.1 200")) {
		return r, fmt.Errorf("openssl s_client to :%d: no 200 response", port)
	}
	r.reused, r.version, r.cipher = string(m[1]) == "Reused", string(m[2]), string(m[3])
	r.tickets = bytes.Count(out.Bytes(), []byte("Post-Handshake New Session Ticket arrived"))
	return r, nil
}

// upstreamCounters reads the upstream's stub_status: connections
// accepted and requests served so far, each including the status request
// itself and its connection.
func upstreamCounters(port int) (accepts, requests int64, err error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/upstream_status", port))
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	// "Active connections: 1 \nserver accepts handled requests\n 10 10 12 \n..."
	lines := strings.Split(string(b), "\n")
	if len(lines) < 3 {
		return 0, 0, fmt.Errorf("stub_status: %q", b)
	}
	f := strings.Fields(lines[2])
	if len(f) < 3 {
		return 0, 0, fmt.Errorf("stub_status: %q", b)
	}
	accepts, _ = strconv.ParseInt(f[0], 10, 64)
	requests, _ = strconv.ParseInt(f[2], 10, 64)
	return accepts, requests, nil
}

// ---------------------------------------------------------------------
// Load generators

var (
	reWrkReqs = regexp.MustCompile(`(\d+) requests in`)
	reWrkRPS  = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reWrkErr  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reWrkSock = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reWrkLat  = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$`)
	reH2Reqs  = regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored`)
	reH2RPS   = regexp.MustCompile(`finished in [\d.]+\w+, ([\d.]+) req/s`)
	reH2Codes = regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
)

func toMS(v, unit string) float64 {
	f, _ := strconv.ParseFloat(v, 64)
	switch unit {
	case "us":
		return f / 1000
	case "s":
		return f * 1000
	}
	return f
}

// loadResult is what a load generator reports.
type loadResult struct {
	requests     int64
	rps          float64
	p50, p99     float64
	non2xx, sock int64
	clientCPU    float64
}

func load(sc scenario, port int, dir string) (loadResult, error) {
	var r loadResult
	secs := int(duration.Round(time.Second).Seconds())
	if secs < 1 {
		secs = 1
	}
	scheme := "http"
	if sc.TLS != "" {
		scheme = "https"
	}
	target := fmt.Sprintf("%s://127.0.0.1:%d/", scheme, port)
	cpu := clientCPU
	if sc.Workers > 1 {
		cpu = "" // unpinned: every allowed CPU
	}
	if sc.Tool == "h2load" {
		logf := filepath.Join(dir, "h2load.log")
		_ = os.Remove(logf)
		defer os.Remove(logf)
		c := command(cpu, "h2load", "-D", strconv.Itoa(secs), "-c", strconv.Itoa(sc.Conns), "-m", strconv.Itoa(sc.Streams), "-t", "1", "--log-file="+logf, target)
		out, used, err := runTool("h2load", c)
		if err != nil {
			return r, err
		}
		s := string(out)
		m := reH2Reqs.FindStringSubmatch(s)
		if m == nil {
			return r, fmt.Errorf("h2load output not understood:\n%s", s)
		}
		r.requests, _ = strconv.ParseInt(m[3], 10, 64)
		failed, _ := strconv.ParseInt(m[5], 10, 64)
		errored, _ := strconv.ParseInt(m[6], 10, 64)
		if x := reH2RPS.FindStringSubmatch(s); x != nil {
			r.rps, _ = strconv.ParseFloat(x[1], 64)
		}
		if x := reH2Codes.FindStringSubmatch(s); x != nil {
			for _, v := range x[2:] {
				n, _ := strconv.ParseInt(v, 10, 64)
				r.non2xx += n
			}
		}
		// failed counts non-2xx responses and stream errors (errored).
		r.sock = max(errored, failed-r.non2xx)
		r.p50, r.p99, err = h2Percentiles(logf)
		if err != nil {
			return r, err
		}
		r.clientCPU = used.Seconds() / float64(secs)
		return r, nil
	}
	args := []string{"-t", strconv.Itoa(sc.threads()), "-c", strconv.Itoa(sc.Conns), "-d", strconv.Itoa(secs) + "s", "--latency", "--timeout", "5s"}
	if sc.Close {
		args = append(args, "-H", "Connection: close")
	}
	out, used, err := runTool("wrk", command(cpu, "wrk", append(args, target)...))
	if err != nil {
		return r, err
	}
	s := string(out)
	m, x := reWrkReqs.FindStringSubmatch(s), reWrkRPS.FindStringSubmatch(s)
	if m == nil || x == nil {
		return r, fmt.Errorf("wrk output not understood:\n%s", s)
	}
	r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	r.rps, _ = strconv.ParseFloat(x[1], 64)
	if e := reWrkErr.FindStringSubmatch(s); e != nil {
		r.non2xx, _ = strconv.ParseInt(e[1], 10, 64)
	}
	if e := reWrkSock.FindStringSubmatch(s); e != nil {
		for _, v := range e[1:] {
			n, _ := strconv.ParseInt(v, 10, 64)
			r.sock += n
		}
	}
	for _, l := range reWrkLat.FindAllStringSubmatch(s, -1) {
		if l[1] == "50" {
			r.p50 = toMS(l[2], l[3])
		} else {
			r.p99 = toMS(l[2], l[3])
		}
	}
	// The share of its CPUs: one per thread.
	r.clientCPU = used.Seconds() / float64(secs) / float64(sc.threads())
	return r, nil
}

// h2Percentiles reads h2load's --log-file (start µs, status, duration µs
// per request) and returns p50 and p99 in milliseconds.
func h2Percentiles(path string) (float64, float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var d []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), "\t")
		if len(fs) < 3 {
			continue
		}
		if v, err := strconv.ParseFloat(fs[2], 64); err == nil {
			d = append(d, v/1000)
		}
	}
	if len(d) == 0 {
		return 0, 0, fmt.Errorf("h2load wrote no request log")
	}
	sort.Float64s(d)
	pct := func(q float64) float64 { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return pct(0.50), pct(0.99), sc.Err()
}

func countLines(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	var n int64
	buf := make([]byte, 1<<20)
	for {
		k, err := f.Read(buf)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		if err != nil {
			return n
		}
	}
}

// measure runs one scenario against a running proxy.
func measure(p *proxy, ch *child, sc scenario, upstreamPID []stat, upPort int) (Sample, error) {
	var s Sample
	ps := ch.procs()
	port := p.port(sc)
	acc0, req0, err := upstreamCounters(upPort)
	if err != nil {
		return s, fmt.Errorf("upstream: %w", err)
	}
	var hs0, re0 int64
	countTLS := sc.TLS != "" && p.Name == "legate"
	if countTLS {
		if hs0, re0, err = legateTLSCounters(p.Admin, port); err != nil {
			return s, fmt.Errorf("legate admin: %w", err)
		}
	}
	lines0 := countLines(p.accessLog)
	t0, u0 := cpuTicks(ps), cpuTicks(upstreamPID)
	r, err := load(sc, port, p.dir)
	if err != nil {
		return s, err
	}
	t1, u1 := cpuTicks(ps), cpuTicks(upstreamPID)
	s.RSSKiB = rssKiB(ps)
	acc1, req1, err := upstreamCounters(upPort)
	if err != nil {
		return s, fmt.Errorf("upstream: %w", err)
	}
	if err := exited(ch); err != nil {
		return s, err
	}
	if countTLS {
		hs1, re1, err := legateTLSCounters(p.Admin, port)
		if err != nil {
			return s, fmt.Errorf("legate admin: %w", err)
		}
		hs, re := hs1-hs0, re1-re0
		s.LegateHandshakes, s.LegateResumed = &hs, &re
	}
	s.Requests, s.RPS, s.P50ms, s.P99ms = r.requests, r.rps, r.p50, r.p99
	s.Non2xx, s.SocketErrors, s.ClientCPU = r.non2xx, r.sock, r.clientCPU
	// The deltas include the first status request and its connection.
	s.UpstreamConns, s.UpstreamRequests = acc1-acc0-1, req1-req0-1
	if r.requests > 0 {
		us := 1e6 / float64(clockTicks)
		s.CPUusPerReq = float64(t1-t0) * us / float64(r.requests)
		s.UpstreamCPUusReq = float64(u1-u0) * us / float64(r.requests)
	}
	if sc.Log {
		time.Sleep(1500 * time.Millisecond) // Legate's and nginx's access logs flush every second
		s.AccessLogLines = countLines(p.accessLog) - lines0
		s.accessLogExpected = true
	}
	return s, nil
}

// idle measures p's memory per idle keep-alive connection on a fresh
// process: RSS before and after idleconns opened n connections and made
// one request on each.
func idle(p *proxy, n int) Idle {
	res := Idle{Proxy: p.Name, Conns: n}
	fail := func(err error) Idle { res.Error = err.Error(); return res }
	ch, err := p.up(variant{Workers: 1})
	if err != nil {
		return fail(err)
	}
	defer stop(ch)
	time.Sleep(500 * time.Millisecond)
	ps := ch.procs()
	res.RSSBefore = rssKiB(ps)
	c := command(clientCPU, *idleBin, "-addr", fmt.Sprintf("127.0.0.1:%d", p.H1), "-n", strconv.Itoa(n), "-stdin")
	stdin, err := c.StdinPipe()
	if err != nil {
		return fail(err)
	}
	stdout, err := c.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	errf := filepath.Join(p.dir, "idleconns.err")
	f, err := os.Create(errf)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	c.Stderr = f
	ic, err := launch("idleconns", c, "")
	if err != nil {
		return fail(err)
	}
	defer stop(ic)
	defer stdin.Close()
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if !strings.HasPrefix(line, "ready ") {
		<-ic.done
		b, _ := os.ReadFile(errf)
		return fail(fmt.Errorf("idleconns: %s", strings.TrimSpace(string(b))))
	}
	time.Sleep(time.Second)
	res.RSSAfter = rssKiB(ch.procs())
	res.KiBPerConn = float64(res.RSSAfter-res.RSSBefore) / float64(n)
	return res
}

// ---------------------------------------------------------------------

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func machine() map[string]string {
	m := map[string]string{"nproc": strconv.Itoa(runtime.NumCPU())}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu_model"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m["loadavg_at_start"] = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	ver := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		if l == "" && err != nil {
			return "unavailable: " + err.Error()
		}
		return l
	}
	m["nginx"] = ver("nginx", "-v")
	m["haproxy"] = ver("haproxy", "-v")
	m["wrk"] = ver("wrk", "-v")
	m["h2load"] = ver("h2load", "--version")
	m["openssl"] = ver("openssl", "version")
	m["go"] = ver("go", "version")
	if strings.HasPrefix(m["go"], "unavailable") {
		m["go"] = runtime.Version() + " (benchrun's)"
	}
	m["legate"] = ver(*legateBin, "version")
	if clientCPU != "" {
		m["pinning"] = fmt.Sprintf("taskset: load generator on CPU %s; proxy and upstream on CPU %s", clientCPU, serverCPU)
	} else {
		m["pinning"] = "none (taskset missing, fewer than 2 allowed CPUs, or -pin=false)"
	}
	return m
}

func run() error {
	begin := time.Now()
	for _, tool := range []string{"nginx", "haproxy", "wrk", *legateBin, *idleBin} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s: %w (bench/run.sh installs and builds what is needed)", tool, err)
		}
	}
	// Children inherit the limit: nginx and HAProxy raise theirs as root,
	// Go raises its own, and idleconns needs 5,000+.
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if *pin {
		if _, err := exec.LookPath("taskset"); err == nil {
			if cpus := allowedCPUs(); len(cpus) >= 2 {
				clientCPU, serverCPU = strconv.Itoa(cpus[0]), strconv.Itoa(cpus[1])
			}
		}
	}
	scenarios, startupOn := allScenarios, true
	if *only != "" {
		want := strings.Split(*only, ",")
		for _, w := range want {
			if w != startupScenario && !slices.ContainsFunc(allScenarios, func(s scenario) bool { return s.Name == w }) {
				return fmt.Errorf("unknown scenario %q (%s, and %s)", w, strings.Join(scenarioNames(), ", "), startupScenario)
			}
		}
		scenarios = slices.DeleteFunc(slices.Clone(allScenarios), func(s scenario) bool { return !slices.Contains(want, s.Name) })
		startupOn = slices.Contains(want, startupScenario)
	}
	dir, err := os.MkdirTemp("", "legate-bench-")
	if err != nil {
		return err
	}
	keep := true
	defer func() {
		if keep && !interrupted.Load() {
			fmt.Fprintf(os.Stderr, "benchrun: configurations and logs kept in %s\n", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}()
	// The upstream, 6 per proxy (HTTP/1.1, h2c, 3 HTTPS, admin), and the
	// start-up measurement's listener and admin.
	ports, err := freePorts(1 + 6*3 + 2)
	if err != nil {
		return err
	}
	upPort := ports[0]
	certs, err := makeCert(dir)
	if err != nil {
		return fmt.Errorf("test certificate: %w", err)
	}

	noH2 := ""
	if _, err := exec.LookPath("h2load"); err != nil {
		noH2 = "h2load is not installed"
	}
	mk := func(name string, i int, start func(*proxy, variant) (*child, error), why string) *proxy {
		if noH2 != "" {
			why = noH2
		}
		pp := ports[1+6*i:]
		return &proxy{Name: name, H1: pp[0], H2: pp[1], TLS: pp[2], TLS13: pp[3], TLS12: pp[4], Admin: pp[5], noH2: why, dir: dir, upstream: upPort,
			accessLog: filepath.Join(dir, name+"-access.log"), certs: certs, start: start}
	}
	proxies := []*proxy{
		mk("legate", 0, startLegate, ""),
		mk("nginx", 1, startNginx, nginxH2()),
		mk("haproxy", 2, startHAProxy, haproxyH2()),
	}

	rep := &Report{Date: time.Now().UTC().Format(time.RFC3339), Machine: machine()}
	for _, p := range proxies {
		rep.Proxies = append(rep.Proxies, p.Name)
	}
	for _, sc := range scenarios {
		rep.Scenarios = append(rep.Scenarios, sc.Name)
	}
	rep.Method = fmt.Sprintf("%d rounds of %s per scenario; the proxies alternate within each round (%s, %s, ...), each started fresh per round, and medians over the rounds are reported. "+
		"Upstream: nginx, 1 worker, fixed %d-byte body, keep-alive. Proxies: 1 worker / thread each (Legate GOMAXPROCS=1), keep-alive to the upstream, access log off except in *-accesslog scenarios (then to a file). "+
		"Load: wrk -t1 (HTTP/1.1; percentiles from --latency), h2load -t1 (h2c prior knowledge; percentiles from its per-request log). "+
		"TLS: HTTPS terminated at the proxy (upstream plain HTTP), one self-signed ECDSA P-256 certificate for all three, made for the run; *-handshake-8: wrk with Connection: close, so every request is a full handshake of that TLS version only, session resumption off at every proxy (wrk would resume: it keeps its session across reconnections) and checked (openssl s_client offering a session; Legate's ssl.handshake vs ssl.session_reused); requests/s is then handshakes/s. "+
		"*-2cpu: nothing pinned, 2 workers / threads per proxy (Legate --concurrency 2, nginx worker_processes 2, HAProxy nbthread 2), wrk -t2. "+
		"CPU: utime+stime of the proxy's processes (/proc/PID/stat) over the run divided by completed requests. RSS: VmRSS of the proxy's processes after the load. "+
		"Idle memory: RSS growth of a fresh proxy while bench/cmd/idleconns holds %d keep-alive connections that each made one request. "+
		"Start-up memory: VmRSS of `legate proxy -c <the quickstart's config>` (addresses moved to 127.0.0.1 and free ports, backends to the upstream), unpinned, when its admin /ready first answers 200; median of one start per round.",
		*rounds, *duration, strings.Join(rep.Proxies, ", "), strings.Join(rep.Proxies, ", "), len(body), *idleN)

	// The upstream.
	if err := render(filepath.Join(dir, "upstream.conf"), upstreamConf, map[string]any{"Port": upPort, "Body": strings.TrimSuffix(body, "\n") + `\n`, "Dir": dir}); err != nil {
		return err
	}
	up, err := launch("upstream nginx", command(serverCPU, "nginx", "-c", filepath.Join(dir, "upstream.conf"), "-e", filepath.Join(dir, "upstream-error.log")), filepath.Join(dir, "upstream.out"))
	if err != nil {
		return err
	}
	if err := waitPort(up, upPort); err != nil {
		return err
	}
	if _, err := check(&http.Client{Transport: &http.Transport{}}, fmt.Sprintf("http://127.0.0.1:%d/", upPort)); err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	upPIDs := up.procs()
	fmt.Fprintf(os.Stderr, "benchrun: upstream on 127.0.0.1:%d; %s; legate :%d/:%d, nginx :%d/:%d, haproxy :%d/:%d (HTTP/1.1 / h2c)\n",
		upPort, rep.Machine["pinning"], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6])

	if startupOn {
		rep.Startup = startup(dir, ports[len(ports)-2], ports[len(ports)-1], upPort)
		if interrupted.Load() {
			return errStopped
		}
		if rep.Startup.Error != "" {
			rep.Notes = append(rep.Notes, "start-up memory not measured: "+firstLine(rep.Startup.Error))
		} else {
			fmt.Fprintf(os.Stderr, "startup  legate RSS %d KiB (peak %d KiB) at ready after %.0f ms, %d workers; goal < %d KiB\n",
				rep.Startup.RSSKiB, rep.Startup.HWMKiB, rep.Startup.ReadyMS, rep.Startup.Workers, rep.Startup.GoalKiB)
		}
	}

	// Memory per idle connection, each on a fresh process.
	if *idleN > 0 {
		for _, p := range proxies {
			r := idle(p, *idleN)
			if interrupted.Load() {
				return errStopped
			}
			rep.Idle = append(rep.Idle, r)
			if r.Error != "" {
				fmt.Fprintf(os.Stderr, "idle %-8s %s\n", p.Name, r.Error)
				rep.Notes = append(rep.Notes, fmt.Sprintf("idle-connection memory of %s not measured: %s", p.Name, r.Error))
			} else {
				fmt.Fprintf(os.Stderr, "idle %-8s RSS %d → %d KiB with %d connections: %.2f KiB/connection\n", p.Name, r.RSSBefore, r.RSSAfter, r.Conns, r.KiBPerConn)
			}
		}
	}

	results := map[string]*Result{}
	get := func(p *proxy, sc scenario) *Result {
		k := p.Name + "/" + sc.Name
		if results[k] == nil {
			results[k] = &Result{Proxy: p.Name, Scenario: sc.Name}
		}
		return results[k]
	}
	var passes []variant
	for _, sc := range scenarios {
		if !slices.Contains(passes, sc.variant()) {
			passes = append(passes, sc.variant())
		}
	}
	allCPUs := allowedCPUs()
	for _, v := range passes {
		var scs []scenario
		for _, sc := range scenarios {
			if sc.variant() == v {
				scs = append(scs, sc)
			}
		}
		if v.Workers > len(allCPUs) {
			for _, p := range proxies {
				for _, sc := range scs {
					get(p, sc).Skipped = fmt.Sprintf("needs %d CPUs, %d allowed", v.Workers, len(allCPUs))
				}
			}
			continue
		}
		withTLS := slices.ContainsFunc(scs, func(sc scenario) bool { return sc.TLS != "" })
		// Several workers: the upstream may run anywhere too, for this pass.
		unpin := v.Workers > 1 && serverCPU != ""
		if unpin {
			if err := setAffinity(upPIDs, joinInts(allCPUs)); err != nil {
				return err
			}
		}
		for round := 1; round <= *rounds; round++ {
			for _, p := range proxies {
				ch, err := p.up(v)
				if err != nil {
					return err
				}
				if withTLS && round == 1 && !slices.ContainsFunc(rep.TLS, func(c TLSCheck) bool { return c.Proxy == p.Name }) {
					for _, c := range p.tlsChecks() {
						rep.TLS = append(rep.TLS, c)
						fmt.Fprintf(os.Stderr, "tls      %-8s %-7s %s %s, tickets %d, resumed %s, other version refused %s %s\n", p.Name, c.Listener, c.Version, c.Cipher, c.Tickets, yesNo(c.Resumed), yesNo(c.OtherRefused), c.Error)
					}
				}
				for _, sc := range scs {
					if interrupted.Load() {
						return errStopped
					}
					r := get(p, sc)
					if sc.Tool == "h2load" && p.noH2 != "" {
						r.Skipped = p.noH2
						continue
					}
					s, err := measure(p, ch, sc, upPIDs, upPort)
					if err != nil {
						if interrupted.Load() {
							return errStopped
						}
						fmt.Fprintf(os.Stderr, "round %d %-8s %-26s failed: %v\n", round, p.Name, sc.Name, err)
						r.failedOnceReason = err.Error()
						if exited(ch) != nil {
							return err
						}
						continue
					}
					s.Round = round
					r.Rounds = append(r.Rounds, s)
					tlsCount := ""
					if s.LegateHandshakes != nil {
						tlsCount = fmt.Sprintf("  ssl.handshake %d session_reused %d", *s.LegateHandshakes, *s.LegateResumed)
					}
					fmt.Fprintf(os.Stderr, "round %d %-8s %-26s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  %5.1f CPU-µs/req  RSS %6d KiB  upstream conns %5d  errors %d%s\n",
						round, p.Name, sc.Name, s.RPS, s.P50ms, s.P99ms, s.CPUusPerReq, s.RSSKiB, s.UpstreamConns, s.Non2xx+s.SocketErrors, tlsCount)
				}
				stop(ch)
			}
		}
		if unpin {
			if err := setAffinity(upPIDs, serverCPU); err != nil {
				return err
			}
		}
	}

	// Medians, ratios, notes.
	for _, sc := range scenarios {
		for _, p := range proxies {
			r := results[p.Name+"/"+sc.Name]
			if r == nil {
				continue
			}
			rep.Results = append(rep.Results, r)
			if len(r.Rounds) == 0 {
				if r.Skipped == "" {
					r.Skipped = "failed: " + r.failedOnceReason
				}
				rep.Notes = append(rep.Notes, fmt.Sprintf("%s / %s not measured: %s", sc.Name, p.Name, firstLine(r.Skipped)))
				continue
			}
			var rps, p50, p99, cpu, rss, upc []float64
			for _, s := range r.Rounds {
				rps, p50, p99, cpu = append(rps, s.RPS), append(p50, s.P50ms), append(p99, s.P99ms), append(cpu, s.CPUusPerReq)
				rss, upc = append(rss, float64(s.RSSKiB)), append(upc, float64(s.UpstreamConns))
				r.Errors += s.Non2xx + s.SocketErrors
				if s.ClientCPU > 0.95 {
					rep.Notes = append(rep.Notes, fmt.Sprintf("%s / %s round %d: the load generator used %.0f%% of its CPU, so this figure may be limited by the client", sc.Name, p.Name, s.Round, 100*s.ClientCPU))
				}
				if s.Requests > 0 && float64(s.UpstreamRequests) < 0.98*float64(s.Requests) {
					rep.Notes = append(rep.Notes, fmt.Sprintf("%s / %s round %d: the upstream saw %d requests for %d completed by the client", sc.Name, p.Name, s.Round, s.UpstreamRequests, s.Requests))
				}
				if s.accessLogExpected && float64(s.AccessLogLines) < 0.98*float64(s.Requests) {
					rep.Notes = append(rep.Notes, fmt.Sprintf("%s / %s round %d: %d access-log lines for %d requests", sc.Name, p.Name, s.Round, s.AccessLogLines, s.Requests))
				}
				if s.LegateResumed != nil && *s.LegateResumed > 0 {
					rep.Notes = append(rep.Notes, fmt.Sprintf("%s / %s round %d: Legate resumed %d TLS sessions (of %d handshakes)", sc.Name, p.Name, s.Round, *s.LegateResumed, *s.LegateHandshakes))
				}
				if sc.handshakes() && s.LegateHandshakes != nil && float64(*s.LegateHandshakes) < 0.98*float64(s.Requests) {
					rep.Notes = append(rep.Notes, fmt.Sprintf("%s / %s round %d: Legate counted %d TLS handshakes for %d requests", sc.Name, p.Name, s.Round, *s.LegateHandshakes, s.Requests))
				}
			}
			r.RPS, r.P50ms, r.P99ms, r.CPUusPerReq = median(rps), median(p50), median(p99), median(cpu)
			r.RSSKiB, r.UpstreamConns = int64(median(rss)), int64(median(upc))
			if r.RPS > 0 {
				r.RPSSpread = (slices.Max(rps) - slices.Min(rps)) / r.RPS
			}
			if r.Errors > 0 {
				rep.Notes = append(rep.Notes, fmt.Sprintf("%s / %s: %d errors (non-2xx responses or socket errors) over %d rounds", sc.Name, p.Name, r.Errors, len(r.Rounds)))
			}
		}
		l := results["legate/"+sc.Name]
		for _, peer := range []string{"nginx", "haproxy"} {
			o := results[peer+"/"+sc.Name]
			if l == nil || o == nil || l.RPS == 0 || o.RPS == 0 || o.CPUusPerReq == 0 {
				continue
			}
			rep.Ratios = append(rep.Ratios, Ratio{Scenario: sc.Name, Peer: peer, RPS: l.RPS / o.RPS, CPUPerReq: l.CPUusPerReq / o.CPUusPerReq})
		}
	}
	for _, c := range rep.TLS {
		switch {
		case c.Error != "":
			rep.Notes = append(rep.Notes, fmt.Sprintf("TLS check of %s's %s listener: %s", c.Proxy, c.Listener, firstLine(c.Error)))
		case c.Resumed != nil && *c.Resumed:
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s's %s listener resumed an OpenSSL client's session: its handshake figure is not of full handshakes", c.Proxy, c.Listener))
		case c.OtherRefused != nil && !*c.OtherRefused:
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s's %s listener accepted a client of another TLS version", c.Proxy, c.Listener))
		}
	}
	rep.Seconds = time.Since(begin).Round(time.Second).Seconds()

	md := markdown(rep)
	fmt.Print(md)
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*outDir, "latest.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*outDir, "latest.md"), []byte(md), 0o644); err != nil {
		return err
	}
	keep = false
	fmt.Fprintf(os.Stderr, "benchrun: wrote %s and %s in %s\n", filepath.Join(*outDir, "latest.md"), filepath.Join(*outDir, "latest.json"), time.Since(begin).Round(time.Second))
	return nil
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
	fmt.Fprintf(&b, "- run took: %.0f s\n\n%s\n\n", rep.Seconds, rep.Method)

	res := map[string]*Result{}
	for _, r := range rep.Results {
		res[r.Proxy+"/"+r.Scenario] = r
	}
	ratio := map[string]Ratio{}
	for _, r := range rep.Ratios {
		ratio[r.Scenario+"/"+r.Peer] = r
	}
	cell := func(p, sc string, f func(*Result) string) string {
		r := res[p+"/"+sc]
		if r == nil || len(r.Rounds) == 0 {
			return "skipped"
		}
		return f(r)
	}
	rat := func(sc, peer string, f func(Ratio) float64) string {
		r, ok := ratio[sc+"/"+peer]
		if !ok {
			return "–"
		}
		return fmt.Sprintf("%.2f", f(r))
	}
	b.WriteString("## Summary\n\nRequests/s (higher is better) and proxy CPU-µs per request (lower is better), medians; ratios are Legate / peer.\n\n")
	b.WriteString("| scenario | legate req/s | nginx req/s | haproxy req/s | legate/nginx | legate/haproxy | legate CPU-µs/req | nginx CPU-µs/req | haproxy CPU-µs/req | legate/nginx | legate/haproxy |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, sc := range rep.Scenarios {
		rps := func(r *Result) string { return fmt.Sprintf("%.0f", r.RPS) }
		cpu := func(r *Result) string { return fmt.Sprintf("%.1f", r.CPUusPerReq) }
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", sc,
			cell("legate", sc, rps), cell("nginx", sc, rps), cell("haproxy", sc, rps),
			rat(sc, "nginx", func(r Ratio) float64 { return r.RPS }), rat(sc, "haproxy", func(r Ratio) float64 { return r.RPS }),
			cell("legate", sc, cpu), cell("nginx", sc, cpu), cell("haproxy", sc, cpu),
			rat(sc, "nginx", func(r Ratio) float64 { return r.CPUPerReq }), rat(sc, "haproxy", func(r Ratio) float64 { return r.CPUPerReq }))
	}

	b.WriteString("\n## Detail\n\nSpread is (max − min) / median of requests/s over the rounds. Upstream conns: connections the upstream accepted from the proxy during one run (keep-alive keeps it near the pool size). Errors: non-2xx responses + socket errors, summed over the rounds.\n\n")
	b.WriteString("| scenario | proxy | req/s | spread | p50 ms | p99 ms | CPU-µs/req | RSS after load KiB | upstream conns | errors |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rep.Results {
		if len(r.Rounds) == 0 {
			fmt.Fprintf(&b, "| %s | %s | skipped: %s | | | | | | | |\n", r.Scenario, r.Proxy, strings.ReplaceAll(firstLine(r.Skipped), "|", "/"))
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.1f%% | %.3f | %.3f | %.1f | %d | %d | %d |\n", r.Scenario, r.Proxy, r.RPS, 100*r.RPSSpread, r.P50ms, r.P99ms, r.CPUusPerReq, r.RSSKiB, r.UpstreamConns, r.Errors)
	}

	var hsScs []string
	for _, sc := range allScenarios {
		if sc.handshakes() && slices.Contains(rep.Scenarios, sc.Name) {
			hsScs = append(hsScs, sc.Name)
		}
	}
	if len(hsScs) > 0 {
		b.WriteString("\n## TLS handshakes\n\nOne full handshake per request (wrk, `Connection: close`, the version only, no session resumption at any proxy): handshakes/s is requests/s, CPU-µs per handshake the proxy's CPU per request (handshake, request, proxying, close). " +
			"Legate's column is its listener's `ssl.handshake` and `ssl.session_reused` over the rounds against the requests wrk completed.\n\n")
		b.WriteString("| scenario | proxy | handshakes/s | legate / peer | CPU-µs/handshake | legate / peer | p50 ms | p99 ms | Legate ssl.handshake / session_reused / requests |\n|---|---|--:|--:|--:|--:|--:|--:|---|\n")
		for _, sc := range hsScs {
			for _, pn := range rep.Proxies {
				r := res[pn+"/"+sc]
				if r == nil || len(r.Rounds) == 0 {
					fmt.Fprintf(&b, "| %s | %s | skipped | | | | | | |\n", sc, pn)
					continue
				}
				rr, rc, counted := "", "", ""
				if pn != "legate" {
					rr, rc = rat(sc, pn, func(r Ratio) float64 { return r.RPS }), rat(sc, pn, func(r Ratio) float64 { return r.CPUPerReq })
				} else {
					var hs, re, n int64
					for _, s := range r.Rounds {
						if s.LegateHandshakes != nil {
							hs, re = hs+*s.LegateHandshakes, re+*s.LegateResumed
						}
						n += s.Requests
					}
					counted = fmt.Sprintf("%d / %d / %d", hs, re, n)
				}
				fmt.Fprintf(&b, "| %s | %s | %.0f | %s | %.1f | %s | %.3f | %.3f | %s |\n", sc, pn, r.RPS, rr, r.CPUusPerReq, rc, r.P50ms, r.P99ms, counted)
			}
		}
	}
	if len(rep.TLS) > 0 {
		b.WriteString("\n## What an OpenSSL client gets (openssl s_client, wrk's library and defaults)\n\n" +
			"One request with `Connection: close`, the session kept (`-sess_out`); on the handshake listeners a second connection offers it (`-sess_in`): it must not resume. Tickets: NewSessionTicket messages received after the full handshake. Other version refused: a Go client limited to TLS 1.2 (on the 1.3 listener) or 1.3 (on the 1.2 one).\n\n")
		b.WriteString("| proxy | listener | version | cipher | tickets | resumed | other version refused |\n|---|---|---|---|--:|---|---|\n")
		for _, c := range rep.TLS {
			if c.Error != "" && c.Version == "" {
				fmt.Fprintf(&b, "| %s | %s | failed: %s | | | | |\n", c.Proxy, c.Listener, strings.ReplaceAll(firstLine(c.Error), "|", "/"))
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %d | %s | %s |\n", c.Proxy, c.Listener, c.Version, c.Cipher, c.Tickets, yesNo(c.Resumed), yesNo(c.OtherRefused))
		}
	}
	if st := rep.Startup; st != nil {
		b.WriteString("\n## Start-up memory\n\n")
		if st.Error != "" {
			fmt.Fprintf(&b, "Not measured: %s\n", strings.ReplaceAll(firstLine(st.Error), "|", "/"))
		} else {
			met := "not met"
			if st.Met {
				met = "met"
			}
			fmt.Fprintf(&b, "`legate proxy -c <quickstart config>` (internal/quickstart's YAML on free 127.0.0.1 ports, its backends replaced by the upstream), no other flag, unpinned; VmRSS when the admin's `/ready` first answers 200, median of %d starts.\n\n", len(st.Rounds))
			b.WriteString("| RSS at ready | of which anonymous / file-backed | peak RSS (VmHWM) | time to ready | workers (/server_info concurrency) | goal |\n|--:|--:|--:|--:|--:|---|\n")
			fmt.Fprintf(&b, "| %.1f MiB (%d KiB) | %.1f / %.1f MiB | %.1f MiB | %.0f ms | %d | < %d MiB: %s |\n", float64(st.RSSKiB)/1024, st.RSSKiB,
				float64(st.AnonKiB)/1024, float64(st.FileKiB)/1024, float64(st.HWMKiB)/1024, st.ReadyMS, st.Workers, st.GoalKiB/1024, met)
		}
	}

	if len(rep.Idle) > 0 {
		b.WriteString("\n## Memory per idle keep-alive connection\n\n| proxy | connections | RSS before KiB | RSS with connections KiB | KiB per connection |\n|---|--:|--:|--:|--:|\n")
		for _, r := range rep.Idle {
			if r.Error != "" {
				fmt.Fprintf(&b, "| %s | %d | failed: %s | | |\n", r.Proxy, r.Conns, strings.ReplaceAll(firstLine(r.Error), "|", "/"))
				continue
			}
			fmt.Fprintf(&b, "| %s | %d | %d | %d | %.2f |\n", r.Proxy, r.Conns, r.RSSBefore, r.RSSAfter, r.KiBPerConn)
		}
	}
	b.WriteString("\n## Notes\n\n")
	if len(rep.Notes) == 0 {
		b.WriteString("- every proxy answered every request with a 200 (no non-2xx responses, no socket errors); nothing skipped.\n")
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	return b.String()
}

// setAffinity lets the processes (all their threads) run on cpus
// ("0,1"), through taskset.
func setAffinity(ps []stat, cpus string) error {
	for _, p := range ps {
		c := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(p.pid))
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if _, _, err := runTool("taskset", c); err != nil {
			return fmt.Errorf("affinity of the upstream's PID %d: %w", p.pid, err)
		}
	}
	return nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func yesNo(b *bool) string {
	switch {
	case b == nil:
		return "–"
	case *b:
		return "yes"
	}
	return "no"
}

func scenarioNames() []string {
	var n []string
	for _, sc := range allScenarios {
		n = append(n, sc.Name)
	}
	return n
}

// quickstartConfig is the quickstart's bootstrap (internal/quickstart, what
// `legate quickstart` serves) with its addresses moved to free ports on
// 127.0.0.1 and its two demo backends replaced by the upstream (which
// answers its health checks' /healthz with a 200); changes says what
// changed. Each replaced text must occur once, so that a change of the
// quickstart's file stops the measurement rather than skewing it.
func quickstartConfig(listen, admin, upstream int) (cfg string, changes []string, err error) {
	cfg = quickstart.Config
	for _, r := range [][2]string{
		{"socket_address: { address: 127.0.0.1, port_value: 9901 }", fmt.Sprintf("socket_address: { address: 127.0.0.1, port_value: %d }", admin)},
		{"socket_address: { address: 0.0.0.0, port_value: 10000 }", fmt.Sprintf("socket_address: { address: 127.0.0.1, port_value: %d }", listen)},
		{"port_value: 18081", fmt.Sprintf("port_value: %d", upstream)},
		{"port_value: 18082", fmt.Sprintf("port_value: %d", upstream)},
	} {
		if n := strings.Count(cfg, r[0]); n != 1 {
			return "", nil, fmt.Errorf("the quickstart's config has %q %d times, not once: update quickstartConfig in bench/cmd/benchrun", r[0], n)
		}
		cfg = strings.Replace(cfg, r[0], r[1], 1)
		changes = append(changes, r[0]+" → "+r[1])
	}
	if strings.Contains(cfg, "0.0.0.0") {
		return "", nil, fmt.Errorf("the quickstart's config still listens on 0.0.0.0 after the changes: update quickstartConfig in bench/cmd/benchrun")
	}
	return cfg, changes, nil
}

// startup measures Legate's start-up memory: once per round, `legate
// proxy -c <quickstart config>` with no other flag, unpinned, and its
// VmRSS and VmHWM when the admin's /ready first answers 200.
func startup(dir string, listen, admin, upstream int) *Startup {
	res := &Startup{GoalKiB: startupGoalKiB}
	cfg, changes, err := quickstartConfig(listen, admin, upstream)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.Replaced = changes
	path := filepath.Join(dir, "quickstart.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		res.Error = err.Error()
		return res
	}
	res.Command = *legateBin + " proxy -c " + path
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var rss, hwm, anon, file, ready []float64
	for round := 1; round <= *rounds && !interrupted.Load(); round++ {
		t0 := time.Now()
		ch, err := launch("legate (quickstart)", command("", *legateBin, "proxy", "-c", path), filepath.Join(dir, "quickstart.out"))
		if err != nil {
			res.Error = err.Error()
			return res
		}
		sample, err := func() (StartupSample, error) {
			defer stop(ch)
			deadline := t0.Add(15 * time.Second)
			for {
				if err := exited(ch); err != nil {
					return StartupSample{}, err
				}
				resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", admin))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						break
					}
				}
				if time.Now().After(deadline) {
					return StartupSample{}, fmt.Errorf("the admin's /ready did not answer 200 within 15 s")
				}
				time.Sleep(5 * time.Millisecond)
			}
			s := StartupSample{Round: round, ReadyMS: float64(time.Since(t0).Microseconds()) / 1000}
			pid := ch.cmd.Process.Pid
			s.RSSKiB, s.HWMKiB = procStatusKiB(pid, "VmRSS"), procStatusKiB(pid, "VmHWM")
			s.AnonKiB, s.FileKiB = procStatusKiB(pid, "RssAnon"), procStatusKiB(pid, "RssFile")
			resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/server_info", admin))
			if err != nil {
				return s, err
			}
			defer resp.Body.Close()
			var info struct {
				Options struct {
					Concurrency int `json:"concurrency"`
				} `json:"command_line_options"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
				return s, fmt.Errorf("/server_info: %w", err)
			}
			s.Workers = info.Options.Concurrency
			return s, nil
		}()
		if err != nil {
			res.Error = err.Error()
			return res
		}
		res.Rounds = append(res.Rounds, sample)
		rss, hwm, ready = append(rss, float64(sample.RSSKiB)), append(hwm, float64(sample.HWMKiB)), append(ready, sample.ReadyMS)
		anon, file = append(anon, float64(sample.AnonKiB)), append(file, float64(sample.FileKiB))
		res.Workers = sample.Workers
	}
	res.RSSKiB, res.HWMKiB, res.ReadyMS = int64(median(rss)), int64(median(hwm)), median(ready)
	res.AnonKiB, res.FileKiB = int64(median(anon)), int64(median(file))
	res.Met = res.RSSKiB > 0 && res.RSSKiB < res.GoalKiB
	return res
}

// procStatusKiB reads a "kB" field of /proc/PID/status (VmRSS, VmHWM).
func procStatusKiB(pid int, field string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
