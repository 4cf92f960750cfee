// Command filtercost measures what HTTP filters cost Legate per request.
//
// It runs the legate binary with the same listener and route
// configuration in variants that differ only in their http_filters:
//
//	router       router only (the filter manager with no filters)
//	cors         + envoy.filters.http.cors, a CorsPolicy on the virtual host;
//	             the requests are simple (non-preflight) GETs with Origin
//	rbac         + envoy.filters.http.rbac, 5 ALLOW policies of header and
//	             path permissions; the requests match only the last one
//	jwt_authn    + envoy.filters.http.jwt_authn with a local (inline) RS256
//	             JWKS; every request carries the same valid token (its
//	             signature check is kept for the key set, its claims are
//	             checked on every request)
//	jwt_authn_cached      the same with jwt_cache_config
//	jwt_authn_new_tokens  as jwt_authn, each request with another of 256
//	             tokens (a wrk script): every signature is verified
//	router-64k   router only, a 64 KiB text/plain response
//	compressor   + envoy.filters.http.compressor (gzip) on that response
//
// and drives each with wrk (HTTP/1.1 keep-alive, 1 thread, 64 connections
// by default) as bench/cmd/benchrun does for its h1-keepalive-64 scenario:
// the same upstream (nginx, one worker, keep-alive), the same pinning
// (taskset: wrk on the first allowed CPU, Legate and the upstream on the
// second), Legate with --concurrency 1 and GOMAXPROCS=1, a fresh process
// per variant and round, the variants alternating within each round, and
// medians over the rounds. Every variant gets the same request headers
// (Origin, Authorization, x-tenant, Accept-Encoding), so that a difference
// is the filter's work and not the parsing of headers only one variant
// sends.
//
// Per variant it reports requests/s, the proxy's CPU-µs per request
// (utime+stime from /proc/PID/stat over the run, divided by the requests
// wrk completed) and the difference to the router-only variant. It also
// checks that the compressor streams: an upstream (in this process) sends
// the first 48 KiB of a 64 KiB body and holds the rest until the client
// has received compressed bytes through Legate (bounded waits).
//
// With -baseline, the router-only variant also runs on another legate
// binary (make bench-filters builds the commit of bench/results/latest.json,
// from before the HTTP filter chain existed): the in-run comparison for
// "the filter manager with no filters adds nothing measurable". With
// -micro (the default) it also runs the filters' in-process Go benchmarks
// (BenchmarkCORS, BenchmarkRBAC, BenchmarkJWTAuthn) and reports them.
//
// benchrun is a main package, so its process and /proc helpers (launch,
// stop by PID, readStat, tree, cpuTicks, freePorts) are repeated here,
// trimmed to what this program uses.
//
// It writes bench/results/filtercost.md. `make bench-filters` builds
// bin/legate and bin/filtercost and runs it; nginx and wrk must be
// installed (bench/run.sh installs them for `make bench`). Everything
// listens on 127.0.0.1 on free ports from 18100 up; every process it
// starts is stopped by PID, also on SIGINT/SIGTERM.
package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
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
	"syscall"
	"text/template"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

