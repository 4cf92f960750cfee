// Package server is one Legate proxy instance: it turns a validated
// bootstrap into running clusters, listeners and the admin API, and owns
// the lifecycle (initialization, health-check failing, draining, exit).
//
// Config flows one way: config.LoadBootstrap → Compile (clusters first,
// then listeners, each through the same compile functions that xDS
// updates use) → Start (bind, serve).
package server

import (
	"context"
	"fmt"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/legateproxy/legate/internal/overload"
	"io"
	"log/slog"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	// Every extension implemented outside the core packages.
	_ "github.com/legateproxy/legate/internal/filters/all"

	"github.com/legateproxy/legate/internal/accesslog"
	"github.com/legateproxy/legate/internal/admin"
	"github.com/legateproxy/legate/internal/applog"
	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/memstat"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/statsink"
	"github.com/legateproxy/legate/internal/strmatch"
	"github.com/legateproxy/legate/internal/tlsx"
	"github.com/legateproxy/legate/internal/upstream"
	"github.com/legateproxy/legate/internal/userspace"
	"github.com/legateproxy/legate/internal/xds/resource"
)

// Options are the command-line settings of a proxy instance.
type Options struct {
	ConfigPath     string
	ConfigYAML     string
	ServiceNode    string
	ServiceCluster string
	ServiceZone    string
	DrainTime      time.Duration
	Log            *slog.Logger
	LogLevel       *slog.LevelVar
	Version        string
	CommandLine    []string
	// EnablePprof serves Go's /debug/pprof/ on the admin address.
	EnablePprof bool
	// AppLog is the process's application log, which the bootstrap's
	// application_log_config re-formats at Start (nil: not applied).
	AppLog *AppLog
	// AllowUnknownStaticFields is --allow-unknown-static-fields: unknown
	// fields in the bootstrap are warnings (server.static_unknown_fields).
	AllowUnknownStaticFields bool
}

// AppLog is the application log the command line set up.
type AppLog struct {
	// Swap is the handler every logger writes through.
	Swap *applog.Swap
	// Out is where log lines go (stderr or --log-path).
	Out io.Writer
	// FormatFlag is set when --log-format was given; Escaped is
	// --log-format-escaped.
	FormatFlag, Escaped bool
}

// Server is a running (or compiled, in validate mode) proxy.
type Server struct {
	overload  *overload.Manager
	opts      Options
	Bootstrap *bootstrapv3.Bootstrap
	Warnings  []config.Warning
	Stats     *stats.Store
	Clusters  *upstream.Manager
	// Runtime is the layered runtime (layered_runtime).
	Runtime *runtime.Loader
	sinks   *statsink.Flusher
	// evictEvery is stats_eviction_interval (0: off).
	evictEvery time.Duration
	log        *slog.Logger
	deps       *listener.Context
	// appLog is the handler application_log_config asks for, swapped in
	// at Start.
	appLog slog.Handler

	mu        sync.Mutex
	listeners []*listener.Listener
	admin     *admin.Admin
	adminLog  io.WriteCloser

	start          time.Time
	state          atomic.Value // string
	hcFailed       atomic.Bool
	quit           chan struct{}
	quitOnce       sync.Once
	staticClusters []*upstream.Cluster
	serverStats    serverStats
	watchdog       *watchdog
	dyn            *dynamic
	secrets        *tlsx.Store
	// logFiles are the access-log files this server writes.
	logFiles *accesslog.Files
	// adminLoggers are admin.access_log's loggers.
	adminLoggers []admin.Logger
	// adminAllow is admin.allow_paths (empty: every path).
	adminAllow []strmatch.Matcher
	// rtds holds the RTDS layers' subscriptions (nil without rtds_layers).
	rtds *rtds
	// internal is the internal listener registry (bootstrap extension
	// envoy.bootstrap.internal_listener); nil without it.
	internal *userspace.Registry
}

type serverStats struct {
	live, uptime, concurrency, state *stats.Gauge
	listenersActive                  *stats.Gauge
	// memory_* as Envoy's server stats (see internal/memstat).
	memAllocated, memHeap, memPhysical *stats.Gauge
	// certDays is server.days_until_first_cert_expiring.
	certDays *stats.Gauge
	// static/dynamicUnknown count messages with unknown fields let through
	// (Envoy's server.static_unknown_fields / dynamic_unknown_fields).
	staticUnknown, dynamicUnknown *stats.Counter
	dynamicSeen                   uint64
	panics                        *stats.Counter
	// totalConns is server.total_connections (open downstream
	// connections; with no hot restart there is no parent process, so
	// server.parent_connections stays 0).
	totalConns *stats.Gauge
	// initTime is server.initialization_time_ms.
	initTime *stats.Histogram
}

