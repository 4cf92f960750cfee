package upstream

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	cares "github.com/envoyproxy/go-control-plane/envoy/extensions/network/dns_resolver/cares/v3"
	httpopts "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/userspace"
)

// Deps are what compiling a cluster needs from the server.
type Deps struct {
	Stats *stats.Store
	Log   *slog.Logger
	// Transport builds the TLS transport socket of a cluster; alpn is the
	// default ALPN for its protocol. nil means transport sockets are not
	// supported.
	Transport func(ts *corev3.TransportSocket, path string, c *clusterv3.Cluster, alpn []string) (TransportSocket, error)
	// LocalCluster is cluster_manager.local_cluster_name.
	LocalCluster string
	// UpstreamFilters compiles a cluster's upstream HTTP filters
	// (HttpProtocolOptions.http_filters) into its UpstreamFilters; nil
	// refuses them.
	UpstreamFilters func(cluster string, fs []*hcmv3.HttpFilter, path string) (any, error)
	// Internal is the server's internal listener registry, which
	// envoy_internal_address endpoints connect to; nil (no
	// envoy.bootstrap.internal_listener extension): connecting to one
	// fails, as in Envoy.
	Internal *userspace.Registry
	// OutlierEvents is cluster_manager.outlier_detection.event_log_path's
	// log (nil: none).
	OutlierEvents *OutlierEventLog
	// DNS is the bootstrap's typed_dns_resolver_config and
	// use_tcp_for_dns_lookups, which DNS clusters and DNS caches without
	// resolver settings of their own use; nil: the system's.
	DNS *DNSSettings
	// Bind is cluster_manager.upstream_bind_config (CompileBindConfig),
	// which clusters without an upstream_bind_config of their own bind
	// their upstream connections with; nil: none.
	Bind *BindConfig
	// Runtime is the server's layered runtime, whose keys override
	// cluster settings where Envoy reads them (outlier_detection.*,
	// health_check.min_interval/max_interval,
	// upstream.healthy_panic_threshold); nil: none.
	Runtime *runtime.Loader
}

const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// ProtocolOptionsFactory is the Factory of an extension.UpstreamOptions
// registration other than HttpProtocolOptions: it compiles the cluster's
// typed_extension_protocol_options entry (path locates it), and the
// cluster keeps the result for the extension (Cluster.ProtocolOptions).
type ProtocolOptionsFactory func(msg proto.Message, path string) (any, error)

func init() {
	extension.Register(extension.Extension{Name: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", Category: extension.UpstreamOptions,
		Config: &httpopts.HttpProtocolOptions{}, Factory: struct{}{}})
	extension.Register(extension.Extension{Name: "envoy.network.dns_resolver.cares", Category: extension.DNSResolver,
		Config: &cares.CaresDnsResolverConfig{}, Factory: struct{}{},
		Notes: "resolved with Go's resolver against the configured servers; c-ares options that change behaviour are refused"})
}

