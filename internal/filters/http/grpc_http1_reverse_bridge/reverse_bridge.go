// Package grpc_http1_reverse_bridge is
// envoy.filters.http.grpc_http1_reverse_bridge: a gRPC request from the
// client goes to an HTTP/1.1 upstream that knows nothing of gRPC, as
// Envoy's grpc_http1_reverse_bridge filter does. The request's
// content-type (and accept) become the configured content_type and, with
// withhold_grpc_frames, the body loses its 5-byte gRPC frame header. The
// upstream's response must carry that content_type (else the call ends
// with grpc-status UNKNOWN); it is framed back into one gRPC message
// (buffered to learn its length, or streamed when response_size_header
// gives it) and ends with a grpc-status trailer derived from the HTTP
// status (200 is OK, others as Envoy maps them), the HTTP status becoming
// 200. Per route, FilterConfigPerRoute disables it.
package grpc_http1_reverse_bridge

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	bridgev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_http1_reverse_bridge/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
)

func init() {
	httpfilter.Register("envoy.filters.http.grpc_http1_reverse_bridge", nil, &bridgev3.FilterConfig{}, &bridgev3.FilterConfigPerRoute{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute}, "")
}

// gRPC status codes the filter sends.
const (
	grpcOK       = 0
	grpcUnknown  = 2
	grpcInternal = 13
)

// Response code details, as Envoy's.
const (
	detailsTooSmall      = "grpc_bridge_data_too_small"
	detailsContentType   = "grpc_bridge_content_type_wrong"
	detailsMissingLength = "grpc_bridge_content_length_missing"
	detailsWrongLength   = "grpc_bridge_content_length_wrong"
)

// frameHeaderSize is gRPC's length prefix: a flag byte and a 32-bit length.
const frameHeaderSize = 5

// trailerAdder is the filter manager's addEncodedTrailers: an HTTP/1.1
// upstream sends no trailers, the gRPC client needs grpc-status in them.
type trailerAdder interface {
	AddEncodedTrailers() *headers.Map
	AddEncodedData(p []byte)
}

type filterConfig struct {
	contentType  string
	withhold     bool
	responseSize string // response_size_header, lower case
}

type perRoute struct{ disabled bool }

func compile(_ *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*bridgev3.FilterConfig)
	if err := config.CheckFields(c, path, "content_type", "withhold_grpc_frames", "response_size_header"); err != nil {
		return nil, err
	}
	return &filterConfig{contentType: c.GetContentType(), withhold: c.GetWithholdGrpcFrames(), responseSize: strings.ToLower(c.GetResponseSizeHeader())}, nil
}

func compilePerRoute(_ *httpfilter.Context, msg proto.Message, path string) (any, error) {
	c := msg.(*bridgev3.FilterConfigPerRoute)
	if err := config.CheckFields(c, path, "disabled"); err != nil {
		return nil, err
	}
	return &perRoute{disabled: c.GetDisabled()}, nil
}

func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

// filter is the bridge of one stream.
type filter struct {
	cfg *filterConfig
	cb  httpfilter.Callbacks
	// enabled: the request is gRPC and the bridge applies.
	enabled bool
	// contentType is the client's content-type, given back on the response.
	contentType string
	stripped    bool // the request's frame header is gone
	grpcStatus  int
	// With response_size_header: the announced message length, whether
	// the frame header went out, and how much body the upstream sent.
	messageLength  uint64
	headerAdded    bool
	upstreamBytes  uint64
	trailersSeen   bool
	headerOnlyResp bool
}

// adjustContentLength changes a non-zero content-length, as Envoy does for
// the frame header it removes or adds.
func adjustContentLength(m *headers.Map, delta int64) {
	v := m.Get("content-length")
	if v == "" {
		return
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n == 0 {
		return
	}
	m.Set("content-length", strconv.FormatInt(int64(n)+delta, 10))
}

func (f *filter) DecodeHeaders(h *headers.Request, end bool) httpfilter.Status {
	if end {
		return httpfilter.Continue // header-only: nothing to bridge
	}
	if f.cb.Route() != nil {
		if pr, ok := f.cb.PerRouteConfig().(*perRoute); ok && pr.disabled {
			return httpfilter.Continue
		}
	}
	if !headers.IsGRPC(h.Map.Get("content-type")) {
		return httpfilter.Continue
	}
	f.enabled = true
	f.contentType = h.Map.Get("content-type")
	h.Map.Set("content-type", f.cfg.contentType)
	h.Map.Set("accept", f.cfg.contentType)
	if f.cfg.withhold {
		adjustContentLength(&h.Map, -frameHeaderSize)
	}
	// As Envoy: the route is looked up again for the changed request.
	f.cb.ClearRouteCache()
	return httpfilter.Continue
}

// grpcReply is a local reply to the gRPC client: HTTP 200 with the status
// in grpc-status and the text in grpc-message.
func (f *filter) grpcReply(msg string, code int, details string) {
	f.cb.SendLocalReply(200, msg, httpfilter.LocalReply{Details: details, GRPCStatus: &code})
}

func (f *filter) DecodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if !f.enabled || !f.cfg.withhold || f.stripped {
		return httpfilter.Continue
	}
	if b.Len() < frameHeaderSize {
		// As Envoy: the first data must hold the whole frame header.
		f.grpcReply("invalid request body", grpcUnknown, detailsTooSmall)
		return httpfilter.StopNoBuffer
	}
	b.Drain(frameHeaderSize)
	f.stripped = true
	return httpfilter.Continue
}

