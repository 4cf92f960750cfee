package grpc_json_transcoder

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"sort"
	"strings"

	transcoderv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_json_transcoder/v3"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/stats"
)

// httpBodyName is google.api.HttpBody: a request or response of this type
// (or a body field of it) carries raw bytes, not JSON.
const httpBodyName = "google.api.HttpBody"

// methodInfo is what the transcoder knows of one gRPC method (Envoy's
// MethodInfo).
type methodInfo struct {
	desc     protoreflect.MethodDescriptor
	grpcPath string // /<package>.<service>/<method>
	// reqBody is the request field the rule's body names (empty for the
	// whole message); reqHTTPBody says it (or the request) is an HttpBody.
	reqBody     []protoreflect.FieldDescriptor
	reqHTTPBody bool
	// respBody is the response_body field, respHTTPBody likewise.
	respBody     []protoreflect.FieldDescriptor
	respHTTPBody bool
}

// printOptions is print_options.
type printOptions struct {
	marshal    protojson.MarshalOptions
	whitespace bool
	// newline and sse are the stream framings other than a JSON array.
	newline, sse bool
}

// transcoderConfig is a compiled GrpcJsonTranscoder (Envoy's
// JsonTranscoderConfig), the filter's or a route's.
type transcoderConfig struct {
	// disabled: no services, the filter passes everything through.
	disabled bool
	types    *dynamicpb.Types
	matcher  *pathMatcher
	print    printOptions
	unmarsh  protojson.UnmarshalOptions

	matchIncomingRoute  bool
	ignoreUnknownQuery  bool
	convertStatus       bool
	rejectUnknownMethod bool
	rejectUnknownQuery  bool
	rejectCollisions    bool
	// maxRequest and maxResponse are max_request_body_size and
	// max_response_body_size (-1: the stream's buffer limit).
	maxRequest, maxResponse int64
}

// filterStats are Envoy's GrpcJsonTranscoderFilterStats, in the
// connection manager's scope.
type filterStats struct {
	requestBuffer, responseBuffer *stats.Gauge
}

// implemented is every GrpcJsonTranscoder field Legate implements.
var implemented = []string{
	"proto_descriptor", "proto_descriptor_bin", "services", "print_options", "match_incoming_request_route",
	"ignored_query_parameters", "auto_mapping", "ignore_unknown_query_parameters", "convert_grpc_status",
	"url_unescape_spec", "query_param_unescape_plus", "match_unregistered_custom_verb",
	"request_validation_options", "max_request_body_size", "max_response_body_size",
}