// Compile validates a cluster definition and builds a (not yet started)
// Cluster. path locates the cluster in error messages.
func Compile(orig *clusterv3.Cluster, path string, deps Deps) (*Cluster, error) {
	// load_balancing_policy becomes the lb_policy fields it stands for;
	// the cluster keeps its original proto for the config dump.
	pc, cs, err := applyLBPolicy(orig, path, deps)
	if err != nil {
		return nil, err
	}
	if err := config.CheckFields(pc, path, "load_balancing_policy",
		"name", "alt_stat_name", "type", "connect_timeout", "lb_policy", "load_assignment",
		"dns_refresh_rate", "dns_failure_refresh_rate", "dns_lookup_family", "dns_resolvers",
		"typed_dns_resolver_config", "use_tcp_for_dns_lookups",
		"typed_extension_protocol_options", "http2_protocol_options", "http_protocol_options",
		"common_http_protocol_options", "max_requests_per_connection",
		"common_lb_config", "least_request_lb_config", "round_robin_lb_config", "ring_hash_lb_config", "maglev_lb_config",
		"health_checks", "circuit_breakers", "transport_socket", "eds_cluster_config", "outlier_detection",
		// no behavioural effect here: buffer limits (we stream), TCP keepalive,
		// metadata (used by matchers only), cleanup interval, warm-on-init.
		"per_connection_buffer_limit_bytes", "upstream_connection_options", "metadata", "cleanup_interval",
		"wait_for_warm_on_init", "close_connections_on_host_health_failure", "ignore_health_on_host_removal",
		"track_cluster_stats", "dns_jitter", "respect_dns_ttl", "original_dst_lb_config", "cluster_type",
		"upstream_config", "lb_subset_config", "upstream_bind_config", "transport_socket_matches",
	); err != nil {
		return nil, err
	}
	log := deps.Log
	if log == nil {
		log = slog.Default()
	}
	statName := pc.GetName()
	if pc.GetAltStatName() != "" {
		statName = pc.GetAltStatName()
	}
	scope := deps.Stats.Scope("cluster." + stats.SanitizeName(statName) + ".")
	c := &Cluster{
		Name:           pc.GetName(),
		Proto:          orig,
		Stats:          newStats(scope),
		connectTimeout: 5 * time.Second,
		IdleTimeout:    time.Hour,
		rqPending:      scope.Gauge("upstream_rq_pending_active"),
		byAddr:         map[string]*Host{},
		stop:           make(chan struct{}),
		ready:          make(chan struct{}),
		log:            log,
		internal:       deps.Internal,
		LastUpdated:    time.Now(),
		lb: lbConfig{choiceCount: 2, activeRqBias: 1, panicThreshold: 50, overprovision: 1.4, rt: deps.Runtime,
			ringMin: 1024, ringMax: 8 * 1024 * 1024, maglevSize: 65537},
	}
	c.lb.panicStat = c.Stats.LBHealthyPanic
	if deps.Stats != nil {
		c.cmUpdated = deps.Stats.Counter("cluster_manager.cluster_updated")
	}
	if pc.GetConnectTimeout() != nil {
		c.connectTimeout = pc.GetConnectTimeout().AsDuration()
	}
	// As Envoy: the cluster's own bind config, else the bootstrap's.
	c.bind = deps.Bind
	if bc := pc.GetUpstreamBindConfig(); bc != nil {
		if c.bind, err = CompileBindConfig(bc, config.Join(path, "upstream_bind_config")); err != nil {
			return nil, err
		}
	}
	if err := c.compileLB(pc, path); err != nil {
		return nil, err
	}
	if cs != nil { // client_side_weighted_round_robin (lb_cswrr.go)
		c.lb.cswrr = cs
		cs.attach(c, scope)
	}
	if sc := pc.GetLbSubsetConfig(); sc != nil {
		// As Envoy: subsets need hosts known in advance, so not with
		// clusters that choose their hosts themselves.
		if pc.GetLbPolicy() == clusterv3.Cluster_CLUSTER_PROVIDED || pc.GetType() == clusterv3.Cluster_ORIGINAL_DST || pc.GetClusterType() != nil {
			return nil, config.Errorf(config.Join(path, "lb_subset_config"), "subset load balancing cannot be used with lb_policy %s or a cluster that provides its own load balancer", pc.GetLbPolicy())
		}
		if c.subset, err = compileSubset(sc, config.Join(path, "lb_subset_config"), c.lb, scope); err != nil {
			return nil, err
		}
	}
	if err := c.compileProtocol(pc, path, deps); err != nil {
		return nil, err
	}
	if err := c.compileUpstreamConfig(pc.GetUpstreamConfig(), config.Join(path, "upstream_config")); err != nil {
		return nil, err
	}
	if err := c.compileBreakers(pc.GetCircuitBreakers(), config.Join(path, "circuit_breakers"), scope); err != nil {
		return nil, err
	}
	if ts := pc.GetTransportSocket(); ts != nil {
		if deps.Transport == nil {
			return nil, config.Unsupported(config.Join(path, "transport_socket"), "transport_socket")
		}
		alpn := []string{"http/1.1"}
		if c.Protocol == HTTP2 {
			alpn = []string{"h2"}
		}
		t, err := deps.Transport(ts, config.Join(path, "transport_socket"), pc, alpn)
		if err != nil {
			return nil, err
		}
		if v, ok := t.(interface{ SetSANValidation(bool) }); ok {
			v.SetSANValidation(c.autoSANValidation)
		}
		if pp, ok := t.(ProxyProtocolSender); ok && pp.SendsProxyProtocol() {
			// Each downstream connection needs upstream connections of its
			// own (their PROXY headers differ); only the HTTP/1.1 pool
			// keeps them apart.
			if c.Protocol != HTTP1 {
				return nil, config.Unsupported(config.Join(path, "transport_socket"), "upstream_proxy_protocol on a cluster that may speak HTTP/2 upstream", "HTTP/1.1 clusters")
			}
			c.sendsPP = true
		}
		c.transport = t
	}
	{
		alpn := []string{"http/1.1"}
		if c.Protocol == HTTP2 {
			alpn = []string{"h2"}
		}
		if err := c.compileTransportMatches(pc, path, deps, alpn, scope); err != nil {
			return nil, err
		}
	}
	if err := c.checkHTTP3Transport(path, scope); err != nil {
		return nil, err
	}
	if od := pc.GetOutlierDetection(); od != nil {
		cfg, err := compileOutlier(od, config.Join(path, "outlier_detection"))
		if err != nil {
			return nil, err
		}
		c.outlier = &outlierDetector{cfg: cfg, c: c, rt: deps.Runtime, stats: newOutlierStats(scope.Scope("outlier_detection.")), now: time.Now}
		c.eventLog = deps.OutlierEvents
	}
	if hcs := pc.GetHealthChecks(); len(hcs) > 0 {
		if len(hcs) > 1 {
			return nil, config.Errorf(config.Join(path, "health_checks"), "only one health check per cluster is supported")
		}
		hk, err := newHealthChecker(c, hcs[0], config.Index(config.Join(path, "health_checks"), 0))
		if err != nil {
			return nil, err
		}
		c.health = hk
	}
	if err := c.compileDiscovery(pc, path, deps); err != nil {
		return nil, err
	}
	if uco := pc.GetUpstreamConnectionOptions(); uco != nil {
		p := config.Join(path, "upstream_connection_options")
		if err := config.CheckFields(uco, p, "tcp_keepalive"); err != nil {
			return nil, err
		}
		if ka := uco.GetTcpKeepalive(); ka != nil {
			c.keepAlive = net.KeepAliveConfig{Enable: true, Count: -1, Idle: -1, Interval: -1}
			if v := ka.GetKeepaliveProbes(); v != nil {
				c.keepAlive.Count = int(v.GetValue())
			}
			if v := ka.GetKeepaliveTime(); v != nil {
				c.keepAlive.Idle = time.Duration(v.GetValue()) * time.Second
			}
			if v := ka.GetKeepaliveInterval(); v != nil {
				c.keepAlive.Interval = time.Duration(v.GetValue()) * time.Second
			}
		}
	}
	c.closeOnHCFail = pc.GetCloseConnectionsOnHostHealthFailure()
	if c.Protocol != HTTP1 {
		c.h2 = newH2Client(c)
	}
	c.hosts.Store(buildHostSet(nil, &c.lb))
	return c, nil
}

