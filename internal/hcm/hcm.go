package hcm

import (
	"fmt"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/overload"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	uuidv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/request_id/uuid/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/legateproxy/legate/internal/accesslog"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/router"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/tracing"
)

// codecType is the downstream HTTP codec selection.
type codecType uint8

const (
	codecAuto codecType = iota
	codecHTTP1
	codecHTTP2
)

// hcmConfig is a compiled HttpConnectionManager: immutable, shared by every
// connection of the filter chain it belongs to.
type hcmConfig struct {
	// ov is the overload manager (nil without one): reduce_timeouts scales
	// the idle and duration timers when they are armed.
	ov         *overload.Manager
	statPrefix string
	codec      codecType
	// routes is the route table, set once for an inline route_config or
	// swapped by RDS; it is shared with every HCM that uses the same RDS
	// route configuration name.
	routes  *atomic.Pointer[route.Table]
	rdsName string

	accessLogs []*accesslog.Logger
	stats      *hcmStats

	useRemoteAddress bool
	xffTrustedHops   int
	skipXFFAppend    bool
	// filters are the HTTP filters before the router.
	filters []httpFilterEntry
	// tracing is the connection manager's tracing (nil: none).
	tracing *tracing.Config
	// bufferLimit bounds what filters buffer (the listener's
	// per_connection_buffer_limit_bytes; routes may set their own).
	bufferLimit int64
	// underscores is headers_with_underscores_action.
	underscores corev3.HttpProtocolOptions_HeadersWithUnderscoresAction
	// xfcc is forward_client_cert_details; xfccSet lists the
	// set_current_client_cert_details fields to add.
	xfcc               hcmv3.HttpConnectionManager_ForwardClientCertDetails
	xfccSet            xfccFields
	via                string
	generateRequestID  bool
	preserveExternalID bool
	alwaysSetIDInResp  bool
	// startChildSpan is the router's start_child_span (startChildPath its
	// config path): with tracing, each forwarded request gets a child span.
	startChildSpan  bool
	startChildPath  string
	internalCIDRs   []netip.Prefix
	internalDefault bool // no internal_address_config: RFC1918/loopback are internal

	serverName            string
	serverTransform       hcmv3.HttpConnectionManager_ServerHeaderTransformation
	maxHeaderBytes        int
	maxHeadersCount       int
	idleTimeout           time.Duration // connection idle (no streams)
	maxConnDuration       time.Duration
	streamIdleTimeout     time.Duration
	requestTimeout        time.Duration
	requestHeadersTimeout time.Duration
	drainTimeout          time.Duration
	// parkDelay is how long an idle HTTP/1 connection waits for its next
	// request on its own goroutine before it parks (h1idle, conn_h1.go); 0:
	// never.
	parkDelay    time.Duration
	acceptHTTP10 bool
	// properCaseHeaders is http_protocol_options.header_key_format
	// proper_case_words: HTTP/1 response header names in Proper-Case.
	properCaseHeaders bool
	// enableTrailers is http_protocol_options.enable_trailers: HTTP/1
	// clients' trailers are forwarded and trailers are sent to them.
	enableTrailers       bool
	defaultHostHTTP10    string
	normalizePath        bool
	mergeSlashes         bool
	escapedSlashes       hcmv3.HttpConnectionManager_PathWithEscapedSlashesAction
	stripAnyHostPort     bool
	stripMatchingPort    bool
	stripTrailingDot     bool
	upgrades             map[string]bool // upgrade type (lower case) → enabled
	suppressEnvoyHeaders bool
	// noDynamicStats and respectExpectedRqTimeout are the router's
	// dynamic_stats (false) and respect_expected_rq_timeout.
	noDynamicStats, respectExpectedRqTimeout bool
	// router is the terminal filter's config.
	router              *router.Config
	addUserAgent        bool
	nodeID, nodeCluster string
	proxy100Continue    bool

	h2MaxConcurrentStreams uint32
	h2InitialStreamWindow  uint32
	h2InitialConnWindow    uint32
	// h2Limits are the HTTP/2 flood limits (http2_protocol_options);
	// the premature-reset ones are read from the runtime per connection.
	h2Limits h2Limits
	h2Stats  *h2GuardStats
	// localReply is local_reply_config (nil: Envoy's plain replies).
	localReply *localReplyConfig
	// schemeToSet is scheme_header_transformation.scheme_to_overwrite
	// ("" leaves :scheme as it is); schemeMatchUpstream its
	// match_upstream, applied by the router.
	schemeToSet         string
	schemeMatchUpstream bool
	// h3 is the HTTP/3 codec's config (codec_type HTTP3; http3.go).
	h3 *h3Config
}

