// Package source collects the Kubernetes objects the controller reads —
// Services, EndpointSlices, Secrets, Ingresses, HTTPProxies,
// TLSCertificateDelegations, ExtensionServices, the Gateway API's
// GatewayClasses, Gateways, routes, ReferenceGrants and BackendTLSPolicies
// (with the ConfigMaps holding CA bundles), and the Pods and
// Namespaces that sidecar configuration needs — from a cluster (informers) or from a folder
// of manifests, into a Store that the model builder reads as a snapshot.
package source

import (
	"bytes"
	"reflect"
	"sync"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	contourv1alpha1 "github.com/legateproxy/legate/api/projectcontour/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Objects is one consistent view of every object the controller reads,
// keyed by namespace/name. Builders must treat it as read-only.
type Objects struct {
	Services       map[types.NamespacedName]*corev1.Service
	EndpointSlices map[types.NamespacedName]*discoveryv1.EndpointSlice
	Secrets        map[types.NamespacedName]*corev1.Secret
	Ingresses      map[types.NamespacedName]*networkingv1.Ingress
	HTTPProxies    map[types.NamespacedName]*contourv1.HTTPProxy
	Delegations    map[types.NamespacedName]*contourv1.TLSCertificateDelegation
	// ExtensionServices are the gRPC servers of proxy extensions
	// (HTTPProxy external authorization).
	ExtensionServices map[types.NamespacedName]*contourv1alpha1.ExtensionService
	// Pods and Namespaces feed sidecar configuration only (a pod's
	// ports, labels, ServiceAccount and mesh membership); Namespaces are
	// keyed by name alone.
	Pods       map[types.NamespacedName]*corev1.Pod
	Namespaces map[types.NamespacedName]*corev1.Namespace
	// Gateway API objects (gateway.networking.k8s.io/v1); GatewayClasses
	// are cluster-scoped, keyed by name alone.
	GatewayClasses  map[types.NamespacedName]*gatewayv1.GatewayClass
	Gateways        map[types.NamespacedName]*gatewayv1.Gateway
	HTTPRoutes      map[types.NamespacedName]*gatewayv1.HTTPRoute
	GRPCRoutes      map[types.NamespacedName]*gatewayv1.GRPCRoute
	TLSRoutes       map[types.NamespacedName]*gatewayv1.TLSRoute
	TCPRoutes       map[types.NamespacedName]*gatewayv1.TCPRoute
	ReferenceGrants map[types.NamespacedName]*gatewayv1.ReferenceGrant
	// ListenerSets add listeners to the Gateways that allow them.
	ListenerSets map[types.NamespacedName]*gatewayv1.ListenerSet
	// BackendTLSPolicies configure TLS from the proxy to Services of
	// Gateway API routes; ConfigMaps are kept only when they hold a
	// ca.crt (a BackendTLSPolicy's caCertificateRefs).
	BackendTLSPolicies map[types.NamespacedName]*gatewayv1.BackendTLSPolicy
	ConfigMaps         map[types.NamespacedName]*corev1.ConfigMap
}

// NewObjects returns an empty Objects.
func NewObjects() *Objects {
	return &Objects{
		Services:           map[types.NamespacedName]*corev1.Service{},
		EndpointSlices:     map[types.NamespacedName]*discoveryv1.EndpointSlice{},
		Secrets:            map[types.NamespacedName]*corev1.Secret{},
		Ingresses:          map[types.NamespacedName]*networkingv1.Ingress{},
		HTTPProxies:        map[types.NamespacedName]*contourv1.HTTPProxy{},
		Delegations:        map[types.NamespacedName]*contourv1.TLSCertificateDelegation{},
		ExtensionServices:  map[types.NamespacedName]*contourv1alpha1.ExtensionService{},
		Pods:               map[types.NamespacedName]*corev1.Pod{},
		Namespaces:         map[types.NamespacedName]*corev1.Namespace{},
		GatewayClasses:     map[types.NamespacedName]*gatewayv1.GatewayClass{},
		Gateways:           map[types.NamespacedName]*gatewayv1.Gateway{},
		HTTPRoutes:         map[types.NamespacedName]*gatewayv1.HTTPRoute{},
		GRPCRoutes:         map[types.NamespacedName]*gatewayv1.GRPCRoute{},
		TLSRoutes:          map[types.NamespacedName]*gatewayv1.TLSRoute{},
		TCPRoutes:          map[types.NamespacedName]*gatewayv1.TCPRoute{},
		ReferenceGrants:    map[types.NamespacedName]*gatewayv1.ReferenceGrant{},
		ListenerSets:       map[types.NamespacedName]*gatewayv1.ListenerSet{},
		BackendTLSPolicies: map[types.NamespacedName]*gatewayv1.BackendTLSPolicy{},
		ConfigMaps:         map[types.NamespacedName]*corev1.ConfigMap{},
	}
}

// Kind says which part of the model an object change touches.
type Kind int

// The kinds of change. Endpoints changes only need new EDS resources;
// Pod changes count as endpoints changes: they do not touch the gateway
// model, only sidecar configuration, which is rebuilt on every change.
const (
	KindNone Kind = iota
	KindEndpoints
	KindConfig
)

// Store is the controller's object cache. Sources write to it; the
// controller takes a Snapshot to build from. Every change bumps a
// generation and notifies the Changed channel (coalesced).
type Store struct {
	mu      sync.Mutex
	objs    *Objects
	pending Kind
	changed chan struct{}
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{objs: NewObjects(), changed: make(chan struct{}, 1)}
}

// Changed receives a value after one or more changes since the last Take.
func (s *Store) Changed() <-chan struct{} { return s.changed }

// Take returns a shallow copy of the objects (maps copied, objects shared
// and never mutated) and the widest kind of change since the last Take.
func (s *Store) Take() (*Objects, Kind) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := NewObjects()
	copyMap(o.Services, s.objs.Services)
	copyMap(o.EndpointSlices, s.objs.EndpointSlices)
	copyMap(o.Secrets, s.objs.Secrets)
	copyMap(o.Ingresses, s.objs.Ingresses)
	copyMap(o.HTTPProxies, s.objs.HTTPProxies)
	copyMap(o.Delegations, s.objs.Delegations)
	copyMap(o.ExtensionServices, s.objs.ExtensionServices)
	copyMap(o.Pods, s.objs.Pods)
	copyMap(o.Namespaces, s.objs.Namespaces)
	copyMap(o.GatewayClasses, s.objs.GatewayClasses)
	copyMap(o.Gateways, s.objs.Gateways)
	copyMap(o.HTTPRoutes, s.objs.HTTPRoutes)
	copyMap(o.GRPCRoutes, s.objs.GRPCRoutes)
	copyMap(o.TLSRoutes, s.objs.TLSRoutes)
	copyMap(o.TCPRoutes, s.objs.TCPRoutes)
	copyMap(o.ReferenceGrants, s.objs.ReferenceGrants)
	copyMap(o.ListenerSets, s.objs.ListenerSets)
	copyMap(o.BackendTLSPolicies, s.objs.BackendTLSPolicies)
	copyMap(o.ConfigMaps, s.objs.ConfigMaps)
	k := s.pending
	s.pending = KindNone
	return o, k
}