func (c *Cluster) compileLB(pc *clusterv3.Cluster, path string) error {
	switch pc.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		c.lb.policy = RoundRobin
	case clusterv3.Cluster_LEAST_REQUEST:
		c.lb.policy = LeastRequest
	case clusterv3.Cluster_RANDOM:
		c.lb.policy = Random
	case clusterv3.Cluster_RING_HASH:
		c.lb.policy = RingHash
	case clusterv3.Cluster_MAGLEV:
		c.lb.policy = Maglev
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		if pc.GetType() != clusterv3.Cluster_ORIGINAL_DST && pc.GetClusterType() == nil {
			return config.Errorf(config.Join(path, "lb_policy"), "CLUSTER_PROVIDED is only for clusters that choose their hosts themselves (type ORIGINAL_DST)")
		}
	default:
		return config.Unsupported(config.Join(path, "lb_policy"), pc.GetLbPolicy().String(), "ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV")
	}
	if lr := pc.GetLeastRequestLbConfig(); lr != nil {
		p := config.Join(path, "least_request_lb_config")
		if err := config.CheckFields(lr, p, "choice_count", "active_request_bias", "slow_start_config"); err != nil {
			return err
		}
		if err := c.compileSlowStart(lr.GetSlowStartConfig(), config.Join(p, "slow_start_config")); err != nil {
			return err
		}
		if v := lr.GetChoiceCount(); v != nil {
			c.lb.choiceCount = int(v.GetValue())
		}
		if v := lr.GetActiveRequestBias(); v != nil {
			c.lb.activeRqBias = v.GetDefaultValue()
		}
	}
	if rr := pc.GetRoundRobinLbConfig(); rr != nil {
		if err := config.CheckFields(rr, config.Join(path, "round_robin_lb_config"), "slow_start_config"); err != nil {
			return err
		}
		if err := c.compileSlowStart(rr.GetSlowStartConfig(), config.Join(path, "round_robin_lb_config.slow_start_config")); err != nil {
			return err
		}
	}
	if rh := pc.GetRingHashLbConfig(); rh != nil {
		p := config.Join(path, "ring_hash_lb_config")
		if err := config.CheckFields(rh, p, "minimum_ring_size", "maximum_ring_size", "hash_function"); err != nil {
			return err
		}
		if rh.GetHashFunction() != clusterv3.Cluster_RingHashLbConfig_XX_HASH {
			return config.Unsupported(config.Join(p, "hash_function"), rh.GetHashFunction().String(), "XX_HASH")
		}
		if v := rh.GetMinimumRingSize(); v != nil {
			c.lb.ringMin = v.GetValue()
		}
		if v := rh.GetMaximumRingSize(); v != nil {
			c.lb.ringMax = v.GetValue()
		}
	}
	if mg := pc.GetMaglevLbConfig(); mg != nil {
		p := config.Join(path, "maglev_lb_config")
		if err := config.CheckFields(mg, p, "table_size"); err != nil {
			return err
		}
		if v := mg.GetTableSize(); v != nil {
			c.lb.maglevSize = v.GetValue()
		}
	}
	if cl := pc.GetCommonLbConfig(); cl != nil {
		p := config.Join(path, "common_lb_config")
		if err := config.CheckFields(cl, p, "healthy_panic_threshold", "update_merge_window", "locality_weighted_lb_config", "override_host_status"); err != nil {
			return err
		}
		if st := cl.GetOverrideHostStatus(); st != nil {
			c.lb.overrideStatuses = compileOverrideStatuses(st)
		}
		if cl.GetLocalityWeightedLbConfig() != nil {
			switch c.lb.policy {
			case RoundRobin, LeastRequest, Random:
				c.lb.localityWeighted = true
			default:
				return config.Errorf(config.Join(p, "locality_weighted_lb_config"), "locality-weighted load balancing works with ROUND_ROBIN, LEAST_REQUEST and RANDOM, not %s (as Envoy)", pc.GetLbPolicy())
			}
		}
		if v := cl.GetHealthyPanicThreshold(); v != nil {
			c.lb.panicThreshold = v.GetValue()
		}
	}
	return nil
}

