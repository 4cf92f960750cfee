package kubeenv_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/legateproxy/legate/test/kubeenv"
)

// The namespaces of the conformance suite's base manifests, whose Pods
// the suite waits for before any test (kubernetes.NamespacesMustBeReady).
var conformanceNamespaces = []string{"gateway-conformance-infra", "gateway-conformance-app-backend", "gateway-conformance-web-backend"}

// TestConformanceBaseManifests applies the Gateway API conformance suite's
// base manifests (v1.6.3, unchanged but for the GatewayClass name) with
// the Secrets the suite creates for them, and waits until every
// Deployment is available and every Pod Ready, as the suite's setup
// does; then the backends answer: echo-basic over HTTP and, with the
// suite's certificate, TLS; the gRPC and TCP echo servers accept
// connections; CoreDNS answers the whoami zone.
func TestConformanceBaseManifests(t *testing.T) {
	if !kubeenv.InNetns(t) {
		return
	}
	env := kubeenv.Start(t, kubeenv.Options{CRDPaths: []string{kubeenv.GatewayAPICRDs(t, "standard")}})
	began := time.Now()
	data, err := os.ReadFile(filepath.Join(kubeenv.ConformanceAssets(t), "base", "manifests.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.ReplaceAll(data, []byte("{GATEWAY_CLASS_NAME}"), []byte("kubeenv-test"))
	dyn := dynamic.NewForConfigOrDie(env.Config)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(env.Client.Discovery()))
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	kinds := map[string]int{}
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatal(err)
		}
		if len(u.Object) == 0 {
			continue
		}
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if u.GetNamespace() != "" {
			ri = dyn.Resource(m.Resource).Namespace(u.GetNamespace())
		}
		if _, err := ri.Create(ctx, &u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s %s/%s: %v", gvk.Kind, u.GetNamespace(), u.GetName(), err)
		}
		kinds[gvk.Kind]++
	}
	t.Logf("applied the base manifests: %v", kinds)
	if kinds["Deployment"] < 10 {
		t.Fatalf("only %d Deployments in the base manifests", kinds["Deployment"])
	}
	// The Secrets the suite creates after applying the manifests, which
	// the TLS and TCP backends mount.
	for _, s := range []struct{ ns, name, host string }{
		{"gateway-conformance-infra", "tls-checks-certificate", "abc.example.com"},
		{"gateway-conformance-infra", "tls-passthrough-checks-certificate", "abc.example.com"},
		{"gateway-conformance-app-backend", "tls-passthrough-checks-certificate", "abc.example.com"},
	} {
		crt, key := selfSigned(t, s.host)
		if _, err := env.Client.CoreV1().Secrets(s.ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: s.name},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{"tls.crt": crt, "tls.key": key},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var pods []corev1.Pod
	eventually(t, 3*time.Minute, "every base Deployment available and every Pod Ready", func() error {
		pods = nil
		for _, ns := range conformanceNamespaces {
			deps, err := env.Client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			for _, d := range deps.Items {
				want := int32(1)
				if d.Spec.Replicas != nil {
					want = *d.Spec.Replicas
				}
				if d.Status.AvailableReplicas != want {
					return fmt.Errorf("Deployment %s/%s: %d of %d available", ns, d.Name, d.Status.AvailableReplicas, want)
				}
			}
			list, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			for _, p := range list.Items {
				if !podReady(&p) || p.DeletionTimestamp != nil {
					return fmt.Errorf("Pod %s/%s not ready: %s", ns, p.Name, describe(p.Status.ContainerStatuses))
				}
			}
			pods = append(pods, list.Items...)
		}
		return nil
	})
	t.Logf("%d Pods of the base manifests Ready %v after applying them", len(pods), time.Since(began).Round(time.Millisecond))

	byApp := map[string][]corev1.Pod{}
	for _, p := range pods {
		byApp[p.Namespace+"/"+p.Labels["app"]] = append(byApp[p.Namespace+"/"+p.Labels["app"]], p)
	}
	for _, app := range []string{"infra-backend-v1", "infra-backend-v2", "infra-backend-v3"} {
		for _, p := range byApp["gateway-conformance-infra/"+app] {
			r, err := getEcho(net.JoinHostPort(p.Status.PodIP, "3000"), "/")
			if err != nil || r.Pod != p.Name || r.Namespace != "gateway-conformance-infra" {
				t.Errorf("%s at %s: %+v %v", p.Name, p.Status.PodIP, r, err)
			}
		}
	}
	for _, app := range []string{"gateway-conformance-infra/tls-backend", "gateway-conformance-app-backend/tls-backend"} {
		for _, p := range byApp[app] {
			d := net.Dialer{Timeout: 2 * time.Second}
			conn, err := d.Dial("tcp", net.JoinHostPort(p.Status.PodIP, "8443"))
			if err != nil {
				t.Errorf("%s: TLS port: %v", app, err)
				continue
			}
			conn.Close()
		}
	}
	for _, app := range []string{"gateway-conformance-infra/grpc-infra-backend-v1", "gateway-conformance-infra/tcp-backend"} {
		for _, p := range byApp[app] {
			conn, err := net.DialTimeout("tcp", net.JoinHostPort(p.Status.PodIP, "3000"), 2*time.Second)
			if err != nil {
				t.Errorf("%s %s: %v", app, p.Name, err)
				continue
			}
			conn.Close()
		}
	}
	dns := byApp["gateway-conformance-infra/udp"]
	if len(dns) != 1 {
		t.Fatalf("want one coredns pod, have %d", len(dns))
	}
	ip, err := whoami(dns[0].Status.PodIP, "foo.bar.com.")
	if err != nil {
		t.Fatalf("coredns: %v\n%s", err, env.ContainerLog("gateway-conformance-infra", dns[0].Name, "coredns"))
	}
	if ip.String() != env.NodeIP {
		t.Fatalf("coredns whoami says the query came from %s, want the node %s", ip, env.NodeIP)
	}
}

// whoami asks a DNS server at addr:53 (UDP) for name and returns the
// address CoreDNS's whoami plugin reports in the additional section.
func whoami(addr, name string) (netip.Addr, error) {
	qn, err := dnsmessage.NewName(name)
	if err != nil {
		return netip.Addr{}, err
	}
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 7, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: qn, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	q, err := msg.Pack()
	if err != nil {
		return netip.Addr{}, err
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		conn, err := net.Dial("udp", net.JoinHostPort(addr, "53"))
		if err != nil {
			return netip.Addr{}, err
		}
		conn.SetDeadline(time.Now().Add(time.Second))
		conn.Write(q)
		buf := make([]byte, 1500)
		n, err := conn.Read(buf)
		conn.Close()
		if err != nil {
			lastErr = err
			continue
		}
		var resp dnsmessage.Message
		if err := resp.Unpack(buf[:n]); err != nil {
			return netip.Addr{}, err
		}
		for _, rr := range resp.Additionals {
			if a, ok := rr.Body.(*dnsmessage.AResource); ok && strings.EqualFold(rr.Header.Name.String(), name) {
				return netip.AddrFrom4(a.A), nil
			}
		}
		return netip.Addr{}, fmt.Errorf("no A record for %s in the additional section: %+v", name, resp)
	}
	return netip.Addr{}, lastErr
}
