package grpc_json_transcoder

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// statusError is a failure with a gRPC status code, as the library's
// absl::Status; its message is the one Envoy sends.
type statusError struct {
	code codes.Code
	msg  string
}

func (e *statusError) Error() string { return e.msg }

func statusErr(c codes.Code, format string, args ...any) error {
	return &statusError{code: c, msg: fmt.Sprintf(format, args...)}
}

// codeOf is the status code of an error (INVALID_ARGUMENT for plain
// errors: JSON the parser refused).
func codeOf(err error) codes.Code {
	if se, ok := err.(*statusError); ok {
		return se.code
	}
	return codes.InvalidArgument
}

// codeNames are absl's StatusCodeToString, which Envoy's response code
// details use.
var codeNames = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

func codeName(c codes.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "UNKNOWN"
}

// resolvedBinding is a binding whose field path is resolved.
type resolvedBinding struct {
	fields []protoreflect.FieldDescriptor
	value  string
}

// frame prefixes a message with gRPC's 5-byte header (not compressed).
func frame(msg []byte) []byte {
	out := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(out[1:5], uint32(len(msg)))
	copy(out[5:], msg)
	return out
}

// requestBuilder makes the gRPC request messages of one HTTP request: the
// JSON body (or HttpBody bytes) with the bindings woven in.
type requestBuilder struct {
	tc       *transcoderConfig
	mi       *methodInfo
	bodyPath []string // the matched rule's body, as written
	bindings []resolvedBinding
}