// http1Options is what the upstream HTTP/1 codec honours of
// Http1ProtocolOptions.
type http1Options struct {
	properCase bool
	trailers   bool
}

// compileHTTP1 compiles the Http1ProtocolOptions of a cluster (at path).
// The options that only shape how a server parses requests (absolute
// URLs, HTTP/1.0, the parser) have no effect on a client and are accepted.
func (c *Cluster) compileHTTP1(o *corev3.Http1ProtocolOptions, path string) error {
	if o == nil {
		return nil
	}
	if err := config.CheckFields(o, path, "allow_absolute_url", "accept_http_10", "default_host_for_http_10",
		"use_balsa_parser", "allow_custom_methods", "header_key_format", "enable_trailers"); err != nil {
		return err
	}
	proper, err := http1.HeaderKeyFormat(o.GetHeaderKeyFormat(), config.Join(path, "header_key_format"))
	if err != nil {
		return err
	}
	c.http1 = http1Options{properCase: proper, trailers: o.GetEnableTrailers()}
	return nil
}

// compileHTTP2 compiles the Http2ProtocolOptions of a cluster (at path)
// for the HTTP/2 client (x/net/http2's transport). connection_keepalive
// and hpack_table_size are applied; the window sizes and stream limits
// tune what the transport already bounds (it honours the server's
// SETTINGS_MAX_CONCURRENT_STREAMS and opens more connections), and the
// inbound-frame and error-handling options are the server side's, so
// they are accepted. Custom SETTINGS are refused.
func (c *Cluster) compileHTTP2(o *corev3.Http2ProtocolOptions, path string) error {
	if o == nil {
		return nil
	}
	if err := config.CheckFields(o, path, "hpack_table_size", "max_concurrent_streams", "initial_stream_window_size",
		"initial_connection_window_size", "allow_connect", "allow_metadata", "max_outbound_frames", "max_outbound_control_frames",
		"max_consecutive_inbound_frames_with_empty_payload", "max_inbound_priority_frames_per_stream",
		"max_inbound_window_update_frames_per_data_frame_sent", "stream_error_on_invalid_http_messaging",
		"override_stream_error_on_invalid_http_message", "connection_keepalive", "use_oghttp2_codec", "max_metadata_size",
		"enable_huffman_encoding", "max_header_field_size_kb", "disallow_obs_text", "stream_reset_burst", "stream_reset_rate"); err != nil {
		return err
	}
	if len(o.GetCustomSettingsParameters()) > 0 {
		return config.Unsupported(config.Join(path, "custom_settings_parameters"), "custom HTTP/2 SETTINGS parameters")
	}
	if v := o.GetHpackTableSize(); v != nil {
		if v.GetValue() == 0 {
			// x/net takes 0 as "the default size", not "no dynamic table".
			return config.Unsupported(config.Join(path, "hpack_table_size"), "hpack_table_size 0 (no HPACK dynamic table) on an upstream")
		}
		c.h2opts.hpackTableSize = v.GetValue()
		c.h2opts.hpackSet = true
	}
	if ka := o.GetConnectionKeepalive(); ka != nil {
		kp := config.Join(path, "connection_keepalive")
		if err := config.CheckFields(ka, kp, "interval", "timeout", "interval_jitter", "connection_idle_interval"); err != nil {
			return err
		}
		// x/net pings a connection that received nothing for
		// ReadIdleTimeout: Envoy's connection_idle_interval when given,
		// else its ping interval.
		c.h2opts.pingIdle = ka.GetInterval().AsDuration()
		if d := ka.GetConnectionIdleInterval(); d != nil {
			c.h2opts.pingIdle = d.AsDuration()
		}
		c.h2opts.pingTimeout = ka.GetTimeout().AsDuration()
	}
	return nil
}

