// Package grpc_web is envoy.filters.http.grpc_web: gRPC-Web requests
// (application/grpc-web, and the base64 -text variants) become gRPC for
// the upstream; the response's trailers become gRPC-Web's trailer frame at
// the end of the body, base64-encoded for -text clients, as Envoy's
// grpc_web_filter.
package grpc_web

import (
	"encoding/base64"
	"encoding/binary"
	"strings"

	grpcwebv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_web/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
)

func init() {
	httpfilter.Register("envoy.filters.http.grpc_web", []string{"envoy.grpc_web"}, &grpcwebv3.GrpcWeb{}, nil,
		httpfilter.Factory{Compile: compile}, "")
}

func compile(_ *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	if err := config.CheckFields(msg, path); err != nil {
		return nil, err
	}
	return httpfilter.ConfigFunc(func(cb httpfilter.Callbacks) httpfilter.Filter { return &filter{cb: cb} }), nil
}

type filter struct {
	cb       httpfilter.Callbacks
	web      bool
	text     bool
	ct       string // the response content-type for the client
	pending  []byte // base64 input not yet decoded (a partial quantum)
	trailers []byte
}

func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	ct := strings.ToLower(h.Map.Get("content-type"))
	if !strings.HasPrefix(ct, "application/grpc-web") {
		return httpfilter.Continue
	}
	f.web = true
	f.text = strings.HasPrefix(ct, "application/grpc-web-text")
	f.ct = "application/grpc-web+proto"
	if f.text {
		f.ct = "application/grpc-web-text+proto"
	}
	h.Map.Set("content-type", "application/grpc")
	h.Map.Del("content-length")
	// gRPC over HTTP/2 wants "te: trailers"; the browser's accept goes.
	h.Map.Set("te", "trailers")
	if h.Map.Get("accept") == "application/grpc-web-text" {
		h.Map.Del("accept")
	}
	return httpfilter.Continue
}

// DecodeData base64-decodes -text bodies, four characters at a time.
func (f *filter) DecodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if !f.text {
		return httpfilter.Continue
	}
	in := append(f.pending, b.Bytes()...)
	n := len(in) / 4 * 4
	if end {
		n = len(in)
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(n))
	k, err := base64.StdEncoding.Decode(out, in[:n])
	if err != nil {
		f.cb.SendLocalReply(400, "Bad gRPC-web request, invalid base64 data.", httpfilter.LocalReply{Details: "grpc_base_64_decode_failed"})
		return httpfilter.StopNoBuffer
	}
	f.pending = append(f.pending[:0], in[n:]...)
	b.Set(out[:k])
	return httpfilter.Continue
}

func (f *filter) EncodeHeaders(h *headers.Response, end bool) httpfilter.Status {
	if !f.web {
		return httpfilter.Continue
	}
	if ct := h.Map.Get("content-type"); ct == "" || strings.HasPrefix(ct, "application/grpc") {
		h.Map.Set("content-type", f.ct)
	}
	h.Map.Del("content-length")
	return httpfilter.Continue
}

func (f *filter) EncodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if !f.web {
		return httpfilter.Continue
	}
	if end && f.trailers != nil {
		b.Append(f.trailers)
		f.trailers = nil
	}
	if f.text && b.Len() > 0 {
		b.Set([]byte(base64.StdEncoding.EncodeToString(b.Bytes())))
	}
	return httpfilter.Continue
}

// EncodeTrailers turns the trailers into gRPC-Web's trailer frame (flag
// 0x80, length, "name:value\r\n" lines), sent as the end of the body.
func (f *filter) EncodeTrailers(t *headers.Map) httpfilter.Status {
	if !f.web {
		return httpfilter.Continue
	}
	var lines []byte
	for _, fd := range t.Fields() {
		lines = append(lines, fd.Name...)
		lines = append(lines, ':')
		lines = append(lines, fd.Value...)
		lines = append(lines, "\r\n"...)
	}
	frame := make([]byte, 5, 5+len(lines))
	frame[0] = 0x80
	binary.BigEndian.PutUint32(frame[1:], uint32(len(lines)))
	f.trailers = append(frame, lines...)
	t.Reset()
	return httpfilter.Continue
}
