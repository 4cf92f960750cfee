package controller

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/testutil"
)

func services(names ...string) string {
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: %s, namespace: default}
spec:
  ports:
  - {name: http, port: 80, targetPort: 8080}
`, n)
	}
	return b.String()
}

func slice(svc string, addrs ...string) string {
	var eps strings.Builder
	port := "0"
	for _, a := range addrs {
		h, p, _ := net.SplitHostPort(a)
		port = p
		fmt.Fprintf(&eps, "- addresses: [%q]\n  conditions: {ready: true}\n", h)
	}
	return fmt.Sprintf(`---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %s-abc
  namespace: default
  labels: {kubernetes.io/service-name: %s}
addressType: IPv4
ports:
- {name: http, port: %s, protocol: TCP}
endpoints:
%s`, svc, svc, port, eps.String())
}

func get(t *testing.T, url, host string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = host
	resp, err := testutil.Client().Do(req)
	if err != nil {
		return 0, err.Error(), nil
	}
	defer resp.Body.Close()
	b := new(strings.Builder)
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String(), resp.Header
}

// TestManifestsEndToEnd runs controller (manifests folder) + legate proxy
// + backends: requests follow HTTPProxy edits, endpoint changes and a
// rotated TLS Secret, with no Kubernetes at all.
func TestManifestsEndToEnd(t *testing.T) {
	a := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	b := testutil.StartUpstream(t, testutil.EchoHandler("b"))
	c := testutil.StartUpstream(t, testutil.EchoHandler("c"))
	ca := testutil.NewCA(t, "e2e-ca")
	cert1 := ca.Issue(t, "secure.example.com", "secure.example.com")

	dir := t.TempDir()
	writeFile(t, dir, "services.yaml", services("svc-a", "svc-b"))
	writeFile(t, dir, "endpoints.yaml", slice("svc-a", a.Addr)+slice("svc-b", b.Addr))
	writeFile(t, dir, "proxy.yaml", `
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: app, namespace: default}
spec:
  virtualhost: {fqdn: app.example.com}
  routes:
  - conditions: [{prefix: /b}]
    services: [{name: svc-b, port: 80}]
    requestHeadersPolicy:
      set: [{name: X-Added, value: by-legate}]
  - services: [{name: svc-a, port: 80}]
`)
	tlsSecret := func(l *testutil.Leaf) string {
		return fmt.Sprintf(`
apiVersion: v1
kind: Secret
metadata: {name: secure-tls, namespace: default}
type: kubernetes.io/tls
data:
  tls.crt: %s
  tls.key: %s
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: secure, namespace: default}
spec:
  virtualhost:
    fqdn: secure.example.com
    tls: {secretName: secure-tls}
  routes:
  - services: [{name: svc-a, port: 80}]
`, base64.StdEncoding.EncodeToString(l.CertPEM), base64.StdEncoding.EncodeToString(l.KeyPEM))
	}
	writeFile(t, dir, "secure.yaml", tlsSecret(cert1))

	x, p, base := startManifests(t, dir)

	// Routes by prefix, header policy applied.
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, body, _ := get(t, base+"/b/x", "app.example.com")
		return code == 200 && strings.Contains(body, "upstream=b")
	}, "route /b never reached svc-b")
	_, body, _ := get(t, base+"/b/x", "app.example.com")
	if !strings.Contains(body, "header:x-added=by-legate") {
		t.Errorf("requestHeadersPolicy not applied:\n%s", body)
	}
	if code, body, _ := get(t, base+"/", "app.example.com"); code != 200 || !strings.Contains(body, "upstream=a") {
		t.Errorf("GET / = %d %q, want svc-a", code, body)
	}
	if code, _, _ := get(t, base+"/", "unknown.example.com"); code != 404 {
		t.Errorf("unknown host = %d, want 404", code)
	}
	// TLS vhost: HTTP redirects to HTTPS; HTTPS serves the Secret's certificate.
	if code, _, h := get(t, base+"/", "secure.example.com"); code != 301 || !strings.HasPrefix(h.Get("Location"), "https://secure.example.com") {
		t.Errorf("insecure request to a TLS vhost = %d Location %q, want a 301 to https", code, h.Get("Location"))
	}
	serial := func() string {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", x.httpsPort), &tls.Config{ServerName: "secure.example.com", RootCAs: ca.Pool})
		if err != nil {
			return "error: " + err.Error()
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return serial() == cert1.Cert.SerialNumber.String() }, "HTTPS listener never served the Secret's certificate: %s", serial())
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", x.httpsPort))
		}}}
	resp, err := hc.Get("https://secure.example.com/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("x-upstream") != "a" {
		t.Errorf("HTTPS GET = %d from %q", resp.StatusCode, resp.Header.Get("x-upstream"))
	}

	// Edit the HTTPProxy: /b now goes to svc-a; EDS-only change next.
	writeFile(t, dir, "proxy.yaml", `
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: app, namespace: default}
spec:
  virtualhost: {fqdn: app.example.com}
  routes:
  - conditions: [{prefix: /b}]
    directResponsePolicy: {statusCode: 418, body: teapot}
  - services: [{name: svc-a, port: 80}]