func onlyEndpointsDiffer(a, b *Objects) bool {
	return reflect.DeepEqual(a.Services, b.Services) && reflect.DeepEqual(a.Secrets, b.Secrets) &&
		reflect.DeepEqual(a.Ingresses, b.Ingresses) && reflect.DeepEqual(a.HTTPProxies, b.HTTPProxies) &&
		reflect.DeepEqual(a.Delegations, b.Delegations) && reflect.DeepEqual(a.ExtensionServices, b.ExtensionServices) &&
		reflect.DeepEqual(a.GatewayClasses, b.GatewayClasses) && reflect.DeepEqual(a.Gateways, b.Gateways) &&
		reflect.DeepEqual(a.HTTPRoutes, b.HTTPRoutes) && reflect.DeepEqual(a.GRPCRoutes, b.GRPCRoutes) &&
		reflect.DeepEqual(a.TLSRoutes, b.TLSRoutes) && reflect.DeepEqual(a.TCPRoutes, b.TCPRoutes) &&
		reflect.DeepEqual(a.ReferenceGrants, b.ReferenceGrants) && reflect.DeepEqual(a.ListenerSets, b.ListenerSets) &&
		reflect.DeepEqual(a.BackendTLSPolicies, b.BackendTLSPolicies) && reflect.DeepEqual(a.ConfigMaps, b.ConfigMaps)
}

