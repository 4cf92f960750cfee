package redis_proxy

import (
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	redisv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/redis_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/legateproxy/legate/internal/filters/network/redis_proxy/resp"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/upstream"
)

// TestMurmur2 checks Envoy's own test vectors (test/common/common/hash_test.cc).
func TestMurmur2(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint64
	}{
		{"foo", 9631199822919835226},
		{"bar", 11474628671133349555},
		{"foo\nbar", 16306510975912980159},
	} {
		if got := murmur2(tt.in); got != tt.want {
			t.Errorf("murmur2(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestHashtag(t *testing.T) {
	for _, tt := range []struct {
		key     string
		enabled bool
		want    string
	}{
		{"{user1000}.following", true, "user1000"},
		{"{user1000}.following", false, "{user1000}.following"},
		{"foo{}{bar}", true, "foo{}{bar}"},
		{"foo{{bar}}zap", true, "{bar"},
		{"foo{bar}{zap}", true, "bar"},
		{"nobraces", true, "nobraces"},
		{"open{only", true, "open{only"},
	} {
		if got := hashtag(tt.key, tt.enabled); got != tt.want {
			t.Errorf("hashtag(%q, %v) = %q, want %q", tt.key, tt.enabled, got, tt.want)
		}
	}
}

func testContext() *listener.Context {
	return &listener.Context{Stats: stats.NewStore(), Clusters: upstream.NewManager(upstream.Deps{})}
}

func TestRouter(t *testing.T) {
	pr := &redisv3.RedisProxy_PrefixRoutes{
		CaseInsensitive: true,
		Routes: []*redisv3.RedisProxy_PrefixRoutes_Route{
			{Prefix: "ab", Cluster: "a"},
			{Prefix: "abc", Cluster: "b", RemovePrefix: true},
		},
		CatchAllRoute: &redisv3.RedisProxy_PrefixRoutes_Route{Cluster: "all"},
	}
	r, err := compileRouter(testContext(), pr, "prefix_routes")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ key, cluster, sent string }{
		{"abc:users", "b", ":users"},
		{"ABC:users", "b", ":users"},
		{"ab:users", "a", "ab:users"},
		{"z:users", "all", "z:users"},
	} {
		rt, sent := r.find(tt.key)
		if rt == nil || rt.cluster.Name() != tt.cluster || sent != tt.sent {
			t.Errorf("find(%q) = %v, %q; want cluster %s, key %q", tt.key, rt, sent, tt.cluster, tt.sent)
		}
	}
	pr.CatchAllRoute = nil
	r, _ = compileRouter(testContext(), pr, "prefix_routes")
	if rt, _ := r.find("z"); rt != nil {
		t.Errorf("without catch_all_route an unmatched key has route %v", rt)
	}
	pr.Routes = append(pr.Routes, &redisv3.RedisProxy_PrefixRoutes_Route{Prefix: "AB", Cluster: "c"})
	if _, err := compileRouter(testContext(), pr, "prefix_routes"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("duplicate prefix (case-insensitive): %v", err)
	}
}

func TestMerge(t *testing.T) {
	for _, tt := range []struct {
		name  string
		merge func([]resp.Value) (resp.Value, bool)
		in    []resp.Value
		want  resp.Value
		ok    bool
	}{
		{"mget", mergeMGET, []resp.Value{resp.Bulk("a"), {Type: resp.Null}}, resp.Arr(resp.Bulk("a"), resp.Value{Type: resp.Null}), true},
		{"mget error", mergeMGET, []resp.Value{resp.Err("upstream failure"), resp.Int(1)},
			resp.Arr(resp.Err("upstream failure"), resp.Err("upstream protocol error")), false},
		{"mset", mergeMSET, []resp.Value{resp.Simple("OK"), resp.Simple("OK")}, resp.Simple("OK"), true},
		{"mset errors", mergeMSET, []resp.Value{resp.Simple("OK"), resp.Err("x"), resp.Err("no upstream host")}, resp.Err("finished with 2 error(s)"), false},
		{"sum", mergeSum, []resp.Value{resp.Int(1), resp.Int(0), resp.Int(1)}, resp.Int(2), true},
		{"sum error", mergeSum, []resp.Value{resp.Int(1), resp.Err("x")}, resp.Err("finished with 1 error(s)"), false},
	} {
		got, ok := tt.merge(tt.in)
		if !got.Equal(tt.want) || ok != tt.ok {
			t.Errorf("%s: %v, %v; want %v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestCompileRefuses(t *testing.T) {
	base := func() *redisv3.RedisProxy {
		return &redisv3.RedisProxy{StatPrefix: "x", Settings: &redisv3.RedisProxy_ConnPoolSettings{},
			PrefixRoutes: &redisv3.RedisProxy_PrefixRoutes{CatchAllRoute: &redisv3.RedisProxy_PrefixRoutes_Route{Cluster: "c"}}}
	}
	for _, tt := range []struct {
		name string
		mod  func(*redisv3.RedisProxy)
		want string
	}{
		{"redirection", func(c *redisv3.RedisProxy) { c.Settings.EnableRedirection = true }, "settings.enable_redirection"},
		{"command stats", func(c *redisv3.RedisProxy) { c.Settings.EnableCommandStats = true }, "settings.enable_command_stats"},
		{"resp3", func(c *redisv3.RedisProxy) { c.ProtocolVersion = redisv3.RedisProxy_RESP3 }, "protocol_version"},
		{"key formatter", func(c *redisv3.RedisProxy) { c.PrefixRoutes.CatchAllRoute.KeyFormatter = "%KEY%" }, "catch_all_route.key_formatter"},
	} {
		c := base()
		tt.mod(c)
		_, err := compile(testContext(), c, "f")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error at %s", tt.name, err, tt.want)
		}
	}
	if _, err := compile(testContext(), base(), "f"); err != nil {
		t.Errorf("base config: %v", err)
	}
}

func TestFaults(t *testing.T) {
	pct := func(n uint32) *corev3.RuntimeFractionalPercent {
		return &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: n}}
	}
	fs, err := compileFaults(testContext(), []*redisv3.RedisProxy_RedisFault{
		{FaultType: redisv3.RedisProxy_RedisFault_ERROR, FaultEnabled: pct(100), Commands: []string{"GET"}},
		{FaultType: redisv3.RedisProxy_RedisFault_DELAY, FaultEnabled: pct(100), Delay: durationpb.New(time.Second)},
		{FaultType: redisv3.RedisProxy_RedisFault_ERROR, FaultEnabled: pct(0), Commands: []string{"set"}},
	}, "faults")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		cmd       string
		isError   bool
		wantDelay time.Duration
	}{
		{"get", true, 0},            // GET's own fault comes first
		{"set", false, time.Second}, // SET's 0% fault, then the one for all
		{"incr", false, time.Second},
	} {
		f := fs.pick(tt.cmd)
		if f == nil || f.isError != tt.isError || f.delay != tt.wantDelay {
			t.Errorf("pick(%s) = %+v; want error %v, delay %v", tt.cmd, f, tt.isError, tt.wantDelay)
		}
	}
	if f := faults(nil).pick("get"); f != nil {
		t.Errorf("no faults: %v", f)
	}
}