func (c *Cluster) compileProtocol(pc *clusterv3.Cluster, path string, deps Deps) error {
	if pc.GetHttp2ProtocolOptions() != nil {
		c.Protocol = HTTP2
		if err := c.compileHTTP2(pc.GetHttp2ProtocolOptions(), config.Join(path, "http2_protocol_options")); err != nil {
			return err
		}
	}
	if err := c.compileHTTP1(pc.GetHttpProtocolOptions(), config.Join(path, "http_protocol_options")); err != nil {
		return err
	}
	if v := pc.GetMaxRequestsPerConnection(); v != nil {
		c.maxRequestsPerConn = v.GetValue()
	}
	if cp := pc.GetCommonHttpProtocolOptions(); cp != nil {
		if err := c.commonHTTP(cp, config.Join(path, "common_http_protocol_options")); err != nil {
			return err
		}
	}
	for key, a := range pc.GetTypedExtensionProtocolOptions() {
		p := fmt.Sprintf("%s.typed_extension_protocol_options[%q]", path, key)
		r, err := extension.Lookup(extension.UpstreamOptions, a, p)
		if err != nil {
			return err
		}
		if f, ok := r.Ext.Factory.(ProtocolOptionsFactory); ok {
			// Another extension's options (redis_proxy's RedisProtocolOptions):
			// keyed by their type's name or, as Envoy, the filter's (an alias).
			if key != r.Ext.Name && !slices.Contains(r.Ext.Aliases, key) {
				return config.Errorf(p, "the key of %s must be %s", r.Ext.Name, strings.Join(slices.Concat(r.Ext.Aliases, []string{r.Ext.Name}), " or "))
			}
			v, err := f(r.Config, p)
			if err != nil {
				return err
			}
			if c.protocolOptions == nil {
				c.protocolOptions = map[string]any{}
			}
			c.protocolOptions[r.Ext.Name] = v
			continue
		}
		if key != httpProtocolOptionsKey {
			return config.Errorf(p, "the key of HttpProtocolOptions must be %s", httpProtocolOptionsKey)
		}
		opts := r.Config.(*httpopts.HttpProtocolOptions)
		if err := config.CheckFields(opts, p, "explicit_http_config", "use_downstream_protocol_config", "auto_config",
			"common_http_protocol_options", "upstream_http_protocol_options", "http_filters"); err != nil {
			return err
		}
		if fs := opts.GetHttpFilters(); len(fs) > 0 {
			fp := config.Join(p, "http_filters")
			if deps.UpstreamFilters == nil {
				return config.Errorf(fp, "upstream HTTP filters are not available here")
			}
			chain, err := deps.UpstreamFilters(c.Name, fs, fp)
			if err != nil {
				return err
			}
			c.UpstreamFilters = chain
		}
		switch pt := opts.GetUpstreamProtocolOptions().(type) {
		case *httpopts.HttpProtocolOptions_ExplicitHttpConfig_:
			switch pt.ExplicitHttpConfig.GetProtocolConfig().(type) {
			case *httpopts.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions:
				c.Protocol = HTTP2
				if err := c.compileHTTP2(pt.ExplicitHttpConfig.GetHttp2ProtocolOptions(), config.Join(p, "explicit_http_config.http2_protocol_options")); err != nil {
					return err
				}
			case *httpopts.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions:
				c.Protocol = HTTP1
				if err := c.compileHTTP1(pt.ExplicitHttpConfig.GetHttpProtocolOptions(), config.Join(p, "explicit_http_config.http_protocol_options")); err != nil {
					return err
				}
			case *httpopts.HttpProtocolOptions_ExplicitHttpConfig_Http3ProtocolOptions:
				c.Protocol = HTTP3
				if err := c.compileHTTP3(pt.ExplicitHttpConfig.GetHttp3ProtocolOptions(), config.Join(p, "explicit_http_config.http3_protocol_options")); err != nil {
					return err
				}
			default:
				return config.Unsupported(config.Join(p, "explicit_http_config"), "this protocol", "http_protocol_options", "http2_protocol_options", "http3_protocol_options")
			}
		case *httpopts.HttpProtocolOptions_UseDownstreamProtocolConfig:
			c.Protocol = UseDownstream
			if err := c.compileHTTP1(pt.UseDownstreamProtocolConfig.GetHttpProtocolOptions(), config.Join(p, "use_downstream_protocol_config.http_protocol_options")); err != nil {
				return err
			}
			if err := c.compileHTTP2(pt.UseDownstreamProtocolConfig.GetHttp2ProtocolOptions(), config.Join(p, "use_downstream_protocol_config.http2_protocol_options")); err != nil {
				return err
			}
		case *httpopts.HttpProtocolOptions_AutoConfig:
			if err := c.compileHTTP1(pt.AutoConfig.GetHttpProtocolOptions(), config.Join(p, "auto_config.http_protocol_options")); err != nil {
				return err
			}
			if err := c.compileHTTP2(pt.AutoConfig.GetHttp2ProtocolOptions(), config.Join(p, "auto_config.http2_protocol_options")); err != nil {
				return err
			}
			// Without TLS ALPN there is nothing to negotiate: HTTP/1.1, as Envoy.
			if pc.GetTransportSocket() == nil {
				c.Protocol = HTTP1
			} else {
				c.Protocol = UseDownstream
			}
			// HTTP/3 through the alternate protocols cache (http3.go).
			if err := c.compileAutoHTTP3(pt.AutoConfig, config.Join(p, "auto_config")); err != nil {
				return err
			}
		}
		if cp := opts.GetCommonHttpProtocolOptions(); cp != nil {
			if err := c.commonHTTP(cp, config.Join(p, "common_http_protocol_options")); err != nil {
				return err
			}
		}
		if uho := opts.GetUpstreamHttpProtocolOptions(); uho != nil {
			up := config.Join(p, "upstream_http_protocol_options")
			if err := config.CheckFields(uho, up, "auto_sni", "auto_san_validation", "override_auto_sni_header"); err != nil {
				return err
			}
			c.AutoSNI, c.AutoSNIHeader = uho.GetAutoSni(), headers.Lower(uho.GetOverrideAutoSniHeader())
			c.autoSANValidation = uho.GetAutoSanValidation()
			if c.AutoSNI && c.Protocol == HTTP2 {
				return config.Unsupported(config.Join(up, "auto_sni"), "auto_sni with HTTP/2 upstreams")
			}
		}
	}
	return nil
}

