package grpc_json_transcoder

import (
	"encoding/base64"
	"strings"
	"testing"

	transcoderv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_json_transcoder/v3"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/legateproxy/legate/internal/headers"
)

// build transcodes a request as the filter does and returns the gRPC
// message, and what the text want is as that message.
func build(t *testing.T, tc *transcoderConfig, method, target, body, want string) (got, wantMsg proto.Message, err error) {
	t.Helper()
	f := &filter{cfg: tc}
	if err := f.createTranscoder(&headers.Request{Method: method, Path: target}); err != nil {
		return nil, nil, err
	}
	var doc []byte
	if body != "" {
		doc = []byte(body)
	}
	m, err := f.rb.message(doc)
	if err != nil {
		return nil, nil, err
	}
	w := dynamicpb.NewMessage(f.mi.desc.Input())
	if err := prototext.Unmarshal([]byte(want), w); err != nil {
		t.Fatalf("%s: %v", want, err)
	}
	return m, w, nil
}

// TestRequestWeaving: bodies and bindings make the request message as
// Envoy's request translator makes it.
func TestRequestWeaving(t *testing.T) {
	tc := bookstoreConfig(t, &transcoderv3.GrpcJsonTranscoder{})
	for _, c := range []struct{ method, target, body, want string }{
		// body: shelf — the JSON is the shelf; a query parameter joins it.
		{"POST", "/shelf", `{"theme": "Children"}`, `shelf: {theme: "Children"}`},
		{"POST", "/shelf?shelf.theme=Children&shelf.id=999", "", `shelf: {id: 999 theme: "Children"}`},
		// body: * (an additional binding).
		{"POST", "/v2/shelves", `{"shelf": {"theme": "Satire"}}`, `shelf: {theme: "Satire"}`},
		// Path variables and a nested one.
		{"PATCH", "/shelves/456/books/123", `{"author": "Leo Tolstoy"}`, `shelf: 456 book: {id: 123 author: "Leo Tolstoy"}`},
		{"GET", "/v1/shelves/s1/books/a/b", "", `name: "shelves/s1/books/a/b"`},
		// A body value of a singular field wins over the binding; a
		// repeated field gets the bindings after the body's values.
		{"PUT", "/shelves/1/books?book.title=Binding&book.quotes=b1&book.quotes=b2", `{"title": "Body", "quotes": ["q1"]}`,
			`shelf: 1 book: {title: "Body" quotes: "q1" quotes: "b1" quotes: "b2"}`},
		// The body's JSON name is not its proto name: the library sees no
		// collision and the binding, woven last, wins.
		{"PUT", "/shelves/1/books?book.page_count=7", `{"pageCount": 3}`, `shelf: 1 book: {page_count: 7}`},
		// Bindings by JSON name, enums by name or number, booleans.
		{"PUT", "/shelves/1/books?book.pageCount=12&book.kind=POETRY", "", `shelf: 1 book: {kind: POETRY page_count: 12}`},
		{"PUT", "/shelves/1/books?book.kind=1", "", `shelf: 1 book: {kind: FICTION}`},
		{"GET", "/v1/shelves/s/books/b?verbose=true", "", `name: "shelves/s/books/b" verbose: true`},
		// Unknown JSON fields are dropped.
		{"POST", "/shelf", `{"theme": "Children", "unknown": {"a": [1]}}`, `shelf: {theme: "Children"}`},
		// DELETE with two path variables and no body.
		{"DELETE", "/shelves/456/books/123", "", `shelf: 456 book: 123`},
	} {
		got, want, err := build(t, tc, c.method, c.target, c.body, c.want)
		if err != nil {
			t.Errorf("%s %s: %v", c.method, c.target, err)
			continue
		}
		if !proto.Equal(got, want) {
			t.Errorf("%s %s %s:\n got %v\nwant %s", c.method, c.target, c.body, got, c.want)
		}
	}
	for _, c := range []struct{ method, target, body, want string }{
		{"GET", "/nowhere", "", "Could not resolve /nowhere to a method."},
		{"GET", "/shelves/1?unknown=1", "", `Could not find field "unknown" in the type "bookstore.GetShelfRequest".`},
		{"GET", "/shelves/abc", "", `Invalid value for int64 field shelf: "abc"`},
		{"POST", "/shelf", `{"theme": "Children"`, "unexpected EOF"},
		{"POST", "/shelf", "{\"theme\": \"\xc3\x28\"}", "Encountered non UTF-8 code points."},
	} {
		if _, _, err := build(t, tc, c.method, c.target, c.body, ""); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s %q: got %v, want %q", c.method, c.target, c.body, err, c.want)
		}
	}
	// ignore_unknown_query_parameters drops what cannot be bound.
	tci := bookstoreConfig(t, &transcoderv3.GrpcJsonTranscoder{IgnoreUnknownQueryParameters: true})
	if got, want, err := build(t, tci, "GET", "/shelves/100?unknown=1&shelf=9999", "", "shelf: 9999"); err != nil || !proto.Equal(got, want) {
		t.Errorf("ignore_unknown_query_parameters: %v %v (the query binding comes last and wins)", got, err)
	}
	// reject_binding_body_field_collisions refuses a binding the body
	// contradicts, and accepts an equal one.
	tcr := bookstoreConfig(t, &transcoderv3.GrpcJsonTranscoder{RequestValidationOptions: &transcoderv3.GrpcJsonTranscoder_RequestValidationOptions{RejectBindingBodyFieldCollisions: true}})
	if _, _, err := build(t, tcr, "PATCH", "/shelves/1/books/123", `{"id": "456"}`, ""); err == nil ||
		err.Error() != "The binding value 123 of the field id is conflicting with the value 456 in the body." {
		t.Errorf("collision: %v", err)
	}
	if _, _, err := build(t, tcr, "PATCH", "/shelves/1/books/123", `{"id": 123}`, ""); err != nil {
		t.Errorf("equal values are no collision: %v", err)
	}
}

