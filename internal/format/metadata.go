package format

import (
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/streaminfo"
)

// dynamicMetadata is %DYNAMIC_METADATA(NAMESPACE:KEY:...)%: the namespace's
// metadata, or the value at the key path, as Envoy prints it — a string as
// is, anything else as JSON.
func dynamicMetadata(arg string) (fieldFn, error) {
	parts := strings.Split(arg, ":")
	if arg == "" || parts[0] == "" {
		return nil, fmt.Errorf("DYNAMIC_METADATA needs a namespace: %%DYNAMIC_METADATA(NAMESPACE:KEY)%%")
	}
	ns, keys := parts[0], parts[1:]
	return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
		st := info.DynamicMetadata[ns]
		if st == nil {
			return dst, false
		}
		v := structpb.NewStructValue(st)
		for _, k := range keys {
			s := v.GetStructValue()
			if s == nil {
				return dst, false
			}
			if v = s.GetFields()[k]; v == nil {
				return dst, false
			}
		}
		return appendValue(dst, v)
	}, nil
}

func appendValue(dst []byte, v *structpb.Value) ([]byte, bool) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return append(dst, k.StringValue...), true
	case *structpb.Value_NullValue:
		return dst, false
	}
	// encoding/json sorts keys (protojson's output is deliberately unstable).
	b, err := json.Marshal(v.AsInterface())
	if err != nil {
		return dst, false
	}
	return append(dst, b...), true
}

// filterState is %FILTER_STATE(KEY:PLAIN)% (or TYPED): the value a filter
// stored under KEY, in its string form.
func filterState(arg string) (fieldFn, error) {
	key, form, _ := strings.Cut(arg, ":")
	if key == "" {
		return nil, fmt.Errorf("FILTER_STATE needs a key: %%FILTER_STATE(KEY:PLAIN)%%")
	}
	if form != "" && form != "PLAIN" && form != "TYPED" && !strings.HasPrefix(form, "FIELD") {
		return nil, fmt.Errorf("FILTER_STATE format %q: want PLAIN or TYPED", form)
	}
	return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
		v, ok := info.FilterState[key]
		if !ok || v == nil {
			return dst, false
		}
		return append(dst, v.String()...), true
	}, nil
}
