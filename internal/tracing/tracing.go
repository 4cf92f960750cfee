// Package tracing is the connection manager's tracing (the `tracing`
// field of HttpConnectionManager): the sampling decision Envoy makes
// (x-envoy-force-trace, client_sampling, random_sampling,
// overall_sampling), the span a request gets — named after the route's
// decorator, or "ingress" / "egress <host>" — with Envoy's tags, and the
// tracers that propagate and export it, found through the extension
// registry (envoy.tracers.zipkin in zipkin.go, envoy.tracers.opentelemetry
// in opentelemetry.go, envoy.tracers.datadog in datadog.go). With
// spawn_upstream_span, or the router's start_child_span, a driver whose
// spans implement Spawner gives the upstream request a span of its own
// (Config.StartUpstream).
//
// The sampling decision is Envoy's (ConnectionManagerUtility::
// mutateTracingRequestHeader): it is derived from the x-request-id, not
// rolled afresh, and packed into the UUID (requestid.go), so that the same
// request id always gets the same decision and the next proxy keeps it.
package tracing

import (
	"encoding/json"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	tagv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

// Driver is a tracer implementation (Zipkin, OpenTelemetry, …).
type Driver interface {
	// Start begins a span for a request, from the incoming context in its
	// headers; sampled is the connection manager's decision. egress asks
	// for a client span (the listener is outbound and no upstream span is
	// spawned).
	Start(req *headers.Request, name string, egress, sampled bool) Span
}

// Spawner is a Span that can start a child span: the span of the upstream
// request with spawn_upstream_span (Envoy's Span::spawnChild), a client
// span in the same trace whose parent is this one.
type Spawner interface {
	SpawnChild(name string) Span
}

// childSpanner is a Driver whose spans are Spawners.
type childSpanner interface {
	spawnsChildren()
}

// upstreamSpawner is a Spawner whose child differs when it is the span
// spawn_upstream_span asks for rather than the router's start_child_span
// (Zipkin's getAnnotation: with spawn_upstream_span the child is always a
// client span; otherwise the traffic direction decides).
type upstreamSpawner interface {
	spawnChild(name string, upstreamSpan bool) Span
}

// eventLogger is a Span that carries timed events (Envoy's Span::log):
// Zipkin annotations, OpenTelemetry span events. verbose writes the
// stream's milestones with it.
type eventLogger interface {
	Log(t time.Time, event string)
}

// eventDriver is a Driver whose spans are eventLoggers.
type eventDriver interface {
	logsEvents()
}

// renamer is a Span whose operation name can change after it started
// (Envoy's Span::setOperation).
type renamer interface {
	SetOperation(name string)
}

// Span is one request's span.
type Span interface {
	// Inject writes the span context into the request going upstream.
	Inject(m *headers.Map)
	// SetTag records a tag; Finish ends and exports the span.
	SetTag(k, v string)
	Finish()
	Sampled() bool
}

// Context is what compiling a tracer can use.
type Context struct {
	Stats    *stats.Store
	Async    *asyncclient.Client
	Node     *corev3.Node
	Hostname string
	// Default is the bootstrap's tracing.http: the provider of connection
	// managers whose tracing names none (Envoy's deprecated global tracer).
	Default *tracev3.Tracing_Http
	// Runtime holds the tracers' runtime keys
	// (tracing.opentelemetry.min_flush_spans, …); nil: the defaults.
	Runtime *runtime.Loader
	// Log is the server's logger (nil: slog.Default()).
	Log *slog.Logger
	// Clusters finds a cluster's protocol for an upstream span's
	// http.protocol tag (nil: the downstream protocol).
	Clusters *upstream.Manager
}

// Factory compiles a tracer config (the Factory of an extension.Tracer).
type Factory func(ctx *Context, cfg proto.Message, path string) (Driver, error)

// Config is a compiled HttpConnectionManager.Tracing.
type Config struct {
	driver Driver
	// random, client and overall are the sampling percentages as Envoy
	// holds them: FractionalPercents over TEN_THOUSAND, the runtime keys
	// tracing.random_sampling, tracing.client_enabled and
	// tracing.global_enabled overriding them.
	random, client, overall *typev3.FractionalPercent
	rt                      *runtime.Loader
	maxPathTag              int
	tags                    []customTag
	egress, noPropagation   bool
	spawnUpstream           bool
	// startChild is the router's start_child_span: every forwarded
	// request gets a child span, as with spawn_upstream_span, but the
	// downstream span keeps the kind of the traffic direction.
	startChild bool
	verbose    bool
	// packReason and ridSampling are the request id extension's
	// pack_trace_reason and use_request_id_for_trace_sampling (Envoy's
	// defaults: both on).
	packReason, ridSampling bool
	nodeID, zone            string
	clusters                *upstream.Manager
}

// tenThousand is a Percent as Envoy's connection manager converts it:
// PROTOBUF_PERCENT_TO_ROUNDED_INTEGER_OR_DEFAULT(..., 10000, 10000), a
// numerator over TEN_THOUSAND, 100 % when unset.
func tenThousand(p *typev3.Percent) *typev3.FractionalPercent {
	n := uint32(10000)
	if p != nil {
		n = uint32(math.Round(p.GetValue() * 100))
	}
	return &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_TEN_THOUSAND}
}