func (c *Cluster) commonHTTP(cp *corev3.HttpProtocolOptions, path string) error {
	if err := config.CheckFields(cp, path, "idle_timeout", "max_requests_per_connection", "max_headers_count"); err != nil {
		return err
	}
	if cp.GetIdleTimeout() != nil {
		c.IdleTimeout = cp.GetIdleTimeout().AsDuration()
	}
	if v := cp.GetMaxRequestsPerConnection(); v != nil {
		c.maxRequestsPerConn = v.GetValue()
	}
	return nil
}

func (c *Cluster) compileBreakers(cb *clusterv3.CircuitBreakers, path string, scope stats.Scope) error {
	def := func(b *breakers, name string) {
		b.maxConnections, b.maxPending, b.maxRequests, b.maxRetries = 1024, 1024, 1024, 3
		b.gauges = newBreakerGauges(scope.Scope("circuit_breakers." + name + "."))
	}
	def(&c.breakers, "default")
	def(&c.highBreakers, "high")
	if cb != nil {
		if err := config.CheckFields(cb, path, "thresholds", "per_host_thresholds"); err != nil {
			return err
		}
		for i, t := range cb.GetPerHostThresholds() {
			// Envoy reads max_connections only from per-host thresholds
			// (ResourceManagerImpl's maxConnectionsPerHost); the other
			// limits would be ignored there, so they are refused here;
			// track_remaining has no per-host gauge in Envoy (Contour sets it).
			p := config.Index(config.Join(path, "per_host_thresholds"), i)
			if err := config.CheckFields(t, p, "priority", "max_connections", "track_remaining"); err != nil {
				return fmt.Errorf("%w (Envoy applies only max_connections per host)", err)
			}
			if t.GetPriority() == corev3.RoutingPriority_HIGH {
				// The connection pools (and their limits) are shared by
				// both priorities: a HIGH per-host limit would not hold.
				return config.Unsupported(config.Join(p, "priority"), "HIGH", "DEFAULT")
			}
			if v := t.GetMaxConnections(); v != nil {
				c.maxConnectionsPerHost = v.GetValue()
			}
		}
		for i, t := range cb.GetThresholds() {
			p := config.Index(config.Join(path, "thresholds"), i)
			if err := config.CheckFields(t, p, "priority", "max_connections", "max_pending_requests", "max_requests", "max_retries", "track_remaining", "retry_budget"); err != nil {
				return err
			}
			b := &c.breakers
			if t.GetPriority() == corev3.RoutingPriority_HIGH {
				b = &c.highBreakers
			}
			if v := t.GetMaxConnections(); v != nil {
				b.maxConnections = v.GetValue()
			}
			if v := t.GetMaxPendingRequests(); v != nil {
				b.maxPending = v.GetValue()
			}
			if v := t.GetMaxRequests(); v != nil {
				b.maxRequests = v.GetValue()
			}
			if v := t.GetMaxRetries(); v != nil {
				b.maxRetries = v.GetValue()
			}
			if rb := t.GetRetryBudget(); rb != nil {
				if err := config.CheckFields(rb, config.Join(p, "retry_budget"), "budget_percent", "min_retry_concurrency"); err != nil {
					return err
				}
				b.hasBudget, b.retryBudget, b.minRetryConcurrency = true, 20, 3
				if v := rb.GetBudgetPercent(); v != nil {
					b.retryBudget = v.GetValue()
				}
				if v := rb.GetMinRetryConcurrency(); v != nil {
					b.minRetryConcurrency = v.GetValue()
				}
			}
			b.trackRemaining = t.GetTrackRemaining()
		}
	}
	for _, b := range []*breakers{&c.breakers, &c.highBreakers} {
		if b.trackRemaining {
			b.gauges.remainingCx.Set(int64(b.maxConnections))
			b.gauges.remainingPending.Set(int64(b.maxPending))
			b.gauges.remainingRq.Set(int64(b.maxRequests))
			b.gauges.remainingRetries.Set(int64(b.maxRetries))
		}
	}
	return nil
}

