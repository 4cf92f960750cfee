// Package grpc_json_transcoder is envoy.filters.http.grpc_json_transcoder:
// a RESTful JSON request whose method and path match a google.api.http
// rule of a configured gRPC service becomes a gRPC call (POST
// /<package>.<service>/<method>, application/grpc, te: trailers, the JSON
// body and the path and query bindings as one length-prefixed message),
// and the gRPC response becomes JSON, its HTTP status from grpc-status as
// Envoy maps it; server streams become a JSON array (or newline-delimited
// JSON, or server-sent events) sent as the messages arrive. Methods
// carrying google.api.HttpBody pass raw bytes instead of JSON. Requests
// that match no rule pass through unchanged (unless
// request_validation_options reject them), and so does gRPC traffic.
//
// It follows Envoy's json_transcoder_filter.cc and the
// grpc-httpjson-transcoding library it uses: the path matcher
// (pathmatcher.go), the request weaving of bindings into the body
// (request.go) and the response printing (response.go) keep their
// behaviour, error texts and response code details; the JSON conversions
// themselves are protojson's. The descriptor set is a FileDescriptorSet
// with its imports (protoc --include_imports), read with protodesc.
package grpc_json_transcoder

import (
	"strconv"
	"strings"

	transcoderv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_json_transcoder/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
)