// enabled is Envoy's Snapshot::featureEnabled(key, default, random): the
// key's value (an integer percentage or a fractional percent) or def,
// evaluated as random % denominator < numerator.
func (c *Config) enabled(key string, def *typev3.FractionalPercent, random uint64) bool {
	num, den := c.rt.Snapshot().Fraction(key, def)
	if den == 0 {
		return false
	}
	return random%uint64(den) < uint64(num)
}

// customTag is one custom_tags entry: a literal (environment tags are
// read at compile time), a request header, or metadata (meta).
type customTag struct {
	name, literal, header, def string
	meta                       *metaTag
}

// metaTag is Envoy's MetadataCustomTag: the value at metadata_key (the
// filter metadata namespace key, then the path through its structs) of
// the request's dynamic metadata, the route's, the upstream cluster's or
// the upstream host's metadata.
type metaTag struct {
	kind metaKind
	key  string
	path []string
}

type metaKind uint8

const (
	metaRequest metaKind = iota
	metaRoute
	metaCluster
	metaHost
)

func compileMetaTag(m *tagv3.CustomTag_Metadata, p string) (*metaTag, error) {
	mt := &metaTag{}
	switch m.GetKind().GetKind().(type) {
	case *metadatav3.MetadataKind_Request_:
		mt.kind = metaRequest
	case *metadatav3.MetadataKind_Route_:
		mt.kind = metaRoute
	case *metadatav3.MetadataKind_Cluster_:
		mt.kind = metaCluster
	case *metadatav3.MetadataKind_Host_:
		mt.kind = metaHost
	default:
		return nil, config.Errorf(config.Join(p, "metadata.kind"), "a metadata kind (request, route, cluster or host) is required")
	}
	mk := m.GetMetadataKey()
	if mk.GetKey() == "" {
		return nil, config.Errorf(config.Join(p, "metadata.metadata_key.key"), "a metadata key is required")
	}
	mt.key = mk.GetKey()
	for i, seg := range mk.GetPath() {
		if seg.GetKey() == "" {
			return nil, config.Errorf(config.Index(config.Join(p, "metadata.metadata_key.path"), i), "a path segment needs a key")
		}
		mt.path = append(mt.path, seg.GetKey())
	}
	return mt, nil
}

