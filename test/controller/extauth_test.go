package controller

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	contourv1alpha1 "github.com/legateproxy/legate/api/projectcontour/v1alpha1"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/controller/status"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

// checkServer is an authorization server on Envoy's v3 protos: it allows
// requests with "x-allow: yes" (adding x-auth-user for the upstream) and
// denies the others with 401, and records what each check carried.
type checkServer struct {
	authv3.UnimplementedAuthorizationServer
	mu     sync.Mutex
	checks []*authv3.AttributeContext
}

func (s *checkServer) Check(_ context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	s.mu.Lock()
	s.checks = append(s.checks, r.GetAttributes())
	s.mu.Unlock()
	h := r.GetAttributes().GetRequest().GetHttp()
	if h.GetHeaders()["x-allow"] != "yes" {
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized}, Body: "denied by the test server"}}}, nil
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-auth-user", Value: "alice"}}}}}}, nil
}

// last returns the attributes of the latest check and how many were made.
func (s *checkServer) last() (*authv3.AttributeContext, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.checks) == 0 {
		return nil, 0
	}
	return s.checks[len(s.checks)-1], len(s.checks)
}

// TestHTTPProxyExtAuth: an ExtensionService over TLS with validation and
// a TLS virtual host's authorization check requests through Legate's
// proxy with a real gRPC authorization server on loopback — allowed and
// denied by a header, the virtual host's and a route's context
// extensions, the request body, no response timeout (infinity), a route
// with authPolicy.disabled that bypasses it — and failOpen against a
// server that is not there; the
// ExtensionServices' and HTTPProxies' statuses are Contour's.
func TestHTTPProxyExtAuth(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	ca := testutil.NewCA(t, "extauth-e2e-ca")
	// The authorization server's certificate names the subject the
	// ExtensionService validates.
	authLeaf := ca.Issue(t, "authz.auth.svc", "authz.auth.svc")
	srv := &checkServer{}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{authLeaf.TLS}})))
	authv3.RegisterAuthorizationServer(gs, srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	// A port with nothing behind it: a stopped authorization server.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	var secrets strings.Builder
	for _, h := range []string{"auth", "open", "closed"} {
		leaf := ca.Issue(t, h+".example.com", h+".example.com")
		fmt.Fprintf(&secrets, `---
apiVersion: v1
kind: Secret
metadata: {name: %s-tls, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
`, h, b64(leaf.CertPEM), b64(leaf.KeyPEM))
	}
	dir := t.TempDir()
	writeFile(t, dir, "objs.yaml", services("svc-a", "authz", "authz-dead")+slice("svc-a", up.Addr)+slice("authz", l.Addr().String())+slice("authz-dead", deadAddr)+secrets.String()+fmt.Sprintf(`---
apiVersion: v1
kind: Secret
metadata: {name: authz-ca, namespace: default}
type: Opaque
data: {ca.crt: %s}
---
apiVersion: projectcontour.io/v1alpha1
kind: ExtensionService
metadata: {name: authz, namespace: default}
spec:
  services: [{name: authz, port: 80}]
  validation: {caSecret: authz-ca, subjectName: authz.auth.svc}
  timeoutPolicy: {response: 2s}
---
apiVersion: projectcontour.io/v1alpha1
kind: ExtensionService
metadata: {name: dead, namespace: default}
spec:
  services: [{name: authz-dead, port: 80}]
  protocol: h2c
---
apiVersion: projectcontour.io/v1alpha1
kind: ExtensionService
metadata: {name: broken, namespace: default}
spec:
  services: [{name: no-such-service, port: 80}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: auth, namespace: default}
spec:
  virtualhost:
    fqdn: auth.example.com
    tls: {secretName: auth-tls}
    authorization:
      extensionRef: {name: authz}
      responseTimeout: infinity
      withRequestBody: {maxRequestBytes: 4096, allowPartialMessage: true}
      authPolicy: {context: {realm: main, scope: vhost}}
  routes:
  - conditions: [{prefix: /public}]
    authPolicy: {disabled: true}
    services: [{name: svc-a, port: 80}]
  - conditions: [{prefix: /ctx}]
    authPolicy: {context: {scope: route}}
    services: [{name: svc-a, port: 80}]
  - services: [{name: svc-a, port: 80}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: open, namespace: default}
spec:
  virtualhost:
    fqdn: open.example.com
    tls: {secretName: open-tls}
    authorization: {extensionRef: {name: dead}, failOpen: true, responseTimeout: 1s}
  routes: [{services: [{name: svc-a, port: 80}]}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: closed, namespace: default}
spec:
  virtualhost:
    fqdn: closed.example.com
    tls: {secretName: closed-tls}
    authorization: {extensionRef: {name: dead}, responseTimeout: 1s}
  routes: [{services: [{name: svc-a, port: 80}]}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: plain, namespace: default}
spec:
  virtualhost:
    fqdn: plain.example.com
    authorization: {extensionRef: {name: authz}}
  routes: [{services: [{name: svc-a, port: 80}]}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: missing, namespace: default}
spec:
  virtualhost:
    fqdn: missing.example.com
    tls: {secretName: auth-tls}
    authorization: {extensionRef: {name: broken}}
  routes: [{services: [{name: svc-a, port: 80}]}]
`, b64(ca.CertPEM)))
	st := source.NewStore()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := source.WatchManifests(ctx, dir, st, testLogger(t), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	x := startCP(t, st, cpOptions{})
	startProxy(t, x)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", x.httpsPort))
		}}}
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, _, _ := do(t, hc, "GET", "https://auth.example.com/", "auth.example.com", "x-allow", "yes")
		return code == 200
	}, "proxy never authorized a request to auth.example.com")
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}

	t.Run("statuses", func(t *testing.T) {
		m := x.c.Model()
		for name, valid := range map[string]bool{"authz": true, "dead": true, "broken": false} {
			es := m.Extensions[types.NamespacedName{Namespace: "default", Name: name}]
			if es == nil || es.Valid() != valid {
				t.Errorf("ExtensionService %s = %+v, want valid=%v", name, es, valid)
			}
		}
		for name, want := range map[string]string{"auth": "", "open": "", "closed": "", "plain": "AuthNotPermitted", "missing": "ExtensionServiceNotFound"} {
			s := m.Proxies[types.NamespacedName{Namespace: "default", Name: name}]
			switch {
			case s == nil:
				t.Errorf("HTTPProxy %s has no status", name)
			case want == "" && s.Current() != "valid":
				t.Errorf("HTTPProxy %s = %s %q, want valid", name, s.Current(), s.Description())
			case want != "" && (s.Current() != "invalid" || len(s.Errors) == 0 || s.Errors[0].Reason != want):
				t.Errorf("HTTPProxy %s = %s %+v, want invalid with %s", name, s.Current(), s.Errors, want)
			}
		}
		// Without Kubernetes, /debug/model is where an ExtensionService's
		// problems show.
		code, _, body := do(t, http.DefaultClient, "GET", "http://"+x.httpAddr+"/debug/model", "")
		if code != 200 || !strings.Contains(body, `"ExtensionServices"`) || !strings.Contains(body, `"Reason": "ServiceUnresolvedReference"`) {
			t.Errorf("/debug/model = %d, want the ExtensionServices with the broken one's error:\n%s", code, body)
		}
	})

	t.Run("allow and deny", func(t *testing.T) {
		code, _, body := do(t, hc, "GET", "https://auth.example.com/x", "auth.example.com")
		if code != 401 || body != "denied by the test server" {
			t.Errorf("without x-allow = %d %q, want the server's 401", code, body)
		}
		code, _, body = do(t, hc, "GET", "https://auth.example.com/x", "auth.example.com", "x-allow", "yes")
		if code != 200 || !strings.Contains(body, "header:x-auth-user=alice") {
			t.Errorf("with x-allow = %d, want 200 with the server's x-auth-user:\n%s", code, body)
		}
		a, _ := srv.last()
		if got := fmt.Sprint(a.GetContextExtensions()); got != "map[realm:main scope:vhost]" {
			t.Errorf("context extensions = %s, want the virtual host's", got)
		}
		if a.GetSource().GetCertificate() != "" || a.GetRequest().GetHttp().GetHost() != "auth.example.com" {
			t.Errorf("check request attributes = %v", a)
		}
	})

	t.Run("route context", func(t *testing.T) {
		code, _, _ := do(t, hc, "GET", "https://auth.example.com/ctx", "auth.example.com", "x-allow", "yes")
		a, _ := srv.last()
		if got := fmt.Sprint(a.GetContextExtensions()); code != 200 || got != "map[realm:main scope:route]" {
			t.Errorf("GET /ctx = %d, context extensions %s, want the route's over the virtual host's", code, got)
		}
	})

	t.Run("request body", func(t *testing.T) {
		req, _ := http.NewRequest("POST", "https://auth.example.com/body", strings.NewReader("hello authz"))
		req.Header.Set("x-allow", "yes")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		a, _ := srv.last()
		if resp.StatusCode != 200 || a.GetRequest().GetHttp().GetBody() != "hello authz" {
			t.Errorf("POST = %d, check body %q, want 200 and the body (withRequestBody)", resp.StatusCode, a.GetRequest().GetHttp().GetBody())
		}
	})

	t.Run("disabled route bypasses the server", func(t *testing.T) {
		_, before := srv.last()
		code, _, body := do(t, hc, "GET", "https://auth.example.com/public/x", "auth.example.com")
		if _, after := srv.last(); code != 200 || after != before || strings.Contains(body, "x-auth-user") {
			t.Errorf("GET /public = %d (checks %d → %d), want 200 without a check", code, before, after)
		}
	})

	t.Run("server down", func(t *testing.T) {
		if code, _, _ := do(t, hc, "GET", "https://open.example.com/", "open.example.com"); code != 200 {
			t.Errorf("failOpen with the server down = %d, want 200", code)
		}
		if code, _, _ := do(t, hc, "GET", "https://closed.example.com/", "closed.example.com"); code != 403 {
			t.Errorf("without failOpen, the server down = %d, want 403 (Contour's status_on_error)", code)
		}
	})
}