var (
	duration  = flag.Duration("duration", 10*time.Second, "duration of each measurement")
	rounds    = flag.Int("rounds", 2, "rounds; medians over them are reported")
	conns     = flag.Int("conns", 64, "wrk keep-alive connections")
	legateBin = flag.String("legate", "bin/legate", "legate binary")
	outFile   = flag.String("out", "bench/results/filtercost.md", "report file")
	pin       = flag.Bool("pin", true, "pin wrk to one CPU and Legate and the upstream to another (taskset)")
	only      = flag.String("variants", "", "comma-separated variants to run (default: all; router and router-64k are always run)")
	baseline  = flag.String("baseline", "", "another legate binary (e.g. one built from before the HTTP filter chain existed) to run the router-only variant with too")
	baseName  = flag.String("baseline-name", "baseline", "what -baseline is, for the report (e.g. a commit)")
	micro     = flag.Bool("micro", true, "also run the filters' in-process Go benchmarks (BenchmarkCORS, BenchmarkRBAC, BenchmarkJWTAuthn; needs go and the source tree)")
	note      = flag.String("note", "", "a line for the report's Run section (e.g. how busy the machine was)")
	latest    = flag.String("latest", "bench/results/latest.json", "benchrun's report, for the h1-keepalive-64 figure the router-only variant is compared with")
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat.
const clockTicks = 100

// smallBody is the upstream's response for the filter variants: 100 bytes,
// as benchrun's upstream.
var smallBody = strings.Repeat("x", 99) + "\n"

// bigSize is the size of the response the compressor variant compresses.
const bigSize = 64 << 10

// Paths the variants request.
const (
	smallPath  = "/api/v5/items"
	bigPath    = "/big/body.txt"
	streamPath = "/stream"
	origin     = "https://app.example"
	tenant     = "tenant-5"
)

// variant is one configuration of the http_filters.
type variant struct {
	Name string
	// Filters is YAML for the http_filters entries before the router.
	Filters string
	// VHost is YAML added to the virtual host (typed_per_filter_config).
	VHost string
	// Path is the path requested; Base the variant it is compared with
	// besides router.
	Path, Base string
	What       string
	// Bin is the legate binary, when not -legate.
	Bin string
	// Tokens makes every request carry another of the fixture's tokens
	// (a wrk script), instead of the same one.
	Tokens bool
}

func variants(jwks string) []variant {
	const rbacPolicy = `
                  policy-%d:
                    permissions:
                    - and_rules:
                        rules:
                        - header: {name: x-tenant, string_match: {exact: tenant-%d}}
                        - url_path: {path: {prefix: /api/v%d/}}
                    principals: [{any: true}]`
	var pols strings.Builder
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&pols, rbacPolicy, i, i, i)
	}
	// jwtFilter is the jwt_authn filter with the local JWKS, extra added
	// to its provider.
	jwtFilter := func(extra string) string {
		if extra != "" {
			extra = "\n                  " + extra
		}
		return `
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                local:
                  issuer: https://issuer.example
                  audiences: [api.example]
                  local_jwks: {inline_string: '` + jwks + `'}` + extra + `
              rules:
              - match: {prefix: /}
                requires: {provider_name: local}`
	}
	return []variant{
		{Name: "router", Path: smallPath, What: "router only: the filter manager with no filters"},
		{Name: "cors", Path: smallPath, Base: "router", What: "+ cors: CorsPolicy on the virtual host, a simple GET with a matching Origin",
			Filters: `
          - name: envoy.filters.http.cors
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}`,
			VHost: `
              typed_per_filter_config:
                envoy.filters.http.cors:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                  allow_origin_string_match: [{exact: "https://other.example"}, {suffix: ".internal.example"}, {exact: "` + origin + `"}]
                  allow_methods: "GET, POST, PUT"
                  allow_headers: "authorization, content-type, x-tenant"
                  expose_headers: "x-request-id"
                  max_age: "600"
                  allow_credentials: true`},
		{Name: "rbac", Path: smallPath, Base: "router", What: "+ rbac: 5 ALLOW policies (header + path permissions); the request matches the last",
			Filters: `
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:` + pols.String()},
		{Name: "jwt_authn", Path: smallPath, Base: "router", What: "+ jwt_authn: local JWKS (RS256, 2048-bit); the same valid token on every request (its signature check is kept for the key set; its claims are checked on every request)",
			Filters: jwtFilter("")},
		{Name: "jwt_authn_cached", Path: smallPath, Base: "router", What: "+ jwt_authn as above with jwt_cache_config (verified tokens kept, as Envoy's JWT cache)",
			Filters: jwtFilter("jwt_cache_config: {}")},
		{Name: "jwt_authn_new_tokens", Path: smallPath, Base: "router", Tokens: true, What: fmt.Sprintf("+ jwt_authn as jwt_authn, each request with another of %d tokens (wrk script): every signature is verified", distinctTokens),
			Filters: jwtFilter("")},
		{Name: "router-64k", Path: bigPath, What: "router only, 64 KiB text/plain response"},
		{Name: "compressor", Path: bigPath, Base: "router-64k", What: "+ compressor (gzip, defaults) on the 64 KiB response",
			Filters: `
          - name: envoy.filters.http.compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              compressor_library:
                name: gzip
                typed_config: {"@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip}`},
	}
}

// legateConf is benchrun's Legate configuration (codec AUTO, no request
// IDs, a STATIC cluster) with the variant's filters, plus a route to the
// streaming upstream of the compression check (in every variant, so that
// the route tables are the same).
const legateConf = `static_resources:
  listeners:
  - name: bench
    address: {socket_address: {address: 127.0.0.1, port_value: {{.Port}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: AUTO
          generate_request_id: false
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
{{- .V.VHost}}
              routes:
              - match: {prefix: ` + streamPath + `}
                route: {cluster: stream}
              - match: {prefix: /}
                route: {cluster: upstream}
          http_filters:
{{- .V.Filters}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Upstream}}}}}
  - name: stream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: stream
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Stream}}}}}
`

