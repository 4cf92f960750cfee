package config

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"gopkg.in/yaml.v3"

	// TypedStruct holds the configs of types Legate does not link.
	_ "github.com/cncf/xds/go/xds/type/v3"
)

// Warning is a non-fatal remark about a config, such as a v2-era field that
// was upgraded to its v3 form.
type Warning struct {
	Path    string // Envoy-style field path, e.g. static_resources.clusters[0].hosts
	Line    int    // 1-based line in the source, 0 if unknown
	Message string
	// Unknown marks an unknown field let through by
	// --allow-unknown-static-fields (server.static_unknown_fields).
	Unknown bool
}

func (w Warning) String() string {
	if w.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", w.Path, w.Line, w.Message)
	}
	return fmt.Sprintf("%s: %s", w.Path, w.Message)
}

// FieldError is a config error located at a field path.
type FieldError struct {
	Path    string
	Line    int
	Message string
}

func (e *FieldError) Error() string {
	p := e.Path
	if p == "" {
		p = "(root)"
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", p, e.Line, e.Message)
	}
	return fmt.Sprintf("%s: %s", p, e.Message)
}

// ErrorList is every error found in one config; it prints one per line.
type ErrorList []error

func (l ErrorList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap gives errors.Is/As access to each error.
func (l ErrorList) Unwrap() []error { return l }

// Decode parses YAML or JSON text into msg the way Envoy does: field names in
// snake_case or lowerCamelCase, case-insensitive enum names, nodes tagged
// !ignore dropped, anchors and merge keys resolved, typed_config resolved by
// @type URL, and v2-era forms (config:, hosts:, short filter names) upgraded
// with one warning each. root names the message in error paths ("" for a
// bootstrap, whose fields are then top-level paths).
func Decode(data []byte, msg proto.Message, root string) ([]Warning, error) {
	w, _, err := decode(data, msg, root, false, false)
	return w, err
}

// DecodeLines is Decode that also returns the source line of every field.
func DecodeLines(data []byte, msg proto.Message, root string) ([]Warning, Lines, error) {
	return decode(data, msg, root, true, false)
}

func decode(data []byte, msg proto.Message, root string, withLines, allowUnknown bool) ([]Warning, Lines, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("parse YAML/JSON: %w", err)
	}
	d := &decoder{allowUnknown: allowUnknown}
	if withLines {
		d.lines = Lines{}
	}
	var tree any = map[string]any{}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 && !isNull(doc.Content[0]) {
		tree = d.message(doc.Content[0], msg.ProtoReflect().Descriptor(), root)
	}
	if len(d.errs) > 0 {
		return d.warnings, d.lines, d.errs
	}
	js, err := json.Marshal(tree)
	if err != nil {
		return d.warnings, d.lines, fmt.Errorf("internal: re-encode config: %w", err)
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(js, msg); err != nil {
		return d.warnings, d.lines, fmt.Errorf("%s: %w", orRoot(root), err)
	}
	return d.warnings, d.lines, nil
}

func orRoot(p string) string {
	if p == "" {
		return "(root)"
	}
	return p
}

// decoder walks a YAML tree alongside a protobuf descriptor and produces the
// canonical proto3 JSON form that protojson accepts.
type decoder struct {
	// allowUnknown turns unknown fields into warnings (Envoy's
	// --allow-unknown-static-fields): the field is dropped.
	allowUnknown bool
	warnings     []Warning
	errs         ErrorList
	// lines records the source line of every field, by path.
	lines Lines
}

// Located is an error at a config path with a line that Lines.Annotate
// may fill in (errors of other packages, such as the extension registry's).
type Located interface {
	Location() (path string, line *int)
}

// Lines maps config paths (static_resources.clusters[0].name) to the line
// of the source file they were read from, so that errors found later —
// when the config is compiled — can name the line too.
type Lines map[string]int

// Annotate adds source lines to the FieldErrors in err that lack one: the
// line of the error's path, or of its nearest parent that has one.
func (l Lines) Annotate(err error) error {
	if len(l) == 0 {
		return err
	}
	return annotate(err, l.find)
}

// AnnotateAs is Annotate for errors whose paths start with from where the
// file has the same fields under to: an xDS resource compiled as "cluster
// foo" that was read from resources[2] of a file. It reports whether err
// holds an error with a path at all (one a line can be given to).
func (l Lines) AnnotateAs(err error, from, to string) bool {
	located := false
	annotate(err, func(p string) int {
		located = true
		rest, ok := strings.CutPrefix(p, from)
		if !ok || rest != "" && rest[0] != '.' && rest[0] != '[' {
			return 0
		}
		return l.find(to + rest)
	})
	return located
}

// annotate sets the line of each located error in err that lacks one.
func annotate(err error, line func(path string) int) error {
	var walk func(error)
	walk = func(e error) {
		switch v := e.(type) {
		case *FieldError:
			if v.Line == 0 {
				v.Line = line(v.Path)
			}
		case ErrorList:
			for _, x := range v {
				walk(x)
			}
		case Located:
			if p, l := v.Location(); *l == 0 {
				*l = line(p)
			}
		case interface{ Unwrap() error }:
			walk(v.Unwrap())
		}
	}
	if err != nil {
		walk(err)
	}
	return err
}

// Line returns the source line of a path, or of its nearest parent that
// has one (0 if none does).
func (l Lines) Line(path string) int { return l.find(path) }

func (l Lines) find(p string) int {
	for p != "" {
		if n, ok := l[p]; ok {
			return n
		}
		i := strings.LastIndexAny(p, ".[")
		if i <= 0 {
			return 0
		}
		p = p[:i]
	}
	return 0
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &FieldError{Path: orRoot(path), Line: line, Message: fmt.Sprintf(format, args...)})
}