// Load reads and compiles the configuration without side effects (no
// sockets, no DNS, no health checks), as `--mode validate` needs.
func Load(opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	b, warns, lines, err := config.LoadBootstrapWith(opts.ConfigPath, opts.ConfigYAML, config.LoadOptions{AllowUnknownFields: opts.AllowUnknownStaticFields})
	s := &Server{opts: opts, Warnings: warns, log: opts.Log, quit: make(chan struct{}), start: time.Now()}
	if err != nil {
		return s, err
	}
	s.Bootstrap = b
	if opts.ServiceNode != "" || opts.ServiceCluster != "" || opts.ServiceZone != "" {
		if b.Node == nil {
			b.Node = &corev3.Node{}
		}
		if opts.ServiceNode != "" {
			b.Node.Id = opts.ServiceNode
		}
		if opts.ServiceCluster != "" {
			b.Node.Cluster = opts.ServiceCluster
		}
		if opts.ServiceZone != "" {
			if b.Node.Locality == nil {
				b.Node.Locality = &corev3.Locality{}
			}
			b.Node.Locality.Zone = opts.ServiceZone
		}
	}
	s.state.Store("PRE_INITIALIZING")
	if err := s.compile(); err != nil {
		// Compile errors name config paths; give them source lines too.
		return s, lines.Annotate(err)
	}
	return s, nil
}

