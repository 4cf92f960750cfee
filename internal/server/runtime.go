package server

import (
	"strconv"
	"strings"

	"github.com/legateproxy/legate/internal/runtime"
)

// runtimeLimits are the runtime keys the server reads at start.
type runtimeLimits struct {
	listenerConns map[string]uint64 // envoy.resource_limits.listener.<name>.connection_limit
	globalConns   uint64            // overload.global_downstream_max_connections
}

// limitsFrom reads the connection limits from the runtime. Other keys are
// data, as in Envoy: the code that reads them (filters, routes) looks them
// up when it runs.
func limitsFrom(rt *runtime.Loader) runtimeLimits {
	rl := runtimeLimits{listenerConns: map[string]uint64{}}
	snap := rt.Snapshot()
	rl.globalConns = snap.Integer("overload.global_downstream_max_connections", 0)
	for _, k := range snap.Keys() {
		if strings.HasPrefix(k, "envoy.resource_limits.listener.") && strings.HasSuffix(k, ".connection_limit") {
			name := strings.TrimSuffix(strings.TrimPrefix(k, "envoy.resource_limits.listener."), ".connection_limit")
			v, _ := snap.Get(k)
			if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 0 {
				rl.listenerConns[name] = uint64(n)
			}
		}
	}
	return rl
}

// RuntimeDump renders /runtime.
func (s *Server) RuntimeDump() map[string]any { return s.Runtime.Snapshot().Dump() }

// RuntimeModify sets admin-layer runtime keys (/runtime_modify).
func (s *Server) RuntimeModify(kv map[string]string) error { return s.Runtime.SetAdmin(kv) }