func init() {
	httpfilter.Register("envoy.filters.http.grpc_json_transcoder", []string{"envoy.grpc_json_transcoder"},
		&transcoderv3.GrpcJsonTranscoder{}, &transcoderv3.GrpcJsonTranscoder{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"case_insensitive_enum_parsing, capture_unknown_query_parameters and reflection are not implemented")
}

// Response code details, as Envoy's.
const (
	detailsEarly  = "early_grpc_json_transcode_failure"
	detailsFailed = "grpc_json_transcode_failure"
)

// Envoy's local reply texts for the buffer limits.
const (
	requestTooLarge  = "Request rejected because the transcoder's internal buffer size exceeds the configured limit."
	responseTooLarge = "Response not transcoded because the transcoder's internal buffer size exceeds the configured limit."
)

// maxStreamedPiece is how much of a client-streamed HttpBody one message
// carries (gRPC refuses messages over 4 MiB by default).
const maxStreamedPiece = 1 << 20

// defaultBufferLimit is the buffer limit when the connection manager does
// not tell it (Envoy's default per-connection limit).
const defaultBufferLimit = 1 << 20

// extraCallbacks are the filter manager's additions to the filter API
// this filter uses: adding a body to a header-only request or response,
// and the stream's buffer limit.
type extraCallbacks interface {
	AddDecodedData(p []byte)
	AddEncodedData(p []byte)
	BufferLimit() int64
}

type filterConfig struct {
	tc    *transcoderConfig
	stats filterStats
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	tc, err := compileConfig(msg.(*transcoderv3.GrpcJsonTranscoder), path)
	if err != nil {
		return nil, err
	}
	fc := &filterConfig{tc: tc}
	if ctx != nil && ctx.Stats != nil {
		sc := ctx.Scope("")
		fc.stats = filterStats{requestBuffer: sc.Gauge("transcoder_request_buffer_bytes"), responseBuffer: sc.Gauge("transcoder_response_buffer_bytes")}
	}
	return fc, nil
}

func compilePerRoute(_ *httpfilter.Context, msg proto.Message, path string) (any, error) {
	return compileConfig(msg.(*transcoderv3.GrpcJsonTranscoder), path)
}

func (fc *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{fc: fc, cb: cb}
}

// filter is the transcoder of one stream.
type filter struct {
	fc  *filterConfig
	cb  httpfilter.Callbacks
	cfg *transcoderConfig // the route's, or the filter's
	mi  *methodInfo
	rb  *requestBuilder
	// active is set once the request is transcoded (Envoy's transcoder_),
	// failed once transcoding gave up (error_).
	active, failed bool

	// The request side.
	contentType string
	reqBuf      []byte
	split       *arraySplitter
	sentFirst   bool // an HttpBody stream sent its first message
	reqHeld     int64

	// The response side.
	frames       frameReader
	out          []byte // transcoded output not yet passed on
	stream       streamWriter
	unaryDone    bool // the one message of a unary response was read
	hasBody      bool
	trailersSeen bool
	bodySet      bool   // a streamed HttpBody released the headers
	pending      []byte // output for the end of the body
	respHeld     int64
}

func (f *filter) serverStreaming() bool { return f.mi.desc.IsStreamingServer() }
func (f *filter) clientStreaming() bool { return f.mi.desc.IsStreamingClient() }

func (f *filter) extra() extraCallbacks {
	x, _ := f.cb.(extraCallbacks)
	return x
}

// limit is the transcoder's buffer limit for one direction.
func (f *filter) limit(max int64) int64 {
	if max >= 0 {
		return max
	}
	if x := f.extra(); x != nil {
		return x.BufferLimit()
	}
	return defaultBufferLimit
}

func (f *filter) reject(status int, msg, details string) {
	f.failed = true
	f.cb.SendLocalReply(status, msg, httpfilter.LocalReply{Details: details})
}

func (f *filter) DecodeHeaders(h *headers.Request, end bool) httpfilter.Status {
	f.cfg = f.fc.tc
	if pr, ok := f.cb.PerRouteConfig().(*transcoderConfig); ok {
		f.cfg = pr
	}
	if f.cfg.disabled {
		return httpfilter.Continue
	}
	if headers.IsGRPC(h.Map.Get("content-type")) {
		return httpfilter.Continue // gRPC goes through untouched
	}
	if err := f.createTranscoder(h); err != nil {
		code := codeOf(err)
		f.cb.Log().Debug("grpc_json_transcoder: request not transcoded", "error", err)
		if code == codes.NotFound && !f.cfg.rejectUnknownMethod {
			return httpfilter.Continue
		}
		if code == codes.InvalidArgument && !f.cfg.rejectUnknownQuery {
			return httpfilter.Continue
		}
		f.reject(grpcToHTTP(int(code)), err.Error(), detailsEarly+"{"+codeName(code)+"}")
		return httpfilter.StopIteration
	}
	f.active = true
	f.stream.p = &f.cfg.print
	if x := f.extra(); x != nil {
		// As Envoy's maybeExpandBufferLimits: the body size limits raise
		// the stream's buffer limit.
		if m, cur := max(f.cfg.maxRequest, f.cfg.maxResponse), x.BufferLimit(); cur > 0 && m > cur {
			f.cb.SetDecoderBufferLimit(m)
		}
	}
	if f.mi.reqHTTPBody {
		f.contentType = h.Map.Get("content-type")
	}
	origPath, origMethod := h.Path, h.Method
	h.Map.Del("content-length")
	h.Map.Set("content-type", "application/grpc")
	h.Map.Set("x-envoy-original-path", origPath)
	h.Map.Add("x-envoy-original-method", origMethod)
	h.Path, h.Method = f.mi.grpcPath, "POST"
	h.Map.Set("te", "trailers")
	if !f.cfg.matchIncomingRoute {
		f.cb.ClearRouteCache()
	}
	if end {
		// A request without a body: the message is the bindings alone.
		var msg []byte
		var err error
		send := true
		switch {
		case f.mi.reqHTTPBody:
			msg, err = f.rb.httpBodyMessage(f.contentType, nil, true)
		case f.clientStreaming():
			// The library parses "{}" for no body: not an array.
			err, send = (&arraySplitter{}).finish(), false
		default:
			var m proto.Message
			if m, err = f.rb.message(nil); err == nil {
				msg, err = proto.Marshal(m)
			}
		}
		if err != nil {
			f.reject(400, err.Error(), detailsEarly+"{"+codeName(codeOf(err))+"}")
			return httpfilter.StopIteration
		}
		if send {
			x := f.extra()
			if x == nil {
				f.reject(500, "transcoding needs the connection manager's filter callbacks", detailsFailed+"{INTERNAL}")
				return httpfilter.StopIteration
			}
			x.AddDecodedData(frame(msg))
		}
		return httpfilter.Continue
	}
	if f.clientStreaming() {
		f.split = &arraySplitter{}
		return httpfilter.Continue // messages go up as they are complete
	}
	// A unary request is one message: the headers wait for it, so that a
	// body that cannot be transcoded is refused before the upstream sees
	// the request.
	return httpfilter.StopIteration
}

// createTranscoder finds the method and resolves the bindings (Envoy's
// JsonTranscoderConfig::createTranscoder).
func (f *filter) createTranscoder(h *headers.Request) error {
	path, query, _ := strings.Cut(h.Path, "?")
	reg, bs := f.cfg.matcher.lookup(h.Method, path, query)
	if reg == nil {
		return statusErr(codes.NotFound, "Could not resolve %s to a method.", path)
	}
	mi := reg.method
	rb := &requestBuilder{tc: f.cfg, mi: mi, bodyPath: splitFieldPath(strings.TrimPrefix(reg.bodyPath, "*"))}
	for _, b := range bs {
		fields, err := resolveFieldPath(mi.desc.Input(), b.fieldPath)
		if err != nil {
			if f.cfg.ignoreUnknownQuery {
				continue
			}
			return err
		}
		if mi.reqHTTPBody && insideBody(fields, mi.reqBody) {
			continue // HttpBody fields come from the body, raw
		}
		rb.bindings = append(rb.bindings, resolvedBinding{fields: fields, value: b.value})
	}
	f.mi, f.rb = mi, rb
	return nil
}

func (f *filter) holdRequest(n int) {
	f.reqHeld += int64(n)
	if g := f.fc.stats.requestBuffer; g != nil {
		g.Add(int64(n))
	}
}

func (f *filter) releaseRequest(n int64) {
	f.reqHeld -= n
	if g := f.fc.stats.requestBuffer; g != nil {
		g.Add(-n)
	}
}

func (f *filter) DecodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if !f.active || f.failed {
		return httpfilter.Continue
	}
	f.holdRequest(b.Len())
	f.reqBuf = append(f.reqBuf, b.Bytes()...)
	b.Reset()
	lim := f.limit(f.cfg.maxRequest)
	switch {
	case f.mi.reqHTTPBody && f.clientStreaming():
		// Each piece of the body is a message; the first carries the
		// bindings and the content type.
		var out []byte
		for !f.sentFirst || len(f.reqBuf) > 0 {
			n := min(len(f.reqBuf), maxStreamedPiece)
			ct := ""
			if !f.sentFirst {
				ct = f.contentType
			}
			msg, err := f.rb.httpBodyMessage(ct, f.reqBuf[:n], !f.sentFirst)
			if err != nil {
				f.reject(400, err.Error(), detailsFailed+"{"+codeName(codeOf(err))+"}")
				return httpfilter.StopNoBuffer
			}
			out = append(out, frame(msg)...)
			f.reqBuf = f.reqBuf[n:]
			f.releaseRequest(int64(n))
			f.sentFirst = true
		}
		b.Set(out)
		return httpfilter.Continue
	case f.mi.reqHTTPBody:
		if lim > 0 && int64(len(f.reqBuf)) > lim {
			f.reject(413, requestTooLarge, detailsFailed+"{request_buffer_size_limit_reached}")
			return httpfilter.StopNoBuffer
		}
		if !end {
			return httpfilter.StopNoBuffer
		}
		msg, err := f.rb.httpBodyMessage(f.contentType, f.reqBuf, true)
		if err != nil {
			f.reject(400, err.Error(), detailsFailed+"{"+codeName(codeOf(err))+"}")
			return httpfilter.StopNoBuffer
		}
		f.releaseRequest(f.reqHeld)
		b.Set(frame(msg))
		return httpfilter.Continue
	case f.clientStreaming():
		elems, err := f.split.feed(f.reqBuf)
		f.releaseRequest(f.reqHeld - int64(len(f.split.elem))) // all but the element under way
		f.reqBuf = f.reqBuf[:0]
		if err == nil && lim > 0 && int64(len(f.split.elem)) > lim {
			f.reject(413, requestTooLarge, detailsFailed+"{request_buffer_size_limit_reached}")
			return httpfilter.StopNoBuffer
		}
		if err == nil && end {
			err = f.split.finish()
		}
		var out []byte
		for _, e := range elems {
			if err != nil {
				break
			}
			var m proto.Message
			if m, err = f.rb.message(e); err == nil {
				var msg []byte
				msg, err = proto.Marshal(m)
				out = append(out, frame(msg)...)
			}
		}
		if err != nil {
			f.reject(400, err.Error(), detailsFailed+"{"+codeName(codeOf(err))+"}")
			return httpfilter.StopNoBuffer
		}
		b.Set(out)
		return httpfilter.Continue
	}
	if lim > 0 && int64(len(f.reqBuf)) > lim {
		f.reject(413, requestTooLarge, detailsFailed+"{request_buffer_size_limit_reached}")
		return httpfilter.StopNoBuffer
	}
	if !end {
		return httpfilter.StopNoBuffer
	}
	m, err := f.rb.message(f.reqBuf)
	var msg []byte
	if err == nil {
		msg, err = proto.Marshal(m)
	}
	if err != nil {
		f.reject(400, err.Error(), detailsFailed+"{"+codeName(codeOf(err))+"}")
		return httpfilter.StopNoBuffer
	}
	f.releaseRequest(f.reqHeld)
	f.reqBuf = nil
	b.Set(frame(msg))
	return httpfilter.Continue
}