// compileConfig compiles a GrpcJsonTranscoder as Envoy's
// JsonTranscoderConfig constructor: every error is the one Envoy reports
// at startup, at path.
func compileConfig(c *transcoderv3.GrpcJsonTranscoder, path string) (*transcoderConfig, error) {
	if err := config.CheckFields(c, path, implemented...); err != nil {
		return nil, err
	}
	if po := c.GetPrintOptions(); po != nil {
		if err := config.CheckFields(po, config.Join(path, "print_options"), "add_whitespace", "always_print_primitive_fields",
			"always_print_enums_as_ints", "preserve_proto_field_names", "stream_newline_delimited", "stream_sse_style_delimited"); err != nil {
			return nil, err
		}
	}
	if len(c.GetServices()) == 0 {
		// As Envoy: no services is a disabled filter (a route's config
		// turns transcoding off that way), the descriptor is not read.
		return &transcoderConfig{disabled: true}, nil
	}
	var raw []byte
	switch d := c.GetDescriptorSet().(type) {
	case *transcoderv3.GrpcJsonTranscoder_ProtoDescriptor:
		b, err := os.ReadFile(d.ProtoDescriptor)
		if err != nil {
			return nil, config.Errorf(config.Join(path, "proto_descriptor"), "transcoding_filter: %v", err)
		}
		raw = b
	case *transcoderv3.GrpcJsonTranscoder_ProtoDescriptorBin:
		raw = d.ProtoDescriptorBin
	default:
		return nil, config.Errorf(path, "transcoding_filter: descriptor not set")
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &set); err != nil {
		return nil, config.Errorf(path, "transcoding_filter: Unable to parse proto descriptor: %v", err)
	}
	for _, f := range set.GetFile() {
		sortFieldsByNumber(f.GetMessageType())
	}
	if c.GetConvertGrpcStatus() {
		// As Envoy: google.rpc.Status and google.protobuf.Any are known
		// even when the descriptor set lacks them.
		addBuiltin(&set, "google.protobuf.Any")
		addBuiltin(&set, "google.rpc.Status")
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, config.Errorf(path, "transcoding_filter: Unable to build proto descriptor pool: %v", err)
	}
	tc := &transcoderConfig{
		types:               dynamicpb.NewTypes(files),
		matcher:             newPathMatcher(),
		matchIncomingRoute:  c.GetMatchIncomingRequestRoute(),
		ignoreUnknownQuery:  c.GetIgnoreUnknownQueryParameters(),
		convertStatus:       c.GetConvertGrpcStatus(),
		rejectUnknownMethod: c.GetRequestValidationOptions().GetRejectUnknownMethod(),
		rejectUnknownQuery:  c.GetRequestValidationOptions().GetRejectUnknownQueryParameters(),
		rejectCollisions:    c.GetRequestValidationOptions().GetRejectBindingBodyFieldCollisions(),
		maxRequest:          -1,
		maxResponse:         -1,
	}
	if v := c.GetMaxRequestBodySize(); v != nil {
		tc.maxRequest = int64(v.GetValue())
	}
	if v := c.GetMaxResponseBodySize(); v != nil {
		tc.maxResponse = int64(v.GetValue())
	}
	tc.unmarsh = protojson.UnmarshalOptions{DiscardUnknown: true, Resolver: tc.types}
	po := c.GetPrintOptions()
	tc.print = printOptions{
		marshal: protojson.MarshalOptions{
			UseProtoNames:     po.GetPreserveProtoFieldNames(),
			UseEnumNumbers:    po.GetAlwaysPrintEnumsAsInts(),
			EmitDefaultValues: po.GetAlwaysPrintPrimitiveFields(),
			Resolver:          tc.types,
		},
		whitespace: po.GetAddWhitespace(),
		newline:    po.GetStreamNewlineDelimited(),
		sse:        po.GetStreamSseStyleDelimited(),
	}
	switch c.GetUrlUnescapeSpec() {
	case transcoderv3.GrpcJsonTranscoder_ALL_CHARACTERS_EXCEPT_SLASH:
		tc.matcher.spec = unescapeExceptSlash
	case transcoderv3.GrpcJsonTranscoder_ALL_CHARACTERS:
		tc.matcher.spec = unescapeAll
	}
	tc.matcher.queryPlus = c.GetQueryParamUnescapePlus()
	tc.matcher.anyVerb = c.GetMatchUnregisteredCustomVerb()
	ignored := map[string]bool{}
	for _, q := range c.GetIgnoredQueryParameters() {
		ignored[q] = true
	}
	for i, name := range c.GetServices() {
		d, err := files.FindDescriptorByName(protoreflect.FullName(name))
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if err != nil || !ok {
			return nil, config.Errorf(config.Index(config.Join(path, "services"), i), "transcoding_filter: Could not find '%s' in the proto descriptor", name)
		}
		for j := 0; j < sd.Methods().Len(); j++ {
			md := sd.Methods().Get(j)
			rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
			if rule == nil || !proto.HasExtension(md.Options(), annotations.E_Http) {
				rule = nil
				if c.GetAutoMapping() {
					rule = &annotations.HttpRule{Pattern: &annotations.HttpRule_Post{Post: "/" + string(sd.FullName()) + "/" + string(md.Name())}, Body: "*"}
				}
			}
			mi, err := tc.methodInfo(md, rule)
			if err != nil {
				return nil, config.Errorf(config.Index(config.Join(path, "services"), i), "transcoding_filter: Cannot register '%s': %v", md.FullName(), err)
			}
			if err := tc.registerRule(rule, mi, ignored); err != nil {
				return nil, config.Errorf(config.Index(config.Join(path, "services"), i), "transcoding_filter: Cannot register '%s' to path matcher", md.FullName())
			}
		}
	}
	return tc, nil
}

// methodInfo resolves the rule's body and response_body fields.
func (tc *transcoderConfig) methodInfo(md protoreflect.MethodDescriptor, rule *annotations.HttpRule) (*methodInfo, error) {
	mi := &methodInfo{desc: md, grpcPath: "/" + string(md.Parent().FullName()) + "/" + string(md.Name())}
	var err error
	if mi.reqBody, mi.reqHTTPBody, err = resolveBodyField(md.Input(), rule.GetBody()); err != nil {
		return nil, err
	}
	if mi.respBody, mi.respHTTPBody, err = resolveBodyField(md.Output(), rule.GetResponseBody()); err != nil {
		return nil, err
	}
	if len(mi.respBody) > 0 && !mi.respHTTPBody {
		return nil, statusErr(codes.Unimplemented, "Setting \"response_body\" is not supported yet for non-HttpBody fields: %s", md.FullName())
	}
	return mi, nil
}

// registerRule registers a rule and its additional bindings, as
// PathMatcherUtility::RegisterByHttpRule.
func (tc *transcoderConfig) registerRule(rule *annotations.HttpRule, mi *methodInfo, ignored map[string]bool) error {
	if rule == nil {
		return nil
	}
	var method, tmpl string
	switch p := rule.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		method, tmpl = "GET", p.Get
	case *annotations.HttpRule_Put:
		method, tmpl = "PUT", p.Put
	case *annotations.HttpRule_Post:
		method, tmpl = "POST", p.Post
	case *annotations.HttpRule_Delete:
		method, tmpl = "DELETE", p.Delete
	case *annotations.HttpRule_Patch:
		method, tmpl = "PATCH", p.Patch
	case *annotations.HttpRule_Custom:
		method, tmpl = p.Custom.GetKind(), p.Custom.GetPath()
	}
	if method != "" {
		if err := tc.matcher.register(method, tmpl, &registration{method: mi, bodyPath: rule.GetBody(), ignoredQuery: ignored}); err != nil {
			return err
		}
	}
	for _, ab := range rule.GetAdditionalBindings() {
		if err := tc.registerRule(ab, mi, ignored); err != nil {
			return err
		}
	}
	return nil
}

