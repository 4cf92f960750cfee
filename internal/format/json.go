package format

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// Entry renders one access-log entry (text or JSON).
type Entry interface {
	Append(dst []byte, info *streaminfo.Info) []byte
}

// numericOps are operators whose values json_format renders as numbers.
var numericOps = map[string]bool{
	"RESPONSE_CODE": true, "BYTES_RECEIVED": true, "BYTES_SENT": true, "DURATION": true,
	"REQUEST_DURATION": true, "REQUEST_TX_DURATION": true, "RESPONSE_DURATION": true,
	"RESPONSE_TX_DURATION": true, "UPSTREAM_WIRE_BYTES_SENT": true, "UPSTREAM_WIRE_BYTES_RECEIVED": true,
	"CONNECTION_ID": true, "UPSTREAM_REQUEST_ATTEMPT_COUNT": true, "DOWNSTREAM_REMOTE_PORT": true,
	"DOWNSTREAM_LOCAL_PORT": true, "DOWNSTREAM_DIRECT_REMOTE_PORT": true, "UPSTREAM_LOCAL_PORT": true,
	"UPSTREAM_REMOTE_PORT": true, "GRPC_STATUS_NUMBER": true,
}

// JSON is a compiled json_format: one JSON object per line.
type JSON struct {
	root      *jsonNode
	omitEmpty bool
}

type jsonNode struct {
	keys     []string
	children []*jsonNode
	// leaf
	f       *Formatter
	numeric bool
	// typed renders a lone operator whose value is JSON (a filter
	// state's typed form, dynamic metadata), as Envoy's formatValue.
	typed fieldFn
	raw   []byte // a literal JSON value (number, bool, null)
}

// CompileJSON compiles an Envoy json_format Struct.
func CompileJSON(s *structpb.Struct, omitEmpty bool) (*JSON, error) {
	n, err := compileStruct(s)
	if err != nil {
		return nil, err
	}
	return &JSON{root: n, omitEmpty: omitEmpty}, nil
}

func compileStruct(s *structpb.Struct) (*jsonNode, error) {
	n := &jsonNode{}
	keys := make([]string, 0, len(s.GetFields()))
	for k := range s.GetFields() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c, err := compileValue(s.GetFields()[k])
		if err != nil {
			return nil, fmt.Errorf("json_format key %q: %w", k, err)
		}
		n.keys = append(n.keys, k)
		n.children = append(n.children, c)
	}
	return n, nil
}

func compileValue(v *structpb.Value) (*jsonNode, error) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		f, err := compile(k.StringValue, "")
		if err != nil {
			return nil, err
		}
		leaf := &jsonNode{f: f}
		if len(f.ops) == 1 && f.ops[0].typed != nil && f.ops[0].maxLen == 0 {
			leaf.typed = f.ops[0].typed
		} else if len(f.ops) == 1 && f.ops[0].field != nil {
			name := strings.TrimSuffix(strings.TrimPrefix(k.StringValue, "%"), "%")
			if i := strings.IndexAny(name, "(:"); i >= 0 {
				name = name[:i]
			}
			leaf.numeric = numericOps[name]
		}
		return leaf, nil
	case *structpb.Value_StructValue:
		return compileStruct(k.StructValue)
	case *structpb.Value_ListValue:
		return nil, fmt.Errorf("lists are not supported in json_format")
	default:
		b, err := json.Marshal(v.AsInterface())
		if err != nil {
			return nil, err
		}
		return &jsonNode{raw: b}, nil
	}
}

// Append renders the JSON object and a newline.
func (j *JSON) Append(dst []byte, info *streaminfo.Info) []byte {
	dst = j.appendNode(dst, j.root, info)
	return append(dst, '\n')
}