func (c *Cluster) compileDiscovery(pc *clusterv3.Cluster, path string, deps Deps) error {
	la := pc.GetLoadAssignment()
	specs, err := hostsFromAssignment(la, config.Join(path, "load_assignment"))
	if err != nil {
		return err
	}
	if la != nil {
		if err := config.CheckFields(la, config.Join(path, "load_assignment"), "cluster_name", "endpoints", "policy"); err != nil {
			return err
		}
		if pol := la.GetPolicy(); pol != nil {
			if err := config.CheckFields(pol, config.Join(path, "load_assignment.policy"), "overprovisioning_factor", "weighted_priority_health"); err != nil {
				return err
			}
			if v := pol.GetOverprovisioningFactor(); v != nil {
				c.lb.overprovision = float64(v.GetValue()) / 100
			}
		}
	}
	dt := pc.GetClusterDiscoveryType()
	if dt == nil {
		// No type at all: STATIC, the enum's default, as Envoy reads it.
		dt = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	}
	switch t := dt.(type) {
	case *clusterv3.Cluster_Type:
		switch t.Type {
		case clusterv3.Cluster_STATIC:
			hosts, err := staticHosts(specs, config.Join(path, "load_assignment"))
			if err != nil {
				return err
			}
			c.discover = staticDiscovery{hosts: hosts}
		case clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
			d, err := newDNSDiscovery(pc, specs, path, deps.DNS)
			if err != nil {
				return err
			}
			c.discover = d
		case clusterv3.Cluster_EDS:
			c.discover = &edsDiscovery{}
			c.EDS = true
		case clusterv3.Cluster_ORIGINAL_DST:
			if err := c.compileOrigDst(pc, path); err != nil {
				return err
			}
			c.discover = staticDiscovery{}
		default:
			return config.Unsupported(config.Join(path, "type"), t.Type.String(), "STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST")
		}
	case *clusterv3.Cluster_ClusterType:
		cp := config.Join(path, "cluster_type")
		r, err := extension.Lookup(extension.ClusterType, t.ClusterType.GetTypedConfig(), config.Join(cp, "typed_config"))
		if err != nil {
			return err
		}
		if err := r.Ext.Factory.(clusterTypeFactory)(r.Config, c, config.Join(cp, "typed_config"), deps); err != nil {
			return err
		}
		c.discover = staticDiscovery{}
	default:
		return config.Unsupported(config.Join(path, "cluster_type"), "this discovery type", "type: STATIC|STRICT_DNS|LOGICAL_DNS|EDS|ORIGINAL_DST", "cluster_type")
	}
	return nil
}