// compileTags compiles custom_tags (of a connection manager or a route).
func compileTags(cts []*tagv3.CustomTag, path string) ([]customTag, error) {
	var tags []customTag
	for i, ct := range cts {
		p := config.Index(path, i)
		tag := customTag{name: ct.GetTag()}
		switch {
		case ct.GetLiteral() != nil:
			tag.literal = ct.GetLiteral().GetValue()
		case ct.GetEnvironment() != nil:
			tag.literal = os.Getenv(ct.GetEnvironment().GetName())
			if tag.literal == "" {
				tag.literal = ct.GetEnvironment().GetDefaultValue()
			}
		case ct.GetRequestHeader() != nil:
			tag.header, tag.def = headers.Lower(ct.GetRequestHeader().GetName()), ct.GetRequestHeader().GetDefaultValue()
		case ct.GetMetadata() != nil:
			mt, err := compileMetaTag(ct.GetMetadata(), p)
			if err != nil {
				return nil, err
			}
			tag.meta, tag.def = mt, ct.GetMetadata().GetDefaultValue()
		default:
			return nil, config.Unsupported(p, "this custom tag (a formatted value)", "literal", "environment", "request_header", "metadata")
		}
		tags = append(tags, tag)
	}
	return tags, nil
}

// RouteTracing is a compiled Route.tracing: the sampling percentages that
// replace the connection manager's for requests on the route, and custom
// tags that take the place of the connection manager's of the same name
// (even when they have no value), as Envoy's RouteTracingImpl and its
// stream's tag map.
type RouteTracing struct {
	random, client, overall *typev3.FractionalPercent
	tags                    []customTag
}

// CompileRoute compiles a route's tracing. An unset percentage is 100 %,
// as in Envoy (not the connection manager's value).
func CompileRoute(t *routev3.Tracing, path string) (*RouteTracing, error) {
	if err := config.CheckFields(t, path, "client_sampling", "random_sampling", "overall_sampling", "custom_tags"); err != nil {
		return nil, err
	}
	pct := func(p *typev3.FractionalPercent, field string) (*typev3.FractionalPercent, error) {
		if p == nil {
			return &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}, nil
		}
		if _, ok := typev3.FractionalPercent_DenominatorType_name[int32(p.GetDenominator())]; !ok {
			return nil, config.Errorf(config.Join(path, field), "unknown denominator %d", p.GetDenominator())
		}
		return p, nil
	}
	rt := &RouteTracing{}
	var err error
	if rt.client, err = pct(t.GetClientSampling(), "client_sampling"); err != nil {
		return nil, err
	}
	if rt.random, err = pct(t.GetRandomSampling(), "random_sampling"); err != nil {
		return nil, err
	}
	if rt.overall, err = pct(t.GetOverallSampling(), "overall_sampling"); err != nil {
		return nil, err
	}
	if rt.tags, err = compileTags(t.GetCustomTags(), config.Join(path, "custom_tags")); err != nil {
		return nil, err
	}
	return rt, nil
}

// TagContext is what a metadata custom tag reads beyond the request and
// its stream info: the route's metadata.
type TagContext struct {
	RouteMetadata *corev3.Metadata
	// Route is the route's tracing: its custom tags are set after the
	// connection manager's.
	Route *RouteTracing
}

// metadata is the metadata the tag reads (nil: none, e.g. no upstream
// host was chosen).
func (c *Config) metadata(t *metaTag, info *streaminfo.Info, tc *TagContext) (root *structpb.Struct) {
	switch t.kind {
	case metaRequest:
		return info.DynamicMetadata[t.key]
	case metaRoute:
		if tc == nil || tc.RouteMetadata == nil {
			return nil
		}
		return tc.RouteMetadata.GetFilterMetadata()[t.key]
	case metaCluster, metaHost:
		if info.UpstreamHost == "" || c.clusters == nil {
			return nil
		}
		cl := c.clusters.Get(info.UpstreamCluster)
		if cl == nil {
			return nil
		}
		if t.kind == metaCluster {
			return cl.Proto.GetMetadata().GetFilterMetadata()[t.key]
		}
		for _, h := range cl.Hosts() {
			if h.Address == info.UpstreamHost {
				return h.Config().Metadata.GetFilterMetadata()[t.key]
			}
		}
	}
	return nil
}

