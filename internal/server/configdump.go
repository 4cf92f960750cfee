package server

import (
	"fmt"
	"time"

	"github.com/cespare/xxhash/v2"
	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/legateproxy/legate/internal/listener"
	xdsclient "github.com/legateproxy/legate/internal/xds/client"
	"github.com/legateproxy/legate/internal/xds/refs"
)

// ConfigDump renders /config_dump in Envoy's order (its config tracker's
// keys): bootstrap, clusters, endpoints (with includeEDS), listeners,
// routes, secrets — every message redacted as Envoy's MessageUtil::redact.
// The admin handler selects resource=, mask= and name_regex= from it.
func (s *Server) ConfigDump(includeEDS bool) (proto.Message, error) {
	now := timestamppb.New(s.start)
	cd := &adminv3.ConfigDump{}
	add := func(m proto.Message) {
		a, _ := anypb.New(redacted(m))
		cd.Configs = append(cd.Configs, a)
	}
	add(&adminv3.BootstrapConfigDump{Bootstrap: s.Bootstrap, LastUpdated: now})
	ccd := &adminv3.ClustersConfigDump{}
	for _, c := range s.Clusters.Clusters() {
		a, _ := anypb.New(c.Proto)
		if c.AddedViaAPI {
			ccd.DynamicActiveClusters = append(ccd.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
				VersionInfo: c.VersionInfo, Cluster: a, LastUpdated: timestamppb.New(c.LastUpdated)})
		} else {
			ccd.StaticClusters = append(ccd.StaticClusters, &adminv3.ClustersConfigDump_StaticCluster{Cluster: a, LastUpdated: timestamppb.New(c.LastUpdated)})
		}
	}
	if s.dyn != nil {
		s.dyn.dumpClusters(ccd)
	}
	add(ccd)
	if includeEDS && s.dyn != nil {
		ecd := s.dyn.dumpEndpoints()
		// As Envoy, every cluster's endpoints: those given inline
		// (load_assignment) are static for static clusters, dynamic for
		// CDS ones; EDS assignments come from dumpEndpoints.
		for _, c := range s.Clusters.Clusters() {
			la := c.Proto.GetLoadAssignment()
			if la == nil || c.Proto.GetType() == clusterv3.Cluster_EDS {
				continue
			}
			a, _ := anypb.New(la)
			if c.AddedViaAPI {
				ecd.DynamicEndpointConfigs = append(ecd.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{EndpointConfig: a, VersionInfo: c.VersionInfo})
			} else {
				ecd.StaticEndpointConfigs = append(ecd.StaticEndpointConfigs, &adminv3.EndpointsConfigDump_StaticEndpointConfig{EndpointConfig: a})
			}
		}
		add(ecd)
	}
	lcd := &adminv3.ListenersConfigDump{}
	rcd := &adminv3.RoutesConfigDump{}
	s.mu.Lock()
	static := append([]*listener.Listener(nil), s.listeners...)
	s.mu.Unlock()
	for _, l := range static {
		pl, _, updated := l.Current()
		a, _ := anypb.New(pl)
		lcd.StaticListeners = append(lcd.StaticListeners, &adminv3.ListenersConfigDump_StaticListener{Listener: a, LastUpdated: timestamppb.New(updated)})
		addInlineRoutes(rcd, pl, updated)
	}
	if s.dyn != nil {
		s.dyn.dumpListeners(lcd)
		for _, l := range s.dyn.activeListeners() {
			pl, _, updated := l.Current()
			addInlineRoutes(rcd, pl, updated)
		}
		s.dyn.dumpRoutes(rcd)
	}
	add(lcd)
	add(rcd)
	add(s.secretsDump())
	return cd, nil
}

// addInlineRoutes adds the route configurations given inline in a
// listener's connection managers: Envoy's static route configs (its
// static route config providers), whichever listener holds them.
func addInlineRoutes(rcd *adminv3.RoutesConfigDump, pl *listenerv3.Listener, updated time.Time) {
	chains := append([]*listenerv3.FilterChain(nil), pl.GetFilterChains()...)
	if dc := pl.GetDefaultFilterChain(); dc != nil {
		chains = append(chains, dc)
	}
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			h := &hcmv3.HttpConnectionManager{}
			if f.GetTypedConfig() == nil || !f.GetTypedConfig().MessageIs(h) || f.GetTypedConfig().UnmarshalTo(h) != nil {
				continue
			}
			if rc := h.GetRouteConfig(); rc != nil {
				a, _ := anypb.New(rc)
				rcd.StaticRouteConfigs = append(rcd.StaticRouteConfigs, &adminv3.RoutesConfigDump_StaticRouteConfig{RouteConfig: a, LastUpdated: timestamppb.New(updated)})
			}
		}
	}
}