// isGRPCResponse is Envoy's isGrpcResponseHeaders: a trailers-only
// response needs grpc-status; others a 200 with a gRPC content type.
func isGRPCResponse(h *headers.Response, end bool) bool {
	if end {
		return h.Map.Has("grpc-status")
	}
	return h.Status == 200 && headers.IsGRPC(h.Map.Get("content-type"))
}

func (f *filter) contentTypeFor() string {
	if f.serverStreaming() && f.cfg.print.sse {
		return "text/event-stream"
	}
	return "application/json"
}

func (f *filter) EncodeHeaders(h *headers.Response, end bool) httpfilter.Status {
	if f.failed || !f.active {
		return httpfilter.Continue
	}
	if !isGRPCResponse(h, end) {
		f.failed = true // not gRPC: passed on as it is
		return httpfilter.Continue
	}
	if end {
		// Trailers-only: the headers are the trailers.
		if f.serverStreaming() {
			h.Map.Set("content-type", f.contentTypeFor())
		}
		f.doTrailers(&h.Map, true)
		return httpfilter.Continue
	}
	h.Map.Set("content-type", f.contentTypeFor())
	h.Map.Del("content-length")
	if f.serverStreaming() && !f.mi.respHTTPBody {
		return httpfilter.Continue
	}
	// A unary response waits for its status; a streamed HttpBody for the
	// content type of its first message.
	return httpfilter.StopIteration
}

