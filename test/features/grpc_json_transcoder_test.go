// gRPC-JSON transcoding: envoy.filters.http.grpc_json_transcoder.

package features_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	_ "google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	_ "google.golang.org/protobuf/types/known/emptypb"

	"github.com/legateproxy/legate/internal/testutil"
)

var _ = annotations.E_Http // the google.api.http option must be known to read the descriptor's text

// bookstoreDescriptorSet is the transcoder package's test bookstore
// (a FileDescriptorProto in text form, with google.api.http rules) as a
// serialized FileDescriptorSet with its imports — what protoc
// --include_imports --descriptor_set_out writes — and the service.
func bookstoreDescriptorSet(t *testing.T) ([]byte, protoreflect.ServiceDescriptor) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "internal/filters/http/grpc_json_transcoder/testdata/bookstore.textproto"))
	if err != nil {
		t.Fatal(err)
	}
	var fd descriptorpb.FileDescriptorProto
	if err := prototext.Unmarshal(b, &fd); err != nil {
		t.Fatal(err)
	}
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(protoreflect.FileDescriptor)
	add = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		for i := 0; i < f.Imports().Len(); i++ {
			add(f.Imports().Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(f))
	}
	// error_details.proto: the types of google.rpc.Status details.
	for _, dep := range append(fd.GetDependency(), errdetails.File_google_rpc_error_details_proto.Path()) {
		f, err := protoregistry.GlobalFiles.FindFileByPath(dep)
		if err != nil {
			t.Fatal(err)
		}
		add(f)
	}
	set.File = append(set.File, &fd)
	files, err := protodesc.NewFiles(set)
	if err != nil {
		t.Fatal(err)
	}
	d, err := files.FindDescriptorByName("bookstore.Bookstore")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return raw, d.(protoreflect.ServiceDescriptor)
}

// bookstoreCall is what the gRPC server received.
type bookstoreCall struct {
	path     string
	md       metadata.MD
	messages []string // prototext, compact
}

// bookstoreServer is a real grpc-go server for the bookstore service,
// with dynamic messages (the service exists only as a descriptor).
type bookstoreServer struct {
	svc protoreflect.ServiceDescriptor
	// release lets ListBooks send its second book.
	release chan struct{}
	mu      sync.Mutex
	calls   []bookstoreCall
}

func (b *bookstoreServer) last() bookstoreCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.calls) == 0 {
		return bookstoreCall{}
	}
	return b.calls[len(b.calls)-1]
}

func textOf(m proto.Message) string {
	return strings.Join(strings.Fields(prototext.MarshalOptions{}.Format(m)), " ")
}