// compile checks the bootstrap's fields and compiles static resources.
func (s *Server) compile() error {
	b := s.Bootstrap
	if err := config.CheckFields(b, "", "node", "static_resources", "admin", "layered_runtime", "dynamic_resources",
		"stats_config", "stats_flush_interval", "stats_eviction_interval", "cluster_manager", "overload_manager", "watchdog", "watchdogs",
		"enable_dispatcher_stats", "header_prefix", "use_tcp_for_dns_lookups", "typed_dns_resolver_config",
		"node_context_params", "stats_server_version_override", "default_socket_interface",
		"bootstrap_extensions", "fatal_actions", "hds_config", "stats_sinks",
		// No behavioural effect: Legate creates stats when first used anyway.
		"deferred_stat_options",
		"tracing", "application_log_config", "default_regex_engine"); err != nil {
		return err
	}
	if err := checkRegexEngine(b); err != nil {
		return err
	}
	if t := b.GetTracing(); t != nil {
		if err := config.CheckFields(t, "tracing", "http"); err != nil {
			return err
		}
	}
	if alc := b.GetApplicationLogConfig(); alc != nil {
		if err := config.CheckFields(alc, "application_log_config", "log_format"); err != nil {
			return err
		}
		if s.opts.AppLog == nil {
			// Nothing to apply it to (an embedding without Legate's log
			// handler): say so rather than ignore it.
			s.Warnings = append(s.Warnings, config.Warning{Path: "application_log_config",
				Message: "this embedding writes its own log lines; application_log_config is not applied"})
		} else {
			if s.opts.AppLog.FormatFlag {
				// Envoy refuses the two together.
				return config.Errorf("application_log_config.log_format", "only one of ApplicationLogConfig.log_format or the --log-format option can be given")
			}
			var lv slog.Leveler = slog.LevelInfo
			if s.opts.LogLevel != nil {
				lv = s.opts.LogLevel
			}
			h, err := applog.FromConfig(alc, s.opts.AppLog.Out, lv, s.opts.AppLog.Escaped)
			if err != nil {
				return err
			}
			s.appLog = h
		}
	}

	if b.GetHdsConfig() != nil {
		return config.Unsupported("hds_config", "health discovery service")
	}
	if len(b.GetFatalActions()) > 0 {
		// Envoy runs them while crashing; Legate's crash is Go's.
		return config.Unsupported("fatal_actions", "fatal actions")
	}
	if b.GetEnableDispatcherStats() {
		// Envoy's per-thread event loop histograms (loop_duration_us,
		// poll_delay_us): Legate has no event loop per thread to time.
		return config.Unsupported("enable_dispatcher_stats", "dispatcher statistics (no per-thread event loops)")
	}
	if len(b.GetNodeContextParams()) > 0 {
		// They qualify xdstp:// resource names with node fields, and
		// Legate subscribes by plain names only.
		return config.Unsupported("node_context_params", "xdstp:// context parameters")
	}
	if err := s.compileBootstrapExtensions(b); err != nil {
		return err
	}
	if b.GetHeaderPrefix() != "" {
		return config.Unsupported("header_prefix", "a custom header prefix (x-envoy- is fixed)")
	}
	s.Stats = stats.NewStore()
	if err := configureStats(s.Stats, b.GetStatsConfig()); err != nil {
		return err
	}
	rt, err := runtime.NewWith(b.GetLayeredRuntime(), runtime.Options{Log: applog.Component(s.log, "runtime"), Stats: s.Stats, ServiceCluster: b.GetNode().GetCluster()})
	if err != nil {
		return err
	}
	s.Runtime = rt
	rl := limitsFrom(rt)
	s.serverStats = serverStats{
		live: s.Stats.Gauge("server.live"), uptime: s.Stats.Gauge("server.uptime"),
		concurrency: s.Stats.Gauge("server.concurrency"), state: s.Stats.Gauge("server.state"),
		listenersActive: s.Stats.Gauge("listener_manager.total_listeners_active"),
		panics:          s.Stats.Counter("server.panics"),
		memAllocated:    s.Stats.Gauge("server.memory_allocated"), memHeap: s.Stats.Gauge("server.memory_heap_size"),
		memPhysical:   s.Stats.Gauge("server.memory_physical_size"),
		certDays:      s.Stats.Gauge("server.days_until_first_cert_expiring"),
		staticUnknown: s.Stats.Counter("server.static_unknown_fields"), dynamicUnknown: s.Stats.Counter("server.dynamic_unknown_fields"),
		// The policy and its count are process-wide; count from here.
		dynamicSeen: resource.UnknownFieldsSeen.Load(),
		totalConns:  s.Stats.Gauge("server.total_connections"),
		initTime:    s.Stats.Histogram("server.initialization_time_ms"),
	}
	// Envoy's other server stats, which keep their zero values here: no
	// parent process and no restart epoch without hot restart, no debug
	// assertions or ENVOY_BUG macros, stats flushes are never dropped, and
	// no OCSP responses are stapled.
	s.Stats.Gauge("server.parent_connections")
	s.Stats.Gauge("server.hot_restart_epoch")
	s.Stats.Gauge("server.seconds_until_first_ocsp_response_expiring")
	s.Stats.Counter("server.dropped_stat_flushes")
	s.Stats.Counter("server.debug_assertion_failures")
	s.Stats.Counter("server.envoy_bug_failures")
	// server.version: stats_server_version_override, else (as Envoy) the
	// first six hex digits of the build's source revision as an integer.
	if v := b.GetStatsServerVersionOverride(); v != nil {
		s.Stats.Gauge("server.version").Set(int64(v.GetValue()))
	} else {
		s.Stats.Gauge("server.version").Set(revisionInt())
	}
	for _, w := range s.Warnings {
		if w.Unknown {
			s.serverStats.staticUnknown.Inc()
		}
	}
	om, err := overload.Compile(b.GetOverloadManager(), s.Stats, applog.Component(s.log, "main"))
	if err != nil {
		return err
	}
	s.overload = om
	var outlierEvents *upstream.OutlierEventLog
	var bindCfg *upstream.BindConfig
	if cm := b.GetClusterManager(); cm != nil {
		// enable_deferred_cluster_creation has no behavioural effect:
		// Legate's clusters are cheap values created with the config.
		if err := config.CheckFields(cm, "cluster_manager", "local_cluster_name", "outlier_detection", "enable_deferred_cluster_creation", "upstream_bind_config"); err != nil {
			return err
		}
		if bindCfg, err = upstream.CompileBindConfig(cm.GetUpstreamBindConfig(), "cluster_manager.upstream_bind_config"); err != nil {
			return err
		}
		if od := cm.GetOutlierDetection(); od != nil {
			if err := config.CheckFields(od, "cluster_manager.outlier_detection", "event_log_path"); err != nil {
				return err
			}
			if p := od.GetEventLogPath(); p != "" {
				// Opened on the first event: compiling has no side effects.
				outlierEvents = upstream.NewOutlierEventLog(p, applog.Component(s.log, "upstream"))
			}
		}
	}
	bootDNS, err := bootstrapDNS(b)
	if err != nil {
		return err
	}
	if s.watchdog, err = compileWatchdog(b, s.Stats, applog.Component(s.log, "main")); err != nil {
		return err
	}
	s.Clusters = upstream.NewManager(upstream.Deps{Stats: s.Stats, Log: applog.Component(s.log, "upstream"), Transport: s.clusterTransport,
		LocalCluster: b.GetClusterManager().GetLocalClusterName(), UpstreamFilters: s.upstreamFilters,
		Internal: s.internal, OutlierEvents: outlierEvents, Bind: bindCfg, Runtime: s.Runtime, DNS: bootDNS})
	if s.evictEvery, err = evictionInterval(b); err != nil {
		return err
	}
	if s.sinks, err = statsink.Compile(b, s.Stats, s.Clusters, applog.Component(s.log, "stats")); err != nil {
		return err
	}
	host, _ := os.Hostname()
	s.logFiles = accesslog.NewFiles(s.Stats)
	s.deps = &listener.Context{
		Stats: s.Stats, Clusters: s.Clusters, Log: applog.Component(s.log, "connection"), Hostname: host,
		NodeID: b.GetNode().GetId(), NodeCluster: b.GetNode().GetCluster(),
		ConnIDs: new(atomic.Uint64), Panics: s.serverStats.panics,
		LogFiles:        s.logFiles,
		GlobalConnLimit: globalConnLimit(om, rl.globalConns),
		Overload:        om,
		// One table of listening sockets for the server's listeners,
		// static and dynamic: a listener replacing another on the same
		// address takes its socket.
		Sockets:            listener.NewSockets(applog.Component(s.log, "config")),
		ListenerConnLimits: rl.listenerConns,
	}
	s.deps.Sockets.Internal = s.internal
	s.deps.Health = s
	if om != nil {
		s.deps.Sockets.Gate = om // stop_accepting_connections
	}
	s.deps.DefaultTracer = b.GetTracing().GetHttp()
	s.deps.Runtime = rt
	s.deps.Async = asyncclient.New(s.Clusters)
	// gRPC and OpenTelemetry access logs export through the clusters.
	s.logFiles.SetServices(accesslog.Services{Async: s.deps.Async, Node: b.GetNode(), Log: s.log, Runtime: s.Runtime})
	// The xDS sources come before anything that names one: static
	// clusters may take SDS secrets or EDS endpoints over ADS, and static
	// listeners RDS.
	staticNames := map[string]bool{}
	for _, pc := range b.GetStaticResources().GetClusters() {
		staticNames[pc.GetName()] = true
	}
	s.dyn = newDynamic(s, staticNames)
	s.deps.Routes = s.dyn
	if dr := b.GetDynamicResources(); dr != nil {
		if err := s.dyn.setupDynamic(dr); err != nil {
			return err
		}
	}
	if err := s.checkRTDS(); err != nil {
		return err
	}
	if err := s.setupTLS(); err != nil {
		return err
	}
	// Clusters first: routes validate the cluster names they use.
	names := map[string]bool{}
	for i, pc := range b.GetStaticResources().GetClusters() {
		p := config.Index("static_resources.clusters", i)
		if names[pc.GetName()] {
			return config.Errorf(config.Join(p, "name"), "duplicate cluster name %q", pc.GetName())
		}
		names[pc.GetName()] = true
		if err := s.dyn.checkEDSConfig(pc, p); err != nil {
			return err
		}
		c, err := upstream.Compile(pc, p, s.Clusters.Deps())
		if err != nil {
			return err
		}
		s.staticClusters = append(s.staticClusters, c)
		s.Clusters.Register(c)
	}
	if n := b.GetClusterManager().GetLocalClusterName(); n != "" && !names[n] {
		// As Envoy: the local cluster must be a static cluster.
		return config.Errorf("cluster_manager.local_cluster_name", "no static cluster named %q", n)
	}
	lnames := map[string]bool{}
	laddrs := map[string]string{}
	for i, pl := range b.GetStaticResources().GetListeners() {
		p := config.Index("static_resources.listeners", i)
		if lnames[pl.GetName()] && pl.GetName() != "" {
			return config.Errorf(config.Join(p, "name"), "duplicate listener name %q", pl.GetName())
		}
		lnames[pl.GetName()] = true
		l, err := listener.Compile(pl, p, s.deps)
		if err != nil {
			return err
		}
		// Listeners on one address would share its socket (the table hands
		// the open one out): as Envoy, two listeners may not have the same
		// address. Port 0 binds a new port for each.
		if other, dup := laddrs[l.AddressKey()]; dup && !portZero(l.Address) {
			return config.Errorf(config.Join(p, "address"), "address %s is already used by listener %q", l.Address, other)
		}
		laddrs[l.AddressKey()] = l.Name
		s.listeners = append(s.listeners, l)
	}
	if a := b.GetAdmin(); a != nil {
		if err := config.CheckFields(a, "admin", "address", "access_log_path", "access_log", "profile_path", "socket_options", "ignore_global_conn_limit", "allow_paths"); err != nil {
			return err
		}
		for i, m := range a.GetAllowPaths() {
			sm, err := strmatch.Compile(m, config.Index("admin.allow_paths", i))
			if err != nil {
				return err
			}
			s.adminAllow = append(s.adminAllow, sm)
		}
		if len(a.GetAccessLog()) > 0 {
			ls, err := accesslog.Compile(a.GetAccessLog(), "admin.access_log", s.logFiles)
			if err != nil {
				return err
			}
			for _, l := range ls {
				s.adminLoggers = append(s.adminLoggers, l)
			}
		}
		if a.GetAddress() != nil {
			if p := a.GetAddress().GetPipe(); p != nil {
				if err := listener.CheckPipe(p, "admin.address.pipe"); err != nil {
					return err
				}
			} else if a.GetAddress().GetSocketAddress() == nil {
				return config.Unsupported("admin.address", "an internal admin address", "socket_address", "pipe")
			}
		}
	}
	return nil
}

