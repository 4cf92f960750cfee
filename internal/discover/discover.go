// Package discover is Legate's multi-cluster discovery: it mirrors the
// Services and EndpointSlices of one remote Kubernetes cluster (a
// backend) into the same namespaces of the local cluster, as VMware's
// (Heptio's) Gimbal Kubernetes discoverer did, so that HTTPProxies,
// Ingresses and routes in the local cluster reach the remote cluster's
// endpoints by the mirrored Services' names.
//
// It watches (informers, never polls) the remote Services and
// EndpointSlices, and keeps, for each remote Service ns/name that is not
// ignored (kube-system, default/kubernetes, and remote objects that are
// themselves mirrors), in the local namespace ns:
//
//   - a headless Service named DiscoveredName(backend, name) with the
//     remote ports, labels and annotations;
//   - one EndpointSlice per remote EndpointSlice of the Service, with
//     kubernetes.io/service-name set to the mirror (what Legate's
//     controller routes to);
//   - optionally the v1 Endpoints Gimbal wrote, built from the slices.
//
// Every object it writes carries LabelBackend=backend and LabelService=
// name, and it never changes or deletes an object without its own
// backend's label: discoverers of several backends share a cluster. A
// mirror whose remote Service is gone is deleted, also at start-up
// (local mirrors are listed by label, so a Service deleted while the
// discoverer was down does not linger). A namespace missing locally is
// not created (Gimbal did not either): the Service is logged, counted as
// invalid, and mirrored as soon as the namespace appears.
package discover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// permanentRetry is how long a Service that cannot be mirrored waits
// before it is tried again.
const permanentRetry = time.Minute

// Discoverer mirrors one remote cluster into the local one. Set the
// fields, then call Run once.
type Discoverer struct {
	// Remote is a client of the remote cluster (the backend): it needs
	// list and watch on services and endpointslices in all namespaces.
	Remote kubernetes.Interface
	// Local is a client of the local cluster: it needs get, list, watch,
	// create, update and delete on services, endpoints and
	// endpointslices, and list and watch on namespaces.
	Local kubernetes.Interface
	// Backend names the remote cluster (ValidateBackendName): it starts
	// every mirror's name and labels every mirror.
	Backend string
	// Log gets a line for every object created, updated or deleted, and
	// for every failure.
	Log *slog.Logger
	// Metrics, if set, records what is synced (NewMetrics).
	Metrics *Metrics
	// Resync is the informers' resync period (Gimbal's --resync-interval):
	// every remote Service and local mirror is synced again that often,
	// which repairs mirrors changed by hand. Zero never resyncs.
	Resync time.Duration
	// Workers is how many Services are synced at once (Gimbal's
	// --num-threads; default 2).
	Workers int
	// Endpoints also writes the v1 Endpoints of each mirror, as Gimbal
	// did (for consumers that still read Endpoints); when false, the
	// discoverer deletes the Endpoints it wrote before.
	Endpoints bool

	queue  workqueue.TypedRateLimitingInterface[string]
	synced atomic.Bool

	remoteServices corelisters.ServiceLister
	remoteSlices   discoverylisters.EndpointSliceLister
	localServices  corelisters.ServiceLister
	localSlices    discoverylisters.EndpointSliceLister
	localEndpoints corelisters.EndpointsLister
	namespaces     corelisters.NamespaceLister

	mu sync.Mutex
	// replicated holds the keys (namespace/name of the remote Service)
	// mirrored, invalid those that could not be (their namespace is
	// missing locally), for the per-namespace metrics.
	replicated, invalid map[string]bool
}

// Synced reports whether the discoverer has read both clusters and
// started syncing.
func (d *Discoverer) Synced() bool { return d.synced.Load() }