// metaValue is the tag's value as Envoy's MetadataCustomTag writes it:
// booleans as true/false, numbers as absl::StrCat prints a double, lists
// and structs as JSON; anything else (absent, null) is the default.
func (c *Config) metaValue(t customTag, info *streaminfo.Info, tc *TagContext) (string, bool) {
	st := c.metadata(t.meta, info, tc)
	if st == nil {
		return t.def, t.def != ""
	}
	v := structpb.NewStructValue(st)
	for _, k := range t.meta.path {
		s := v.GetStructValue()
		if s == nil {
			v = nil
			break
		}
		v = s.GetFields()[k]
	}
	switch x := v.GetKind().(type) {
	case *structpb.Value_BoolValue:
		if x.BoolValue {
			return "true", true
		}
		return "false", true
	case *structpb.Value_NumberValue:
		return strconv.FormatFloat(x.NumberValue, 'g', 6, 64), true
	case *structpb.Value_StringValue:
		return x.StringValue, true
	case *structpb.Value_ListValue, *structpb.Value_StructValue:
		if b, err := json.Marshal(v.AsInterface()); err == nil {
			return string(b), true
		}
	}
	return t.def, t.def != ""
}

// Compile compiles the connection manager's tracing (egress: the
// listener's traffic_direction is OUTBOUND).
func Compile(t *hcmv3.HttpConnectionManager_Tracing, path string, ctx *Context, egress bool) (*Config, error) {
	if err := config.CheckFields(t, path, "client_sampling", "random_sampling", "overall_sampling", "verbose", "max_path_tag_length",
		"custom_tags", "provider", "spawn_upstream_span", "operation", "no_context_propagation"); err != nil {
		return nil, err
	}
	c := &Config{random: tenThousand(t.GetRandomSampling()), client: tenThousand(t.GetClientSampling()),
		overall: tenThousand(t.GetOverallSampling()), rt: ctx.Runtime, maxPathTag: 256, egress: egress,
		spawnUpstream: t.GetSpawnUpstreamSpan().GetValue(), verbose: t.GetVerbose(), packReason: true, ridSampling: true,
		nodeID: ctx.Node.GetId(), zone: ctx.Node.GetLocality().GetZone(), clusters: ctx.Clusters}
	if v := t.GetMaxPathTagLength(); v != nil {
		c.maxPathTag = int(v.GetValue())
	}
	if t.GetOperation() != "" || t.GetUpstreamOperation() != "" {
		return nil, config.Unsupported(config.Join(path, "operation"), "formatted operation names")
	}
	c.noPropagation = t.GetNoContextPropagation()
	tags, err := compileTags(t.GetCustomTags(), config.Join(path, "custom_tags"))
	if err != nil {
		return nil, err
	}
	c.tags = tags
	pv, pvPath := t.GetProvider(), config.Join(path, "provider")
	if pv == nil {
		pv, pvPath = ctx.Default, "tracing.http"
	}
	if pv == nil {
		return nil, config.Errorf(path, "tracing needs a provider (envoy.tracers.zipkin, …) here or in the bootstrap's tracing.http")
	}
	r, err := extension.Lookup(extension.Tracer, pv.GetTypedConfig(), config.Join(pvPath, "typed_config"))
	if err != nil {
		return nil, err
	}
	if c.driver, err = r.Ext.Factory.(Factory)(ctx, r.Config, config.Join(pvPath, "typed_config")); err != nil {
		return nil, err
	}
	if c.spawnUpstream {
		if _, ok := c.driver.(childSpanner); !ok {
			return nil, config.Unsupported(config.Join(path, "spawn_upstream_span"), "spawn_upstream_span with "+pv.GetName(),
				"envoy.tracers.opentelemetry", "envoy.tracers.zipkin", "envoy.tracers.datadog")
		}
	}
	// verbose logs the stream's milestones on the span (Envoy's
	// annotateVerbose); a tracer whose spans carry no events cannot.
	if c.verbose {
		if _, ok := c.driver.(eventDriver); !ok {
			return nil, config.Unsupported(config.Join(path, "verbose"), "verbose with "+pv.GetName()+" (its spans carry no events)",
				"envoy.tracers.opentelemetry", "envoy.tracers.zipkin")
		}
	}
	return c, nil
}

// SetEgress says the listener's traffic is outbound (client spans).
func (c *Config) SetEgress(egress bool) { c.egress = c.egress || egress }

