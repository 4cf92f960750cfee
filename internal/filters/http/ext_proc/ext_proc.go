// Package ext_proc is envoy.filters.http.ext_proc, Envoy's external
// processing filter: each HTTP request opens one bidirectional gRPC stream
// (envoy.service.ext_proc.v3.ExternalProcessor/Process) through a cluster,
// and the filter sends the processor the request and response headers,
// bodies (buffered, streamed chunk by chunk, or buffered up to the buffer
// limit) and trailers that processing_mode asks for. The processor's
// answers change headers (under mutation_rules), replace bodies, publish
// dynamic metadata, change the processing mode, or answer the request
// with an immediate response. A failing, closed or silent processor is
// handled as Envoy does: 500 (gRPC error) or 504 (message_timeout), or the
// request goes on unprocessed with failure_mode_allow.
//
// A difference from Envoy that comes from Legate's blocking filter model:
// in STREAMED mode each chunk waits for its answer before the next chunk
// is read (Envoy pipelines the chunks); the processor sees the same
// messages in the same order.
package ext_proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/strmatch"
)

// Name is the filter's name.
const Name = "envoy.filters.http.ext_proc"

// processMethod is the processor's bidirectional streaming method.
const processMethod = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"

// defaultMessageTimeout is message_timeout's default (Envoy's 200 ms).
const defaultMessageTimeout = 200 * time.Millisecond