// hcmStats are the http.<stat_prefix>.* statistics.
type hcmStats struct {
	rqTotal, rqHTTP1, rqHTTP2, rqWS, rqRxReset, rqTxReset, rqNonRelativePath, rqTooLarge              *stats.Counter
	rqTimeout, rqIdleTimeout, rqHeadersTimeout, rqFailedPathNorm, rqRedirectedPathNorm                *stats.Counter
	rqOverloadClose, rqCompleted                                                                      *stats.Counter
	cxTotal, cxHTTP1, cxHTTP2, cxProtocolError, cxDestroy, cxIdleTimeout, cxDrainClose, cxMaxDuration *stats.Counter
	cxDestroyLocal, cxDestroyRemote, cxHeadersTooLarge, cxUpgradesTotal                               *stats.Counter
	cxRxBytes, cxTxBytes                                                                              *stats.Counter
	rqActive, cxActive, cxHTTP1Active, cxHTTP2Active, cxUpgradesActive                                *stats.Gauge
	rqStatus                                                                                          *stats.StatusCounters
	rqTime, cxLengthMs                                                                                *stats.Histogram
	noRoute, noCluster, rqDirectResponse, rqRedirect                                                  *stats.Counter
	// Internal redirects passed to the client, by reason.
	redirectBadLocation, redirectUnsafeScheme, redirectTooMany, redirectNoRoute, redirectPredicate *stats.Counter
	cxOverloadDisableKeepalive, rqRejectedUnderscores, droppedUnderscores                          *stats.Counter
	// router stats (http.<prefix>.rq_*): Envoy names them under the HCM prefix.
	rqReset, rqTotalRouter *stats.Counter
	// cxDestroyRemoteActiveRq counts connections the client closed with a
	// request in progress.
	cxDestroyRemoteActiveRq *stats.Counter
	// rsTooLarge counts responses buffered over the limit by a filter.
	rsTooLarge *stats.Counter
	// rqInvalidAuthority counts requests refused for their Host/:authority.
	rqInvalidAuthority *stats.Counter
}

func newHCMStats(s stats.Scope) *hcmStats {
	return &hcmStats{
		rqTotal: s.Counter("downstream_rq_total"), rqHTTP1: s.Counter("downstream_rq_http1_total"),
		rqHTTP2: s.Counter("downstream_rq_http2_total"), rqWS: s.Counter("downstream_rq_ws_on_non_ws_route"),
		rqRxReset: s.Counter("downstream_rq_rx_reset"), rqTxReset: s.Counter("downstream_rq_tx_reset"),
		cxDestroyRemoteActiveRq: s.Counter("downstream_cx_destroy_remote_active_rq"),
		rqNonRelativePath:       s.Counter("downstream_rq_non_relative_path"), rqTooLarge: s.Counter("downstream_rq_too_large"),
		rqTimeout: s.Counter("downstream_rq_timeout"), rqIdleTimeout: s.Counter("downstream_rq_idle_timeout"),
		rqHeadersTimeout:     s.Counter("downstream_rq_header_timeout"),
		rqFailedPathNorm:     s.Counter("downstream_rq_failed_path_normalization"),
		rqRedirectedPathNorm: s.Counter("downstream_rq_redirected_with_normalized_path"),
		rqOverloadClose:      s.Counter("downstream_rq_overload_close"), rqCompleted: s.Counter("downstream_rq_completed"),
		cxTotal: s.Counter("downstream_cx_total"), cxHTTP1: s.Counter("downstream_cx_http1_total"),
		cxHTTP2: s.Counter("downstream_cx_http2_total"), cxProtocolError: s.Counter("downstream_cx_protocol_error"),
		cxDestroy: s.Counter("downstream_cx_destroy"), cxIdleTimeout: s.Counter("downstream_cx_idle_timeout"),
		cxDrainClose: s.Counter("downstream_cx_drain_close"), cxMaxDuration: s.Counter("downstream_cx_max_duration_reached"),
		cxDestroyLocal: s.Counter("downstream_cx_destroy_local"), cxDestroyRemote: s.Counter("downstream_cx_destroy_remote"),
		cxHeadersTooLarge: s.Counter("downstream_rq_header_too_large"),
		cxUpgradesTotal:   s.Counter("downstream_cx_upgrades_total"),
		cxRxBytes:         s.Counter("downstream_cx_rx_bytes_total"), cxTxBytes: s.Counter("downstream_cx_tx_bytes_total"),
		rqActive: s.Gauge("downstream_rq_active"), cxActive: s.Gauge("downstream_cx_active"),
		cxHTTP1Active: s.Gauge("downstream_cx_http1_active"), cxHTTP2Active: s.Gauge("downstream_cx_http2_active"),
		cxUpgradesActive: s.Gauge("downstream_cx_upgrades_active"),
		rqStatus:         stats.NewStatusCounters(s, "downstream_rq", false),
		rqTime:           s.Histogram("downstream_rq_time"), cxLengthMs: s.Histogram("downstream_cx_length_ms"),
		noRoute: s.Counter("no_route"), noCluster: s.Counter("no_cluster"),
		redirectBadLocation:        s.Counter("passthrough_internal_redirect_bad_location"),
		redirectUnsafeScheme:       s.Counter("passthrough_internal_redirect_unsafe_scheme"),
		redirectTooMany:            s.Counter("passthrough_internal_redirect_too_many_redirects"),
		redirectNoRoute:            s.Counter("passthrough_internal_redirect_no_route"),
		redirectPredicate:          s.Counter("passthrough_internal_redirect_predicate"),
		cxOverloadDisableKeepalive: s.Counter("downstream_cx_overload_disable_keepalive"),
		rqRejectedUnderscores:      s.Counter("requests_rejected_with_underscores_in_headers"), droppedUnderscores: s.Counter("dropped_headers_with_underscores"),
		rqDirectResponse: s.Counter("rq_direct_response"), rqRedirect: s.Counter("rq_redirect"),
		rqReset: s.Counter("rq_reset_after_downstream_response_started"), rqTotalRouter: s.Counter("rq_total"),
		rsTooLarge: s.Counter("rs_too_large"), rqInvalidAuthority: s.Counter("downstream_rq_invalid_authority"),
	}
}

