// Package grpc_http1_bridge is envoy.filters.http.grpc_http1_bridge: a
// gRPC request over HTTP/1.1 (which cannot carry trailers) gets its
// response buffered and its grpc-status and grpc-message moved from the
// trailers into the headers, with 503 when the call failed; with
// upgrade_protobuf_to_grpc, an application/x-protobuf request is framed
// as gRPC on the way up and unframed on the way down.
package grpc_http1_bridge

import (
	"encoding/binary"
	"strconv"
	"strings"

	bridgev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_http1_bridge/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
)

func init() {
	httpfilter.Register("envoy.filters.http.grpc_http1_bridge", []string{"envoy.grpc_http1_bridge"}, &bridgev3.Config{}, nil,
		httpfilter.Factory{Compile: compile}, "")
}

type filterConfig struct{ upgrade, ignoreQuery bool }

func compile(_ *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*bridgev3.Config)
	if err := config.CheckFields(c, path, "upgrade_protobuf_to_grpc", "ignore_query_parameters"); err != nil {
		return nil, err
	}
	return &filterConfig{upgrade: c.GetUpgradeProtobufToGrpc(), ignoreQuery: c.GetIgnoreQueryParameters()}, nil
}

func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

type filter struct {
	cfg               *filterConfig
	cb                httpfilter.Callbacks
	bridging, upgrade bool
	framed            bool // the request body got its gRPC frame header
}

func (f *filter) DecodeHeaders(h *headers.Request, end bool) httpfilter.Status {
	if f.cb.StreamInfo().Protocol == "HTTP/2" {
		return httpfilter.Continue // HTTP/2 carries trailers: nothing to bridge
	}
	ct := h.Map.Get("content-type")
	switch {
	case strings.HasPrefix(ct, "application/grpc"):
		f.bridging = true
	case f.cfg.upgrade && ct == "application/x-protobuf":
		f.bridging, f.upgrade = true, true
		h.Map.Set("content-type", "application/grpc")
		h.Map.Del("content-length")
		h.Map.Set("te", "trailers")
		if f.cfg.ignoreQuery {
			h.Path, _, _ = strings.Cut(h.Path, "?")
		}
		if end {
			return httpfilter.Continue
		}
		return httpfilter.StopIteration
	}
	return httpfilter.Continue
}

// DecodeData frames a protobuf body as one gRPC message (5-byte prefix).
func (f *filter) DecodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if !f.upgrade {
		return httpfilter.Continue
	}
	if !end {
		return httpfilter.StopAndBuffer
	}
	msg := append([]byte(nil), b.Bytes()...)
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(msg)))
	b.Set(append(hdr[:], msg...))
	f.framed = true
	return httpfilter.Continue
}

func (f *filter) EncodeHeaders(h *headers.Response, end bool) httpfilter.Status {
	if !f.bridging {
		return httpfilter.Continue
	}
	if gs := h.Map.Get("grpc-status"); gs != "" {
		// Trailers-only: the status is already in the headers.
		setStatus(h, gs)
		return httpfilter.Continue
	}
	if end {
		return httpfilter.Continue
	}
	return httpfilter.StopIteration // until the trailers have the status
}

func (f *filter) EncodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if !f.bridging {
		return httpfilter.Continue
	}
	if !end {
		return httpfilter.StopAndBuffer
	}
	if f.upgrade && b.Len() >= 5 {
		// Back to a plain protobuf body.
		b.Drain(5)
		f.cb.ResponseHeaders().Map.Set("content-type", "application/x-protobuf")
	}
	return httpfilter.Continue
}

func (f *filter) EncodeTrailers(t *headers.Map) httpfilter.Status {
	if !f.bridging {
		return httpfilter.Continue
	}
	h := f.cb.ResponseHeaders()
	if gs := t.Get("grpc-status"); gs != "" {
		h.Map.Set("grpc-status", gs)
		if m := t.Get("grpc-message"); m != "" {
			h.Map.Set("grpc-message", m)
		}
		setStatus(h, gs)
	}
	t.Reset() // an HTTP/1.1 client gets them as headers
	return httpfilter.Continue
}

// setStatus is the bridge's HTTP status: 200 for OK, else 503, as Envoy.
func setStatus(h *headers.Response, grpcStatus string) {
	if n, err := strconv.Atoi(grpcStatus); err == nil && n != 0 {
		h.Status = 503
	}
}
