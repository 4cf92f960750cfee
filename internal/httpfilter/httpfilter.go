// Package httpfilter is Envoy's HTTP filter API for Legate: the interfaces
// an HTTP filter implements (decode and encode callbacks for headers, data
// and trailers, returning Continue or a stop status), the callbacks the
// connection manager gives it (the route, per-route config, local replies,
// stream info with dynamic metadata and filter state), and the factory a
// filter registers with the extension registry.
//
// The model follows Envoy's filter manager (source/common/http/
// filter_manager.cc) with one difference that comes from Legate running
// each stream on its own goroutine: a filter that needs an asynchronous
// answer (an authorization service, a JWKS fetch) simply blocks in its
// callback and then returns Continue or sends a local reply; there is no
// continueDecoding(). Stop statuses are for waiting on more body data.
//
// A filter lives in its own folder, internal/filters/http/<name>, and
// registers itself in init (see Register).
package httpfilter

import (
	"log/slog"

	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/tlsx"
	"github.com/legateproxy/legate/internal/upstream"
)

// Status is what a filter callback returns.
type Status uint8

const (
	// Continue passes the headers or data on to the next filter.
	Continue Status = iota
	// StopIteration, from a headers callback, holds the headers back: the
	// filter's data callback still receives the body, and a Continue from
	// it releases the headers and the data. At the end of the stream the
	// headers are released in any case.
	StopIteration
	// StopAndBuffer, from a data callback, keeps the data: the next data
	// callback receives it again with the new data appended (Envoy's
	// StopIterationAndBuffer with decodingBuffer()). A buffer over the
	// limit ends the stream with 413 (request) or 500 (response), as Envoy.
	StopAndBuffer
	// StopNoBuffer, from a data callback, consumes the data: nothing is
	// passed on (the filter keeps what it needs itself).
	StopNoBuffer
)

// Filter is one filter instance for one stream. It implements any of the
// interfaces below; the manager calls only what it implements, so a filter
// without a data callback costs nothing on the body.
type Filter any

// DecoderHeaders sees the request headers, before the router.
type DecoderHeaders interface {
	DecodeHeaders(h *headers.Request, endStream bool) Status
}

// DecoderData sees the request body.
type DecoderData interface {
	DecodeData(b *Buffer, endStream bool) Status
}

// DecoderTrailers sees the request trailers. A difference from Envoy:
// the last request data reaches DecodeData with endStream true before the
// trailers come (Envoy passes endStream false, then decodeTrailers), so a
// filter that buffers until the end of the body needs no trailers case;
// the status returned is not used, as no body follows. On the encode side
// the order is Envoy's (trailers before the end of the body).
type DecoderTrailers interface {
	DecodeTrailers(t *headers.Map) Status
}

// EncoderHeaders sees the response headers (from the upstream or a local
// reply), in reverse filter order.
type EncoderHeaders interface {
	EncodeHeaders(h *headers.Response, endStream bool) Status
}

// EncoderData sees the response body.
type EncoderData interface {
	EncodeData(b *Buffer, endStream bool) Status
}

// EncoderTrailers sees the response trailers.
type EncoderTrailers interface {
	EncodeTrailers(t *headers.Map) Status
}

// Destroyer is told when the stream ends (Envoy's onDestroy).
type Destroyer interface {
	OnDestroy()
}

// Responder is offered by the connection manager's Callbacks (assert it):
// a decoder filter answers the request with a response of its own —
// status and headers it puts in ResponseHeaders, then body data, then the
// end — as Envoy's decoder callbacks encodeHeaders, encodeData and
// encodeTrailers (the cache filter serving a stored response). Unlike
// SendLocalReply, nothing rewrites the response (local_reply_config does
// not apply) and the body may be sent in pieces, each written as it comes.
// As in Envoy, the response passes through every encoder filter, the
// answering one included (it recognises its own response). The filter
// calls these from DecodeHeaders and then returns any status: the request
// does not go on to the router. An error means the client is gone or an
// encoder filter replaced the response: the filter stops sending.
type Responder interface {
	// StartResponse sends the head in ResponseHeaders(); details is
	// %RESPONSE_CODE_DETAILS%, length the body length (-1 unknown), end
	// says no body follows (the response is then complete).
	StartResponse(details string, length int64, end bool) error
	// SendResponseData sends body data (copied before it returns).
	SendResponseData(p []byte) error
	// FinishResponse ends the response, with trailers unless nil.
	FinishResponse(trailers *headers.Map) error
}

// Buffer is body data handed to a data callback. A filter may change it in
// place (Set, Append); a filter that changes the size of a request body
// should update or remove content-length, as in Envoy.
type Buffer struct{ b []byte }

// Bytes returns the data.
func (b *Buffer) Bytes() []byte { return b.b }

// Len is the data's length.
func (b *Buffer) Len() int { return len(b.b) }

// Set replaces the data.
func (b *Buffer) Set(p []byte) { b.b = append(b.b[:0], p...) }

// Append adds data at the end.
func (b *Buffer) Append(p []byte) { b.b = append(b.b, p...) }

// Reset empties the buffer, keeping its storage.
func (b *Buffer) Reset() { b.b = b.b[:0] }

// Drain removes n bytes from the front.
func (b *Buffer) Drain(n int) { b.b = append(b.b[:0], b.b[min(n, len(b.b)):]...) }