// compileHCM compiles an HttpConnectionManager typed config.
func compileHCM(h *hcmv3.HttpConnectionManager, path string, d *listener.Context) (*hcmConfig, error) {
	if err := config.CheckFields(h, path, "codec_type", "stat_prefix", "route_config", "rds", "http_filters", "local_reply_config",
		"access_log", "use_remote_address", "xff_num_trusted_hops", "skip_xff_append", "via",
		"generate_request_id", "preserve_external_request_id", "always_set_request_id_in_response",
		"internal_address_config", "server_name", "server_header_transformation", "max_request_headers_kb",
		"common_http_protocol_options", "http_protocol_options", "http2_protocol_options", "http3_protocol_options",
		"stream_idle_timeout", "request_timeout", "request_headers_timeout", "drain_timeout", "delayed_close_timeout",
		"normalize_path", "merge_slashes", "path_with_escaped_slashes_action", "upgrade_configs",
		"strip_any_host_port", "strip_matching_host_port", "strip_trailing_host_dot", "add_user_agent",
		"proxy_100_continue", "forward_client_cert_details", "set_current_client_cert_details",
		"append_x_forwarded_port", "stream_error_on_invalid_http_message", "tracing", "scheme_header_transformation",
		"request_id_extension",
		// no behavioural effect here: buffering and flush tuning
		"access_log_flush_interval", "flush_access_log_on_new_request", "stream_flush_timeout",
	); err != nil {
		return nil, err
	}
	sht := h.GetSchemeHeaderTransformation()
	if err := config.CheckFields(sht, config.Join(path, "scheme_header_transformation"), "scheme_to_overwrite", "match_upstream"); sht != nil && err != nil {
		return nil, err
	}
	var xfccSet xfccFields
	if sc := h.GetSetCurrentClientCertDetails(); sc != nil {
		if err := config.CheckFields(sc, config.Join(path, "set_current_client_cert_details"), "subject", "cert", "chain", "dns", "uri"); err != nil {
			return nil, err
		}
		xfccSet = xfccFields{subject: sc.GetSubject().GetValue(), cert: sc.GetCert(), chain: sc.GetChain(), dns: sc.GetDns(), uri: sc.GetUri()}
	}
	if h.GetProxy_100Continue() {
		return nil, config.Unsupported(config.Join(path, "proxy_100_continue"), "proxy_100_continue (Legate answers 100-continue itself, as Envoy's default)")
	}
	if h.GetAppendXForwardedPort() {
		return nil, config.Unsupported(config.Join(path, "append_x_forwarded_port"), "append_x_forwarded_port")
	}
	c := &hcmConfig{
		ov:                     d.Overload,
		xfcc:                   h.GetForwardClientCertDetails(),
		xfccSet:                xfccSet,
		statPrefix:             h.GetStatPrefix(),
		useRemoteAddress:       h.GetUseRemoteAddress().GetValue(),
		xffTrustedHops:         int(h.GetXffNumTrustedHops()),
		skipXFFAppend:          h.GetSkipXffAppend(),
		via:                    h.GetVia(),
		generateRequestID:      h.GetGenerateRequestId() == nil || h.GetGenerateRequestId().GetValue(),
		preserveExternalID:     h.GetPreserveExternalRequestId(),
		alwaysSetIDInResp:      h.GetAlwaysSetRequestIdInResponse(),
		serverName:             h.GetServerName(),
		serverTransform:        h.GetServerHeaderTransformation(),
		maxHeaderBytes:         60 * 1024,
		maxHeadersCount:        100,
		idleTimeout:            time.Hour,
		streamIdleTimeout:      5 * time.Minute,
		drainTimeout:           5 * time.Second,
		parkDelay:              idleParkDelay(),
		normalizePath:          h.GetNormalizePath().GetValue(),
		mergeSlashes:           h.GetMergeSlashes(),
		escapedSlashes:         h.GetPathWithEscapedSlashesAction(),
		stripAnyHostPort:       h.GetStripAnyHostPort(),
		stripMatchingPort:      h.GetStripMatchingHostPort(),
		stripTrailingDot:       h.GetStripTrailingHostDot(),
		addUserAgent:           h.GetAddUserAgent().GetValue(),
		proxy100Continue:       h.GetProxy_100Continue(),
		internalDefault:        h.GetInternalAddressConfig() == nil,
		upgrades:               map[string]bool{},
		bufferLimit:            defaultBufferLimit,
		h2MaxConcurrentStreams: 2147483647,
		h2Limits:               defaultH2Limits,
	}
	if c.serverName == "" {
		c.serverName = "envoy"
	}
	switch st := sht.GetSchemeToOverwrite(); st {
	case "":
		c.schemeMatchUpstream = sht.GetMatchUpstream()
	case "http", "https":
		// Envoy: scheme_to_overwrite takes precedence over match_upstream.
		c.schemeToSet = st
	default:
		return nil, config.Errorf(config.Join(path, "scheme_header_transformation.scheme_to_overwrite"), "scheme_to_overwrite %q must be http or https", st)
	}
	switch h.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO:
		c.codec = codecAuto
	case hcmv3.HttpConnectionManager_HTTP1:
		c.codec = codecHTTP1
	case hcmv3.HttpConnectionManager_HTTP2:
		c.codec = codecHTTP2
	case hcmv3.HttpConnectionManager_HTTP3:
		c.codec = codecHTTP3
	default:
		return nil, config.Unsupported(config.Join(path, "codec_type"), h.GetCodecType().String(), "AUTO", "HTTP1", "HTTP2", "HTTP3")
	}
	if err := compileHTTP3(h, path, c); err != nil {
		return nil, err
	}
	if v := h.GetMaxRequestHeadersKb(); v != nil {
		c.maxHeaderBytes = int(v.GetValue()) * 1024
	}
	if h.GetStreamIdleTimeout() != nil {
		c.streamIdleTimeout = h.GetStreamIdleTimeout().AsDuration()
	}
	if h.GetRequestTimeout() != nil {
		c.requestTimeout = h.GetRequestTimeout().AsDuration()
	}
	if h.GetRequestHeadersTimeout() != nil {
		c.requestHeadersTimeout = h.GetRequestHeadersTimeout().AsDuration()
	}
	if h.GetDrainTimeout() != nil {
		c.drainTimeout = h.GetDrainTimeout().AsDuration()
	}
	if cp := h.GetCommonHttpProtocolOptions(); cp != nil {
		p := config.Join(path, "common_http_protocol_options")
		if err := config.CheckFields(cp, p, "idle_timeout", "max_connection_duration", "max_headers_count", "max_stream_duration", "headers_with_underscores_action"); err != nil {
			return nil, err
		}
		if cp.GetIdleTimeout() != nil {
			c.idleTimeout = cp.GetIdleTimeout().AsDuration()
		}
		if cp.GetMaxConnectionDuration() != nil {
			c.maxConnDuration = cp.GetMaxConnectionDuration().AsDuration()
		}
		if v := cp.GetMaxHeadersCount(); v != nil {
			c.maxHeadersCount = int(v.GetValue())
		}
		c.underscores = cp.GetHeadersWithUnderscoresAction()
		if cp.GetMaxStreamDuration() != nil {
			return nil, config.Unsupported(config.Join(p, "max_stream_duration"), "max_stream_duration")
		}
	}
	if hp := h.GetHttpProtocolOptions(); hp != nil {
		p := config.Join(path, "http_protocol_options")
		if err := config.CheckFields(hp, p, "accept_http_10", "default_host_for_http_10", "allow_absolute_url", "enable_trailers", "allow_chunked_length", "header_key_format"); err != nil {
			return nil, err
		}
		proper, err := http1.HeaderKeyFormat(hp.GetHeaderKeyFormat(), config.Join(p, "header_key_format"))
		if err != nil {
			return nil, err
		}
		c.properCaseHeaders = proper
		c.enableTrailers = hp.GetEnableTrailers()
		if hp.GetAllowChunkedLength() {
			return nil, config.Unsupported(config.Join(p, "allow_chunked_length"), "allow_chunked_length (requests with both Content-Length and chunked are always rejected)")
		}
		c.acceptHTTP10 = hp.GetAcceptHttp_10()
		c.defaultHostHTTP10 = hp.GetDefaultHostForHttp_10()
	}
	if h2 := h.GetHttp2ProtocolOptions(); h2 != nil {
		p := config.Join(path, "http2_protocol_options")
		if err := config.CheckFields(h2, p, "max_concurrent_streams", "initial_stream_window_size", "initial_connection_window_size", "hpack_table_size", "allow_connect", "connection_keepalive",
			"max_consecutive_inbound_frames_with_empty_payload", "max_inbound_priority_frames_per_stream", "max_inbound_window_update_frames_per_data_frame_sent",
			"max_outbound_frames", "max_outbound_control_frames"); err != nil {
			return nil, err
		}
		// Validation keeps both at least 1 (Envoy's bounds).
		if v := h2.GetMaxOutboundFrames(); v != nil {
			c.h2Limits.maxOutbound = v.GetValue()
		}
		if v := h2.GetMaxOutboundControlFrames(); v != nil {
			c.h2Limits.maxOutboundControl = v.GetValue()
		}
		if v := h2.GetMaxConsecutiveInboundFramesWithEmptyPayload(); v != nil {
			c.h2Limits.maxEmpty = v.GetValue()
		}
		if v := h2.GetMaxInboundPriorityFramesPerStream(); v != nil {
			c.h2Limits.maxPriority = v.GetValue()
		}
		if v := h2.GetMaxInboundWindowUpdateFramesPerDataFrameSent(); v != nil {
			c.h2Limits.maxWindowUpdate = max(v.GetValue(), 1) // Envoy: at least 1
		}
		if v := h2.GetMaxConcurrentStreams(); v != nil {
			c.h2MaxConcurrentStreams = v.GetValue()
		}
		if v := h2.GetInitialStreamWindowSize(); v != nil {
			c.h2InitialStreamWindow = v.GetValue()
		}
		if v := h2.GetInitialConnectionWindowSize(); v != nil {
			c.h2InitialConnWindow = v.GetValue()
		}
	}
	if ia := h.GetInternalAddressConfig(); ia != nil {
		for i, r := range ia.GetCidrRanges() {
			pfx, err := netip.ParsePrefix(fmt.Sprintf("%s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
			if err != nil {
				return nil, config.Errorf(config.Index(config.Join(path, "internal_address_config.cidr_ranges"), i), "invalid CIDR: %v", err)
			}
			c.internalCIDRs = append(c.internalCIDRs, pfx)
		}
	}
	for i, u := range h.GetUpgradeConfigs() {
		up := config.Index(config.Join(path, "upgrade_configs"), i)
		if err := config.CheckFields(u, up, "upgrade_type", "enabled"); err != nil {
			return nil, err
		}
		en := u.GetEnabled() == nil || u.GetEnabled().GetValue()
		// "CONNECT" enables CONNECT requests (RFC 9110 §9.3.6), which Envoy
		// otherwise answers 403; routes then proxy or terminate them.
		t := strings.ToLower(u.GetUpgradeType())
		if t == "connect-udp" {
			return nil, config.Unsupported(config.Join(up, "upgrade_type"), "CONNECT-UDP (HTTP/3 and UDP tunnelling)")
		}
		c.upgrades[t] = en
	}
	if err := c.compileFilters(h.GetHttpFilters(), config.Join(path, "http_filters"), d); err != nil {
		return nil, err
	}
	if lr := h.GetLocalReplyConfig(); lr != nil {
		cfg, err := compileLocalReply(lr, config.Join(path, "local_reply_config"), d)
		if err != nil {
			return nil, err
		}
		c.localReply = cfg
	}
	packReason, ridSampling, err := compileRequestID(h.GetRequestIdExtension(), config.Join(path, "request_id_extension"))
	if err != nil {
		return nil, err
	}
	if t := h.GetTracing(); t != nil {
		tc, err := tracing.Compile(t, config.Join(path, "tracing"), &tracing.Context{Stats: d.Stats, Async: d.Async,
			Node: &corev3.Node{Id: d.NodeID, Cluster: d.NodeCluster}, Hostname: d.Hostname, Default: d.DefaultTracer,
			Runtime: d.Runtime, Log: d.Log, Clusters: d.Clusters}, false)
		if err != nil {
			return nil, err
		}
		tc.SetRequestID(packReason, ridSampling)
		if c.startChildSpan {
			if err := tc.SetStartChildSpan(c.startChildPath); err != nil {
				return nil, err
			}
		}
		c.tracing = tc
	}
	scope := d.Stats.Scope("http." + stats.SanitizeName(c.statPrefix) + ".")
	c.stats = newHCMStats(scope)
	// Envoy roots its HTTP/2 codec statistics at http2.
	c.h2Stats = &h2GuardStats{rxReset: d.Stats.Counter("http2.rx_reset"), emptyFlood: d.Stats.Counter("http2.inbound_empty_frames_flood"),
		priorityFlood: d.Stats.Counter("http2.inbound_priority_frames_flood"), windowUpdateFlood: d.Stats.Counter("http2.inbound_window_update_frames_flood"),
		outboundFlood: d.Stats.Counter("http2.outbound_flood"), outboundControlFlood: d.Stats.Counter("http2.outbound_control_flood"),
		headerOverflow:  d.Stats.Counter("http2.header_overflow"),
		prematureResets: scope.Counter("downstream_rq_too_many_premature_resets"), protocolError: c.stats.cxProtocolError}
	if len(h.GetAccessLog()) > 0 {
		logs, err := d.AccessLogs(h.GetAccessLog(), config.Join(path, "access_log"))
		if err != nil {
			return nil, err
		}
		c.accessLogs = logs
	}
	switch rs := h.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_RouteConfig:
		opts := RouteOptions(d)
		opts.ValidateClusters = !d.SkipClusterValidation
		t, err := route.Compile(rs.RouteConfig, config.Join(path, "route_config"), opts)
		if err != nil {
			return nil, err
		}
		c.routes = &atomic.Pointer[route.Table]{}
		c.routes.Store(t)
	case *hcmv3.HttpConnectionManager_Rds:
		if d.Routes == nil {
			return nil, config.Unsupported(config.Join(path, "rds"), "RDS without dynamic_resources")
		}
		p, err := d.Routes.RouteTable(rs.Rds, c.statPrefix, config.Join(path, "rds"))
		if err != nil {
			return nil, err
		}
		c.routes = p
		c.rdsName = rs.Rds.GetRouteConfigName()
	default:
		return nil, config.Unsupported(path, "this route specifier", "route_config", "rds")
	}
	st := c.stats
	c.router = &router.Config{
		Stats: &router.Stats{NoCluster: st.noCluster, RqIdleTimeout: st.rqIdleTimeout, RqReset: st.rqReset, RqRxReset: st.rqRxReset,
			CxDestroyRemoteActiveRq: st.cxDestroyRemoteActiveRq, RqTooLarge: st.rqTooLarge, RsTooLarge: st.rsTooLarge,
			CxUpgradesTotal: st.cxUpgradesTotal, CxUpgradesActive: st.cxUpgradesActive, RqStatus: st.rqStatus,
			RedirectBadLocation: st.redirectBadLocation, RedirectUnsafeScheme: st.redirectUnsafeScheme,
			RedirectTooMany: st.redirectTooMany, RedirectNoRoute: st.redirectNoRoute, RedirectPredicate: st.redirectPredicate},
		SuppressEnvoyHeaders: c.suppressEnvoyHeaders, NoDynamicStats: c.noDynamicStats, RespectExpectedRqTimeout: c.respectExpectedRqTimeout, StreamIdleTimeout: c.streamIdleTimeout, Clusters: d.Clusters, Log: d.Log,
		SchemeMatchUpstream: c.schemeMatchUpstream,
	}
	return c, nil
}