func init() {
	httpfilter.Register(Name, nil, &extprocv3.ExternalProcessor{}, &extprocv3.ExtProcPerRoute{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"envoy_grpc or google_grpc processors; http_service, request/response attributes, observability_mode, "+
			"FULL_DUPLEX_STREAMED and send_body_without_waiting_for_header_response are not implemented")
}

// target is a compiled GrpcService: where the stream goes.
// grpc_service.timeout has no effect, as in Envoy, whose ext_proc stream
// is started without a timeout (message_timeout bounds each answer).
type target struct {
	cluster string // for logs: the cluster or google_grpc target
	svc     asyncclient.GRPCTarget
	md      []*corev3.HeaderValue
}

func compileTarget(gs *corev3.GrpcService, path string) (target, error) {
	if err := config.CheckFields(gs, path, "envoy_grpc", "google_grpc", "timeout", "initial_metadata"); err != nil {
		return target{}, err
	}
	t, err := asyncclient.CompileGRPCTarget(gs, path)
	if err != nil {
		return target{}, err
	}
	return target{cluster: t.String(), svc: t, md: gs.GetInitialMetadata()}, nil
}

// mode is a processing mode, resolved to what each direction does.
type mode struct {
	reqHeaders, respHeaders, reqTrailers, respTrailers bool
	reqBody, respBody                                  extprocv3.ProcessingMode_BodySendMode
}

// modeOf reads a ProcessingMode as Envoy does: headers are sent unless
// SKIP, trailers only if SEND.
func modeOf(pm *extprocv3.ProcessingMode) mode {
	return mode{
		reqHeaders: pm.GetRequestHeaderMode() != extprocv3.ProcessingMode_SKIP, respHeaders: pm.GetResponseHeaderMode() != extprocv3.ProcessingMode_SKIP,
		reqTrailers: pm.GetRequestTrailerMode() == extprocv3.ProcessingMode_SEND, respTrailers: pm.GetResponseTrailerMode() == extprocv3.ProcessingMode_SEND,
		reqBody: pm.GetRequestBodyMode(), respBody: pm.GetResponseBodyMode(),
	}
}

// supportedBody reports whether Legate implements a body mode.
func supportedBody(m extprocv3.ProcessingMode_BodySendMode) bool {
	switch m {
	case extprocv3.ProcessingMode_NONE, extprocv3.ProcessingMode_STREAMED, extprocv3.ProcessingMode_BUFFERED, extprocv3.ProcessingMode_BUFFERED_PARTIAL:
		return true
	}
	return false
}

func compileMode(pm *extprocv3.ProcessingMode, path string) (mode, error) {
	if err := config.CheckFields(pm, path, "request_header_mode", "response_header_mode", "request_body_mode", "response_body_mode",
		"request_trailer_mode", "response_trailer_mode"); err != nil {
		return mode{}, err
	}
	m := modeOf(pm)
	if !supportedBody(m.reqBody) {
		return mode{}, config.Unsupported(config.Join(path, "request_body_mode"), "body mode "+m.reqBody.String(), "NONE", "STREAMED", "BUFFERED", "BUFFERED_PARTIAL")
	}
	if !supportedBody(m.respBody) {
		return mode{}, config.Unsupported(config.Join(path, "response_body_mode"), "body mode "+m.respBody.String(), "NONE", "STREAMED", "BUFFERED", "BUFFERED_PARTIAL")
	}
	return m, nil
}

// filterStats are Envoy's http.<prefix>.ext_proc.<stat_prefix>* counters.
type filterStats struct {
	streamsStarted, msgsSent, msgsReceived, spurious, streamsClosed, streamsFailed, failureAllowed,
	timeouts, rejected, overrideReceived, overrideIgnored, clearIgnored, clearDisabled *stats.Counter
}

type filterConfig struct {
	async                *asyncclient.Client
	target               target
	failureAllow         bool
	mode                 mode
	allowModeOverride    bool
	allowedOverrideModes []*extprocv3.ProcessingMode
	msgTimeout           time.Duration
	maxMsgTimeout        time.Duration
	rules                *rules
	forward              *forwardRules
	routeCache           extprocv3.ExternalProcessor_RouteCacheAction
	disableImmediate     bool
	keepContentLength    bool
	fwdNS, recvNS        []string
	stats                filterStats
}

func compileList(l *matcherv3.ListStringMatcher, path string) ([]strmatch.Matcher, error) {
	var out []strmatch.Matcher
	for i, p := range l.GetPatterns() {
		m, err := strmatch.Compile(p, config.Index(config.Join(path, "patterns"), i))
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// compileMetadataOptions returns the untyped forwarding and receiving
// namespaces (nil when a list is not given).
func compileMetadataOptions(mo *extprocv3.MetadataOptions, path string) (fwd, recv []string, fwdSet, recvSet bool, err error) {
	if mo == nil {
		return nil, nil, false, false, nil
	}
	if err := config.CheckFields(mo, path, "forwarding_namespaces", "receiving_namespaces"); err != nil {
		return nil, nil, false, false, err
	}
	if fn := mo.GetForwardingNamespaces(); fn != nil {
		// Legate keeps no typed dynamic metadata, so typed namespaces
		// would forward nothing where Envoy forwards something.
		if err := config.CheckFields(fn, config.Join(path, "forwarding_namespaces"), "untyped"); err != nil {
			return nil, nil, false, false, err
		}
		fwd, fwdSet = fn.GetUntyped(), true
	}
	if rn := mo.GetReceivingNamespaces(); rn != nil {
		if err := config.CheckFields(rn, config.Join(path, "receiving_namespaces"), "untyped"); err != nil {
			return nil, nil, false, false, err
		}
		recv, recvSet = rn.GetUntyped(), true
	}
	return fwd, recv, fwdSet, recvSet, nil
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*extprocv3.ExternalProcessor)
	// deferred_close_timeout only matters in observability_mode (refused);
	// emit_client_span concerns spans of side calls, which Legate does not
	// trace.
	if err := config.CheckFields(c, path, "grpc_service", "failure_mode_allow", "processing_mode", "message_timeout", "stat_prefix",
		"mutation_rules", "max_message_timeout", "forward_rules", "allow_mode_override", "disable_immediate_response",
		"metadata_options", "observability_mode", "disable_clear_route_cache", "route_cache_action", "deferred_close_timeout",
		"send_body_without_waiting_for_header_response", "allowed_override_modes", "status_on_error",
		"allow_content_length_header", "emit_client_span"); err != nil {
		return nil, err
	}
	if c.GetObservabilityMode() {
		return nil, config.Unsupported(config.Join(path, "observability_mode"), "observability_mode")
	}
	if c.GetSendBodyWithoutWaitingForHeaderResponse() {
		return nil, config.Unsupported(config.Join(path, "send_body_without_waiting_for_header_response"), "send_body_without_waiting_for_header_response")
	}
	if s := c.GetStatusOnError(); s != nil && s.GetCode() != 0 && s.GetCode() != 500 {
		return nil, config.Unsupported(config.Join(path, "status_on_error"), "a status_on_error other than 500")
	}
	if c.GetGrpcService() == nil {
		return nil, config.Errorf(path, "ext_proc needs grpc_service (http_service is not supported by legate)")
	}
	f := &filterConfig{async: ctx.Async, failureAllow: c.GetFailureModeAllow(), allowModeOverride: c.GetAllowModeOverride(),
		allowedOverrideModes: c.GetAllowedOverrideModes(), msgTimeout: defaultMessageTimeout, routeCache: c.GetRouteCacheAction(),
		disableImmediate: c.GetDisableImmediateResponse(), keepContentLength: c.GetAllowContentLengthHeader()}
	var err error
	if f.target, err = compileTarget(c.GetGrpcService(), config.Join(path, "grpc_service")); err != nil {
		return nil, err
	}
	if f.mode, err = compileMode(c.GetProcessingMode(), config.Join(path, "processing_mode")); err != nil {
		return nil, err
	}
	for i, m := range c.GetAllowedOverrideModes() {
		if _, err := compileMode(m, config.Index(config.Join(path, "allowed_override_modes"), i)); err != nil {
			return nil, err
		}
	}
	if c.GetMessageTimeout() != nil {
		f.msgTimeout = c.GetMessageTimeout().AsDuration()
	}
	if c.GetMaxMessageTimeout() != nil {
		f.maxMsgTimeout = c.GetMaxMessageTimeout().AsDuration()
	}
	if f.rules, err = compileRules(c.GetMutationRules(), config.Join(path, "mutation_rules")); err != nil {
		return nil, err
	}
	if fr := c.GetForwardRules(); fr != nil {
		fp := config.Join(path, "forward_rules")
		f.forward = &forwardRules{}
		if f.forward.allowed, err = compileList(fr.GetAllowedHeaders(), config.Join(fp, "allowed_headers")); err != nil {
			return nil, err
		}
		if f.forward.disallowed, err = compileList(fr.GetDisallowedHeaders(), config.Join(fp, "disallowed_headers")); err != nil {
			return nil, err
		}
	}
	if c.GetDisableClearRouteCache() {
		if f.routeCache != extprocv3.ExternalProcessor_DEFAULT {
			// Envoy's own message for this conflict.
			return nil, config.Errorf(path, "disable_clear_route_cache and route_cache_action can not be set to none-default at the same time.")
		}
		f.routeCache = extprocv3.ExternalProcessor_RETAIN
	}
	if f.fwdNS, f.recvNS, _, _, err = compileMetadataOptions(c.GetMetadataOptions(), config.Join(path, "metadata_options")); err != nil {
		return nil, err
	}
	// As Envoy: the prefix is http.<stat_prefix>.ext_proc.<filter stat_prefix>
	// followed directly by the counter name.
	sc := ctx.Scope("ext_proc." + c.GetStatPrefix())
	f.stats = filterStats{
		streamsStarted: sc.Counter("streams_started"), msgsSent: sc.Counter("stream_msgs_sent"), msgsReceived: sc.Counter("stream_msgs_received"),
		spurious: sc.Counter("spurious_msgs_received"), streamsClosed: sc.Counter("streams_closed"), streamsFailed: sc.Counter("streams_failed"),
		failureAllowed: sc.Counter("failure_mode_allowed"), timeouts: sc.Counter("message_timeouts"), rejected: sc.Counter("rejected_header_mutations"),
		overrideReceived: sc.Counter("override_message_timeout_received"), overrideIgnored: sc.Counter("override_message_timeout_ignored"),
		clearIgnored: sc.Counter("clear_route_cache_ignored"), clearDisabled: sc.Counter("clear_route_cache_disabled"),
	}
	// Envoy creates these too; Legate's downstream-only filter never
	// increments them.
	sc.Counter("clear_route_cache_upstream_ignored")
	sc.Counter("send_immediate_resp_upstream_ignored")
	return f, nil
}

// perRoute is a compiled ExtProcPerRoute.
type perRoute struct {
	disabled        bool
	mode            *mode
	target          *target
	md              []*corev3.HeaderValue
	fwdNS, recvNS   []string
	fwdSet, recvSet bool
	failureAllow    *bool
}

func compilePerRoute(_ *httpfilter.Context, msg proto.Message, path string) (any, error) {
	p := msg.(*extprocv3.ExtProcPerRoute)
	out := &perRoute{disabled: p.GetDisabled()}
	o := p.GetOverrides()
	if o == nil {
		return out, nil
	}
	op := config.Join(path, "overrides")
	if err := config.CheckFields(o, op, "processing_mode", "grpc_service", "metadata_options", "grpc_initial_metadata", "failure_mode_allow"); err != nil {
		return nil, err
	}
	if o.GetProcessingMode() != nil {
		m, err := compileMode(o.GetProcessingMode(), config.Join(op, "processing_mode"))
		if err != nil {
			return nil, err
		}
		out.mode = &m
	}
	if o.GetGrpcService() != nil {
		t, err := compileTarget(o.GetGrpcService(), config.Join(op, "grpc_service"))
		if err != nil {
			return nil, err
		}
		out.target = &t
	}
	out.md = o.GetGrpcInitialMetadata()
	var err error
	if out.fwdNS, out.recvNS, out.fwdSet, out.recvSet, err = compileMetadataOptions(o.GetMetadataOptions(), config.Join(op, "metadata_options")); err != nil {
		return nil, err
	}
	if o.GetFailureModeAllow() != nil {
		v := o.GetFailureModeAllow().GetValue()
		out.failureAllow = &v
	}
	return out, nil
}

// mergeMetadata replaces the entries of md with the key of each of more,
// or appends it (Envoy's mergeHeaderValues).
func mergeMetadata(md, more []*corev3.HeaderValue) []*corev3.HeaderValue {
	out := append([]*corev3.HeaderValue(nil), md...)
	for _, h := range more {
		found := false
		for i, d := range out {
			if d.GetKey() == h.GetKey() {
				out[i], found = h, true
			}
		}
		if !found {
			out = append(out, h)
		}
	}
	return out
}

// merge combines a less specific per-route config with a more specific
// one, as Envoy's FilterConfigPerRoute merge constructor.
func merge(less, more *perRoute) *perRoute {
	out := &perRoute{disabled: more.disabled, target: more.target, md: mergeMetadata(less.md, more.md),
		fwdNS: more.fwdNS, fwdSet: more.fwdSet, recvNS: more.recvNS, recvSet: more.recvSet, failureAllow: more.failureAllow}
	if !more.disabled {
		out.mode = more.mode
		if out.mode == nil {
			out.mode = less.mode
		}
	}
	if out.target == nil {
		out.target = less.target
	}
	if !out.fwdSet {
		out.fwdNS, out.fwdSet = less.fwdNS, less.fwdSet
	}
	if !out.recvSet {
		out.recvNS, out.recvSet = less.recvNS, less.recvSet
	}
	if out.failureAllow == nil {
		out.failureAllow = less.failureAllow
	}
	return out
}

func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	f := &filter{cfg: c, cb: cb, target: c.target, failureAllow: c.failureAllow, fwdNS: c.fwdNS, recvNS: c.recvNS}
	f.setMode(c.mode)
	f.dec.request = true
	return f
}

// dirState is the processing state of one direction (Envoy's
// ProcessorState).
type dirState struct {
	request                   bool
	sendHeaders, sendTrailers bool
	bodyMode                  extprocv3.ProcessingMode_BodySendMode
	noBody                    bool
	// held says the headers are held back, so a body response may still
	// change them.
	held bool
	// bodyDone says the body was processed (BUFFERED and BUFFERED_PARTIAL).
	bodyDone bool
	// replacement is the body a CONTINUE_AND_REPLACE headers response
	// set; replaced says one was set, replacementSent that it went on.
	replacement               []byte
	replaced, replacementSent bool
	// buf is the buffer of the held body (for trailers that come before
	// the end of a response body).
	buf          *httpfilter.Buffer
	trailersSeen bool
}

// removeContentLength is Envoy's shouldRemoveContentLength: in modes
// where the processor may change the body's length after the headers go.
func (s *dirState) removeContentLength() bool {
	switch s.bodyMode {
	case extprocv3.ProcessingMode_STREAMED, extprocv3.ProcessingMode_BUFFERED_PARTIAL:
		return true
	case extprocv3.ProcessingMode_BUFFERED:
		return !s.sendHeaders
	}
	return false
}

type filter struct {
	cfg          *filterConfig
	cb           httpfilter.Callbacks
	target       target
	failureAllow bool
	fwdNS        []string
	recvNS       []string
	merged       bool
	dec, enc     dirState
	// complete is Envoy's processing_complete_: nothing more goes to the
	// processor for this request.
	complete bool
	// st is the processor stream. It is an atomic pointer because with an
	// HTTP/2 upstream the request body is pumped (DecodeData) on the
	// transport's goroutine while the response runs on the router's: one
	// side may end the stream while the other uses it.
	st      atomic.Pointer[procStream]
	sentCfg bool
	// immediateRemove are the remove_headers of an immediate response,
	// applied to the local reply as it passes this filter.
	immediateRemove []string
}

func (f *filter) setMode(m mode) {
	f.dec.sendHeaders, f.dec.sendTrailers, f.dec.bodyMode = m.reqHeaders, m.reqTrailers, m.reqBody
	f.enc.sendHeaders, f.enc.sendTrailers, f.enc.bodyMode = m.respHeaders, m.respTrailers, m.respBody
}

// mergeRoute applies the route's ExtProcPerRoute configs, least specific
// first (Envoy's mergePerRouteConfig).
func (f *filter) mergeRoute() {
	if f.merged {
		return
	}
	f.merged = true
	all := f.cb.AllPerRouteConfigs()
	var m *perRoute
	for i := len(all) - 1; i >= 0; i-- {
		p, ok := all[i].(*perRoute)
		if !ok {
			continue
		}
		if m == nil {
			c := *p
			m = &c
		} else {
			m = merge(m, p)
		}
	}
	if m == nil {
		return
	}
	if m.disabled {
		// As Envoy: both header modes SKIP, and with them nothing is sent.
		f.setMode(mode{})
		return
	}
	if m.mode != nil {
		f.setMode(*m.mode)
	}
	if m.target != nil {
		f.target = *m.target
	}
	if len(m.md) > 0 {
		f.target.md = mergeMetadata(f.target.md, m.md)
	}
	if m.fwdSet {
		f.fwdNS = m.fwdNS
	}
	if m.recvSet {
		f.recvNS = m.recvNS
	}
	if m.failureAllow != nil {
		f.failureAllow = *m.failureAllow
	}
}

// bodyHolding says the direction holds the headers while its body is
// processed.
func (s *dirState) bodyHolding() bool {
	return s.bodyMode == extprocv3.ProcessingMode_BUFFERED || s.bodyMode == extprocv3.ProcessingMode_BUFFERED_PARTIAL
}

func (f *filter) DecodeHeaders(h *headers.Request, end bool) httpfilter.Status {
	f.mergeRoute()
	st := &f.dec
	st.noBody = end
	if st.sendHeaders {
		if f.onHeaders(st, requestMap{h}, f.requestHeaders(h), end) == callStop {
			return httpfilter.StopIteration
		}
	}
	if !f.complete && st.removeContentLength() && !f.cfg.keepContentLength {
		h.Map.Del("content-length")
	}
	if f.complete || end || st.replaced {
		return httpfilter.Continue
	}
	if st.bodyHolding() {
		st.held = st.sendHeaders
		return httpfilter.StopIteration
	}
	return httpfilter.Continue
}

func (f *filter) DecodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	return f.onData(&f.dec, b, end)
}