// Run checks that both clusters let the discoverer list what it watches,
// starts the informers, waits for their caches, then syncs every remote
// Service and every local mirror of the backend, and goes on following
// changes until ctx ends. It returns an error only when it cannot start.
func (d *Discoverer) Run(ctx context.Context) error {
	if err := ValidateBackendName(d.Backend); err != nil {
		return err
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Workers < 1 {
		d.Workers = 2
	}
	d.replicated, d.invalid = map[string]bool{}, map[string]bool{}
	if err := d.checkAccess(ctx); err != nil {
		return err
	}
	d.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, time.Minute),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "discover"})
	defer d.queue.ShutDown()

	remote := informers.NewSharedInformerFactory(d.Remote, d.Resync)
	// Only this backend's mirrors are read (and so can be changed).
	local := informers.NewSharedInformerFactoryWithOptions(d.Local, d.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = LabelBackend + "=" + ShortenLabelValue(d.Backend) }))
	nsf := informers.NewSharedInformerFactory(d.Local, d.Resync)

	rs, rsl := remote.Core().V1().Services(), remote.Discovery().V1().EndpointSlices()
	ls, lsl, le := local.Core().V1().Services(), local.Discovery().V1().EndpointSlices(), local.Core().V1().Endpoints()
	ns := nsf.Core().V1().Namespaces()
	d.remoteServices, d.remoteSlices = rs.Lister(), rsl.Lister()
	d.localServices, d.localSlices, d.localEndpoints = ls.Lister(), lsl.Lister(), le.Lister()
	d.namespaces = ns.Lister()

	byName := func(o metav1.Object) []string { return []string{o.GetNamespace() + "/" + o.GetName()} }
	byLabel := func(label string) func(o metav1.Object) []string {
		return func(o metav1.Object) []string {
			if v := o.GetLabels()[label]; v != "" {
				return []string{o.GetNamespace() + "/" + v}
			}
			return nil
		}
	}
	handlers := []struct {
		inf  cache.SharedIndexInformer
		keys func(metav1.Object) []string
	}{
		{rs.Informer(), byName},
		{rsl.Informer(), byLabel(discoveryv1.LabelServiceName)},
		{ls.Informer(), byLabel(LabelService)},
		{lsl.Informer(), byLabel(LabelService)},
		{le.Informer(), byLabel(LabelService)},
		// A namespace created locally: its remote Services can be mirrored now.
		{ns.Informer(), func(o metav1.Object) []string { return d.remoteKeys(o.GetName()) }},
	}
	var synced []cache.InformerSynced
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(d.enqueuer(h.keys)); err != nil {
			return fmt.Errorf("discover: informer: %w", err)
		}
		synced = append(synced, h.inf.HasSynced)
	}
	remote.Start(ctx.Done())
	local.Start(ctx.Done())
	nsf.Start(ctx.Done())
	defer remote.Shutdown()
	defer local.Shutdown()
	defer nsf.Shutdown()
	d.Log.Info("waiting for the remote and local caches", "backend", d.Backend)
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("discover: the informers' caches did not sync")
	}
	d.synced.Store(true)
	d.Log.Info("caches synced: mirroring", "backend", d.Backend, "remote_services", len(d.remoteKeys("")), "workers", d.Workers)
	var wg sync.WaitGroup
	for range d.Workers {
		wg.Go(func() {
			for d.next(ctx) {
			}
		})
	}
	<-ctx.Done()
	d.queue.ShutDown()
	wg.Wait()
	return nil
}

