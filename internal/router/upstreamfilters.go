package router

import (
	"bytes"
	"errors"
	"github.com/legateproxy/legate/internal/listener"
	"io"
	"log/slog"
	"net"

	codecv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/upstream_codec/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

// This file is the upstream HTTP filter chain of a cluster
// (HttpProtocolOptions.http_filters), after Envoy's upstream filter
// manager: the filters run once per upstream request — every retry and
// every mirror gets fresh instances — on the request as the router sends
// it (after its rewrites) and on the response before the router sees it;
// the chain ends in envoy.filters.http.upstream_codec, which is the
// exchange with the host. As in Envoy, an upstream filter cannot clear
// the route cache, reads the per-route configs of the route that chose
// the cluster (by its name in http_filters), and a local reply from it
// ends the request without a retry.

func init() {
	httpfilter.Register("envoy.filters.http.upstream_codec", nil, &codecv3.UpstreamCodec{}, nil,
		httpfilter.Factory{UpstreamOnly: true}, "the terminal upstream HTTP filter: the exchange with the host")
}

// defaultBufferLimit is Envoy's default per_connection_buffer_limit_bytes,
// what upstream filters may buffer.
const defaultBufferLimit = 1 << 20

// upstreamEntry is one compiled upstream HTTP filter.
type upstreamEntry struct {
	name string
	cfg  httpfilter.Config
}

// upstreamChain is a cluster's compiled upstream HTTP filters, without the
// terminal upstream_codec.
type upstreamChain struct {
	filters []upstreamEntry
	limit   int64
}

// CompileUpstreamFilters compiles a cluster's upstream http_filters
// through the extension registry: only filters Envoy allows upstream, and
// upstream_codec last. The result is the cluster's UpstreamFilters.
func CompileUpstreamFilters(d *listener.Context, cluster string, fs []*hcmv3.HttpFilter, path string) (any, error) {
	ctx := d.HTTPFilterContext("cluster." + stats.SanitizeName(cluster) + ".")
	ch := &upstreamChain{limit: defaultBufferLimit}
	for i, f := range fs {
		p := config.Index(path, i)
		if err := config.CheckFields(f, p, "name", "typed_config", "is_optional"); err != nil {
			return nil, err
		}
		tp := config.Join(p, "typed_config")
		tc := f.GetTypedConfig()
		if tc == nil {
			e := extension.ByName(extension.HTTPFilter, f.GetName())
			if e == nil {
				return nil, config.Errorf(tp, "upstream HTTP filter %q has no typed_config", f.GetName())
			}
			tc, _ = anypb.New(e.Config)
		}
		r, err := extension.Lookup(extension.HTTPFilter, tc, tp)
		if err != nil {
			if f.GetIsOptional() && extension.Missing(err) {
				d.Log.Warn("optional upstream HTTP filter skipped: not implemented by legate", "cluster", cluster, "filter", f.GetName(), "type", tc.GetTypeUrl())
				continue
			}
			return nil, err
		}
		fac := r.Ext.Factory.(httpfilter.Factory)
		last := i == len(fs)-1
		switch {
		case fac.UpstreamOnly && !last:
			return nil, config.Errorf(p, "%s must be the last upstream HTTP filter", r.Ext.Name)
		case fac.UpstreamOnly:
			if err := config.CheckFields(r.Config, tp); err != nil {
				return nil, err
			}
			return ch, nil
		case !fac.Upstream:
			return nil, config.Errorf(p, "HTTP filter %s cannot be an upstream filter: Envoy allows it only in a connection manager's http_filters", r.Ext.Name)
		}
		fc, err := fac.Compile(ctx, r.Config, tp)
		if err != nil {
			return nil, err
		}
		ch.filters = append(ch.filters, upstreamEntry{name: f.GetName(), cfg: fc})
	}
	// As Envoy: "The codec filter is the only valid terminal upstream filter".
	return nil, config.Errorf(path, "the last upstream HTTP filter must be envoy.filters.http.upstream_codec")
}

// errUpstreamReplied ends an attempt whose upstream filter answered the
// request itself (no retry follows, as in Envoy).
var errUpstreamReplied = errors.New("an upstream filter answered the request")

// upstreamSlot is one upstream filter instance; it is the filter's
// callbacks.
type upstreamSlot struct {
	fe    *filteredExchange
	entry *upstreamEntry
	f     httpfilter.Filter
	decH  httpfilter.DecoderHeaders
	decD  httpfilter.DecoderData
	decT  httpfilter.DecoderTrailers
	encH  httpfilter.EncoderHeaders
	encD  httpfilter.EncoderData
	encT  httpfilter.EncoderTrailers
	buf   httpfilter.Buffer
	ebuf  httpfilter.Buffer
}

// filteredExchange runs an upstream request through the cluster's
// upstream filters around the exchange with the host (the codec).
type filteredExchange struct {
	inner upstream.Exchange
	s     *Stream
	slots []upstreamSlot
	req   headers.Request
	resp  headers.Response
	limit int64
	// decData, encData: some filter sees the request, response body.
	decData, encData bool
	hdrStop, encStop int
	replied, reset   bool
	// out queues response body that passed the filters; srcEnd is set
	// once the host's body ended.
	out       []byte
	outOff    int
	srcEnd    bool
	trailers  *headers.Map
	trailered bool
	head      *http1.ResponseHead
	// headerOnly: the request has no body; added is the body a filter
	// gave it from DecodeHeaders (AddDecodedData).
	headerOnly bool
	added      []byte
}

// filterExchange wraps ex in the cluster's upstream filters.
func (s *Stream) filterExchange(ch *upstreamChain, ex upstream.Exchange) *filteredExchange {
	fe := &filteredExchange{inner: ex, s: s, limit: ch.limit, slots: make([]upstreamSlot, len(ch.filters))}
	for i := range ch.filters {
		sl := &fe.slots[i]
		sl.fe, sl.entry = fe, &ch.filters[i]
		f := sl.entry.cfg.NewFilter(sl)
		sl.f = f
		sl.decH, _ = f.(httpfilter.DecoderHeaders)
		sl.decD, _ = f.(httpfilter.DecoderData)
		sl.decT, _ = f.(httpfilter.DecoderTrailers)
		sl.encH, _ = f.(httpfilter.EncoderHeaders)
		sl.encD, _ = f.(httpfilter.EncoderData)
		sl.encT, _ = f.(httpfilter.EncoderTrailers)
		fe.decData = fe.decData || sl.decD != nil
		fe.encData = fe.encData || sl.encD != nil
	}
	return fe
}

func (fe *filteredExchange) stopped() error {
	switch {
	case fe.replied:
		return &upstream.ExchangeError{Kind: upstream.FailSource, Err: errUpstreamReplied}
	case fe.reset:
		return &upstream.ExchangeError{Kind: upstream.FailReset, Err: errors.New("an upstream filter reset the request")}
	}
	return nil
}

// Send runs the request through the decoder filters, sends what comes out
// through the codec, and runs the response head through the encoders.
func (fe *filteredExchange) Send(req *upstream.Request, head *http1.ResponseHead) error {
	fe.req = headers.Request{Method: req.Method, Path: req.Path, Authority: req.Authority, Map: req.Headers.Clone()}
	end := req.Stream == nil && len(req.Body) == 0
	fe.headerOnly = end
	if !fe.decodeHeadersFrom(0, end) {
		return fe.stopped()
	}
	next := *req
	if end && fe.added != nil {
		next.Body, next.Length = fe.added, int64(len(fe.added))
	}
	if !end && (fe.decData || fe.hdrStop > 0) {
		var src io.Reader = bytes.NewReader(req.Body)
		if req.Stream != nil {
			src = io.MultiReader(src, req.Stream)
		}
		dr := &decodeReader{fe: fe, src: src}
		// Headers held for the body: the body passes the filters until
		// they are released (or the body ends).
		var pre []byte
		for fe.hdrStop > 0 && !dr.end {
			if err := dr.pump(); err != nil {
				return fe.sourceErr(err)
			}
			pre = append(pre, dr.q...)
			dr.q = dr.q[:0]
		}
		next.Body, next.Stream, next.Length = pre, nil, int64(len(pre))
		if !dr.end {
			next.Stream, next.Length = dr, -1
		}
	}
	if req.Trailers != nil {
		next.Trailers = func() *headers.Map {
			t := req.Trailers()
			if t != nil && t.Len() > 0 {
				for k := range fe.slots {
					if sl := &fe.slots[k]; sl.decT != nil {
						sl.decT.DecodeTrailers(t)
					}
				}
			}
			return t
		}
	}
	next.Method, next.Path, next.Authority, next.Headers = fe.req.Method, fe.req.Path, fe.req.Authority, &fe.req.Map
	if err := fe.inner.Send(&next, head); err != nil {
		var ee *upstream.ExchangeError
		if errors.As(err, &ee) && ee.Kind == upstream.FailSource && (errors.Is(err, errUpstreamReplied) || fe.replied) {
			return &upstream.ExchangeError{Kind: upstream.FailSource, Err: errUpstreamReplied}
		}
		return err
	}
	fe.head = head
	fe.resp = headers.Response{Status: head.Status, Map: head.Headers.Clone()}
	_, none, _ := fe.inner.Framing(req.Method)
	if !fe.encodeHeadersFrom(len(fe.slots)-1, none) {
		return fe.stopped()
	}
	// Response headers held for the body: it passes the encoders until
	// they are released.
	for fe.encStop > 0 && !fe.srcEnd {
		if err := fe.pumpResponse(); err != nil {
			if fe.replied || fe.reset {
				return fe.stopped()
			}
			return &upstream.ExchangeError{Kind: upstream.FailReset, Err: err}
		}
	}
	head.Status = fe.resp.Status
	head.Headers.Reset()
	head.Headers.CopyFrom(&fe.resp.Map)
	return nil
}

func (fe *filteredExchange) sourceErr(err error) error {
	if fe.replied || errors.Is(err, errUpstreamReplied) {
		return &upstream.ExchangeError{Kind: upstream.FailSource, Err: errUpstreamReplied}
	}
	return &upstream.ExchangeError{Kind: upstream.FailSource, Err: err}
}

// decodeHeadersFrom runs DecodeHeaders from filter start on; false means a
// filter answered or reset the request.
func (fe *filteredExchange) decodeHeadersFrom(start int, end bool) bool {
	for k := start; k < len(fe.slots); k++ {
		sl := &fe.slots[k]
		if sl.decH == nil {
			continue
		}
		st := sl.decH.DecodeHeaders(&fe.req, end)
		if fe.replied || fe.reset {
			return false
		}
		if st == httpfilter.StopIteration && !end {
			fe.hdrStop = k + 1
			return true
		}
	}
	return true
}

// decodeReader reads the request body through the decoder filters.
type decodeReader struct {
	fe  *filteredExchange
	src io.Reader
	q   []byte
	off int
	end bool
}

// pump reads one chunk of the source through the filters into q.
func (dr *decodeReader) pump() error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	n, err := dr.src.Read(buf)
	if err != nil && err != io.EOF {
		return err
	}
	end := err == io.EOF
	if n == 0 && !end {
		return nil
	}
	out, derr := dr.fe.decodeData(buf[:n], end)
	if derr != nil {
		return derr
	}
	dr.q = append(dr.q, out...)
	dr.end = end
	return nil
}

