// Redis proxy: envoy.filters.network.redis_proxy in front of real
// redis-server instances on loopback, driven by a real client
// (go-redis): keys hashed across a ring_hash cluster, MSET/MGET fanned
// out and put back together, prefix routes, downstream and upstream
// AUTH, Envoy's error replies and stats.

package features_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/legateproxy/legate/internal/testutil"
)

// startRedis runs a redis-server on a free loopback port (with
// requirepass when password is set) until the test ends, and returns its
// address. Without redis-server the test is skipped, or fails under
// LEGATE_REQUIRE_NETNS=1 (make test, CI); scripts/deps.d/ratelimit.sh
// installs it.
func startRedis(t *testing.T, password string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server is not installed: run scripts/deps.sh (scripts/deps.d/ratelimit.sh)"
		if os.Getenv("LEGATE_REQUIRE_NETNS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	port := testutil.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"--bind", "127.0.0.1", "--port", fmt.Sprint(port), "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--daemonize", "no", "--loglevel", "warning"}
	if password != "" {
		args = append(args, "--requirepass", password)
	}
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	direct := redisDirect(t, addr, password)
	testutil.Eventually(t, 10*time.Second, func() bool { return direct.Ping(context.Background()).Err() == nil },
		"redis-server on %s did not answer PING", addr)
	return addr
}

// redisDirect is a client of one redis-server (or of the proxy).
func redisDirect(t *testing.T, addr, password string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, Protocol: 2, DisableIdentity: true,
		MaxRetries: -1, DialTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second, PoolSize: 2})
	t.Cleanup(func() { c.Close() })
	return c
}

// redisListener renders a listener whose only filter is redis_proxy with
// the given RedisProxy fields.
func redisListener(name, fields string) string {
	return fmt.Sprintf(`  - name: %s
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.redis_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy, %s}
`, name, fields)
}