func (d *decoder) warnf(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.warnings = append(d.warnings, Warning{Path: orRoot(path), Line: line, Message: fmt.Sprintf(format, args...)})
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func ignored(n *yaml.Node) bool { return n != nil && n.Tag == "!ignore" }

// pair is one key/value of a YAML mapping after merge keys are expanded.
type pair struct {
	key   string
	kn    *yaml.Node
	value *yaml.Node
}

// pairs returns the mapping's entries in order, with `<<` merge keys expanded
// (explicit keys win over merged ones) and !ignore-tagged entries dropped.
func pairs(n *yaml.Node) []pair {
	n = resolve(n)
	var out []pair
	seen := map[string]bool{}
	var merged []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if ignored(k) || ignored(v) {
			continue
		}
		if k.Tag == "!!merge" || k.Value == "<<" {
			src := resolve(v)
			var srcs []*yaml.Node
			if src.Kind == yaml.SequenceNode {
				srcs = src.Content
			} else {
				srcs = []*yaml.Node{src}
			}
			for _, s := range srcs {
				if s = resolve(s); s.Kind == yaml.MappingNode {
					merged = append(merged, pairs(s)...)
				}
			}
			continue
		}
		seen[k.Value] = true
		out = append(out, pair{key: k.Value, kn: k, value: v})
	}
	for _, p := range merged {
		if !seen[p.key] {
			seen[p.key] = true
			out = append(out, p)
		}
	}
	return out
}

// message converts a mapping node for the message md.
func (d *decoder) message(n *yaml.Node, md protoreflect.MessageDescriptor, path string) any {
	if wk := d.wellKnown(n, md, path); wk != nil {
		return wk.v
	}
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping for %s, got %s", md.FullName(), kindName(n))
		return nil
	}
	ps := pairs(n)
	ps = d.upgradeV2(n, md, path, ps)
	out := make(map[string]any, len(ps))
	for _, p := range ps {
		fd := md.Fields().ByName(protoreflect.Name(p.key))
		if fd == nil {
			fd = md.Fields().ByJSONName(p.key)
		}
		fpath := join(path, p.key)
		if fd == nil {
			if d.allowUnknown {
				d.warnings = append(d.warnings, Warning{Path: fpath, Line: p.kn.Line, Unknown: true,
					Message: fmt.Sprintf("unknown field %q in %s ignored (--allow-unknown-static-fields)", p.key, md.FullName())})
				continue
			}
			d.errorf(p.kn, fpath, "unknown field %q in %s", p.key, md.FullName())
			continue
		}
		if isNull(p.value) {
			continue
		}
		if _, dup := out[fd.JSONName()]; dup {
			d.errorf(p.kn, fpath, "field %q given twice", p.key)
			continue
		}
		fpath = join(path, string(fd.Name()))
		if d.lines != nil {
			d.lines[fpath] = p.kn.Line
		}
		if v := d.field(p.value, fd, fpath); v != nil {
			out[fd.JSONName()] = v
		}
	}
	return out
}