// compileRequestID compiles request_id_extension: Envoy's UUID extension
// (envoy.request_id.uuid) is the only one, and the default. It returns
// pack_trace_reason and use_request_id_for_trace_sampling (both true
// unless set false).
func compileRequestID(e *hcmv3.RequestIDExtension, path string) (packReason, forSampling bool, err error) {
	if e == nil {
		return true, true, nil
	}
	if err := config.CheckFields(e, path, "typed_config"); err != nil {
		return false, false, err
	}
	tp := config.Join(path, "typed_config")
	u := &uuidv3.UuidRequestIdConfig{}
	if a := e.GetTypedConfig(); a != nil {
		if !a.MessageIs(u) {
			return false, false, config.Unsupported(tp, "request ID extension "+a.GetTypeUrl(), "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig")
		}
		if err := a.UnmarshalTo(u); err != nil {
			return false, false, config.Errorf(tp, "%v", err)
		}
	}
	if err := config.CheckFields(u, tp, "pack_trace_reason", "use_request_id_for_trace_sampling"); err != nil {
		return false, false, err
	}
	return u.GetPackTraceReason() == nil || u.GetPackTraceReason().GetValue(),
		u.GetUseRequestIdForTraceSampling() == nil || u.GetUseRequestIdForTraceSampling().GetValue(), nil
}