// checkAccess lists one of each kind the discoverer watches, so that a
// wrong kubeconfig or a missing RBAC rule is an error naming it, not a
// cache that never syncs.
func (d *Discoverer) checkAccess(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	one := metav1.ListOptions{Limit: 1}
	checks := []struct {
		where, what string
		list        func() error
	}{
		{"remote", "services", func() error { _, err := d.Remote.CoreV1().Services("").List(ctx, one); return err }},
		{"remote", "endpointslices", func() error { _, err := d.Remote.DiscoveryV1().EndpointSlices("").List(ctx, one); return err }},
		{"local", "services", func() error { _, err := d.Local.CoreV1().Services("").List(ctx, one); return err }},
		{"local", "endpointslices", func() error { _, err := d.Local.DiscoveryV1().EndpointSlices("").List(ctx, one); return err }},
		{"local", "endpoints", func() error { _, err := d.Local.CoreV1().Endpoints("").List(ctx, one); return err }},
		{"local", "namespaces", func() error { _, err := d.Local.CoreV1().Namespaces().List(ctx, one); return err }},
	}
	for _, c := range checks {
		err := c.list()
		if err == nil {
			continue
		}
		if c.where == "remote" {
			if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
				return fmt.Errorf("remote cluster (backend %s): list %s: %w: the remote kubeconfig's user needs list and watch on services and endpointslices in all namespaces (deploy/discover/remote-rbac.yaml)", d.Backend, c.what, err)
			}
			return fmt.Errorf("remote cluster (backend %s): list %s: %w: check the remote kubeconfig (--discover-kubecfg-file) and that its API server is reachable", d.Backend, c.what, err)
		}
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			return fmt.Errorf("local cluster: list %s: %w: the discoverer needs write access to services, endpoints and endpointslices and to list namespaces (deploy/discover/discover.yaml)", c.what, err)
		}
		return fmt.Errorf("local cluster: list %s: %w: check --kubeconfig (or the Pod's service account)", c.what, err)
	}
	return nil
}

// enqueuer queues the keys (remote namespace/name) an object's change
// concerns: of the object before and after an update, and of a deleted
// object's last known state.
func (d *Discoverer) enqueuer(keys func(metav1.Object) []string) cache.ResourceEventHandlerFuncs {
	add := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		o, ok := obj.(metav1.Object)
		if !ok || o.GetNamespace() == kubeSystem {
			return
		}
		for _, k := range keys(o) {
			d.queue.Add(k)
		}
		d.metricsQueue()
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    add,
		UpdateFunc: func(old, cur any) { add(old); add(cur) },
		DeleteFunc: add,
	}
}

// remoteKeys are the keys of the remote Services of namespace ns (all
// namespaces for "").
func (d *Discoverer) remoteKeys(ns string) []string {
	svcs, err := d.remoteServices.Services(ns).List(labels.Everything())
	if err != nil {
		return nil
	}
	keys := make([]string, 0, len(svcs))
	for _, s := range svcs {
		if !Ignored(s.Namespace, s.Name, s.Labels) {
			keys = append(keys, s.Namespace+"/"+s.Name)
		}
	}
	return keys
}

func (d *Discoverer) metricsQueue() {
	if d.Metrics != nil {
		d.Metrics.queue(d.queue.Len())
	}
}

// permanentError is a sync failure retrying cannot fix (an object of
// another owner in the way): the next resync or change tries again.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// next syncs one queued key; false when the queue is shut down. A failed
// sync is retried with an exponential backoff (up to a minute).
func (d *Discoverer) next(ctx context.Context) bool {
	key, shutdown := d.queue.Get()
	if shutdown {
		return false
	}
	defer d.queue.Done(key)
	d.metricsQueue()
	err := d.sync(ctx, key)
	var perm permanentError
	switch {
	case err == nil:
		d.queue.Forget(key)
		if d.Metrics != nil {
			d.Metrics.synced(time.Now())
		}
	case ctx.Err() != nil:
	case errors.As(err, &perm):
		d.queue.Forget(key)
		d.Log.Error("cannot mirror the service", "backend", d.Backend, "service", key, "error", err)
		// What is in the way (a user's object of the mirror's name, a
		// missing namespace) has no label of ours: no local event tells
		// when it goes, so try again later even without a resync.
		d.queue.AddAfter(key, permanentRetry)
	default:
		if d.Metrics != nil {
			d.Metrics.discovererError(errSync)
		}
		d.Log.Warn("mirroring the service failed: retrying", "backend", d.Backend, "service", key, "error", err, "retries", d.queue.NumRequeues(key))
		d.queue.AddRateLimited(key)
	}
	return true
}