func (d *decoder) field(n *yaml.Node, fd protoreflect.FieldDescriptor, path string) any {
	n = resolve(n)
	switch {
	case fd.IsMap():
		if n.Kind != yaml.MappingNode {
			d.errorf(n, path, "expected a mapping, got %s", kindName(n))
			return nil
		}
		m := map[string]any{}
		for _, p := range pairs(n) {
			if d.lines != nil {
				d.lines[path+"["+strconv.Quote(p.key)+"]"] = p.kn.Line
			}
			if v := d.single(p.value, fd.MapValue(), path+"["+strconv.Quote(p.key)+"]"); v != nil {
				m[p.key] = v
			}
		}
		return m
	case fd.IsList():
		if n.Kind != yaml.SequenceNode {
			// Envoy's (protobuf C++) JSON parser takes a single value for a
			// repeated field as a one-element list; so do we, with a warning.
			d.warnf(n, path, "a single value where a list is expected: taken as a one-element list (write it as [ ... ])")
			n = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: n.Line, Content: []*yaml.Node{n}}
		}
		l := make([]any, 0, len(n.Content))
		for i, e := range n.Content {
			if ignored(e) {
				continue
			}
			if d.lines != nil {
				d.lines[index(path, i)] = e.Line
			}
			if v := d.single(e, fd, index(path, i)); v != nil {
				l = append(l, v)
			}
		}
		return l
	default:
		return d.single(n, fd, path)
	}
}

// single converts one value of a (non-repeated view of a) field.
func (d *decoder) single(n *yaml.Node, fd protoreflect.FieldDescriptor, path string) any {
	n = resolve(n)
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return d.message(n, fd.Message(), path)
	case protoreflect.EnumKind:
		return d.enum(n, fd.Enum(), path)
	}
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected a %s value, got %s", fd.Kind(), kindName(n))
		return nil
	}
	return d.scalar(n, fd.Kind(), path)
}

func (d *decoder) scalar(n *yaml.Node, k protoreflect.Kind, path string) any {
	v := n.Value
	switch k {
	case protoreflect.StringKind:
		return v
	case protoreflect.BytesKind:
		return v // base64 in proto3 JSON, as in Envoy
	case protoreflect.BoolKind:
		switch strings.ToLower(v) {
		case "true", "yes", "on":
			return true
		case "false", "no", "off":
			return false
		}
		d.errorf(n, path, "expected true or false, got %q", v)
		return nil
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			d.errorf(n, path, "expected a number, got %q", v)
			return nil
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return v
		}
		return json.Number(strconv.FormatFloat(f, 'g', -1, 64))
	default: // integers
		if _, err := strconv.ParseInt(v, 0, 64); err != nil {
			if _, err2 := strconv.ParseUint(v, 0, 64); err2 != nil {
				// Allow "10.0"-style integral floats, as protobuf's JSON parser does.
				if f, err3 := strconv.ParseFloat(v, 64); err3 == nil && f == math.Trunc(f) {
					return json.Number(strconv.FormatFloat(f, 'f', 0, 64))
				}
				d.errorf(n, path, "expected an integer, got %q", v)
				return nil
			}
		}
		i, err := strconv.ParseInt(v, 0, 64)
		if err == nil {
			return json.Number(strconv.FormatInt(i, 10))
		}
		u, _ := strconv.ParseUint(v, 0, 64)
		return json.Number(strconv.FormatUint(u, 10))
	}
}

func (d *decoder) enum(n *yaml.Node, ed protoreflect.EnumDescriptor, path string) any {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected an enum name of %s, got %s", ed.FullName(), kindName(n))
		return nil
	}
	if i, err := strconv.Atoi(n.Value); err == nil {
		return i
	}
	if ev := ed.Values().ByName(protoreflect.Name(n.Value)); ev != nil {
		return string(ev.Name())
	}
	vals := ed.Values()
	for i := 0; i < vals.Len(); i++ {
		if strings.EqualFold(string(vals.Get(i).Name()), n.Value) {
			return string(vals.Get(i).Name())
		}
	}
	names := make([]string, vals.Len())
	for i := range names {
		names[i] = string(vals.Get(i).Name())
	}
	d.errorf(n, path, "unknown value %q for enum %s (one of %s)", n.Value, ed.FullName(), strings.Join(names, ", "))
	return nil
}