func (f *filter) adjustResponse(delta int64) {
	f.respHeld += delta
	if g := f.fc.stats.responseBuffer; g != nil {
		g.Add(delta)
	}
}

// held is what the response side holds: frames not yet complete and
// output not yet passed on.
func (f *filter) held() int64 { return int64(len(f.frames.buf) + len(f.out)) }

// translate turns the complete frames into output (the first message only,
// for a unary method).
func (f *filter) translate() error {
	for {
		if !f.serverStreaming() && f.unaryDone {
			f.frames.buf = f.frames.buf[:0] // a unary call has one message
			return nil
		}
		msg, ok, err := f.frames.next()
		if err != nil || !ok {
			return err
		}
		js, err := f.cfg.responseJSON(f.mi, msg)
		if err != nil {
			return err
		}
		if f.serverStreaming() {
			f.out = f.stream.message(f.out, js)
		} else {
			f.out = append(f.out, js...)
			f.unaryDone = true
		}
	}
}

func (f *filter) EncodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if f.failed || !f.active {
		return httpfilter.Continue
	}
	if b.Len() > 0 || !end {
		f.hasBody = true
	}
	before := f.held()
	defer func() { f.adjustResponse(f.held() - before) }()
	if f.mi.respHTTPBody {
		return f.encodeHTTPBody(b, end)
	}
	f.frames.buf = append(f.frames.buf, b.Bytes()...)
	b.Reset()
	if lim := f.limit(f.cfg.maxResponse); lim > 0 && f.held() > lim {
		f.failed = true
		f.cb.SendLocalReply(500, responseTooLarge, httpfilter.LocalReply{Details: detailsFailed + "{response_buffer_size_limit_reached}"})
		return httpfilter.StopNoBuffer
	}
	err := f.translate()
	if err == nil && end && !f.trailersSeen {
		// The stream ended without trailers.
		if err = f.frames.finish(); err == nil && f.serverStreaming() {
			f.out = f.stream.end(f.out)
		}
	}
	if err != nil {
		f.failed = true
		f.cb.SendLocalReply(502, err.Error(), httpfilter.LocalReply{Details: detailsFailed + "{" + codeName(codeOf(err)) + "}"})
		return httpfilter.StopNoBuffer
	}
	if !f.serverStreaming() && !end {
		return httpfilter.StopNoBuffer // the whole response first
	}
	b.Set(f.out)
	f.out = f.out[:0]
	if end {
		b.Append(f.pending)
		f.pending = nil
	}
	return httpfilter.Continue
}

