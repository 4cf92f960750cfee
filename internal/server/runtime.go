package server

import (
	"fmt"
	"sort"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
)

// runtimeLimits are the runtime keys Legate honours.
type runtimeLimits struct {
	listenerConns map[string]uint64 // envoy.resource_limits.listener.<name>.connection_limit
	globalConns   uint64            // overload.global_downstream_max_connections
}

// runtimeFrom reads the static runtime layers: keys Legate implements are
// returned, the rest are rejected by key, so no runtime override is
// silently ignored.
func runtimeFrom(lr *bootstrapv3.LayeredRuntime) (runtimeLimits, error) {
	rl := runtimeLimits{listenerConns: map[string]uint64{}}
	for i, layer := range lr.GetLayers() {
		p := config.Index("layered_runtime.layers", i)
		switch {
		case layer.GetStaticLayer() != nil:
			flat := map[string]*structpb.Value{}
			flatten("", layer.GetStaticLayer(), flat)
			keys := make([]string, 0, len(flat))
			for k := range flat {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				v := flat[k]
				switch {
				case k == "overload.global_downstream_max_connections":
					rl.globalConns = uint64(v.GetNumberValue())
				case strings.HasPrefix(k, "envoy.resource_limits.listener.") && strings.HasSuffix(k, ".connection_limit"):
					name := strings.TrimSuffix(strings.TrimPrefix(k, "envoy.resource_limits.listener."), ".connection_limit")
					rl.listenerConns[name] = uint64(v.GetNumberValue())
				default:
					return rl, config.Errorf(config.Join(p, "static_layer"), "runtime key %q is not supported by legate", k)
				}
			}
		case layer.GetAdminLayer() != nil:
			// The admin layer holds values set through /runtime_modify, which
			// Legate does not offer: an empty layer changes nothing.
		default:
			return rl, config.Unsupported(p, fmt.Sprintf("runtime layer %q of this kind", layer.GetName()), "static_layer", "admin_layer")
		}
	}
	return rl, nil
}

func flatten(prefix string, s *structpb.Struct, out map[string]*structpb.Value) {
	for k, v := range s.GetFields() {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		if st := v.GetStructValue(); st != nil {
			flatten(key, st, out)
			continue
		}
		out[key] = v
	}
}

// protoName converts a resource query parameter to a field name.
func protoName(s string) protoreflect.Name { return protoreflect.Name(s) }
