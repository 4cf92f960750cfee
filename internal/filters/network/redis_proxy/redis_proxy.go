// Package redis_proxy is envoy.filters.network.redis_proxy: a terminal
// network filter that speaks RESP2 (package resp) to redis clients and
// sends each command to a redis server of an upstream cluster, as Envoy's
// redis proxy (docs: arch_overview/other_protocols/redis). Commands on one
// key go to the host the cluster's load balancer picks for the key's hash
// (MurmurHash2 of the key or its hash tag, so ring_hash and maglev
// clusters spread keys as Envoy does); MGET, MSET, DEL, EXISTS, TOUCH and
// UNLINK are split per key and their replies put back together; EVAL and
// EVALSHA go by their first key; PING, ECHO, TIME, AUTH and QUIT are
// answered locally, with Envoy's error strings for the rest. prefix_routes
// choose the cluster by key prefix (remove_prefix, case_insensitive,
// catch_all_route, request_mirror_policy, read_command_policy).
// Downstream AUTH is checked against downstream_auth_passwords /
// downstream_auth_username; a cluster's RedisProtocolOptions (its
// typed_extension_protocol_options, registered here) authenticate the
// upstream connections. Stats are Envoy's redis.<stat_prefix>.*.
package redis_proxy

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	redisv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/redis_proxy/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/upstream"
)

// Name is the filter's name, which is also the key of its
// RedisProtocolOptions in a cluster's typed_extension_protocol_options.
const Name = "envoy.filters.network.redis_proxy"

// optionsName is the registered name of RedisProtocolOptions.
const optionsName = "envoy.extensions.filters.network.redis_proxy.v3.RedisProtocolOptions"

func init() {
	extension.Register(extension.Extension{Name: Name, Category: extension.NetworkFilter, Config: &redisv3.RedisProxy{},
		Factory: listener.NetworkFilterFactory(func(ctx *listener.Context, cfg proto.Message, _ listener.ChainOptions, path string) (listener.NetworkFilter, error) {
			return compile(ctx, cfg.(*redisv3.RedisProxy), path)
		}),
		Notes: "RESP2 only; mirrors within MULTI transactions, enable_redirection (MOVED/ASK), key_formatter, external auth, " +
			"per-upstream command stats and the envoy.clusters.redis cluster type are not implemented"})
	// Registered as HttpProtocolOptions is, by its type's name; Envoy's
	// key in typed_extension_protocol_options is the filter's name.
	extension.Register(extension.Extension{Name: optionsName, Aliases: []string{Name},
		Category: extension.UpstreamOptions, Config: &redisv3.RedisProtocolOptions{},
		Factory: upstream.ProtocolOptionsFactory(compileProtocolOptions),
		Notes:   "auth_password, auth_username and per-address credentials; aws_iam is not implemented"})
}

// proxyConfig is a compiled RedisProxy, shared by its connections.
type proxyConfig struct {
	router        *router
	opTimeout     time.Duration
	hashtagging   bool
	maxBuffer     int
	flushTimeout  time.Duration
	passwords     []string
	username      string
	latencyMicros bool
	commands      map[string]*command // by lower-case name
	faults        faults
	st            proxyStats
	log           *slog.Logger
	pool          *pool
}

// proxyStats are redis.<stat_prefix>.* (Envoy's ALL_REDIS_PROXY_STATS
// and the splitter's).
type proxyStats struct {
	cxTotal, cxDrainClose, cxProtocolError, rxBytes, txBytes, rqTotal *stats.Counter
	cxActive, rxBuffered, txBuffered, rqActive                        *stats.Gauge
	invalidRequest, unsupportedCommand                                *stats.Counter
}

// commandStats are redis.<stat_prefix>.command.<name>.*.
type commandStats struct {
	total, success, errors, errorFault, delayFault *stats.Counter
	latency                                        *stats.Histogram
}

