// Package tracing is the connection manager's tracing (the `tracing`
// field of HttpConnectionManager): the sampling decision Envoy makes
// (x-envoy-force-trace, client_sampling, random_sampling,
// overall_sampling), the span a request gets — named after the route's
// decorator, or "ingress" / "egress <host>" — with Envoy's tags, and the
// tracers that propagate and export it, found through the extension
// registry (envoy.tracers.zipkin in zipkin.go, envoy.tracers.opentelemetry
// in opentelemetry.go, envoy.tracers.datadog in datadog.go). With spawn_upstream_span, a driver whose spans
// implement Spawner gives the upstream request a span of its own
// (Config.StartUpstream).
package tracing

import (
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"

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
	driver                  Driver
	random, client, overall frac
	maxPathTag              int
	tags                    []customTag
	egress, noPropagation   bool
	spawnUpstream           bool
	nodeID, zone            string
	clusters                *upstream.Manager
}

type frac struct{ num, den uint32 }

func (f frac) roll() bool { return f.num >= f.den || (f.num > 0 && rand.Uint32N(f.den) < f.num) }

func fracOf(p *typev3.Percent, def float64) frac {
	v := def
	if p != nil {
		v = p.GetValue()
	}
	return frac{uint32(v * 100), 10000}
}

type customTag struct {
	name, literal, header, def string
}

// Compile compiles the connection manager's tracing (egress: the
// listener's traffic_direction is OUTBOUND).
func Compile(t *hcmv3.HttpConnectionManager_Tracing, path string, ctx *Context, egress bool) (*Config, error) {
	if err := config.CheckFields(t, path, "client_sampling", "random_sampling", "overall_sampling", "verbose", "max_path_tag_length",
		"custom_tags", "provider", "spawn_upstream_span", "operation", "no_context_propagation"); err != nil {
		return nil, err
	}
	c := &Config{random: fracOf(t.GetRandomSampling(), 100), client: fracOf(t.GetClientSampling(), 100),
		overall: fracOf(t.GetOverallSampling(), 100), maxPathTag: 256, egress: egress,
		spawnUpstream: t.GetSpawnUpstreamSpan().GetValue(),
		nodeID:        ctx.Node.GetId(), zone: ctx.Node.GetLocality().GetZone(), clusters: ctx.Clusters}
	if v := t.GetMaxPathTagLength(); v != nil {
		c.maxPathTag = int(v.GetValue())
	}
	if t.GetOperation() != "" || t.GetUpstreamOperation() != "" {
		return nil, config.Unsupported(config.Join(path, "operation"), "formatted operation names")
	}
	c.noPropagation = t.GetNoContextPropagation()
	for i, ct := range t.GetCustomTags() {
		p := config.Index(config.Join(path, "custom_tags"), i)
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
		default:
			return nil, config.Unsupported(p, "this custom tag (metadata)", "literal", "environment", "request_header")
		}
		c.tags = append(c.tags, tag)
	}
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
			return nil, config.Unsupported(config.Join(path, "spawn_upstream_span"), "spawn_upstream_span with "+pv.GetName(), "envoy.tracers.opentelemetry")
		}
	}
	return c, nil
}

// SetEgress says the listener's traffic is outbound (client spans).
func (c *Config) SetEgress(egress bool) { c.egress = c.egress || egress }

// Start makes the sampling decision and starts the request's span; the
// span context is injected into the request for the upstream.
func (c *Config) Start(req *headers.Request, info *streaminfo.Info, operation string, internal bool) Span {
	sampled := false
	switch {
	case internal && req.Map.Has("x-envoy-force-trace"):
		sampled = true
	case req.Map.Has("x-client-trace-id"):
		sampled = c.client.roll()
	default:
		sampled = c.random.roll()
	}
	sampled = sampled && c.overall.roll()
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
	if !c.noPropagation && !c.spawnUpstream {
		sp.Inject(&req.Map)
	}
	return sp
}

// SpawnUpstream says the upstream request gets a span of its own
// (spawn_upstream_span): call StartUpstream before forwarding and
// FinishUpstream after.
func (c *Config) SpawnUpstream() bool { return c.spawnUpstream }

// StartUpstream starts the span of the request forwarded to cluster, a
// child of the downstream span named as Envoy's router names it ("router
// <cluster> egress"), and injects its context into the request. cluster
// may be empty when the router picks it (cluster_header): FinishUpstream
// names the span then.
func (c *Config) StartUpstream(parent Span, req *headers.Request, cluster string) Span {
	sp, ok := parent.(Spawner)
	if !ok {
		return nil
	}
	child := sp.SpawnChild("router " + cluster + " egress")
	if !c.noPropagation {
		child.Inject(&req.Map)
	}
	return child
}

// FinishUpstream tags the upstream span as Envoy's
// HttpTracerUtility::finalizeUpstreamSpan does and ends it; status is the
// upstream's response code (0: no response came from upstream).
func (c *Config) FinishUpstream(sp Span, req *headers.Request, info *streaminfo.Info, status int) {
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
	c.commonTags(sp, req, info, status)
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
	c.commonTags(sp, req, info, info.ResponseCode)
	sp.Finish()
}

// commonTags are the tags of Envoy's HttpTracerUtility::setCommonTags,
// on downstream and upstream spans alike.
func (c *Config) commonTags(sp Span, req *headers.Request, info *streaminfo.Info, code int) {
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
	for _, t := range c.tags {
		v := t.literal
		if t.header != "" {
			v = or(req.Map.Get(t.header), t.def)
		}
		set(t.name, v)
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