// TestHTTPBodyRequest: an HttpBody body field takes the raw body and the
// request's content type; bindings fill the rest.
func TestHTTPBodyRequest(t *testing.T) {
	tc := bookstoreConfig(t, &transcoderv3.GrpcJsonTranscoder{})
	f := &filter{cfg: tc}
	if err := f.createTranscoder(&headers.Request{Method: "POST", Path: "/echoBody?arg=oops&body.content_type=ignored"}); err != nil {
		t.Fatal(err)
	}
	b, err := f.rb.httpBodyMessage("text/plain", []byte("Hello!"), true)
	if err != nil {
		t.Fatal(err)
	}
	m := dynamicpb.NewMessage(f.mi.desc.Input())
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatal(err)
	}
	want := dynamicpb.NewMessage(f.mi.desc.Input())
	prototext.Unmarshal([]byte(`arg: "oops" body: {content_type: "text/plain" data: "Hello!"}`), want)
	if !proto.Equal(m, want) {
		t.Errorf("got %v, want %v", m, want)
	}
}

// TestResponsePrinting: responses print as Envoy's JSON printer prints
// them: fields in number order, 64-bit integers as strings, defaults left
// out unless always_print_primitive_fields, enums as names unless
// always_print_enums_as_ints, proto names with preserve_proto_field_names,
// and add_whitespace's one-space indent with a final newline.
func TestResponsePrinting(t *testing.T) {
	book := func(tc *transcoderConfig) []byte {
		r, _ := tc.matcher.lookup("PUT", "/shelves/1/books", "")
		m := dynamicpb.NewMessage(r.method.desc.Output())
		if err := prototext.Unmarshal([]byte(`id: 3 title: "War and Peace" kind: POETRY page_count: 1225`), m); err != nil {
			t.Fatal(err)
		}
		b, _ := proto.Marshal(m)
		js, err := tc.responseJSON(r.method, b)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	for _, c := range []struct {
		po   *transcoderv3.GrpcJsonTranscoder_PrintOptions
		want string
	}{
		{nil, `{"id":"3","title":"War and Peace","pageCount":1225,"kind":"POETRY"}`},
		{&transcoderv3.GrpcJsonTranscoder_PrintOptions{AlwaysPrintPrimitiveFields: true},
			`{"id":"3","author":"","title":"War and Peace","quotes":[],"pageCount":1225,"kind":"POETRY"}`},
		{&transcoderv3.GrpcJsonTranscoder_PrintOptions{AlwaysPrintEnumsAsInts: true, PreserveProtoFieldNames: true},
			`{"id":"3","title":"War and Peace","page_count":1225,"kind":2}`},
		{&transcoderv3.GrpcJsonTranscoder_PrintOptions{AddWhitespace: true},
			"{\n \"id\": \"3\",\n \"title\": \"War and Peace\",\n \"pageCount\": 1225,\n \"kind\": \"POETRY\"\n}\n"},
	} {
		if got := string(book(bookstoreConfig(t, &transcoderv3.GrpcJsonTranscoder{PrintOptions: c.po}))); got != c.want {
			t.Errorf("%v:\n got %q\nwant %q", c.po, got, c.want)
		}
	}
}

// TestStreamFraming: server streams are a JSON array, "[]" when empty, or
// newline-delimited, or server-sent events.
func TestStreamFraming(t *testing.T) {
	for _, c := range []struct {
		p    printOptions
		msgs []string
		want string
	}{
		{printOptions{}, []string{`{"a":1}`, `{"b":2}`}, `[{"a":1},{"b":2}]`},
		{printOptions{}, nil, `[]`},
		{printOptions{newline: true}, []string{`{"a":1}`, `{"b":2}`}, "{\"a\":1}\n{\"b\":2}\n"},
		{printOptions{sse: true, newline: true}, []string{`{"a":1}`}, "data: {\"a\":1}\n\n"},
	} {
		w := streamWriter{p: &c.p}
		var out []byte
		for _, m := range c.msgs {
			out = w.message(out, []byte(m))
		}
		if got := string(w.end(out)); got != c.want {
			t.Errorf("%+v: got %q, want %q", c.p, got, c.want)
		}
	}
}

// TestArraySplitter: a client stream's JSON array is cut into messages
// however it arrives, a comma before ']' allowed, an object refused.
func TestArraySplitter(t *testing.T) {
	in := `[ {"theme":"a]}\""}, {"shelf":{"x":[1,{}]}} ,]  `
	for _, size := range []int{1, 3, len(in)} {
		var a arraySplitter
		var got []string
		for i := 0; i < len(in); i += size {
			es, err := a.feed([]byte(in[i:min(i+size, len(in))]))
			if err != nil {
				t.Fatalf("chunks of %d: %v", size, err)
			}
			for _, e := range es {
				got = append(got, string(e))
			}
		}
		if err := a.finish(); err != nil {
			t.Fatal(err)
		}
		if want := []string{`{"theme":"a]}\""}`, `{"shelf":{"x":[1,{}]}}`}; strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("chunks of %d: %q", size, got)
		}
	}
	var a arraySplitter
	if _, err := a.feed([]byte(`{"theme":"x"}`)); err == nil || err.Error() != "Expected an array instead of an object" {
		t.Errorf("an object: %v", err)
	}
	var b arraySplitter
	b.feed([]byte(`[{"a":1}`))
	if b.finish() == nil {
		t.Error("an unterminated array is an error")
	}
	var c arraySplitter
	if _, err := c.feed([]byte(`[] x`)); err == nil {
		t.Error("trailing garbage is an error")
	}
}

