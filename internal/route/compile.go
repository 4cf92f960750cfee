package route

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/strmatch"
	"github.com/legateproxy/legate/internal/upstream"

	omitcanaryv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/omit_canary_hosts/v3"
	omitmetadatav3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/omit_host_metadata/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/extension"
)

// retryHostPredicate is the factory of a retry host predicate: it sets
// the policy's behaviour from the predicate's config (nil when a v2
// config names the predicate without one).
type retryHostPredicate func(p *RetryPolicy, cfg proto.Message)

// retryPriority is the factory of a retry priority.
type retryPriority func(p *RetryPolicy, cfg proto.Message)

func init() {
	extension.Register(extension.Extension{Name: "envoy.retry_host_predicates.previous_hosts", Category: extension.RetryHostPredicate,
		Config: &previoushostsv3.PreviousHostsPredicate{}, Factory: retryHostPredicate(func(p *RetryPolicy, _ proto.Message) { p.PreviousHosts = true })})
	extension.Register(extension.Extension{Name: "envoy.retry_host_predicates.omit_canary_hosts", Category: extension.RetryHostPredicate,
		Config: &omitcanaryv3.OmitCanaryHostsPredicate{}, Factory: retryHostPredicate(func(p *RetryPolicy, _ proto.Message) {
			p.reject().Canary = true
		})})
	extension.Register(extension.Extension{Name: "envoy.retry_host_predicates.omit_host_metadata", Category: extension.RetryHostPredicate,
		Config: &omitmetadatav3.OmitHostMetadataConfig{}, Factory: retryHostPredicate(func(p *RetryPolicy, cfg proto.Message) {
			// Only the envoy.lb labels count, as Envoy's
			// OmitHostsRetryPredicate.
			if m, _ := cfg.(*omitmetadatav3.OmitHostMetadataConfig); m != nil {
				if lb := m.GetMetadataMatch().GetFilterMetadata()["envoy.lb"]; len(lb.GetFields()) > 0 {
					f := p.reject()
					f.Metadata = append(f.Metadata, lb)
				}
			}
		})})
	extension.Register(extension.Extension{Name: "envoy.retry_priorities.previous_priorities", Category: extension.RetryPriority,
		Config: &previousprioritiesv3.PreviousPrioritiesConfig{}, Factory: retryPriority(func(p *RetryPolicy, cfg proto.Message) {
			p.PreviousPriorities = int(cfg.(*previousprioritiesv3.PreviousPrioritiesConfig).GetUpdateFrequency())
		})})
}

// reject returns the policy's host filter, creating it.
func (p *RetryPolicy) reject() *upstream.HostFilter {
	if p.Reject == nil {
		p.Reject = &upstream.HostFilter{}
	}
	return p.Reject
}

// Options are what compiling a route table needs.
type Options struct {
	Clusters *upstream.Manager
	// CompileValue compiles a header value that contains %VARIABLE%
	// substitutions; literal values never reach it.
	CompileValue func(text string) (Value, error)
	// ValidateClusters rejects routes that name unknown clusters when the
	// table does not say otherwise (true for inline route configs, false for
	// RDS, as in Envoy).
	ValidateClusters bool
	// PerFilterConfig compiles one typed_per_filter_config message for the
	// HTTP filter named name (through the extension registry); nil rejects
	// any entry.
	PerFilterConfig func(name string, cfg *anypb.Any, path string) (any, error)
	// CompileCors compiles the deprecated cors field of a virtual host or
	// route action (as the CORS filter's per-route config); nil rejects it.
	CompileCors func(p *routev3.CorsPolicy, path string) (any, error)
	// CompileTracing compiles a route's tracing (the connection manager's
	// tracing package); nil rejects it.
	CompileTracing func(t *routev3.Tracing, path string) (any, error)
	// Runtime is the layered runtime runtime_fraction keys are read from
	// (nil: their default values apply).
	Runtime *runtime.Loader
}

// Compile builds a Table from a RouteConfiguration.
func Compile(rc *routev3.RouteConfiguration, path string, opts Options) (*Table, error) {
	if err := config.CheckFields(rc, path, "name", "virtual_hosts", "request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove", "most_specific_header_mutations_wins",
		"validate_clusters", "ignore_port_in_host_matching", "max_direct_response_body_size_bytes",
		"internal_only_headers", "typed_per_filter_config", "metadata"); err != nil {
		return nil, err
	}
	c := &compiler{opts: opts, clusters: map[string]bool{}}
	t := &Table{
		Name:             rc.GetName(),
		Proto:            rc,
		exact:            map[string]*VirtualHost{},
		ignorePort:       rc.GetIgnorePortInHostMatching(),
		mostSpecificWins: rc.GetMostSpecificHeaderMutationsWins(),
	}
	var err error
	if t.PerFilter, err = c.perFilter(rc.GetTypedPerFilterConfig(), config.Join(path, "typed_per_filter_config")); err != nil {
		return nil, err
	}
	if t.Mutations, err = c.mutations(rc, path); err != nil {
		return nil, err
	}
	validate := opts.ValidateClusters
	if rc.GetValidateClusters() != nil {
		validate = rc.GetValidateClusters().GetValue()
	}
	seen := map[string]string{}
	suffix := map[int]map[string]*VirtualHost{}
	prefix := map[int]map[string]*VirtualHost{}
	for i, pvh := range rc.GetVirtualHosts() {
		vp := config.Index(config.Join(path, "virtual_hosts"), i)
		vh, err := c.virtualHost(pvh, vp)
		if err != nil {
			return nil, err
		}
		vh.table = t
		for j, d := range pvh.GetDomains() {
			dp := config.Index(config.Join(vp, "domains"), j)
			d = strings.ToLower(d)
			if prev, dup := seen[d]; dup {
				return nil, config.Errorf(dp, "domain %q is already used by virtual host %q: domains must be unique across virtual hosts", d, prev)
			}
			seen[d] = vh.Name
			switch {
			case d == "*":
				t.star = vh
			case strings.HasPrefix(d, "*"):
				s := d[1:]
				if suffix[len(s)] == nil {
					suffix[len(s)] = map[string]*VirtualHost{}
				}
				suffix[len(s)][s] = vh
			case strings.HasSuffix(d, "*"):
				p := d[:len(d)-1]
				if prefix[len(p)] == nil {
					prefix[len(p)] = map[string]*VirtualHost{}
				}
				prefix[len(p)][p] = vh
			case strings.Contains(d, "*"):
				return nil, config.Errorf(dp, "invalid domain %q: a wildcard may only be the first or last character", d)
			default:
				t.exact[d] = vh
			}
		}
	}
	for n, m := range suffix {
		t.suffixes = append(t.suffixes, wildcardSet{n: n, hosts: m})
	}
	for n, m := range prefix {
		t.prefixes = append(t.prefixes, wildcardSet{n: n, hosts: m})
	}
	sort.Slice(t.suffixes, func(i, j int) bool { return t.suffixes[i].n > t.suffixes[j].n })
	sort.Slice(t.prefixes, func(i, j int) bool { return t.prefixes[i].n > t.prefixes[j].n })
	for name := range c.clusters {
		t.ClusterNames = append(t.ClusterNames, name)
	}
	sort.Strings(t.ClusterNames)
	if validate && opts.Clusters != nil {
		for _, ref := range c.refs {
			if !opts.Clusters.Has(ref.name) {
				return nil, config.Errorf(ref.path, "route: unknown cluster %q (define it under clusters, or set validate_clusters: false)", ref.name)
			}
		}
	}
	return t, nil
}

