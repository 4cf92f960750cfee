package discover

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestDiscoverIgnored(t *testing.T) {
	for _, c := range []struct {
		ns, name string
		labels   map[string]string
		want     bool
	}{
		{"default", "kubernetes", nil, true},
		{"team1", "kubernetes", nil, false},
		{"kube-system", "kube-dns", nil, true},
		{"team1", "nginx", nil, false},
		{"team1", "node02-nginx", map[string]string{LabelBackend: "node02"}, true},
	} {
		if got := Ignored(c.ns, c.name, c.labels); got != c.want {
			t.Errorf("Ignored(%s/%s, %v) = %v, want %v", c.ns, c.name, c.labels, got, c.want)
		}
	}
}

func TestDiscoverTranslate(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team1", Name: "nginx", Labels: map[string]string{"run": "nginx"},
			Annotations: map[string]string{"projectcontour.io/upstream-protocol.h2c": "http", lastApplied: "{}"}},
		Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.7", Selector: map[string]string{"run": "nginx"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	m := translateService(svc, "node02")
	if m.Name != "node02-nginx" || m.Namespace != "team1" || m.Spec.ClusterIP != corev1.ClusterIPNone || m.Spec.Selector != nil {
		t.Errorf("mirror = %s/%s clusterIP %q selector %v", m.Namespace, m.Name, m.Spec.ClusterIP, m.Spec.Selector)
	}
	wantLabels := map[string]string{"run": "nginx", LabelBackend: "node02", LabelService: "nginx", LabelManagedBy: ManagedBy}
	if !equalMaps(m.Labels, wantLabels) {
		t.Errorf("labels = %v, want %v", m.Labels, wantLabels)
	}
	if len(m.Annotations) != 1 || m.Annotations["projectcontour.io/upstream-protocol.h2c"] != "http" {
		t.Errorf("annotations = %v", m.Annotations)
	}
	if p := m.Spec.Ports; len(p) != 1 || p[0].Name != "http" || p[0].Port != 80 || p[0].TargetPort.IntValue() != 80 || p[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("ports = %+v", p)
	}
	if svc.Labels[LabelBackend] != "" {
		t.Error("the remote Service's labels were changed")
	}

	yes, no := true, false
	name, port, zone, node := "http", int32(8080), "z1", "remote-node"
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team1", Name: "nginx-abcde",
			Labels: map[string]string{discoveryv1.LabelServiceName: "nginx", discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"172.17.0.10"}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}, Zone: &zone, NodeName: &node,
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "nginx-1"}},
			{Addresses: []string{"172.17.0.11"}, Conditions: discoveryv1.EndpointConditions{Ready: &no}},
			{Addresses: []string{"172.17.0.12"}}, // Ready unset: ready
		},
	}
	ms := translateSlice(sl, "node02", "nginx", m.Name)
	if ms.Name != "node02-nginx-abcde" || ms.Labels[discoveryv1.LabelServiceName] != "node02-nginx" ||
		ms.Labels[discoveryv1.LabelManagedBy] != ManagedBy || ms.Labels[LabelBackend] != "node02" || ms.Labels[LabelService] != "nginx" {
		t.Errorf("slice mirror %s labels %v", ms.Name, ms.Labels)
	}
	if len(ms.Endpoints) != 3 || ms.Endpoints[0].NodeName != nil || ms.Endpoints[0].TargetRef != nil || *ms.Endpoints[0].Zone != "z1" {
		t.Errorf("slice endpoints = %+v", ms.Endpoints)
	}
	if p := ms.Ports; len(p) != 1 || *p[0].Name != "http" || *p[0].Port != 8080 || *p[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("slice ports = %+v", p)
	}
	if n := countReady([]*discoveryv1.EndpointSlice{sl}); n != 2 {
		t.Errorf("countReady = %d, want 2", n)
	}

	ep := translateEndpoints(svc, []*discoveryv1.EndpointSlice{sl}, "node02")
	if ep.Name != "node02-nginx" || ep.Labels[skipMirror] != "true" || ep.Labels[LabelBackend] != "node02" {
		t.Errorf("endpoints %s labels %v", ep.Name, ep.Labels)
	}
	if len(ep.Subsets) != 1 {
		t.Fatalf("subsets = %+v", ep.Subsets)
	}
	s := ep.Subsets[0]
	if len(s.Addresses) != 2 || s.Addresses[0].IP != "172.17.0.10" || s.Addresses[1].IP != "172.17.0.12" ||
		len(s.NotReadyAddresses) != 1 || s.NotReadyAddresses[0].IP != "172.17.0.11" ||
		len(s.Ports) != 1 || s.Ports[0].Name != "http" || s.Ports[0].Port != 8080 {
		t.Errorf("subset = %+v", s)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
