package xdsgen

// Golden tests of HTTPProxy (as the Gateway API's): the objects of
// testdata/httpproxy/<case>/ rendered as listeners, route
// configurations, clusters and secrets, followed by each HTTPProxy's
// computed status, in testdata/httpproxy/<case>.golden. `go test
// ./internal/controller/xdsgen -run TestHTTPProxyGolden -update`
// rewrites them; review their diff.

import (
	"bytes"
	"path/filepath"
	"sort"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
)

// proxyGoldenStatus is an HTTPProxy's status as the golden files show it.
type proxyGoldenStatus struct {
	Name, Status, Description string
	Errors, Warnings          []model.Problem `json:",omitempty"`
}

func httpProxyYAML(t *testing.T, m *model.Model, r *Resources) []byte {
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
	for _, x := range r.Secrets {
		msgs = append(msgs, x)
	}
	for _, msg := range msgs {
		if v, ok := msg.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				t.Errorf("%T fails Envoy's validation: %v", msg, err)
			}
		}
	}
	var sts []proxyGoldenStatus
	for k, st := range m.Proxies {
		sts = append(sts, proxyGoldenStatus{Name: k.String(), Status: st.Current(), Description: st.Description(), Errors: st.Errors, Warnings: st.Warnings})
	}
	sort.Slice(sts, func(i, j int) bool { return sts[i].Name < sts[j].Name })
	return goldenYAML(t, msgs, map[string]any{"httpproxies": sts})
}

func TestHTTPProxyGolden(t *testing.T) {
	for _, name := range []string{"policies", "tls"} {
		t.Run(name, func(t *testing.T) {
			objs, err := source.LoadManifests(filepath.Join("testdata", "httpproxy", name))
			if err != nil {
				t.Fatal(err)
			}
			got := httpProxyYAML(t, model.Build(objs, model.Options{}), Build(model.Build(objs, model.Options{}), Options{}))
			if !checkGolden(t, filepath.Join("testdata", "httpproxy", name+".golden"), got) {
				return
			}
			m := model.Build(objs, model.Options{})
			if again := httpProxyYAML(t, m, Build(m, Options{})); !bytes.Equal(got, again) {
				t.Error("two renderings of the same objects differ")
			}
		})
	}
}
