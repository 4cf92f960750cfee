package testutil

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// RateLimitService is a running Envoy Rate Limit Service
// (github.com/envoyproxy/ratelimit) backed by its own redis-server, both
// on loopback ports of their own.
type RateLimitService struct {
	// GRPCAddr is the service's gRPC address (host:port), for a cluster.
	GRPCAddr string
	// HTTPAddr serves /healthcheck and /json; DebugAddr /rlconfig and
	// /stats; RedisAddr is the redis the service counts in.
	HTTPAddr, DebugAddr, RedisAddr string

	mu      sync.Mutex
	rls     *exec.Cmd
	rlsDone chan struct{}
	redis   *exec.Cmd
	log     *LogBuffer
}

// rateLimitBinaries finds the Rate Limit Service (built by
// scripts/deps.d/ratelimit.sh into $LEGATE_CACHE/bin) and redis-server. A
// missing one skips the test, or fails it when LEGATE_REQUIRE_NETNS=1
// (make test, CI), so that CI never passes by skipping.
func rateLimitBinaries(t testing.TB) (rls, redis string) {
	t.Helper()
	cache := os.Getenv("LEGATE_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "legate")
	}
	missing := func(what string) {
		t.Helper()
		msg := what + " is not installed: run scripts/deps.sh (scripts/deps.d/ratelimit.sh)"
		if os.Getenv("LEGATE_REQUIRE_NETNS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	rls = filepath.Join(cache, "bin", "ratelimit")
	if _, err := os.Stat(rls); err != nil {
		p, err := exec.LookPath("ratelimit")
		if err != nil {
			missing("the Envoy Rate Limit Service (" + rls + ")")
		}
		rls = p
	}
	redis, err := exec.LookPath("redis-server")
	if err != nil {
		missing("redis-server")
	}
	return rls, redis
}

var domainLine = regexp.MustCompile(`(?m)^domain:\s*"?([^"\s#]+)`)

// StartRateLimitService starts redis-server and the Rate Limit Service
// with the given rate limit configuration files (file name → YAML, each
// with its domain), written under RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config,
// and waits until it is healthy and has loaded every domain. env adds
// settings of the service (KEY=value, such as
// LIMIT_RESPONSE_HEADERS_ENABLED=true). Both stop when the test ends; the
// service's log is reported if the test failed.
func StartRateLimitService(t testing.TB, configs map[string]string, env ...string) *RateLimitService {
	t.Helper()
	rlsBin, redisBin := rateLimitBinaries(t)
	dir := t.TempDir()
	cfgDir := filepath.Join(dir, "runtime", "ratelimit", "config")
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var domains []string
	for name, y := range configs {
		if err := os.WriteFile(filepath.Join(cfgDir, name), []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, m := range domainLine.FindAllStringSubmatch(y, -1) {
			domains = append(domains, m[1])
		}
	}
	s := &RateLimitService{log: &LogBuffer{}}
	redisPort := FreePort(t)
	s.RedisAddr = fmt.Sprintf("127.0.0.1:%d", redisPort)
	s.redis = exec.Command(redisBin, "--bind", "127.0.0.1", "--port", fmt.Sprint(redisPort), "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning")
	s.redis.Stdout, s.redis.Stderr = s.log, s.log
	if err := s.redis.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() {
		s.redis.Process.Kill()
		s.redis.Wait()
	})
	if err := waitRedis(s.RedisAddr, 10*time.Second); err != nil {
		t.Fatalf("redis-server on %s: %v\n%s", s.RedisAddr, err, s.log.String())
	}

	httpPort, grpcPort, debugPort := FreePort(t), FreePort(t), FreePort(t)
	s.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", httpPort)
	s.GRPCAddr = fmt.Sprintf("127.0.0.1:%d", grpcPort)
	s.DebugAddr = fmt.Sprintf("127.0.0.1:%d", debugPort)
	env = append([]string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + dir,
		"USE_STATSD=false", "LOG_LEVEL=warn", "LOG_FORMAT=text",
		"BACKEND_TYPE=redis", "REDIS_SOCKET_TYPE=tcp", "REDIS_URL=" + s.RedisAddr,
		"HOST=127.0.0.1", fmt.Sprintf("PORT=%d", httpPort),
		"GRPC_HOST=127.0.0.1", fmt.Sprintf("GRPC_PORT=%d", grpcPort),
		"DEBUG_HOST=127.0.0.1", fmt.Sprintf("DEBUG_PORT=%d", debugPort),
		"RUNTIME_ROOT=" + filepath.Join(dir, "runtime"), "RUNTIME_SUBDIRECTORY=ratelimit",
		"RUNTIME_WATCH_ROOT=false", "RUNTIME_IGNOREDOTFILES=true",
	}, env...)
	s.rls = exec.Command(rlsBin)
	s.rls.Env = env
	s.rls.Stdout, s.rls.Stderr = s.log, s.log
	if err := s.rls.Start(); err != nil {
		t.Fatalf("start the rate limit service: %v", err)
	}
	s.rlsDone = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(s.rls, s.rlsDone)
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("rate limit service and redis log:\n%s", s.log.String())
		}
	})
	if err := s.waitReady(domains, 30*time.Second); err != nil {
		t.Fatalf("the rate limit service did not come up: %v\n%s", err, s.log.String())
	}
	return s
}

// Stop ends the Rate Limit Service (redis keeps running) and waits for
// it; calling it again does nothing.
func (s *RateLimitService) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rls == nil {
		return
	}
	s.rls.Process.Kill()
	<-s.rlsDone
	s.rls = nil
}

// waitReady polls /healthcheck and /rlconfig until the service is healthy
// and shows every domain, and its gRPC port accepts connections.
func (s *RateLimitService) waitReady(domains []string, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	return pollReady(s.rlsDone, timeout, func() error {
		if _, err := httpGet(c, "http://"+s.HTTPAddr+"/healthcheck"); err != nil {
			return err
		}
		b, err := httpGet(c, "http://"+s.DebugAddr+"/rlconfig")
		if err != nil {
			return err
		}
		for _, d := range domains {
			if !strings.Contains(string(b), d) {
				return fmt.Errorf("domain %q not loaded yet (/rlconfig: %q)", d, b)
			}
		}
		return tcpAccepts(s.GRPCAddr)
	})
}

// waitRedis waits until redis answers PING.
func waitRedis(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		last = func() error {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(time.Second))
			if _, err := io.WriteString(conn, "PING\r\n"); err != nil {
				return err
			}
			l, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil {
				return err
			}
			if !strings.HasPrefix(l, "+PONG") {
				return fmt.Errorf("PING answered %q", l)
			}
			return nil
		}()
		if last == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return last
}
