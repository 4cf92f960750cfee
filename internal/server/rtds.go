package server

import (
	"fmt"
	"sort"
	"sync"
	"time"

	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/runtime"
	xdsclient "github.com/legateproxy/legate/internal/xds/client"
	"github.com/legateproxy/legate/internal/xds/resource"
	"github.com/legateproxy/legate/internal/xds/source"
)

// rtds subscribes layered_runtime's rtds_layers: each layer's Runtime
// resource, by name, over its rtds_config (ADS or a source of its own),
// through the same transports, decoding (resource.Runtime) and ACK/NACK
// as every other xDS type. An update is parsed first — a layer Envoy's
// ProtoLayer refuses (a list or null value) rejects the whole update and
// the runtime keeps its values — and only then applied.
type rtds struct {
	s      *Server
	layers []runtime.RTDSLayer
	stats  *xdsclient.Stats

	mu sync.Mutex
	// subs are the subscriptions by transport: the names each carries.
	subs map[source.Transport][]string
	// pending are the layers whose first response has not come yet (the
	// server's "RTDS <name>" init targets).
	pending map[string]<-chan struct{}
	// versions and updated are each layer's accepted version and time.
	versions map[string]string
}

// checkRTDS validates the rtds_layers' config sources (compile time, no
// side effects).
func (s *Server) checkRTDS() error {
	for _, l := range s.Runtime.RTDSLayers() {
		if err := s.dyn.sources.Check(l.Source, l.Path, xdsclient.RuntimeType); err != nil {
			return err
		}
	}
	return nil
}

// startRTDS subscribes every rtds_layer. Called by dynamic.start before
// CDS and LDS, as Envoy starts RTDS before its CDS initialization.
func (s *Server) startRTDS() {
	layers := s.Runtime.RTDSLayers()
	if len(layers) == 0 {
		return
	}
	r := &rtds{s: s, layers: layers, subs: map[source.Transport][]string{}, pending: map[string]<-chan struct{}{},
		versions: map[string]string{},
		// Envoy's RTDS subscriptions count under runtime.
		stats: xdsclient.NewStats(s.Stats.Scope("runtime."))}
	order := []source.Transport{}
	for _, l := range layers {
		t, err := s.dyn.sources.Resolve(l.Source, l.Path, xdsclient.RuntimeType)
		if err != nil { // checked by checkRTDS
			s.log.Error("RTDS source", "path", l.Path, "error", err)
			continue
		}
		if _, ok := r.subs[t]; !ok {
			order = append(order, t)
		}
		r.subs[t] = append(r.subs[t], l.Name)
	}
	for _, t := range order {
		names := r.subs[t]
		sort.Strings(names)
		t.Subscribe(xdsclient.RuntimeType, names, xdsclient.HandlerFunc(r.update), r.stats)
		for _, n := range names {
			r.pending[n] = t.Received(xdsclient.RuntimeType)
		}
	}
	s.mu.Lock()
	s.rtds = r
	s.mu.Unlock()
}

// update applies an RTDS response: every subscribed layer it carries is
// parsed, and only when all parse are they applied (else NACK).
func (r *rtds) update(version string, resources map[string]*resource.Decoded) error {
	if len(resources) == 0 {
		// Envoy refuses an RTDS update without its resource.
		//lint:ignore ST1005 Envoy's message
		return fmt.Errorf("Unexpected RTDS resource length: 0")
	}
	parsed := map[string]map[string]string{}
	var errs config.ErrorList
	for _, name := range sortedKeys(resources) {
		rt, err := resource.As[*runtimev3.Runtime](resources[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if rt.GetName() != name {
			//lint:ignore ST1005 Envoy's message
			errs = append(errs, fmt.Errorf("Unexpected RTDS runtime (expecting %s): %s", name, rt.GetName()))
			continue
		}
		vals, err := runtime.ParseStruct(rt.GetLayer())
		if err != nil {
			errs = append(errs, fmt.Errorf("runtime %s: %w", name, err))
			continue
		}
		parsed[name] = vals
	}
	if len(errs) > 0 {
		return errs
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, vals := range parsed {
		if r.s.Runtime.SetRTDS(name, vals) {
			r.versions[name] = version
			r.s.log.Debug("RTDS layer updated", "name", name, "version", version, "keys", len(vals))
		}
	}
	return nil
}

// wait holds initialization until each RTDS layer's first response came
// (accepted or not), bounded by its initial_fetch_timeout, as Envoy's
// RTDS init targets hold the server's.
func (r *rtds) wait() {
	if r == nil {
		return
	}
	for _, l := range r.layers {
		r.mu.Lock()
		ch := r.pending[l.Name]
		r.mu.Unlock()
		if ch == nil {
			continue
		}
		timeout := source.InitialFetchTimeout(l.Source)
		if timeout <= 0 {
			timeout = source.DefaultInitialFetchTimeout
		}
		t := time.NewTimer(timeout)
		select {
		case <-ch:
		case <-t.C:
			r.s.log.Warn("RTDS initial fetch timed out; continuing without it", "name", l.Name, "initial_fetch_timeout", timeout)
		}
		t.Stop()
	}
}

// unready lists the RTDS init targets still waiting ("RTDS <name>").
func (r *rtds) unready() []string {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, name := range sortedKeys(r.pending) {
		select {
		case <-r.pending[name]:
		default:
			out = append(out, "RTDS "+name)
		}
	}
	return out
}
