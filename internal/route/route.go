// Package route compiles an Envoy RouteConfiguration into an immutable
// table and matches requests against it: virtual hosts by domain (exact,
// *.suffix, prefix*, *), then the first route whose match (path prefix,
// exact, regex, separated prefix; headers; query parameters; gRPC;
// runtime fraction) accepts the request — or, for a virtual host with a
// matcher (the unified matcher API on the request headers), the first of
// the routes its action names whose match accepts it. A matched route
// carries its action (forward to a cluster, redirect, direct response) and
// the header mutations of every level.
//
// Matching takes no locks and allocates nothing (but the one input record
// of a virtual host's matcher): a Table is read-only once compiled, and
// clusters are referenced through upstream.Ref handles.
package route

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"regexp"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/matcher"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

// Table is a compiled RouteConfiguration.
type Table struct {
	Name  string
	Proto *routev3.RouteConfiguration

	exact      map[string]*VirtualHost
	suffixes   []wildcardSet // "*.example.com" by suffix length, longest first
	prefixes   []wildcardSet // "api.*" by prefix length, longest first
	star       *VirtualHost
	ignorePort bool

	Mutations        Mutations // route-config level
	mostSpecificWins bool
	// ClusterNames lists every cluster a route names (for validation and CDS).
	ClusterNames []string
	// PerFilter is the route configuration's typed_per_filter_config.
	PerFilter map[string]*FilterConfig
}

// FilterConfig is one typed_per_filter_config entry, compiled by the
// filter's factory.
type FilterConfig struct {
	// Config is the compiled per-route config (nil when the entry only
	// enables or disables the filter).
	Config any
	// Disabled turns the filter off for this scope (FilterConfig.disabled).
	Disabled bool
}

// PerFilterConfig returns the most specific typed_per_filter_config entry
// for the filter named name, as Envoy looks it up: the weighted cluster
// (wc, may be nil), the route, the virtual host, the route configuration.
func PerFilterConfig(rt *Route, wc *WeightedCluster, name string) *FilterConfig {
	if rt == nil {
		return nil
	}
	if wc != nil {
		if fc := wc.PerFilter[name]; fc != nil {
			return fc
		}
	}
	if fc := rt.PerFilter[name]; fc != nil {
		return fc
	}
	if vh := rt.VHost; vh != nil {
		if fc := vh.PerFilter[name]; fc != nil {
			return fc
		}
		if vh.table != nil {
			return vh.table.PerFilter[name]
		}
	}
	return nil
}

// AllPerFilterConfigs returns every typed_per_filter_config entry for the
// filter named name, most specific first (Envoy's getAllPerFilterConfig,
// for filters such as CORS that merge them field by field).
func AllPerFilterConfigs(rt *Route, wc *WeightedCluster, name string, dst []*FilterConfig) []*FilterConfig {
	if rt == nil {
		return dst
	}
	if wc != nil && wc.PerFilter[name] != nil {
		dst = append(dst, wc.PerFilter[name])
	}
	if fc := rt.PerFilter[name]; fc != nil {
		dst = append(dst, fc)
	}
	if vh := rt.VHost; vh != nil {
		if fc := vh.PerFilter[name]; fc != nil {
			dst = append(dst, fc)
		}
		if vh.table != nil && vh.table.PerFilter[name] != nil {
			dst = append(dst, vh.table.PerFilter[name])
		}
	}
	return dst
}

// RequestBufferLimit is the route's (or its virtual host's) request body
// buffer limit, 0 when neither sets one.
func (rt *Route) RequestBufferLimit() int64 {
	if rt.BufferLimit > 0 {
		return rt.BufferLimit
	}
	if rt.VHost != nil {
		return rt.VHost.BufferLimit
	}
	return 0
}

type wildcardSet struct {
	n     int
	hosts map[string]*VirtualHost
}

// VirtualHost is a compiled virtual host.
type VirtualHost struct {
	Name string
	// Routes are the routes, matched in order (none when a matcher picks
	// them).
	Routes    []*Route
	Mutations Mutations
	// RetryPolicy is the virtual host's default retry policy (nil if none).
	RetryPolicy             *RetryPolicy
	IncludeAttemptCount     bool
	IncludeAttemptCountResp bool
	RequireTLS              routev3.VirtualHost_TlsRequirementType
	// PerFilter is the virtual host's typed_per_filter_config.
	PerFilter map[string]*FilterConfig
	// Cors is the virtual host's deprecated cors field (see Route.Cors).
	Cors any
	// BufferLimit is request_body_buffer_limit (0 unset).
	BufferLimit int64
	// RateLimits is the virtual host's rate_limits (nil when none), read
	// by the global rate limit filter.
	RateLimits *RateLimitPolicy
	table      *Table
	// matcher is the virtual host's matcher (VirtualHost.matcher), whose
	// actions are routeLists; nil when Routes are matched instead.
	matcher *matcher.Matcher
}

