package upstream

import (
	"reflect"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/legateproxy/legate/internal/config"
)

// TestClusterDNS: a cluster's typed_dns_resolver_config wins, then its
// dns_resolvers/use_tcp_for_dns_lookups, then the bootstrap's settings;
// c-ares options are read or refused by path.
func TestClusterDNS(t *testing.T) {
	const cares = `{name: c, typed_config: {"@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig, `
	boot := &DNSSettings{Servers: []string{"10.0.0.53:53"}, UseTCP: true}
	for _, tc := range []struct {
		name, yaml string
		boot       *DNSSettings
		want       DNSSettings
		err        string
	}{
		{name: "nothing: the system's", want: DNSSettings{}},
		{name: "the bootstrap's", boot: boot, want: *boot},
		{name: "legacy resolvers", boot: boot, yaml: `dns_resolvers: [{socket_address: {address: 10.1.1.1, port_value: 5353}}]`,
			want: DNSSettings{Servers: []string{"10.1.1.1:5353"}}},
		{name: "typed config", boot: boot, yaml: `typed_dns_resolver_config: ` + cares + `resolvers: [{socket_address: {address: 10.2.2.2, port_value: 53}}],
  dns_resolver_options: {use_tcp_for_dns_lookups: true, no_default_search_domain: true}}}`,
			want: DNSSettings{Servers: []string{"10.2.2.2:53"}, UseTCP: true, NoSearch: true}},
		{name: "unroutable families", yaml: `typed_dns_resolver_config: ` + cares + `filter_unroutable_families: true}}`, err: "filter_unroutable_families"},
		{name: "a resolver that is not a socket address", yaml: `typed_dns_resolver_config: ` + cares + `resolvers: [{pipe: {path: /x}}]}}`, err: "resolvers[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc := &clusterv3.Cluster{}
			if _, err := config.Decode([]byte("name: d\n"+tc.yaml), pc, "cluster"); err != nil {
				t.Fatal(err)
			}
			got, err := ClusterDNS(pc, "cluster", tc.boot)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if got := (DNSSettings{NoSearch: true}).absolute("svc"); got != "svc." {
		t.Errorf("no_default_search_domain queries %q, want svc.", got)
	}
	if got := (DNSSettings{}).absolute("svc"); got != "svc" {
		t.Errorf("with search domains %q, want svc", got)
	}
}