// SetRequestID applies the connection manager's request_id_extension
// (UuidRequestIdConfig): pack_trace_reason and
// use_request_id_for_trace_sampling.
func (c *Config) SetRequestID(packReason, useForSampling bool) {
	c.packReason, c.ridSampling = packReason, useForSampling
}

// SetStartChildSpan applies the router's start_child_span: each
// forwarded request gets a child span (path is the field's, for the
// error when the tracer cannot spawn one).
func (c *Config) SetStartChildSpan(path string) error {
	if _, ok := c.driver.(childSpanner); !ok {
		return config.Unsupported(path, "start_child_span with this tracer", "envoy.tracers.opentelemetry", "envoy.tracers.zipkin", "envoy.tracers.datadog")
	}
	c.startChild = true
	return nil
}

// Decide is Envoy's ConnectionManagerUtility::mutateTracingRequestHeader:
// the tracing decision derived from the x-request-id (its first 8 hex
// digits mod 10000 against random_sampling and overall_sampling), a
// decision the id already carries kept, x-client-trace-id with
// client_sampling, x-envoy-force-trace from an internal caller; the
// decision is packed into the id (pack_trace_reason) that goes upstream.
func (c *Config) Decide(m *headers.Map, internal bool) Reason {
	return c.DecideRoute(m, internal, nil)
}

// DecideRoute is Decide for a request on a route whose tracing (rt, nil
// for none) replaces the connection manager's sampling percentages, as
// Envoy's mutateTracingRequestHeader does.
func (c *Config) DecideRoute(m *headers.Map, internal bool, rt *RouteTracing) Reason {
	random, client, overall := c.random, c.client, c.overall
	if rt != nil {
		random, client, overall = rt.random, rt.client, rt.overall
	}
	if !c.ridSampling {
		return Sampling
	}
	id := m.Get("x-request-id")
	n, ok := RequestIDInteger(id)
	if !ok {
		return NotTraceable
	}
	result := n % 10000
	reason := NotTraceable
	if c.packReason {
		reason = TraceReasonOf(id)
	}
	if reason == NotTraceable {
		switch {
		case m.Has("x-client-trace-id") && c.enabled("tracing.client_enabled", client, rand.Uint64()):
			reason = ClientForced
		case internal && m.Has("x-envoy-force-trace"):
			reason = ServiceForced
		case c.enabled("tracing.random_sampling", random, result):
			reason = Sampling
		}
		if reason != NotTraceable {
			c.packInto(m, id, reason)
		}
	}
	if reason != NotTraceable && !c.enabled("tracing.global_enabled", overall, result) {
		reason = NotTraceable
		c.packInto(m, m.Get("x-request-id"), reason)
	}
	return reason
}

func (c *Config) packInto(m *headers.Map, id string, r Reason) {
	if !c.packReason {
		return
	}
	if nid := WithTraceReason(id, r); nid != id {
		m.Set("x-request-id", nid)
	}
}

// Start makes the sampling decision and starts the request's span; the
// span context is injected into the request for the upstream.
func (c *Config) Start(req *headers.Request, info *streaminfo.Info, operation string, internal bool) Span {
	return c.StartRoute(req, info, nil, operation, internal)
}

// StartRoute is Start for a request on a route with tracing of its own
// (rt; nil: none).
func (c *Config) StartRoute(req *headers.Request, info *streaminfo.Info, rt *RouteTracing, operation string, internal bool) Span {
	sampled := c.DecideRoute(&req.Map, internal, rt) != NotTraceable
	// Envoy's tracing decision (TraceReason other than NotTraceable),
	// which access logs' traceable_filter reads.
	info.Traced = sampled
	name := operation
	if name == "" {
		name = "ingress"
		if c.egress {
			name = "egress " + req.Authority
		}
	}
	// With an upstream span, the downstream span is a server span (Envoy's
	// getSpanKind) and the upstream span's context goes upstream instead
	// (StartUpstream).
	sp := c.driver.Start(req, name, c.egress && !c.spawnUpstream, sampled)
	if !c.noPropagation && !c.SpawnUpstream() {
		sp.Inject(&req.Map)
	}
	return sp
}