func (f *filter) DecodeTrailers(t *headers.Map) httpfilter.Status {
	if !f.complete && f.dec.sendTrailers {
		f.onTrailers(&f.dec, t)
	}
	return httpfilter.Continue
}

func (f *filter) EncodeHeaders(h *headers.Response, end bool) httpfilter.Status {
	f.mergeRoute()
	for _, n := range f.immediateRemove {
		h.Map.Del(n)
	}
	f.immediateRemove = nil
	st := &f.enc
	st.noBody = end
	if !f.complete && st.sendHeaders {
		if f.onHeaders(st, responseMap{h}, f.responseHeaders(h), end) == callStop {
			return httpfilter.StopIteration
		}
	}
	if !f.complete && st.removeContentLength() && !f.cfg.keepContentLength {
		h.Map.Del("content-length")
	}
	if f.complete || end || st.replaced {
		return httpfilter.Continue
	}
	if st.bodyHolding() {
		st.held = st.sendHeaders
		if st.held {
			return httpfilter.StopIteration
		}
	}
	return httpfilter.Continue
}

func (f *filter) EncodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	return f.onData(&f.enc, b, end)
}

// EncodeTrailers comes before the end of the response body: a body held
// in BUFFERED (or BUFFERED_PARTIAL) mode is processed now, without
// end_of_stream, then the trailers, as Envoy's onTrailers.
func (f *filter) EncodeTrailers(t *headers.Map) httpfilter.Status {
	st := &f.enc
	st.trailersSeen = true
	if f.complete {
		return httpfilter.Continue
	}
	if !st.bodyDone && !st.replaced && st.buf != nil && st.bodyHolding() {
		st.bodyDone = true
		if f.processBody(st, st.buf, false) != httpfilter.Continue || f.complete {
			return httpfilter.Continue
		}
	}
	if st.sendTrailers {
		f.onTrailers(st, t)
	}
	return httpfilter.Continue
}