// ActionKind is what a route does.
type ActionKind uint8

// Route actions.
const (
	Forward ActionKind = iota
	Redirect
	DirectResponse
	NonForwarding
)

// Route is a compiled route.
type Route struct {
	Name      string
	match     Match
	Kind      ActionKind
	Action    *RouteAction
	Redirect  *RedirectAction
	Direct    *DirectResponseAction
	Mutations Mutations
	VHost     *VirtualHost
	// Decorator is the route's decorator operation, if any.
	Decorator string
	// Tracing is the route's compiled tracing (Options.CompileTracing: a
	// *tracing.RouteTracing); nil when unset.
	Tracing any
	// PerFilter is the route's typed_per_filter_config.
	PerFilter map[string]*FilterConfig
	// BufferLimit is request_body_buffer_limit (0 unset).
	BufferLimit int64
	// Cors is the route's deprecated cors field, compiled by the CORS
	// filter (Options.CompileCors); nil when unset.
	Cors any
	// Metadata is the route's metadata (nil when it has none), for rate
	// limit actions with source ROUTE_ENTRY.
	Metadata *corev3.Metadata
}

// RouteAction is a compiled RouteAction (forward to a cluster).
type RouteAction struct {
	// HighPriority routes use the HIGH circuit-breaker thresholds.
	HighPriority      bool
	Cluster           *upstream.Ref
	ClusterHeader     string
	Weighted          []WeightedCluster
	totalWeight       uint64
	NotFoundStatus    int // cluster_not_found_response_code (503 default)
	PrefixRewrite     string
	hasPrefixRewrite  bool
	RegexRewrite      *regexp.Regexp
	RegexSubst        string
	HostRewrite       string // host_rewrite_literal
	AutoHostRewrite   bool
	HostRewriteHeader string
	// HostRewriteFormat is host_rewrite with substitutions (nil: none);
	// an empty result leaves the host alone.
	HostRewriteFormat    Value
	HostRewritePath      *regexp.Regexp
	HostRewritePathSubst string
	Timeout              time.Duration // 0 disables
	// TimeoutMs is Timeout in milliseconds as text, precomputed for the
	// x-envoy-expected-rq-timeout-ms header.
	TimeoutMs   string
	IdleTimeout time.Duration // per-route stream idle timeout; <0 unset
	RetryPolicy *RetryPolicy
	Mirrors     []Mirror
	// InternalRedirect is the route's internal redirect policy (nil:
	// upstream redirects go to the client).
	InternalRedirect *InternalRedirect
	HashPolicies     []HashPolicy
	// Upgrades maps an upgrade type (lower case) to whether this route allows it;
	// types not present fall back to the connection manager's upgrade_configs.
	Upgrades map[string]bool
	// Connect is the CONNECT upgrade's connect_config (nil: a CONNECT is
	// proxied as a request; set: the proxy terminates it and relays its
	// payload as TCP).
	Connect              *ConnectConfig
	MaxGRPCTimeout       time.Duration
	hasMaxGRPCTimeout    bool
	GRPCTimeoutOffset    time.Duration
	AppendXForwardedHost bool
	// RateLimits is the route's rate_limits (nil when none).
	RateLimits *RateLimitPolicy
	// IncludeVHRateLimits is the deprecated include_vh_rate_limits: the
	// virtual host's rate limits apply too.
	IncludeVHRateLimits bool
	// MetadataMatch is metadata_match's envoy.lb criteria (nil: none),
	// which select the subset of a cluster with lb_subset_config.
	MetadataMatch *upstream.MetadataMatch
	// matched prefix, for prefix_rewrite
	matchPrefix   string
	matchKind     pathKind
	caseSensitive bool
}

// ConnectConfig is a route's RouteAction.UpgradeConfig.connect_config.
type ConnectConfig struct {
	// AllowPost relays a POST's body as TCP too (allow_post).
	AllowPost bool
	// ProxyProtocol is proxy_protocol_config's version (1 or 2; 0: none):
	// a PROXY protocol header of the downstream connection's addresses
	// goes first on the TCP connection.
	ProxyProtocol uint8
}