// SpawnUpstream says the upstream request gets a span of its own
// (spawn_upstream_span, or the router's start_child_span): call
// StartUpstream before forwarding and FinishUpstream after.
func (c *Config) SpawnUpstream() bool { return c.spawnUpstream || c.startChild }

// StartUpstream starts the span of the request forwarded to cluster, a
// child of the downstream span named as Envoy's router names it ("router
// <cluster> egress"), and injects its context into the request. cluster
// may be empty when the router picks it (cluster_header): FinishUpstream
// names the span then.
func (c *Config) StartUpstream(parent Span, req *headers.Request, cluster string) Span {
	name := "router " + cluster + " egress"
	var child Span
	if us, ok := parent.(upstreamSpawner); ok {
		child = us.spawnChild(name, c.spawnUpstream)
	} else if sp, ok := parent.(Spawner); ok {
		child = sp.SpawnChild(name)
	} else {
		return nil
	}
	if !c.noPropagation {
		child.Inject(&req.Map)
	}
	return child
}

// FinishUpstream tags the upstream span as Envoy's
// HttpTracerUtility::finalizeUpstreamSpan does and ends it; status is the
// upstream's response code (0: no response came from upstream).
func (c *Config) FinishUpstream(sp Span, req *headers.Request, info *streaminfo.Info, status int, tc *TagContext) {
	if sp == nil {
		return
	}
	if !sp.Sampled() {
		sp.Finish()
		return
	}
	if r, ok := sp.(renamer); ok && info.UpstreamCluster != "" {
		r.SetOperation("router " + info.UpstreamCluster + " egress")
	}
	set := sp.SetTag
	set("http.protocol", c.upstreamProtocol(info))
	if info.UpstreamHost != "" {
		set("upstream_address", info.UpstreamHost)
		set("peer.address", info.UpstreamHost)
	}
	// The router tags a retried request's span with the retries before
	// it (Envoy's retry.count); the span covers the last attempt here.
	if n := info.UpstreamRequestAttemptCount; n > 1 {
		set("retry.count", strconv.Itoa(n-1))
	}
	c.commonTags(sp, req, info, status, tc)
	sp.Finish()
}

// upstreamProtocol is the protocol the cluster speaks to its hosts.
func (c *Config) upstreamProtocol(info *streaminfo.Info) string {
	if c.clusters != nil && info.UpstreamCluster != "" {
		if cl := c.clusters.Get(info.UpstreamCluster); cl != nil {
			switch cl.Protocol {
			case upstream.HTTP1:
				return "HTTP/1.1"
			case upstream.HTTP2:
				return "HTTP/2"
			}
		}
	}
	return info.Protocol
}

// Finish tags the span as Envoy's HttpTracerUtility does and ends it.
func (c *Config) Finish(sp Span, req *headers.Request, info *streaminfo.Info) {
	c.FinishWith(sp, req, info, nil)
}

// FinishWith is Finish with what metadata custom tags read (the route's
// metadata).
func (c *Config) FinishWith(sp Span, req *headers.Request, info *streaminfo.Info, tc *TagContext) {
	if sp == nil || !sp.Sampled() {
		if sp != nil {
			sp.Finish()
		}
		return
	}
	set := sp.SetTag
	if id := req.Map.Get("x-request-id"); id != "" {
		set("guid:x-request-id", id)
	}
	scheme := req.Map.Get("x-forwarded-proto")
	if scheme == "" {
		scheme = "http"
	}
	url := scheme + "://" + req.Authority + req.Path
	if len(url) > c.maxPathTag {
		url = url[:c.maxPathTag]
	}
	set("http.url", url)
	set("http.method", req.Method)
	set("downstream_cluster", or(req.Map.Get("x-envoy-downstream-service-cluster"), "-"))
	set("user_agent", or(req.Map.Get("user-agent"), "-"))
	set("http.protocol", info.Protocol)
	// Envoy tags the peer of the socket, not the address x-forwarded-for
	// names.
	if info.DownstreamDirectRemote.IsValid() {
		set("peer.address", info.DownstreamDirectRemote.Addr().String())
	} else if info.DownstreamRemote.IsValid() {
		set("peer.address", info.DownstreamRemote.Addr().String())
	}
	if id := req.Map.Get("x-client-trace-id"); id != "" {
		set("guid:x-client-trace-id", id)
	}
	set("request_size", strconv.FormatUint(info.BytesReceived, 10))
	set("response_size", strconv.FormatUint(info.BytesSent, 10))
	// Older Envoy releases tagged every span with the upstream host,
	// newer ones only upstream spans; the downstream span keeps it here.
	if info.UpstreamHost != "" {
		set("upstream_address", info.UpstreamHost)
	}
	c.commonTags(sp, req, info, info.ResponseCode, tc)
	sp.Finish()
}