func (dr *decodeReader) Read(p []byte) (int, error) {
	for dr.off >= len(dr.q) {
		if dr.end {
			return 0, io.EOF
		}
		dr.q, dr.off = dr.q[:0], 0
		if err := dr.pump(); err != nil {
			return 0, err
		}
	}
	n := copy(p, dr.q[dr.off:])
	dr.off += n
	return n, nil
}

// decodeData passes request data through the decoder filters (Envoy's
// stop/buffer statuses; a buffer over the limit is 413) and returns what
// goes on to the host.
func (fe *filteredExchange) decodeData(data []byte, end bool) ([]byte, error) {
	for k := 0; k < len(fe.slots); k++ {
		sl := &fe.slots[k]
		if sl.decD != nil {
			sl.buf.Append(data)
			st := sl.decD.DecodeData(&sl.buf, end)
			if fe.replied || fe.reset {
				return nil, errUpstreamReplied
			}
			if !end {
				switch st {
				case httpfilter.StopAndBuffer:
					if fe.limit > 0 && int64(sl.buf.Len()) > fe.limit {
						fe.s.cfg.Stats.RqTooLarge.Inc()
						fe.localReply(413, "Payload Too Large", httpfilter.LocalReply{Details: "request_payload_too_large"})
						return nil, errUpstreamReplied
					}
					return nil, nil
				case httpfilter.StopNoBuffer:
					sl.buf.Reset()
					return nil, nil
				}
			}
			data = append([]byte(nil), sl.buf.Bytes()...)
			if st == httpfilter.StopNoBuffer {
				data = nil
			}
			sl.buf.Reset()
		}
		if k+1 == fe.hdrStop {
			fe.hdrStop = 0
			if !fe.decodeHeadersFrom(k+1, false) {
				return nil, errUpstreamReplied
			}
		}
	}
	return data, nil
}