func copyMap[V any](dst, src map[types.NamespacedName]V) {
	for k, v := range src {
		dst[k] = v
	}
}

// Upsert adds or replaces an object. Objects of other types are ignored
// and reported false.
func (s *Store) Upsert(obj any) bool { return s.apply(obj, false) }

// Delete removes an object.
func (s *Store) Delete(obj any) bool { return s.apply(obj, true) }

// Touch asks for a full rebuild without any object change (to retry a
// failed status write).
func (s *Store) Touch() {
	s.mu.Lock()
	s.pending = KindConfig
	s.mu.Unlock()
	s.notify()
}

// Replace swaps the whole content (the manifests source reloads a folder).
// When only EndpointSlices differ, the change is an endpoints change.
func (s *Store) Replace(o *Objects) {
	s.mu.Lock()
	kind := KindConfig
	if onlyEndpointsDiffer(s.objs, o) {
		kind = KindEndpoints
	}
	s.objs = o
	s.pending = max(s.pending, kind)
	s.mu.Unlock()
	s.notify()
}

func (s *Store) apply(obj any, del bool) bool {
	s.mu.Lock()
	var kind Kind
	switch o := obj.(type) {
	case *corev1.Service:
		kind = set(s.objs.Services, key(o.Namespace, o.Name), o, del, KindConfig)
	case *discoveryv1.EndpointSlice:
		kind = set(s.objs.EndpointSlices, key(o.Namespace, o.Name), o, del, KindEndpoints)
	case *corev1.ConfigMap:
		k := key(o.Namespace, o.Name)
		if !usefulConfigMap(o) {
			// As for Secrets: one kept before must not go on serving its
			// old CA bundle once its ca.crt is gone.
			_, had := s.objs.ConfigMaps[k]
			if had && !del {
				delete(s.objs.ConfigMaps, k)
				s.pending = max(s.pending, KindConfig)
			}
			s.mu.Unlock()
			if had && !del {
				s.notify()
			}
			return false
		}
		kind = set(s.objs.ConfigMaps, k, o, del, KindConfig)
	case *corev1.Secret:
		k := key(o.Namespace, o.Name)
		if !usefulSecret(o) {
			// Not kept; but a Secret of that name kept before (a TLS
			// Secret updated to another type, or an earlier manifest of
			// the name) must not go on serving its old contents.
			_, had := s.objs.Secrets[k]
			if had && !del {
				delete(s.objs.Secrets, k)
				s.pending = max(s.pending, KindConfig)
			}
			s.mu.Unlock()
			if had && !del {
				s.notify()
			}
			return false
		}
		kind = set(s.objs.Secrets, k, o, del, KindConfig)
	case *networkingv1.Ingress:
		kind = set(s.objs.Ingresses, key(o.Namespace, o.Name), o, del, KindConfig)
	case *contourv1.HTTPProxy:
		kind = set(s.objs.HTTPProxies, key(o.Namespace, o.Name), o, del, KindConfig)
	case *contourv1.TLSCertificateDelegation:
		kind = set(s.objs.Delegations, key(o.Namespace, o.Name), o, del, KindConfig)
	case *contourv1alpha1.ExtensionService:
		kind = set(s.objs.ExtensionServices, key(o.Namespace, o.Name), o, del, KindConfig)
	case *corev1.Pod:
		if !del && samePod(s.objs.Pods[key(o.Namespace, o.Name)], o) {
			// A status-only update (conditions, container states) that
			// trimming left equal: nothing to rebuild.
			s.mu.Unlock()
			return true
		}
		kind = set(s.objs.Pods, key(o.Namespace, o.Name), o, del, KindEndpoints)
	case *corev1.Namespace:
		// A Namespace's labels select Gateway API routes
		// (allowedRoutes.namespaces.selector): a config change.
		kind = set(s.objs.Namespaces, key("", o.Name), o, del, KindConfig)
	case *gatewayv1.GatewayClass:
		kind = set(s.objs.GatewayClasses, key("", o.Name), o, del, KindConfig)
	case *gatewayv1.Gateway:
		kind = set(s.objs.Gateways, key(o.Namespace, o.Name), o, del, KindConfig)
	case *gatewayv1.HTTPRoute:
		kind = set(s.objs.HTTPRoutes, key(o.Namespace, o.Name), o, del, KindConfig)
	case *gatewayv1.GRPCRoute:
		kind = set(s.objs.GRPCRoutes, key(o.Namespace, o.Name), o, del, KindConfig)
	case *gatewayv1.TLSRoute:
		kind = set(s.objs.TLSRoutes, key(o.Namespace, o.Name), o, del, KindConfig)
	case *gatewayv1.TCPRoute:
		kind = set(s.objs.TCPRoutes, key(o.Namespace, o.Name), o, del, KindConfig)
	case *gatewayv1.ReferenceGrant:
		kind = set(s.objs.ReferenceGrants, key(o.Namespace, o.Name), o, del, KindConfig)
	case *gatewayv1.ListenerSet:
		kind = set(s.objs.ListenerSets, key(o.Namespace, o.Name), o, del, KindConfig)
	case *gatewayv1.BackendTLSPolicy:
		kind = set(s.objs.BackendTLSPolicies, key(o.Namespace, o.Name), o, del, KindConfig)
	default:
		s.mu.Unlock()
		return false
	}
	if kind > s.pending {
		s.pending = kind
	}
	s.mu.Unlock()
	s.notify()
	return true
}