// upstreamConf is benchrun's upstream (one nginx worker, long keep-alive)
// with the 64 KiB file under /big/.
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
    location /big/ { alias {{.Dir}}/www/; default_type text/plain; }
    location / { default_type text/plain; return 200 "{{.Body}}"; }
  }
}
`

func main() {
	flag.Parse()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "filtercost: %v: stopping everything it started\n", s)
		stopAll()
		os.Exit(130)
	}()
	err := run()
	stopAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "filtercost:", err)
		os.Exit(1)
	}
}

// ---------------------------------------------------------------------
// Processes, after benchrun's: tracked, stopped by PID.

type child struct {
	name  string
	cmd   *exec.Cmd
	done  chan struct{}
	out   string
	start uint64 // starttime from /proc/PID/stat, against PID reuse
}

var (
	mu       sync.Mutex
	children = map[int]*child{}
	stopping bool
)

var clientCPU, serverCPU string

func command(cpu, name string, args ...string) *exec.Cmd {
	var c *exec.Cmd
	if cpu != "" {
		c = exec.Command("taskset", append([]string{"-c", cpu, name}, args...)...)
	} else {
		c = exec.Command(name, args...)
	}
	// Own process group (^C reaches filtercost, which stops everything in
	// order) and SIGKILL if filtercost dies without cleaning up.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return c
}

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
		return nil, errors.New("stopping")
	}
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	ch := &child{name: name, cmd: c, done: make(chan struct{}), out: out}
	if st, ok := readStat(c.Process.Pid); ok {
		ch.start = st.start
	}
	children[c.Process.Pid] = ch
	go func() { _ = c.Wait(); close(ch.done) }()
	return ch, nil
}

// stop ends ch (SIGTERM, SIGKILL after 5 s) and the processes it forked
// (nginx's worker), by PID.
func stop(ch *child) {
	if ch == nil {
		return
	}
	pid := ch.cmd.Process.Pid
	desc := tree(pid)
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
		if d.pid == pid {
			continue
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			st, ok := readStat(d.pid)
			if !ok || st.start != d.start {
				break
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

func exited(ch *child) error {
	select {
	case <-ch.done:
		b, _ := os.ReadFile(ch.out)
		if len(b) > 2000 {
			b = b[len(b)-2000:]
		}
		return fmt.Errorf("%s exited: %v\n%s", ch.name, ch.cmd.ProcessState, b)
	default:
		return nil
	}
}

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

// tree returns root and its descendants.
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
	for i := 0; i < len(out); i++ {
		out = append(out, kids[out[i].pid]...)
	}
	return out
}

// cpuTicks returns the user and the total (user+system) CPU ticks of ps.
func cpuTicks(ps []stat) (user, total int64) {
	for _, p := range ps {
		if st, ok := readStat(p.pid); ok && st.start == p.start {
			user += st.utime
			total += st.utime + st.stime
		}
	}
	return user, total
}

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

func render(path, tmpl string, data any) error {
	var b bytes.Buffer
	if err := template.Must(template.New("").Parse(tmpl)).Execute(&b, data); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// ---------------------------------------------------------------------
// The token and the bodies.

// distinctTokens is how many different tokens the jwt_authn_new_tokens
// variant cycles through: more than the signature memo keeps (100), so
// that every request verifies a signature.
const distinctTokens = 256

// jwtFixture makes an RS256 key, its JWKS and distinctTokens tokens valid
// for a day (they differ in jti); the first is the one every request
// carries.
func jwtFixture() (jwks string, tokens []string, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", nil, err
	}
	pub := jose.JSONWebKey{Key: &key.PublicKey, KeyID: "bench", Algorithm: "RS256", Use: "sig"}
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	if err != nil {
		return "", nil, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "bench"))
	if err != nil {
		return "", nil, err
	}
	now := time.Now().Unix()
	for i := range distinctTokens {
		claims, _ := json.Marshal(map[string]any{"iss": "https://issuer.example", "aud": "api.example", "sub": "user-1",
			"iat": now, "exp": now + 86400, "scope": "read write", "jti": fmt.Sprintf("t%d", i)})
		obj, err := signer.Sign(claims)
		if err != nil {
			return "", nil, err
		}
		t, err := obj.CompactSerialize()
		if err != nil {
			return "", nil, err
		}
		tokens = append(tokens, t)
	}
	return string(b), tokens, nil
}

// tokenScript is a wrk script that sends the tokens in turn.
func tokenScript(path string, tokens []string) error {
	var b strings.Builder
	b.WriteString("local tokens = {\n")
	for _, t := range tokens {
		fmt.Fprintf(&b, "  %q,\n", "Bearer "+t)
	}
	b.WriteString("}\nlocal i = 0\nrequest = function()\n  i = i %% #tokens + 1\n  wrk.headers[\"Authorization\"] = tokens[i]\n  return wrk.format()\nend\n")
	return os.WriteFile(path, []byte(strings.ReplaceAll(b.String(), "%%", "%")), 0o644)
}

// bigBody is 64 KiB of JSON-like lines (compresses about 5:1 with gzip).
func bigBody() []byte {
	r := mrand.New(mrand.NewPCG(1, 2))
	var b bytes.Buffer
	for i := 0; b.Len() < bigSize; i++ {
		fmt.Fprintf(&b, `{"id": %d, "name": "item-%d", "price": %d.%02d, "tags": ["proxy", "envoy", "t%d"]}`+"\n",
			i, r.IntN(100000), r.IntN(1000), r.IntN(100), r.IntN(50))
	}
	return b.Bytes()[:bigSize]
}

// requestHeaders are sent by every variant (see the package comment).
func requestHeaders(token string) [][2]string {
	return [][2]string{
		{"Origin", origin},
		{"Authorization", "Bearer " + token},
		{"x-tenant", tenant},
		{"Accept-Encoding", "gzip"},
	}
}

// ---------------------------------------------------------------------
// Measurement

type sample struct {
	rps, cpuUS float64
	// userUS is the user-space part of cpuUS: a filter's own work. The
	// system part (the same system calls in every variant) carries most
	// of the noise of a shared VM.
	userUS    float64
	requests  int64
	errors    int64
	clientCPU float64
}

var (
	reWrkReqs = regexp.MustCompile(`(\d+) requests in`)
	reWrkRPS  = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reWrkErr  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reWrkSock = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// measure runs wrk against the proxy ch listens for on port.
// script, if not empty, is a wrk script (tokenScript).
func measure(ch *child, port int, path string, hdrs [][2]string, script string) (sample, error) {
	var s sample
	ps := tree(ch.cmd.Process.Pid)
	secs := max(1, int(duration.Round(time.Second).Seconds()))
	args := []string{"-t", "1", "-c", strconv.Itoa(*conns), "-d", strconv.Itoa(secs) + "s", "--timeout", "5s"}
	if script != "" {
		args = append(args, "-s", script)
	}
	for _, h := range hdrs {
		args = append(args, "-H", h[0]+": "+h[1])
	}
	args = append(args, fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	c := command(clientCPU, "wrk", args...)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	u0, t0 := cpuTicks(ps)
	w, err := launch("wrk", c, "")
	if err != nil {
		return s, err
	}
	<-w.done
	u1, t1 := cpuTicks(ps)
	mu.Lock()
	delete(children, c.Process.Pid)
	mu.Unlock()
	if !c.ProcessState.Success() {
		return s, fmt.Errorf("wrk: %v\n%s", c.ProcessState, out.Bytes())
	}
	if err := exited(ch); err != nil {
		return s, err
	}
	o := out.String()
	m, x := reWrkReqs.FindStringSubmatch(o), reWrkRPS.FindStringSubmatch(o)
	if m == nil || x == nil {
		return s, fmt.Errorf("wrk output not understood:\n%s", o)
	}
	s.requests, _ = strconv.ParseInt(m[1], 10, 64)
	s.rps, _ = strconv.ParseFloat(x[1], 64)
	if e := reWrkErr.FindStringSubmatch(o); e != nil {
		s.errors, _ = strconv.ParseInt(e[1], 10, 64)
	}
	if e := reWrkSock.FindStringSubmatch(o); e != nil {
		for _, v := range e[1:] {
			n, _ := strconv.ParseInt(v, 10, 64)
			s.errors += n
		}
	}
	s.clientCPU = (c.ProcessState.UserTime() + c.ProcessState.SystemTime()).Seconds() / float64(secs)
	if s.requests > 0 {
		s.cpuUS = float64(t1-t0) * (1e6 / clockTicks) / float64(s.requests)
		s.userUS = float64(u1-u0) * (1e6 / clockTicks) / float64(s.requests)
	}
	return s, nil
}

// get makes one request through the proxy with hdrs, minus those named in
// drop, and returns the status, the headers and the (raw) body.
func get(port int, path string, hdrs [][2]string, drop ...string) (int, http.Header, []byte, error) {
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
	for _, h := range hdrs {
		if !slices.Contains(drop, h[0]) {
			req.Header.Set(h[0], h[1])
		}
	}
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// verify checks, before the load, that the variant's filter does its work
// on the benchmark's request (and refuses one without what it needs).
func verify(v variant, port int, hdrs [][2]string, big []byte) error {
	code, h, b, err := get(port, v.Path, hdrs)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("status %d, want 200 (body %q)", code, b)
	}
	switch v.Name {
	case "cors":
		if h.Get("Access-Control-Allow-Origin") != origin {
			return fmt.Errorf("access-control-allow-origin %q, want %q", h.Get("Access-Control-Allow-Origin"), origin)
		}
	case "rbac":
		if code, _, _, err := get(port, v.Path, hdrs, "x-tenant"); err != nil || code != 403 {
			return fmt.Errorf("without x-tenant: status %d (%v), want 403", code, err)
		}
	case "jwt_authn", "jwt_authn_cached", "jwt_authn_new_tokens":
		if code, _, _, err := get(port, v.Path, hdrs, "Authorization"); err != nil || code != 401 {
			return fmt.Errorf("without a token: status %d (%v), want 401", code, err)
		}
	case "compressor":
		if h.Get("Content-Encoding") != "gzip" {
			return fmt.Errorf("content-encoding %q, want gzip", h.Get("Content-Encoding"))
		}
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return err
		}
		plain, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(plain, big) {
			return fmt.Errorf("the gzip body does not decompress to the upstream's (%d bytes, %v)", len(plain), err)
		}
		compressedSize = len(b)
	case "router-64k":
		if !bytes.Equal(b, big) {
			return fmt.Errorf("got %d bytes, want the upstream's %d", len(b), len(big))
		}
	default:
		if string(b) != smallBody {
			return fmt.Errorf("got %q, want the upstream's body", b)
		}
	}
	return nil
}

var compressedSize int

// ---------------------------------------------------------------------
// The streaming check

// streamUpstream sends the first part of its body, then holds the rest
// until release is closed (or 5 s pass).
type streamUpstream struct {
	body    []byte
	first   int
	mu      sync.Mutex
	release chan struct{}
	heldOut bool // the hold timed out
}

func (u *streamUpstream) arm() {
	u.mu.Lock()
	u.release, u.heldOut = make(chan struct{}), false
	u.mu.Unlock()
}

func (u *streamUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	release := u.release
	u.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(u.body)))
	_, _ = w.Write(u.body[:u.first])
	w.(http.Flusher).Flush()
	select {
	case <-release:
	case <-time.After(5 * time.Second):
		u.mu.Lock()
		u.heldOut = true
		u.mu.Unlock()
	}
	_, _ = w.Write(u.body[u.first:])
}

// streamResult is the outcome of the streaming check.
type streamResult struct {
	Streams bool
	Detail  string
}

// checkStreaming requests the held body through the compressor variant
// and reports whether compressed bytes arrived while the upstream still
// held the last part of the body.
func checkStreaming(port int, u *streamUpstream) streamResult {
	u.arm()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s", port, streamPath), nil)
	req.Header.Set("Accept-Encoding", "gzip")
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := (&http.Client{Transport: tr}).Do(req.WithContext(ctx))
	if err != nil {
		close(u.release)
		return streamResult{Detail: "request failed: " + err.Error()}
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" {
		close(u.release)
		return streamResult{Detail: fmt.Sprintf("status %d, content-encoding %q: not compressed", resp.StatusCode, resp.Header.Get("Content-Encoding"))}
	}
	// Read the first compressed bytes; the upstream releases the rest
	// when we signal, or after 5 s on its own.
	first := make([]byte, 1)
	got := make(chan error, 1)
	go func() { _, err := io.ReadFull(resp.Body, first); got <- err }()
	var firstErr error
	late := false
	select {
	case firstErr = <-got:
	case <-time.After(6 * time.Second):
		late = true
	}
	u.mu.Lock()
	held := !u.heldOut
	u.mu.Unlock()
	close(u.release)
	if late {
		firstErr = <-got // the request's context bounds this
	}
	if firstErr != nil {
		return streamResult{Detail: "reading the first body byte: " + firstErr.Error()}
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		return streamResult{Detail: "reading the rest: " + err.Error()}
	}
	zr, err := gzip.NewReader(io.MultiReader(bytes.NewReader(first), bytes.NewReader(rest)))
	if err != nil {
		return streamResult{Detail: "not gzip: " + err.Error()}
	}
	plain, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(plain, u.body) {
		return streamResult{Detail: fmt.Sprintf("the body does not decompress to the upstream's (%d bytes, %v)", len(plain), err)}
	}
	if late || !held {
		return streamResult{Detail: "the first compressed byte arrived only after the upstream had sent the whole body"}
	}
	return streamResult{Streams: true, Detail: fmt.Sprintf("the first compressed bytes reached the client while the upstream held the last %d of %d bytes; the whole body (%d gzip bytes) decompresses to the upstream's",
		len(u.body)-u.first, len(u.body), 1+len(rest))}
}

// ---------------------------------------------------------------------

type result struct {
	v       variant
	samples []sample
}

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

func (r *result) med(f func(sample) float64) float64 {
	var v []float64
	for _, s := range r.samples {
		v = append(v, f(s))
	}
	return median(v)
}

// spread is (max-min) of the CPU-µs per request over the rounds.
func (r *result) spread() float64 {
	if len(r.samples) < 2 {
		return 0
	}
	lo, hi := r.samples[0].cpuUS, r.samples[0].cpuUS
	for _, s := range r.samples {
		lo, hi = min(lo, s.cpuUS), max(hi, s.cpuUS)
	}
	return hi - lo
}

// paired is the per-round difference of r's figure f to base's (the
// variants alternate within a round, so a round's pair ran minutes
// apart at most, under the same machine load): its median and its range.
func paired(r, base *result, f func(sample) float64) (med, lo, hi float64) {
	var d []float64
	for i := range min(len(r.samples), len(base.samples)) {
		d = append(d, f(r.samples[i])-f(base.samples[i]))
	}
	if len(d) == 0 {
		return 0, 0, 0
	}
	return median(d), slices.Min(d), slices.Max(d)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func version(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if l == "" && err != nil {
		return "unavailable: " + err.Error()
	}
	return l
}

// latestKeepalive64 is Legate's h1-keepalive-64 CPU-µs per request in
// benchrun's last report.
func latestKeepalive64() (cpu, rps float64, date string, ok bool) {
	b, err := os.ReadFile(*latest)
	if err != nil {
		return 0, 0, "", false
	}
	var rep struct {
		Date    string `json:"date"`
		Results []struct {
			Proxy, Scenario string
			RPS             float64 `json:"requests_per_second"`
			CPU             float64 `json:"proxy_cpu_us_per_request"`
		} `json:"results"`
	}
	if json.Unmarshal(b, &rep) != nil {
		return 0, 0, "", false
	}
	for _, r := range rep.Results {
		if r.Proxy == "legate" && r.Scenario == "h1-keepalive-64" {
			return r.CPU, r.RPS, rep.Date, true
		}
	}
	return 0, 0, "", false
}

func run() error {
	begin := time.Now()
	for _, tool := range []string{"nginx", "wrk", *legateBin} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s: %w (install nginx and wrk: `apt-get install nginx wrk`, or run `make bench` once; `make build` builds bin/legate)", tool, err)
		}
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	pinning := "none (taskset missing, fewer than 2 allowed CPUs, or -pin=false)"
	if *pin {
		if _, err := exec.LookPath("taskset"); err == nil {
			if cpus := allowedCPUs(); len(cpus) >= 2 {
				clientCPU, serverCPU = strconv.Itoa(cpus[0]), strconv.Itoa(cpus[1])
				pinning = fmt.Sprintf("taskset: wrk on CPU %s; Legate and the upstream on CPU %s", clientCPU, serverCPU)
			}
		}
	}
	loadStart := loadavg()

	jwks, tokens, err := jwtFixture()
	if err != nil {
		return fmt.Errorf("JWT fixture: %w", err)
	}
	hdrs := requestHeaders(tokens[0])
	all := variants(jwks)
	if *only != "" {
		want := append(strings.Split(*only, ","), "router", "router-64k")
		all = slices.DeleteFunc(all, func(v variant) bool { return !slices.Contains(want, v.Name) })
	}

	dir, err := os.MkdirTemp("", "legate-filtercost-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	scriptPath := filepath.Join(dir, "tokens.lua")
	if err := tokenScript(scriptPath, tokens); err != nil {
		return err
	}
	// nginx's worker runs as nobody: it must read the file.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	big := bigBody()
	if err := os.MkdirAll(filepath.Join(dir, "www"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "www", "body.txt"), big, 0o644); err != nil {
		return err
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	upPort, proxyPort := ports[0], ports[1]

	// The streaming upstream, in this process: 48 KiB of random letters
	// (so that gzip has output to emit before the end), then 16 KiB held.
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	r := mrand.New(mrand.NewPCG(3, 4))
	sb := make([]byte, bigSize)
	for i := range sb {
		sb[i] = byte('a' + r.IntN(26))
	}
	su := &streamUpstream{body: sb, first: 48 << 10}
	su.arm()
	srv := &http.Server{Handler: su, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(sl) }()
	defer srv.Close()

	if err := render(filepath.Join(dir, "upstream.conf"), upstreamConf, map[string]any{"Port": upPort, "Body": strings.TrimSuffix(smallBody, "\n") + `\n`, "Dir": dir}); err != nil {
		return err
	}
	up, err := launch("upstream nginx", command(serverCPU, "nginx", "-c", filepath.Join(dir, "upstream.conf"), "-e", filepath.Join(dir, "upstream-error.log")), filepath.Join(dir, "upstream.out"))
	if err != nil {
		return err
	}
	if err := waitPort(up, upPort); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "filtercost: upstream 127.0.0.1:%d, Legate 127.0.0.1:%d; %s; load average %s\n", upPort, proxyPort, pinning, loadStart)

	startLegate := func(v variant) (*child, error) {
		cfg := filepath.Join(dir, v.Name+".yaml")
		if err := render(cfg, legateConf, map[string]any{"V": v, "Port": proxyPort, "Upstream": upPort, "Stream": sl.Addr().(*net.TCPAddr).Port}); err != nil {
			return nil, err
		}
		bin := *legateBin
		if v.Bin != "" {
			bin = v.Bin
		}
		c := command(serverCPU, bin, "proxy", "-c", cfg, "--log-level", "warn", "--concurrency", "1", "--drain-time-s", "1")
		c.Env = append(os.Environ(), "GOMAXPROCS=1")
		ch, err := launch("legate ("+v.Name+")", c, filepath.Join(dir, v.Name+".out"))
		if err != nil {
			return nil, err
		}
		if err := waitPort(ch, proxyPort); err != nil {
			stop(ch)
			return nil, err
		}
		return ch, nil
	}

	if *baseline != "" {
		bv := all[0] // router
		bv.Name, bv.Bin = "router@"+*baseName, *baseline
		bv.What = fmt.Sprintf("router only, legate binary %s (%s)", *baseline, version(*baseline, "version"))
		all = append([]variant{bv}, all...)
	}
	results := make([]*result, len(all))
	for i, v := range all {
		results[i] = &result{v: v}
	}
	var stream streamResult
	streamChecked := false
	var notes []string
	for round := 1; round <= *rounds; round++ {
		for _, res := range results {
			v := res.v
			ch, err := startLegate(v)
			if err != nil {
				return fmt.Errorf("%s: %w", v.Name, err)
			}
			if err := verify(v, proxyPort, hdrs, big); err != nil {
				stop(ch)
				return fmt.Errorf("variant %s does not do what it measures: %w", v.Name, err)
			}
			if v.Name == "compressor" && !streamChecked {
				stream, streamChecked = checkStreaming(proxyPort, su), true
				fmt.Fprintf(os.Stderr, "filtercost: compression streams: %v (%s)\n", stream.Streams, stream.Detail)
			}
			script := ""
			if v.Tokens {
				script = scriptPath
			}
			s, err := measure(ch, proxyPort, v.Path, hdrs, script)
			stop(ch)
			if err != nil {
				return fmt.Errorf("%s: %w", v.Name, err)
			}
			if s.errors > 0 {
				notes = append(notes, fmt.Sprintf("round %d, %s: %d errors (non-2xx or socket errors)", round, v.Name, s.errors))
			}
			if s.clientCPU > 0.95 {
				notes = append(notes, fmt.Sprintf("round %d, %s: wrk used %.0f %% of its CPU (the figure may be bounded by the client)", round, v.Name, 100*s.clientCPU))
			}
			res.samples = append(res.samples, s)
			fmt.Fprintf(os.Stderr, "round %d %-11s %8.0f req/s  %6.2f CPU-µs/req (user %5.2f)  errors %d\n", round, v.Name, s.rps, s.cpuUS, s.userUS, s.errors)
		}
	}
	loadEnd := loadavg()
	var microRows []string
	microNS := map[string]string{}
	if *micro {
		microRows, microNS = microBenchmarks()
	}

	// The report.
	byName := map[string]*result{}
	for _, r := range results {
		byName[r.v.Name] = r
	}
	cpu := func(name string) float64 { return byName[name].med(func(s sample) float64 { return s.cpuUS }) }
	base := byName["router"]
	noise := base.spread()
	if n := byName["router-64k"].spread(); n > noise {
		noise = n
	}

	var b strings.Builder
	fmt.Fprintf(&b, "# Per-filter cost (bench/cmd/filtercost)\n\n")
	fmt.Fprintf(&b, "%s, %d round(s) of %s per variant, wrk -t1 -c%d keep-alive HTTP/1.1. `make bench-filters` writes this file.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), *rounds, *duration, *conns)
	fmt.Fprintf(&b, "| variant | what | requests/s | proxy CPU-µs/request | of which user | Δ vs router (µs) | Δ vs its base (µs) | CPU-µs per round |\n|---|---|---:|---:|---:|---:|---:|---|\n")
	user := func(s sample) float64 { return s.userUS }
	total := func(s sample) float64 { return s.cpuUS }
	for _, r := range results {
		c := cpu(r.v.Name)
		var per []string
		for _, s := range r.samples {
			per = append(per, fmt.Sprintf("%.2f", s.cpuUS))
		}
		dBase := "—"
		if r.v.Base != "" && r.v.Base != "router" {
			dBase = fmt.Sprintf("%+.2f (vs %s)", c-cpu(r.v.Base), r.v.Base)
		} else if r.v.Base == "router" {
			dBase = fmt.Sprintf("%+.2f", c-cpu("router"))
		}
		dRouter := "—"
		if r.v.Name != "router" {
			dRouter = fmt.Sprintf("%+.2f", c-cpu("router"))
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.2f | %.2f | %s | %s | %s |\n", r.v.Name, r.v.What,
			r.med(func(s sample) float64 { return s.rps }), c, r.med(user), dRouter, dBase, strings.Join(per, ", "))
	}
	b.WriteString("\n")
	if compressedSize > 0 {
		fmt.Fprintf(&b, "The 64 KiB body compresses to %d bytes (gzip, the compressor's defaults). ", compressedSize)
	}
	if *rounds > 1 {
		fmt.Fprintf(&b, "Noise: the router-only variants' CPU-µs/request varied by up to %.2f µs between rounds.\n", noise)
	} else {
		b.WriteString("Noise: with one round there is no estimate of it.\n")
	}

	fmt.Fprintf(&b, "\n## Goals (issue 12, Performance)\n\n")
	b.WriteString("Each Δ below is paired: the variant's figure minus the router-only one of the same round (the variants alternate within a round), the median over the rounds with their range. The user-space part is the filter's own work; the system part, the same system calls in every variant, carries most of the noise of a shared VM.\n\n| goal | figure | met? |\n|---|---|---|\n")
	pairFig := func(r, against *result) (dT, dU, uHi float64, fig string) {
		dT, tLo, tHi := paired(r, against, total)
		dU, uLo, uHi := paired(r, against, user)
		return dT, dU, uHi, fmt.Sprintf("%+.2f CPU-µs/request (rounds %+.2f … %+.2f), of which user %+.2f (%+.2f … %+.2f)", dT, tLo, tHi, dU, uLo, uHi)
	}
	// Goal 1: router only against a binary without the filter manager
	// (-baseline), in this run; benchrun's last figure is context.
	{
		c := cpu("router")
		var fig []string
		verdict := "not evaluated in this run (no -baseline binary)"
		if bl := byName["router@"+*baseName]; bl != nil {
			bc := cpu(bl.v.Name)
			dT, dU, _, pf := pairFig(base, bl)
			_, tLo, tHi := paired(base, bl, total)
			_, uLo, uHi := paired(base, bl, user)
			switch {
			case dT <= 0 && dU <= 0:
				verdict = "yes: no more CPU than the baseline"
			case tLo <= 0 && uLo <= 0:
				verdict = "yes: the rounds disagree on the sign of the difference, in total and in user space (not measurable)"
			case tLo <= 0 || uLo <= 0:
				verdict = fmt.Sprintf("probably: one of total (%+.2f … %+.2f) and user (%+.2f … %+.2f) is above the baseline in every round", tLo, tHi, uLo, uHi)
			default:
				verdict = "no: above the baseline in every round; the baseline also lacks every other change since, so this bounds the filter manager's cost from above"
			}
			fig = append(fig, fmt.Sprintf("router only %.2f CPU-µs/request (%.0f req/s) against %.2f (%.0f req/s) with the %s binary in this run: %s",
				c, base.med(func(s sample) float64 { return s.rps }), bc, bl.med(func(s sample) float64 { return s.rps }), *baseName, pf))
		} else {
			fig = append(fig, fmt.Sprintf("router only %.2f CPU-µs/request (%.0f req/s)", c, base.med(func(s sample) float64 { return s.rps })))
		}
		if lc, lr, ld, ok := latestKeepalive64(); ok {
			fig = append(fig, fmt.Sprintf("for context, benchrun's h1-keepalive-64 in %s (%s; another day and machine load, the request without the extra headers): %.2f CPU-µs/request, %.0f req/s", *latest, ld, lc, lr))
		}
		fmt.Fprintf(&b, "| the filter manager with no filters adds nothing measurable to the c=64 keep-alive figure | %s | %s |\n", strings.Join(fig, "; "), verdict)
	}
	for _, n := range []string{"cors", "rbac", "jwt_authn", "jwt_authn_cached", "jwt_authn_new_tokens"} {
		if byName[n] == nil {
			continue
		}
		dT, dU, uHi, pf := pairFig(byName[n], base)
		var verdict string
		switch {
		case dT < 2 && uHi < 2:
			verdict = "yes"
		case dT < 2 && dU < 2:
			verdict = "probably (the medians are below 2 µs, some round's user-space figure is not)"
		default:
			verdict = "no"
		}
		inproc := ""
		if v, ok := microNS[map[string]string{"cors": "BenchmarkCORS", "rbac": "BenchmarkRBAC", "jwt_authn": "BenchmarkJWTAuthn/filter", "jwt_authn_cached": "BenchmarkJWTAuthn/filter_cached", "jwt_authn_new_tokens": "BenchmarkJWTAuthn/verify"}[n]]; ok {
			inproc = fmt.Sprintf(" (in process: %s ns per request)", v)
		}
		if n == "jwt_authn_new_tokens" {
			// Context for the jwt_authn rows: what a token costs the first
			// time (its RSA signature check), which no goal covers.
			fmt.Fprintf(&b, "| (context) jwt_authn with a new token on every request | %s over router only%s | — |\n", pf, inproc)
			continue
		}
		fmt.Fprintf(&b, "| %s costs < 2 µs per request | %s over router only%s | %s |\n", n, pf, inproc, verdict)
	}
	if byName["compressor"] != nil {
		verdict := "no"
		if stream.Streams {
			verdict = "yes"
		}
		fmt.Fprintf(&b, "| compression streams without buffering the whole body | %s | %s |\n", stream.Detail, verdict)
	}

	if *micro {
		fmt.Fprintf(&b, "\n## In process\n\n`go test -run XXX -bench . -benchtime 1s -benchmem` in the filter packages: the filter's DecodeHeaders (and EncodeHeaders for cors) on the same configuration and request, on a stub of the stream's callbacks — no sockets, no scheduler, so far less noisy than the figures above, but without the cost of the proxy around the filter (stats, its slot in the filter manager).\n\n")
		fmt.Fprintf(&b, "| benchmark | ns/op | B/op | allocs/op |\n|---|---:|---:|---:|\n%s", strings.Join(microRows, ""))
	}
	fmt.Fprintf(&b, "\n## Run\n\n")
	fmt.Fprintf(&b, "- machine: %d CPUs (%s), kernel %s\n", runtime.NumCPU(), cpuModel(), strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")))
	fmt.Fprintf(&b, "- load average at the start: %s; at the end: %s (the machine is shared: other work shows up as spread)\n", loadStart, loadEnd)
	fmt.Fprintf(&b, "- pinning: %s\n", pinning)
	fmt.Fprintf(&b, "- legate: %s, `--concurrency 1`, GOMAXPROCS=1, a fresh process per variant and round; %s; %s; %s\n",
		version(*legateBin, "version"), version("nginx", "-v"), version("wrk", "-v"), version("go", "version"))
	fmt.Fprintf(&b, "- method: the variants alternate within each round (%s); medians over the rounds. Every request carries Origin, Authorization (the JWT), x-tenant and Accept-Encoding: gzip, in every variant. Upstream: nginx, 1 worker, keep-alive; 100-byte body on %s, a 64 KiB file on %s. CPU: utime+stime of the Legate process (/proc/PID/stat) over the wrk run, divided by the requests wrk completed. Before the load each variant is checked: cors answers with access-control-allow-origin, rbac refuses the request without x-tenant (403), jwt_authn refuses it without the token (401), the compressor's gzip body decompresses to the upstream's.\n",
		strings.Join(names(results), ", "), smallPath, bigPath)
	fmt.Fprintf(&b, "- streaming check: an upstream in filtercost sends 48 KiB of a 64 KiB text/plain body (random letters) and holds the rest until the client has read compressed bytes through Legate's compressor variant, at most 5 s; the client waits at most 6 s\n")
	fmt.Fprintf(&b, "- wall time: %s\n", time.Since(begin).Round(time.Second))
	if *note != "" {
		fmt.Fprintf(&b, "- note: %s\n", *note)
	}
	if len(notes) > 0 {
		fmt.Fprintf(&b, "\n## Notes\n\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	fmt.Print(b.String())
	if err := os.MkdirAll(filepath.Dir(*outFile), 0o755); err != nil {
		return err
	}
	return os.WriteFile(*outFile, []byte(b.String()), 0o644)
}

func names(rs []*result) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.v.Name)
	}
	return out
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func cpuModel() string {
	sc := bufio.NewScanner(strings.NewReader(readFile("/proc/cpuinfo")))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// microBenchmarks runs the filters' in-process benchmarks and returns
// their rows for the report.
func microBenchmarks() ([]string, map[string]string) {
	var rows []string
	ns := map[string]string{}
	re := regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+\d+\s+([\d.]+) ns/op\s+(\d+) B/op\s+(\d+) allocs/op`)
	for _, pkg := range []string{"./internal/filters/http/cors/", "./internal/filters/http/rbac/", "./internal/filters/http/jwt_authn/"} {
		out, err := exec.Command("go", "test", "-count=1", "-run", "XXX", "-bench", ".", "-benchtime", "1s", "-benchmem", pkg).CombinedOutput()
		if err != nil {
			// Another package of the tree may not build right now: say
			// so in the report and go on with the others.
			tail := strings.TrimSpace(string(out))
			if len(tail) > 600 {
				tail = "…" + tail[len(tail)-600:]
			}
			rows = append(rows, fmt.Sprintf("| %s: not measured (go test: %v: %s) | | | |\n", pkg, err, strings.ReplaceAll(tail, "\n", " ")))
			continue
		}
		for _, l := range strings.Split(string(out), "\n") {
			if m := re.FindStringSubmatch(l); m != nil {
				rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s |\n", m[1], m[3], m[4], m[5]))
				ns[m[1]] = m[3]
				fmt.Fprintln(os.Stderr, l)
			}
		}
	}
	return rows, ns
}