type clusterUse struct{ name, path string }

type compiler struct {
	opts     Options
	clusters map[string]bool
	refs     []clusterUse
	// noValidate is > 0 while compiling routes whose clusters are not
	// validated (a virtual host's matcher).
	noValidate int
}

func (c *compiler) ref(name, path string) *upstream.Ref {
	c.clusters[name] = true
	if c.noValidate == 0 {
		c.refs = append(c.refs, clusterUse{name, path})
	}
	if c.opts.Clusters == nil {
		return nil
	}
	return c.opts.Clusters.Ref(name)
}

func (c *compiler) virtualHost(pvh *routev3.VirtualHost, path string) (*VirtualHost, error) {
	if err := config.CheckFields(pvh, path, "name", "domains", "routes", "require_tls",
		"request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove",
		"retry_policy", "include_request_attempt_count", "include_attempt_count_in_response",
		"typed_per_filter_config", "metadata", "per_request_buffer_limit_bytes", "request_body_buffer_limit", "cors", "matcher",
		"rate_limits"); err != nil {
		return nil, err
	}
	vrl, err := CompileRateLimits(pvh.GetRateLimits(), config.Join(path, "rate_limits"), RateLimitOptions{})
	if err != nil {
		return nil, err
	}
	vcors, err := c.cors(pvh.GetCors(), config.Join(path, "cors"))
	if err != nil {
		return nil, err
	}
	pf, err := c.perFilter(pvh.GetTypedPerFilterConfig(), config.Join(path, "typed_per_filter_config"))
	if err != nil {
		return nil, err
	}
	vh := &VirtualHost{
		PerFilter:               pf,
		Cors:                    vcors,
		BufferLimit:             bufferLimit(pvh.GetPerRequestBufferLimitBytes(), pvh.GetRequestBodyBufferLimit()),
		Name:                    pvh.GetName(),
		IncludeAttemptCount:     pvh.GetIncludeRequestAttemptCount(),
		IncludeAttemptCountResp: pvh.GetIncludeAttemptCountInResponse(),
		RequireTLS:              pvh.GetRequireTls(),
		RateLimits:              vrl,
	}
	if vh.Mutations, err = c.mutations(pvh, path); err != nil {
		return nil, err
	}
	if rp := pvh.GetRetryPolicy(); rp != nil {
		if vh.RetryPolicy, err = c.retryPolicy(rp, config.Join(path, "retry_policy")); err != nil {
			return nil, err
		}
	}
	if m := pvh.GetMatcher(); m != nil {
		mp := config.Join(path, "matcher")
		if len(pvh.GetRoutes()) > 0 {
			return nil, config.Errorf(mp, "cannot set both matcher and routes on virtual host")
		}
		if vh.matcher, err = c.vhostMatcher(m, mp, vh); err != nil {
			return nil, err
		}
	}
	for i, pr := range pvh.GetRoutes() {
		rt, err := c.route(pr, config.Index(config.Join(path, "routes"), i), vh)
		if err != nil {
			return nil, err
		}
		vh.Routes = append(vh.Routes, rt)
	}
	return vh, nil
}

