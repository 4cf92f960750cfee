package xdsgen

// Golden tests of the Gateway API (Envoy Gateway style): the objects of
// testdata/gateway/<case>/, built with the case's options, rendered as
// the listeners, route configurations and clusters, followed by the
// computed GatewayClass, Gateway, ListenerSet, route and BackendTLSPolicy statuses, in
// testdata/gateway/<case>.golden. `go test ./internal/controller/xdsgen
// -run TestGatewayGolden -update` rewrites them; review their diff.

import (
	"bytes"
	"net/netip"
	"path/filepath"
	"sort"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
)

// gatewayYAML renders the resources and statuses, followed by the names
// of the SDS secrets when secrets is set.
func gatewayYAML(t *testing.T, m *model.Model, r *Resources, secrets bool) []byte {
	t.Helper()
	var msgs []proto.Message
	for _, x := range r.Listeners {
		msgs = append(msgs, x)
	}
	for _, x := range r.Routes {
		msgs = append(msgs, x)
	}
	for _, x := range r.Clusters {
		msgs = append(msgs, x)
	}
	for _, msg := range msgs {
		if v, ok := msg.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				t.Errorf("%T fails Envoy's validation: %v", msg, err)
			}
		}
	}
	var gws []*model.GatewayStatus
	for _, g := range m.Gateways {
		gws = append(gws, g)
	}
	sort.Slice(gws, func(i, j int) bool { return gws[i].Key.String() < gws[j].Key.String() })
	var routes []*model.RouteStatus
	for _, rs := range m.Routes {
		routes = append(routes, rs)
	}
	sort.Slice(routes, func(i, j int) bool {
		return routes[i].Kind+routes[i].Key.String() < routes[j].Kind+routes[j].Key.String()
	})
	out := map[string]any{"gatewayClasses": m.GatewayClasses, "gateways": gws, "routes": routes}
	if len(m.BackendTLSPolicies) > 0 {
		var ps []*model.BackendTLSPolicyStatus
		for _, p := range m.BackendTLSPolicies {
			ps = append(ps, p)
		}
		sort.Slice(ps, func(i, j int) bool { return ps[i].Key.String() < ps[j].Key.String() })
		out["backendTLSPolicies"] = ps
	}
	if len(m.ListenerSets) > 0 {
		var ls []*model.ListenerSetStatus
		for _, x := range m.ListenerSets {
			ls = append(ls, x)
		}
		sort.Slice(ls, func(i, j int) bool { return ls[i].Key.String() < ls[j].Key.String() })
		out["listenerSets"] = ls
	}
	if secrets {
		var names []string
		for _, s := range r.Secrets {
			names = append(names, s.Name)
		}
		out["secrets"] = names
	}
	return goldenYAML(t, msgs, out)
}

func TestGatewayGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  model.GatewayOptions
		// secrets lists the SDS secrets' names too.
		secrets bool
	}{
		{"routes", model.GatewayOptions{}, false},
		// The oldest Gateway takes the pool's one address (192.0.2.1);
		// b's spec address is outside the pool, which is what the
		// proxies bind (AddressNotUsable); c finds the pool empty
		// (AddressNotAssigned); neither binds anything. (Without a
		// pool, spec addresses are bound as they are: "routes".)
		{"pool", model.GatewayOptions{AddressPool: netip.MustParsePrefix("192.0.2.0/31"), ListenerPorts: true}, false},
		// BackendTLSPolicies (testdata/gateway/backendtls/objects.yaml
		// says what each shows).
		{"backendtls", model.GatewayOptions{}, false},
		// Backend client certificates of Gateways
		// (testdata/gateway/backendcert/objects.yaml).
		{"backendcert", model.GatewayOptions{}, true},
		// ListenerSets (testdata/gateway/listenerset/objects.yaml).
		{"listenerset", model.GatewayOptions{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := source.LoadManifests(filepath.Join("testdata", "gateway", tc.name))
			if err != nil {
				t.Fatal(err)
			}
			m := model.Build(objs, model.Options{Gateway: tc.opt})
			got := gatewayYAML(t, m, Build(m, Options{}), tc.secrets)
			if !checkGolden(t, filepath.Join("testdata", "gateway", tc.name+".golden"), got) {
				return
			}
			if again := gatewayYAML(t, m, Build(model.Build(objs, model.Options{Gateway: tc.opt}), Options{}), tc.secrets); !bytes.Equal(got, again) {
				t.Error("two renderings of the same objects differ")
			}
		})
	}
}
