package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/legateproxy/legate/internal/certgen"
	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

// TestCAWithAPIServer runs the CA against a real kube-apiserver: tokens
// from TokenRequest are checked with TokenReview, and the root
// certificate is published into meshed namespaces.
func TestCAWithAPIServer(t *testing.T) {
	if !testutil.InNetns(t) {
		return
	}
	env, cfg := kubetest.StartAPIServer(t)
	client := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	mkNS := func(name string, labels map[string]string) {
		t.Helper()
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mkNS("shop", map[string]string{mesh.IstioInjectLabel: "enabled"})
	mkNS("plain", nil)
	for _, sa := range []string{"web", "db", "gone"} {
		if _, err := client.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	token := func(sa, aud string) string {
		t.Helper()
		exp := int64(600)
		tr, err := client.CoreV1().ServiceAccounts("shop").CreateToken(ctx, sa, &authnv1.TokenRequest{
			Spec: authnv1.TokenRequestSpec{Audiences: []string{aud}, ExpirationSeconds: &exp}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	webToken := token("web", mesh.TokenAudience)
	goneToken := token("gone", mesh.TokenAudience)
	if err := client.CoreV1().ServiceAccounts("shop").Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expired := forgeExpired(t, webToken, filepath.Join(env.ControlPlane.GetAPIServer().CertDir, "sa-signer.key"))

	// The CA, served as `legate controller` serves it.
	dir := t.TempDir()
	set, err := certgen.Generate(certgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Write(dir); err != nil {
		t.Fatal(err)
	}
	signer, err := LoadSigner(filepath.Join(dir, certgen.CAFile), filepath.Join(dir, certgen.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	var logs syncBuf
	srv, err := New(Options{Signer: signer, Auth: &KubeAuthenticator{Client: client}, MaxTTL: 48 * time.Hour,
		Log: slog.New(slog.NewTextHandler(&logs, nil)), Metrics: NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, l, filepath.Join(dir, certgen.ControllerCertFile), filepath.Join(dir, certgen.ControllerKeyFile))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(set.CA)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, ServerName: "legate-controller.legate-system.svc"})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cc := pb.NewIstioCertificateServiceClient(conn)

	web := mesh.SPIFFEID("", "shop", "web")
	for _, tc := range []struct {
		name     string
		token    string
		uris     []string
		validity int64
		want     codes.Code
		result   string
	}{
		{"issued", webToken, []string{web}, 3600, codes.OK, ResultSuccess},
		{"no SAN in the CSR: the token's identity", webToken, nil, 0, codes.OK, ResultSuccess},
		{"another identity in the CSR", webToken, []string{mesh.SPIFFEID("", "shop", "db")}, 0, codes.PermissionDenied, ResultPermissionDenied},
		{"another trust domain", webToken, []string{mesh.SPIFFEID("evil.example", "shop", "web")}, 0, codes.PermissionDenied, ResultPermissionDenied},
		{"token for another service account", token("db", mesh.TokenAudience), []string{web}, 0, codes.PermissionDenied, ResultPermissionDenied},
		{"token with another audience", token("web", "https://kubernetes.default.svc"), []string{web}, 0, codes.Unauthenticated, ResultUnauthenticated},
		{"garbage token", "not.a.jwt", []string{web}, 0, codes.Unauthenticated, ResultUnauthenticated},
		{"expired token", expired, []string{web}, 0, codes.Unauthenticated, ResultUnauthenticated},
		{"deleted service account", goneToken, []string{mesh.SPIFFEID("", "shop", "gone")}, 0, codes.Unauthenticated, ResultUnauthenticated},
		{"no token", "", []string{web}, 0, codes.Unauthenticated, ResultUnauthenticated},
		{"lifetime beyond the maximum", webToken, []string{web}, 49 * 3600, codes.InvalidArgument, ResultInvalidRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := promtest.ToFloat64(srv.o.Metrics.Requests.WithLabelValues(tc.result))
			_, csrPEM := testCSR(t, tc.uris...)
			cctx := ctx
			if tc.token != "" {
				cctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tc.token)
			}
			resp, err := cc.CreateCertificate(cctx, &pb.IstioCertificateRequest{Csr: csrPEM, ValidityDuration: tc.validity})
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v (%v), want %v", got, err, tc.want)
			}
			if after := promtest.ToFloat64(srv.o.Metrics.Requests.WithLabelValues(tc.result)); after != before+1 {
				t.Errorf("legate_ca_requests_total{result=%q} went %v → %v", tc.result, before, after)
			}
			if tc.want != codes.OK {
				if !strings.Contains(logs.String(), tc.result) {
					t.Errorf("refusal not logged:\n%s", logs.String())
				}
				return
			}
			chain := resp.GetCertChain()
			if len(chain) != 2 || chain[1] != string(set.CA) {
				t.Fatalf("chain: %d elements, CA last: %v", len(chain), len(chain) == 2 && chain[1] == string(set.CA))
			}
			b, _ := pem.Decode([]byte(chain[0]))
			leaf, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != web {
				t.Errorf("leaf names %v, want %s", leaf.URIs, web)
			}
			want := DefaultTTL
			if tc.validity > 0 {
				want = time.Duration(tc.validity) * time.Second
			}
			if life := leaf.NotAfter.Sub(leaf.NotBefore) - clockSkew; life < want-time.Minute || life > want+time.Minute {
				t.Errorf("lifetime %s, want %s", life, want)
			}
		})
	}

	// Root certificate ConfigMaps.
	pub := &RootCertPublisher{Client: client, RootPEM: signer.CertPEM, Log: slog.New(slog.NewTextHandler(&logs, nil))}
	if err := pub.Run(ctx); err != nil {
		t.Fatal(err)
	}
	root := func(ns string) (string, bool) {
		cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, mesh.RootCertConfigMap, metav1.GetOptions{})
		if err != nil {
			return "", false
		}
		return cm.Data[mesh.RootCertKey], true
	}
	hasRoot := func(ns string) func() bool {
		return func() bool { v, ok := root(ns); return ok && v == string(set.CA) }
	}
	testutil.Eventually(t, 20*time.Second, hasRoot("shop"), "no root certificate ConfigMap in the labelled namespace")
	if _, ok := root("plain"); ok {
		t.Error("root certificate written into a namespace without the injection label")
	}
	mkNS("late", nil)
	n, _ := client.CoreV1().Namespaces().Get(ctx, "late", metav1.GetOptions{})
	n.Labels = map[string]string{mesh.InjectLabel: "enabled"}
	if _, err := client.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, hasRoot("late"), "no root certificate after labelling a namespace")
	cm, _ := client.CoreV1().ConfigMaps("shop").Get(ctx, mesh.RootCertConfigMap, metav1.GetOptions{})
	cm.Data[mesh.RootCertKey] = "tampered"
	if _, err := client.CoreV1().ConfigMaps("shop").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, hasRoot("shop"), "an edited root certificate ConfigMap was not restored")
	if err := client.CoreV1().ConfigMaps("shop").Delete(ctx, mesh.RootCertConfigMap, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, hasRoot("shop"), "a deleted root certificate ConfigMap was not recreated")
}

// forgeExpired re-signs tok's claims, with an expiry in the past, with
// the API server's own service-account signing key: a genuine token
// that has expired (TokenRequest cannot issue one shorter than ten
// minutes).
func forgeExpired(t *testing.T, tok, keyFile string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token is not a JWT")
	}
	claimsJSON, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(claimsJSON, &claims); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour).Unix()
	claims["exp"], claims["iat"], claims["nbf"] = past, past-600, past-600
	body, _ := json.Marshal(claims)
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(keyPEM)
	var key any
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		key = k
	} else if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		key = k
	} else if key, err = x509.ParsePKCS8PrivateKey(b.Bytes); err != nil {
		t.Fatalf("service-account signing key %s: %v", keyFile, err)
	}
	signed := parts[0] + "." + base64.RawURLEncoding.EncodeToString(body)
	sum := sha256.Sum256([]byte(signed))
	var sig []byte
	switch k := key.(type) {
	case *rsa.PrivateKey: // RS256
		if sig, err = rsa.SignPKCS1v15(nil, k, crypto.SHA256, sum[:]); err != nil {
			t.Fatal(err)
		}
	case *ecdsa.PrivateKey: // ES256: r and s, 32 bytes each
		r, s, err := ecdsa.Sign(rand.Reader, k, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	default:
		t.Fatalf("service-account signing key %s: %T", keyFile, key)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

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