// compileFilters compiles the HTTP filter chain through the extension
// registry. The router must be last; an empty list means the router alone,
// as in Envoy. A filter Legate does not implement is an error naming it,
// unless it is_optional (Envoy then skips it).
func (c *hcmConfig) compileFilters(fs []*hcmv3.HttpFilter, path string, d *listener.Context) error {
	ctx := d.HTTPFilterContext("http." + stats.SanitizeName(c.statPrefix) + ".")
	sawRouter := len(fs) == 0
	for i, f := range fs {
		p := config.Index(path, i)
		if err := config.CheckFields(f, p, "name", "typed_config", "is_optional", "disabled"); err != nil {
			return err
		}
		// Names need not be unique, as in Envoy (Istio names its ALLOW and
		// DENY RBAC filters alike): filters that share a name share the
		// route's typed_per_filter_config entry.
		if sawRouter {
			return config.Errorf(p, "the router filter must be the last HTTP filter (found %q after it)", f.GetName())
		}
		tp := config.Join(p, "typed_config")
		tc := f.GetTypedConfig()
		if tc == nil {
			// A bare v2-style name still selects the extension.
			e := extension.ByName(extension.HTTPFilter, f.GetName())
			if e == nil {
				if f.GetIsOptional() {
					continue
				}
				return config.Errorf(tp, "HTTP filter %q has no typed_config", f.GetName())
			}
			tc, _ = anypb.New(e.Config)
		}
		r, err := extension.Lookup(extension.HTTPFilter, tc, tp)
		if err != nil {
			if f.GetIsOptional() && extension.Missing(err) {
				d.Log.Warn("optional HTTP filter skipped: not implemented by legate", "filter", f.GetName(), "type", tc.GetTypeUrl())
				continue
			}
			return err
		}
		fac := r.Ext.Factory.(httpfilter.Factory)
		if fac.UpstreamOnly {
			return config.Errorf(p, "%s is an upstream HTTP filter: it can only end a cluster's HttpProtocolOptions.http_filters", r.Ext.Name)
		}
		if fac.Terminal {
			if i != len(fs)-1 {
				return config.Errorf(p, "the router filter must be the last HTTP filter")
			}
			sawRouter = true
			rc := r.Config.(*routerv3.Router)
			if err := config.CheckFields(rc, tp, "suppress_envoy_headers", "dynamic_stats", "start_child_span", "respect_expected_rq_timeout"); err != nil {
				return err
			}
			c.suppressEnvoyHeaders = rc.GetSuppressEnvoyHeaders()
			c.noDynamicStats = rc.GetDynamicStats() != nil && !rc.GetDynamicStats().GetValue()
			c.respectExpectedRqTimeout = rc.GetRespectExpectedRqTimeout()
			c.startChildSpan, c.startChildPath = rc.GetStartChildSpan(), config.Join(tp, "start_child_span")
			continue
		}
		fc, err := fac.Compile(ctx, r.Config, tp)
		if err != nil {
			return err
		}
		c.filters = append(c.filters, httpFilterEntry{name: f.GetName(), cfg: fc, disabled: f.GetDisabled()})
	}
	if !sawRouter {
		return config.Errorf(path, "the last HTTP filter must be the router (envoy.filters.http.router)")
	}
	return nil
}

