package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/peer"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/legateproxy/legate/internal/mesh"
)

func peerAddr(ctx context.Context) (string, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "", false
	}
	return p.Addr.String(), true
}

// KubeAuthenticator authenticates ServiceAccount tokens with a
// Kubernetes TokenReview, as istiod does.
type KubeAuthenticator struct {
	Client kubernetes.Interface
	// Audiences the token must carry one of (default mesh.TokenAudience).
	Audiences []string
}

// saPrefix starts the user name Kubernetes gives ServiceAccount tokens.
const saPrefix = "system:serviceaccount:"

// Authenticate implements Authenticator.
func (k *KubeAuthenticator) Authenticate(ctx context.Context, token string) (Identity, error) {
	aud := k.Audiences
	if len(aud) == 0 {
		aud = []string{mesh.TokenAudience}
	}
	tr, err := k.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: aud},
	}, metav1.CreateOptions{})
	if err != nil {
		return Identity{}, fmt.Errorf("TokenReview: %w (the controller needs RBAC to create tokenreviews)", err)
	}
	st := tr.Status
	if !st.Authenticated {
		if st.Error != "" {
			return Identity{}, fmt.Errorf("not authenticated: %s", st.Error)
		}
		return Identity{}, errors.New("not authenticated")
	}
	// The API server answers with the audiences the token is valid for
	// among those asked; none means it ignored them (an old server).
	if !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(aud, a) }) {
		return Identity{}, fmt.Errorf("token audiences %v do not include %v (project the token with audience %s)", st.Audiences, aud, mesh.TokenAudience)
	}
	rest, ok := strings.CutPrefix(st.User.Username, saPrefix)
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || sa == "" || strings.Contains(sa, ":") {
		return Identity{}, fmt.Errorf("user %q is not a ServiceAccount (%s<namespace>:<name>)", st.User.Username, saPrefix)
	}
	return Identity{Namespace: ns, ServiceAccount: sa}, nil
}

// RootCertPublisher writes the CA certificate into ConfigMap
// mesh.RootCertConfigMap (key mesh.RootCertKey) of every namespace
// labelled for injection (mesh.InjectLabel or mesh.IstioInjectLabel
// "enabled"), as Istio's namespace controller writes istio-ca-root-cert,
// so that injected pods can mount it and verify the controller.
type RootCertPublisher struct {
	Client kubernetes.Interface
	// RootPEM is the CA certificate.
	RootPEM []byte
	Log     *slog.Logger
	// Resync re-checks every namespace this often (default 10 minutes).
	Resync time.Duration
}

// Meshed reports whether a namespace's labels turn injection on.
func Meshed(labels map[string]string) bool {
	return labels[mesh.InjectLabel] == "enabled" || labels[mesh.IstioInjectLabel] == "enabled"
}

// Run watches namespaces and the ConfigMaps it writes (an edited or
// deleted one is rewritten) until ctx ends. It returns at once; the
// work goes on in the background.
func (p *RootCertPublisher) Run(ctx context.Context) error {
	if p.Log == nil {
		p.Log = slog.Default()
	}
	if p.Resync <= 0 {
		p.Resync = 10 * time.Minute
	}
	nsf := informers.NewSharedInformerFactory(p.Client, p.Resync)
	nsInf := nsf.Core().V1().Namespaces().Informer()
	cmf := informers.NewSharedInformerFactoryWithOptions(p.Client, p.Resync, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", mesh.RootCertConfigMap).String()
	}))
	cmInf := cmf.Core().V1().ConfigMaps().Informer()
	// One worker serialises writes; the queue coalesces bursts.
	queue := make(chan string, 1024)
	enqueue := func(ns string) {
		select {
		case queue <- ns:
		default:
			p.Log.Warn("root certificate publisher: queue full; the namespace is retried at the next resync", "namespace", ns)
		}
	}
	onNS := func(obj any) {
		if n, ok := obj.(*corev1.Namespace); ok && Meshed(n.Labels) {
			enqueue(n.Name)
		}
	}
	if _, err := nsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: onNS, UpdateFunc: func(_, o any) { onNS(o) }}); err != nil {
		return err
	}
	onCM := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if c, ok := obj.(*corev1.ConfigMap); ok {
			enqueue(c.Namespace)
		}
	}
	if _, err := cmInf.AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: func(_, o any) { onCM(o) }, DeleteFunc: onCM}); err != nil {
		return err
	}
	nsf.Start(ctx.Done())
	cmf.Start(ctx.Done())
	go func() {
		// Not waited for by Run: a controller without the RBAC for it
		// still serves xDS, and says what is missing.
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		synced := cache.WaitForCacheSync(sctx.Done(), nsInf.HasSynced, cmInf.HasSynced)
		cancel()
		if !synced && ctx.Err() == nil {
			p.Log.Error("root certificate publisher: cannot list namespaces and configmaps yet (the controller needs RBAC to list and watch them); still trying")
			cache.WaitForCacheSync(ctx.Done(), nsInf.HasSynced, cmInf.HasSynced)
		}
		for {
			select {
			case <-ctx.Done():
				return
			case ns := <-queue:
				obj, exists, err := nsInf.GetStore().GetByKey(ns)
				if err != nil || !exists {
					continue
				}
				if n := obj.(*corev1.Namespace); !Meshed(n.Labels) || n.DeletionTimestamp != nil {
					continue
				}
				if err := p.ensure(ctx, ns); err != nil && ctx.Err() == nil {
					p.Log.Error("root certificate publisher: cannot write the ConfigMap; retried at the next resync", "namespace", ns, "configmap", mesh.RootCertConfigMap, "error", err)
				}
			}
		}
	}()
	return nil
}

// ensure creates or updates the ConfigMap of one namespace.
func (p *RootCertPublisher) ensure(ctx context.Context, ns string) error {
	cms := p.Client.CoreV1().ConfigMaps(ns)
	want := string(p.RootPEM)
	cur, err := cms.Get(ctx, mesh.RootCertConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: mesh.RootCertConfigMap, Namespace: ns,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "legate"}},
			Data: map[string]string{mesh.RootCertKey: want},
		}, metav1.CreateOptions{})
		if err == nil {
			p.Log.Info("wrote the root certificate ConfigMap", "namespace", ns, "configmap", mesh.RootCertConfigMap)
		}
		return err
	case err != nil:
		return err
	}
	if cur.Data[mesh.RootCertKey] == want {
		return nil
	}
	cur = cur.DeepCopy()
	if cur.Data == nil {
		cur.Data = map[string]string{}
	}
	cur.Data[mesh.RootCertKey] = want
	if _, err := cms.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return err
	}
	p.Log.Info("updated the root certificate ConfigMap", "namespace", ns, "configmap", mesh.RootCertConfigMap)
	return nil
}
