package inject

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/legateproxy/legate/internal/certgen"
	"github.com/legateproxy/legate/internal/mesh"
)

func review(t *testing.T, req *admissionv1.AdmissionRequest) []byte {
	t.Helper()
	b, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Request: req})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func podRequest(t *testing.T, pod *corev1.Pod) *admissionv1.AdmissionRequest {
	raw, _ := json.Marshal(pod)
	return &admissionv1.AdmissionRequest{
		UID: types.UID("uid-1"), Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: "shop",
		Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
	}
}

func TestHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := &Handler{Config: testConfig, Log: slog.New(slog.DiscardHandler), Metrics: NewMetrics(reg)}
	srv := httptest.NewServer(h)
	defer srv.Close()
	post := func(body []byte, ct string) (int, *admissionv1.AdmissionReview, string) {
		resp, err := http.Post(srv.URL+Path, ct, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return resp.StatusCode, nil, string(data)
		}
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(data, &out); err != nil {
			t.Fatalf("response %s: %v", data, err)
		}
		return 200, &out, ""
	}

	pod := basePod()
	pod.Namespace = "" // as the API server sends a new pod
	code, out, _ := post(review(t, podRequest(t, pod)), "application/json")
	if code != 200 || out.Kind != "AdmissionReview" || out.APIVersion != "admission.k8s.io/v1" || out.Response.UID != "uid-1" || !out.Response.Allowed ||
		out.Response.PatchType == nil || *out.Response.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("inject: %d %+v", code, out)
	}
	pod.Namespace = "shop"
	ops, _, _ := Patch(pod, testConfig)
	want, _ := json.Marshal(ops)
	if string(out.Response.Patch) != string(want) {
		t.Fatalf("patch\n got %s\nwant %s", out.Response.Patch, want)
	}

	// Skipped: allowed, no patch.
	pod.Annotations = map[string]string{mesh.IstioInjectAnnotation: "false"}
	_, out, _ = post(review(t, podRequest(t, pod)), "application/json")
	if !out.Response.Allowed || out.Response.Patch != nil {
		t.Fatalf("opt-out: %+v", out.Response)
	}
	// Refused: a bad annotation is an error naming it.
	pod.Annotations = map[string]string{mesh.ExcludeOutboundPorts: "x"}
	_, out, _ = post(review(t, podRequest(t, pod)), "application/json")
	if out.Response.Allowed || !strings.Contains(out.Response.Result.Message, mesh.ExcludeOutboundPorts) {
		t.Fatalf("bad annotation: %+v", out.Response)
	}
	// Not a pod: allowed unchanged.
	req := podRequest(t, basePod())
	req.Resource.Resource = "services"
	_, out, _ = post(review(t, req), "application/json")
	if !out.Response.Allowed || out.Response.Patch != nil {
		t.Fatalf("service: %+v", out.Response)
	}
	// An unreadable pod is refused, not a crash.
	req = podRequest(t, basePod())
	req.Object.Raw = []byte(`{"spec":{"containers":"x"}}`)
	_, out, _ = post(review(t, req), "application/json")
	if out.Response.Allowed || out.Response.UID != "uid-1" {
		t.Fatalf("bad pod: %+v", out.Response)
	}
	// A panic becomes an error answer.
	patchFunc = func(*corev1.Pod, Config) ([]Op, *Skip, error) { panic("boom") }
	_, out, _ = post(review(t, podRequest(t, basePod())), "application/json")
	patchFunc = Patch
	if out.Response.Allowed || !strings.Contains(out.Response.Result.Message, "boom") {
		t.Fatalf("panic: %+v", out.Response)
	}
	// Not an AdmissionReview at all.
	for _, bad := range []struct {
		body, ct string
		code     int
	}{
		{"{", "application/json", 400},
		{`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, "application/json", 400},
		{"{}", "text/plain", 415},
	} {
		if code, _, msg := post([]byte(bad.body), bad.ct); code != bad.code || !strings.Contains(msg, "legate sidecar injector") {
			t.Errorf("%q: %d %q", bad.body, code, msg)
		}
	}
	if resp, _ := http.Get(srv.URL + Path); resp.StatusCode != 405 {
		t.Errorf("GET: %d", resp.StatusCode)
	}

	m := h.Metrics
	for name, got := range map[string]float64{
		"requests": testutil.ToFloat64(m.Requests), "success": testutil.ToFloat64(m.Success),
		"skip opt_out": testutil.ToFloat64(m.Skip.WithLabelValues("opt_out")), "skip not_pod": testutil.ToFloat64(m.Skip.WithLabelValues("not_pod")),
		"failure invalid_pod": testutil.ToFloat64(m.Failure.WithLabelValues("invalid_pod")),
		"failure bad_request": testutil.ToFloat64(m.Failure.WithLabelValues("bad_request")),
		"failure internal":    testutil.ToFloat64(m.Failure.WithLabelValues("internal")),
	} {
		want := map[string]float64{"requests": 10, "success": 1, "skip opt_out": 1, "skip not_pod": 1, "failure invalid_pod": 1, "failure bad_request": 5, "failure internal": 1}[name]
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// TestWebhookSelectors evaluates the configuration's selectors as the
// API server does: which namespaces and pods are sent to the webhook.
func TestWebhookSelectors(t *testing.T) {
	cfg := WebhookConfig{URL: "https://127.0.0.1:1" + Path}
	cfg.defaults()
	wc := cfg.Build([]byte("ca"))
	tests := []struct {
		name     string
		ns, pod  map[string]string
		selected bool
	}{
		{"legate namespace", map[string]string{mesh.InjectLabel: "enabled"}, nil, true},
		{"istio namespace", map[string]string{mesh.IstioInjectLabel: "enabled"}, nil, true},
		{"both labels", map[string]string{mesh.InjectLabel: "enabled", mesh.IstioInjectLabel: "enabled"}, nil, true},
		{"disabled namespace", map[string]string{mesh.IstioInjectLabel: "disabled"}, nil, false},
		{"disabled namespace, pod asks", map[string]string{mesh.IstioInjectLabel: "disabled"}, map[string]string{mesh.IstioInjectAnnotation: "true"}, false},
		{"plain namespace", nil, nil, false},
		{"plain namespace, pod label true", nil, map[string]string{mesh.IstioInjectAnnotation: "true"}, true},
		{"plain namespace, legate pod label true", nil, map[string]string{mesh.InjectAnnotation: "true"}, true},
		{"meshed namespace, pod label false", map[string]string{mesh.InjectLabel: "enabled"}, map[string]string{mesh.IstioInjectAnnotation: "false"}, false},
		{"meshed namespace, legate pod label false", map[string]string{mesh.IstioInjectLabel: "enabled"}, map[string]string{mesh.InjectAnnotation: "false"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := 0
			for _, w := range wc.Webhooks {
				nsSel, err := metav1.LabelSelectorAsSelector(w.NamespaceSelector)
				if err != nil {
					t.Fatal(err)
				}
				objSel, err := metav1.LabelSelectorAsSelector(w.ObjectSelector)
				if err != nil {
					t.Fatal(err)
				}
				if nsSel.Matches(labels.Set(tt.ns)) && objSel.Matches(labels.Set(tt.pod)) {
					n++
				}
			}
			if (n > 0) != tt.selected || n > 1 {
				t.Fatalf("%d webhooks match, want selected=%v (at most one)", n, tt.selected)
			}
		})
	}
	for _, w := range wc.Webhooks {
		if *w.ClientConfig.URL != cfg.URL || string(w.ClientConfig.CABundle) != "ca" || *w.FailurePolicy != "Fail" || *w.SideEffects != "None" {
			t.Errorf("webhook %s: %+v", w.Name, w)
		}
	}
}

func TestWebhookNames(t *testing.T) {
	for _, tt := range []struct {
		cfg WebhookConfig
		dns string
		ip  string
		err bool
	}{
		{cfg: WebhookConfig{URL: "https://127.0.0.1:9443/inject"}, ip: "127.0.0.1"},
		{cfg: WebhookConfig{URL: "https://injector.example.com/inject"}, dns: "injector.example.com"},
		{cfg: WebhookConfig{URL: "http://127.0.0.1/inject"}, err: true},
		{cfg: WebhookConfig{Service: ServiceRef{Namespace: "legate-system", Name: "legate-sidecar-injector"}}, dns: "legate-sidecar-injector.legate-system.svc"},
		{cfg: WebhookConfig{}, err: true},
	} {
		dns, ips, err := tt.cfg.Names()
		if tt.err {
			if err == nil {
				t.Errorf("%+v: no error", tt.cfg)
			}
			continue
		}
		if err != nil || (tt.dns != "" && dns[0] != tt.dns) || (tt.ip != "" && ips[0].String() != tt.ip) {
			t.Errorf("%+v: %v %v %v", tt.cfg, dns, ips, err)
		}
	}
	if err := (&WebhookConfig{FailurePolicy: "Sometimes"}).defaults(); err == nil {
		t.Error("bad failure policy accepted")
	}
}

// TestServingCert serves TLS with a certificate from the xDS CA that
// `legate certgen` makes, and verifies it as the API server does.
func TestServingCert(t *testing.T) {
	set, err := certgen.Generate(certgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(set.CA, set.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(set.ControllerCert, set.ControllerKey); err == nil {
		t.Error("a leaf accepted as CA")
	}
	if _, err := LoadCA(set.CA, []byte("junk")); err == nil {
		t.Error("junk key accepted")
	}
	mem, err := NewCA(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*CA{ca, mem} {
		cert, err := c.ServingCert([]string{"legate-sidecar-injector.legate-system.svc"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		srv.StartTLS()
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(c.PEM)
		for _, name := range []string{"127.0.0.1", "legate-sidecar-injector.legate-system.svc"} {
			cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: name}}}
			resp, err := cl.Get(srv.URL)
			if err != nil {
				t.Errorf("verify %s: %v", name, err)
				continue
			}
			resp.Body.Close()
		}
		cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "other.example"}}}
		if _, err := cl.Get(srv.URL); err == nil {
			t.Error("a name not in the certificate verified")
		}
		srv.Close()
	}
}