// hcmFilter is a compiled HTTP connection manager: a filter chain's
// terminal network filter.
type hcmFilter struct {
	cfg *hcmConfig
	h2  *h2Server
	d   *listener.Context
}

// ServeConn serves HTTP on an accepted connection.
func (f *hcmFilter) ServeConn(tc *listener.Conn) { serveHTTP(f, tc) }

func init() {
	extension.Register(extension.Extension{Name: "envoy.filters.network.http_connection_manager", Aliases: []string{"envoy.http_connection_manager"},
		Category: extension.NetworkFilter, Config: &hcmv3.HttpConnectionManager{},
		Factory: listener.NetworkFilterFactory(func(d *listener.Context, cfg proto.Message, opts listener.ChainOptions, path string) (listener.NetworkFilter, error) {
			h, err := compileHCM(cfg.(*hcmv3.HttpConnectionManager), path, d)
			if err != nil {
				return nil, err
			}
			if err := checkHTTP3Chain(h, opts, path, d); err != nil {
				return nil, err
			}
			// The listener's per_connection_buffer_limit_bytes bounds what
			// HTTP filters may buffer.
			if opts.BufferLimit > 0 {
				h.bufferLimit = opts.BufferLimit
			}
			// As Envoy, an OUTBOUND listener's spans are egress (client) spans.
			if h.tracing != nil {
				h.tracing.SetEgress(opts.Outbound)
			}
			return &hcmFilter{cfg: h, h2: newH2Server(h), d: d}, nil
		})})
}