// sync makes the local mirrors of the remote Service key (namespace/name)
// what the remote cluster says: created or updated when the remote
// Service exists and is not ignored, deleted otherwise.
func (d *Discoverer) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return permanentError{err}
	}
	remote, err := d.remoteServices.Services(ns).Get(name)
	if apierrors.IsNotFound(err) || (err == nil && Ignored(ns, name, remote.Labels)) {
		return d.remove(ctx, ns, name)
	}
	if err != nil {
		return err
	}
	mirror := DiscoveredName(d.Backend, name)
	if _, err := d.namespaces.Get(ns); apierrors.IsNotFound(err) {
		if d.mark(d.invalid, key, true) {
			d.Log.Warn("namespace missing in the local cluster: the service is mirrored once it is created", "backend", d.Backend, "service", key, "mirror", mirror)
			if d.Metrics != nil {
				d.Metrics.serviceError(ns, mirror, errNamespace)
			}
		}
		d.mark(d.replicated, key, false)
		d.namespaceMetrics(ns)
		return nil
	}
	d.mark(d.invalid, key, false)

	svc, err := ensure(ctx, d, "Service", d.Local.CoreV1().Services(ns), d.localServices.Services(ns).Get,
		translateService(remote, d.Backend), sameService, applyService)
	if err != nil {
		return err
	}
	owner := []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID, Controller: ptr(true)}}

	all, err := d.remoteSlices.EndpointSlices(ns).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: name}))
	if err != nil {
		return err
	}
	var slices []*discoveryv1.EndpointSlice
	want := map[string]bool{}
	for _, s := range all {
		if _, mirrored := s.Labels[LabelBackend]; mirrored {
			continue
		}
		slices = append(slices, s)
		m := translateSlice(s, d.Backend, name, mirror)
		m.OwnerReferences = owner
		want[m.Name] = true
		if _, err := ensure(ctx, d, "EndpointSlice", d.Local.DiscoveryV1().EndpointSlices(ns), d.localSlices.EndpointSlices(ns).Get,
			m, sameSlice, applySlice); err != nil {
			return err
		}
	}
	mine := labels.SelectorFromSet(labels.Set{LabelService: ShortenLabelValue(name)})
	have, err := d.localSlices.EndpointSlices(ns).List(mine)
	if err != nil {
		return err
	}
	for _, s := range have {
		if !want[s.Name] {
			if err := del(ctx, d, "EndpointSlice", d.Local.DiscoveryV1().EndpointSlices(ns), s); err != nil {
				return err
			}
		}
	}
	if d.Endpoints {
		ep := translateEndpoints(remote, slices, d.Backend)
		ep.OwnerReferences = owner
		if _, err := ensure(ctx, d, "Endpoints", d.Local.CoreV1().Endpoints(ns), d.localEndpoints.Endpoints(ns).Get,
			ep, sameEndpoints, applyEndpoints); err != nil {
			return err
		}
	} else if err := d.removeEndpoints(ctx, ns, mine); err != nil {
		return err
	}
	d.mark(d.replicated, key, true)
	if d.Metrics != nil {
		n := countReady(slices)
		d.Metrics.service(ns, mirror, name, n, n, time.Now())
	}
	d.namespaceMetrics(ns)
	return nil
}