// TestStatusJSON: convert_grpc_status prints grpc-status-details-bin's
// google.rpc.Status (its detail types from the descriptor set), or one
// made of grpc-status and the percent-decoded grpc-message.
func TestStatusJSON(t *testing.T) {
	tc := bookstoreConfig(t, &transcoderv3.GrpcJsonTranscoder{ConvertGrpcStatus: true})
	var h headers.Map
	h.Set("grpc-status", "5")
	h.Set("grpc-message", "Shelf%20100%20Not%20Found")
	if js, ok := tc.statusJSON(5, &h); !ok || string(js) != `{"code":5,"message":"Shelf 100 Not Found"}` {
		t.Errorf("from grpc-message: %s %v", js, ok)
	}
	detail, _ := anypb.New(&errdetails.RequestInfo{RequestId: "r-1"})
	b, _ := proto.Marshal(&status.Status{Code: 5, Details: []*anypb.Any{detail}})
	h.Set("grpc-status-details-bin", base64.RawStdEncoding.EncodeToString(b))
	want := `{"code":5,"details":[{"@type":"type.googleapis.com/google.rpc.RequestInfo","requestId":"r-1"}]}`
	if js, ok := tc.statusJSON(5, &h); !ok || string(js) != want {
		t.Errorf("from details: %s %v, want %s", js, ok, want)
	}
	// A detail type the descriptor set lacks: no conversion.
	tcn := bookstoreConfig(t, &transcoderv3.GrpcJsonTranscoder{ConvertGrpcStatus: true,
		DescriptorSet: &transcoderv3.GrpcJsonTranscoder_ProtoDescriptorBin{ProtoDescriptorBin: bookstoreSet(t, nil)}})
	if js, ok := tcn.statusJSON(5, &h); ok {
		t.Errorf("unknown detail type converted: %s", js)
	}
	for code, want := range map[int]int{0: 200, 1: 499, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 12: 501, 14: 503, 16: 401, 13: 500, 99: 500} {
		if got := grpcToHTTP(code); got != want {
			t.Errorf("grpc %d: HTTP %d, want %d", code, got, want)
		}
	}
}