// routerFactory registers the router: the terminal HTTP filter, which the
// connection manager runs itself (router.go).
func init() {
	httpfilter.Register("envoy.filters.http.router", []string{"envoy.router"}, &routerv3.Router{}, nil,
		httpfilter.Factory{Terminal: true}, "")
}

// RouteOptions are the options route tables compile with against the
// server's context: header values with %VARIABLE%s, per-filter configs
// through the registry, and the clusters routes name.
func RouteOptions(d *listener.Context) route.Options {
	return route.Options{
		Clusters: d.Clusters, CompileValue: d.CompileValue, Runtime: d.Runtime,
		PerFilterConfig: func(name string, a *anypb.Any, path string) (any, error) { return perFilterConfig(d, name, a, path) },
		CompileCors:     func(p *routev3.CorsPolicy, path string) (any, error) { return compileCors(d, p, path) },
		CompileTracing:  func(t *routev3.Tracing, path string) (any, error) { return tracing.CompileRoute(t, path) },
	}
}

// perFilterConfig compiles a typed_per_filter_config message through the
// registry: the HTTP filter whose per-route type it is.
func perFilterConfig(d *listener.Context, name string, a *anypb.Any, path string) (any, error) {
	r, err := extension.LookupPerRoute(a, path)
	if err != nil {
		return nil, err
	}
	fac := r.Ext.Factory.(httpfilter.Factory)
	if fac.CompilePerRoute == nil {
		return nil, config.Errorf(path, "HTTP filter %s has no per-route config", r.Ext.Name)
	}
	return fac.CompilePerRoute(d.HTTPFilterContext(""), r.Config, path)
}

// compileCors compiles a route's or virtual host's deprecated cors field
// as the CORS filter's per-route config (the same fields as
// envoy.extensions.filters.http.cors.v3.CorsPolicy).
func compileCors(d *listener.Context, p *routev3.CorsPolicy, path string) (any, error) {
	js, err := protojson.Marshal(p)
	if err != nil {
		return nil, config.Errorf(path, "%v", err)
	}
	cp := &corsv3.CorsPolicy{}
	if err := protojson.Unmarshal(js, cp); err != nil {
		return nil, config.Errorf(path, "%v", err)
	}
	a, err := anypb.New(cp)
	if err != nil {
		return nil, config.Errorf(path, "%v", err)
	}
	return perFilterConfig(d, "envoy.filters.http.cors", a, path)
}