func compile(ctx *listener.Context, c *redisv3.RedisProxy, path string) (*proxyConfig, error) {
	if err := config.CheckFields(c, path, "stat_prefix", "settings", "latency_in_micros", "prefix_routes",
		"downstream_auth_password", "downstream_auth_passwords", "downstream_auth_username", "custom_commands",
		"protocol_version", "faults", "external_auth_provider"); err != nil {
		return nil, err
	}
	if c.GetExternalAuthProvider() != nil {
		return nil, config.Unsupported(config.Join(path, "external_auth_provider"), "redis external authentication")
	}
	if c.GetProtocolVersion() != redisv3.RedisProxy_RESP2 {
		return nil, config.Unsupported(config.Join(path, "protocol_version"), "protocol_version "+c.GetProtocolVersion().String(), "RESP2")
	}
	cfg := &proxyConfig{opTimeout: time.Second, flushTimeout: 3 * time.Millisecond, latencyMicros: c.GetLatencyInMicros(),
		log: cmp.Or(ctx.Log, slog.Default())}
	cfg.pool = &pool{cfg: cfg}
	sp := config.Join(path, "settings")
	s := c.GetSettings()
	if err := config.CheckFields(s, sp, "op_timeout", "enable_hashtagging", "enable_redirection", "max_buffer_size_before_flush",
		"buffer_flush_timeout", "read_policy", "max_upstream_unknown_connections", "dns_cache_config",
		"enable_command_stats", "connection_rate_limit"); err != nil {
		return nil, err
	}
	if s.GetEnableRedirection() {
		return nil, config.Unsupported(config.Join(sp, "enable_redirection"), "redis redirection (MOVED/ASK)")
	}
	if s.GetEnableCommandStats() {
		return nil, config.Unsupported(config.Join(sp, "enable_command_stats"), "per-upstream redis command stats")
	}
	if s.GetConnectionRateLimit() != nil {
		return nil, config.Unsupported(config.Join(sp, "connection_rate_limit"), "redis connection_rate_limit")
	}
	// read_policy chooses replicas of a Redis Cluster shard; with the
	// ordinary clusters Legate has (envoy.clusters.redis is not
	// implemented) Envoy's load balancer ignores it, as it does
	// max_upstream_unknown_connections and dns_cache_config, which serve
	// redirection only.
	if d := s.GetOpTimeout(); d != nil {
		cfg.opTimeout = d.AsDuration()
	}
	if cfg.opTimeout <= 0 {
		return nil, config.Errorf(config.Join(sp, "op_timeout"), "op_timeout must be positive")
	}
	cfg.hashtagging = s.GetEnableHashtagging()
	cfg.maxBuffer = int(s.GetMaxBufferSizeBeforeFlush())
	if d := s.GetBufferFlushTimeout(); d != nil {
		cfg.flushTimeout = d.AsDuration()
	}
	pw, err := readData(c.GetDownstreamAuthPassword(), config.Join(path, "downstream_auth_password"))
	if err != nil {
		return nil, err
	}
	if pw != "" {
		cfg.passwords = append(cfg.passwords, pw)
	}
	for i, ds := range c.GetDownstreamAuthPasswords() {
		pw, err := readData(ds, config.Index(config.Join(path, "downstream_auth_passwords"), i))
		if err != nil {
			return nil, err
		}
		if pw != "" {
			cfg.passwords = append(cfg.passwords, pw)
		}
	}
	if cfg.username, err = readData(c.GetDownstreamAuthUsername(), config.Join(path, "downstream_auth_username")); err != nil {
		return nil, err
	}
	if cfg.faults, err = compileFaults(ctx, c.GetFaults(), config.Join(path, "faults")); err != nil {
		return nil, err
	}
	if cfg.router, err = compileRouter(ctx, c.GetPrefixRoutes(), config.Join(path, "prefix_routes")); err != nil {
		return nil, err
	}
	sc := ctx.Stats.Scope("redis." + stats.SanitizeName(c.GetStatPrefix()) + ".")
	cfg.st = proxyStats{
		cxTotal: sc.Counter("downstream_cx_total"), cxDrainClose: sc.Counter("downstream_cx_drain_close"),
		cxProtocolError: sc.Counter("downstream_cx_protocol_error"), rxBytes: sc.Counter("downstream_cx_rx_bytes_total"),
		txBytes: sc.Counter("downstream_cx_tx_bytes_total"), rqTotal: sc.Counter("downstream_rq_total"),
		cxActive: sc.Gauge("downstream_cx_active"), rxBuffered: sc.Gauge("downstream_cx_rx_bytes_buffered"),
		txBuffered: sc.Gauge("downstream_cx_tx_bytes_buffered"), rqActive: sc.Gauge("downstream_rq_active"),
		invalidRequest: sc.Counter("splitter.invalid_request"), unsupportedCommand: sc.Counter("splitter.unsupported_command"),
	}
	// Envoy makes every supported command's stats up front.
	cfg.commands = map[string]*command{}
	add := func(name string, kind commandKind) {
		cs := sc.Scope("command." + name + ".")
		cfg.commands[name] = &command{name: name, kind: kind, st: commandStats{total: cs.Counter("total"),
			success: cs.Counter("success"), errors: cs.Counter("error"), errorFault: cs.Counter("error_fault"),
			delayFault: cs.Counter("delay_fault"), latency: cs.Histogram("latency")}}
	}
	for _, n := range simpleCommands {
		add(n, simple)
	}
	for i, n := range c.GetCustomCommands() {
		n = strings.ToLower(n)
		if _, dup := cfg.commands[n]; dup || n == "" {
			return nil, config.Errorf(config.Index(config.Join(path, "custom_commands"), i), "custom command %q is empty or already a command", n)
		}
		add(n, simple)
	}
	for _, n := range []string{"eval", "evalsha", "eval_ro", "evalsha_ro"} {
		add(n, eval)
	}
	for _, n := range []string{"del", "exists", "touch", "unlink"} {
		add(n, sumKeys)
	}
	add("mget", mget)
	add("mset", mset)
	for _, n := range []string{"multi", "exec", "discard"} {
		add(n, transaction)
	}
	return cfg, nil
}