func TestRedisProxy(t *testing.T) {
	a, b := startRedis(t, ""), startRedis(t, "")
	solo := startRedis(t, "")
	secured := startRedis(t, "s3cret")
	dead := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)) // nothing listens
	auth := `typed_extension_protocol_options: {envoy.filters.network.redis_proxy: {"@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProtocolOptions, auth_password: {inline_string: s3cret}}}`
	routes := `prefix_routes: {routes: [{prefix: "solo:", remove_prefix: true, cluster: solo}, {prefix: "sec:", cluster: secured}, {prefix: "noauth:", cluster: secured_noauth}, {prefix: "dead:", cluster: dead}, {prefix: "mir:", cluster: solo, request_mirror_policy: [{cluster: mirror, exclude_read_commands: true}]}], catch_all_route: {cluster: pair}}`
	yaml := netBootstrap(
		redisListener("redis", `stat_prefix: main, settings: {op_timeout: 5s}, `+routes)+
			redisListener("authed", `stat_prefix: authed, settings: {op_timeout: 5s}, downstream_auth_passwords: [{inline_string: hunter2}], prefix_routes: {catch_all_route: {cluster: pair}}`),
		"",
		staticCluster("pair", "lb_policy: RING_HASH", a, b),
		staticCluster("solo", "", solo),
		staticCluster("secured", auth, secured),
		staticCluster("secured_noauth", "", secured),
		staticCluster("dead", "", dead),
		staticCluster("mirror", "", b),
	)
	p := testutil.StartProxy(t, yaml, nil)
	ctx := context.Background()
	c := redisDirect(t, p.Addr("redis"), "")
	ra, rb := redisDirect(t, a, ""), redisDirect(t, b, "")

	t.Run("set and get", func(t *testing.T) {
		if err := c.Set(ctx, "greeting", "hello", 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
		if v, err := c.Get(ctx, "greeting").Result(); err != nil || v != "hello" {
			t.Fatalf("GET = %q, %v", v, err)
		}
		if _, err := c.Get(ctx, "missing").Result(); err != redis.Nil {
			t.Fatalf("GET of a missing key: %v, want nil reply", err)
		}
		if got := p.Stat(t, "redis.main.command.get.total"); got < 2 {
			t.Errorf("redis.main.command.get.total = %d", got)
		}
	})

	t.Run("mset and mget fan out", func(t *testing.T) {
		var kv []any
		var keys []string
		for i := range 20 {
			k := fmt.Sprintf("key-%d", i)
			keys = append(keys, k)
			kv = append(kv, k, fmt.Sprintf("v%d", i))
		}
		if err := c.MSet(ctx, kv...).Err(); err != nil {
			t.Fatalf("MSET: %v", err)
		}
		vals, err := c.MGet(ctx, append(keys, "absent")...).Result()
		if err != nil {
			t.Fatalf("MGET: %v", err)
		}
		for i, k := range keys {
			if vals[i] != fmt.Sprintf("v%d", i) {
				t.Errorf("MGET %s = %v", k, vals[i])
			}
		}
		if vals[len(keys)] != nil {
			t.Errorf("MGET of an absent key = %v, want nil", vals[len(keys)])
		}
		// Each key is on exactly one server, and both servers have some.
		onA, onB := 0, 0
		for _, k := range keys {
			ina, inb := ra.Exists(ctx, k).Val() == 1, rb.Exists(ctx, k).Val() == 1
			if ina == inb {
				t.Errorf("key %s: on a %v, on b %v; want exactly one", k, ina, inb)
			}
			if ina {
				onA++
			} else if inb {
				onB++
			}
		}
		if onA == 0 || onB == 0 {
			t.Errorf("keys on a: %d, on b: %d; want both servers used", onA, onB)
		}
		// DEL fans out too, and sums.
		if n, err := c.Del(ctx, keys[0], keys[1], "absent").Result(); err != nil || n != 2 {
			t.Errorf("DEL = %d, %v; want 2", n, err)
		}
		if n, err := c.Exists(ctx, keys[2], keys[3], keys[0]).Result(); err != nil || n != 2 {
			t.Errorf("EXISTS = %d, %v; want 2", n, err)
		}
	})

	t.Run("prefix route with remove_prefix", func(t *testing.T) {
		if err := c.Set(ctx, "solo:thing", "one", 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
		if v, err := redisDirect(t, solo, "").Get(ctx, "thing").Result(); err != nil || v != "one" {
			t.Fatalf("solo server: GET thing = %q, %v (the prefix should be removed)", v, err)
		}
		if v, err := c.Get(ctx, "solo:thing").Result(); err != nil || v != "one" {
			t.Fatalf("GET solo:thing through the proxy = %q, %v", v, err)
		}
		if ra.Exists(ctx, "solo:thing", "thing").Val()+rb.Exists(ctx, "solo:thing", "thing").Val() != 0 {
			t.Errorf("the catch-all cluster got the prefixed key")
		}
	})

	t.Run("transaction", func(t *testing.T) {
		var incr *redis.IntCmd
		_, err := c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			pipe.Set(ctx, "tx-counter", "10", 0)
			incr = pipe.Incr(ctx, "tx-counter")
			return nil
		})
		if err != nil || incr.Val() != 11 {
			t.Fatalf("MULTI/SET/INCR/EXEC: INCR = %d, %v", incr.Val(), err)
		}
		if v := ra.Get(ctx, "tx-counter").Val() + rb.Get(ctx, "tx-counter").Val(); v != "11" {
			t.Errorf("servers hold tx-counter = %q", v)
		}
		for _, tc := range []struct {
			cmd  []any
			want string
		}{
			{[]any{"EXEC"}, "EXEC without MULTI"},
			{[]any{"DISCARD"}, "DISCARD without MULTI"},
		} {
			if err := c.Do(ctx, tc.cmd...).Err(); err == nil || err.Error() != tc.want {
				t.Errorf("%v: %v, want %q", tc.cmd, err, tc.want)
			}
		}
	})

	t.Run("request mirror", func(t *testing.T) {
		if err := c.Set(ctx, "mir:x", "m", 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
		if v, err := redisDirect(t, solo, "").Get(ctx, "mir:x").Result(); err != nil || v != "m" {
			t.Fatalf("route's cluster: GET = %q, %v", v, err)
		}
		testutil.Eventually(t, 5*time.Second, func() bool { return rb.Get(ctx, "mir:x").Val() == "m" }, "the mirror did not get the SET")
	})

	t.Run("upstream auth", func(t *testing.T) {
		if err := c.Set(ctx, "sec:k", "v", 0).Err(); err != nil {
			t.Fatalf("SET through the cluster with auth_password: %v", err)
		}
		if v, err := redisDirect(t, secured, "s3cret").Get(ctx, "sec:k").Result(); err != nil || v != "v" {
			t.Fatalf("secured server: GET = %q, %v", v, err)
		}
		// The same server without RedisProtocolOptions refuses, and its
		// error reaches the client as redis sent it.
		err := c.Get(ctx, "noauth:k").Err()
		if err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
			t.Fatalf("GET without upstream auth: %v, want NOAUTH", err)
		}
	})

	t.Run("unsupported command", func(t *testing.T) {
		err := c.Do(ctx, "KEYS", "*").Err()
		if err == nil || err.Error() != "unsupported command 'KEYS'" {
			t.Fatalf("KEYS: %v", err)
		}
		if got := p.Stat(t, "redis.main.splitter.unsupported_command"); got != 1 {
			t.Errorf("splitter.unsupported_command = %d", got)
		}
		if v, err := c.Ping(ctx).Result(); err != nil || v != "PONG" {
			t.Errorf("PING = %q, %v", v, err)
		}
		if v, err := c.Echo(ctx, "hi").Result(); err != nil || v != "hi" {
			t.Errorf("ECHO = %q, %v", v, err)
		}
	})

	t.Run("server down", func(t *testing.T) {
		err := c.Get(ctx, "dead:k").Err()
		if err == nil || err.Error() != "upstream failure" {
			t.Fatalf("GET on a cluster whose server is down: %v, want upstream failure", err)
		}
		if got := p.Stat(t, "redis.main.command.get.error"); got != 1 {
			t.Errorf("redis.main.command.get.error = %d", got)
		}
		// The connection keeps serving.
		if err := c.Get(ctx, "greeting").Err(); err != nil {
			t.Errorf("GET after the failure: %v", err)
		}
	})

	t.Run("downstream auth", func(t *testing.T) {
		// A raw connection: go-redis would AUTH on connect.
		conn, err := net.Dial("tcp", p.Addr("authed"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 256)
		ask := func(cmd ...string) string {
			t.Helper()
			var b strings.Builder
			fmt.Fprintf(&b, "*%d\r\n", len(cmd))
			for _, a := range cmd {
				fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
			}
			if _, err := conn.Write([]byte(b.String())); err != nil {
				t.Fatal(err)
			}
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			return string(buf[:n])
		}
		if got := ask("GET", "greeting"); got != "-NOAUTH Authentication required.\r\n" {
			t.Errorf("GET before AUTH: %q", got)
		}
		if got := ask("AUTH", "wrong"); got != "-ERR invalid password\r\n" {
			t.Errorf("AUTH wrong: %q", got)
		}
		if got := ask("AUTH", "hunter2"); got != "+OK\r\n" {
			t.Errorf("AUTH right: %q", got)
		}
		if got := ask("GET", "greeting"); got != "$5\r\nhello\r\n" {
			t.Errorf("GET after AUTH: %q", got)
		}
		// Transactions answered locally: nested MULTI, an empty EXEC,
		// commands a transaction cannot hold.
		for _, tc := range []struct {
			cmd  []string
			want string
		}{
			{[]string{"MULTI"}, "+OK\r\n"},
			{[]string{"MULTI"}, "-MULTI calls can not be nested\r\n"},
			{[]string{"MGET", "a", "b"}, "-'MGET' command is not supported within transaction\r\n"},
			{[]string{"EXEC"}, "*0\r\n"},
		} {
			if got := ask(tc.cmd...); got != tc.want {
				t.Errorf("%v: %q, want %q", tc.cmd, got, tc.want)
			}
		}
		if got := ask("QUIT"); got != "+OK\r\n" {
			t.Errorf("QUIT: %q", got)
		}
		if n, err := conn.Read(buf); err == nil {
			t.Errorf("after QUIT the connection is open (read %q)", buf[:n])
		}
		if got := p.Stat(t, "redis.authed.downstream_cx_total"); got != 1 {
			t.Errorf("redis.authed.downstream_cx_total = %d", got)
		}
	})
}

