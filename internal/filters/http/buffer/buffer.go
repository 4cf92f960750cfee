// Package buffer is envoy.filters.http.buffer: it holds a request back
// until its whole body has arrived, then lets it go on as one piece, as
// Envoy's buffer_filter. The filter only sets the stream's decoder buffer
// limit to max_request_bytes and stops iteration; the filter manager
// buffers the body and answers a larger one with 413 "Payload Too Large"
// (details request_payload_too_large). Once the body is complete the
// filter adds content-length (the buffered length) to a request that had
// none. Per route, BufferPerRoute disables the filter or replaces
// max_request_bytes. The filter may also run in a cluster's upstream
// filter chain, as Envoy registers it as an upstream HTTP filter too.
package buffer

import (
	"strconv"

	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
)

func init() {
	httpfilter.Register("envoy.filters.http.buffer", []string{"envoy.buffer"}, &bufferv3.Buffer{}, &bufferv3.BufferPerRoute{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute, Upstream: true}, "")
}

// settings is a compiled Buffer or BufferPerRoute (Envoy's
// BufferFilterSettings).
type settings struct {
	disabled        bool
	maxRequestBytes int64
}

func compile(_ *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*bufferv3.Buffer)
	if err := config.CheckFields(c, path, "max_request_bytes"); err != nil {
		return nil, err
	}
	s := &settings{maxRequestBytes: int64(c.GetMaxRequestBytes().GetValue())}
	return httpfilter.ConfigFunc(func(cb httpfilter.Callbacks) httpfilter.Filter {
		return &filter{cb: cb, def: s}
	}), nil
}

func compilePerRoute(_ *httpfilter.Context, msg proto.Message, path string) (any, error) {
	p := msg.(*bufferv3.BufferPerRoute)
	if err := config.CheckFields(p, path, "disabled", "buffer"); err != nil {
		return nil, err
	}
	if b := p.GetBuffer(); b != nil {
		if err := config.CheckFields(b, config.Join(path, "buffer"), "max_request_bytes"); err != nil {
			return nil, err
		}
		return &settings{maxRequestBytes: int64(b.GetMaxRequestBytes().GetValue())}, nil
	}
	return &settings{disabled: p.GetDisabled()}, nil
}

// filter is the buffer filter of one stream.
type filter struct {
	cb  httpfilter.Callbacks
	def *settings
	// req is set once the filter buffers this request (it has a body and
	// the filter is not disabled on its route): only then does it add
	// content-length.
	req *headers.Request
	// n is the length of the body buffered so far.
	n int
}

// DecodeHeaders lets a request without a body go on; otherwise it sets
// the buffer limit and holds the headers until the end of the body.
func (f *filter) DecodeHeaders(h *headers.Request, endStream bool) httpfilter.Status {
	if endStream {
		// A header-only request needs no buffering.
		return httpfilter.Continue
	}
	s := f.def
	if pr, ok := f.cb.PerRouteConfig().(*settings); ok {
		s = pr
	}
	if s.disabled {
		return httpfilter.Continue
	}
	f.cb.SetDecoderBufferLimit(s.maxRequestBytes)
	f.req = h
	return httpfilter.StopIteration
}

// DecodeData buffers the body until its end (the filter manager sends 413
// past the limit), then lets it go on with content-length set.
func (f *filter) DecodeData(b *httpfilter.Buffer, endStream bool) httpfilter.Status {
	if f.req == nil {
		// Disabled on this route, or a header-only request.
		return httpfilter.Continue
	}
	// b holds what this filter buffered plus the new data: its length is
	// Envoy's content_length_, the sum of the data the filter saw.
	f.n = b.Len()
	if !endStream {
		return httpfilter.StopAndBuffer
	}
	f.maybeAddContentLength()
	return httpfilter.Continue
}

// DecodeTrailers ends a request whose body had no end of stream of its
// own, as in Envoy: content-length is added there then.
func (f *filter) DecodeTrailers(*headers.Map) httpfilter.Status {
	f.maybeAddContentLength()
	return httpfilter.Continue
}

// maybeAddContentLength is Envoy's: a request the filter buffered gets
// content-length set to the buffered length when it had none.
func (f *filter) maybeAddContentLength() {
	if f.req != nil && !f.req.Map.Has("content-length") {
		f.req.Map.Set("content-length", strconv.Itoa(f.n))
	}
}
