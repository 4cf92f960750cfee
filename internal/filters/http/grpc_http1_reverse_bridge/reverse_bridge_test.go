package grpc_http1_reverse_bridge

import (
	"strings"
	"testing"

	bridgev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_http1_reverse_bridge/v3"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
)

// TestConfig: every field of FilterConfig and FilterConfigPerRoute is
// implemented; unknown ones would be refused by name.
func TestConfig(t *testing.T) {
	c, err := compile(nil, &bridgev3.FilterConfig{ContentType: "application/x-protobuf", WithholdGrpcFrames: true, ResponseSizeHeader: "X-Size"}, "p")
	if err != nil {
		t.Fatal(err)
	}
	if fc := c.(*filterConfig); fc.contentType != "application/x-protobuf" || !fc.withhold || fc.responseSize != "x-size" {
		t.Errorf("compiled %+v", fc)
	}
	pr, err := compilePerRoute(nil, &bridgev3.FilterConfigPerRoute{Disabled: true}, "r")
	if err != nil || !pr.(*perRoute).disabled {
		t.Errorf("per route: %v %v", pr, err)
	}
}

// fakeCallbacks is the filter manager as far as the filter uses it.
type fakeCallbacks struct {
	httpfilter.Callbacks
	resp     headers.Response
	perRoute any
	reply    *struct {
		status, grpc int
		body, detail string
	}
	trailers    *headers.Map
	added       []byte
	clearedOnce bool
}

func (f *fakeCallbacks) Route() *route.Route                { return &route.Route{} }
func (f *fakeCallbacks) PerRouteConfig() any                { return f.perRoute }
func (f *fakeCallbacks) ClearRouteCache()                   { f.clearedOnce = true }
func (f *fakeCallbacks) ResponseHeaders() *headers.Response { return &f.resp }
func (f *fakeCallbacks) AddEncodedData(p []byte)            { f.added = append(f.added, p...) }
func (f *fakeCallbacks) SendLocalReply(s int, b string, r httpfilter.LocalReply) {
	f.reply = &struct {
		status, grpc int
		body, detail string
	}{s, *r.GRPCStatus, b, r.Details}
}
func (f *fakeCallbacks) AddEncodedTrailers() *headers.Map {
	if f.trailers == nil {
		f.trailers = &headers.Map{}
	}
	return f.trailers
}

func newFilter(t *testing.T, c *bridgev3.FilterConfig) (*filter, *fakeCallbacks) {
	t.Helper()
	cfg, err := compile(nil, c, "p")
	if err != nil {
		t.Fatal(err)
	}
	cb := &fakeCallbacks{}
	return cfg.NewFilter(cb).(*filter), cb
}

func grpcRequest() *headers.Request {
	h := &headers.Request{Method: "POST", Path: "/a.B/C"}
	h.Map.Set("content-type", "application/grpc+proto")
	h.Map.Set("content-length", "12")
	return h
}

// TestRequestAndResponse: the request loses its frame header and gets the
// upstream content type; the response is framed again with the client's
// content type, HTTP 200 and grpc-status in added trailers.
func TestRequestAndResponse(t *testing.T) {
	f, cb := newFilter(t, &bridgev3.FilterConfig{ContentType: "application/x-protobuf", WithholdGrpcFrames: true})
	h := grpcRequest()
	f.DecodeHeaders(h, false)
	if h.Map.Get("content-type") != "application/x-protobuf" || h.Map.Get("accept") != "application/x-protobuf" || h.Map.Get("content-length") != "7" || !cb.clearedOnce {
		t.Errorf("request headers %v", h.Map.Fields())
	}
	var b httpfilter.Buffer
	b.Set([]byte{0, 0, 0, 0, 7, 'p', 'a', 'y', 'l', 'o', 'a', 'd'})
	f.DecodeData(&b, true)
	if string(b.Bytes()) != "payload" {
		t.Errorf("request body %q", b.Bytes())
	}
	cb.resp.Status = 404
	cb.resp.Map.Set("content-type", "application/x-protobuf")
	cb.resp.Map.Set("content-length", "3")
	f.EncodeHeaders(&cb.resp, false)
	if cb.resp.Status != 200 || cb.resp.Map.Get("content-type") != "application/grpc+proto" || cb.resp.Map.Get("content-length") != "8" {
		t.Errorf("response headers %d %v", cb.resp.Status, cb.resp.Map.Fields())
	}
	b.Set([]byte("abc"))
	if st := f.EncodeData(&b, false); st != httpfilter.StopAndBuffer {
		t.Errorf("the response is buffered to learn its length: %v", st)
	}
	// The manager hands the buffered data back with the end of stream.
	if f.EncodeData(&b, true); string(b.Bytes()) != "\x00\x00\x00\x00\x03abc" {
		t.Errorf("framed response %q", b.Bytes())
	}
	if cb.trailers == nil || cb.trailers.Get("grpc-status") != "12" {
		t.Errorf("trailers %v, want grpc-status 12 (404 is UNIMPLEMENTED)", cb.trailers)
	}
}