// readData reads a DataSource (inline or from a file or the environment);
// nil or one with no specifier is "".
func readData(ds *corev3.DataSource, path string) (string, error) {
	if ds.GetSpecifier() == nil {
		return "", nil
	}
	b, _, err := config.ReadDataSource(ds, path)
	return string(b), err
}

// router is prefix_routes: the longest matching prefix picks the route.
type router struct {
	routes          []*route // longest prefix first
	caseInsensitive bool
	catchAll        *route
}

type route struct {
	prefix       string
	removePrefix bool
	cluster      *upstream.Ref
	// readCluster is read_command_policy's cluster (nil: cluster).
	readCluster *upstream.Ref
	mirrors     []mirror
}

type mirror struct {
	cluster     *upstream.Ref
	fraction    *runtime.Fractional
	excludeRead bool
}

func compileRouter(ctx *listener.Context, pr *redisv3.RedisProxy_PrefixRoutes, path string) (*router, error) {
	if err := config.CheckFields(pr, path, "routes", "case_insensitive", "catch_all_route"); err != nil {
		return nil, err
	}
	r := &router{caseInsensitive: pr.GetCaseInsensitive()}
	seen := map[string]bool{}
	for i, rt := range pr.GetRoutes() {
		p := config.Index(config.Join(path, "routes"), i)
		c, err := compileRoute(ctx, rt, p)
		if err != nil {
			return nil, err
		}
		if r.caseInsensitive {
			c.prefix = asciiLower(c.prefix)
		}
		if seen[c.prefix] {
			// As Envoy's PrefixRoutes constructor.
			return nil, config.Errorf(config.Join(p, "prefix"), "prefix `%s` already exists.", c.prefix)
		}
		seen[c.prefix] = true
		r.routes = append(r.routes, c)
	}
	sort.SliceStable(r.routes, func(i, j int) bool { return len(r.routes[i].prefix) > len(r.routes[j].prefix) })
	if ca := pr.GetCatchAllRoute(); ca != nil {
		c, err := compileRoute(ctx, ca, config.Join(path, "catch_all_route"))
		if err != nil {
			return nil, err
		}
		r.catchAll = c
	}
	return r, nil
}