// remove deletes the local mirrors of the remote Service ns/name.
func (d *Discoverer) remove(ctx context.Context, ns, name string) error {
	mine := labels.SelectorFromSet(labels.Set{LabelService: ShortenLabelValue(name)})
	slices, err := d.localSlices.EndpointSlices(ns).List(mine)
	if err != nil {
		return err
	}
	for _, s := range slices {
		if err := del(ctx, d, "EndpointSlice", d.Local.DiscoveryV1().EndpointSlices(ns), s); err != nil {
			return err
		}
	}
	if err := d.removeEndpoints(ctx, ns, mine); err != nil {
		return err
	}
	svcs, err := d.localServices.Services(ns).List(mine)
	if err != nil {
		return err
	}
	for _, s := range svcs {
		if err := del(ctx, d, "Service", d.Local.CoreV1().Services(ns), s); err != nil {
			return err
		}
	}
	key := ns + "/" + name
	d.mark(d.invalid, key, false)
	if d.mark(d.replicated, key, false) && d.Metrics != nil {
		d.Metrics.forget(ns, DiscoveredName(d.Backend, name), name)
	}
	d.namespaceMetrics(ns)
	return nil
}

func (d *Discoverer) removeEndpoints(ctx context.Context, ns string, mine labels.Selector) error {
	eps, err := d.localEndpoints.Endpoints(ns).List(mine)
	if err != nil {
		return err
	}
	for _, e := range eps {
		if err := del(ctx, d, "Endpoints", d.Local.CoreV1().Endpoints(ns), e); err != nil {
			return err
		}
	}
	return nil
}

// mark sets or clears key in set and reports whether that changed it.
func (d *Discoverer) mark(set map[string]bool, key string, on bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if set[key] == on {
		return false
	}
	if on {
		set[key] = true
	} else {
		delete(set, key)
	}
	return true
}

// namespaceMetrics sets the service counts of namespace ns.
func (d *Discoverer) namespaceMetrics(ns string) {
	if d.Metrics == nil {
		return
	}
	upstream := len(d.remoteKeys(ns))
	d.mu.Lock()
	replicated, invalid := 0, 0
	for k := range d.replicated {
		if n, _, _ := cache.SplitMetaNamespaceKey(k); n == ns {
			replicated++
		}
	}
	for k := range d.invalid {
		if n, _, _ := cache.SplitMetaNamespaceKey(k); n == ns {
			invalid++
		}
	}
	d.mu.Unlock()
	d.Metrics.namespace(ns, upstream, replicated, invalid)
}

// object is what the discoverer writes: a typed Kubernetes object.
type object[T any] interface {
	metav1.Object
	DeepCopy() T
}

// client is the typed client of one kind in one namespace.
type client[T any] interface {
	Create(context.Context, T, metav1.CreateOptions) (T, error)
	Update(context.Context, T, metav1.UpdateOptions) (T, error)
	Get(context.Context, string, metav1.GetOptions) (T, error)
	Delete(context.Context, string, metav1.DeleteOptions) error
}

// ensure makes the local object named as want what want says: created
// when missing, updated (apply(copy of current, want)) when same says it
// differs. An object of that name that is not this backend's is left
// alone (a permanentError). The current object is read from the cache
// (get) first.
func ensure[T object[T]](ctx context.Context, d *Discoverer, kind string, c client[T], get func(string) (T, error), want T,
	same func(cur, want T) bool, apply func(cur, want T) T) (T, error) {
	var zero T
	ref := kind + " " + want.GetNamespace() + "/" + want.GetName()
	cur, err := get(want.GetName())
	if apierrors.IsNotFound(err) {
		out, err := c.Create(ctx, want, metav1.CreateOptions{})
		if err == nil {
			d.Log.Info("created the mirror", "backend", d.Backend, "kind", kind, "namespace", want.GetNamespace(), "name", want.GetName(), "service", want.GetLabels()[LabelService])
			return out, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			d.objectError(kind, want, errAdd)
			return zero, fmt.Errorf("create %s: %w", ref, err)
		}
		// Not in the cache: the cache lags, or the object is not ours.
		if cur, err = c.Get(ctx, want.GetName(), metav1.GetOptions{}); err != nil {
			d.objectError(kind, want, errAdd)
			return zero, fmt.Errorf("get %s: %w", ref, err)
		}
		if b := cur.GetLabels()[LabelBackend]; b != ShortenLabelValue(d.Backend) {
			d.objectError(kind, want, errConflict)
			owner := "has no " + LabelBackend + " label"
			if b != "" {
				owner = "belongs to backend " + b
			}
			return zero, permanentError{fmt.Errorf("%s exists and %s: left alone; delete or rename it to let backend %s mirror its service", ref, owner, d.Backend)}
		}
	} else if err != nil {
		return zero, err
	}
	if same(cur, want) {
		return cur, nil
	}
	out, err := c.Update(ctx, apply(cur.DeepCopy(), want), metav1.UpdateOptions{})
	if err != nil {
		d.objectError(kind, want, errUpdate)
		return zero, fmt.Errorf("update %s: %w", ref, err)
	}
	d.Log.Info("updated the mirror", "backend", d.Backend, "kind", kind, "namespace", want.GetNamespace(), "name", want.GetName(), "service", want.GetLabels()[LabelService])
	return out, nil
}