func newDNSDiscovery(pc *clusterv3.Cluster, specs []endpointSpec, path string, boot *DNSSettings) (*dnsDiscovery, error) {
	d := &dnsDiscovery{
		specs:    specs,
		logical:  pc.GetType() == clusterv3.Cluster_LOGICAL_DNS,
		family:   pc.GetDnsLookupFamily(),
		refresh:  5 * time.Second,
		resolver: net.DefaultResolver,
		timeout:  5 * time.Second,
	}
	if d.logical && len(specs) != 1 {
		return nil, config.Errorf(config.Join(path, "load_assignment"), "LOGICAL_DNS clusters must have exactly one endpoint, got %d", len(specs))
	}
	for _, s := range specs {
		if s.pipe != "" || s.internal != "" {
			// Nothing to resolve: only socket addresses have names.
			return nil, config.Errorf(config.Join(path, "load_assignment"), "a %s cluster resolves socket_address endpoints; %q is not one (use a STATIC cluster)", pc.GetType(), s.pipe+s.internal)
		}
	}
	if pc.GetDnsRefreshRate() != nil {
		d.refresh = pc.GetDnsRefreshRate().AsDuration()
	}
	d.failRefresh = d.refresh
	if fr := pc.GetDnsFailureRefreshRate(); fr != nil {
		if fr.GetBaseInterval() != nil {
			d.failRefresh = fr.GetBaseInterval().AsDuration()
		}
	}
	dns, err := ClusterDNS(pc, path, boot)
	if err != nil {
		return nil, err
	}
	d.dns = dns
	if pc.GetDnsJitter() != nil {
		d.jitter = pc.GetDnsJitter().AsDuration()
	}
	if pc.GetRespectDnsTtl() {
		d.ttl = dns.ttlResolver()
	}
	if r := dns.resolver(); r != nil {
		d.resolver = r
	}
	return d, nil
}

// ClusterDNS is a DNS cluster's resolver settings at path, as Envoy
// takes them: its typed_dns_resolver_config, else its dns_resolvers (and
// use_tcp_for_dns_lookups), else the bootstrap's (boot).
func ClusterDNS(pc *clusterv3.Cluster, path string, boot *DNSSettings) (DNSSettings, error) {
	var s DNSSettings
	if tc := pc.GetTypedDnsResolverConfig(); tc != nil {
		err := CompileDNSResolver(tc, config.Join(path, "typed_dns_resolver_config"), &s)
		return s, err
	}
	if len(pc.GetDnsResolvers()) > 0 {
		for _, a := range pc.GetDnsResolvers() {
			s.Servers = append(s.Servers, sockAddr(a))
		}
		s.UseTCP = pc.GetUseTcpForDnsLookups()
		return s, nil
	}
	// Without resolvers of its own the cluster uses the cluster manager's
	// (the bootstrap's), as Envoy's selectDnsResolver; its
	// use_tcp_for_dns_lookups still asks for TCP.
	if boot != nil {
		s = *boot
	}
	s.UseTCP = s.UseTCP || pc.GetUseTcpForDnsLookups()
	return s, nil
}

func sockAddr(a *corev3.Address) string {
	sa := a.GetSocketAddress()
	port := sa.GetPortValue()
	if port == 0 {
		port = 53
	}
	return net.JoinHostPort(sa.GetAddress(), fmt.Sprint(port))
}

// Start begins discovery and health checking.
func (c *Cluster) Start() {
	go c.discover.run(c)
	if c.OrigDst != nil {
		c.OrigDst.start()
	}
	if c.outlier != nil {
		go c.outlier.run()
	}
	if c.lb.cswrr != nil {
		go c.lb.cswrr.run(c)
	}
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
				c.sweepIdle()
			}
		}
	}()
}

// compileSlowStart reads slow_start_config (round robin, least request):
// new hosts ramp from min_weight_percent to their full weight over the
// window, as (time in window / window)^(1/aggression).
func (c *Cluster) compileSlowStart(ss *clusterv3.Cluster_SlowStartConfig, path string) error {
	if ss == nil {
		return nil
	}
	if err := config.CheckFields(ss, path, "slow_start_window", "aggression", "min_weight_percent"); err != nil {
		return err
	}
	c.lb.slowStart = ss.GetSlowStartWindow().AsDuration()
	c.lb.aggression = 1
	if a := ss.GetAggression(); a != nil {
		c.lb.aggression = a.GetDefaultValue()
		if c.lb.aggression <= 0 {
			return config.Errorf(config.Join(path, "aggression"), "must be positive")
		}
	}
	c.lb.minWeightPct = 10
	if m := ss.GetMinWeightPercent(); m != nil {
		c.lb.minWeightPct = m.GetValue()
	}
	return nil
}