type wkValue struct{ v any }

// wellKnown handles the google.protobuf types whose JSON form is special.
// It returns nil when md is an ordinary message.
func (d *decoder) wellKnown(n *yaml.Node, md protoreflect.MessageDescriptor, path string) *wkValue {
	n = resolve(n)
	switch md.FullName() {
	case "google.protobuf.Any":
		return &wkValue{d.anyValue(n, path)}
	case "google.protobuf.Struct":
		if n.Kind != yaml.MappingNode {
			d.errorf(n, path, "expected a mapping, got %s", kindName(n))
			return &wkValue{}
		}
		return &wkValue{generic(n)}
	case "google.protobuf.Value":
		return &wkValue{generic(n)}
	case "google.protobuf.ListValue":
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, path, "expected a list, got %s", kindName(n))
			return &wkValue{}
		}
		return &wkValue{generic(n)}
	case "google.protobuf.Duration", "google.protobuf.Timestamp", "google.protobuf.FieldMask":
		if n.Kind == yaml.MappingNode && md.FullName() != "google.protobuf.FieldMask" {
			// The message form {seconds: 5, nanos: 0}, which Envoy's
			// loader accepts as well as "5s".
			return &wkValue{d.secondsNanos(n, md, path)}
		}
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "expected a string such as \"1.5s\" for %s, got %s", md.Name(), kindName(n))
			return &wkValue{}
		}
		return &wkValue{n.Value}
	case "google.protobuf.Empty":
		return &wkValue{map[string]any{}}
	case "google.protobuf.DoubleValue", "google.protobuf.FloatValue":
		return &wkValue{d.wrapper(n, protoreflect.DoubleKind, path)}
	case "google.protobuf.Int64Value", "google.protobuf.Int32Value", "google.protobuf.UInt64Value", "google.protobuf.UInt32Value":
		return &wkValue{d.wrapper(n, protoreflect.Int64Kind, path)}
	case "google.protobuf.BoolValue":
		return &wkValue{d.wrapper(n, protoreflect.BoolKind, path)}
	case "google.protobuf.StringValue", "google.protobuf.BytesValue":
		return &wkValue{d.wrapper(n, protoreflect.StringKind, path)}
	}
	return nil
}

// secondsNanos converts the {seconds, nanos} form of a Duration or a
// Timestamp to its JSON string.
func (d *decoder) secondsNanos(n *yaml.Node, md protoreflect.MessageDescriptor, path string) any {
	var sec, nanos int64
	for _, p := range pairs(n) {
		v := resolve(p.value)
		x, err := strconv.ParseInt(v.Value, 10, 64)
		if v.Kind != yaml.ScalarNode || err != nil {
			d.errorf(p.value, join(path, p.key), "expected an integer, got %q", v.Value)
			return nil
		}
		switch p.key {
		case "seconds":
			sec = x
		case "nanos":
			nanos = x
		default:
			d.errorf(p.kn, join(path, p.key), "unknown field %q in %s (seconds, nanos)", p.key, md.FullName())
			return nil
		}
	}
	if nanos <= -1e9 || nanos >= 1e9 || (sec > 0 && nanos < 0) || (sec < 0 && nanos > 0) {
		d.errorf(n, path, "nanos %d out of range for seconds %d", nanos, sec)
		return nil
	}
	if md.FullName() == "google.protobuf.Timestamp" {
		return time.Unix(sec, nanos).UTC().Format(time.RFC3339Nano)
	}
	neg := sec < 0 || nanos < 0
	if sec < 0 {
		sec = -sec
	}
	if nanos < 0 {
		nanos = -nanos
	}
	out := fmt.Sprintf("%d.%09ds", sec, nanos)
	if neg {
		out = "-" + out
	}
	return out
}

