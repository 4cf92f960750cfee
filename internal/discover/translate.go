package discover

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The remote objects Gimbal's discoverer ignored, and so does this one.
const (
	kubeSystem = "kube-system"
	// kubernetesService in the default namespace is the remote API
	// server itself.
	kubernetesService = "kubernetes"
)

// skipMirror is Kubernetes' label that keeps its EndpointSlice mirroring
// controller from copying the Endpoints the discoverer writes into
// EndpointSlices of its own (the discoverer writes those itself).
const skipMirror = "endpointslice.kubernetes.io/skip-mirror"

// lastApplied is kubectl's annotation, not copied: it would make kubectl
// apply in the local cluster believe it wrote the mirror.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// Ignored reports whether the remote object ns/name with labels is not
// mirrored: everything in kube-system, the API server's own Service
// default/kubernetes, and objects that carry LabelBackend (mirrors made
// by a discoverer in the remote cluster: mirroring them again would
// chain clusters into loops). These are Gimbal's rules.
func Ignored(ns, name string, labels map[string]string) bool {
	_, mirrored := labels[LabelBackend]
	return mirrored || ns == kubeSystem || (ns == metav1.NamespaceDefault && name == kubernetesService)
}

// mirrorLabels is labels with the discoverer's own on top: LabelBackend,
// LabelService (the remote Service's name) and LabelManagedBy.
func mirrorLabels(labels map[string]string, backend, service string) map[string]string {
	out := make(map[string]string, len(labels)+3)
	for k, v := range labels {
		out[k] = v
	}
	out[LabelBackend] = ShortenLabelValue(backend)
	out[LabelService] = ShortenLabelValue(service)
	out[LabelManagedBy] = ManagedBy
	return out
}

func copyAnnotations(a map[string]string) map[string]string {
	var out map[string]string
	for k, v := range a {
		if k == lastApplied {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(a))
		}
		out[k] = v
	}
	return out
}

// translateService is the local mirror of the remote Service svc, as
// Gimbal wrote it: named DiscoveredName(backend, svc.Name) in the same
// namespace, with the remote labels (plus the discoverer's) and
// annotations (Contour's projectcontour.io/upstream-protocol.* among
// them), headless (ClusterIP None, no selector: its endpoints are the
// discoverer's) and with the remote ports' names, numbers and protocols.
// A route to the mirror picks the endpoints of a port by its name, as
// Kubernetes does; their port numbers are the remote target ports.
func translateService(svc *corev1.Service, backend string) *corev1.Service {
	out := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   svc.Namespace,
			Name:        DiscoveredName(backend, svc.Name),
			Labels:      mirrorLabels(svc.Labels, backend, svc.Name),
			Annotations: copyAnnotations(svc.Annotations),
		},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: corev1.ClusterIPNone},
	}
	for _, p := range svc.Spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		// The target port is the port itself, as the API server defaults
		// it (set here so that a mirror compares equal to what it reads).
		out.Spec.Ports = append(out.Spec.Ports, corev1.ServicePort{Name: p.Name, Port: p.Port, Protocol: proto,
			AppProtocol: p.AppProtocol, TargetPort: intstr.FromInt32(p.Port)})
	}
	return out
}

// translateSlice is the local mirror of the remote EndpointSlice s of the
// remote Service service, for the local Service mirror: named
// DiscoveredName(backend, s.Name), labelled kubernetes.io/service-name=
// mirror (what makes it the mirror's endpoints for Legate's controller,
// Contour and kube-proxy alike) and endpointslice.kubernetes.io/managed-by=
// ManagedBy, with the remote addresses, conditions, zones and ports. What
// names remote objects (target Pods, node names) and topology hints are
// not copied: they mean nothing in the local cluster.
func translateSlice(s *discoveryv1.EndpointSlice, backend, service, mirror string) *discoveryv1.EndpointSlice {
	labels := mirrorLabels(s.Labels, backend, service)
	labels[discoveryv1.LabelServiceName] = mirror
	labels[discoveryv1.LabelManagedBy] = ManagedBy
	out := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   s.Namespace,
			Name:        DiscoveredName(backend, s.Name),
			Labels:      labels,
			Annotations: copyAnnotations(s.Annotations),
		},
		AddressType: s.AddressType,
	}
	for _, p := range s.Ports {
		// The API server's defaults (an empty name, TCP), set here so that
		// a mirror compares equal to what it reads back.
		name, proto := "", corev1.ProtocolTCP
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		out.Ports = append(out.Ports, discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: p.Port, AppProtocol: p.AppProtocol})
	}
	for _, e := range s.Endpoints {
		out.Endpoints = append(out.Endpoints, discoveryv1.Endpoint{
			Addresses:  append([]string(nil), e.Addresses...),
			Conditions: e.Conditions,
			Hostname:   e.Hostname,
			Zone:       e.Zone,
		})
	}
	return out
}

// ready reports whether an endpoint serves: its Ready condition, which
// unset means ready (the EndpointSlice API's rule).
func ready(e discoveryv1.Endpoint) bool {
	return e.Conditions.Ready == nil || *e.Conditions.Ready
}

// countReady is the number of ready addresses of slices (Gimbal counted
// the addresses of the Endpoints' subsets, which are the ready ones).
func countReady(slices []*discoveryv1.EndpointSlice) int {
	n := 0
	for _, s := range slices {
		for _, e := range s.Endpoints {
			if ready(e) {
				n += len(e.Addresses)
			}
		}
	}
	return n
}

// translateEndpoints is the v1 Endpoints of the mirror of the remote
// Service svc, which Gimbal wrote (it watched Endpoints; they are built
// here from the remote EndpointSlices, one subset per IP slice): for
// what still reads Endpoints. It is labelled skip-mirror, so that
// Kubernetes does not copy it into EndpointSlices besides the
// discoverer's.
func translateEndpoints(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, backend string) *corev1.Endpoints {
	labels := mirrorLabels(svc.Labels, backend, svc.Name)
	labels[skipMirror] = "true"
	out := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: svc.Namespace,
			Name:      DiscoveredName(backend, svc.Name),
			Labels:    labels,
		},
	}
	sorted := append([]*discoveryv1.EndpointSlice(nil), slices...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, s := range sorted {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		var sub corev1.EndpointSubset
		for _, e := range s.Endpoints {
			for _, a := range e.Addresses {
				ea := corev1.EndpointAddress{IP: a}
				if e.Hostname != nil {
					ea.Hostname = *e.Hostname
				}
				if ready(e) {
					sub.Addresses = append(sub.Addresses, ea)
				} else {
					sub.NotReadyAddresses = append(sub.NotReadyAddresses, ea)
				}
			}
		}
		if len(sub.Addresses) == 0 && len(sub.NotReadyAddresses) == 0 {
			continue
		}
		for _, p := range s.Ports {
			if p.Port == nil {
				continue
			}
			ep := corev1.EndpointPort{Port: *p.Port, Protocol: corev1.ProtocolTCP, AppProtocol: p.AppProtocol}
			if p.Name != nil {
				ep.Name = *p.Name
			}
			if p.Protocol != nil {
				ep.Protocol = *p.Protocol
			}
			sub.Ports = append(sub.Ports, ep)
		}
		out.Subsets = append(out.Subsets, sub)
	}
	return out
}