// commonTags are the tags of Envoy's HttpTracerUtility::setCommonTags,
// on downstream and upstream spans alike.
func (c *Config) commonTags(sp Span, req *headers.Request, info *streaminfo.Info, code int, tc *TagContext) {
	set := sp.SetTag
	set("component", "proxy")
	if c.nodeID != "" {
		set("node_id", c.nodeID)
	}
	if c.zone != "" {
		set("zone", c.zone)
	}
	if info.UpstreamCluster != "" {
		set("upstream_cluster", info.UpstreamCluster)
		set("upstream_cluster.name", info.UpstreamCluster)
	}
	set("http.status_code", strconv.Itoa(code))
	set("response_flags", info.ResponseFlags.String())
	if code >= 500 || code == 0 {
		set("error", "true")
	}
	if c.verbose {
		if l, ok := sp.(eventLogger); ok {
			annotateVerbose(l, info)
		}
	}
	// One tag per name, as Envoy's stream keeps them: the route's first,
	// then the connection manager's whose name the route does not use;
	// within a list the first of a name wins.
	var routeTags []customTag
	if tc != nil && tc.Route != nil {
		routeTags = tc.Route.tags
	}
	c.customTags(sp, routeTags, nil, req, info, tc)
	c.customTags(sp, c.tags, routeTags, req, info, tc)
}

// customTags sets custom tags on the span, but none named in shadowed or
// earlier in tags, and none whose value is empty (Envoy's
// CustomTagBase::applySpan sets no empty tag).
func (c *Config) customTags(sp Span, tags, shadowed []customTag, req *headers.Request, info *streaminfo.Info, tc *TagContext) {
	for i, t := range tags {
		if tagNamed(tags[:i], t.name) || tagNamed(shadowed, t.name) {
			continue
		}
		v := t.literal
		switch {
		case t.header != "":
			v = or(req.Map.Get(t.header), t.def)
		case t.meta != nil:
			var ok bool
			if v, ok = c.metaValue(t, info, tc); !ok {
				continue // no value and no default: Envoy sets no tag
			}
		}
		if v != "" {
			sp.SetTag(t.name, v)
		}
	}
}

func tagNamed(tags []customTag, name string) bool {
	for _, t := range tags {
		if t.name == name {
			return true
		}
	}
	return false
}

// annotateVerbose logs the stream's timing milestones on the span, as
// Envoy's verbose tracing does (Tracing::Logs' event names).
func annotateVerbose(l eventLogger, info *streaminfo.Info) {
	for _, e := range []struct {
		d    time.Duration
		name string
	}{
		{info.LastDownstreamRxByte, "last_downstream_rx_byte_received"},
		{info.FirstUpstreamTxByte, "first_upstream_tx_byte_sent"},
		{info.LastUpstreamTxByte, "last_upstream_tx_byte_sent"},
		{info.FirstUpstreamRxByte, "first_upstream_rx_byte_received"},
		{info.LastUpstreamRxByte, "last_upstream_rx_byte_received"},
		{info.FirstDownstreamTxByte, "first_downstream_tx_byte_sent"},
		{info.LastDownstreamTxByte, "last_downstream_tx_byte_sent"},
	} {
		if e.d > 0 {
			l.Log(info.StartTime.Add(e.d), e.name)
		}
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
