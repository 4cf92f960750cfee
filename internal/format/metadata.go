package format

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/streaminfo"
)

// dynamicMetadata is %DYNAMIC_METADATA(NAMESPACE:KEY:...)%: the namespace's
// metadata, or the value at the key path, as Envoy prints it — a string as
// is, anything else as JSON; in json_format (typed) the value itself.
func dynamicMetadata(arg string) (text, typed fieldFn, err error) {
	parts := strings.Split(arg, ":")
	if arg == "" || parts[0] == "" {
		return nil, nil, fmt.Errorf("DYNAMIC_METADATA needs a namespace: %%DYNAMIC_METADATA(NAMESPACE:KEY)%%")
	}
	ns, keys := parts[0], parts[1:]
	lookup := func(info *streaminfo.Info) *structpb.Value {
		st := info.DynamicMetadata[ns]
		if st == nil {
			return nil
		}
		v := structpb.NewStructValue(st)
		for _, k := range keys {
			s := v.GetStructValue()
			if s == nil {
				return nil
			}
			if v = s.GetFields()[k]; v == nil {
				return nil
			}
		}
		if _, null := v.GetKind().(*structpb.Value_NullValue); null || v.GetKind() == nil {
			return nil
		}
		return v
	}
	text = func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
		v := lookup(info)
		if v == nil {
			return dst, false
		}
		if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
			return append(dst, s.StringValue...), true
		}
		return appendJSON(dst, v)
	}
	typed = func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
		v := lookup(info)
		if v == nil {
			return dst, false
		}
		return appendJSON(dst, v)
	}
	return text, typed, nil
}

// appendJSON appends a metadata value as JSON (keys sorted: protojson's
// output is deliberately unstable).
func appendJSON(dst []byte, v *structpb.Value) ([]byte, bool) {
	if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
		return streaminfo.AppendJSONString(dst, s.StringValue), true
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v.AsInterface()); err != nil {
		return dst, false
	}
	return append(dst, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...), true
}

// filterState is %FILTER_STATE(KEY:F:FIELD)%, as Envoy's
// FilterStateFormatter: F is PLAIN (the object's string form), TYPED (the
// default: its typed form as JSON, e.g. a JSON string for a string object)
// or FIELD, with the name of one of the object's fields. An object without
// the form asked for renders as missing. Tokens after the third are
// ignored, as in Envoy.
func filterState(arg string) (text, typed fieldFn, err error) {
	parts := strings.SplitN(arg, ":", 4)
	key, form, name := parts[0], "", ""
	if len(parts) > 1 {
		form = parts[1]
	}
	if len(parts) > 2 {
		name = parts[2]
	}
	if key == "" {
		return nil, nil, fmt.Errorf("invalid filter state configuration, key cannot be empty: %%FILTER_STATE(KEY:PLAIN)%%")
	}
	if form == "" {
		form = "TYPED"
	}
	if form != "PLAIN" && form != "TYPED" && form != "FIELD" {
		return nil, nil, fmt.Errorf("invalid filter state serialize type %q, only PLAIN/TYPED/FIELD are supported", form)
	}
	if (form == "FIELD") != (name != "") {
		return nil, nil, fmt.Errorf("invalid filter state serialize type, FIELD should be used with the field name")
	}
	get := func(info *streaminfo.Info) streaminfo.FilterStateValue { return info.FilterState[key] }
	switch form {
	case "PLAIN":
		text = func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
			v := get(info)
			if v == nil {
				return dst, false
			}
			return append(dst, v.String()...), true
		}
		return text, nil, nil
	case "FIELD":
		text = func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
			v, ok := get(info).(streaminfo.FieldFilterStateValue)
			if !ok {
				return dst, false
			}
			switch f, _ := v.Field(name); f := f.(type) {
			case string:
				return append(dst, f...), true
			case int64:
				return strconv.AppendInt(dst, f, 10), true
			}
			return dst, false
		}
		return text, nil, nil
	}
	text = func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
		v, ok := get(info).(streaminfo.TypedFilterStateValue)
		if !ok {
			return dst, false
		}
		return v.AppendJSON(dst), true
	}
	// In json_format the typed form is a JSON value, not a string.
	return text, text, nil
}
