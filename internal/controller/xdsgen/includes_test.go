// HTTPProxy includes (delegation).

package xdsgen

import (
	"strings"
	"testing"
)

// TestIncludes covers delegation: conditions are prepended, cycles and
// missing includes are reported, unreachable proxies are orphaned.
func TestIncludes(t *testing.T) {
	out, m := render(t, `
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: root, namespace: default}
spec:
  virtualhost: {fqdn: a.example.com}
  includes:
  - {name: blog, namespace: marketing, conditions: [{prefix: /blog}]}
  - {name: missing, conditions: [{prefix: /m}]}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: blog, namespace: marketing}
spec:
  routes:
  - conditions: [{prefix: /info}]
    services: [{name: s1, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: s1, namespace: marketing}
spec: {ports: [{port: 80}]}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: a, namespace: default}
spec:
  includes: [{name: b}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: b, namespace: default}
spec:
  includes: [{name: a}]
`)
	if !strings.Contains(out, `"match":{"prefix":"/m"},"directResponse":{"status":502}`) {
		t.Errorf("a missing include should answer 502 on its paths:\n%s", out)
	}
	if !strings.Contains(out, `"prefix":"/blog/info"`) || !strings.Contains(out, `"cluster":"marketing/s1/80/da39a3ee5e"`) {
		t.Errorf("included route missing:\n%s", out)
	}
	want := map[string]string{
		"default/root":   "include default/missing not found",
		"marketing/blog": "Valid HTTPProxy",
		"default/a":      "not part of a delegation chain",
		"default/b":      "not part of a delegation chain",
	}
	for k, st := range m.Proxies {
		if w, ok := want[k.String()]; ok && !strings.Contains(st.Description(), w) {
			t.Errorf("%s: %s %q, want %q", k, st.Current(), st.Description(), w)
		}
	}
}