// perFilter compiles typed_per_filter_config: each entry is a filter's
// per-route config message, or an envoy.config.route.v3.FilterConfig that
// wraps one (with disabled and is_optional).
func (c *compiler) perFilter(m map[string]*anypb.Any, path string) (map[string]*FilterConfig, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[string]*FilterConfig, len(m))
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		a := m[name]
		p := fmt.Sprintf("%s[%q]", path, name)
		fc := &FilterConfig{}
		optional := false
		if isFilterConfig(a) {
			// Through the registry's decoder: a FilterConfig may come in a
			// TypedStruct too.
			_, msg, err := extension.Unpack(a, p)
			if err != nil {
				return nil, err
			}
			w, ok := msg.(*routev3.FilterConfig)
			if !ok {
				return nil, config.Errorf(p, "expected an envoy.config.route.v3.FilterConfig")
			}
			if err := config.CheckFields(w, p, "config", "is_optional", "disabled"); err != nil {
				return nil, err
			}
			fc.Disabled, optional = w.GetDisabled(), w.GetIsOptional()
			a = w.GetConfig()
			p = config.Join(p, "config")
		}
		if a != nil {
			if c.opts.PerFilterConfig == nil {
				return nil, config.Errorf(p, "per-filter config for filter %q (@type %s) is not supported here", name, a.GetTypeUrl())
			}
			v, err := c.opts.PerFilterConfig(name, a, p)
			if err != nil {
				if optional && extension.Missing(err) {
					// As Envoy: an optional config of a filter it lacks is
					// ignored; an invalid config of one it has is an error.
					continue
				}
				return nil, err
			}
			fc.Config = v
		}
		// The loader renames a deprecated v2 filter name in http_filters
		// (envoy.buffer → envoy.filters.http.buffer): a per-route key with
		// the old name must find that filter too.
		if canon, ok := config.CanonicalName(name); ok {
			if _, dup := m[canon]; !dup {
				out[canon] = fc
			}
		}
		out[name] = fc
	}
	return out, nil
}

const filterConfigType = "type.googleapis.com/envoy.config.route.v3.FilterConfig"

// isFilterConfig reports an Any holding a FilterConfig, directly or in a
// TypedStruct.
func isFilterConfig(a *anypb.Any) bool { return extension.InnerType(a) == filterConfigType }

// cors compiles a deprecated cors field through Options.CompileCors.
func (c *compiler) cors(p *routev3.CorsPolicy, path string) (any, error) {
	if p == nil {
		return nil, nil
	}
	if c.opts.CompileCors == nil {
		return nil, config.Unsupported(path, "cors here")
	}
	return c.opts.CompileCors(p, path)
}

func (c *compiler) route(pr *routev3.Route, path string, vh *VirtualHost) (*Route, error) {
	if err := config.CheckFields(pr, path, "name", "match", "route", "redirect", "direct_response", "non_forwarding_action",
		"request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove",
		"decorator", "typed_per_filter_config", "metadata", "per_request_buffer_limit_bytes", "request_body_buffer_limit", "stat_prefix", "tracing"); err != nil {
		return nil, err
	}
	pf, err := c.perFilter(pr.GetTypedPerFilterConfig(), config.Join(path, "typed_per_filter_config"))
	if err != nil {
		return nil, err
	}
	rt := &Route{Name: pr.GetName(), VHost: vh, Decorator: pr.GetDecorator().GetOperation(), PerFilter: pf,
		BufferLimit: bufferLimit(pr.GetPerRequestBufferLimitBytes(), pr.GetRequestBodyBufferLimit()),
		Metadata:    routeMetadata(pr.GetMetadata())}
	if t := pr.GetTracing(); t != nil {
		if c.opts.CompileTracing == nil {
			return nil, config.Unsupported(config.Join(path, "tracing"), "route tracing here")
		}
		if rt.Tracing, err = c.opts.CompileTracing(t, config.Join(path, "tracing")); err != nil {
			return nil, err
		}
	}
	m, err := c.match(pr.GetMatch(), config.Join(path, "match"))
	if err != nil {
		return nil, err
	}
	rt.match = m
	if rt.Mutations, err = c.mutations(pr, path); err != nil {
		return nil, err
	}
	switch a := pr.GetAction().(type) {
	case *routev3.Route_Route:
		rt.Kind = Forward
		if rt.Action, err = c.routeAction(a.Route, config.Join(path, "route"), &m); err != nil {
			return nil, err
		}
		if rt.Cors, err = c.cors(a.Route.GetCors(), config.Join(path, "route.cors")); err != nil {
			return nil, err
		}
	case *routev3.Route_Redirect:
		rt.Kind = Redirect
		if rt.Redirect, err = c.redirect(a.Redirect, config.Join(path, "redirect")); err != nil {
			return nil, err
		}
	case *routev3.Route_DirectResponse:
		rt.Kind = DirectResponse
		if rt.Direct, err = c.direct(a.DirectResponse, config.Join(path, "direct_response")); err != nil {
			return nil, err
		}
	case *routev3.Route_NonForwardingAction:
		rt.Kind = NonForwarding
	default:
		return nil, config.Errorf(path, "route has no action: give route, redirect or direct_response")
	}
	return rt, nil
}