// Start binds the listeners and the admin address, starts the clusters
// (waiting for their initialization, as Envoy does before listening) and
// begins serving.
func (s *Server) Start() error {
	if s.appLog != nil {
		s.opts.AppLog.Swap.Set(s.appLog)
	}
	s.state.Store("INITIALIZING")
	s.overload.Start()
	s.Runtime.Start()
	s.sinks.Start()
	for _, c := range s.staticClusters {
		c.Start()
	}
	// xDS connects now: static EDS clusters wait for their endpoints and
	// static listeners for their RDS and SDS resources.
	s.dyn.start(s.staticClusters, s.listeners)
	deadline := time.After(15 * time.Second)
	for _, c := range s.staticClusters {
		select {
		case <-c.Ready():
		case <-deadline:
			s.log.Warn("cluster initialization is taking long; starting listeners anyway", "cluster", c.Name)
		}
	}
	if a := s.Bootstrap.GetAdmin(); a.GetAddress() != nil {
		var w io.WriteCloser
		if p := a.GetAccessLogPath(); p != "" && p != "/dev/null" {
			f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				return fmt.Errorf("admin.access_log_path: %w", err)
			}
			w = f
			s.adminLog = f
		}
		s.admin = admin.New(s, s.Stats, s.log, w, s.opts.EnablePprof)
		s.admin.SetAccessLoggers(s.adminLoggers)
		if len(s.adminAllow) > 0 {
			allow := s.adminAllow
			s.admin.SetAllowPaths(func(path string) bool {
				for _, m := range allow {
					if m.Match(path) {
						return true
					}
				}
				return false
			})
		}
		if p := a.GetAddress().GetPipe(); p != nil {
			ln, err := listener.ListenPipe(p.GetPath(), os.FileMode(p.GetMode()))
			if err != nil {
				return fmt.Errorf("admin: bind %s: %w", p.GetPath(), err)
			}
			s.admin.ListenOn(ln)
		} else {
			sa := a.GetAddress().GetSocketAddress()
			if err := s.admin.Listen(fmt.Sprintf("%s:%d", bracket(sa.GetAddress()), sa.GetPortValue())); err != nil {
				return err
			}
		}
		go s.admin.Serve()
	}
	s.rtds.wait()
	s.dyn.waitStatic()
	for _, l := range s.listeners {
		if err := l.Bind(); err != nil {
			s.closeListeners()
			return err
		}
	}
	for _, l := range s.listeners {
		l.Start() // bound just above: its socket's accept loop serves it now
	}
	s.serverStats.concurrency.Set(int64(Workers()))
	go s.tick()
	go s.watchdog.run(s.quit)
	if s.evictEvery > 0 {
		go s.evictLoop()
	}
	if s.dyn.initialFetch == 0 && len(s.dyn.ready) > 0 {
		// initial_fetch_timeout: 0s disables the bound (Istio's
		// bootstrap): as Envoy, initialization waits for the first CDS/LDS
		// responses however long they take; meanwhile the server is
		// INITIALIZING (/ready answers 503) and serves what is bound.
		go func() {
			s.dyn.waitInitial()
			s.goLive()
		}()
		return nil
	}
	s.dyn.waitInitial()
	s.goLive()
	return nil
}

