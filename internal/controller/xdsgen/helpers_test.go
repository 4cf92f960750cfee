// Helpers for the feature tests: render builds the model and the xDS
// resources from manifests (on top of baseObjects) as JSON, and checks the
// case's golden file (testdata/cases); proxy wraps an HTTPProxy spec. One file per capability: httpproxy_test.go (HTTPProxy
// fields → xDS, one case per field), includes_test.go (delegation),
// client_validation_test.go (TLS client validation).

package xdsgen

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
)

const baseObjects = `
apiVersion: v1
kind: Service
metadata: {name: s1, namespace: default}
spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: s2, namespace: default, annotations: {projectcontour.io/upstream-protocol.h2c: "80"}}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s1-x, namespace: default, labels: {kubernetes.io/service-name: s1}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.0.0.2], conditions: {ready: true}, zone: z1}
- {addresses: [10.0.0.1], conditions: {ready: true}, zone: z1}
- {addresses: [10.0.0.3], conditions: {ready: false}}
`

// render builds the model and xDS from manifests and returns every
// resource as JSON (one string), plus the model.
func render(t *testing.T, manifests string) (string, *model.Model) {
	t.Helper()
	return renderWith(t, manifests, model.Options{})
}

// renderWith is render with model options (the configuration file's).
func renderWith(t *testing.T, manifests string, mo model.Options) (string, *model.Model) {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "objs.yaml"), []byte(baseObjects+"---\n"+manifests), 0o644)
	objs, err := source.LoadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := model.Build(objs, mo)
	r := Build(m, Options{})
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
	for _, x := range Endpoints(m, objs) {
		msgs = append(msgs, x)
	}
	var b strings.Builder
	for _, msg := range msgs {
		a, _ := anypb.New(msg)
		j, _ := protojson.MarshalOptions{}.Marshal(a)
		// protojson randomizes spacing: compact it for stable matching.
		var c bytes.Buffer
		json.Compact(&c, j)
		b.Write(c.Bytes())
		b.WriteByte('\n')
	}
	for _, x := range r.Listeners {
		if err := x.ValidateAll(); err != nil {
			t.Errorf("listener %s fails Envoy's validation: %v", x.Name, err)
		}
	}
	for _, x := range r.Clusters {
		if err := x.ValidateAll(); err != nil {
			t.Errorf("cluster %s fails Envoy's validation: %v", x.Name, err)
		}
	}
	for _, x := range r.Routes {
		if err := x.ValidateAll(); err != nil {
			t.Errorf("route config %s fails Envoy's validation: %v", x.Name, err)
		}
	}
	caseGolden(t, msgs, m)
	return b.String(), m
}

// caseGolden checks a table case's whole rendering (the resources and the
// HTTPProxy statuses) against its golden file,
// testdata/cases/<test>/<case>.golden (a second rendering in one case is
// <case>.2.golden); `go test ./internal/controller/xdsgen -update`
// rewrites them. The cases' substring checks say what each case is about;
// the golden file holds everything else it renders.
func caseGolden(t *testing.T, msgs []proto.Message, m *model.Model) {
	t.Helper()
	type status struct {
		Name, Status, Description string
	}
	var sts []status
	for k, st := range m.Proxies {
		sts = append(sts, status{k.String(), st.Current(), st.Description()})
	}
	sort.Slice(sts, func(i, j int) bool { return sts[i].Name < sts[j].Name })
	goldenCalls.Lock()
	goldenCalls.n[t.Name()]++
	n := goldenCalls.n[t.Name()]
	goldenCalls.Unlock()
	name := goldenFileName(t.Name())
	if n > 1 {
		name += "." + strconv.Itoa(n)
	}
	path := filepath.Join("testdata", "cases", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The cases' certificates are made afresh by each run: their bytes
	// are not compared.
	y := inlineBytes.ReplaceAll(goldenYAML(t, msgs, map[string]any{"httpproxies": sts}), []byte("${1}inline_bytes: <certificate>"))
	checkGolden(t, path, y)
}

// inlineBytes matches an inline DataSource's value in the YAML.
var inlineBytes = regexp.MustCompile(`(?m)^(\s*)inline_bytes: \S+$`)

// goldenCalls counts the renderings of each test, for their file names.
var goldenCalls = struct {
	sync.Mutex
	n map[string]int
}{n: map[string]int{}}

// goldenFileName is a test's name as a path: its top-level test a folder,
// the rest with anything but letters, digits, '.', '-' and '_' as '_'.
func goldenFileName(name string) string {
	top, sub, _ := strings.Cut(name, "/")
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
				return r
			}
			return '_'
		}, s)
	}
	if sub == "" {
		return filepath.Join(clean(top), "main")
	}
	return filepath.Join(clean(top), clean(sub))
}

func proxy(spec string) string {
	return "apiVersion: projectcontour.io/v1\nkind: HTTPProxy\nmetadata: {name: p, namespace: default}\nspec:\n" + spec
}