// message builds one request message from a JSON document (nil: no body,
// which the library parses as "{}"), as JsonRequestTranslator with its
// RequestWeaver: the document is the rule's body field, bindings set
// their fields, except that a singular field the body sets (under its
// proto name) keeps the body's value, and repeated ones get the binding
// values after the body's.
func (rb *requestBuilder) message(doc []byte) (proto.Message, error) {
	if doc == nil {
		doc = []byte("{}")
	}
	if !utf8.Valid(doc) {
		return nil, statusErr(codes.InvalidArgument, "Encountered non UTF-8 code points.")
	}
	wrapped := doc
	for i := len(rb.bodyPath) - 1; i >= 0; i-- {
		wrapped = append(append([]byte(`{`+strconv.Quote(rb.bodyPath[i])+`:`), wrapped...), '}')
	}
	m := dynamicpb.NewMessage(rb.mi.desc.Input())
	if err := rb.tc.unmarsh.Unmarshal(wrapped, m); err != nil {
		return nil, statusErr(codes.InvalidArgument, "%s", strings.TrimPrefix(err.Error(), "proto: "))
	}
	if len(rb.bindings) == 0 {
		return m, nil
	}
	var tree any
	if json.Unmarshal(doc, &tree) != nil {
		tree = nil
	}
	for _, b := range rb.bindings {
		bodyVal, inBody := rb.bodyScalar(tree, b.fields)
		leaf := b.fields[len(b.fields)-1]
		if inBody && !leaf.IsList() {
			if rb.tc.rejectCollisions {
				if err := rb.collision(m, b, bodyVal); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := setBinding(m, b, rb.tc); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// bodyScalar finds the body's scalar value at a binding's field path,
// looked up by proto names as the library's weaver compares them.
func (rb *requestBuilder) bodyScalar(tree any, fields []protoreflect.FieldDescriptor) (any, bool) {
	i := 0
	for ; i < len(rb.bodyPath) && i < len(fields); i++ {
		if rb.bodyPath[i] != string(fields[i].Name()) {
			return nil, false
		}
	}
	if i < len(rb.bodyPath) {
		return nil, false
	}
	cur := tree
	for _, fd := range fields[i:] {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[string(fd.Name())]; !ok {
			return nil, false
		}
	}
	switch cur.(type) {
	case string, float64, bool:
		return cur, true
	}
	return nil, false // objects, lists and null are not compared
}

// collision is reject_binding_body_field_collisions: a binding whose value
// differs from the body's fails the request.
func (rb *requestBuilder) collision(m proto.Message, b resolvedBinding, bodyVal any) error {
	leaf := b.fields[len(b.fields)-1]
	bv, err := bindingValue(leaf, b.value, rb.tc)
	if err != nil {
		return statusErr(codes.InvalidArgument, "Failed to convert binding value %s:%s to %s", leaf.Name(), b.value, leaf.Kind())
	}
	msg := m.ProtoReflect()
	for _, fd := range b.fields[:len(b.fields)-1] {
		msg = msg.Get(fd).Message()
	}
	got := msg.Get(leaf)
	same := got.Equal(bv)
	if leaf.Kind() == protoreflect.FloatKind || leaf.Kind() == protoreflect.DoubleKind {
		same = math.Abs(got.Float()-bv.Float()) < 32*fltEpsilon
	}
	if !same {
		return statusErr(codes.InvalidArgument, "The binding value %s of the field %s is conflicting with the value %v in the body.", b.value, leaf.Name(), bodyVal)
	}
	return nil
}

// fltEpsilon is C's FLT_EPSILON: the library compares floating-point
// bindings with 32 of them of slack.
const fltEpsilon = 1.1920929e-07

// setBinding sets a binding's field, creating the messages on its way.
func setBinding(m proto.Message, b resolvedBinding, tc *transcoderConfig) error {
	msg := m.ProtoReflect()
	for _, fd := range b.fields[:len(b.fields)-1] {
		if fd.IsList() || fd.IsMap() {
			return statusErr(codes.InvalidArgument, "Cannot bind a value through the repeated field %s", fd.Name())
		}
		msg = msg.Mutable(fd).Message()
	}
	leaf := b.fields[len(b.fields)-1]
	if leaf.IsMap() {
		return statusErr(codes.InvalidArgument, "Cannot bind a value to the map field %s", leaf.Name())
	}
	v, err := bindingValue(leaf, b.value, tc)
	if err != nil {
		return err
	}
	if leaf.IsList() {
		msg.Mutable(leaf).List().Append(v)
		return nil
	}
	msg.Set(leaf, v)
	return nil
}

// bindingValue converts a binding's text to a field's value, as the
// library renders a string into the proto writer: numbers and booleans
// are parsed, enums are names or numbers, bytes are base64, and
// well-known message types take their JSON string forms.
func bindingValue(fd protoreflect.FieldDescriptor, s string, tc *transcoderConfig) (protoreflect.Value, error) {
	fail := func() (protoreflect.Value, error) {
		return protoreflect.Value{}, statusErr(codes.InvalidArgument, "Invalid value for %s field %s: %q", kindName(fd), fd.Name(), s)
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		if !utf8.ValidString(s) {
			return protoreflect.Value{}, statusErr(codes.InvalidArgument, "Encountered non UTF-8 code points.")
		}
		return protoreflect.ValueOfString(s), nil
	case protoreflect.BytesKind:
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			if b, err := enc.DecodeString(s); err == nil {
				return protoreflect.ValueOfBytes(b), nil
			}
		}
		return fail()
	case protoreflect.BoolKind:
		switch s {
		case "true":
			return protoreflect.ValueOfBool(true), nil
		case "false":
			return protoreflect.ValueOfBool(false), nil
		}
		return fail()
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		n, ok := parseInt(s, 32)
		if !ok {
			return fail()
		}
		return protoreflect.ValueOfInt32(int32(n)), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, ok := parseInt(s, 64)
		if !ok {
			return fail()
		}
		return protoreflect.ValueOfInt64(n), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		n, ok := parseUint(s, 32)
		if !ok {
			return fail()
		}
		return protoreflect.ValueOfUint32(uint32(n)), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		n, ok := parseUint(s, 64)
		if !ok {
			return fail()
		}
		return protoreflect.ValueOfUint64(n), nil
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f, ok := parseFloat(s)
		if !ok {
			return fail()
		}
		if fd.Kind() == protoreflect.FloatKind {
			return protoreflect.ValueOfFloat32(float32(f)), nil
		}
		return protoreflect.ValueOfFloat64(f), nil
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByName(protoreflect.Name(s)); ev != nil {
			return protoreflect.ValueOfEnum(ev.Number()), nil
		}
		if n, ok := parseInt(s, 32); ok {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(n)), nil
		}
		return fail()
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return messageBinding(fd, s, tc)
	}
	return fail()
}

// messageBinding binds text to a message field: the well-known types that
// have a JSON string form (wrappers, Timestamp, Duration, FieldMask,
// Value) take it, other messages cannot be bound.
func messageBinding(fd protoreflect.FieldDescriptor, s string, tc *transcoderConfig) (protoreflect.Value, error) {
	md := fd.Message()
	m := dynamicpb.NewMessage(md)
	var doc []byte
	switch md.FullName() {
	case "google.protobuf.BoolValue":
		if s != "true" && s != "false" {
			return protoreflect.Value{}, statusErr(codes.InvalidArgument, "Invalid value for bool field %s: %q", fd.Name(), s)
		}
		doc = []byte(s)
	case "google.protobuf.StringValue", "google.protobuf.BytesValue", "google.protobuf.Int32Value", "google.protobuf.Int64Value",
		"google.protobuf.UInt32Value", "google.protobuf.UInt64Value", "google.protobuf.FloatValue", "google.protobuf.DoubleValue",
		"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask", "google.protobuf.Value":
		doc, _ = json.Marshal(s)
	default:
		return protoreflect.Value{}, statusErr(codes.InvalidArgument, "Invalid value for message field %s: %q", fd.Name(), s)
	}
	if err := (protojson.UnmarshalOptions{Resolver: tc.types}).Unmarshal(doc, m); err != nil {
		return protoreflect.Value{}, statusErr(codes.InvalidArgument, "Invalid value for %s field %s: %q", md.FullName(), fd.Name(), s)
	}
	return protoreflect.ValueOfMessage(m), nil
}

func kindName(fd protoreflect.FieldDescriptor) string { return fd.Kind().String() }

// parseInt accepts an integer, or a number with an integral value.
func parseInt(s string, bits int) (int64, bool) {
	if n, err := strconv.ParseInt(s, 10, bits); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || f < -math.Pow(2, float64(bits-1)) || f >= math.Pow(2, float64(bits-1)) {
		return 0, false
	}
	return int64(f), true
}

func parseUint(s string, bits int) (uint64, bool) {
	if n, err := strconv.ParseUint(s, 10, bits); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || f < 0 || f >= math.Pow(2, float64(bits)) {
		return 0, false
	}
	return uint64(f), true
}

// parseFloat accepts numbers and the JSON mapping's NaN and infinities.
func parseFloat(s string) (float64, bool) {
	switch s {
	case "NaN":
		return math.NaN(), true
	case "Infinity":
		return math.Inf(1), true
	case "-Infinity":
		return math.Inf(-1), true
	}
	f, err := strconv.ParseFloat(s, 64)
	return f, err == nil && !strings.ContainsAny(s, "xXpP_")
}

// httpBodyMessage builds the request of an HttpBody method: the bindings
// (but those inside the HttpBody) and the HttpBody at the body field, with
// the request's content-type and raw bytes (Envoy's
// appendHttpBodyEnvelope). first is the first message of the stream:
// later ones carry only data.
func (rb *requestBuilder) httpBodyMessage(contentType string, data []byte, first bool) ([]byte, error) {
	m := dynamicpb.NewMessage(rb.mi.desc.Input())
	if first {
		for _, b := range rb.bindings {
			if insideBody(b.fields, rb.mi.reqBody) {
				continue
			}
			if err := setBinding(m, b, rb.tc); err != nil {
				return nil, err
			}
		}
	}
	msg := m.ProtoReflect()
	for _, fd := range rb.mi.reqBody {
		msg = msg.Mutable(fd).Message()
	}
	if ct := msg.Descriptor().Fields().ByName("content_type"); ct != nil && contentType != "" {
		msg.Set(ct, protoreflect.ValueOfString(contentType))
	}
	if d := msg.Descriptor().Fields().ByName("data"); d != nil && len(data) > 0 {
		msg.Set(d, protoreflect.ValueOfBytes(data))
	}
	return proto.Marshal(m)
}

// insideBody says a binding is within the HttpBody field (the library
// leaves those to the body).
func insideBody(fields, body []protoreflect.FieldDescriptor) bool {
	if len(fields) < len(body) {
		return false
	}
	for i, fd := range body {
		if fields[i] != fd {
			return false
		}
	}
	return true
}

// arraySplitter cuts a streamed JSON array into its elements as they
// arrive (a client-streaming method's request body is an array of
// messages). Like the library's parser it allows a comma before ']'.
type arraySplitter struct {
	state    int // 0: before '[', 1: expecting an element or ']', 2: in an element, 3: after an element, 4: done
	depth    int
	inString bool
	escape   bool
	elem     []byte
	scalar   bool
}

var errTrailing = statusErr(codes.InvalidArgument, "Parsing terminated before end of input.")

// feed consumes data and returns the elements it completed.
func (a *arraySplitter) feed(p []byte) ([][]byte, error) {
	var out [][]byte
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch a.state {
		case 0:
			switch {
			case isSpace(c):
			case c == '[':
				a.state = 1
			case c == '{':
				return nil, statusErr(codes.InvalidArgument, "Expected an array instead of an object")
			default:
				return nil, statusErr(codes.InvalidArgument, "Expected an array instead of a value")
			}
		case 1, 3:
			switch {
			case isSpace(c):
			case c == ']':
				a.state = 4
			case c == ',' && a.state == 3:
				a.state = 1
			case a.state == 1 && c != ',':
				a.state, a.elem, a.depth, a.scalar = 2, a.elem[:0], 0, c != '{' && c != '['
				i-- // the element starts here
			default:
				return nil, statusErr(codes.InvalidArgument, "Unexpected token in the array")
			}
		case 2:
			if a.scalar && !a.inString && (c == ',' || c == ']' || isSpace(c)) {
				out = append(out, bytes.Clone(a.elem))
				a.state = 3
				i--
				continue
			}
			a.elem = append(a.elem, c)
			switch {
			case a.inString:
				if a.escape {
					a.escape = false
				} else if c == '\\' {
					a.escape = true
				} else if c == '"' {
					a.inString = false
				}
			case c == '"':
				a.inString = true
			case c == '{' || c == '[':
				a.depth++
			case c == '}' || c == ']':
				a.depth--
				if a.depth == 0 && !a.scalar {
					out = append(out, bytes.Clone(a.elem))
					a.state = 3
				}
			}
		case 4:
			if !isSpace(c) {
				return nil, errTrailing
			}
		}
	}
	return out, nil
}

// finish checks the array ended; an empty body is the library's "{}".
func (a *arraySplitter) finish() error {
	switch a.state {
	case 4:
		return nil
	case 0:
		return statusErr(codes.InvalidArgument, "Expected an array instead of an object")
	}
	return statusErr(codes.InvalidArgument, "Unexpected end of string.")
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