// activeListeners are the dynamic listeners serving (not warming).
func (d *dynamic) activeListeners() []*listener.Listener {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*listener.Listener
	for _, name := range sortedKeys(d.listeners) {
		if dl := d.listeners[name]; !dl.warming {
			out = append(out, dl.l)
		}
	}
	return out
}

// warmingListeners are the dynamic listeners still warming.
func (d *dynamic) warmingListeners() []*listener.Listener {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*listener.Listener
	for _, name := range sortedKeys(d.listeners) {
		if dl := d.listeners[name]; dl.warming {
			out = append(out, dl.l)
		}
	}
	return out
}

// refReady reports whether an RDS table or SDS secret has arrived.
func (d *dynamic) refReady(r refs.Ref) bool {
	var ch <-chan struct{}
	switch r.TypeURL {
	case xdsclient.RouteType:
		d.mu.Lock()
		if rs := d.routes[r.Name]; rs != nil {
			ch = rs.ready
		}
		d.mu.Unlock()
	case xdsclient.SecretType:
		ch = d.s.secrets.Get(r.Name).Ready()
	}
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// secretsDump is the SecretsConfigDump: the bootstrap's static secrets,
// the SDS secrets with a value (active) and those still awaited
// (warming), redacted by ConfigDump.
func (s *Server) secretsDump() *adminv3.SecretsConfigDump {
	out := &adminv3.SecretsConfigDump{}
	if s.secrets == nil {
		return out
	}
	static := map[string]bool{}
	for _, sp := range s.Bootstrap.GetStaticResources().GetSecrets() {
		static[sp.GetName()] = true
	}
	secs := s.secrets.Secrets()
	byName := map[string]int{}
	for i, sec := range secs {
		byName[sec.Name] = i
	}
	for _, name := range sortedKeys(byName) {
		sec := secs[byName[name]]
		sp := sec.Proto()
		switch {
		case static[name] && sp != nil:
			a, _ := anypb.New(sp)
			out.StaticSecrets = append(out.StaticSecrets, &adminv3.SecretsConfigDump_StaticSecret{Name: name, Secret: a, LastUpdated: timestamppb.New(sec.LastUpdated)})
		case sp != nil:
			a, _ := anypb.New(sp)
			out.DynamicActiveSecrets = append(out.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{Name: name, VersionInfo: sec.VersionInfo, Secret: a, LastUpdated: timestamppb.New(sec.LastUpdated)})
		case !static[name]:
			out.DynamicWarmingSecrets = append(out.DynamicWarmingSecrets, &adminv3.SecretsConfigDump_DynamicSecret{Name: name})
		}
	}
	return out
}

// InitDump renders /init_dump: for each listener still initializing
// (a warming dynamic listener; before the server is LIVE, the static
// listeners too, as Envoy dumps the active listeners' init managers
// until the workers start), its init manager — named as Envoy's
// "Listener-local-init-manager <name> <hash>" — and the targets it waits
// for ("RdsRouteConfigSubscription init <name>", "SdsApi <name>"). The
// server's own RTDS targets ("RTDS <name>") come first while pending.
// mask selects the component: "" or "listener"; anything else is empty.
func (s *Server) InitDump(mask string) *adminv3.UnreadyTargetsDumps {
	out := &adminv3.UnreadyTargetsDumps{}
	if mask != "" && mask != "listener" {
		return out
	}
	if t := s.rtds.unready(); len(t) > 0 && mask == "" {
		out.UnreadyTargetsDumps = append(out.UnreadyTargetsDumps, &adminv3.UnreadyTargetsDumps_UnreadyTargetsDump{Name: "init manager Server", TargetNames: t})
	}
	var ls []*listener.Listener
	if s.State() != "LIVE" {
		s.mu.Lock()
		ls = append(ls, s.listeners...)
		s.mu.Unlock()
	}
	if s.dyn != nil {
		ls = append(ls, s.dyn.warmingListeners()...)
	}
	for _, l := range ls {
		pl, _, _ := l.Current()
		var targets []string
		for _, r := range refs.Of(pl) {
			if s.dyn.refReady(r) {
				continue
			}
			switch r.TypeURL {
			case xdsclient.RouteType:
				targets = append(targets, "RdsRouteConfigSubscription init "+r.Name)
			case xdsclient.SecretType:
				targets = append(targets, "SdsApi "+r.Name)
			}
		}
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(pl)
		out.UnreadyTargetsDumps = append(out.UnreadyTargetsDumps, &adminv3.UnreadyTargetsDumps_UnreadyTargetsDump{
			Name: fmt.Sprintf("Listener-local-init-manager %s %d", pl.GetName(), xxhash.Sum64(b)), TargetNames: targets})
	}
	return out
}
