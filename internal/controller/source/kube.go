package source

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Kube watches a cluster with informers and feeds the store.
type Kube struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	Log     *slog.Logger
	// Namespace restricts the watch to one namespace (all when empty).
	Namespace string
}

// Run starts the informers, waits until every cache has synced (so the
// first build sees the whole cluster), and returns. Informers stop with ctx.
func (k *Kube) Run(ctx context.Context, st *Store) error {
	f := informers.NewSharedInformerFactoryWithOptions(k.Client, 0, informers.WithNamespace(k.Namespace))
	df := dynamicinformer.NewFilteredDynamicSharedInformerFactory(k.Dynamic, 0, k.Namespace, nil)
	h := handler(st, k.Log)
	var synced []cache.InformerSynced
	for _, inf := range []cache.SharedIndexInformer{
		f.Core().V1().Services().Informer(),
		f.Core().V1().Secrets().Informer(),
		f.Discovery().V1().EndpointSlices().Informer(),
		f.Networking().V1().Ingresses().Informer(),
	} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return err
		}
		synced = append(synced, inf.HasSynced)
	}
	for _, gvr := range []schema.GroupVersionResource{contourv1.HTTPProxyGVR, contourv1.TLSCertificateDelegationGVR} {
		inf := df.ForResource(gvr).Informer()
		if _, err := inf.AddEventHandler(handler(st, k.Log)); err != nil {
			return err
		}
		synced = append(synced, inf.HasSynced)
	}
	f.Start(ctx.Done())
	df.Start(ctx.Done())
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), synced...) {
		return fmt.Errorf("kubernetes informers did not sync within 2 minutes: check the API server address and the controller's RBAC permissions (list/watch services, endpointslices, secrets, ingresses, httpproxies, tlscertificatedelegations)")
	}
	return nil
}

// FromUnstructured converts a dynamic object of projectcontour.io/v1 into
// its typed form; other objects are returned unchanged.
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
	default:
		return nil, fmt.Errorf("unexpected kind %q", u.GetKind())
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, typed); err != nil {
		return nil, fmt.Errorf("%s %s/%s does not match the projectcontour.io/v1 schema: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
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