// encodeHTTPBody passes the data of HttpBody responses on as the body,
// the first message's content type as the response's.
func (f *filter) encodeHTTPBody(b *httpfilter.Buffer, end bool) httpfilter.Status {
	f.frames.buf = append(f.frames.buf, b.Bytes()...)
	b.Reset()
	processed := false
	for {
		msg, ok, err := f.frames.next()
		if err != nil || !ok {
			break
		}
		processed = true
		if len(msg) == 0 {
			continue
		}
		ct, data, err := f.cfg.httpBody(f.mi, msg)
		if err != nil {
			f.cb.ResetStream()
			f.failed = true
			return httpfilter.StopNoBuffer
		}
		f.out = append(f.out, data...)
		if !f.bodySet {
			f.cb.ResponseHeaders().Map.Set("content-type", ct)
			f.bodySet = true
		}
	}
	if !end && (!f.serverStreaming() || (!f.bodySet && !processed)) {
		return httpfilter.StopNoBuffer
	}
	b.Set(f.out)
	f.out = f.out[:0]
	if end {
		b.Append(f.pending)
		f.pending = nil
	}
	return httpfilter.Continue
}

func (f *filter) EncodeTrailers(t *headers.Map) httpfilter.Status {
	if f.failed || !f.active {
		return httpfilter.Continue
	}
	f.trailersSeen = true
	before := f.held()
	f.doTrailers(t, false)
	f.adjustResponse(f.held() - before)
	return httpfilter.Continue
}

// doTrailers is Envoy's doTrailers: the status of the call sets the HTTP
// status (and grpc-status, grpc-message headers) of a response not sent
// yet, convert_grpc_status may turn an error into a JSON body, and what
// the transcoder still holds ends the body. trailersOnly says hot is the
// response headers.
func (f *filter) doTrailers(hot *headers.Map, trailersOnly bool) {
	if f.failed || !f.active || f.cfg.disabled {
		return
	}
	code, has := grpcStatus(hot)
	if has && f.maybeConvertStatus(code, hot, trailersOnly) {
		return
	}
	if !f.mi.respHTTPBody {
		err := f.translate()
		if err == nil {
			err = f.frames.finish()
		}
		if err != nil {
			f.failed = true
			f.cb.SendLocalReply(502, err.Error(), httpfilter.LocalReply{Details: detailsFailed + "{" + codeName(codeOf(err)) + "}"})
			return
		}
		if f.serverStreaming() {
			f.out = f.stream.end(f.out)
		}
		if len(f.out) > 0 {
			f.emit(f.out, trailersOnly)
			f.out = nil
		}
	}
	resp := f.cb.ResponseHeaders()
	if f.serverStreaming() && !trailersOnly {
		return // the headers are gone already
	}
	if !has || code < 0 {
		resp.Status = 503
	} else {
		resp.Status = grpcToHTTP(code)
		if !trailersOnly {
			resp.Map.Set("grpc-status", strconv.Itoa(code))
		}
	}
	if !trailersOnly {
		if gm, ok := hot.Lookup("grpc-message"); ok {
			resp.Map.Set("grpc-message", gm)
		}
	}
	f.dropTrailerHeader(resp)
}

// emit adds output at the end of the body: the whole body of a
// trailers-only response, or what follows the data.
func (f *filter) emit(p []byte, trailersOnly bool) {
	if !trailersOnly {
		f.pending = append(f.pending, p...)
		return
	}
	if x := f.extra(); x != nil {
		x.AddEncodedData(p)
	}
}

// dropTrailerHeader removes "trailer" for an HTTP/1 client, as Envoy.
func (f *filter) dropTrailerHeader(resp *headers.Response) {
	if strings.HasPrefix(f.cb.StreamInfo().Protocol, "HTTP/1") {
		resp.Map.Del("trailer")
	}
}

// maybeConvertStatus is convert_grpc_status: an error with no response
// body becomes the JSON of its google.rpc.Status.
func (f *filter) maybeConvertStatus(code int, hot *headers.Map, trailersOnly bool) bool {
	if !f.cfg.convertStatus || f.hasBody || code <= 0 {
		return false
	}
	js, ok := f.cfg.statusJSON(code, hot)
	if !ok {
		return false
	}
	resp := f.cb.ResponseHeaders()
	resp.Status = grpcToHTTP(code)
	if trailersOnly {
		// The status is in the body now.
		resp.Map.Del("grpc-status")
		resp.Map.Del("grpc-message")
		resp.Map.Del("grpc-status-details-bin")
	}
	f.dropTrailerHeader(resp)
	resp.Map.Set("content-type", "application/json")
	resp.Map.Set("content-length", strconv.Itoa(len(js)))
	f.emit(js, trailersOnly)
	return true
}

// OnDestroy gives back what the stats count as held.
func (f *filter) OnDestroy() {
	if f.reqHeld != 0 {
		f.releaseRequest(f.reqHeld)
	}
	if f.respHeld != 0 {
		f.adjustResponse(-f.respHeld)
	}
}