func (f *filter) OnDestroy() {
	f.complete = true
	f.closeStream()
}

// bufferLimit is the stream's buffer limit (BUFFERED_PARTIAL's bound).
func (f *filter) bufferLimit() int64 {
	if bl, ok := f.cb.(interface{ BufferLimit() int64 }); ok {
		return bl.BufferLimit()
	}
	return 0
}

func (f *filter) onData(st *dirState, b *httpfilter.Buffer, end bool) httpfilter.Status {
	if st.replaced {
		// CONTINUE_AND_REPLACE replaced the whole body: the original
		// chunks are dropped.
		if !st.replacementSent {
			st.replacementSent = true
			b.Set(st.replacement)
		} else {
			b.Reset()
		}
		return httpfilter.Continue
	}
	if f.complete || st.bodyDone || st.noBody {
		return httpfilter.Continue
	}
	switch st.bodyMode {
	case extprocv3.ProcessingMode_BUFFERED:
		if !end {
			st.buf = b
			return httpfilter.StopAndBuffer
		}
		st.bodyDone = true
		return f.processBody(st, b, true)
	case extprocv3.ProcessingMode_STREAMED:
		if end && b.Len() == 0 && st.trailersSeen {
			// The last chunk went before the trailers.
			return httpfilter.Continue
		}
		return f.processBody(st, b, end)
	case extprocv3.ProcessingMode_BUFFERED_PARTIAL:
		if lim := f.bufferLimit(); !end && (lim <= 0 || int64(b.Len()) < lim) {
			st.buf = b
			return httpfilter.StopAndBuffer
		}
		st.bodyDone = true
		return f.processBody(st, b, end)
	}
	return httpfilter.Continue
}