// goLive ends initialization.
func (s *Server) goLive() {
	s.refreshListenerStats()
	if s.state.CompareAndSwap("INITIALIZING", "LIVE") {
		s.serverStats.initTime.Record(float64(time.Since(s.start).Milliseconds()))
	}
	if s.State() == "LIVE" {
		s.serverStats.live.Set(1)
	}
}

// bootstrapDNS is the bootstrap's DNS resolution (typed_dns_resolver_config,
// else use_tcp_for_dns_lookups), which clusters and DNS caches without
// their own use; nil: the system's.
func bootstrapDNS(b *bootstrapv3.Bootstrap) (*upstream.DNSSettings, error) {
	if tc := b.GetTypedDnsResolverConfig(); tc != nil {
		s := &upstream.DNSSettings{}
		return s, upstream.CompileDNSResolver(tc, "typed_dns_resolver_config", s)
	}
	if b.GetUseTcpForDnsLookups() {
		return &upstream.DNSSettings{UseTCP: true}, nil
	}
	return nil, nil
}

// revisionInt is the build's VCS revision's first six hex digits as an
// integer (Envoy's server.version); 0 when the build records none.
func revisionInt() int64 {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return 0
	}
	for _, kv := range bi.Settings {
		if kv.Key == "vcs.revision" && len(kv.Value) >= 6 {
			if v, err := strconv.ParseInt(kv.Value[:6], 16, 64); err == nil {
				return v
			}
		}
	}
	return 0
}