`)
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, body, _ := get(t, base+"/b", "app.example.com")
		return code == 418 && body == "teapot"
	}, "HTTPProxy edit never applied")

	versions := x.xds.Versions("proxy")
	writeFile(t, dir, "endpoints.yaml", slice("svc-a", c.Addr)+slice("svc-b", b.Addr))
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, body, _ := get(t, base+"/", "app.example.com")
		return strings.Contains(body, "upstream=c")
	}, "endpoint change never applied")
	after := x.xds.Versions("proxy")
	for typ, v := range versions {
		if strings.HasSuffix(string(typ), "ClusterLoadAssignment") {
			if after[typ] == v {
				t.Errorf("EDS version unchanged after an endpoint change")
			}
			continue
		}
		if after[typ] != v {
			t.Errorf("%s version changed on an endpoint-only change (%s → %s)", typ, v, after[typ])
		}
	}

	// Rotate the certificate in the Secret: new handshakes get it.
	cert2 := ca.Issue(t, "secure.example.com", "secure.example.com")
	writeFile(t, dir, "secure.yaml", tlsSecret(cert2))
	testutil.Eventually(t, 10*time.Second, func() bool { return serial() == cert2.Cert.SerialNumber.String() }, "rotated certificate never served")

	// A broken manifest keeps the last good objects.
	writeFile(t, dir, "broken.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: [oops\n")
	time.Sleep(400 * time.Millisecond)
	if code, body, _ := get(t, base+"/", "app.example.com"); code != 200 || !strings.Contains(body, "upstream=c") {
		t.Errorf("after a broken manifest: %d %q, want the last good config", code, body)
	}
	_ = p
}

// TestDeltaXDS: a proxy on incremental xDS (DELTA_GRPC) follows the
// controller as a state-of-the-world one does, including a removal.
func TestDeltaXDS(t *testing.T) {
	a := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	dir := t.TempDir()
	writeFile(t, dir, "objs.yaml", services("svc-a")+slice("svc-a", a.Addr)+`---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: one, namespace: default}
spec:
  virtualhost: {fqdn: one.example.com}
  routes: [{services: [{name: svc-a, port: 80}]}]
`)
	st := source.NewStore()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := source.WatchManifests(ctx, dir, st, testLogger(t), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	x := startCP(t, st, cpOptions{})
	startProxyWith(t, x, true)
	base := fmt.Sprintf("http://127.0.0.1:%d", x.httpPort)
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, body, _ := get(t, base+"/", "one.example.com")
		return code == 200 && strings.Contains(body, "upstream=a")
	}, "delta proxy never routed one.example.com")
	writeFile(t, dir, "objs.yaml", services("svc-a")+slice("svc-a", a.Addr)+`---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: two, namespace: default}
spec:
  virtualhost: {fqdn: two.example.com}
  routes: [{services: [{name: svc-a, port: 80}]}]
`)
	testutil.Eventually(t, 10*time.Second, func() bool {
		c1, _, _ := get(t, base+"/", "one.example.com")
		c2, _, _ := get(t, base+"/", "two.example.com")
		return c1 == 404 && c2 == 200
	}, "delta proxy never followed the HTTPProxy replacement")
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Errorf("NACKs: %v", n)
	}
}
