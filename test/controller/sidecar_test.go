package controller

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/legateproxy/legate/internal/controller"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/controller/xdsgen"
	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/testutil"
	xdsserver "github.com/legateproxy/legate/internal/xds/server"
)

// The sidecar's workload: pod web-1 of namespace shop at 127.0.0.10, its
// application on 127.0.0.1:8080 (HTTP) and 127.0.0.1:9000 (TCP echo);
// Services web (HTTP, ClusterIP 192.0.2.10:80) and db (TCP, ClusterIP
// 192.0.2.20:5432) both select it. Not in the mesh: plaintext.
const sidecarObjects = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 192.0.2.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: 192.0.2.20
  selector: {app: web}
  ports: [{name: tcp-db, port: 5432, targetPort: 9000}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  serviceAccountName: web
  containers:
  - name: app
    ports: [{name: http, containerPort: 8080}, {name: db, containerPort: 9000}]
status: {phase: Running, podIP: 127.0.0.10}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-a, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [127.0.0.10], conditions: {ready: true}, targetRef: {kind: Pod, name: web-1, namespace: shop}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-a, namespace: shop, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: tcp-db, port: 9000}]
endpoints:
- {addresses: [127.0.0.10], conditions: {ready: true}, targetRef: {kind: Pod, name: web-1, namespace: shop}}
`

const sidecarNode = "sidecar~127.0.0.10~web-1.shop~shop.svc.cluster.local"

// TestSidecarConfig runs a Legate proxy as the sidecar of pod shop/web-1,
// in a private network namespace with Istio's interception done by real
// iptables rules (outbound to the Services' ClusterIPs → 15001, inbound
// to the pod IP → 15006). The controller builds the sidecar's own
// snapshot when its stream asks; the proxy accepts it (no NACK); HTTP
// and TCP go application → virtualOutbound → the Service port's listener
// → EDS endpoint (the pod) → virtualInbound's plaintext chain
// (PERMISSIVE) → the application; a new Service reaches the sidecar.
func TestSidecarConfig(t *testing.T) {
	if !testutil.InNetns(t) {
		return
	}
	x, proxy, ca, st := startSidecar(t, sidecarObjects, xdsgen.SidecarOptions{})
	// The controller built this sidecar's snapshot on its request.
	var dump string
	testutil.Eventually(t, 20*time.Second, func() bool {
		code, _, body := testutil.Get(t, testutil.Client(), "http://"+x.httpAddr+"/debug/xds?group="+sidecarNode)
		dump = body
		return code == 200 && strings.Contains(body, xdsgen.VirtualOutbound)
	}, "no sidecar snapshot in /debug/xds?group=%s", sidecarNode)
	for _, name := range []string{xdsgen.VirtualInbound, "0.0.0.0_80", "192.0.2.20_5432", "outbound|80||web.shop.svc.cluster.local",
		"outbound|5432||db.shop.svc.cluster.local", "inbound|8080||", "inbound|9000||", xdsgen.PassthroughCluster, xdsgen.BlackHoleCluster, xdsgen.InboundPassthroughCluster} {
		if !strings.Contains(dump, `"`+name+`"`) {
			t.Errorf("/debug/xds?group=%s lacks %s", sidecarNode, name)
		}
	}
	// The proxy took every listener and cluster.
	testutil.Eventually(t, 20*time.Second, func() bool {
		_, _, cd := testutil.Get(t, testutil.Client(), "http://"+proxy.Admin+"/config_dump")
		return strings.Contains(cd, `"`+xdsgen.VirtualInbound+`"`) && strings.Contains(cd, `"0.0.0.0_80"`) &&
			strings.Contains(cd, `"inbound|8080||"`) && strings.Contains(cd, `"outbound|80||web.shop.svc.cluster.local"`)
	}, "the proxy never had the sidecar's listeners and clusters")
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("the sidecar rejected its configuration: %v", n)
	}

	// HTTP through virtualOutbound and virtualInbound (plaintext).
	c := testutil.Client()
	testutil.Eventually(t, 20*time.Second, func() bool {
		code, _, body := testutil.Get(t, c, "http://192.0.2.10/", "Host", "web.shop")
		return code == 200 && strings.Contains(body, "app host=web.shop")
	}, "HTTP to web.shop through the sidecar never reached the application")
	code, hdr, body := testutil.Get(t, c, "http://192.0.2.10/", "Host", "web.shop.svc.cluster.local:80")
	if code != 200 || !strings.Contains(body, `xfcc=""`) {
		t.Errorf("HTTP by the Service's FQDN: %d %q (plaintext: no x-forwarded-client-cert)", code, body)
	}
	if hdr.Get("x-envoy-upstream-service-time") == "" {
		t.Errorf("response did not come through the proxy: %v", hdr)
	}
	// Inbound straight to the pod.
	if code, _, body := testutil.Get(t, c, "http://127.0.0.10:8080/"); code != 200 || !strings.Contains(body, "app host=127.0.0.10:8080") {
		t.Errorf("inbound HTTP: %d %q", code, body)
	}

	// Inbound mesh mTLS (PERMISSIVE's other chain): a workload of the
	// mesh calls the pod; the application sees its identity in
	// x-forwarded-client-cert.
	mc := meshClient(t, ca, mesh.SPIFFEID("", "shop", "client"))
	testutil.Eventually(t, 20*time.Second, func() bool {
		resp, err := mc.Get("https://127.0.0.10:8080/")
		if err != nil {
			t.Logf("mTLS inbound: %v", err)
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		return resp.StatusCode == 200
	}, "inbound mesh mTLS never reached the application")
	// Envoy's x-forwarded-client-cert: By (this sidecar's identity),
	// Hash, Subject, URI (the caller's identity).
	for _, want := range []string{`xfcc="By=` + mesh.SPIFFEID("", "shop", "web") + ";Hash=", ";URI=" + mesh.SPIFFEID("", "shop", "client")} {
		if !strings.Contains(body, want) {
			t.Errorf("the application saw %q; want x-forwarded-client-cert with %s", body, want)
		}
	}
	// Without a client certificate the mTLS chain refuses the handshake.
	nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", "127.0.0.10:8080",
		&tls.Config{InsecureSkipVerify: true, NextProtos: []string{mesh.ALPNMesh}})
	if err == nil {
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		_, err = nc.Read(make([]byte, 1))
		nc.Close()
	}
	if err == nil {
		t.Error("mTLS chain answered a client without a certificate")
	}

	// TCP through the Service's ClusterIP listener.
	conn, err := net.DialTimeout("tcp", "192.0.2.20:5432", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "ping\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if err != nil || line != "ping\n" {
		t.Errorf("TCP echo through the sidecar: %q, %v", line, err)
	}

	// A change reaches the sidecar: a new Service gets its cluster.
	st.Upsert(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "shop"},
		Spec: corev1.ServiceSpec{ClusterIP: "192.0.2.30", Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}})
	testutil.Eventually(t, 20*time.Second, func() bool {
		_, _, cd := testutil.Get(t, testutil.Client(), "http://"+proxy.Admin+"/config_dump")
		return strings.Contains(cd, `"outbound|80||api.shop.svc.cluster.local"`)
	}, "the new Service's cluster never reached the sidecar")
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}

}