func (c *compiler) match(pm *routev3.RouteMatch, path string) (Match, error) {
	if err := config.CheckFields(pm, path, "prefix", "path", "safe_regex", "path_separated_prefix", "connect_matcher",
		"case_sensitive", "headers", "query_parameters", "grpc", "runtime_fraction"); err != nil {
		return Match{}, err
	}
	m := Match{caseSensitive: true}
	if pm.GetCaseSensitive() != nil {
		m.caseSensitive = pm.GetCaseSensitive().GetValue()
	}
	switch p := pm.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		m.kind, m.value = pathPrefix, p.Prefix
	case *routev3.RouteMatch_Path:
		m.kind, m.value = pathExact, p.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		m.kind, m.value = pathSeparatedPrefix, p.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		re, err := strmatch.CompileRegex(p.SafeRegex, config.Join(path, "safe_regex"))
		if err != nil {
			return m, err
		}
		if !m.caseSensitive {
			re = regexp.MustCompile("(?i)" + re.String())
		}
		m.kind, m.re = pathRegex, re
	case *routev3.RouteMatch_ConnectMatcher_:
		// Envoy's ConnectMatcher has no fields: it matches CONNECT requests
		// (which carry no path, RFC 9110 §9.3.6), and only it does.
		if err := config.CheckFields(p.ConnectMatcher, config.Join(path, "connect_matcher")); err != nil {
			return m, err
		}
		m.kind = pathConnect
	default:
		return m, config.Errorf(path, "route match has no path specifier (prefix, path, safe_regex, path_separated_prefix or connect_matcher)")
	}
	for i, h := range pm.GetHeaders() {
		hm, err := compileHeaderMatcher(h, config.Index(config.Join(path, "headers"), i))
		if err != nil {
			return m, err
		}
		m.headers = append(m.headers, hm)
	}
	for i, q := range pm.GetQueryParameters() {
		qp := config.Index(config.Join(path, "query_parameters"), i)
		if err := config.CheckFields(q, qp, "name", "string_match", "present_match"); err != nil {
			return m, err
		}
		qm := queryMatcher{name: q.GetName()}
		if sm := q.GetStringMatch(); sm != nil {
			s, err := strmatch.Compile(sm, config.Join(qp, "string_match"))
			if err != nil {
				return m, err
			}
			qm.sm = &s
		} else if !q.GetPresentMatch() {
			return m, config.Errorf(qp, "query parameter matcher needs string_match or present_match: true")
		}
		m.query = append(m.query, qm)
	}
	if pm.GetGrpc() != nil {
		m.grpc = true
	}
	if rf := pm.GetRuntimeFraction(); rf != nil {
		if err := config.CheckFields(rf, config.Join(path, "runtime_fraction"), "default_value", "runtime_key"); err != nil {
			return m, err
		}
		m.hasFraction = true
		m.fraction = fractionPerMillion(rf.GetDefaultValue())
		m.rt, m.fracKey, m.fracDef = c.opts.Runtime, rf.GetRuntimeKey(), rf.GetDefaultValue()
	}
	return m, nil
}

func compileHeaderMatcher(h *routev3.HeaderMatcher, path string) (headerMatcher, error) {
	if err := config.CheckFields(h, path, "name", "exact_match", "safe_regex_match", "range_match", "present_match",
		"prefix_match", "suffix_match", "contains_match", "string_match", "invert_match", "treat_missing_header_as_empty"); err != nil {
		return headerMatcher{}, err
	}
	hm := headerMatcher{name: headers.Lower(h.GetName()), invert: h.GetInvertMatch(), missingAsEmpty: h.GetTreatMissingHeaderAsEmpty()}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_ExactMatch:
		hm.sm = strmatch.Exact(s.ExactMatch)
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, err := strmatch.CompileRegex(s.SafeRegexMatch, config.Join(path, "safe_regex_match"))
		if err != nil {
			return hm, err
		}
		hm.sm = strmatch.Regex(re)
	case *routev3.HeaderMatcher_RangeMatch:
		hm.kind, hm.lo, hm.hi = 2, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case *routev3.HeaderMatcher_PresentMatch:
		hm.kind, hm.present = 1, s.PresentMatch
	case *routev3.HeaderMatcher_PrefixMatch:
		hm.sm = strmatch.Prefix(s.PrefixMatch)
	case *routev3.HeaderMatcher_SuffixMatch:
		hm.sm = strmatch.Suffix(s.SuffixMatch)
	case *routev3.HeaderMatcher_ContainsMatch:
		hm.sm = strmatch.Contains(s.ContainsMatch)
	case *routev3.HeaderMatcher_StringMatch:
		sm, err := strmatch.Compile(s.StringMatch, config.Join(path, "string_match"))
		if err != nil {
			return hm, err
		}
		hm.sm = sm
	default:
		// No specifier: Envoy treats it as a presence match.
		hm.kind, hm.present = 1, true
	}
	return hm, nil
}

