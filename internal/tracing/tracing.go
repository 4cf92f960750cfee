// Package tracing is the connection manager's tracing (the `tracing`
// field of HttpConnectionManager): the sampling decision Envoy makes
// (x-envoy-force-trace, client_sampling, random_sampling,
// overall_sampling), the span a request gets — named after the route's
// decorator, or "ingress" / "egress <host>" — with Envoy's tags, and the
// tracers that propagate and export it (envoy.tracers.zipkin here),
// found through the extension registry.
package tracing

import (
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
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// Driver is a tracer implementation (Zipkin, …).
type Driver interface {
	// Start begins a span for a request, from the incoming context in its
	// headers; sampled is the connection manager's decision.
	Start(req *headers.Request, name string, egress, sampled bool) Span
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
	nodeID, zone            string
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
	if t.GetSpawnUpstreamSpan().GetValue() {
		return nil, config.Unsupported(config.Join(path, "spawn_upstream_span"), "spawn_upstream_span")
	}
	c := &Config{random: fracOf(t.GetRandomSampling(), 100), client: fracOf(t.GetClientSampling(), 100),
		overall: fracOf(t.GetOverallSampling(), 100), maxPathTag: 256, egress: egress,
		nodeID: ctx.Node.GetId(), zone: ctx.Node.GetLocality().GetZone()}
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
	name := operation
	if name == "" {
		name = "ingress"
		if c.egress {
			name = "egress " + req.Authority
		}
	}
	sp := c.driver.Start(req, name, c.egress, sampled)
	if !c.noPropagation {
		sp.Inject(&req.Map)
	}
	return sp
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
	set("component", "proxy")
	if c.nodeID != "" {
		set("node_id", c.nodeID)
	}
	if c.zone != "" {
		set("zone", c.zone)
	}
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
	if info.DownstreamRemote.IsValid() {
		set("peer.address", info.DownstreamRemote.Addr().String())
	}
	set("request_size", strconv.FormatUint(info.BytesReceived, 10))
	set("response_size", strconv.FormatUint(info.BytesSent, 10))
	set("response_flags", info.ResponseFlags.String())
	if info.UpstreamCluster != "" {
		set("upstream_cluster", info.UpstreamCluster)
		set("upstream_cluster.name", info.UpstreamCluster)
	}
	if info.UpstreamHost != "" {
		set("upstream_address", info.UpstreamHost)
	}
	code := info.ResponseCode
	set("http.status_code", strconv.Itoa(code))
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
	sp.Finish()
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
