// The configuration file's model settings: disablePermitInsecure,
// enableExternalNameService, default TLS versions, dns-lookup-family and
// the default header policies.

package model

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/testutil"
)

const defaultsObjects = `apiVersion: v1
kind: Service
metadata: {name: s1, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec: {type: ExternalName, externalName: api.example.net, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: local, namespace: default}
spec: {type: ExternalName, externalName: localhost, ports: [{name: http, port: 80}]}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: web, namespace: default}
spec:
  virtualhost: {fqdn: a.example.com, tls: {secretName: tls}}
  routes:
  - conditions: [{prefix: /insecure}]
    permitInsecure: true
    services: [{name: s1, port: 80, requestHeadersPolicy: {set: [{name: X-Env, value: own}]}}]
  - services: [{name: s1, port: 80}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: external, namespace: default}
spec:
  virtualhost: {fqdn: ext.example.com}
  routes: [{services: [{name: ext, port: 80}]}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: local, namespace: default}
spec:
  virtualhost: {fqdn: local.example.com}
  routes: [{services: [{name: local, port: 80}]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ing, namespace: default}
spec:
  rules:
  - host: i.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: s1, port: {number: 80}}}}]}
`

func TestConfigDefaults(t *testing.T) {
	leaf := testutil.NewCA(t, "model-ca").Issue(t, "a.example.com", "a.example.com")
	b64 := func(s []byte) string { return base64.StdEncoding.EncodeToString(s) }
	secret := fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: tls, namespace: default}\ntype: kubernetes.io/tls\ndata: {tls.crt: %s, tls.key: %s}\n---\n",
		b64(leaf.CertPEM), b64(leaf.KeyPEM))
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "objs.yaml"), []byte(secret+defaultsObjects), 0o644)
	objs, err := source.LoadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	redirects := func(m *Model) map[string]bool {
		out := map[string]bool{}
		for _, r := range m.Insecure["a.example.com"].Routes {
			out[r.Path.Value] = r.HTTPSRedirect
		}
		return out
	}
	proxy := func(m *Model, name string) *ProxyStatus {
		return m.Proxies[types.NamespacedName{Namespace: "default", Name: name}]
	}

	t.Run("Contour's defaults", func(t *testing.T) {
		m := Build(objs, Options{})
		if got := redirects(m); !reflect.DeepEqual(got, map[string]bool{"/insecure": false, "/": true}) {
			t.Errorf("HTTPS redirects %v: permitInsecure must be honoured", got)
		}
		st := proxy(m, "external")
		want := "Spec.Routes unresolved service reference: default/ext is an ExternalName service, these are not currently enabled. See the config.enableExternalNameService config file setting"
		if st == nil || len(st.Errors) == 0 || st.Errors[0].Reason != "ServiceUnresolvedReference" || st.Errors[0].Message != want {
			t.Errorf("ExternalName status %+v, want %q", st, want)
		}
		if vh := m.Secure["a.example.com"]; vh == nil || vh.MinVersion != "1.2" || vh.MaxVersion != "1.3" {
			t.Errorf("TLS versions %+v", vh)
		}
	})

	t.Run("configured", func(t *testing.T) {
		m := Build(objs, Options{Config: ConfigDefaults{
			DisablePermitInsecure: true, EnableExternalNameService: true, MinTLSVersion: "1.3", MaxTLSVersion: "1.3", DNSLookupFamily: "v4",
			RequestHeaders:   &HeadersPolicy{Set: []KV{{Name: "X-Env", Value: "prod"}, {Name: "X-Team", Value: "web"}}, Remove: []string{"X-Debug"}},
			HeadersToIngress: true,
		}})
		if got := redirects(m); !reflect.DeepEqual(got, map[string]bool{"/insecure": true, "/": true}) {
			t.Errorf("HTTPS redirects %v: disablePermitInsecure redirects every route", got)
		}
		if st := proxy(m, "external"); st == nil || len(st.Errors) != 0 {
			t.Errorf("ExternalName enabled: %+v", st)
		}
		var ext *Cluster
		for _, c := range m.Clusters {
			if c.ExternalName == "api.example.net" {
				ext = c
			}
		}
		if ext == nil || ext.DNSLookupFamily != "v4" {
			t.Errorf("ExternalName cluster %+v", ext)
		}
		if st := proxy(m, "local"); st == nil || len(st.Errors) == 0 || !strings.Contains(st.Errors[0].Message, "default/local is an ExternalName service that points to localhost, this is not allowed") {
			t.Errorf("localhost ExternalName: %+v", st)
		}
		if vh := m.Secure["a.example.com"]; vh == nil || vh.MinVersion != "1.3" || vh.MaxVersion != "1.3" {
			t.Errorf("TLS versions %+v", vh)
		}
		// The service's own X-Env wins; the defaults fill in the rest.
		byPath := map[string]*HeadersPolicy{}
		for _, r := range m.Secure["a.example.com"].Routes {
			byPath[r.Path.Value] = r.Clusters[0].RequestHeaders
		}
		if got := byPath["/insecure"]; got == nil || !reflect.DeepEqual(got.Set, []KV{{"X-Env", "own"}, {"X-Team", "web"}}) || !reflect.DeepEqual(got.Remove, []string{"X-Debug"}) {
			t.Errorf("merged headers %+v", got)
		}
		if got := byPath["/"]; got == nil || len(got.Set) != 2 || got.Set[0].Value != "prod" {
			t.Errorf("default headers %+v", got)
		}
		if r := m.Insecure["i.example.com"].Routes[0]; r.Clusters[0].RequestHeaders == nil || len(r.Clusters[0].RequestHeaders.Set) != 2 {
			t.Errorf("Ingress with applyToIngress: %+v", r.Clusters[0])
		}
	})
}

// TestServiceBreakers: each annotation a Service sets wins over the
// configuration file's default of the same threshold; unparsable or zero
// values fall back to it, as Contour's serviceCircuitBreakerPolicy.
func TestServiceBreakers(t *testing.T) {
	defaults := &CircuitBreakers{MaxConnections: 100, MaxRetries: 5, PerHostMaxConnections: 3}
	for _, tc := range []struct {
		name     string
		ann      map[string]string
		defaults *CircuitBreakers
		want     CircuitBreakers
	}{
		{"none", nil, nil, CircuitBreakers{}},
		{"defaults only", nil, defaults, *defaults},
		{"annotations over defaults", map[string]string{"projectcontour.io/max-connections": "7", "projectcontour.io/max-requests": "9"}, defaults,
			CircuitBreakers{MaxConnections: 7, MaxRequests: 9, MaxRetries: 5, PerHostMaxConnections: 3}},
		{"unparsable and zero fall back", map[string]string{"projectcontour.io/max-connections": "x", "projectcontour.io/per-host-max-connections": "0", "projectcontour.io/max-pending-requests": "4294967296"}, defaults, *defaults},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Annotations: tc.ann}}
			if got := serviceBreakers(svc, tc.defaults); *got != tc.want {
				t.Errorf("got %+v, want %+v", *got, tc.want)
			}
		})
	}
}