// encodeHeadersFrom runs EncodeHeaders from filter start down to the first.
func (fe *filteredExchange) encodeHeadersFrom(start int, end bool) bool {
	for k := start; k >= 0; k-- {
		sl := &fe.slots[k]
		if sl.encH == nil {
			continue
		}
		st := sl.encH.EncodeHeaders(&fe.resp, end)
		if fe.replied || fe.reset {
			return false
		}
		if st == httpfilter.StopIteration && !end {
			fe.encStop = k + 1
			return true
		}
	}
	return true
}

// pumpResponse reads one chunk of the host's body through the encoders
// into out.
func (fe *filteredExchange) pumpResponse() error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	n, err := fe.inner.Body().Read(buf)
	if err != nil && err != io.EOF {
		return err
	}
	end := err == io.EOF
	if n == 0 && !end {
		return nil
	}
	if end {
		fe.srcEnd = true
		if t := fe.inner.Trailers(); t != nil && t.Len() > 0 {
			// As the connection manager: trailers pass the encoders before
			// the end of the body.
			for k := len(fe.slots) - 1; k >= 0; k-- {
				if sl := &fe.slots[k]; sl.encT != nil {
					sl.encT.EncodeTrailers(t)
				}
			}
			fe.trailers = t
		}
		fe.trailered = true
	}
	data := buf[:n]
	for k := len(fe.slots) - 1; k >= 0; k-- {
		sl := &fe.slots[k]
		if sl.encD != nil {
			sl.ebuf.Append(data)
			st := sl.encD.EncodeData(&sl.ebuf, end)
			if fe.replied || fe.reset {
				return errUpstreamReplied
			}
			if !end {
				switch st {
				case httpfilter.StopAndBuffer:
					if fe.limit > 0 && int64(sl.ebuf.Len()) > fe.limit {
						fe.s.cfg.Stats.RsTooLarge.Inc()
						if fe.encStop > 0 {
							// As Envoy: a response buffered over the limit
							// before its headers went on is a 500.
							fe.localReply(500, "Internal Server Error", httpfilter.LocalReply{Details: "response_payload_too_large"})
							return errUpstreamReplied
						}
						return errors.New("upstream filter response buffer limit exceeded")
					}
					return nil
				case httpfilter.StopNoBuffer:
					sl.ebuf.Reset()
					return nil
				}
			}
			data = append([]byte(nil), sl.ebuf.Bytes()...)
			if st == httpfilter.StopNoBuffer {
				data = nil
			}
			sl.ebuf.Reset()
		}
		if k+1 == fe.encStop {
			fe.encStop = 0
			if !fe.encodeHeadersFrom(k-1, end) {
				return errUpstreamReplied
			}
		}
	}
	fe.out = append(fe.out, data...)
	return nil
}