func compileRoute(ctx *listener.Context, rt *redisv3.RedisProxy_PrefixRoutes_Route, path string) (*route, error) {
	if err := config.CheckFields(rt, path, "prefix", "remove_prefix", "cluster", "request_mirror_policy", "key_formatter", "read_command_policy"); err != nil {
		return nil, err
	}
	if rt.GetKeyFormatter() != "" {
		return nil, config.Unsupported(config.Join(path, "key_formatter"), "redis key_formatter")
	}
	r := &route{prefix: rt.GetPrefix(), removePrefix: rt.GetRemovePrefix(), cluster: ctx.Clusters.Ref(rt.GetCluster())}
	if rc := rt.GetReadCommandPolicy(); rc != nil {
		if err := config.CheckFields(rc, config.Join(path, "read_command_policy"), "cluster"); err != nil {
			return nil, err
		}
		r.readCluster = ctx.Clusters.Ref(rc.GetCluster())
	}
	for i, m := range rt.GetRequestMirrorPolicy() {
		mp := config.Index(config.Join(path, "request_mirror_policy"), i)
		if err := config.CheckFields(m, mp, "cluster", "runtime_fraction", "exclude_read_commands"); err != nil {
			return nil, err
		}
		mi := mirror{cluster: ctx.Clusters.Ref(m.GetCluster()), excludeRead: m.GetExcludeReadCommands()}
		if f := m.GetRuntimeFraction(); f != nil {
			fr := runtime.NewFractional(ctx.Runtime, f)
			mi.fraction = &fr
		}
		r.mirrors = append(r.mirrors, mi)
	}
	return r, nil
}

// find returns the route of key and the key as sent upstream (without the
// prefix when remove_prefix is set), or nil when no route matches.
func (r *router) find(key string) (*route, string) {
	k := key
	if r.caseInsensitive {
		// ASCII only, as Envoy's absl::AsciiStrToLower: the byte length
		// stays, so the prefix is cut at the right place.
		k = asciiLower(key)
	}
	for _, rt := range r.routes {
		if strings.HasPrefix(k, rt.prefix) {
			if rt.removePrefix {
				return rt, key[len(rt.prefix):]
			}
			return rt, key
		}
	}
	return r.catchAll, key
}

// protocolOptions are a cluster's compiled RedisProtocolOptions.
type protocolOptions struct {
	def         credential
	credentials map[string]credential // by host:port
}

type credential struct{ username, password string }

// credential returns the credential of h: the entry for its address, or
// for its DNS name and port (an endpoint of a DNS cluster, whose
// credential names it as configured), else the default.
func (o *protocolOptions) credential(h *upstream.Host) credential {
	if c, ok := o.credentials[h.Address]; ok {
		return c
	}
	if _, port, err := net.SplitHostPort(h.Address); err == nil && h.Hostname() != "" {
		if c, ok := o.credentials[net.JoinHostPort(h.Hostname(), port)]; ok {
			return c
		}
	}
	return o.def
}

func compileProtocolOptions(msg proto.Message, path string) (any, error) {
	m := msg.(*redisv3.RedisProtocolOptions)
	if err := config.CheckFields(m, path, "auth_password", "auth_username", "credentials", "aws_iam"); err != nil {
		return nil, err
	}
	if m.GetAwsIam() != nil {
		return nil, config.Unsupported(config.Join(path, "aws_iam"), "redis AWS IAM authentication")
	}
	o := &protocolOptions{}
	var err error
	if o.def.password, err = readData(m.GetAuthPassword(), config.Join(path, "auth_password")); err != nil {
		return nil, err
	}
	if o.def.username, err = readData(m.GetAuthUsername(), config.Join(path, "auth_username")); err != nil {
		return nil, err
	}
	for i, c := range m.GetCredentials() {
		cp := config.Index(config.Join(path, "credentials"), i)
		if err := config.CheckFields(c, cp, "address", "auth_password", "auth_username"); err != nil {
			return nil, err
		}
		sa := c.GetAddress().GetSocketAddress()
		if sa == nil {
			return nil, config.Errorf(config.Join(cp, "address"), "a credential needs a socket_address")
		}
		var cr credential
		if cr.password, err = readData(c.GetAuthPassword(), config.Join(cp, "auth_password")); err != nil {
			return nil, err
		}
		if cr.username, err = readData(c.GetAuthUsername(), config.Join(cp, "auth_username")); err != nil {
			return nil, err
		}
		addr := net.JoinHostPort(sa.GetAddress(), fmt.Sprint(sa.GetPortValue()))
		if o.credentials == nil {
			o.credentials = map[string]credential{}
		}
		// The first entry for an address wins, as Envoy.
		if _, ok := o.credentials[addr]; !ok {
			o.credentials[addr] = cr
		}
	}
	return o, nil
}

// asciiLower lowers ASCII letters only, keeping every other byte.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