// resolveBodyField resolves a body or response_body field path ("*" or
// "" is the whole message) and says whether it is an HttpBody.
func resolveBodyField(md protoreflect.MessageDescriptor, p string) ([]protoreflect.FieldDescriptor, bool, error) {
	if p == "*" {
		p = ""
	}
	fields, err := resolveFieldPath(md, splitFieldPath(p))
	if err != nil {
		return nil, false, err
	}
	if len(fields) == 0 {
		return nil, md.FullName() == httpBodyName, nil
	}
	last := fields[len(fields)-1]
	return fields, last.Message() != nil && last.Message().FullName() == httpBodyName, nil
}

// splitFieldPath splits a dotted path, skipping empty names.
func splitFieldPath(p string) []string {
	var out []string
	for _, s := range strings.Split(p, ".") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// findField finds a field by JSON name, then by proto name, then by its
// unescaped name, as the library's TypeHelper::FindField.
func findField(md protoreflect.MessageDescriptor, name string) protoreflect.FieldDescriptor {
	if fd := md.Fields().ByJSONName(name); fd != nil {
		return fd
	}
	if fd := md.Fields().ByName(protoreflect.Name(name)); fd != nil {
		return fd
	}
	if u := urlUnescape(name, unescapeAll, false); u != name {
		return findField(md, u)
	}
	return nil
}

// resolveFieldPath is TypeHelper::ResolveFieldPath; its errors are
// INVALID_ARGUMENT ones.
func resolveFieldPath(md protoreflect.MessageDescriptor, names []string) ([]protoreflect.FieldDescriptor, error) {
	var out []protoreflect.FieldDescriptor
	for i, n := range names {
		fd := findField(md, n)
		if fd == nil {
			return nil, statusErr(codes.InvalidArgument, "Could not find field \"%s\" in the type \"%s\".", n, md.FullName())
		}
		out = append(out, fd)
		if i < len(names)-1 {
			if fd.Kind() != protoreflect.MessageKind {
				return nil, statusErr(codes.InvalidArgument, "Encountered a non-leaf field \"%s\" that is not a message while parsing a field path", fd.Name())
			}
			md = fd.Message()
		}
	}
	return out, nil
}

// sortFieldsByNumber declares each message's fields in field number
// order, the order Envoy's JSON printer writes them in (protojson writes
// declaration order); a message whose oneofs would no longer be declared
// together keeps its order.
func sortFieldsByNumber(msgs []*descriptorpb.DescriptorProto) {
	for _, m := range msgs {
		sortFieldsByNumber(m.GetNestedType())
		fs := slices.Clone(m.GetField())
		sort.SliceStable(fs, func(i, j int) bool { return fs[i].GetNumber() < fs[j].GetNumber() })
		if oneofsTogether(fs) {
			m.Field = fs
		}
	}
}

func oneofsTogether(fs []*descriptorpb.FieldDescriptorProto) bool {
	seen := map[int32]bool{}
	last := int32(-1)
	for _, f := range fs {
		if f.OneofIndex == nil {
			last = -1
			continue
		}
		o := f.GetOneofIndex()
		if o != last && seen[o] {
			return false
		}
		seen[o], last = true, o
	}
	return true
}

// addBuiltin adds the file of a well-known symbol (and what it imports)
// to the set when the set lacks it, from Go's generated registry, as
// Envoy's addBuiltinSymbolDescriptor.
func addBuiltin(set *descriptorpb.FileDescriptorSet, symbol string) {
	have := map[string]bool{}
	for _, f := range set.GetFile() {
		have[f.GetName()] = true
		pkg := f.GetPackage()
		for _, m := range f.GetMessageType() {
			if pkg+"."+m.GetName() == symbol {
				return
			}
		}
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(symbol))
	if err != nil {
		return
	}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if have[fd.Path()] {
			return
		}
		have[fd.Path()] = true
		for i := 0; i < fd.Imports().Len(); i++ {
			add(fd.Imports().Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(d.ParentFile())
}

// toJSON prints a message as Envoy does: compact, or with
// add_whitespace one space of indent per level and a newline at the end.
// protojson's output is re-spaced, as it varies its whitespace on purpose.
func (p *printOptions) toJSON(m proto.Message) ([]byte, error) {
	b, err := p.marshal.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if p.whitespace {
		err = json.Indent(&out, b, "", " ")
		out.WriteByte('\n')
	} else {
		err = json.Compact(&out, b)
	}
	if err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
