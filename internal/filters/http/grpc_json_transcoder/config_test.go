package grpc_json_transcoder

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	transcoderv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_json_transcoder/v3"
	_ "google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	_ "google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// bookstoreSet is testdata/bookstore.textproto with its imports, as
// protoc --include_imports writes it; extra files (by path in Go's
// registry) are added too.
func bookstoreSet(t *testing.T, edit func(*descriptorpb.FileDescriptorProto), extra ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "bookstore.textproto"))
	if err != nil {
		t.Fatal(err)
	}
	var fd descriptorpb.FileDescriptorProto
	if err := prototext.Unmarshal(b, &fd); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&fd)
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
	for _, dep := range append(fd.GetDependency(), extra...) {
		f, err := protoregistry.GlobalFiles.FindFileByPath(dep)
		if err != nil {
			t.Fatalf("%s: %v", dep, err)
		}
		add(f)
	}
	set.File = append(set.File, &fd)
	out, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func bookstoreConfig(t *testing.T, c *transcoderv3.GrpcJsonTranscoder) *transcoderConfig {
	t.Helper()
	if c.DescriptorSet == nil {
		c.DescriptorSet = &transcoderv3.GrpcJsonTranscoder_ProtoDescriptorBin{ProtoDescriptorBin: bookstoreSet(t, nil, errdetails.File_google_rpc_error_details_proto.Path())}
	}
	if c.Services == nil {
		c.Services = []string{"bookstore.Bookstore"}
	}
	tc, err := compileConfig(c, "http_filters[0].typed_config")
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// TestConfigErrors: what Envoy refuses at startup is a config error here,
// with its message and the path; fields Legate does not implement are
// refused by name; no services is a disabled filter whose descriptor is
// not even read.
func TestConfigErrors(t *testing.T) {
	good := bookstoreSet(t, nil)
	bin := func(b []byte) *transcoderv3.GrpcJsonTranscoder_ProtoDescriptorBin {
		return &transcoderv3.GrpcJsonTranscoder_ProtoDescriptorBin{ProtoDescriptorBin: b}
	}
	rule := func(method, opt string) func(*descriptorpb.FileDescriptorProto) {
		return func(fd *descriptorpb.FileDescriptorProto) {
			for _, m := range fd.GetService()[0].GetMethod() {
				if m.GetName() == method {
					m.Options = &descriptorpb.MethodOptions{}
					if err := prototext.Unmarshal([]byte(opt), m.Options); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	for _, c := range []struct {
		name string
		cfg  *transcoderv3.GrpcJsonTranscoder
		want string
	}{
		{"unknown service", &transcoderv3.GrpcJsonTranscoder{DescriptorSet: bin(good), Services: []string{"bookstore.Nope"}},
			"services[0]: transcoding_filter: Could not find 'bookstore.Nope' in the proto descriptor"},
		{"no descriptor", &transcoderv3.GrpcJsonTranscoder{Services: []string{"bookstore.Bookstore"}}, "transcoding_filter: descriptor not set"},
		{"garbage", &transcoderv3.GrpcJsonTranscoder{DescriptorSet: bin([]byte("\xff\xff")), Services: []string{"bookstore.Bookstore"}},
			"transcoding_filter: Unable to parse proto descriptor"},
		{"missing file", &transcoderv3.GrpcJsonTranscoder{DescriptorSet: &transcoderv3.GrpcJsonTranscoder_ProtoDescriptor{ProtoDescriptor: "/nonexistent/x.pb"}, Services: []string{"a.B"}},
			"proto_descriptor: transcoding_filter: open /nonexistent/x.pb"},
		{"imports left out", &transcoderv3.GrpcJsonTranscoder{DescriptorSet: bin(func() []byte {
			var set descriptorpb.FileDescriptorSet
			proto.Unmarshal(good, &set)
			set.File = set.File[len(set.File)-1:] // bookstore.proto alone
			b, _ := proto.Marshal(&set)
			return b
		}()), Services: []string{"bookstore.Bookstore"}}, "transcoding_filter: Unable to build proto descriptor pool"},
		{"bad template", &transcoderv3.GrpcJsonTranscoder{DescriptorSet: bin(bookstoreSet(t, rule("GetShelf", `[google.api.http] { get: "/shelves/{shelf" }`))), Services: []string{"bookstore.Bookstore"}},
			"transcoding_filter: Cannot register 'bookstore.Bookstore.GetShelf' to path matcher"},
		{"bad body", &transcoderv3.GrpcJsonTranscoder{DescriptorSet: bin(bookstoreSet(t, rule("CreateShelf", `[google.api.http] { post: "/shelf" body: "nope" }`))), Services: []string{"bookstore.Bookstore"}},
			`transcoding_filter: Cannot register 'bookstore.Bookstore.CreateShelf': Could not find field "nope" in the type "bookstore.CreateShelfRequest".`},
		{"response_body not HttpBody", &transcoderv3.GrpcJsonTranscoder{DescriptorSet: bin(bookstoreSet(t, rule("GetShelf", `[google.api.http] { get: "/s/{shelf}" response_body: "theme" }`))), Services: []string{"bookstore.Bookstore"}},
			`Setting "response_body" is not supported yet for non-HttpBody fields: bookstore.Bookstore.GetShelf`},
		{"unimplemented field", &transcoderv3.GrpcJsonTranscoder{DescriptorSet: bin(good), Services: []string{"bookstore.Bookstore"}, CaseInsensitiveEnumParsing: true},
			"http_filters[0].typed_config.case_insensitive_enum_parsing: field GrpcJsonTranscoder.case_insensitive_enum_parsing is not supported by legate"},
		{"capture_unknown_query_parameters", &transcoderv3.GrpcJsonTranscoder{DescriptorSet: bin(good), Services: []string{"bookstore.Bookstore"}, CaptureUnknownQueryParameters: true},
			"capture_unknown_query_parameters"},
	} {
		_, err := compileConfig(c.cfg, "http_filters[0].typed_config")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
	// No services: disabled, whatever the descriptor.
	tc, err := compileConfig(&transcoderv3.GrpcJsonTranscoder{DescriptorSet: bin([]byte("garbage"))}, "p")
	if err != nil || !tc.disabled {
		t.Errorf("no services: %v %+v, want a disabled config", err, tc)
	}
	// A good config registers every rule, additional bindings included,
	// and auto_mapping adds the methods without one.
	tc = bookstoreConfig(t, &transcoderv3.GrpcJsonTranscoder{AutoMapping: true, MaxRequestBodySize: wrapperspb.UInt32(10)})
	for _, c := range []struct{ method, path, want string }{
		{"POST", "/shelf", "/bookstore.Bookstore/CreateShelf"},
		{"POST", "/v2/shelves", "/bookstore.Bookstore/CreateShelf"},
		{"OPTIONS", "/shelves/1", "/bookstore.Bookstore/GetShelf"},
		{"POST", "/bookstore.Bookstore/Unmapped", "/bookstore.Bookstore/Unmapped"},
		{"GET", "/bookstore.Bookstore/Unmapped", ""},
	} {
		r, _ := tc.matcher.lookup(c.method, c.path, "")
		got := ""
		if r != nil {
			got = r.method.grpcPath
		}
		if got != c.want {
			t.Errorf("%s %s: %q, want %q", c.method, c.path, got, c.want)
		}
	}
	if tc.maxRequest != 10 || tc.maxResponse != -1 {
		t.Errorf("body size limits: %d %d", tc.maxRequest, tc.maxResponse)
	}
	if r, _ := tc.matcher.lookup("POST", "/echoBody", ""); r == nil || !r.method.reqHTTPBody || !r.method.respHTTPBody {
		t.Errorf("EchoBody is an HttpBody method both ways: %+v", r)
	}
}