// TestRedisProxyConfigErrors: what is not implemented is refused, naming
// the field.
func TestRedisProxyConfigErrors(t *testing.T) {
	for _, tc := range []struct{ fields, want string }{
		{`stat_prefix: x, settings: {op_timeout: 1s, enable_redirection: true}, prefix_routes: {catch_all_route: {cluster: c}}`, "enable_redirection"},
		{`stat_prefix: x, settings: {op_timeout: 1s}, prefix_routes: {routes: [{prefix: a, cluster: c}, {prefix: a, cluster: c}]}`, "already exists"},
	} {
		_, err := testutil.TryStartProxy(t, netBootstrap(redisListener("r", tc.fields), "", staticCluster("c", "", "127.0.0.1:1")), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.fields, err, tc.want)
		}
	}
	// The Redis Cluster topology type is not implemented.
	cl := `{name: rc, connect_timeout: 1s, cluster_type: {name: envoy.clusters.redis, typed_config: {"@type": type.googleapis.com/envoy.extensions.clusters.redis.v3.RedisClusterConfig}}, load_assignment: {cluster_name: rc, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}}`
	_, err := testutil.TryStartProxy(t, netBootstrap(redisListener("r", `stat_prefix: x, settings: {op_timeout: 1s}, prefix_routes: {catch_all_route: {cluster: rc}}`), "", cl), nil)
	if err == nil || !strings.Contains(err.Error(), "not implemented") {
		t.Errorf("envoy.clusters.redis: %v, want not implemented", err)
	}
}