func (s *Store) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func set[V any](m map[types.NamespacedName]V, k types.NamespacedName, v V, del bool, kind Kind) Kind {
	if del {
		delete(m, k)
	} else {
		m[k] = v
	}
	return kind
}

func key(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

// usefulSecret keeps only Secrets that can hold a certificate, a key or a
// CA bundle: kubernetes.io/tls, or Opaque with ca.crt (client validation
// and upstream validation CAs), or Opaque with a JSON Web Key Set (an
// HTTPProxy's localJWKS).
func usefulSecret(s *corev1.Secret) bool {
	switch s.Type {
	case corev1.SecretTypeTLS:
		return true
	case corev1.SecretTypeOpaque, "":
		_, ca := s.Data["ca.crt"]
		_, crl := s.Data["crl.pem"]
		return ca || crl || hasJWKS(s)
	}
	return false
}

// usefulConfigMap keeps only ConfigMaps with a ca.crt key: the CA
// bundles of BackendTLSPolicies (caCertificateRefs). Every namespace's
// kube-root-ca.crt is one of them; the rest of a cluster's ConfigMaps are
// never stored.
func usefulConfigMap(c *corev1.ConfigMap) bool {
	_, ok := c.Data["ca.crt"]
	_, bin := c.BinaryData["ca.crt"]
	return ok || bin
}

// trimConfigMap keeps what the controller reads of a ConfigMap (its
// metadata without managed fields and its ca.crt), so that the informer's
// cache of a cluster's ConfigMaps costs little memory.
func trimConfigMap(obj any) (any, error) {
	c, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return obj, nil // a DeletedFinalStateUnknown tombstone
	}
	out := &corev1.ConfigMap{TypeMeta: c.TypeMeta, ObjectMeta: c.ObjectMeta}
	out.ManagedFields = nil
	if v, ok := c.Data["ca.crt"]; ok {
		out.Data = map[string]string{"ca.crt": v}
	}
	if v, ok := c.BinaryData["ca.crt"]; ok {
		out.BinaryData = map[string][]byte{"ca.crt": v}
	}
	return out, nil
}

// hasJWKS reports whether a value of s looks like a JSON Web Key Set (a
// JSON object naming "keys"); the model validates it fully.
func hasJWKS(s *corev1.Secret) bool {
	for _, v := range s.Data {
		if v = bytes.TrimSpace(v); len(v) > 0 && v[0] == '{' && bytes.Contains(v, []byte(`"keys"`)) {
			return true
		}
	}
	return false
}

// samePod reports whether two versions of a pod differ only in their
// resource version.
func samePod(a, b *corev1.Pod) bool {
	if a == nil || b == nil {
		return false
	}
	x, y := *a, *b
	x.ResourceVersion, y.ResourceVersion = "", ""
	return reflect.DeepEqual(&x, &y)
}