// TestKubernetesExtensionService: against a real kube-apiserver (our
// CRDs), the controller watches ExtensionServices and writes their Valid
// condition as Contour does — keeping another controller's condition —,
// an HTTPProxy using an invalid one is ExtensionServiceNotFound, and both
// turn valid when the missing Service appears.
func TestKubernetesExtensionService(t *testing.T) {
	if !inNetns(t) {
		return
	}
	_, cfg := kubetest.StartAPIServer(t)
	client := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := "auth"
	mustCreate(t, client.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	svc := func(name string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 9000, TargetPort: intstr.FromInt(9000)}}}}
	}
	mustCreate(t, client.CoreV1().Services(ns).Create, svc("authz"))
	leaf := testutil.NewCA(t, "kube-extauth").Issue(t, "app.example.com", "app.example.com")
	mustCreate(t, client.CoreV1().Secrets(ns).Create, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tls"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: leaf.CertPEM, corev1.TLSPrivateKeyKey: leaf.KeyPEM}})
	docs := `apiVersion: projectcontour.io/v1alpha1
kind: ExtensionService
metadata: {name: good}
spec:
  services: [{name: authz, port: 9000}]
  protocol: h2c
  loadBalancerPolicy: {strategy: Cookie}
---
apiVersion: projectcontour.io/v1alpha1
kind: ExtensionService
metadata: {name: later}
spec:
  services: [{name: authz-later, port: 9000}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: app}
spec:
  virtualhost:
    fqdn: app.example.com
    tls: {secretName: tls}
    authorization: {extensionRef: {name: later}}
  routes: [{services: [{name: authz, port: 9000}]}]
`
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(docs), 4096)
	for {
		var u unstructured.Unstructured
		if err := d.Decode(&u.Object); err != nil {
			break
		}
		gvr := contourv1.HTTPProxyGVR
		if u.GetKind() == "ExtensionService" {
			gvr = contourv1alpha1.ExtensionServiceGVR
		}
		if _, err := dyn.Resource(gvr).Namespace(ns).Create(ctx, &u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	// Another controller's condition, which the status writes must keep.
	u, err := dyn.Resource(contourv1alpha1.ExtensionServiceGVR).Namespace(ns).Get(ctx, "good", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unstructured.SetNestedSlice(u.Object, []any{map[string]any{"type": "Other", "status": "True", "reason": "Mine", "message": "not Legate's",
		"lastTransitionTime": "2026-01-01T00:00:00Z"}}, "status", "conditions")
	if _, err := dyn.Resource(contourv1alpha1.ExtensionServiceGVR).Namespace(ns).UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	st := source.NewStore()
	if err := (&source.Kube{Client: client, Dynamic: dyn, Log: testLogger(t)}).Run(ctx, st); err != nil {
		t.Fatal(err)
	}
	startCP(t, st, cpOptions{status: &status.Writer{Client: client, Dynamic: dyn, Log: testLogger(t)}})
	extStatus := func(name string) contourv1alpha1.ExtensionServiceStatus {
		u, err := dyn.Resource(contourv1alpha1.ExtensionServiceGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		obj, err := source.FromUnstructured(u)
		if err != nil {
			t.Fatal(err)
		}
		return obj.(*contourv1alpha1.ExtensionService).Status
	}
	valid := func(s contourv1alpha1.ExtensionServiceStatus) *contourv1.DetailedCondition {
		for i := range s.Conditions {
			if s.Conditions[i].Type == "Valid" {
				return &s.Conditions[i]
			}
		}
		return nil
	}
	testutil.Eventually(t, 15*time.Second, func() bool {
		return valid(extStatus("good")) != nil && valid(extStatus("later")) != nil && proxyStatus(t, dyn, ns, "app").CurrentStatus != ""
	}, "ExtensionService statuses never written")
	good := extStatus("good")
	if c := valid(good); c.Status != metav1.ConditionTrue || c.Reason != "Valid" || c.Message != "Valid ExtensionService" ||
		len(c.Warnings) != 1 || c.Warnings[0].Reason != "IgnoredField" || len(good.Conditions) != 2 || good.Conditions[0].Type != "Other" {
		t.Errorf("good = %+v, want Valid (a warning for Cookie) beside the other controller's condition", good)
	}
	if c := valid(extStatus("later")); c.Status != metav1.ConditionFalse || c.Reason != "ErrorPresent" ||
		len(c.Errors) != 1 || c.Errors[0].Type != "ServiceError" || c.Errors[0].Reason != "ServiceUnresolvedReference" {
		t.Errorf("later = %+v, want ErrorPresent with ServiceUnresolvedReference", c)
	}
	if p := proxyStatus(t, dyn, ns, "app"); p.CurrentStatus != "invalid" || len(p.Conditions) != 1 || len(p.Conditions[0].Errors) != 1 ||
		p.Conditions[0].Errors[0].Type != "AuthError" || p.Conditions[0].Errors[0].Reason != "ExtensionServiceNotFound" {
		t.Errorf("app = %+v, want invalid with AuthError ExtensionServiceNotFound", p)
	}

	// The missing Service appears: both turn valid.
	mustCreate(t, client.CoreV1().Services(ns).Create, svc("authz-later"))
	testutil.Eventually(t, 15*time.Second, func() bool {
		c := valid(extStatus("later"))
		return c != nil && c.Status == metav1.ConditionTrue && proxyStatus(t, dyn, ns, "app").CurrentStatus == "valid"
	}, "the ExtensionService and its HTTPProxy never turned valid")
}