func durationOr(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

func (c *compiler) routeAction(a *routev3.RouteAction, path string, m *Match) (*RouteAction, error) {
	if err := config.CheckFields(a, path, "cluster", "cluster_header", "weighted_clusters", "cluster_not_found_response_code",
		"prefix_rewrite", "regex_rewrite", "host_rewrite_literal", "auto_host_rewrite", "host_rewrite_header",
		"host_rewrite_path_regex", "host_rewrite", "timeout", "idle_timeout", "retry_policy", "request_mirror_policies", "hash_policy",
		"upgrade_configs", "max_grpc_timeout", "grpc_timeout_offset", "append_x_forwarded_host", "priority",
		"max_stream_duration", "cors", "rate_limits", "include_vh_rate_limits", "metadata_match",
		"internal_redirect_policy", "internal_redirect_action", "max_internal_redirects"); err != nil {
		return nil, err
	}
	ra := &RouteAction{
		Timeout:              durationOr(a.GetTimeout(), 15*time.Second),
		IdleTimeout:          -1,
		matchPrefix:          m.value,
		matchKind:            m.kind,
		caseSensitive:        m.caseSensitive,
		AppendXForwardedHost: a.GetAppendXForwardedHost(),
	}
	ra.TimeoutMs = strconv.FormatInt(ra.Timeout.Milliseconds(), 10)
	// Only the envoy.lb namespace of metadata_match selects subsets; Envoy
	// ignores the others.
	if lb, ok := a.GetMetadataMatch().GetFilterMetadata()["envoy.lb"]; ok {
		ra.MetadataMatch = upstream.NewMetadataMatch(lb)
	}
	var err error
	if ra.RateLimits, err = CompileRateLimits(a.GetRateLimits(), config.Join(path, "rate_limits"), RateLimitOptions{}); err != nil {
		return nil, err
	}
	if ra.InternalRedirect, err = c.internalRedirect(a, path); err != nil {
		return nil, err
	}
	ra.IncludeVHRateLimits = a.GetIncludeVhRateLimits().GetValue()
	if a.GetIdleTimeout() != nil {
		ra.IdleTimeout = a.GetIdleTimeout().AsDuration()
	}
	if msd := a.GetMaxStreamDuration(); msd != nil {
		p := config.Join(path, "max_stream_duration")
		if err := config.CheckFields(msd, p, "grpc_timeout_header_max", "grpc_timeout_header_offset"); err != nil {
			return nil, err
		}
		if msd.GetGrpcTimeoutHeaderMax() != nil {
			ra.MaxGRPCTimeout, ra.hasMaxGRPCTimeout = msd.GetGrpcTimeoutHeaderMax().AsDuration(), true
		}
		ra.GRPCTimeoutOffset = durationOr(msd.GetGrpcTimeoutHeaderOffset(), 0)
	}
	if a.GetMaxGrpcTimeout() != nil {
		ra.MaxGRPCTimeout, ra.hasMaxGRPCTimeout = a.GetMaxGrpcTimeout().AsDuration(), true
	}
	if a.GetGrpcTimeoutOffset() != nil {
		ra.GRPCTimeoutOffset = a.GetGrpcTimeoutOffset().AsDuration()
	}
	// priority HIGH selects the clusters' HIGH circuit-breaker thresholds.
	ra.HighPriority = a.GetPriority() == corev3.RoutingPriority_HIGH
	switch a.GetClusterNotFoundResponseCode() {
	case routev3.RouteAction_SERVICE_UNAVAILABLE:
		ra.NotFoundStatus = 503
	case routev3.RouteAction_NOT_FOUND:
		ra.NotFoundStatus = 404
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		ra.NotFoundStatus = 500
	}
	switch cs := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		ra.Cluster = c.ref(cs.Cluster, config.Join(path, "cluster"))
		if ra.Cluster == nil {
			ra.Cluster = &upstream.Ref{}
		}
	case *routev3.RouteAction_ClusterHeader:
		ra.ClusterHeader = headers.Lower(cs.ClusterHeader)
	case *routev3.RouteAction_WeightedClusters:
		wp := config.Join(path, "weighted_clusters")
		if err := config.CheckFields(cs.WeightedClusters, wp, "clusters", "total_weight", "runtime_key_prefix"); err != nil {
			return nil, err
		}
		for i, w := range cs.WeightedClusters.GetClusters() {
			cp := config.Index(config.Join(wp, "clusters"), i)
			if err := config.CheckFields(w, cp, "name", "cluster_header", "weight", "request_headers_to_add", "request_headers_to_remove",
				"response_headers_to_add", "response_headers_to_remove", "host_rewrite_literal", "typed_per_filter_config", "metadata_match"); err != nil {
				return nil, err
			}
			pf, err := c.perFilter(w.GetTypedPerFilterConfig(), config.Join(cp, "typed_per_filter_config"))
			if err != nil {
				return nil, err
			}
			wc := WeightedCluster{Weight: uint64(w.GetWeight().GetValue()), HostRewrite: w.GetHostRewriteLiteral(), PerFilter: pf,
				MetadataMatch: ra.MetadataMatch}
			// A weighted cluster's envoy.lb criteria are merged over the
			// route's, its values winning (Envoy's WeightedClusterEntry).
			if lb, ok := w.GetMetadataMatch().GetFilterMetadata()["envoy.lb"]; ok {
				wc.MetadataMatch = ra.MetadataMatch.Merge(lb)
			}
			if w.GetName() != "" {
				wc.Cluster = c.ref(w.GetName(), config.Join(cp, "name"))
			} else {
				wc.ClusterHeader = headers.Lower(w.GetClusterHeader())
			}
			if wc.Mutations, err = c.mutations(w, cp); err != nil {
				return nil, err
			}
			ra.Weighted = append(ra.Weighted, wc)
			ra.totalWeight += wc.Weight
		}
		if ra.totalWeight == 0 {
			return nil, config.Errorf(wp, "weighted_clusters: the sum of weights must be greater than 0")
		}
		if tw := cs.WeightedClusters.GetTotalWeight(); tw != nil && uint64(tw.GetValue()) != ra.totalWeight {
			return nil, config.Errorf(config.Join(wp, "total_weight"), "sum of weights in weighted_cluster should add up to %d, got %d", tw.GetValue(), ra.totalWeight)
		}
	default:
		return nil, config.Unsupported(path, "this cluster specifier", "cluster", "cluster_header", "weighted_clusters")
	}
	if a.GetPrefixRewrite() != "" {
		if m.kind == pathRegex {
			return nil, config.Errorf(config.Join(path, "prefix_rewrite"), "prefix_rewrite cannot be used with a safe_regex match")
		}
		ra.PrefixRewrite, ra.hasPrefixRewrite = a.GetPrefixRewrite(), true
	}
	if rr := a.GetRegexRewrite(); rr != nil {
		if ra.hasPrefixRewrite {
			return nil, config.Errorf(config.Join(path, "regex_rewrite"), "only one of prefix_rewrite and regex_rewrite may be set")
		}
		re, subst, err := compileSubst(rr, config.Join(path, "regex_rewrite"))
		if err != nil {
			return nil, err
		}
		ra.RegexRewrite, ra.RegexSubst = re, subst
	}
	switch hr := a.GetHostRewriteSpecifier().(type) {
	case *routev3.RouteAction_HostRewriteLiteral:
		ra.HostRewrite = hr.HostRewriteLiteral
	case *routev3.RouteAction_AutoHostRewrite:
		ra.AutoHostRewrite = hr.AutoHostRewrite.GetValue()
	case *routev3.RouteAction_HostRewriteHeader:
		ra.HostRewriteHeader = headers.Lower(hr.HostRewriteHeader)
	case *routev3.RouteAction_HostRewritePathRegex:
		re, subst, err := compileSubst(hr.HostRewritePathRegex, config.Join(path, "host_rewrite_path_regex"))
		if err != nil {
			return nil, err
		}
		ra.HostRewritePath, ra.HostRewritePathSubst = re, subst
	case *routev3.RouteAction_HostRewrite:
		// host_rewrite: the substitution format (%REQ(...)% and the
		// other command operators), evaluated per request.
		if !strings.Contains(hr.HostRewrite, "%") {
			ra.HostRewrite = hr.HostRewrite
			break
		}
		if c.opts.CompileValue == nil {
			return nil, config.Errorf(config.Join(path, "host_rewrite"), "substitutions are not available here")
		}
		v, err := c.opts.CompileValue(hr.HostRewrite)
		if err != nil {
			return nil, config.Errorf(config.Join(path, "host_rewrite"), "%v", err)
		}
		ra.HostRewriteFormat = v
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		var err error
		if ra.RetryPolicy, err = c.retryPolicy(rp, config.Join(path, "retry_policy")); err != nil {
			return nil, err
		}
	}
	for i, mp := range a.GetRequestMirrorPolicies() {
		mpp := config.Index(config.Join(path, "request_mirror_policies"), i)
		if err := config.CheckFields(mp, mpp, "cluster", "cluster_header", "runtime_fraction", "trace_sampled", "disable_shadow_host_suffix_append"); err != nil {
			return nil, err
		}
		mr := Mirror{PerMillion: 1_000_000, NoShadowSuffix: mp.GetDisableShadowHostSuffixAppend()}
		if mp.GetCluster() != "" {
			mr.Cluster = c.ref(mp.GetCluster(), config.Join(mpp, "cluster"))
		} else {
			mr.ClusterHeader = headers.Lower(mp.GetClusterHeader())
		}
		if rf := mp.GetRuntimeFraction(); rf != nil {
			mr.PerMillion = fractionPerMillion(rf.GetDefaultValue())
		}
		ra.Mirrors = append(ra.Mirrors, mr)
	}
	for i, hp := range a.GetHashPolicy() {
		h, err := compileHashPolicy(hp, config.Index(config.Join(path, "hash_policy"), i))
		if err != nil {
			return nil, err
		}
		ra.HashPolicies = append(ra.HashPolicies, h)
	}
	for i, uc := range a.GetUpgradeConfigs() {
		up := config.Index(config.Join(path, "upgrade_configs"), i)
		if err := config.CheckFields(uc, up, "upgrade_type", "enabled", "connect_config"); err != nil {
			return nil, err
		}
		if ra.Upgrades == nil {
			ra.Upgrades = map[string]bool{}
		}
		en := true
		if uc.GetEnabled() != nil {
			en = uc.GetEnabled().GetValue()
		}
		t := strings.ToLower(uc.GetUpgradeType())
		if _, dup := ra.Upgrades[t]; dup {
			return nil, config.Errorf(config.Join(up, "upgrade_type"), "duplicate upgrade %s (as Envoy)", uc.GetUpgradeType())
		}
		ra.Upgrades[t] = en
		if cc := uc.GetConnectConfig(); cc != nil {
			ccp := config.Join(up, "connect_config")
			if t != "connect" {
				return nil, config.Errorf(ccp, "non-CONNECT upgrade type %s has a connect_config (as Envoy refuses)", uc.GetUpgradeType())
			}
			if err := config.CheckFields(cc, ccp, "allow_post", "proxy_protocol_config"); err != nil {
				return nil, err
			}
			ra.Connect = &ConnectConfig{AllowPost: cc.GetAllowPost()}
			if pp := cc.GetProxyProtocolConfig(); pp != nil {
				ppp := config.Join(ccp, "proxy_protocol_config")
				if err := config.CheckFields(pp, ppp, "version"); err != nil {
					return nil, err
				}
				ra.Connect.ProxyProtocol = uint8(pp.GetVersion()) + 1 // V1 is 0 in the enum
			}
		}
	}
	return ra, nil
}