func bracket(h string) string {
	for i := 0; i < len(h); i++ {
		if h[i] == ':' {
			return "[" + h + "]"
		}
	}
	return h
}

// evictionInterval reads stats_eviction_interval: a multiple of
// stats_flush_interval (default 5 s), as Envoy requires; 0 when unset.
func evictionInterval(b *bootstrapv3.Bootstrap) (time.Duration, error) {
	d := b.GetStatsEvictionInterval()
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
		return 0, config.Errorf("stats_eviction_interval", "not a valid duration")
	}
	ev := d.AsDuration()
	if ev == 0 {
		return 0, nil
	}
	flush := 5 * time.Second
	if f := b.GetStatsFlushInterval(); f != nil {
		flush = f.AsDuration()
	}
	if flush <= 0 || ev%flush != 0 {
		return 0, config.Errorf("stats_eviction_interval", "%s is not a multiple of stats_flush_interval (%s)", ev, flush)
	}
	return ev, nil
}

// evictLoop runs stats_eviction_interval's rounds until the server stops.
func (s *Server) evictLoop() {
	t := time.NewTicker(s.evictEvery)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
			s.Stats.Evict()
		}
	}
}

func (s *Server) tick() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	s.serverStats.certDays.Set(s.daysUntilFirstCertExpiring())
	for n := 1; ; n++ {
		select {
		case <-s.quit:
			return
		case <-t.C:
			if n%5 == 0 {
				// Envoy refreshes it at each stats flush (5 s by default).
				s.serverStats.certDays.Set(s.daysUntilFirstCertExpiring())
			}
			s.serverStats.uptime.Set(int64(time.Since(s.start).Seconds()))
			if s.deps != nil {
				s.serverStats.totalConns.Set(s.deps.ActiveConnections())
			}
			m := memstat.Read()
			s.serverStats.memAllocated.Set(int64(m.Allocated))
			s.serverStats.memHeap.Set(int64(m.HeapSize))
			s.serverStats.memPhysical.Set(int64(m.Physical))
			if n := resource.UnknownFieldsSeen.Load(); n > s.serverStats.dynamicSeen {
				s.serverStats.dynamicUnknown.Add(n - s.serverStats.dynamicSeen)
				s.serverStats.dynamicSeen = n
			}
		}
	}
}

// staticListeners returns the listeners from static_resources.
func (s *Server) staticListeners() []*listener.Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*listener.Listener(nil), s.listeners...)
}

// allListeners returns static and active dynamic listeners: one per name
// (a dynamic listener whose update warms is the active version it will
// replace).
func (s *Server) allListeners() []*listener.Listener {
	out := s.staticListeners()
	if s.dyn != nil {
		s.dyn.mu.Lock()
		for _, dl := range s.dyn.listeners {
			switch {
			case !dl.warming:
				out = append(out, dl.l)
			case dl.replaces != nil:
				out = append(out, dl.replaces)
			}
		}
		s.dyn.mu.Unlock()
	}
	return out
}

func (s *Server) refreshListenerStats() {
	s.serverStats.listenersActive.Set(int64(len(s.allListeners())))
}

func (s *Server) closeListeners() {
	for _, l := range s.listeners {
		l.StopAccepting()
	}
}

// AdminAddress returns the bound admin address, or "".
func (s *Server) AdminAddress() string {
	if s.admin == nil {
		return ""
	}
	return s.admin.Addr()
}

// ListenerAddresses returns the bound address of each listener by name.
func (s *Server) ListenerAddresses() map[string]string {
	out := map[string]string{}
	for _, l := range s.allListeners() {
		out[l.Name] = l.BoundAddress()
	}
	return out
}

// Done is closed when the server is asked to quit (/quitquitquit).
func (s *Server) Done() <-chan struct{} { return s.quit }