// httpToGRPC is Envoy's Grpc::Utility::httpToGrpcStatus, with 200 as OK
// (the bridge's upstream answers in plain HTTP).
func httpToGRPC(status int) int {
	switch status {
	case 200:
		return grpcOK
	case 400:
		return grpcInternal
	case 401:
		return 16 // UNAUTHENTICATED
	case 403:
		return 7 // PERMISSION_DENIED
	case 404:
		return 12 // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return 14 // UNAVAILABLE
	}
	return grpcUnknown
}

func frameHeader(n uint64) []byte {
	var h [frameHeaderSize]byte
	binary.BigEndian.PutUint32(h[1:], uint32(n))
	return h[:]
}

func (f *filter) EncodeHeaders(h *headers.Response, end bool) httpfilter.Status {
	if !f.enabled {
		return httpfilter.Continue
	}
	if ct := h.Map.Get("content-type"); ct != f.cfg.contentType {
		msg := fmt.Sprintf("envoy reverse bridge: upstream responded with no content-type header, status code %d", h.Status)
		if h.Map.Has("content-type") {
			msg = fmt.Sprintf("envoy reverse bridge: upstream responded with unsupported content-type %s, status code %d", ct, h.Status)
		}
		f.enabled = false
		f.grpcReply(msg, grpcUnknown, detailsContentType)
		return httpfilter.StopIteration
	}
	h.Map.Set("content-type", f.contentType)
	if f.cfg.withhold {
		if f.cfg.responseSize != "" {
			v := h.Map.Get(f.cfg.responseSize)
			v, _, _ = strings.Cut(v, ",") // a repeated header: its first value
			n, err := strconv.ParseUint(v, 10, 64)
			if !h.Map.Has(f.cfg.responseSize) || err != nil {
				f.enabled = false
				f.grpcReply("envoy reverse bridge: upstream did not set content length", grpcInternal, detailsMissingLength)
				return httpfilter.StopIteration
			}
			f.messageLength = n
			h.Map.Set("content-length", strconv.FormatUint(n+frameHeaderSize, 10))
		} else {
			adjustContentLength(&h.Map, frameHeaderSize)
		}
	}
	// The status goes in the trailers, at the end of the data.
	f.grpcStatus = httpToGRPC(h.Status)
	// gRPC clients expect HTTP 200 always.
	h.Status = 200
	if end && f.cfg.withhold {
		// A header-only response is an empty message: its frame header
		// and the status trailer are added.
		x, ok := f.cb.(trailerAdder)
		if !ok {
			return httpfilter.Continue
		}
		h.Map.Set("content-length", strconv.Itoa(frameHeaderSize))
		x.AddEncodedData(frameHeader(0))
		x.AddEncodedTrailers().Set("grpc-status", strconv.Itoa(f.grpcStatus))
		f.headerOnlyResp = true
	}
	return httpfilter.Continue
}

func (f *filter) EncodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if f.headerOnlyResp {
		return httpfilter.Continue // the added frame header
	}
	f.upstreamBytes += uint64(b.Len())
	if !f.enabled {
		return httpfilter.Continue
	}
	streamed := f.cfg.withhold && f.cfg.responseSize != ""
	if streamed && !f.headerAdded && (b.Len() > 0 || end) {
		b.Set(append(frameHeader(f.messageLength), b.Bytes()...))
		f.headerAdded = true
	}
	if !end {
		if f.cfg.withhold && !streamed {
			return httpfilter.StopAndBuffer // the length comes at the end
		}
		return httpfilter.Continue
	}
	if !f.trailersSeen {
		if x, ok := f.cb.(trailerAdder); ok {
			x.AddEncodedTrailers().Set("grpc-status", strconv.Itoa(f.grpcStatus))
		}
	}
	if f.cfg.withhold {
		if streamed {
			if f.upstreamBytes != f.messageLength {
				f.grpcReply("envoy reverse bridge: upstream set incorrect content length", grpcInternal, detailsWrongLength)
				return httpfilter.StopNoBuffer
			}
		} else {
			// b holds the whole buffered response.
			b.Set(append(frameHeader(uint64(b.Len())), b.Bytes()...))
		}
	}
	return httpfilter.Continue
}

// EncodeTrailers sets grpc-status in trailers the upstream sent.
func (f *filter) EncodeTrailers(t *headers.Map) httpfilter.Status {
	if !f.enabled {
		return httpfilter.Continue
	}
	f.trailersSeen = true
	t.Set("grpc-status", strconv.Itoa(f.grpcStatus))
	return httpfilter.Continue
}