// processBody sends b to the processor and puts its answer in place.
func (f *filter) processBody(st *dirState, b *httpfilter.Buffer, end bool) httpfilter.Status {
	data, res := f.onBody(st, b.Bytes(), end)
	switch res {
	case callStop:
		return httpfilter.StopNoBuffer
	case callOK:
		b.Set(data)
	}
	st.held = false
	return httpfilter.Continue
}

// --- messages ---

// callResult is how a call to the processor ended.
type callResult uint8

const (
	// callOK: the expected response arrived and was applied.
	callOK callResult = iota
	// callSkip: processing is over for this request (closed stream,
	// spurious message, failure_mode_allow); the request goes on.
	callSkip
	// callStop: a local reply answered the request.
	callStop
)

func (f *filter) requestHeaders(h *headers.Request) *corev3.HeaderMap {
	out := &corev3.HeaderMap{}
	add := func(k, v string) {
		if f.cfg.forward.forward(k) {
			out.Headers = append(out.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
		}
	}
	scheme := h.Scheme
	if scheme == "" {
		scheme = h.Map.Get("x-forwarded-proto")
	}
	if scheme == "" {
		scheme = "http"
	}
	add(":authority", h.Authority)
	add(":path", h.Path)
	add(":method", h.Method)
	add(":scheme", scheme)
	for _, fd := range h.Map.Fields() {
		add(fd.Name, fd.Value)
	}
	return out
}

func (f *filter) responseHeaders(h *headers.Response) *corev3.HeaderMap {
	out := &corev3.HeaderMap{}
	add := func(k, v string) {
		if f.cfg.forward.forward(k) {
			out.Headers = append(out.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
		}
	}
	add(":status", strconv.Itoa(h.Status))
	for _, fd := range h.Map.Fields() {
		add(fd.Name, fd.Value)
	}
	return out
}

func (f *filter) trailersProto(t *headers.Map) *corev3.HeaderMap {
	out := &corev3.HeaderMap{}
	for _, fd := range t.Fields() {
		if f.cfg.forward.forward(fd.Name) {
			out.Headers = append(out.Headers, &corev3.HeaderValue{Key: fd.Name, RawValue: []byte(fd.Value)})
		}
	}
	return out
}

// msgKind is which response a call waits for.
type msgKind uint8

const (
	kindHeaders msgKind = iota
	kindBody
	kindTrailers
)

func (f *filter) onHeaders(st *dirState, m headerMap, hp *corev3.HeaderMap, end bool) callResult {
	hh := &extprocsvc.HttpHeaders{Headers: hp, EndOfStream: end}
	req := &extprocsvc.ProcessingRequest{}
	if st.request {
		req.Request = &extprocsvc.ProcessingRequest_RequestHeaders{RequestHeaders: hh}
	} else {
		req.Request = &extprocsvc.ProcessingRequest_ResponseHeaders{ResponseHeaders: hh}
	}
	r, res := f.exchange(st, req, kindHeaders)
	if res != callOK {
		return res
	}
	var common *extprocsvc.CommonResponse
	if st.request {
		common = r.GetRequestHeaders().GetResponse()
	} else {
		common = r.GetResponseHeaders().GetResponse()
	}
	replace := common.GetStatus() == extprocsvc.CommonResponse_CONTINUE_AND_REPLACE
	if err := applyHeaderMutation(common.GetHeaderMutation(), m, replace, f.cfg.rules, f.cfg.stats.rejected); err != nil {
		return f.mutationFailed(err)
	}
	f.cfg.stats.msgsReceived.Inc()
	if st.request {
		f.clearRouteCache(common)
	}
	if replace {
		if bm := common.GetBodyMutation(); bm != nil {
			// As Envoy: the processor replaced the whole message; its
			// length is no longer the content-length.
			m.remove("content-length")
			st.replaced = true
			st.replacement, _ = applyBodyMutation(bm, nil)
			if end {
				// A header-only message gets the new body.
				f.addBody(st, st.replacement)
				st.replacementSent = true
			}
		}
		// Nothing more of this direction goes to the processor.
		st.bodyMode, st.sendTrailers = extprocv3.ProcessingMode_NONE, false
	}
	return callOK
}

// addBody gives a header-only message a body, from its headers callback.
func (f *filter) addBody(st *dirState, body []byte) {
	if st.request {
		if a, ok := f.cb.(interface{ AddDecodedData([]byte) }); ok {
			a.AddDecodedData(body)
		}
		return
	}
	if a, ok := f.cb.(interface{ AddEncodedData([]byte) }); ok {
		a.AddEncodedData(body)
	}
}

func (f *filter) onBody(st *dirState, data []byte, end bool) ([]byte, callResult) {
	hb := &extprocsvc.HttpBody{Body: append([]byte(nil), data...), EndOfStream: end}
	req := &extprocsvc.ProcessingRequest{}
	if st.request {
		req.Request = &extprocsvc.ProcessingRequest_RequestBody{RequestBody: hb}
	} else {
		req.Request = &extprocsvc.ProcessingRequest_ResponseBody{ResponseBody: hb}
	}
	r, res := f.exchange(st, req, kindBody)
	if res != callOK {
		return data, res
	}
	var common *extprocsvc.CommonResponse
	if st.request {
		common = r.GetRequestBody().GetResponse()
	} else {
		common = r.GetResponseBody().GetResponse()
	}
	var hm headerMap
	if st.request {
		hm = requestMap{f.cb.RequestHeaders()}
	} else {
		hm = responseMap{f.cb.ResponseHeaders()}
	}
	// Header mutations apply only while the headers are held (BUFFERED
	// and BUFFERED_PARTIAL after a headers message); otherwise they
	// already went on and Envoy ignores them.
	if st.held && common.GetHeaderMutation() != nil {
		if err := applyHeaderMutation(common.GetHeaderMutation(), hm, false, f.cfg.rules, f.cfg.stats.rejected); err != nil {
			return data, f.mutationFailed(err)
		}
	}
	if bm := common.GetBodyMutation(); bm != nil {
		if st.held && st.bodyMode == extprocv3.ProcessingMode_BUFFERED {
			// As Envoy: in BUFFERED mode a content-length that does not
			// match the new body rejects the mutation.
			if v, ok := hm.get("content-length"); ok {
				if n, err := strconv.Atoi(v); err == nil && n != len(bm.GetBody()) {
					return data, f.mutationFailed(&errMutation{"mismatch between content length and the length of the mutated body"})
				}
			}
		}
		data, _ = applyBodyMutation(bm, data)
	}
	f.cfg.stats.msgsReceived.Inc()
	if st.request {
		f.clearRouteCache(common)
	}
	return data, callOK
}

func (f *filter) onTrailers(st *dirState, t *headers.Map) callResult {
	ht := &extprocsvc.HttpTrailers{Trailers: f.trailersProto(t)}
	req := &extprocsvc.ProcessingRequest{}
	if st.request {
		req.Request = &extprocsvc.ProcessingRequest_RequestTrailers{RequestTrailers: ht}
	} else {
		req.Request = &extprocsvc.ProcessingRequest_ResponseTrailers{ResponseTrailers: ht}
	}
	r, res := f.exchange(st, req, kindTrailers)
	if res != callOK {
		return res
	}
	var mut *extprocsvc.HeaderMutation
	if st.request {
		mut = r.GetRequestTrailers().GetHeaderMutation()
	} else {
		mut = r.GetResponseTrailers().GetHeaderMutation()
	}
	if err := applyHeaderMutation(mut, trailerMap{t}, false, f.cfg.rules, f.cfg.stats.rejected); err != nil {
		return f.mutationFailed(err)
	}
	f.cfg.stats.msgsReceived.Inc()
	return callOK
}

// clearRouteCache is Envoy's DecodingProcessorState::clearRouteCache.
func (f *filter) clearRouteCache(common *extprocsvc.CommonResponse) {
	want := common.GetClearRouteCache()
	if common.GetHeaderMutation() == nil {
		if want {
			f.cfg.stats.clearIgnored.Inc()
		}
		return
	}
	switch f.cfg.routeCache {
	case extprocv3.ExternalProcessor_DEFAULT:
		if want {
			f.cb.ClearRouteCache()
		}
	case extprocv3.ExternalProcessor_CLEAR:
		f.cb.ClearRouteCache()
	case extprocv3.ExternalProcessor_RETAIN:
		if want {
			f.cfg.stats.clearDisabled.Inc()
		}
	}
}

// replaceSpaces is Envoy's StringUtil::replaceAllEmptySpace, which makes
// local reply details one token.
func replaceSpaces(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\n', '\r', '\f', '\v':
			return '_'
		}
		return r
	}, s)
}