// startSidecar intercepts traffic in the test's network namespace as
// `legate iptables` does (outbound to 192.0.2.0/24 → 15001, inbound to the
// pod IP 127.0.0.10 → 15006), starts the application (HTTP on
// 127.0.0.1:8080, TCP echo on 127.0.0.1:9000), the controller with
// sidecarObjects, the sidecar's SDS, and the proxy as pod shop/web-1's
// sidecar.
func startSidecar(t *testing.T, objects string, opt xdsgen.SidecarOptions) (*cp, *testutil.Proxy, *testutil.CA, *source.Store) {
	t.Helper()
	for _, cmd := range [][]string{
		{"ip", "addr", "add", "192.0.2.10/32", "dev", "lo"},
		{"ip", "addr", "add", "192.0.2.20/32", "dev", "lo"},
		{"iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "192.0.2.0/24", "-j", "REDIRECT", "--to-ports", "15001"},
		{"iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.10", "-j", "REDIRECT", "--to-ports", "15006"},
	} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Skipf("%s: %v: %s (the namespace cannot intercept traffic)", strings.Join(cmd, " "), err, out)
		}
	}
	// The application.
	hl, err := net.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app host=%s xfcc=%q\n", r.Host, r.Header.Get("x-forwarded-client-cert"))
	}), ReadHeaderTimeout: 5 * time.Second}
	go app.Serve(hl)
	t.Cleanup(func() { app.Close() })
	tl, err := net.Listen("tcp", "127.0.0.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "objs.yaml"), []byte(objects), 0o644); err != nil {
		t.Fatal(err)
	}
	objs, err := source.LoadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := source.NewStore()
	st.Replace(objs)
	x := startCP(t, st, cpOptions{sidecar: opt})

	h, p, _ := net.SplitHostPort(x.xdsAddr)
	var port int
	fmt.Sscan(p, &port)
	// The sidecar's SDS (what `legate sidecar` serves on its Unix
	// socket): the workload certificate and the mesh roots.
	ca := testutil.NewCA(t, "mesh-ca")
	sock := startSDS(t, ca, ca.Issue(t, "web", mesh.SPIFFEID("", "shop", "web")))
	proxy := testutil.StartProxy(t, controller.Bootstrap(controller.BootstrapOptions{
		XDSHost: h, XDSPort: port, AdminHost: "127.0.0.1", NodeID: sidecarNode, Cluster: "web.shop"})+sdsClusterYAML(sock), nil)

	return x, proxy, ca, st
}