func (b *bookstoreServer) handle(_ any, stream grpc.ServerStream) error {
	full, _ := grpc.MethodFromServerStream(stream)
	md := b.svc.Methods().ByName(protoreflect.Name(full[strings.LastIndexByte(full, '/')+1:]))
	if md == nil {
		return status.Error(codes.Unimplemented, "no method "+full)
	}
	reply := func(text string) error {
		m := dynamicpb.NewMessage(md.Output())
		if err := prototext.Unmarshal([]byte(text), m); err != nil {
			return err
		}
		return stream.SendMsg(m)
	}
	call := bookstoreCall{path: full}
	call.md, _ = metadata.FromIncomingContext(stream.Context())
	var msgs []*dynamicpb.Message
	for {
		in := dynamicpb.NewMessage(md.Input())
		if err := stream.RecvMsg(in); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
		msgs = append(msgs, in)
		call.messages = append(call.messages, textOf(in))
		if !md.IsStreamingClient() {
			break
		}
	}
	b.mu.Lock()
	b.calls = append(b.calls, call)
	b.mu.Unlock()
	get := func(name string) protoreflect.Value {
		return msgs[0].Get(md.Input().Fields().ByName(protoreflect.Name(name)))
	}
	switch md.Name() {
	case "ListShelves":
		return reply(`shelves {id: 20 theme: "Children"} shelves {id: 1 theme: "Foo"}`)
	case "CreateShelf":
		return reply(`id: 20 theme: "` + msgs[0].Get(md.Input().Fields().ByName("shelf")).Message().Get(md.Output().Fields().ByName("theme")).String() + `"`)
	case "GetShelf":
		if shelf := get("shelf").Int(); shelf == 100 {
			st, _ := status.New(codes.NotFound, "Shelf 100 Not Found").WithDetails(&errdetails.RequestInfo{RequestId: "r-1"})
			return st.Err()
		} else {
			return reply(fmt.Sprintf(`id: %d theme: "Children"`, shelf))
		}
	case "GetBook":
		return reply(`id: 1 title: "` + get("name").String() + `" page_count: 42 kind: FICTION`)
	case "ListBooks":
		if get("shelf").Int() == 37 {
			return status.Error(codes.NotFound, "Shelf 37 Not Found")
		}
		if err := reply(`id: 1 author: "Neal Stephenson" title: "Readme"`); err != nil {
			return err
		}
		select {
		case <-b.release:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
		return reply(`id: 2 author: "George R.R. Martin" title: "A Game of Thrones"`)
	case "CreateBook":
		book := get("book").Message()
		m := dynamicpb.NewMessage(md.Output())
		proto.Merge(m, book.Interface())
		m.Set(md.Output().Fields().ByName("id"), protoreflect.ValueOfInt64(3))
		return stream.SendMsg(m)
	case "BulkCreateShelf":
		for i, in := range msgs {
			theme := in.Get(md.Input().Fields().ByName("shelf")).Message().Get(md.Output().Fields().ByName("theme")).String()
			if err := reply(fmt.Sprintf(`id: %d theme: %q`, i+3, theme)); err != nil {
				return err
			}
		}
		return nil
	case "DeleteBook":
		return reply("")
	case "GetIndex":
		return reply(`content_type: "text/html" data: "<h1>Hello!</h1>"`)
	case "EchoBody":
		body := get("body").Message()
		data := body.Get(body.Descriptor().Fields().ByName("data")).Bytes()
		return reply(fmt.Sprintf(`content_type: "text/plain" data: %q`, get("arg").String()+":"+string(data)))
	}
	return status.Error(codes.Unimplemented, string(md.Name()))
}

func startBookstore(t *testing.T, svc protoreflect.ServiceDescriptor) (*bookstoreServer, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &bookstoreServer{svc: svc, release: make(chan struct{}, 10)}
	gs := grpc.NewServer(grpc.UnknownServiceHandler(b.handle))
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return b, ln.Addr().String()
}

const h2Cluster = "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}"

// transcoderProxy starts a proxy with the transcoder (fields: more
// GrpcJsonTranscoder fields) before the router: routes for the gRPC
// service go to the bookstore, everything else to an echo upstream, and
// /v1/ (GetBook's rule) with the transcoder disabled by a per-route
// GrpcJsonTranscoder without services.
func transcoderProxy(t *testing.T, grpcAddr, webAddr, fields string, routes ...string) *testutil.Proxy {
	t.Helper()
	routes = append(routes,
		`{match: {prefix: /v1/shelves/off/}, route: {cluster: web}, typed_per_filter_config: {envoy.filters.http.grpc_json_transcoder: {"@type": type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder, proto_descriptor_bin: ""}}}`,
		"{match: {prefix: /bookstore.Bookstore/}, route: {cluster: grpc, timeout: 5s}}",
		"{match: {prefix: /}, route: {cluster: web}}")
	return start(t, cfg{
		hcm: `http_filters: [{name: envoy.filters.http.grpc_json_transcoder, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder, services: [bookstore.Bookstore], ` + fields + `}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts:   vhost(routes...),
		clusters: "[" + staticCluster("grpc", h2Cluster, grpcAddr) + ", " + staticCluster("web", "", webAddr) + "]",
	})
}

// TestGRPCJSONTranscoder: REST/JSON clients call a real grpc-go server
// through the transcoder — GET with path variables and query parameters,
// POST with a body field and with body "*", PUT with repeated fields
// from the query, an error status mapped to its HTTP status, a server
// stream sent as a JSON array while it streams, a bidirectional stream,
// HttpBody both ways — and what is not transcodable passes through
// unchanged (unknown paths and query parameters, gRPC calls, a route that
// disables the filter).
func TestGRPCJSONTranscoder(t *testing.T) {
	set, svc := bookstoreDescriptorSet(t)
	descPath := filepath.Join(t.TempDir(), "bookstore.pb")
	if err := os.WriteFile(descPath, set, 0o644); err != nil {
		t.Fatal(err)
	}
	backend, grpcAddr := startBookstore(t, svc)
	web := testutil.StartUpstream(t, testutil.EchoHandler("web"))
	p := transcoderProxy(t, grpcAddr, web.Addr, "proto_descriptor: "+descPath)
	c := testutil.Client()

	// GET with path variables (one binding "**" segments) and a query
	// parameter, through curl: the gRPC server gets the message, the
	// method's path and the original path and method; the client gets
	// the JSON, fields in number order, 64-bit integers as strings.
	out, err := exec.Command("curl", "-s", "-i", "--max-time", "5", p.URL("http", "/v1/shelves/s1/books/b%201/x?verbose=true")).CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	head, body, _ := strings.Cut(strings.ReplaceAll(string(out), "\r\n", "\n"), "\n\n")
	if !strings.HasPrefix(head, "HTTP/1.1 200") || !strings.Contains(head, "content-type: application/json") || !strings.Contains(head, "grpc-status: 0") {
		t.Errorf("GET GetBook head:\n%s", head)
	}
	if want := `{"id":"1","title":"shelves/s1/books/b 1/x","pageCount":42,"kind":"FICTION"}`; body != want {
		t.Errorf("GET GetBook body %q, want %q", body, want)
	}
	call := backend.last()
	if call.path != "/bookstore.Bookstore/GetBook" || len(call.messages) != 1 || call.messages[0] != `name:"shelves/s1/books/b 1/x" verbose:true` {
		t.Errorf("GetBook: the server got %q %q", call.path, call.messages)
	}
	if got := call.md.Get("x-envoy-original-path"); len(got) != 1 || got[0] != "/v1/shelves/s1/books/b%201/x?verbose=true" {
		t.Errorf("x-envoy-original-path: %q", got)
	}
	if got := call.md.Get("x-envoy-original-method"); len(got) != 1 || got[0] != "GET" {
		t.Errorf("x-envoy-original-method: %q", got)
	}

	// POST with body: shelf, and with body "*" (an additional binding).
	for _, tc := range []struct{ path, body, want string }{
		{"/shelf", `{"theme": "Children"}`, `shelf:{theme:"Children"}`},
		{"/v2/shelves", `{"shelf": {"theme": "Children"}}`, `shelf:{theme:"Children"}`},
	} {
		code, h, body := testutil.Do(t, c, "POST", p.URL("http", tc.path), tc.body, "content-type", "application/json")
		if code != 200 || body != `{"id":"20","theme":"Children"}` || h.Get("content-length") != "30" || h.Get("grpc-status") != "0" {
			t.Errorf("POST %s: %d %v %q", tc.path, code, h, body)
		}
		if got := backend.last(); got.path != "/bookstore.Bookstore/CreateShelf" || len(got.messages) != 1 || got.messages[0] != tc.want {
			t.Errorf("POST %s: the server got %q %q", tc.path, got.path, got.messages)
		}
	}
	// Query parameters add to a repeated field after the body's values.
	code, _, body := testutil.Do(t, c, "PUT", p.URL("http", "/shelves/1/books?book.quotes=Winter%20is%20coming&book.quotes=Hold+the+door"),
		`{"author": "George R.R. Martin", "quotes": ["A girl has no name"]}`)
	if want := `{"id":"3","author":"George R.R. Martin","quotes":["A girl has no name","Winter is coming","Hold+the+door"]}`; code != 200 || body != want {
		t.Errorf("PUT CreateBook: %d %q, want %q", code, body, want)
	}
	if got := backend.last(); len(got.messages) != 1 || got.messages[0] != `shelf:1 book:{author:"George R.R. Martin" quotes:"A girl has no name" quotes:"Winter is coming" quotes:"Hold+the+door"}` {
		t.Errorf("PUT CreateBook: the server got %q", got.messages)
	}

	// Over HTTP/2 the upstream's trailers follow the JSON.
	h2 := testutil.H2CClient()
	h2resp, err := h2.Get(p.URL("http", "/shelves/7"))
	if err != nil {
		t.Fatal(err)
	}
	h2body, _ := io.ReadAll(h2resp.Body)
	h2resp.Body.Close()
	if h2resp.StatusCode != 200 || string(h2body) != `{"id":"7","theme":"Children"}` || h2resp.Trailer.Get("grpc-status") != "0" || h2resp.Header.Get("grpc-status") != "0" {
		t.Errorf("HTTP/2: %d %q header %v trailer %v", h2resp.StatusCode, h2body, h2resp.Header, h2resp.Trailer)
	}

	// A gRPC error: NOT_FOUND is 404, grpc-status and grpc-message are
	// headers, the body is empty.
	code, h, body := testutil.Get(t, c, p.URL("http", "/shelves/100"))
	if code != 404 || h.Get("grpc-status") != "5" || h.Get("grpc-message") != "Shelf 100 Not Found" || body != "" {
		t.Errorf("GET /shelves/100: %d %v %q", code, h, body)
	}
	// A method with no body in its request: DELETE has both path variables.
	code, h, body = testutil.Do(t, c, "DELETE", p.URL("http", "/shelves/456/books/123"), "")
	if code != 200 || body != "{}" || h.Get("content-length") != "2" {
		t.Errorf("DELETE: %d %v %q", code, h, body)
	}
	if got := backend.last(); got.path != "/bookstore.Bookstore/DeleteBook" || got.messages[0] != "shelf:456 book:123" {
		t.Errorf("DELETE: the server got %q %q", got.path, got.messages)
	}

	// Server streaming: the array's first element reaches the client
	// before the server sends the second.
	req, _ := http.NewRequest("GET", p.URL("http", "/shelves/1/books"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("content-type") != "application/json" || len(resp.TransferEncoding) == 0 {
		t.Errorf("stream head: %d %v %v", resp.StatusCode, resp.Header, resp.TransferEncoding)
	}
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('}')
	if err != nil || first != `[{"id":"1","author":"Neal Stephenson","title":"Readme"}` {
		t.Fatalf("first streamed message: %q %v", first, err)
	}
	backend.release <- struct{}{}
	rest, _ := io.ReadAll(br)
	resp.Body.Close()
	if string(rest) != `,{"id":"2","author":"George R.R. Martin","title":"A Game of Thrones"}]` {
		t.Errorf("rest of the stream: %q", rest)
	}
	// A stream that fails at once (trailers only): its status and "[]".
	code, h, body = testutil.Get(t, c, p.URL("http", "/shelves/37/books"))
	if code != 404 || body != "[]" || h.Get("content-type") != "application/json" {
		t.Errorf("failed stream: %d %v %q", code, h, body)
	}
	// Client and server streaming: an array in, an array out.
	code, _, body = testutil.Do(t, c, "POST", p.URL("http", "/bulk/shelves"), `[{"theme": "Classics"}, {"theme": "Satire"},]`)
	if code != 200 || body != `[{"id":"3","theme":"Classics"},{"id":"4","theme":"Satire"}]` {
		t.Errorf("bulk: %d %q", code, body)
	}
	if got := backend.last(); strings.Join(got.messages, "|") != `shelf:{theme:"Classics"}|shelf:{theme:"Satire"}` {
		t.Errorf("bulk: the server got %q", got.messages)
	}

	// HttpBody: raw bytes out with their content type, and in.
	code, h, body = testutil.Get(t, c, p.URL("http", "/index"))
	if code != 200 || h.Get("content-type") != "text/html" || body != "<h1>Hello!</h1>" {
		t.Errorf("HttpBody response: %d %v %q", code, h, body)
	}
	code, h, body = testutil.Do(t, c, "POST", p.URL("http", "/echoBody?arg=oops"), "Hello!", "content-type", "text/plain")
	if code != 200 || h.Get("content-type") != "text/plain" || body != "oops:Hello!" {
		t.Errorf("HttpBody request: %d %v %q", code, h, body)
	}
	if got := backend.last(); got.messages[0] != `arg:"oops" body:{content_type:"text/plain" data:"Hello!"}` {
		t.Errorf("HttpBody request: the server got %q", got.messages)
	}

	// Invalid JSON: 400 from the proxy, nothing reaches the server.
	n := len(backend.calls)
	code, h, body = testutil.Do(t, c, "POST", p.URL("http", "/shelf"), `{"theme": "Children"`)
	if code != 400 || h.Get("content-type") != "text/plain" || body == "" || len(backend.calls) != n {
		t.Errorf("invalid JSON: %d %v %q", code, h, body)
	}

	// Pass-through: a path no rule matches, a query parameter the request
	// message lacks, a route disabling the transcoder.
	for _, path := range []string{"/unknown/path", "/shelves/1?unknown=1", "/v1/shelves/off/books/b"} {
		code, _, body := testutil.Get(t, c, p.URL("http", path))
		if code != 200 || !strings.Contains(body, "upstream=web\nmethod=GET\npath="+path+"\n") || strings.Contains(body, "application/grpc") {
			t.Errorf("%s not passed through unchanged: %d\n%s", path, code, body)
		}
	}
	// gRPC itself goes through untouched.
	cc, err := grpc.NewClient(p.Addr("http"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	gs := svc.Methods().ByName("GetShelf")
	in, out2 := dynamicpb.NewMessage(gs.Input()), dynamicpb.NewMessage(gs.Output())
	in.Set(gs.Input().Fields().ByName("shelf"), protoreflect.ValueOfInt64(7))
	if err := cc.Invoke(ctx, "/bookstore.Bookstore/GetShelf", in, out2); err != nil || textOf(out2) != `id:7 theme:"Children"` {
		t.Errorf("gRPC through the transcoder: %v %v", err, out2)
	}

	// The buffer gauges exist and are back to 0.
	for _, g := range []string{"http.ingress.transcoder_request_buffer_bytes", "http.ingress.transcoder_response_buffer_bytes"} {
		if v := p.Stat(t, g); v != 0 {
			t.Errorf("%s = %d, want 0", g, v)
		}
	}
}

// TestGRPCJSONTranscoderOptions: proto_descriptor_bin, convert_grpc_status
// (the google.rpc.Status of grpc-status-details-bin, details included, as
// the JSON body), print_options, match_incoming_request_route and
// request_validation_options.
func TestGRPCJSONTranscoderOptions(t *testing.T) {
	set, svc := bookstoreDescriptorSet(t)
	backend, grpcAddr := startBookstore(t, svc)
	web := testutil.StartUpstream(t, testutil.EchoHandler("web"))
	bin := "proto_descriptor_bin: " + base64.StdEncoding.EncodeToString(set)
	c := testutil.Client()

	p := transcoderProxy(t, grpcAddr, web.Addr, bin+", convert_grpc_status: true, print_options: {add_whitespace: true, always_print_primitive_fields: true, preserve_proto_field_names: true}")
	code, h, body := testutil.Get(t, c, p.URL("http", "/shelves/100"))
	want := "{\n \"code\": 5,\n \"message\": \"Shelf 100 Not Found\",\n \"details\": [\n  {\n   \"@type\": \"type.googleapis.com/google.rpc.RequestInfo\",\n   \"request_id\": \"r-1\",\n   \"serving_data\": \"\"\n  }\n ]\n}\n"
	if code != 404 || h.Get("content-type") != "application/json" || h.Get("grpc-status") != "" || h.Get("grpc-message") != "" || body != want {
		t.Errorf("converted status: %d %v\n%s\nwant\n%s", code, h, body, want)
	}
	code, _, body = testutil.Get(t, c, p.URL("http", "/shelves/37/books"))
	if code != 404 || body != "{\n \"code\": 5,\n \"message\": \"Shelf 37 Not Found\",\n \"details\": []\n}\n" {
		t.Errorf("converted stream status: %d %q", code, body)
	}
	code, _, body = testutil.Get(t, c, p.URL("http", "/shelves/7"))
	if code != 200 || body != "{\n \"id\": \"7\",\n \"theme\": \"Children\"\n}\n" {
		t.Errorf("print options: %d %q", code, body)
	}

	// match_incoming_request_route: the route of the REST path is kept,
	// so only the /shelves route (no /bookstore.Bookstore/ one) works.
	pm := start(t, cfg{
		hcm: `http_filters: [{name: envoy.filters.http.grpc_json_transcoder, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder, services: [bookstore.Bookstore], match_incoming_request_route: true, ` + bin + `}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts:   vhost("{match: {prefix: /shelves}, route: {cluster: grpc, timeout: 5s}}"),
		clusters: "[" + staticCluster("grpc", h2Cluster, grpcAddr) + "]",
	})
	if code, _, body := testutil.Get(t, c, pm.URL("http", "/shelves/8")); code != 200 || body != `{"id":"8","theme":"Children"}` {
		t.Errorf("match_incoming_request_route: %d %q", code, body)
	}

	// A route's config transcodes where the filter's (no services) does
	// not, as Envoy's per-route override.
	po := start(t, cfg{
		hcm: `http_filters: [{name: envoy.filters.http.grpc_json_transcoder, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder, proto_descriptor: ""}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts: `[{name: all, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: grpc, timeout: 5s}}],
		  typed_per_filter_config: {envoy.filters.http.grpc_json_transcoder: {"@type": type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder, services: [bookstore.Bookstore], ` + bin + `}}}]`,
		clusters: "[" + staticCluster("grpc", h2Cluster, grpcAddr) + "]",
	})
	if code, _, body := testutil.Get(t, c, po.URL("http", "/shelves")); code != 200 || body != `{"shelves":[{"id":"20","theme":"Children"},{"id":"1","theme":"Foo"}]}` {
		t.Errorf("per-route override: %d %q", code, body)
	}

	// max_request_body_size and max_response_body_size: Envoy's 413 and
	// 500 with its texts.
	pl := transcoderProxy(t, grpcAddr, web.Addr, bin+", max_request_body_size: 25, max_response_body_size: 10")
	if code, _, body := testutil.Do(t, c, "POST", pl.URL("http", "/shelf"), `{"theme": "Children 0123456789"}`); code != 413 ||
		body != "Request rejected because the transcoder's internal buffer size exceeds the configured limit." {
		t.Errorf("max_request_body_size: %d %q", code, body)
	}
	if code, _, body := testutil.Do(t, c, "POST", pl.URL("http", "/shelf"), `{"theme": "Children"}`); code != 500 ||
		body != "Response not transcoded because the transcoder's internal buffer size exceeds the configured limit." {
		t.Errorf("max_response_body_size: %d %q", code, body)
	}

	// request_validation_options: what would pass through is refused.
	pr := transcoderProxy(t, grpcAddr, web.Addr, bin+", request_validation_options: {reject_unknown_method: true, reject_unknown_query_parameters: true}")
	n := len(backend.calls)
	if code, _, body := testutil.Get(t, c, pr.URL("http", "/unknown/path")); code != 404 || body != "Could not resolve /unknown/path to a method." {
		t.Errorf("reject_unknown_method: %d %q", code, body)
	}
	if code, _, body := testutil.Get(t, c, pr.URL("http", "/shelves/1?unknown=1")); code != 400 || body != `Could not find field "unknown" in the type "bookstore.GetShelfRequest".` {
		t.Errorf("reject_unknown_query_parameters: %d %q", code, body)
	}
	if len(backend.calls) != n {
		t.Errorf("refused requests reached the server")
	}
}