// TestRedisProxySettings: op_timeout fails a request a server does not
// answer; max_buffer_size_before_flush holds requests until
// buffer_flush_timeout; enable_hashtagging hashes keys by their {tag}.
func TestRedisProxySettings(t *testing.T) {
	a, b := startRedis(t, ""), startRedis(t, "")
	// A server that reads and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1024)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	yaml := netBootstrap(
		redisListener("slow", `stat_prefix: slow, settings: {op_timeout: 0.3s}, prefix_routes: {catch_all_route: {cluster: silent}}`)+
			redisListener("tagged", `stat_prefix: tagged, settings: {op_timeout: 5s, enable_hashtagging: true, max_buffer_size_before_flush: 1048576, buffer_flush_timeout: 0.02s}, prefix_routes: {catch_all_route: {cluster: pair}}`)+
			redisListener("faulty", `stat_prefix: faulty, settings: {op_timeout: 5s}, prefix_routes: {catch_all_route: {cluster: pair}}, `+
				`faults: [{fault_type: ERROR, fault_enabled: {default_value: {numerator: 100}}, commands: [GET]}]`),
		"",
		staticCluster("silent", "", silent.Addr().String()),
		staticCluster("pair", "lb_policy: MAGLEV", a, b),
	)
	p := testutil.StartProxy(t, yaml, nil)
	ctx := context.Background()

	start := time.Now()
	err = redisDirect(t, p.Addr("slow"), "").Get(ctx, "k").Err()
	if err == nil || err.Error() != "upstream failure" {
		t.Fatalf("GET from a server that does not answer: %v, want upstream failure", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("the request failed after %v, before op_timeout", d)
	}
	if got := p.Stat(t, "redis.slow.command.get.error"); got != 1 {
		t.Errorf("redis.slow.command.get.error = %d", got)
	}

	c := redisDirect(t, p.Addr("tagged"), "")
	ra, rb := redisDirect(t, a, ""), redisDirect(t, b, "")
	var keys []string
	for i := range 12 {
		k := fmt.Sprintf("{user42}.field%d", i)
		keys = append(keys, k)
		if err := c.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
	onA := ra.Exists(ctx, keys...).Val()
	onB := rb.Exists(ctx, keys...).Val()
	if !(onA == 12 && onB == 0) && !(onA == 0 && onB == 12) {
		t.Errorf("keys of one hash tag: %d on a, %d on b; want all on one server", onA, onB)
	}
	if v, err := c.Get(ctx, keys[3]).Result(); err != nil || v != "v" {
		t.Errorf("GET through the buffered connection: %q, %v", v, err)
	}

	// A pipeline of commands whose keys are on both servers: the replies
	// come back in request order.
	pipe := c.Pipeline()
	var gets []*redis.StringCmd
	for i := range 100 {
		k := fmt.Sprintf("pipelined-%d", i)
		pipe.Set(ctx, k, fmt.Sprint(i), 0)
		gets = append(gets, pipe.Get(ctx, k))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	for i, g := range gets {
		if g.Val() != fmt.Sprint(i) {
			t.Fatalf("pipelined GET %d = %q", i, g.Val())
		}
	}

	// An error fault on GET: Envoy's error, the command's error_fault stat,
	// and other commands unaffected.
	f := redisDirect(t, p.Addr("faulty"), "")
	if err := f.Get(ctx, "k").Err(); err == nil || err.Error() != "Fault Injected: Error" {
		t.Errorf("GET with an error fault: %v", err)
	}
	if err := f.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Errorf("SET without a fault: %v", err)
	}
	if got := p.Stat(t, "redis.faulty.command.get.error_fault"); got != 1 {
		t.Errorf("redis.faulty.command.get.error_fault = %d", got)
	}
}