// TestRefusals: a first data chunk shorter than a frame header, and a
// response of another content type, end the call as Envoy does.
func TestRefusals(t *testing.T) {
	f, cb := newFilter(t, &bridgev3.FilterConfig{ContentType: "application/x-protobuf", WithholdGrpcFrames: true})
	f.DecodeHeaders(grpcRequest(), false)
	var b httpfilter.Buffer
	b.Set([]byte{0, 0})
	f.DecodeData(&b, false)
	if r := cb.reply; r == nil || r.status != 200 || r.grpc != 2 || r.body != "invalid request body" || r.detail != "grpc_bridge_data_too_small" {
		t.Errorf("short body: %+v", cb.reply)
	}

	f, cb = newFilter(t, &bridgev3.FilterConfig{ContentType: "application/x-protobuf"})
	f.DecodeHeaders(grpcRequest(), false)
	cb.resp.Status = 500
	f.EncodeHeaders(&cb.resp, false)
	if r := cb.reply; r == nil || r.grpc != 2 || r.body != "envoy reverse bridge: upstream responded with no content-type header, status code 500" || r.detail != "grpc_bridge_content_type_wrong" {
		t.Errorf("no content-type: %+v", cb.reply)
	}

	// Disabled on the route, or not gRPC: nothing changes.
	for _, c := range []struct {
		perRoute any
		ct       string
	}{{&perRoute{disabled: true}, "application/grpc"}, {nil, "application/grpc-web"}, {nil, "application/json"}} {
		f, cb := newFilter(t, &bridgev3.FilterConfig{ContentType: "application/x-protobuf", WithholdGrpcFrames: true})
		cb.perRoute = c.perRoute
		h := &headers.Request{Method: "POST", Path: "/a"}
		h.Map.Set("content-type", c.ct)
		f.DecodeHeaders(h, false)
		if f.enabled || h.Map.Get("content-type") != c.ct {
			t.Errorf("%+v: bridged", c)
		}
	}
}

// TestHeaderOnlyResponse: an empty upstream body is an empty message: a
// frame header and the status trailer are added.
func TestHeaderOnlyResponse(t *testing.T) {
	f, cb := newFilter(t, &bridgev3.FilterConfig{ContentType: "application/x-protobuf", WithholdGrpcFrames: true})
	f.DecodeHeaders(grpcRequest(), false)
	cb.resp.Status = 200
	cb.resp.Map.Set("content-type", "application/x-protobuf")
	f.EncodeHeaders(&cb.resp, true)
	if string(cb.added) != "\x00\x00\x00\x00\x00" || cb.trailers.Get("grpc-status") != "0" || cb.resp.Map.Get("content-length") != "5" {
		t.Errorf("added %q, trailers %v, headers %v", cb.added, cb.trailers, cb.resp.Map.Fields())
	}
	if !strings.HasPrefix(cb.resp.Map.Get("content-type"), "application/grpc") {
		t.Errorf("content-type %q", cb.resp.Map.Get("content-type"))
	}
}
