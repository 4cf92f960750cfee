package controller

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	contourv1alpha1 "github.com/legateproxy/legate/api/projectcontour/v1alpha1"
	"github.com/legateproxy/legate/internal/controller/contourconfig"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/controller/status"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

// rlsLimits are the Rate Limit Service's limits, in Contour's default
// domain, per hour so that no window resets during the test.
const rlsLimits = `domain: contour
descriptors:
  - key: generic_key
    value: limited
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: generic_key
    value: warm
    rate_limit: {unit: hour, requests_per_unit: 1000}
  - key: header_match
    value: beta
    rate_limit: {unit: hour, requests_per_unit: 1}
`

// relay forwards connections from addr to target, so that a service on
// loopback is reachable at an address an EndpointSlice may hold.
func relay(t *testing.T, addr, target string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
}

// TestHTTPProxyGlobalRateLimit: against a real kube-apiserver (our CRDs),
// Contour's rateLimitService (an ExtensionService of Envoy's real Rate
// Limit Service and redis) and an HTTPProxy's global descriptors: the
// request over the virtual host's limit is answered 429 by Legate's proxy,
// with the draft-03 X-RateLimit headers; a route with global.disabled is
// never limited; a requestHeaderValueMatch without expectMatch gets the
// CRD's default (true); the HTTPProxy is Valid, and one with a descriptor
// entry of two fields is invalid with Contour's reason and text.
func TestHTTPProxyGlobalRateLimit(t *testing.T) {
	if !inNetns(t) {
		return
	}
	now := time.Now()
	if left := now.Truncate(time.Hour).Add(time.Hour).Sub(now); left < 30*time.Second {
		time.Sleep(left + time.Second) // the service's hourly counters would reset mid-test
	}
	rls := testutil.StartRateLimitService(t, map[string]string{"contour.yaml": rlsLimits})
	relay(t, backendA+":8081", rls.GRPCAddr)
	l, err := net.Listen("tcp", backendB+":8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: testutil.EchoHandler("app")}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	_, cfg := kubetest.StartAPIServer(t)
	client := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := "rl"
	mustCreate(t, client.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	ready := true
	for _, s := range []struct {
		name, port, ip string
		num            int32
	}{{"rls", "grpc", backendA, 8081}, {"app", "http", backendB, 8080}} {
		mustCreate(t, client.CoreV1().Services(ns).Create, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: s.name},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: s.port, Port: s.num, TargetPort: intstr.FromInt32(s.num)}}}})
		port, num := s.port, s.num
		mustCreate(t, client.DiscoveryV1().EndpointSlices(ns).Create, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: s.name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: s.name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &port, Port: &num}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{s.ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		})
	}
	docs := `apiVersion: projectcontour.io/v1alpha1
kind: ExtensionService
metadata: {name: rls}
spec:
  services: [{name: rls, port: 8081}]
  protocol: h2c
  timeoutPolicy: {response: 2s}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: limited}
spec:
  virtualhost:
    fqdn: limited.example.com
    rateLimitPolicy: {global: {descriptors: [{entries: [{genericKey: {value: limited}}]}]}}
  routes:
  - conditions: [{prefix: /free}]
    rateLimitPolicy: {global: {disabled: true}}
    services: [{name: app, port: 8080}]
  - conditions: [{prefix: /warm}]
    rateLimitPolicy: {global: {descriptors: [{entries: [{genericKey: {value: warm}}]}]}}
    services: [{name: app, port: 8080}]
  - conditions: [{prefix: /beta}]
    rateLimitPolicy: {global: {descriptors: [{entries: [{requestHeaderValueMatch: {value: beta, headers: [{name: x-beta, present: true}]}}]}]}}
    services: [{name: app, port: 8080}]
  - services: [{name: app, port: 8080}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: bad}
spec:
  virtualhost:
    fqdn: bad.example.com
    rateLimitPolicy: {global: {descriptors: [{entries: [{genericKey: {value: a}, remoteAddress: {}}]}]}}
  routes: [{services: [{name: app, port: 8080}]}]
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
	conf, err := contourconfig.Parse(strings.NewReader("rateLimitService:\n  extensionService: rl/rls\n  enableXRateLimitHeaders: true\n"))
	if err != nil {
		t.Fatal(err)
	}

	st := source.NewStore()
	if err := (&source.Kube{Client: client, Dynamic: dyn, Log: testLogger(t)}).Run(ctx, st); err != nil {
		t.Fatal(err)
	}
	x := startCP(t, st, cpOptions{contour: conf, status: &status.Writer{Client: client, Dynamic: dyn, Log: testLogger(t)}})
	startProxy(t, x)
	c := &http.Client{Timeout: 5 * time.Second}
	base := fmt.Sprintf("http://127.0.0.1:%d", x.httpPort)
	get := func(path string, hdr ...string) (int, http.Header) {
		code, h, _ := do(t, c, "GET", base+path, "limited.example.com", hdr...)
		return code, h
	}
	// Until the proxy routes and reaches the service, on a descriptor of
	// its own (the others' counts stay untouched).
	testutil.Eventually(t, 20*time.Second, func() bool {
		code, h := get("/warm")
		return code == 200 && h.Get("x-ratelimit-limit") != ""
	}, "the proxy never answered /warm through the rate limit service")
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}

	t.Run("virtual host limit", func(t *testing.T) {
		for i, remaining := range []string{"2", "1", "0"} {
			code, h := get("/")
			if code != 200 || h.Get("x-ratelimit-remaining") != remaining || h.Get("x-ratelimit-limit") != "3, 3;w=3600" {
				t.Errorf("request %d = %d (x-ratelimit-limit %q, remaining %q), want 200, \"3, 3;w=3600\", %s",
					i+1, code, h.Get("x-ratelimit-limit"), h.Get("x-ratelimit-remaining"), remaining)
			}
		}
		code, h := get("/")
		if code != 429 || h.Get("x-envoy-ratelimited") != "true" || h.Get("x-ratelimit-remaining") != "0" {
			t.Errorf("over the limit = %d %v, want 429 with x-envoy-ratelimited and the X-RateLimit headers", code, h)
		}
	})

	t.Run("disabled route", func(t *testing.T) {
		for i := 0; i < 5; i++ {
			if code, h := get("/free"); code != 200 || h.Get("x-ratelimit-limit") != "" {
				t.Errorf("/free request %d = %d %v, want 200 without asking the service", i+1, code, h)
			}
		}
	})

	t.Run("header value match, expectMatch by default", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			if code, _ := get("/beta"); code != 200 {
				t.Errorf("/beta without x-beta, request %d = %d, want 200 (no descriptor)", i+1, code)
			}
		}
		if code, _ := get("/beta", "x-beta", "1"); code != 200 {
			t.Errorf("/beta with x-beta = %d, want 200 (1 an hour)", code)
		}
		if code, _ := get("/beta", "x-beta", "1"); code != 429 {
			t.Errorf("/beta with x-beta again = %d, want 429", code)
		}
	})

	t.Run("statuses", func(t *testing.T) {
		testutil.Eventually(t, 15*time.Second, func() bool {
			return proxyStatus(t, dyn, ns, "limited").CurrentStatus != "" && proxyStatus(t, dyn, ns, "bad").CurrentStatus != ""
		}, "statuses never written")
		if s := proxyStatus(t, dyn, ns, "limited"); s.CurrentStatus != "valid" || s.Description != "Valid HTTPProxy" {
			t.Errorf("limited = %+v, want valid", s)
		}
		s := proxyStatus(t, dyn, ns, "bad")
		if s.CurrentStatus != "invalid" || len(s.Conditions) != 1 || len(s.Conditions[0].Errors) != 1 {
			t.Fatalf("bad = %+v, want invalid with one error", s)
		}
		if e := s.Conditions[0].Errors[0]; e.Type != "VirtualHostError" || e.Reason != "RateLimitPolicyNotValid" ||
			e.Message != "Spec.VirtualHost.RateLimitPolicy is invalid: rate limit descriptor entry must have exactly one field set" {
			t.Errorf("bad error = %+v, want Contour's VirtualHostError RateLimitPolicyNotValid", e)
		}
		if code, _, _ := do(t, c, "GET", base+"/", "bad.example.com"); code != 404 {
			t.Errorf("the invalid HTTPProxy's host = %d, want 404 (not served)", code)
		}
	})
}