func (fe *filteredExchange) Body() io.Reader {
	if !fe.encData && fe.encStop == 0 && len(fe.out) == 0 && !fe.srcEnd {
		return fe.inner.Body()
	}
	return fe
}

// Read serves the response body that passed the encoders.
func (fe *filteredExchange) Read(p []byte) (int, error) {
	for fe.outOff >= len(fe.out) {
		if fe.srcEnd {
			return 0, io.EOF
		}
		fe.out, fe.outOff = fe.out[:0], 0
		if err := fe.pumpResponse(); err != nil {
			return 0, err
		}
	}
	n := copy(p, fe.out[fe.outOff:])
	fe.outOff += n
	return n, nil
}

func (fe *filteredExchange) Framing(method string) (int64, bool, bool) {
	length, none, stream := fe.inner.Framing(method)
	switch {
	case none:
		return length, true, false
	case fe.srcEnd:
		// The whole body passed the filters before the head went on.
		return int64(len(fe.out) - fe.outOff), len(fe.out) == fe.outOff && fe.trailers == nil, false
	case fe.encData:
		return -1, false, true // the filters may change the body
	}
	return length, none, stream
}

func (fe *filteredExchange) Trailers() *headers.Map {
	if fe.trailered {
		return fe.trailers
	}
	t := fe.inner.Trailers()
	if t != nil && t.Len() > 0 {
		for k := len(fe.slots) - 1; k >= 0; k-- {
			if sl := &fe.slots[k]; sl.encT != nil {
				sl.encT.EncodeTrailers(t)
			}
		}
	}
	fe.trailers, fe.trailered = t, true
	return t
}