// Shutdown stops accepting, lets in-flight requests finish for up to the
// drain time, then closes everything.
func (s *Server) Shutdown(ctx context.Context) {
	s.state.Store("DRAINING")
	s.overload.Stop()
	s.Runtime.Stop()
	s.sinks.Stop()
	s.serverStats.live.Set(0)
	drain := s.opts.DrainTime
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < drain {
		drain = time.Until(dl)
	}
	if s.dyn != nil {
		s.dyn.stop()
	}
	if s.secrets != nil {
		s.secrets.Close()
	}
	var wg sync.WaitGroup
	for _, l := range s.allListeners() {
		wg.Add(1)
		go func(l *listener.Listener) {
			defer wg.Done()
			l.Drain(drain)
		}(l)
	}
	wg.Wait()
	if s.admin != nil {
		s.admin.Close()
	}
	if s.adminLog != nil {
		s.adminLog.Close()
	}
	s.Clusters.CloseAll()
	s.logFiles.Close()
	s.quitOnce.Do(func() { close(s.quit) })
}

// --- admin.Server ---

// Workers is the proxy's worker count, Envoy's concurrency: the Go Ps that
// run its goroutines (GOMAXPROCS, which --concurrency sets). It is what
// server.concurrency and /server_info's command_line_options.concurrency
// report.
func Workers() int { return goruntime.GOMAXPROCS(0) }

// State reports the server state for /ready and /server_info.
func (s *Server) State() string {
	st := s.state.Load().(string)
	if st == "LIVE" && s.hcFailed.Load() {
		return "DRAINING"
	}
	return st
}

// ServerInfo renders /server_info.
func (s *Server) ServerInfo() proto.Message {
	st := adminv3.ServerInfo_LIVE
	switch s.State() {
	case "DRAINING":
		st = adminv3.ServerInfo_DRAINING
	case "PRE_INITIALIZING":
		st = adminv3.ServerInfo_PRE_INITIALIZING
	case "INITIALIZING":
		st = adminv3.ServerInfo_INITIALIZING
	}
	up := durationpb.New(time.Since(s.start).Truncate(time.Second))
	return &adminv3.ServerInfo{
		Version:            "legate/" + s.opts.Version + "/envoy-compatible",
		State:              st,
		UptimeCurrentEpoch: up,
		UptimeAllEpochs:    up,
		HotRestartVersion:  "disabled",
		CommandLineOptions: &adminv3.CommandLineOptions{
			ConfigPath:     s.opts.ConfigPath,
			ConfigYaml:     s.opts.ConfigYAML,
			ServiceNode:    s.opts.ServiceNode,
			ServiceCluster: s.opts.ServiceCluster,
			DrainTime:      durationpb.New(s.opts.DrainTime),
			LogLevel:       admin.LevelName(s.opts.LogLevel.Level()),
			Mode:           adminv3.CommandLineOptions_Serve,
			Concurrency:    uint32(Workers()),
		},
		Node: s.Bootstrap.GetNode(),
	}
}

// WriteClusters renders /clusters.
func (s *Server) WriteClusters(w io.Writer, jsonFormat bool) error {
	return s.Clusters.WriteClusters(w, jsonFormat)
}

