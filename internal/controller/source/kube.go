package source

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	contourv1alpha1 "github.com/legateproxy/legate/api/projectcontour/v1alpha1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Kube watches a cluster with informers and feeds the store.
type Kube struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	Log     *slog.Logger
	// Namespace restricts the watch to one namespace (all when empty).
	Namespace string
}

// Run checks that the cluster serves the CRDs the controller reads and
// that it may list what it watches (so that a missing CRD or a missing
// RBAC rule is an error naming it at once, not a cache that never syncs),
// starts the informers, waits until every cache has synced (so the first
// build sees the whole cluster), and returns. Informers stop with ctx.
func (k *Kube) Run(ctx context.Context, st *Store) error {
	gvrs, err := k.checkCRDs()
	if err != nil {
		return err
	}
	// ConfigMaps hold the CA bundles of BackendTLSPolicies: watched only
	// when the cluster serves those.
	configMaps := slices.ContainsFunc(gvrs, func(c CRD) bool { return c.GVR.Resource == "backendtlspolicies" })
	if err := k.checkList(ctx, gvrs, configMaps); err != nil {
		return err
	}
	f := informers.NewSharedInformerFactoryWithOptions(k.Client, 0, informers.WithNamespace(k.Namespace))
	df := dynamicinformer.NewFilteredDynamicSharedInformerFactory(k.Dynamic, 0, k.Namespace, nil)
	h := handler(st, k.Log)
	var synced []cache.InformerSynced
	infs := []cache.SharedIndexInformer{}
	// Namespaces are cluster-scoped: their informer is never restricted
	// to the watched namespace (a namespaced list of them does not exist).
	nf := informers.NewSharedInformerFactory(k.Client, 0)
	if k.canWatchMesh(ctx) {
		pods := f.Core().V1().Pods().Informer()
		if err := pods.SetTransform(trimPod); err != nil {
			return err
		}
		infs = append(infs, pods, nf.Core().V1().Namespaces().Informer())
	}
	if configMaps {
		cms := f.Core().V1().ConfigMaps().Informer()
		if err := cms.SetTransform(trimConfigMap); err != nil {
			return err
		}
		infs = append(infs, cms)
	}
	for _, inf := range append(infs,
		f.Core().V1().Services().Informer(),
		f.Core().V1().Secrets().Informer(),
		f.Discovery().V1().EndpointSlices().Informer(),
		f.Networking().V1().Ingresses().Informer(),
	) {
		if _, err := inf.AddEventHandler(h); err != nil {
			return err
		}
		synced = append(synced, inf.HasSynced)
	}
	// Cluster-scoped resources (GatewayClasses) are watched outside the
	// watched namespace.
	cdf := dynamicinformer.NewDynamicSharedInformerFactory(k.Dynamic, 0)
	for _, c := range gvrs {
		fac := df
		if c.ClusterScoped {
			fac = cdf
		}
		inf := fac.ForResource(c.GVR).Informer()
		if _, err := inf.AddEventHandler(handler(st, k.Log)); err != nil {
			return err
		}
		synced = append(synced, inf.HasSynced)
	}
	f.Start(ctx.Done())
	nf.Start(ctx.Done())
	df.Start(ctx.Done())
	cdf.Start(ctx.Done())
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), synced...) {
		return fmt.Errorf("kubernetes informers did not sync within 2 minutes: the controller may list them, so check the API server's health and the controller's RBAC permissions to watch (list/watch services, endpointslices, secrets, ingresses, httpproxies, tlscertificatedelegations, extensionservices, the Gateway API's gatewayclasses, gateways, httproutes, grpcroutes, tlsroutes, tcproutes, referencegrants, listenersets and backendtlspolicies, with configmaps; pods and namespaces for sidecars)")
	}
	return nil
}