func compileSubst(rr *matcherv3.RegexMatchAndSubstitute, path string) (*regexp.Regexp, string, error) {
	if err := config.CheckFields(rr, path, "pattern", "substitution"); err != nil {
		return nil, "", err
	}
	if err := config.CheckFields(rr.GetPattern(), config.Join(path, "pattern"), "google_re2", "regex"); err != nil {
		return nil, "", err
	}
	re, err := regexp.Compile(rr.GetPattern().GetRegex())
	if err != nil {
		return nil, "", config.Errorf(config.Join(path, "pattern.regex"), "invalid regex: %v", err)
	}
	// RE2 substitutions use \1; Go's regexp uses ${1}.
	subst := regexp.MustCompile(`\\(\d)`).ReplaceAllString(strings.ReplaceAll(rr.GetSubstitution(), "$", "$$"), "$${$1}")
	return re, subst, nil
}

func compileHashPolicy(hp *routev3.RouteAction_HashPolicy, path string) (HashPolicy, error) {
	if err := config.CheckFields(hp, path, "header", "cookie", "connection_properties", "query_parameter", "terminal"); err != nil {
		return HashPolicy{}, err
	}
	h := HashPolicy{Terminal: hp.GetTerminal()}
	switch p := hp.GetPolicySpecifier().(type) {
	case *routev3.RouteAction_HashPolicy_Header_:
		if err := config.CheckFields(p.Header, config.Join(path, "header"), "header_name", "regex_rewrite"); err != nil {
			return h, err
		}
		h.Kind, h.Name = 0, headers.Lower(p.Header.GetHeaderName())
		if rr := p.Header.GetRegexRewrite(); rr != nil {
			re, subst, err := compileSubst(rr, config.Join(path, "header.regex_rewrite"))
			if err != nil {
				return h, err
			}
			h.RegexRewrite, h.RegexSubst = re, subst
		}
	case *routev3.RouteAction_HashPolicy_Cookie_:
		if err := config.CheckFields(p.Cookie, config.Join(path, "cookie"), "name", "ttl", "path"); err != nil {
			return h, err
		}
		h.Kind, h.Name, h.CookiePath = 1, p.Cookie.GetName(), p.Cookie.GetPath()
		if p.Cookie.GetTtl() != nil {
			h.CookieTTL, h.hasTTL = p.Cookie.GetTtl().AsDuration(), true
		}
	case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
		if !p.ConnectionProperties.GetSourceIp() {
			return h, config.Errorf(config.Join(path, "connection_properties"), "connection_properties needs source_ip: true")
		}
		h.Kind = 2
	case *routev3.RouteAction_HashPolicy_QueryParameter_:
		h.Kind, h.Name = 3, p.QueryParameter.GetName()
	}
	return h, nil
}