func (j *JSON) appendNode(dst []byte, n *jsonNode, info *streaminfo.Info) []byte {
	dst = append(dst, '{')
	first := true
	for i, k := range n.keys {
		c := n.children[i]
		mark := len(dst)
		if !first {
			dst = append(dst, ',')
		}
		dst = strconv.AppendQuote(dst, k)
		dst = append(dst, ':')
		switch {
		case c.raw != nil:
			dst = append(dst, c.raw...)
		case c.typed != nil:
			var ok bool
			if dst, ok = c.typed(dst, info); !ok {
				if j.omitEmpty {
					dst = dst[:mark]
					continue
				}
				dst = append(dst, "null"...)
			}
		case c.f != nil:
			start := len(dst)
			dst = c.f.Append(dst, info)
			val := dst[start:]
			if len(val) == 0 {
				if j.omitEmpty {
					dst = dst[:mark]
					continue
				}
				dst = append(dst[:start], "null"...)
			} else if !(c.numeric && isNumber(val)) {
				quoted := strconv.AppendQuote(nil, string(val))
				dst = append(dst[:start], quoted...)
			}
		default:
			dst = j.appendNode(dst, c, info)
		}
		first = false
	}
	return append(dst, '}')
}

func isNumber(b []byte) bool {
	for i, c := range b {
		if (c < '0' || c > '9') && !(i == 0 && c == '-') {
			return false
		}
	}
	return len(b) > 0
}

// Text wraps a text Formatter as an Entry.
type Text struct {
	F *Formatter
}

// Append renders the text format.
func (t Text) Append(dst []byte, info *streaminfo.Info) []byte { return t.F.Append(dst, info) }

// FromSubstitutionFormatString compiles Envoy's log_format message.
func FromSubstitutionFormatString(s *corev3.SubstitutionFormatString, path string) (Entry, error) {
	for i, f := range s.GetFormatters() {
		// Formatter extensions (%REQ_WITHOUT_QUERY%, %METADATA%, CEL …)
		// go through the registry: "not implemented", or "unknown @type".
		if _, err := extension.Lookup(extension.Formatter, f.GetTypedConfig(), config.Join(config.Index(config.Join(path, "formatters"), i), "typed_config")); err != nil {
			return nil, err
		}
	}
	if err := config.CheckFields(s, path, "text_format", "text_format_source", "json_format", "omit_empty_values", "content_type"); err != nil {
		return nil, err
	}
	empty := "-"
	if s.GetOmitEmptyValues() {
		empty = ""
	}
	switch f := s.GetFormat().(type) {
	case *corev3.SubstitutionFormatString_TextFormat:
		tf, err := compile(f.TextFormat, empty)
		if err != nil {
			return nil, config.Errorf(config.Join(path, "text_format"), "%v", err)
		}
		return Text{tf}, nil
	case *corev3.SubstitutionFormatString_TextFormatSource:
		src := f.TextFormatSource
		var text string
		switch d := src.GetSpecifier().(type) {
		case *corev3.DataSource_InlineString:
			text = d.InlineString
		case *corev3.DataSource_InlineBytes:
			text = string(d.InlineBytes)
		case *corev3.DataSource_Filename:
			b, err := readFile(d.Filename)
			if err != nil {
				return nil, config.Errorf(config.Join(path, "text_format_source.filename"), "%v", err)
			}
			text = string(b)
		default:
			return nil, config.Unsupported(config.Join(path, "text_format_source"), "this data source", "inline_string", "inline_bytes", "filename")
		}
		tf, err := compile(text, empty)
		if err != nil {
			return nil, config.Errorf(config.Join(path, "text_format_source"), "%v", err)
		}
		return Text{tf}, nil
	case *corev3.SubstitutionFormatString_JsonFormat:
		j, err := CompileJSON(f.JsonFormat, s.GetOmitEmptyValues())
		if err != nil {
			return nil, config.Errorf(config.Join(path, "json_format"), "%v", err)
		}
		return j, nil
	}
	tf, _ := Compile(DefaultFormat)
	return Text{tf}, nil
}