// FromUnstructured converts a dynamic object of projectcontour.io (v1, or
// v1alpha1 for ExtensionService) or gateway.networking.k8s.io/v1 into its
// typed form; other objects are returned unchanged.
func FromUnstructured(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	var typed runtime.Object
	switch u.GetKind() {
	case "HTTPProxy":
		typed = &contourv1.HTTPProxy{}
	case "TLSCertificateDelegation":
		typed = &contourv1.TLSCertificateDelegation{}
	case "ExtensionService":
		typed = &contourv1alpha1.ExtensionService{}
	case "GatewayClass":
		typed = &gatewayv1.GatewayClass{}
	case "Gateway":
		typed = &gatewayv1.Gateway{}
	case "HTTPRoute":
		typed = &gatewayv1.HTTPRoute{}
	case "GRPCRoute":
		typed = &gatewayv1.GRPCRoute{}
	case "TLSRoute":
		typed = &gatewayv1.TLSRoute{}
	case "TCPRoute":
		typed = &gatewayv1.TCPRoute{}
	case "ReferenceGrant":
		typed = &gatewayv1.ReferenceGrant{}
	case "BackendTLSPolicy":
		typed = &gatewayv1.BackendTLSPolicy{}
	case "ListenerSet":
		typed = &gatewayv1.ListenerSet{}
	default:
		return nil, fmt.Errorf("unexpected kind %q", u.GetKind())
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, typed); err != nil {
		return nil, fmt.Errorf("%s %s/%s does not match the %s schema: %w", u.GetKind(), u.GetNamespace(), u.GetName(), u.GetAPIVersion(), err)
	}
	return typed, nil
}

func handler(st *Store, log *slog.Logger) cache.ResourceEventHandlerFuncs {
	conv := func(obj any) any {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		t, err := FromUnstructured(obj)
		if err != nil {
			log.Error("ignoring object", "error", err)
			return nil
		}
		return t
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if o := conv(obj); o != nil {
				st.Upsert(o)
			}
		},
		UpdateFunc: func(_, obj any) {
			if o := conv(obj); o != nil {
				st.Upsert(o)
			}
		},
		DeleteFunc: func(obj any) {
			if o := conv(obj); o != nil {
				st.Delete(o)
			}
		},
	}
}

// trimPod keeps what sidecar configuration reads of a Pod (metadata
// without managed fields, the spec's containers and ServiceAccount, the
// pod IPs and phase), so that a large cluster's pods cost little memory
// and status-only churn (conditions, container states) changes nothing.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a DeletedFinalStateUnknown tombstone
	}
	out := &corev1.Pod{TypeMeta: p.TypeMeta, ObjectMeta: p.ObjectMeta}
	out.ManagedFields = nil
	out.Spec.ServiceAccountName = p.Spec.ServiceAccountName
	out.Spec.NodeName = p.Spec.NodeName
	for _, c := range p.Spec.Containers {
		out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: c.Name, Ports: c.Ports})
	}
	out.Status.Phase = p.Status.Phase
	out.Status.PodIP = p.Status.PodIP
	out.Status.PodIPs = p.Status.PodIPs
	return out, nil
}

// canWatchMesh reports whether the controller may list and watch Pods
// and Namespaces, which only sidecar configuration reads: a deployment
// without the mesh's RBAC (deploy/mesh) keeps working as a gateway
// controller, with a warning, and its sidecars get no inbound ports and
// no mesh mTLS to endpoints.
func (k *Kube) canWatchMesh(ctx context.Context) bool {
	for _, c := range []struct{ resource, ns string }{{"pods", k.Namespace}, {"namespaces", ""}} {
		for _, verb := range []string{"list", "watch"} {
			r, err := k.Client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: c.ns, Verb: verb, Resource: c.resource}}}, metav1.CreateOptions{})
			if err != nil || !r.Status.Allowed {
				why := "denied"
				if err != nil {
					why = err.Error()
				}
				k.Log.Warn("not watching pods and namespaces: sidecar configuration gets no inbound ports and no mesh mTLS to endpoints; grant the controller list/watch on pods and namespaces (deploy/mesh)",
					"resource", c.resource, "verb", verb, "reason", why)
				return false
			}
		}
	}
	return true
}