func (c *compiler) retryPolicy(rp *routev3.RetryPolicy, path string) (*RetryPolicy, error) {
	var priority *extension.Resolved
	if pr := rp.GetRetryPriority(); pr != nil {
		// Through the registry, so a typo is "unknown @type".
		r, err := extension.Lookup(extension.RetryPriority, pr.GetTypedConfig(), config.Join(path, "retry_priority.typed_config"))
		if err != nil {
			return nil, err
		}
		if pp, ok := r.Config.(*previousprioritiesv3.PreviousPrioritiesConfig); ok && pp.GetUpdateFrequency() <= 0 {
			return nil, config.Errorf(config.Join(path, "retry_priority.typed_config.update_frequency"), "must be greater than 0")
		}
		priority = &r
	}
	if err := config.CheckFields(rp, path, "retry_on", "num_retries", "per_try_timeout", "per_try_idle_timeout",
		"retriable_status_codes", "retry_back_off", "retry_host_predicate", "host_selection_retry_max_attempts",
		"retriable_headers", "retry_priority"); err != nil {
		return nil, err
	}
	p := &RetryPolicy{
		NumRetries:               1,
		PerTryTimeout:            durationOr(rp.GetPerTryTimeout(), 0),
		PerTryIdleTimeout:        durationOr(rp.GetPerTryIdleTimeout(), 0),
		StatusCodes:              rp.GetRetriableStatusCodes(),
		BackoffBase:              25 * time.Millisecond,
		HostSelectionMaxAttempts: int(rp.GetHostSelectionRetryMaxAttempts()),
	}
	on, bad := ParseRetryOn(rp.GetRetryOn())
	if len(bad) > 0 {
		return nil, config.Errorf(config.Join(path, "retry_on"), "unknown retry_on value(s) %s", strings.Join(bad, ", "))
	}
	p.On = on
	if priority != nil {
		priority.Ext.Factory.(retryPriority)(p, priority.Config)
	}
	if rp.GetNumRetries() != nil {
		p.NumRetries = rp.GetNumRetries().GetValue()
	}
	if bo := rp.GetRetryBackOff(); bo != nil {
		p.BackoffBase = bo.GetBaseInterval().AsDuration()
		if p.BackoffBase <= 0 {
			return nil, config.Errorf(config.Join(path, "retry_back_off.base_interval"), "must be greater than zero")
		}
		p.BackoffMax = durationOr(bo.GetMaxInterval(), 0)
		if p.BackoffMax != 0 && p.BackoffMax < p.BackoffBase {
			return nil, config.Errorf(config.Join(path, "retry_back_off.max_interval"), "must be at least base_interval")
		}
	}
	if p.BackoffMax == 0 {
		p.BackoffMax = 10 * p.BackoffBase
	}
	for i, hp := range rp.GetRetryHostPredicate() {
		pp := config.Index(config.Join(path, "retry_host_predicate"), i)
		if hp.GetTypedConfig() == nil {
			// A bare name (v2 configs) still selects the predicate.
			if e := extension.ByName(extension.RetryHostPredicate, hp.GetName()); e != nil {
				e.Factory.(retryHostPredicate)(p, nil)
				continue
			}
		}
		r, err := extension.Lookup(extension.RetryHostPredicate, hp.GetTypedConfig(), config.Join(pp, "typed_config"))
		if err != nil {
			return nil, err
		}
		r.Ext.Factory.(retryHostPredicate)(p, r.Config)
	}
	for i, h := range rp.GetRetriableHeaders() {
		hm, err := compileHeaderMatcher(h, config.Index(config.Join(path, "retriable_headers"), i))
		if err != nil {
			return nil, err
		}
		p.RetriableHeaders = append(p.RetriableHeaders, hm)
	}
	return p, nil
}

func (c *compiler) redirect(r *routev3.RedirectAction, path string) (*RedirectAction, error) {
	if err := config.CheckFields(r, path, "https_redirect", "scheme_redirect", "host_redirect", "port_redirect",
		"path_redirect", "prefix_rewrite", "regex_rewrite", "response_code", "strip_query"); err != nil {
		return nil, err
	}
	ra := &RedirectAction{Host: r.GetHostRedirect(), StripQuery: r.GetStripQuery()}
	switch s := r.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			ra.Scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		ra.Scheme = strings.ToLower(s.SchemeRedirect)
	}
	if r.GetPortRedirect() != 0 {
		ra.Port = strconv.Itoa(int(r.GetPortRedirect()))
	}
	switch p := r.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		ra.Path, ra.hasPath = p.PathRedirect, true
	case *routev3.RedirectAction_PrefixRewrite:
		ra.PrefixRewrite, ra.hasPrefix = p.PrefixRewrite, true
	case *routev3.RedirectAction_RegexRewrite:
		re, subst, err := compileSubst(p.RegexRewrite, config.Join(path, "regex_rewrite"))
		if err != nil {
			return nil, err
		}
		ra.RegexRewrite, ra.RegexSubst = re, subst
	}
	switch r.GetResponseCode() {
	case routev3.RedirectAction_MOVED_PERMANENTLY:
		ra.Status = 301
	case routev3.RedirectAction_FOUND:
		ra.Status = 302
	case routev3.RedirectAction_SEE_OTHER:
		ra.Status = 303
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		ra.Status = 307
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		ra.Status = 308
	}
	return ra, nil
}