func (d *decoder) wrapper(n *yaml.Node, k protoreflect.Kind, path string) any {
	if n.Kind == yaml.MappingNode { // {value: x} form
		for _, p := range pairs(n) {
			if p.key == "value" {
				return d.wrapper(resolve(p.value), k, path)
			}
		}
		d.errorf(n, path, "expected a scalar value")
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected a scalar value, got %s", kindName(n))
		return nil
	}
	return d.scalar(n, k, path)
}

// anyValue resolves an Any by its @type and converts its fields.
func (d *decoder) anyValue(n *yaml.Node, path string) any {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping with @type, got %s", kindName(n))
		return nil
	}
	ps := pairs(n)
	var url string
	var rest []pair
	for _, p := range ps {
		if p.key == "@type" {
			url = resolve(p.value).Value
		} else {
			rest = append(rest, p)
		}
	}
	if url == "" {
		if len(ps) == 0 {
			// typed_config: {} is an Any without a type: Envoy then finds
			// the extension by its name and uses its default config (as
			// configs/envoy_ext_authz.yaml in Envoy's tree relies on), so
			// the field counts as unset.
			d.warnf(n, path, "an empty typed_config is the extension's default config; name the type with @type")
			return nil
		}
		d.errorf(n, path, "typed config has no @type")
		return nil
	}
	url = upgradeTypeURL(url, func(newURL string) {
		kind := "deprecated"
		if strings.Contains(url, ".v2") {
			kind = "v2"
		}
		d.warnf(n, path, "%s type %s upgraded to %s", kind, url, newURL)
	})
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if err != nil {
		// A type Legate does not link (an Envoy extension it does not
		// implement, or a typo) is kept, losslessly, as a TypedStruct: the
		// extension registry reports it where it is used, so that an
		// is_optional filter can still be skipped as Envoy does.
		inner := &yaml.Node{Kind: yaml.MappingNode, Line: n.Line, Column: n.Column}
		for _, p := range rest {
			inner.Content = append(inner.Content, p.kn, p.value)
		}
		return map[string]any{"@type": typePrefix + "xds.type.v3.TypedStruct", "type_url": url, "value": generic(inner)}
	}
	md := mt.Descriptor()
	if wk := d.wellKnownAny(n, md, rest, path); wk != nil {
		return map[string]any{"@type": url, "value": wk}
	}
	inner := &yaml.Node{Kind: yaml.MappingNode, Line: n.Line, Column: n.Column}
	for _, p := range rest {
		inner.Content = append(inner.Content, p.kn, p.value)
	}
	m, _ := d.message(inner, md, path).(map[string]any)
	if m == nil {
		m = map[string]any{}
	}
	m["@type"] = url
	return m
}

// wellKnownAny handles an Any that wraps a well-known type, whose JSON form
// is {"@type": ..., "value": ...}.
func (d *decoder) wellKnownAny(n *yaml.Node, md protoreflect.MessageDescriptor, rest []pair, path string) any {
	if !strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return nil
	}
	for _, p := range rest {
		if p.key == "value" {
			if wk := d.wellKnown(p.value, md, join(path, "value")); wk != nil {
				return wk.v
			}
		}
	}
	if md.FullName() == "google.protobuf.Empty" && len(rest) == 0 {
		return map[string]any{}
	}
	if md.FullName() == "google.protobuf.Struct" {
		inner := &yaml.Node{Kind: yaml.MappingNode}
		for _, p := range rest {
			inner.Content = append(inner.Content, p.kn, p.value)
		}
		return generic(inner)
	}
	d.errorf(n, path, "expected a value field for %s", md.FullName())
	return nil
}

// generic converts a YAML node to plain JSON values (for Struct/Value).
func generic(n *yaml.Node) any {
	n = resolve(n)
	switch n.Kind {
	case yaml.MappingNode:
		m := map[string]any{}
		for _, p := range pairs(n) {
			m[p.key] = generic(p.value)
		}
		return m
	case yaml.SequenceNode:
		l := make([]any, 0, len(n.Content))
		for _, e := range n.Content {
			if !ignored(e) {
				l = append(l, generic(e))
			}
		}
		return l
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return nil
		case "!!bool":
			b, _ := strconv.ParseBool(strings.ToLower(n.Value))
			return b
		case "!!int", "!!float":
			if f, err := strconv.ParseFloat(n.Value, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
				return f
			}
		}
		return n.Value
	}
	return nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}