// WeightedCluster is one entry of weighted_clusters.
type WeightedCluster struct {
	Cluster       *upstream.Ref
	ClusterHeader string
	Weight        uint64
	Mutations     Mutations
	HostRewrite   string
	// PerFilter is the weighted cluster's typed_per_filter_config.
	PerFilter map[string]*FilterConfig
	// MetadataMatch is the route's metadata_match merged with the weighted
	// cluster's (nil: neither has one).
	MetadataMatch *upstream.MetadataMatch
}

// Mirror is a request_mirror_policies entry.
type Mirror struct {
	Cluster       *upstream.Ref
	ClusterHeader string // cluster named by this request header, when Cluster is nil
	PerMillion    uint32 // sampling; 1e6 = always
	// NoShadowSuffix keeps the host unchanged (disable_shadow_host_suffix_append).
	NoShadowSuffix bool
}

// HashPolicy is a compiled hash_policy entry.
type HashPolicy struct {
	Kind         uint8 // 0 header, 1 cookie, 2 source ip, 3 query parameter
	Name         string
	Terminal     bool
	CookieTTL    time.Duration
	hasTTL       bool
	CookiePath   string
	RegexRewrite *regexp.Regexp
	RegexSubst   string
}

// HasTTL reports whether a cookie policy should set the cookie.
func (h *HashPolicy) HasTTL() bool { return h.hasTTL }

// RetryPolicy is a compiled retry policy.
type RetryPolicy struct {
	On                RetryOn
	NumRetries        uint32
	PerTryTimeout     time.Duration
	PerTryIdleTimeout time.Duration
	StatusCodes       []uint32
	BackoffBase       time.Duration
	BackoffMax        time.Duration
	PreviousHosts     bool
	// Reject is the omit_canary_hosts / omit_host_metadata predicates
	// (nil: none).
	Reject *upstream.HostFilter
	// HostSelectionMaxAttempts is host_selection_retry_max_attempts: how
	// many more picks a rejected host gets.
	HostSelectionMaxAttempts int
	// PreviousPriorities is the previous_priorities retry priority's
	// update_frequency (0: not configured): after that many attempts the
	// priority levels attempted so far are avoided.
	PreviousPriorities int
	RetriableHeaders   []headerMatcher
}

// RetryOn is a set of retry conditions.
type RetryOn uint32

// Retry conditions (retry_on names in comments).
const (
	Retry5xx                   RetryOn = 1 << iota // 5xx
	RetryGatewayError                              // gateway-error
	RetryReset                                     // reset
	RetryConnectFailure                            // connect-failure
	RetryRetriable4xx                              // retriable-4xx
	RetryRefusedStream                             // refused-stream
	RetryRetriableStatusCodes                      // retriable-status-codes
	RetryRetriableHeaders                          // retriable-headers
	RetryEnvoyRateLimited                          // envoy-ratelimited
	RetryResetBeforeRequest                        // reset-before-request
	RetryGRPCCancelled                             // cancelled
	RetryGRPCDeadlineExceeded                      // deadline-exceeded
	RetryGRPCInternal                              // internal
	RetryGRPCResourceExhausted                     // resource-exhausted
	RetryGRPCUnavailable                           // unavailable
)

var retryOnNames = map[string]RetryOn{
	"5xx": Retry5xx, "gateway-error": RetryGatewayError, "reset": RetryReset,
	"connect-failure": RetryConnectFailure, "retriable-4xx": RetryRetriable4xx,
	"refused-stream": RetryRefusedStream, "retriable-status-codes": RetryRetriableStatusCodes,
	"retriable-headers": RetryRetriableHeaders, "envoy-ratelimited": RetryEnvoyRateLimited,
	"reset-before-request": RetryResetBeforeRequest,
	"cancelled":            RetryGRPCCancelled, "deadline-exceeded": RetryGRPCDeadlineExceeded,
	"internal": RetryGRPCInternal, "resource-exhausted": RetryGRPCResourceExhausted,
	"unavailable": RetryGRPCUnavailable,
	// http3-post-connect-failure has no effect without HTTP/3 upstreams.
	"http3-post-connect-failure": 0,
}

// ParseRetryOn parses a comma-separated retry_on value; unknown names are
// returned as bad.
func ParseRetryOn(s string) (on RetryOn, bad []string) {
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		v, ok := retryOnNames[p]
		if !ok {
			bad = append(bad, p)
			continue
		}
		on |= v
	}
	return on, bad
}