// sdsClusterYAML is the bootstrap's sds-grpc cluster (mesh.SDSCluster),
// appended to the static clusters of controller.Bootstrap's output.
func sdsClusterYAML(sock string) string {
	return fmt.Sprintf(`  - name: %s
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
    load_assignment:
      cluster_name: %s
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              pipe: { path: %q }
`, mesh.SDSCluster, mesh.SDSCluster, sock)
}

// startSDS serves the secrets a sidecar's agent would (default: the
// workload's certificate; ROOTCA: the mesh roots) on a Unix socket.
func startSDS(t *testing.T, ca *testutil.CA, leaf *testutil.Leaf) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	sock := filepath.Join(t.TempDir(), "sds.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := xdsserver.New(testLogger(t), nil)
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	err = s.Set(ctx, sidecarNode, map[resourcev3.Type][]types.Resource{resourcev3.SecretType: {
		&tlsv3.Secret{Name: mesh.SecretWorkload, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(leaf.CertPEM), PrivateKey: inline(leaf.KeyPEM)}}},
		&tlsv3.Secret{Name: mesh.SecretRoots, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.CertPEM)}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ctx, l)
	return sock
}

// meshClient is an HTTP client that speaks mesh mTLS (ALPN
// mesh.ALPNMesh) with a workload certificate for id.
func meshClient(t *testing.T, ca *testutil.CA, id string) *http.Client {
	client := ca.Issue(t, "client", id)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			// The sidecar's certificate names a SPIFFE id, not a host:
			// the test checks the server side only.
			d := &tls.Dialer{Config: &tls.Config{Certificates: []tls.Certificate{client.TLS},
				NextProtos: []string{mesh.ALPNMesh}, InsecureSkipVerify: true}}
			return d.DialContext(ctx, network, addr)
		}}}
}

// TestSidecarStrictRegistryOnly: under STRICT the pod refuses plaintext
// and takes mesh mTLS; under REGISTRY_ONLY a Host no Service names gets
// Istio's block_all 502.
func TestSidecarStrictRegistryOnly(t *testing.T) {
	if !testutil.InNetns(t) {
		return
	}
	x, _, ca, _ := startSidecar(t, sidecarObjects, xdsgen.SidecarOptions{MTLS: xdsgen.MTLSStrict, OutboundPolicy: xdsgen.OutboundRegistryOnly})
	mc := meshClient(t, ca, mesh.SPIFFEID("", "shop", "client"))
	testutil.Eventually(t, 20*time.Second, func() bool {
		resp, err := mc.Get("https://127.0.0.10:8080/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, "inbound mesh mTLS never reached the application")
	c := testutil.Client()
	c.Timeout = 5 * time.Second
	if resp, err := c.Get("http://127.0.0.10:8080/"); err == nil {
		resp.Body.Close()
		t.Errorf("STRICT: plaintext inbound answered %d", resp.StatusCode)
	}
	code, _, _ := testutil.Get(t, c, "http://192.0.2.10/", "Host", "unknown.example")
	if code != 502 {
		t.Errorf("REGISTRY_ONLY: unknown Host got %d, want 502 (block_all)", code)
	}
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}
}

// TestSidecarMeshMTLS: with its pod in the mesh (injected), the sidecar
// calls its Service over mesh mTLS — the cluster's TLS socket with the
// SDS certificate, ALPN istio, the Service's SPIFFE id checked — and its
// own virtualInbound's mTLS chain takes it: the application sees both
// identities in x-forwarded-client-cert.
func TestSidecarMeshMTLS(t *testing.T) {
	if !testutil.InNetns(t) {
		return
	}
	objs := strings.Replace(sidecarObjects, "metadata: {name: web-1, namespace: shop, labels: {app: web}}",
		"metadata: {name: web-1, namespace: shop, labels: {app: web}, annotations: {sidecar.legate.io/status: '{}'}}", 1)
	x, _, _, _ := startSidecar(t, objs, xdsgen.SidecarOptions{MTLS: xdsgen.MTLSStrict})
	c := testutil.Client()
	var body string
	testutil.Eventually(t, 20*time.Second, func() bool {
		var code int
		code, _, body = testutil.Get(t, c, "http://192.0.2.10/", "Host", "web.shop")
		return code == 200
	}, "HTTP to web.shop over mesh mTLS never reached the application")
	web := mesh.SPIFFEID("", "shop", "web")
	if want := `xfcc="By=` + web + ";Hash="; !strings.Contains(body, want) || !strings.Contains(body, ";URI="+web) {
		t.Errorf("the application saw %q; want x-forwarded-client-cert By=%s … URI=%s", body, web, web)
	}
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}
}
