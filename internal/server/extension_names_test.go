package server

import (
	"testing"

	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/extension/catalog"
)

// registryCategories are the registry's categories of each Envoy category
// the catalog keeps deprecated names by.
var registryCategories = map[string][]extension.Category{
	catalog.HTTPFilters:      {extension.HTTPFilter},
	catalog.NetworkFilters:   {extension.NetworkFilter},
	catalog.ListenerFilters:  {extension.ListenerFilter},
	catalog.AccessLoggers:    {extension.AccessLogger},
	catalog.TransportSockets: {extension.DownstreamTransportSocket, extension.UpstreamTransportSocket},
	catalog.StatsSinks:       {extension.StatSink},
	catalog.Tracers:          {extension.Tracer},
}

// TestExtensionNames: the registry finds every implemented extension by
// each deprecated v2 name of the catalog's table (whether or not its
// registration lists it), and the catalog gives every implemented
// extension's name the @type Legate implements it with — the type the
// loader upgrades a bare name or a v2 `config:` block to.
func TestExtensionNames(t *testing.T) {
	registered := map[extension.Category]map[string]*extension.Extension{}
	for _, e := range extension.All() {
		if registered[e.Category] == nil {
			registered[e.Category] = map[string]*extension.Extension{}
		}
		registered[e.Category][e.Name] = e
	}
	found := map[string]bool{}
	for _, v := range catalog.V2Names() {
		cats, ok := registryCategories[v.Category]
		if !ok {
			t.Errorf("%s: category %s has no registry category", v.Name, v.Category)
			continue
		}
		for _, cat := range cats {
			want := registered[cat][v.V3]
			if want == nil {
				if got := extension.ByName(cat, v.Name); got != nil {
					t.Errorf("ByName(%s, %s) = %s, want none (%s is not implemented)", cat, v.Name, got.Name, v.V3)
				}
				continue
			}
			if got := extension.ByName(cat, v.Name); got != want {
				t.Errorf("ByName(%s, %s) = %v, want %s", cat, v.Name, got, want.Name)
			}
			found[string(cat)+"/"+v.Name] = true
		}
	}
	// Not vacuous: the v2 names of the extensions v2 configs use most.
	for _, k := range []string{
		"envoy.filters.http/envoy.router", "envoy.filters.http/envoy.buffer", "envoy.filters.http/envoy.ext_authz",
		"envoy.filters.network/envoy.http_connection_manager", "envoy.filters.network/envoy.tcp_proxy",
		"envoy.filters.listener/envoy.listener.tls_inspector", "envoy.access_loggers/envoy.file_access_log",
		"envoy.transport_sockets.downstream/tls", "envoy.transport_sockets.upstream/tls",
		"envoy.transport_sockets.upstream/raw_buffer", "envoy.stats_sinks/envoy.statsd", "envoy.tracers/envoy.zipkin",
	} {
		if !found[k] {
			t.Errorf("%s: not found in the registry", k)
		}
	}
	if e := extension.ByName(extension.NetworkFilter, "envoy.router"); e != nil {
		t.Errorf("envoy.router found as a network filter: %s", e.Name)
	}

	for _, e := range extension.All() {
		if !catalog.IsName(e.Name) {
			continue // a name of Legate's own or of a matcher input: no catalog entry
		}
		typ, ok := catalog.ConfigType(e.Name)
		if e.Name == "envoy.transport_sockets.tls" || e.Name == "envoy.transport_sockets.quic" {
			if ok {
				t.Errorf("ConfigType(%s) = %s: the loader picks the side", e.Name, typ)
			}
			continue
		}
		if want := catalog.TypeName(e.TypeURL()); typ != want {
			t.Errorf("%s (%s): catalog.ConfigType = %q, registered with %s", e.Name, e.Category, typ, want)
		}
	}
}
