package controller

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/controller/status"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

// gatewayGVR is the resource of a Gateway API kind.
func gatewayGVR(kind string) (r string) {
	switch kind {
	case "GatewayClass":
		return "gatewayclasses"
	case "Gateway":
		return "gateways"
	case "HTTPRoute":
		return "httproutes"
	case "GRPCRoute":
		return "grpcroutes"
	case "TLSRoute":
		return "tlsroutes"
	case "TCPRoute":
		return "tcproutes"
	case "ReferenceGrant":
		return "referencegrants"
	}
	return ""
}

// applyGatewayAPI creates the Gateway API objects of doc.
func applyGatewayAPI(t *testing.T, dyn dynamic.Interface, doc string) {
	t.Helper()
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(doc), 4096)
	for {
		var u unstructured.Unstructured
		if err := d.Decode(&u.Object); err != nil {
			if err.Error() == "EOF" {
				return
			}
			t.Fatal(err)
		}
		if len(u.Object) == 0 {
			continue
		}
		gvr := gatewayv1.SchemeGroupVersion.WithResource(gatewayGVR(u.GetKind()))
		r := dyn.Resource(gvr)
		var err error
		if u.GetNamespace() == "" {
			_, err = r.Create(context.Background(), &u, metav1.CreateOptions{})
		} else {
			_, err = r.Namespace(u.GetNamespace()).Create(context.Background(), &u, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatalf("create %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

func getGatewayObj[T any](t *testing.T, dyn dynamic.Interface, kind, ns, name string) *T {
	t.Helper()
	r := dyn.Resource(gatewayv1.SchemeGroupVersion.WithResource(gatewayGVR(kind)))
	var u *unstructured.Unstructured
	var err error
	if ns == "" {
		u, err = r.Get(context.Background(), name, metav1.GetOptions{})
	} else {
		u, err = r.Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	}
	if err != nil {
		t.Fatalf("get %s %s/%s: %v", kind, ns, name, err)
	}
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func findCond(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

// condIs reports whether condition typ is there with status and reason.
func condIs(cs []metav1.Condition, typ string, st metav1.ConditionStatus, reason string) bool {
	c := findCond(cs, typ)
	return c != nil && c.Status == st && c.Reason == reason
}

func routeParentConds(t *testing.T, dyn dynamic.Interface, ns, name string) []metav1.Condition {
	hr := getGatewayObj[gatewayv1.HTTPRoute](t, dyn, "HTTPRoute", ns, name)
	for _, p := range hr.Status.Parents {
		if p.ControllerName == model.DefaultGatewayController {
			return p.Conditions
		}
	}
	return nil
}

// TestGatewayAPI: against a real kube-apiserver with the Gateway API
// v1.6.3 CRDs, a GatewayClass of Legate's controllerName, two Gateways
// and HTTPRoutes reach a Legate proxy: each Gateway binds its own address
// of the pool on its listeners' own ports; routes match by hostname,
// path, header (a GRPCRoute by gRPC service and method, to a real gRPC
// server over h2c); filters modify headers, redirect and rewrite; HTTPS
// listeners terminate TLS by SNI, TLS listeners pass it through to a
// TLSRoute's backend, TCP listeners forward a TCPRoute's connections. Statuses carry the conditions and
// reasons of the specification: accepted and programmed objects, invalid
// listeners (UnsupportedProtocol, ProtocolConflict), routes not allowed
// (NotAllowedByListeners), without a matching hostname
// (NoMatchingListenerHostname), with a missing backend (BackendNotFound,
// answered 500) and a cross-namespace backend (RefNotPermitted until a
// ReferenceGrant allows it).
func TestGatewayAPI(t *testing.T) {
	if !inNetns(t) {
		return
	}
	_, cfg := kubetest.StartAPIServerWithCRDs(t, "", "gateway-api")
	client := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)

	startEchoAt(t, backendA, "a")
	startEchoAt(t, backendB, "b")
	// A gRPC server (h2c) for a GRPCRoute.
	gl, err := net.Listen("tcp", backendA+":9090")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(gl)
	t.Cleanup(gs.Stop)
	for _, ns := range []struct {
		name   string
		labels map[string]string
	}{{"gw", nil}, {"app", map[string]string{"team": "app"}}, {"outsider", nil}} {
		mustCreate(t, client.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.name, Labels: ns.labels}})
	}
	ready := true
	for _, s := range []struct {
		ns, name, ip string
		port         int32
	}{{"app", "svc-a", backendA, 8080}, {"app", "svc-b", backendB, 8080}, {"outsider", "svc-o", backendB, 8080}, {"app", "svc-grpc", backendA, 9090}, {"app", "svc-tls", backendB, 8443}} {
		mustCreate(t, client.CoreV1().Services(s.ns).Create, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: s.name},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(s.port)}}}})
		pn, port := "http", s.port
		mustCreate(t, client.DiscoveryV1().EndpointSlices(s.ns).Create, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: s.name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: s.name}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &pn, Port: &port}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{s.ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}}})
	}
	ca := testutil.NewCA(t, "gateway-api")
	leaf := ca.Issue(t, "*.example.com", "*.example.com")
	// A TLS server of its own for TLS passthrough (a TLSRoute).
	passLeaf := ca.Issue(t, "pass.example.org", "pass.example.org")
	tlsL, err := tls.Listen("tcp", backendB+":8443", &tls.Config{Certificates: []tls.Certificate{passLeaf.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	passSrv := &http.Server{Handler: testutil.EchoHandler("passthrough")}
	go passSrv.Serve(tlsL)
	t.Cleanup(func() { passSrv.Close() })
	mustCreate(t, client.CoreV1().Secrets("gw").Create, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "wildcard"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: leaf.CertPEM, corev1.TLSPrivateKeyKey: leaf.KeyPEM}})

	applyGatewayAPI(t, dyn, `
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: legate}
spec: {controllerName: `+model.DefaultGatewayController+`}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: someone-else}
spec: {controllerName: example.com/other-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: gw}
spec:
  gatewayClassName: legate
  listeners:
  - name: http
    protocol: HTTP
    port: 80
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {team: app}}
  - name: https
    protocol: HTTPS
    port: 443
    hostname: "*.example.com"
    tls: {certificateRefs: [{name: wildcard}]}
    allowedRoutes: {namespaces: {from: All}}
  - name: udp
    protocol: UDP
    port: 53
  - name: https-on-80
    protocol: HTTPS
    port: 80
    tls: {certificateRefs: [{name: wildcard}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: second, namespace: gw}
spec:
  gatewayClassName: legate
  listeners:
  - name: http
    protocol: HTTP
    port: 80
    allowedRoutes: {namespaces: {from: All}}
  - name: tls
    protocol: TLS
    port: 443
    tls: {mode: Passthrough}
    allowedRoutes: {namespaces: {from: All}}
  - name: tcp
    protocol: TCP
    port: 5432
    allowedRoutes: {namespaces: {from: All}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: pass, namespace: app}
spec:
  parentRefs: [{name: second, namespace: gw, sectionName: tls}]
  hostnames: [pass.example.org]
  rules: [{backendRefs: [{name: svc-tls, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: raw, namespace: app}
spec:
  parentRefs: [{name: second, namespace: gw, sectionName: tcp}]
  rules: [{backendRefs: [{name: svc-a, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: foreign, namespace: gw}
spec:
  gatewayClassName: someone-else
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: app}
spec:
  parentRefs: [{name: edge, namespace: gw, sectionName: http}]
  hostnames: [web.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /a}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-gw, value: "yes"}]
        add: [{name: x-multi, value: added}]
        remove: [x-drop]
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-resp, value: set}]}
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {type: Exact, value: /redirect}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, statusCode: 301}
  - matches: [{path: {type: PathPrefix, value: /rewrite}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: rewritten.example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs: [{name: svc-b, port: 80}]
  - matches: [{headers: [{name: x-canary, value: "1"}]}]
    backendRefs: [{name: svc-b, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /missing}}]
    backendRefs: [{name: nowhere, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /half}}]
    backendRefs: [{name: svc-a, port: 80}, {name: nowhere, port: 80}]
  - backendRefs: [{name: svc-a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: denied, namespace: outsider}
spec:
  parentRefs: [{name: edge, namespace: gw, sectionName: http}]
  rules: [{backendRefs: [{name: svc-o, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: nohost, namespace: app}
spec:
  parentRefs: [{name: edge, namespace: gw, sectionName: https}]
  hostnames: [elsewhere.org]
  rules: [{backendRefs: [{name: svc-a, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secure, namespace: app}
spec:
  parentRefs: [{name: edge, namespace: gw, sectionName: https}]
  hostnames: [secure.example.com]
  rules: [{backendRefs: [{name: svc-b, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cross, namespace: app}
spec:
  parentRefs: [{name: second, namespace: gw}]
  hostnames: [cross.example.com]
  rules: [{backendRefs: [{name: svc-o, namespace: outsider, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: health, namespace: app}
spec:
  parentRefs: [{name: edge, namespace: gw, sectionName: http}]
  hostnames: [grpc.example.com]
  rules:
  - matches: [{method: {service: grpc.health.v1.Health, method: Check}}]
    backendRefs: [{name: svc-grpc, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: two, namespace: app}
spec:
  parentRefs: [{name: second, namespace: gw}]
  rules: [{backendRefs: [{name: svc-b, port: 80}]}]
`)

	st := source.NewStore()
	kctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := (&source.Kube{Client: client, Dynamic: dyn, Log: testLogger(t)}).Run(kctx, st); err != nil {
		t.Fatal(err)
	}
	pool := netip.MustParsePrefix("127.10.0.0/24")
	x := startCP(t, st, cpOptions{
		model:  model.Options{Gateway: model.GatewayOptions{AddressPool: pool, ListenerPorts: true}},
		status: &status.Writer{Client: client, Dynamic: dyn, Log: testLogger(t)},
	})
	startProxy(t, x)

	// Statuses.
	var edge, second *gatewayv1.Gateway
	testutil.Eventually(t, 20*time.Second, func() bool {
		edge = getGatewayObj[gatewayv1.Gateway](t, dyn, "Gateway", "gw", "edge")
		second = getGatewayObj[gatewayv1.Gateway](t, dyn, "Gateway", "gw", "second")
		return len(edge.Status.Addresses) == 1 && len(second.Status.Addresses) == 1 && len(edge.Status.Listeners) == 4
	}, "Gateway statuses never written")
	gc := getGatewayObj[gatewayv1.GatewayClass](t, dyn, "GatewayClass", "", "legate")
	if !condIs(gc.Status.Conditions, "Accepted", metav1.ConditionTrue, "Accepted") || !condIs(gc.Status.Conditions, "SupportedVersion", metav1.ConditionTrue, "SupportedVersion") || len(gc.Status.SupportedFeatures) == 0 {
		t.Errorf("GatewayClass legate status = %+v", gc.Status)
	}
	if other := getGatewayObj[gatewayv1.GatewayClass](t, dyn, "GatewayClass", "", "someone-else"); len(other.Status.Conditions) > 0 && other.Status.Conditions[0].Reason != "Pending" {
		t.Errorf("another controller's GatewayClass got a status from us: %+v", other.Status)
	}
	if f := getGatewayObj[gatewayv1.Gateway](t, dyn, "Gateway", "gw", "foreign"); len(f.Status.Addresses) > 0 || len(f.Status.Listeners) > 0 {
		t.Errorf("another controller's Gateway got a status from us: %+v", f.Status)
	}
	edgeIP, secondIP := edge.Status.Addresses[0].Value, second.Status.Addresses[0].Value
	if edgeIP == secondIP || !pool.Contains(netip.MustParseAddr(edgeIP)) || !pool.Contains(netip.MustParseAddr(secondIP)) {
		t.Errorf("Gateway addresses %s and %s: want two distinct addresses of %s", edgeIP, secondIP, pool)
	}
	if !condIs(edge.Status.Conditions, "Accepted", metav1.ConditionTrue, "ListenersNotValid") || !condIs(edge.Status.Conditions, "Programmed", metav1.ConditionTrue, "Programmed") {
		t.Errorf("Gateway edge conditions = %+v", edge.Status.Conditions)
	}
	byName := map[string]gatewayv1.ListenerStatus{}
	for _, l := range edge.Status.Listeners {
		byName[string(l.Name)] = l
	}
	if l := byName["http"]; !condIs(l.Conditions, "Programmed", metav1.ConditionTrue, "Programmed") || !condIs(l.Conditions, "Accepted", metav1.ConditionTrue, "Accepted") || len(l.SupportedKinds) != 2 || l.SupportedKinds[0].Kind != "HTTPRoute" || l.SupportedKinds[1].Kind != "GRPCRoute" {
		t.Errorf("listener http status = %+v", l)
	}
	if l := byName["udp"]; !condIs(l.Conditions, "Accepted", metav1.ConditionFalse, "UnsupportedProtocol") || !condIs(l.Conditions, "Programmed", metav1.ConditionFalse, "Invalid") {
		t.Errorf("listener udp status = %+v", l)
	}
	if l := byName["https-on-80"]; !condIs(l.Conditions, "Conflicted", metav1.ConditionTrue, "ProtocolConflict") {
		t.Errorf("listener https-on-80 status = %+v", l)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		edge = getGatewayObj[gatewayv1.Gateway](t, dyn, "Gateway", "gw", "edge")
		for _, l := range edge.Status.Listeners {
			byName[string(l.Name)] = l
		}
		return byName["http"].AttachedRoutes == 2 && byName["https"].AttachedRoutes == 1
	}, "attachedRoutes: want 2 routes on http (web and the GRPCRoute health; denied is not allowed) and 1 on https (secure; nohost has no matching hostname)")
	for _, tc := range []struct {
		ns, name, typ string
		status        metav1.ConditionStatus
		reason        string
	}{
		{"app", "web", "Accepted", metav1.ConditionTrue, "Accepted"},
		{"app", "web", "ResolvedRefs", metav1.ConditionFalse, "BackendNotFound"},
		{"outsider", "denied", "Accepted", metav1.ConditionFalse, "NotAllowedByListeners"},
		{"app", "nohost", "Accepted", metav1.ConditionFalse, "NoMatchingListenerHostname"},
		{"app", "secure", "Accepted", metav1.ConditionTrue, "Accepted"},
		{"app", "secure", "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs"},
		{"app", "cross", "ResolvedRefs", metav1.ConditionFalse, "RefNotPermitted"},
	} {
		var cs []metav1.Condition
		testutil.Eventually(t, 10*time.Second, func() bool {
			cs = routeParentConds(t, dyn, tc.ns, tc.name)
			return condIs(cs, tc.typ, tc.status, tc.reason)
		}, fmt.Sprintf("HTTPRoute %s/%s: want %s=%s (%s), have %+v", tc.ns, tc.name, tc.typ, tc.status, tc.reason, cs))
		if c := findCond(cs, tc.typ); c.ObservedGeneration != 1 {
			t.Errorf("HTTPRoute %s/%s %s observedGeneration %d, want 1", tc.ns, tc.name, tc.typ, c.ObservedGeneration)
		}
	}

	// Traffic, on each Gateway's own address and its listeners' ports.
	c := fromClient("127.0.0.1")
	edgeHTTP := "http://" + edgeIP + ":80"
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, _, _ := do(t, c, "GET", edgeHTTP+"/a/x", "web.example.com")
		return code == 200
	}, "route web never served on "+edgeHTTP)
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}
	code, h, body := do(t, c, "GET", edgeHTTP+"/a/x", "web.example.com", "x-drop", "gone", "x-multi", "client")
	if code != 200 || !strings.Contains(body, "upstream=a") || !strings.Contains(body, "header:x-gw=yes") || strings.Contains(body, "x-drop") ||
		!strings.Contains(body, "header:x-multi=client") || !strings.Contains(body, "header:x-multi=added") || h.Get("x-resp") != "set" {
		t.Errorf("header modifiers: %d %v\n%s", code, h, body)
	}
	if code, h, _ := do(t, c, "GET", edgeHTTP+"/redirect", "web.example.com"); code != 301 || h.Get("Location") != "https://web.example.com/redirect" {
		t.Errorf("redirect: %d Location %q, want 301 https://web.example.com/redirect", code, h.Get("Location"))
	}
	if code, _, body := do(t, c, "GET", edgeHTTP+"/rewrite/deep/path?q=1", "web.example.com"); code != 200 || !strings.Contains(body, "upstream=b") ||
		!strings.Contains(body, "path=/deep/path?q=1") || !strings.Contains(body, "host=rewritten.example.com") {
		t.Errorf("URL rewrite: %d\n%s", code, body)
	}
	if code, _, body := do(t, c, "GET", edgeHTTP+"/rewrite", "web.example.com"); code != 200 || !strings.Contains(body, "path=/\n") {
		t.Errorf("URL rewrite of the bare prefix: %d\n%s", code, body)
	}
	if _, _, body := do(t, c, "GET", edgeHTTP+"/other", "web.example.com", "x-canary", "1"); !strings.Contains(body, "upstream=b") {
		t.Errorf("header match: %s", body)
	}
	if _, _, body := do(t, c, "GET", edgeHTTP+"/other", "web.example.com"); !strings.Contains(body, "upstream=a") {
		t.Errorf("default rule: %s", body)
	}
	if code, _, _ := do(t, c, "GET", edgeHTTP+"/missing", "web.example.com"); code != 500 {
		t.Errorf("rule with a missing backend: %d, want 500", code)
	}
	// Half the requests of a rule with one invalid backend of two get a
	// 500, the others reach the valid one.
	got := map[int]int{}
	for range 40 {
		code, _, _ := do(t, c, "GET", edgeHTTP+"/half", "web.example.com")
		got[code]++
	}
	if got[200] < 5 || got[500] < 5 || got[200]+got[500] != 40 {
		t.Errorf("a rule with one invalid backend of two: %v, want both 200 and 500", got)
	}
	if code, _, _ := do(t, c, "GET", edgeHTTP+"/", "denied.example.com"); code != 404 {
		t.Errorf("a host no route of the listener serves: %d, want 404", code)
	}
	// The second Gateway shares port 80 on its own address.
	if _, _, body := do(t, c, "GET", "http://"+secondIP+":80/", "anything.example.net"); !strings.Contains(body, "upstream=b") {
		t.Errorf("second Gateway: %s", body)
	}
	// HTTPS by SNI.
	tc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "secure.example.com"},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", edgeIP+":443")
		}}}
	resp, err := tc.Get("https://secure.example.com/s")
	if err != nil {
		t.Fatalf("HTTPS listener: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("x-upstream") != "b" {
		t.Errorf("HTTPS listener: %d upstream %q", resp.StatusCode, resp.Header.Get("x-upstream"))
	}

	// The GRPCRoute: Health/Check reaches the gRPC server over h2c; another
	// method of the service matches no route (404 → Unimplemented).
	var gcs []metav1.Condition
	testutil.Eventually(t, 10*time.Second, func() bool {
		gr := getGatewayObj[gatewayv1.GRPCRoute](t, dyn, "GRPCRoute", "app", "health")
		for _, p := range gr.Status.Parents {
			gcs = p.Conditions
		}
		return condIs(gcs, "Accepted", metav1.ConditionTrue, "Accepted") && condIs(gcs, "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")
	}, "GRPCRoute status")
	cc, err := grpc.NewClient(edgeIP+":80", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	gctx, gcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer gcancel()
	if r, err := hc.Check(gctx, &healthpb.HealthCheckRequest{}); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("GRPCRoute Health/Check: %v %v", r, err)
	}
	if _, err := hc.List(gctx, &healthpb.HealthListRequest{}); grpcstatus.Code(err) != codes.Unimplemented {
		t.Errorf("a method no GRPCRoute matches: %v, want Unimplemented", err)
	}

	// TLS passthrough by SNI to the backend's own certificate, and a
	// TCPRoute's raw TCP.
	pc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "pass.example.org"},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", secondIP+":443")
		}}}
	testutil.Eventually(t, 10*time.Second, func() bool {
		resp, err := pc.Get("https://pass.example.org/p")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.Header.Get("x-upstream") == "passthrough"
	}, "TLSRoute never passed TLS through to its backend")
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, _, body := do(t, c, "GET", "http://"+secondIP+":5432/raw", "raw.example.com")
		return code == 200 && strings.Contains(body, "upstream=a")
	}, "TCPRoute never forwarded to its backend")
	for _, r := range []struct{ kind, name string }{{"TLSRoute", "pass"}, {"TCPRoute", "raw"}} {
		var cs []metav1.Condition
		testutil.Eventually(t, 10*time.Second, func() bool {
			var parents []gatewayv1.RouteParentStatus
			if r.kind == "TLSRoute" {
				parents = getGatewayObj[gatewayv1.TLSRoute](t, dyn, r.kind, "app", r.name).Status.Parents
			} else {
				parents = getGatewayObj[gatewayv1.TCPRoute](t, dyn, r.kind, "app", r.name).Status.Parents
			}
			for _, p := range parents {
				cs = p.Conditions
			}
			return condIs(cs, "Accepted", metav1.ConditionTrue, "Accepted")
		}, r.kind+" status never Accepted")
	}

	// A ReferenceGrant in the backend's namespace lets the route use it.
	if code, _, _ := do(t, c, "GET", "http://"+secondIP+":80/", "cross.example.com"); code != 500 {
		t.Errorf("cross-namespace backend without a ReferenceGrant: %d, want 500", code)
	}
	applyGatewayAPI(t, dyn, `
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: allow-app, namespace: outsider}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: app}]
  to: [{group: "", kind: Service}]
`)
	testutil.Eventually(t, 10*time.Second, func() bool {
		return condIs(routeParentConds(t, dyn, "app", "cross"), "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")
	}, "HTTPRoute cross never resolved after the ReferenceGrant")
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, _, _ := do(t, c, "GET", "http://"+secondIP+":80/", "cross.example.com")
		return code == 200
	}, "cross-namespace backend never served after the ReferenceGrant")
}
