package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/legateproxy/legate/internal/certgen"
	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/mesh/ca"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// world is a real kube-apiserver with a ServiceAccount, its token in a
// file, and the controller's CA serving on loopback.
type world struct {
	set                 *certgen.Set
	signer              *ca.Signer
	dir                 string
	rootFile, tokenFile string
	caAddr              string
	stopCA              context.CancelFunc
}

func startWorld(t *testing.T) *world {
	t.Helper()
	_, cfg := kubetest.StartAPIServer(t)
	client := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	exp := int64(3600)
	tr, err := client.CoreV1().ServiceAccounts("shop").CreateToken(ctx, "web", &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{mesh.TokenAudience}, ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{dir: t.TempDir()}
	if w.set, err = certgen.Generate(certgen.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := w.set.Write(filepath.Join(w.dir, "ca")); err != nil {
		t.Fatal(err)
	}
	if w.signer, err = ca.NewSigner(w.set.CA, w.set.CAKey); err != nil {
		t.Fatal(err)
	}
	w.rootFile = filepath.Join(w.dir, "root-cert.pem")
	w.tokenFile = filepath.Join(w.dir, "token")
	os.WriteFile(w.rootFile, w.set.CA, 0o644)
	os.WriteFile(w.tokenFile, []byte(tr.Status.Token), 0o600)
	srv, err := ca.New(ca.Options{Signer: w.signer, Auth: &ca.KubeAuthenticator{Client: client}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	w.caAddr, w.stopCA = l.Addr().String(), cancel
	t.Cleanup(cancel)
	go srv.Serve(cctx, l, filepath.Join(w.dir, "ca", certgen.ControllerCertFile), filepath.Join(w.dir, "ca", certgen.ControllerKeyFile))
	return w
}

// TestAgent runs the agent against the real CA and a real API server:
// rotation, SDS to a real Legate proxy, and a CA that goes away.
func TestAgent(t *testing.T) {
	if !testutil.InNetns(t) {
		return
	}
	w := startWorld(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var logs syncBuf
	reg := prometheus.NewRegistry()
	state := filepath.Join(w.dir, "state")
	a, err := New(Options{
		CAAddress: w.caAddr, CAServerName: "legate-controller.legate-system.svc", RootCertFile: w.rootFile, TokenFile: w.tokenFile,
		Namespace: "shop", ServiceAccount: "web", TTL: 6 * time.Second, StateDir: state,
		Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Registry: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if err := a.Start(sctx); err != nil {
		t.Fatal(err)
	}
	first := a.Current()
	if first.Leaf.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Fatalf("identity %v", first.Leaf.URIs)
	}
	if err := a.Ready(time.Now()); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, state, first)

	// SDS on a real Unix socket, to a real proxy whose listener takes
	// its certificate and roots from it.
	sock := filepath.Join(w.dir, "sds", "socket")
	sl, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	sds := NewSDS(slog.New(slog.DiscardHandler))
	a.Subscribe(sds.Update)
	go sds.Serve(ctx, sl)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("SDS socket mode: %v %v", fi, err)
	}
	p := testutil.StartProxy(t, proxyYAML, map[string]string{"Socket": sock})
	client := w.peerCert(t, "db")
	var served *x509.Certificate
	testutil.Eventually(t, 20*time.Second, func() bool {
		served, err = mtlsGet(p.Addr("mtls"), client, w.signer.Cert)
		return err == nil
	}, "mTLS through the SDS-fed listener failed: %v", err)
	if served.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 && served.SerialNumber.Cmp(a.Current().Leaf.SerialNumber) != 0 {
		t.Fatalf("the listener serves %s, not the agent's certificate", served.SerialNumber.Text(16))
	}
	if _, err := mtlsGet(p.Addr("mtls"), nil, w.signer.Cert); err == nil {
		t.Fatal("a client without a certificate got through (ROOTCA from SDS should require one)")
	}
	other := testutil.NewCA(t, "other")
	foreign := other.Issue(t, "x", "spiffe://cluster.local/ns/shop/sa/db")
	if _, err := mtlsGet(p.Addr("mtls"), &foreign.TLS, w.signer.Cert); err == nil {
		t.Fatal("a client certificate from another CA got through")
	}

	// Rotation at half the lifetime: a new certificate, new files, and
	// SDS pushes it to the listener.
	go a.Run(ctx)
	testutil.Eventually(t, 30*time.Second, func() bool {
		return a.Current().Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0
	}, "the certificate was not rotated")
	rotated := a.Current()
	checkFiles(t, state, rotated)
	testutil.Eventually(t, 20*time.Second, func() bool {
		c, err := mtlsGet(p.Addr("mtls"), client, w.signer.Cert)
		return err == nil && c.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0
	}, "the listener still serves the first certificate after rotation")

	// The CA goes away: the current certificate stays, failures are
	// counted and logged, and at expiry readiness fails.
	w.stopCA()
	errs := func() float64 { return promtest.ToFloat64(a.requests.WithLabelValues("error")) }
	testutil.Eventually(t, 30*time.Second, func() bool { return errs() > 0 }, "no failed renewal counted")
	testutil.Eventually(t, 30*time.Second, func() bool { return strings.Contains(logs.String(), "keeping the current one") }, "renewal failure not logged")
	if a.Current() == nil {
		t.Fatal("the certificate was dropped when the CA went away")
	}
	last := a.Current()
	testutil.Eventually(t, 30*time.Second, func() bool { return a.Ready(time.Now()) != nil }, "readiness did not fail after the certificate expired")
	if a.Current() != last {
		t.Fatal("a certificate was installed while the CA was down")
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return strings.Contains(logs.String(), "failing readiness") }, "expiry not logged")
	if got := promtest.ToFloat64(a.requests.WithLabelValues("success")); got < 2 {
		t.Errorf("successful requests counted: %v", got)
	}
	if n, _ := promtest.GatherAndCount(reg, "legate_sidecar_certificate_expiry_timestamp_seconds"); n != 1 {
		t.Errorf("expiry gauge not registered")
	}

	// The health endpoint the readiness listener routes to.
	hl, _ := net.Listen("tcp", "127.0.0.1:0")
	h := &Health{Agent: a, AdminURL: "http://" + p.Admin}
	go h.Serve(ctx, hl)
	resp, err := http.Get("http://" + hl.Addr().String() + "/healthz/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/healthz/ready with an expired certificate: %d", resp.StatusCode)
	}
}

func checkFiles(t *testing.T, dir string, c *Cert) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CertChainFile), filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatalf("state files: %v", err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if leaf.SerialNumber.Cmp(c.Leaf.SerialNumber) != 0 {
		t.Fatalf("state files hold %s, want %s", leaf.SerialNumber.Text(16), c.Leaf.SerialNumber.Text(16))
	}
	if fi, _ := os.Stat(filepath.Join(dir, KeyFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", fi.Mode())
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory mode %v", fi.Mode())
	}
}

// peerCert is another workload's certificate from the same CA.
func (w *world) peerCert(t *testing.T, sa string) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, _ := url.Parse(mesh.SPIFFEID("", "shop", sa))
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id}}, key)
	csr, _ := x509.ParseCertificateRequest(der)
	certPEM, err := w.signer.SignCSR(csr, id.String(), time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	c, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}))
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// mtlsGet does one HTTP/1.1 request over mTLS and returns the server's
// certificate, verified against root as a SPIFFE peer (no host name).
func mtlsGet(addr string, cert *tls.Certificate, root *x509.Certificate) (*x509.Certificate, error) {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	cfg := &tls.Config{
		// Workload certificates carry a SPIFFE URI, no host name: the
		// chain is verified by hand below.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			c, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			_, err = c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		},
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	peer := conn.ConnectionState().PeerCertificates
	if len(peer) == 0 {
		return nil, errors.New("no server certificate")
	}
	return peer[0], nil
}

// proxyYAML is a proxy whose mTLS listener gets its certificate
// (default) and the roots that verify clients (ROOTCA) over SDS from
// the agent's socket, as a sidecar's inbound listener does.
const proxyYAML = `
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }
static_resources:
  clusters:
  - name: sds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: sds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { pipe: { path: "{{.Socket}}" } } }
  listeners:
  - name: mtls
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - name: default
              sds_config:
                resource_api_version: V3
                api_config_source: { api_type: GRPC, transport_api_version: V3, grpc_services: [ { envoy_grpc: { cluster_name: sds-grpc } } ] }
            validation_context_sds_secret_config:
              name: ROOTCA
              sds_config:
                resource_api_version: V3
                api_config_source: { api_type: GRPC, transport_api_version: V3, grpc_services: [ { envoy_grpc: { cluster_name: sds-grpc } } ] }
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: mtls
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
          route_config:
            virtual_hosts:
            - name: web
              domains: ["*"]
              routes:
              - match: { prefix: / }
                direct_response: { status: 200, body: { inline_string: mesh } }
`