// mutationFailed answers 500 with the mutation error as details, as
// Envoy's onReceiveMessage for any processing error.
func (f *filter) mutationFailed(err error) callResult {
	f.cb.Log().Warn("ext_proc: rejected processor response", "error", err)
	f.cfg.stats.msgsReceived.Inc()
	f.complete = true
	f.closeStream()
	f.localReply(500, err.Error())
	return callStop
}

func (f *filter) localReply(status int, details string) {
	f.cb.SendLocalReply(status, "", httpfilter.LocalReply{Details: replaceSpaces(details)})
}

// sendImmediate answers with the processor's ImmediateResponse.
func (f *filter) sendImmediate(ir *extprocsvc.ImmediateResponse) {
	code := 200 // Envoy's default immediate status
	if ir.GetStatus() != nil {
		code = int(ir.GetStatus().GetCode())
	}
	if code < 200 {
		code = 200 // as Envoy: an invalid status becomes 200
	}
	lr := httpfilter.LocalReply{Details: replaceSpaces(ir.GetDetails())}
	if gs := ir.GetGrpcStatus(); gs != nil {
		c := int(gs.GetStatus())
		lr.GRPCStatus = &c
	}
	if hm := ir.GetHeaders(); hm != nil {
		var scratch headers.Response
		scratch.Status = code
		if err := applyHeaderMutation(&extprocsvc.HeaderMutation{SetHeaders: hm.GetSetHeaders()}, responseMap{&scratch}, false, permissiveRules, f.cfg.stats.rejected); err != nil {
			f.cb.Log().Warn("ext_proc: immediate response header mutations failed", "error", err)
		}
		seen := map[string]bool{}
		for _, fd := range scratch.Map.Fields() {
			lr.Headers = append(lr.Headers, httpfilter.HeaderValue{Key: fd.Name, Value: fd.Value, Append: seen[fd.Name]})
			seen[fd.Name] = true
		}
		for _, n := range hm.GetRemoveHeaders() {
			n = headers.Lower(n)
			if permissiveRules.check(opRemove, n, "") == resultOK {
				f.immediateRemove = append(f.immediateRemove, n)
			} else {
				f.cfg.stats.rejected.Inc()
			}
		}
	}
	f.cb.SendLocalReply(code, string(ir.GetBody()), lr)
}