// del deletes the local object o (one of this backend's), unless it has
// been replaced since it was read.
func del[T object[T]](ctx context.Context, d *Discoverer, kind string, c client[T], o T) error {
	uid := o.GetUID()
	err := c.Delete(ctx, o.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	if err != nil {
		d.objectError(kind, o, errDelete)
		return fmt.Errorf("delete %s %s/%s: %w", kind, o.GetNamespace(), o.GetName(), err)
	}
	d.Log.Info("deleted the mirror", "backend", d.Backend, "kind", kind, "namespace", o.GetNamespace(), "name", o.GetName(), "service", o.GetLabels()[LabelService])
	return nil
}

// objectError counts a failure on a mirror: Services in
// gimbal_service_error_total, Endpoints and EndpointSlices in
// gimbal_endpoints_error_total.
func (d *Discoverer) objectError(kind string, o metav1.Object, errType string) {
	if d.Metrics == nil {
		return
	}
	if kind == "Service" {
		d.Metrics.serviceError(o.GetNamespace(), o.GetName(), errType)
	} else {
		d.Metrics.endpointsError(o.GetNamespace(), o.GetName(), errType)
	}
}

func sameMeta(cur, want metav1.Object) bool {
	return equality.Semantic.DeepEqual(cur.GetLabels(), want.GetLabels()) &&
		equality.Semantic.DeepEqual(cur.GetAnnotations(), want.GetAnnotations()) &&
		equality.Semantic.DeepEqual(cur.GetOwnerReferences(), want.GetOwnerReferences())
}

func applyMeta(cur, want metav1.Object) {
	cur.SetLabels(want.GetLabels())
	cur.SetAnnotations(want.GetAnnotations())
	cur.SetOwnerReferences(want.GetOwnerReferences())
}

func sameService(cur, want *corev1.Service) bool {
	return sameMeta(cur, want) && equality.Semantic.DeepEqual(cur.Spec.Ports, want.Spec.Ports)
}

func applyService(cur, want *corev1.Service) *corev1.Service {
	applyMeta(cur, want)
	cur.Spec.Ports = want.Spec.Ports
	return cur
}

func sameSlice(cur, want *discoveryv1.EndpointSlice) bool {
	return sameMeta(cur, want) && cur.AddressType == want.AddressType &&
		equality.Semantic.DeepEqual(cur.Ports, want.Ports) && equality.Semantic.DeepEqual(cur.Endpoints, want.Endpoints)
}

func applySlice(cur, want *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	applyMeta(cur, want)
	cur.Ports, cur.Endpoints = want.Ports, want.Endpoints
	return cur
}

func sameEndpoints(cur, want *corev1.Endpoints) bool {
	return sameMeta(cur, want) && equality.Semantic.DeepEqual(cur.Subsets, want.Subsets)
}

func applyEndpoints(cur, want *corev1.Endpoints) *corev1.Endpoints {
	applyMeta(cur, want)
	cur.Subsets = want.Subsets
	return cur
}

func ptr[T any](v T) *T { return &v }