func (fe *filteredExchange) Reusable() bool { return fe.inner.Reusable() }

func (fe *filteredExchange) Discard() {
	fe.destroy()
	fe.inner.Discard()
}

func (fe *filteredExchange) Close(complete bool) {
	fe.destroy()
	fe.inner.Close(complete)
}

func (fe *filteredExchange) destroy() {
	for i := range fe.slots {
		if d, ok := fe.slots[i].f.(httpfilter.Destroyer); ok {
			d.OnDestroy()
		}
	}
	fe.slots = nil
}

func (fe *filteredExchange) Cancel()                          { fe.inner.Cancel() }
func (fe *filteredExchange) Hijack() (net.Conn, []byte, bool) { return fe.inner.Hijack() }
func (fe *filteredExchange) Sent() int                        { return fe.inner.Sent() }
func (fe *filteredExchange) Received() int                    { return fe.inner.Received() }

// localReply answers the downstream request from an upstream filter.
func (fe *filteredExchange) localReply(status int, body string, r httpfilter.LocalReply) {
	fe.replied = true
	fe.s.ds.SendLocalReply(status, body, r)
}

// --- httpfilter.Callbacks of an upstream filter ---

func (sl *upstreamSlot) Route() *route.Route { return sl.fe.s.Route }

// ClearRouteCache does nothing: the route is chosen before the upstream
// request exists (Envoy's upstream filters cannot clear it either).
func (sl *upstreamSlot) ClearRouteCache() {}

// PerRouteConfig is the route's typed_per_filter_config for this filter's
// name, as for downstream filters (Envoy's upstream filters read the
// per-route configs of the route that chose the cluster too).
func (sl *upstreamSlot) PerRouteConfig() any {
	if fc := route.PerFilterConfig(sl.fe.s.Route, sl.fe.s.WC, sl.entry.name); fc != nil {
		return fc.Config
	}
	return nil
}

func (sl *upstreamSlot) AllPerRouteConfigs() []any {
	var buf [4]*route.FilterConfig
	fcs := route.AllPerFilterConfigs(sl.fe.s.Route, sl.fe.s.WC, sl.entry.name, buf[:0])
	out := make([]any, 0, len(fcs))
	for _, fc := range fcs {
		if fc.Config != nil {
			out = append(out, fc.Config)
		}
	}
	return out
}

func (sl *upstreamSlot) SetDecoderBufferLimit(n int64) { sl.fe.limit = n }

// AddDecodedData gives a header-only request a body, from the filter's
// DecodeHeaders (Envoy's addDecodedData there, which the aws_lambda filter
// uses for its JSON document): the host gets it (the filters after this
// one do not see it). Called at any other time, it does nothing.
func (sl *upstreamSlot) AddDecodedData(p []byte) {
	fe := sl.fe
	if !fe.headerOnly || fe.head != nil {
		return
	}
	fe.added = append(fe.added, p...)
	if fe.added == nil {
		fe.added = []byte{} // an empty body still gives the request a body
	}
}

func (sl *upstreamSlot) SendLocalReply(status int, body string, r httpfilter.LocalReply) {
	sl.fe.localReply(status, body, r)
}

func (sl *upstreamSlot) StreamInfo() *streaminfo.Info       { return sl.fe.s.Info }
func (sl *upstreamSlot) RequestHeaders() *headers.Request   { return &sl.fe.req }
func (sl *upstreamSlot) ResponseHeaders() *headers.Response { return &sl.fe.resp }
func (sl *upstreamSlot) ResetStream()                       { sl.fe.reset = true }
func (sl *upstreamSlot) Log() *slog.Logger {
	return sl.fe.s.cfg.Log.With("upstream_filter", sl.entry.name)
}
func (sl *upstreamSlot) ConnectionState(key any, create func() any) any {
	return sl.fe.s.ds.ConnectionState(key, create)
}