// setMetadata publishes the response's dynamic_metadata in the receiving
// namespaces (Envoy's setDynamicMetadata).
func (f *filter) setMetadata(r *extprocsvc.ProcessingResponse) {
	if len(f.recvNS) == 0 || r.GetDynamicMetadata() == nil {
		return
	}
	info := f.cb.StreamInfo()
	for k, v := range r.GetDynamicMetadata().GetFields() {
		for _, ns := range f.recvNS {
			if ns == k {
				info.SetDynamicMetadata(k, v.GetStructValue().GetFields())
			}
		}
	}
}

// overrideAllowed checks a mode_override against allowed_override_modes
// (request_header_mode is not compared, as in Envoy).
func (f *filter) overrideAllowed(pm *extprocv3.ProcessingMode) bool {
	if !supportedBody(pm.GetRequestBodyMode()) || !supportedBody(pm.GetResponseBodyMode()) {
		return false
	}
	if len(f.cfg.allowedOverrideModes) == 0 {
		return true
	}
	for _, a := range f.cfg.allowedOverrideModes {
		if a.GetResponseHeaderMode() == pm.GetResponseHeaderMode() && a.GetRequestBodyMode() == pm.GetRequestBodyMode() &&
			a.GetResponseBodyMode() == pm.GetResponseBodyMode() && a.GetRequestTrailerMode() == pm.GetRequestTrailerMode() &&
			a.GetResponseTrailerMode() == pm.GetResponseTrailerMode() {
			return true
		}
	}
	return false
}

// exchange sends one message and waits for the processor's answer to it;
// it handles immediate responses, spurious messages, stream errors and
// timeouts, leaving the caller the expected response.
func (f *filter) exchange(st *dirState, req *extprocsvc.ProcessingRequest, kind msgKind) (*extprocsvc.ProcessingResponse, callResult) {
	if f.complete {
		return nil, callSkip
	}
	if f.st.Load() == nil {
		if res := f.open(); res != callOK {
			return nil, res
		}
	}
	ps := f.st.Load()
	if ps == nil {
		return nil, callSkip
	}
	mc := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
	for _, ns := range f.fwdNS {
		if s := f.cb.StreamInfo().DynamicMetadata[ns]; s != nil {
			mc.FilterMetadata[ns] = s
		}
	}
	req.MetadataContext = mc
	if !f.sentCfg {
		// protocol_config goes in the first message only.
		f.sentCfg = true
		req.ProtocolConfig = &extprocsvc.ProtocolConfiguration{RequestBodyMode: f.dec.bodyMode, ResponseBodyMode: f.enc.bodyMode}
	}
	// message_timeout bounds the send too (Envoy's timer starts when the
	// message is queued): a processor that stops reading blocks SendMsg on
	// flow control, and the stream's cancel unblocks it.
	var sendTimedOut atomic.Bool
	guard := time.AfterFunc(f.cfg.msgTimeout, func() { sendTimedOut.Store(true); ps.cancel() })
	err := ps.s.SendMsg(req)
	if !guard.Stop() || (err != nil && sendTimedOut.Load()) {
		return nil, f.timedOut()
	}
	if err == nil {
		f.cfg.stats.msgsSent.Inc()
	}
	// A send error means the stream ended; its status comes from the
	// receive side, which await reads.
	r, res := f.await(ps)
	if res != callOK {
		return nil, res
	}
	if f.cfg.allowModeOverride && kind == kindHeaders && r.GetModeOverride() != nil {
		if f.overrideAllowed(r.GetModeOverride()) {
			f.setMode(modeOf(r.GetModeOverride()))
		} else {
			f.cb.Log().Debug("ext_proc: mode_override not allowed; ignored")
		}
	}
	var match bool
	switch r.GetResponse().(type) {
	case *extprocsvc.ProcessingResponse_RequestHeaders:
		match = st.request && kind == kindHeaders
	case *extprocsvc.ProcessingResponse_ResponseHeaders:
		match = !st.request && kind == kindHeaders
	case *extprocsvc.ProcessingResponse_RequestBody:
		match = st.request && kind == kindBody
	case *extprocsvc.ProcessingResponse_ResponseBody:
		match = !st.request && kind == kindBody
	case *extprocsvc.ProcessingResponse_RequestTrailers:
		match = st.request && kind == kindTrailers
	case *extprocsvc.ProcessingResponse_ResponseTrailers:
		match = !st.request && kind == kindTrailers
	case *extprocsvc.ProcessingResponse_ImmediateResponse:
		if !f.cfg.disableImmediate {
			f.setMetadata(r)
			f.cfg.stats.msgsReceived.Inc()
			f.complete = true
			f.closeStream()
			f.sendImmediate(r.GetImmediateResponse())
			return nil, callStop
		}
	}
	if !match {
		// As Envoy: a message out of order is spurious; the processor is
		// ignored for the rest of the request, which goes on.
		f.cfg.stats.spurious.Inc()
		f.cb.Log().Warn("ext_proc: spurious response message from the processor", "type", fmt.Sprintf("%T", r.GetResponse()))
		f.closeStream()
		f.complete = true
		return nil, callSkip
	}
	f.setMetadata(r)
	return r, callOK
}