// LocalReply describes a response the proxy generates itself.
type LocalReply struct {
	// Details is %RESPONSE_CODE_DETAILS% (e.g. "rbac_access_denied").
	Details string
	// Flag is a response flag to set (0 for none).
	Flag streaminfo.Flag
	// Headers are added to the reply.
	Headers []HeaderValue
	// GRPCStatus, when set, is the grpc-status of a reply to a gRPC
	// request (else it is derived from the HTTP status, as Envoy).
	GRPCStatus *int
}

// HeaderValue is one header to add.
type HeaderValue struct {
	Key, Value string
	// Append adds a value rather than replacing existing ones.
	Append bool
}

// Callbacks is what the connection manager offers a filter for its stream.
type Callbacks interface {
	// Route is the route the request matched (nil when none). It is
	// resolved before the filters run.
	Route() *route.Route
	// ClearRouteCache re-resolves the route, after a filter changed what
	// routing looks at (headers, path).
	ClearRouteCache()
	// PerRouteConfig is the most specific per-route config for this
	// filter (weighted cluster, route, virtual host, route configuration),
	// as compiled by its factory's CompilePerRoute; nil when none.
	PerRouteConfig() any
	// AllPerRouteConfigs is every per-route config for this filter, most
	// specific first (for filters that merge them, as CORS does). The
	// slice is the stream's, valid until the next call: a filter that
	// keeps the configs copies them.
	AllPerRouteConfigs() []any
	// SetDecoderBufferLimit sets how much request body the filters may
	// buffer for this stream (a buffer filter's max_request_bytes).
	SetDecoderBufferLimit(n int64)
	// SendLocalReply answers the request from the proxy; the reply passes
	// through the encoder filters. The filter then returns any status: the
	// stream is over.
	SendLocalReply(status int, body string, r LocalReply)
	// StreamInfo is the stream's record: addresses, TLS, timings, dynamic
	// metadata (SetDynamicMetadata) and filter state, read by later
	// filters, the router and access logs.
	StreamInfo() *streaminfo.Info
	// RequestHeaders and ResponseHeaders are the stream's header maps (the
	// response is empty until the encode side starts).
	RequestHeaders() *headers.Request
	ResponseHeaders() *headers.Response
	// ConnectionState returns a value kept per downstream connection
	// under key, created by create on first use.
	ConnectionState(key any, create func() any) any
	// ResetStream ends the stream abnormally once what was sent is out: the
	// connection is closed (an HTTP/1 body ends without its last chunk).
	ResetStream()
	// Log is the filter's logger.
	Log() *slog.Logger
}

// Config is a compiled filter configuration, shared by every stream of
// the connection managers that use it. NewFilter makes the filter for one
// stream; a filter with no per-stream state may return a shared value.
type Config interface {
	NewFilter(cb Callbacks) Filter
}

// ConfigFunc adapts a function to Config.
type ConfigFunc func(cb Callbacks) Filter

// NewFilter calls f.
func (f ConfigFunc) NewFilter(cb Callbacks) Filter { return f(cb) }

// Context is what compiling a filter config can use.
type Context struct {
	// Stats is the server's stats store; StatPrefix is the connection
	// manager's scope ("http.<stat_prefix>."), empty for per-route
	// configs compiled with a route table.
	Stats      *stats.Store
	StatPrefix string
	// Clusters is the cluster manager (for side calls and health).
	Clusters *upstream.Manager
	Log      *slog.Logger
	// HealthCheckFailing reports /healthcheck/fail or draining.
	HealthCheckFailing func() bool
	// Async makes side calls (HTTP and gRPC) through the cluster manager.
	Async *asyncclient.Client
	// Runtime is the layered runtime; read its Snapshot per request.
	Runtime *runtime.Loader
	// NodeCluster is the proxy's service cluster (node.cluster or
	// --service-cluster): Envoy's local_info().clusterName(), which the
	// rate limit filter's source_cluster action sends.
	NodeCluster string
	// SDS resolves an SdsSecretConfig to its secret (a static secret, or
	// the slot an SDS subscription fills once the listener is accepted);
	// nil where secrets are not available (the oauth2 filter's generic
	// secrets).
	SDS tlsx.SDS
}

// Scope is the stats scope under the connection manager's prefix.
func (c *Context) Scope(name string) stats.Scope { return c.Stats.Scope(c.StatPrefix + name) }

// Factory compiles one HTTP filter type; it is the Factory of an
// extension.HTTPFilter registration.
type Factory struct {
	// Compile compiles the filter's typed_config (validated already).
	Compile func(ctx *Context, cfg proto.Message, path string) (Config, error)
	// CompilePerRoute compiles its typed_per_filter_config message, if it
	// has one.
	CompilePerRoute func(ctx *Context, cfg proto.Message, path string) (any, error)
	// Terminal marks the router, which must be last.
	Terminal bool
	// Upstream says the filter may also run in a cluster's upstream
	// filter chain (HttpProtocolOptions.http_filters), once per upstream
	// request, as Envoy's upstream HTTP filters do. There its callbacks'
	// RequestHeaders and ResponseHeaders are the upstream request's.
	Upstream bool
	// UpstreamOnly says the filter runs only there (upstream_codec).
	UpstreamOnly bool
}

// Register registers an HTTP filter: name is Envoy's
// (envoy.filters.http.x), cfg the prototype of its typed_config and
// perRoute that of its per-route config (nil if none).
func Register(name string, aliases []string, cfg, perRoute proto.Message, f Factory, notes string) {
	extension.Register(extension.Extension{Name: name, Aliases: aliases, Category: extension.HTTPFilter,
		Config: cfg, PerRoute: perRoute, Factory: f, Notes: notes})
}