func (c *compiler) direct(d *routev3.DirectResponseAction, path string) (*DirectResponseAction, error) {
	if err := config.CheckFields(d, path, "status", "body"); err != nil {
		return nil, err
	}
	dr := &DirectResponseAction{Status: int(d.GetStatus())}
	if b := d.GetBody(); b != nil {
		bp := config.Join(path, "body")
		if err := config.CheckFields(b, bp, "inline_string", "inline_bytes", "filename"); err != nil {
			return nil, err
		}
		body, _, err := config.ReadDataSource(b, bp)
		if err != nil {
			return nil, err
		}
		dr.Body = body
		if len(dr.Body) > 4096 {
			return nil, config.Errorf(bp, "direct response body is %d bytes; the limit is 4096 (max_direct_response_body_size_bytes)", len(dr.Body))
		}
	}
	return dr, nil
}

// mutationSource is any config message with header add/remove lists.
type mutationSource interface {
	GetRequestHeadersToAdd() []*corev3.HeaderValueOption
	GetRequestHeadersToRemove() []string
	GetResponseHeadersToAdd() []*corev3.HeaderValueOption
	GetResponseHeadersToRemove() []string
}

func (c *compiler) mutations(src mutationSource, path string) (Mutations, error) {
	var m Mutations
	var err error
	if m.ReqAdd, err = c.headerOps(src.GetRequestHeadersToAdd(), config.Join(path, "request_headers_to_add")); err != nil {
		return m, err
	}
	if m.RespAdd, err = c.headerOps(src.GetResponseHeadersToAdd(), config.Join(path, "response_headers_to_add")); err != nil {
		return m, err
	}
	for i, n := range src.GetRequestHeadersToRemove() {
		if err := checkMutable(n, config.Index(config.Join(path, "request_headers_to_remove"), i)); err != nil {
			return m, err
		}
		m.ReqRemove = append(m.ReqRemove, headers.Lower(n))
	}
	for i, n := range src.GetResponseHeadersToRemove() {
		if err := checkMutable(n, config.Index(config.Join(path, "response_headers_to_remove"), i)); err != nil {
			return m, err
		}
		m.RespRemove = append(m.RespRemove, headers.Lower(n))
	}
	return m, nil
}

func checkMutable(name, path string) error {
	n := strings.ToLower(name)
	if strings.HasPrefix(n, ":") || n == "host" {
		return config.Errorf(path, "%q may not be modified by header mutations", name)
	}
	return nil
}

func (c *compiler) headerOps(opts []*corev3.HeaderValueOption, path string) ([]HeaderOp, error) {
	var out []HeaderOp
	for i, o := range opts {
		op, err := c.headerOp(o, config.Index(path, i))
		if err != nil {
			return nil, err
		}
		out = append(out, op)
	}
	return out, nil
}

// headerOp compiles one HeaderValueOption at path p.
func (c *compiler) headerOp(o *corev3.HeaderValueOption, p string) (HeaderOp, error) {
	if err := config.CheckFields(o, p, "header", "append", "append_action", "keep_empty_value"); err != nil {
		return HeaderOp{}, err
	}
	if err := checkMutable(o.GetHeader().GetKey(), config.Join(p, "header.key")); err != nil {
		return HeaderOp{}, err
	}
	op := HeaderOp{Name: headers.Lower(o.GetHeader().GetKey()), KeepEmpty: o.GetKeepEmptyValue()}
	if o.GetAppend() != nil {
		if o.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
			return HeaderOp{}, config.Errorf(p, "append and append_action are mutually exclusive")
		}
		if !o.GetAppend().GetValue() {
			op.Action = OverwriteIfExistsOrAdd
		}
	} else {
		switch o.GetAppendAction() {
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			op.Action = AddIfAbsent
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			op.Action = OverwriteIfExistsOrAdd
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			op.Action = OverwriteIfExists
		}
	}
	v := o.GetHeader().GetValue()
	if v == "" && len(o.GetHeader().GetRawValue()) > 0 {
		v = string(o.GetHeader().GetRawValue())
	}
	if !strings.Contains(v, "%") {
		op.literal, op.isLiteral = v, true
		return op, nil
	}
	if c.opts.CompileValue == nil {
		return HeaderOp{}, config.Errorf(config.Join(p, "header.value"), "header value substitutions are not available here")
	}
	val, err := c.opts.CompileValue(v)
	if err != nil {
		return HeaderOp{}, config.Errorf(config.Join(p, "header.value"), "%v", err)
	}
	op.Value = val
	return op, nil
}

// bufferLimit is a route's or virtual host's request buffer limit
// (request_body_buffer_limit, or the deprecated per_request_buffer_limit_bytes);
// 0 when unset.
func bufferLimit(old *wrapperspb.UInt32Value, v *wrapperspb.UInt64Value) int64 {
	if v != nil {
		return int64(v.GetValue())
	}
	if old != nil {
		return int64(old.GetValue())
	}
	return 0
}

// CompileRegexRewrite compiles a RegexMatchAndSubstitute into a function
// that rewrites a value (every match replaced, as Envoy's
// regex_value_rewrite and regex_rewrite).
func CompileRegexRewrite(rr *matcherv3.RegexMatchAndSubstitute, path string) (func(string) string, error) {
	re, subst, err := compileSubst(rr, path)
	if err != nil {
		return nil, err
	}
	return func(s string) string { return re.ReplaceAllString(s, subst) }, nil
}