// --- the gRPC stream ---

// procStream is the open stream to the processor; a goroutine reads its
// messages into msgs and, when the stream ends, sets err and closes msgs.
type procStream struct {
	s            grpc.ClientStream
	cancel       context.CancelFunc
	msgs         chan *extprocsvc.ProcessingResponse
	err          error
	remoteClosed bool
}

func (f *filter) open() callResult {
	t := f.target
	f.cfg.stats.streamsStarted.Inc()
	cc, err := f.cfg.async.GRPCTo(t.svc)
	if err != nil {
		return f.grpcError(codes.Unavailable, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if len(t.md) > 0 {
		kv := make([]string, 0, 2*len(t.md))
		for _, h := range t.md {
			v := h.GetValue()
			if len(h.GetRawValue()) > 0 {
				v = string(h.GetRawValue())
			}
			kv = append(kv, headers.Lower(h.GetKey()), v)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, kv...)
	}
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{StreamName: "Process", ClientStreams: true, ServerStreams: true}, processMethod)
	if err != nil {
		cancel()
		return f.grpcError(status.Code(err), err)
	}
	ps := &procStream{s: s, cancel: cancel, msgs: make(chan *extprocsvc.ProcessingResponse, 8)}
	go ps.receive(ctx)
	f.st.Store(ps)
	return callOK
}

func (p *procStream) receive(ctx context.Context) {
	defer close(p.msgs)
	for {
		r := &extprocsvc.ProcessingResponse{}
		if err := p.s.RecvMsg(r); err != nil {
			p.err = err
			return
		}
		select {
		case p.msgs <- r:
		case <-ctx.Done():
			p.err = ctx.Err()
			return
		}
	}
}

// await waits for the next message other than a timeout override,
// within message_timeout.
func (f *filter) await(ps *procStream) (*extprocsvc.ProcessingResponse, callResult) {
	timer := time.NewTimer(f.cfg.msgTimeout)
	defer timer.Stop()
	overridden := false
	for {
		select {
		case r, ok := <-ps.msgs:
			if !ok {
				ps.remoteClosed = true
				err := ps.err
				if errors.Is(err, io.EOF) || status.Code(err) == codes.OK {
					// The processor closed the stream: as Envoy's
					// onGrpcClose, the request goes on unprocessed.
					f.cfg.stats.streamsClosed.Inc()
					f.complete = true
					f.closeStream()
					return nil, callSkip
				}
				return nil, f.grpcError(status.Code(err), err)
			}
			if d := r.GetOverrideMessageTimeout(); d != nil {
				// Envoy's onNewTimeout: once per message, within
				// [1ms, max_message_timeout].
				nd := d.AsDuration()
				if overridden || nd < time.Millisecond || nd > f.cfg.maxMsgTimeout {
					f.cfg.stats.overrideIgnored.Inc()
					continue
				}
				overridden = true
				timer.Stop()
				timer.Reset(nd)
				f.cfg.stats.overrideReceived.Inc()
				continue
			}
			return r, callOK
		case <-timer.C:
			return nil, f.timedOut()
		}
	}
}

// grpcError is Envoy's onGrpcError: 500 with details
// ext_proc_error_gRPC_error_<code>, or, with failure_mode_allow, the
// request goes on.
func (f *filter) grpcError(code codes.Code, err error) callResult {
	f.cfg.stats.streamsFailed.Inc()
	if f.failureAllow {
		f.cb.Log().Warn("ext_proc: processor stream failed; continuing (failure_mode_allow)", "cluster", f.target.cluster, "error", err)
		f.cfg.stats.streamsClosed.Inc()
		f.cfg.stats.failureAllowed.Inc()
		f.complete = true
		f.closeStream()
		return callSkip
	}
	f.cb.Log().Warn("ext_proc: processor stream failed", "cluster", f.target.cluster, "error", err)
	f.complete = true
	f.closeStream()
	f.localReply(500, fmt.Sprintf("ext_proc_error_gRPC_error_%d", int(code)))
	return callStop
}

// timedOut is Envoy's onMessageTimeout: 504, or, with failure_mode_allow,
// the processor is ignored for the rest of the request.
func (f *filter) timedOut() callResult {
	f.cfg.stats.timeouts.Inc()
	f.complete = true
	f.closeStream()
	if f.failureAllow {
		f.cb.Log().Warn("ext_proc: processor message timeout; continuing (failure_mode_allow)", "cluster", f.target.cluster)
		f.cfg.stats.failureAllowed.Inc()
		return callSkip
	}
	f.cb.Log().Warn("ext_proc: processor message timeout", "cluster", f.target.cluster, "timeout", f.cfg.msgTimeout)
	f.localReply(504, "ext_proc_error_per-message_timeout_exceeded")
	return callStop
}

// closeStream half-closes and ends the stream; streams_closed counts a
// stream the processor had not closed first.
func (f *filter) closeStream() {
	ps := f.st.Swap(nil)
	if ps == nil {
		return
	}
	_ = ps.s.CloseSend()
	if !ps.remoteClosed {
		f.cfg.stats.streamsClosed.Inc()
	}
	ps.cancel()
}