// RetriableHeadersMatch reports whether a response's headers match any
// retriable_headers matcher.
func (p *RetryPolicy) RetriableHeadersMatch(resp *headers.Map) bool {
	r := headers.Request{Map: *resp}
	for i := range p.RetriableHeaders {
		if p.RetriableHeaders[i].matches(&r) {
			return true
		}
	}
	return false
}

// RedirectAction is a compiled redirect.
type RedirectAction struct {
	Scheme        string // "" keeps the request's
	Host          string
	Port          string
	Path          string // path_redirect
	hasPath       bool
	PrefixRewrite string
	hasPrefix     bool
	RegexRewrite  *regexp.Regexp
	RegexSubst    string
	Status        int
	StripQuery    bool
}

// DirectResponseAction is a compiled direct response.
type DirectResponseAction struct {
	Status int
	Body   []byte
}

// Mutations are header additions and removals at one level.
type Mutations struct {
	ReqAdd     []HeaderOp
	ReqRemove  []string
	RespAdd    []HeaderOp
	RespRemove []string
}

// Empty reports whether there is nothing to do.
func (m *Mutations) Empty() bool {
	return len(m.ReqAdd) == 0 && len(m.ReqRemove) == 0 && len(m.RespAdd) == 0 && len(m.RespRemove) == 0
}

// AppendAction is how a header is added.
type AppendAction uint8

// Header append actions (HeaderValueOption.append_action).
const (
	AppendIfExistsOrAdd AppendAction = iota
	AddIfAbsent
	OverwriteIfExistsOrAdd
	OverwriteIfExists
)

// Value renders a header value, with %VARIABLE% substitutions.
type Value interface {
	Append(dst []byte, info *streaminfo.Info) []byte
}

// HeaderOp adds one header.
type HeaderOp struct {
	Name      string
	Value     Value
	literal   string
	isLiteral bool
	Action    AppendAction
	KeepEmpty bool
}

// Apply applies one level's additions/removals to a header map. Removals
// happen first, as in Envoy.
func applyOps(m *headers.Map, add []HeaderOp, remove []string, info *streaminfo.Info, buf []byte) []byte {
	for _, name := range remove {
		m.Del(name)
	}
	for i := range add {
		op := &add[i]
		var v string
		if op.isLiteral {
			v = op.literal
		} else {
			start := len(buf)
			buf = op.Value.Append(buf, info)
			v = string(buf[start:])
		}
		if v == "" && !op.KeepEmpty {
			continue
		}
		switch op.Action {
		case AppendIfExistsOrAdd:
			m.Add(op.Name, v)
		case AddIfAbsent:
			m.SetDefault(op.Name, v)
		case OverwriteIfExistsOrAdd:
			m.Set(op.Name, v)
		case OverwriteIfExists:
			if m.Has(op.Name) {
				m.Set(op.Name, v)
			}
		}
	}
	return buf
}

// MatchPrefix returns the prefix or path the route matched on ("" for
// regex and connect matches); redirects' prefix_rewrite replaces it.
func (r *Route) MatchPrefix() string {
	if r.match.kind == pathPrefix || r.match.kind == pathExact || r.match.kind == pathSeparatedPrefix {
		return r.match.value
	}
	return ""
}

// HonorGRPCTimeout reports whether the grpc-timeout request header sets
// the route timeout (max_stream_duration.grpc_timeout_header_max or the
// deprecated max_grpc_timeout is configured).
func (a *RouteAction) HonorGRPCTimeout() bool { return a.hasMaxGRPCTimeout }

// CompileHeaderOps compiles a HeaderValueOption list outside a route
// table (local_reply_config's mappers), with %VARIABLE% values compiled by
// compileValue.
func CompileHeaderOps(opts []*corev3.HeaderValueOption, path string, compileValue func(string) (Value, error)) ([]HeaderOp, error) {
	c := &compiler{opts: Options{CompileValue: compileValue}}
	return c.headerOps(opts, path)
}

// CompileHeaderOp compiles one HeaderValueOption at path (the header
// mutation filter's append), with the checks and %VARIABLE% compilation of
// CompileHeaderOps.
func CompileHeaderOp(o *corev3.HeaderValueOption, path string, compileValue func(string) (Value, error)) (HeaderOp, error) {
	c := &compiler{opts: Options{CompileValue: compileValue}}
	return c.headerOp(o, path)
}

// ApplyHeaderOps applies compiled additions to a header map.
func ApplyHeaderOps(m *headers.Map, ops []HeaderOp, info *streaminfo.Info) {
	applyOps(m, ops, nil, info, nil)
}