// Listeners lists the active listeners, static and dynamic, with their
// bound addresses (/listeners).
func (s *Server) Listeners() [][2]string {
	ls := s.allListeners()
	out := make([][2]string, 0, len(ls))
	for _, l := range ls {
		out = append(out, [2]string{l.Name, l.BoundAddress()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// SetHealthCheckFailed implements /healthcheck/fail and /healthcheck/ok.
func (s *Server) SetHealthCheckFailed(failed bool) {
	s.hcFailed.Store(failed)
	if failed {
		s.serverStats.live.Set(0)
		// As Envoy, failing health checks starts draining the connections
		// of listeners with drain_type DEFAULT: responses carry
		// "connection: close" and idle connections are closed, so clients
		// move elsewhere while in-flight requests finish.
		for _, l := range s.allListeners() {
			if pl, _, _ := l.Current(); pl.GetDrainType() == listenerv3.Listener_DEFAULT {
				l.DrainConnections()
			}
		}
	} else if s.state.Load() == "LIVE" {
		s.serverStats.live.Set(1)
	}
}

// DrainListeners implements /drain_listeners: listeners stop accepting
// and their connections are drained over the drain time (graceful) or at
// once.
func (s *Server) DrainListeners(inboundOnly, graceful bool) {
	drain := time.Duration(0)
	if graceful {
		drain = s.opts.DrainTime
	}
	for _, l := range s.allListeners() {
		if pl, _, _ := l.Current(); inboundOnly && pl.GetTrafficDirection() == corev3.TrafficDirection_OUTBOUND {
			continue
		}
		go l.Drain(drain)
	}
}

// Quit implements /quitquitquit.
func (s *Server) Quit() { s.quitOnce.Do(func() { close(s.quit) }) }

// LogLevel is the process log level.
func (s *Server) LogLevel() *slog.LevelVar { return s.opts.LogLevel }

// configureStats applies stats_config: custom tags (stats_tags),
// use_all_default_tags and the stats_matcher.
func configureStats(st *stats.Store, sc *metricsv3.StatsConfig) error {
	if sc == nil {
		return nil
	}
	if err := config.CheckFields(sc, "stats_config", "use_all_default_tags", "stats_tags", "stats_matcher", "histogram_bucket_settings"); err != nil {
		return err
	}
	if err := configureHistogramBuckets(st, sc.GetHistogramBucketSettings()); err != nil {
		return err
	}
	var rules []stats.TagRule
	for i, t := range sc.GetStatsTags() {
		p := config.Index("stats_config.stats_tags", i)
		switch {
		case t.GetFixedValue() != "":
			rules = append(rules, stats.FixedTag(t.GetTagName(), t.GetFixedValue()))
		case t.GetRegex() != "":
			r, err := stats.NewTagRule(t.GetTagName(), t.GetRegex())
			if err != nil {
				return config.Errorf(config.Join(p, "regex"), "%v", err)
			}
			rules = append(rules, r)
		default:
			// Envoy: a default tag name with no regex takes Envoy's regex.
			r, ok := stats.DefaultTagRule(t.GetTagName())
			if !ok {
				return config.Errorf(p, "tag %q has no regex or fixed_value and is not one of Envoy's default tags", t.GetTagName())
			}
			rules = append(rules, r)
		}
	}
	useDefaults := sc.GetUseAllDefaultTags() == nil || sc.GetUseAllDefaultTags().GetValue()
	var include func(string) bool
	if m := sc.GetStatsMatcher(); m != nil {
		p := "stats_config.stats_matcher"
		compile := func(list *matcherv3.ListStringMatcher, lp string) (func(string) bool, error) {
			var ms []func(string) bool
			for i, sm := range list.GetPatterns() {
				f, err := route.CompileStringMatcher(sm, config.Index(config.Join(lp, "patterns"), i))
				if err != nil {
					return nil, err
				}
				ms = append(ms, f)
			}
			return func(name string) bool {
				for _, f := range ms {
					if f(name) {
						return true
					}
				}
				return false
			}, nil
		}
		switch sm := m.GetStatsMatcher().(type) {
		case *metricsv3.StatsMatcher_RejectAll:
			if sm.RejectAll {
				include = func(string) bool { return false }
			}
		case *metricsv3.StatsMatcher_InclusionList:
			f, err := compile(sm.InclusionList, config.Join(p, "inclusion_list"))
			if err != nil {
				return err
			}
			include = f
		case *metricsv3.StatsMatcher_ExclusionList:
			f, err := compile(sm.ExclusionList, config.Join(p, "exclusion_list"))
			if err != nil {
				return err
			}
			include = func(name string) bool { return !f(name) }
		}
	}
	st.Configure(rules, useDefaults, include)
	return nil
}

// configureHistogramBuckets applies stats_config.histogram_bucket_settings
// (Envoy: match and at least one unique bucket bound above 0; bins sizes
// Envoy's internal circllhist only, so it has no effect here).
func configureHistogramBuckets(st *stats.Store, settings []*metricsv3.HistogramBucketSettings) error {
	var rules []stats.BucketRule
	for i, hb := range settings {
		p := config.Index("stats_config.histogram_bucket_settings", i)
		if err := config.CheckFields(hb, p, "match", "buckets", "bins"); err != nil {
			return err
		}
		if hb.GetMatch() == nil {
			return config.Errorf(config.Join(p, "match"), "match is required")
		}
		m, err := route.CompileStringMatcher(hb.GetMatch(), config.Join(p, "match"))
		if err != nil {
			return err
		}
		if len(hb.GetBuckets()) == 0 {
			return config.Errorf(config.Join(p, "buckets"), "buckets needs at least one bound")
		}
		seen := map[float64]bool{}
		for j, b := range hb.GetBuckets() {
			if !(b > 0) || seen[b] {
				return config.Errorf(config.Index(config.Join(p, "buckets"), j), "bucket bound %v must be greater than 0 and unique", b)
			}
			seen[b] = true
		}
		rules = append(rules, stats.BucketRule{Match: m, Buckets: hb.GetBuckets()})
	}
	st.SetHistogramBuckets(rules)
	return nil
}

// globalConnLimit is the downstream_connections monitor's limit, else the
// runtime's overload.global_downstream_max_connections (Envoy prefers the
// monitor when both are set).
func globalConnLimit(om *overload.Manager, runtimeLimit uint64) uint64 {
	if n := om.MaxDownstreamConnections(); n > 0 {
		return n
	}
	return runtimeLimit
}

// HealthCheckFailing reports /healthcheck/fail or draining (the
// health_check HTTP filter answers 503 then).
func (s *Server) HealthCheckFailing() bool { return s.State() != "LIVE" }
