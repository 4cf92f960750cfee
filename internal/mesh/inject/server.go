package inject

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admregv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/legateproxy/legate/internal/mesh"
)

// CA signs the webhook's serving certificate; its certificate is the
// caBundle the API server verifies the webhook with.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// PEM is Cert, PEM-encoded.
	PEM []byte
}

// LoadCA reads a PEM certificate and its PEM (PKCS#8, EC or PKCS#1) key,
// such as the ca.crt and ca.key `legate certgen` writes.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("CA certificate: no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("CA certificate is not a CA (basicConstraints CA:false)")
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("CA key: no PEM block")
	}
	var key any
	switch kb.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kb.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(kb.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("CA key: %T cannot sign", key)
	}
	return &CA{Cert: cert, Key: signer, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})}, nil
}

// NewCA makes a self-signed CA in memory, valid for lifetime.
func NewCA(lifetime time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "legate-sidecar-injector-ca", Organization: []string{"legate"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(lifetime),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// ServingCert issues a server certificate for the DNS names and IPs.
func (ca *CA) ServingCert(dns []string, ips []net.IP, lifetime time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	cn := "legate-sidecar-injector"
	if len(dns) > 0 {
		cn = dns[0]
	}
	now := time.Now()
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn, Organization: []string{"legate"}},
		NotBefore: now.Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: dns, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("sign the webhook certificate: %w", err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

// WebhookConfig describes the MutatingWebhookConfiguration that sends
// pod creations to the injector.
type WebhookConfig struct {
	// Name of the configuration (default mesh.InjectorName).
	Name string
	// URL, when set, is where the API server calls the webhook
	// (clientConfig.url: a controller outside the cluster, and tests);
	// otherwise it calls Service.
	URL string
	// Service is the webhook's Service (clientConfig.service).
	Service ServiceRef
	// FailurePolicy: Fail (Istio's default: a pod in a meshed namespace
	// is never created without its sidecar) or Ignore.
	FailurePolicy admregv1.FailurePolicyType
	// TimeoutSeconds the API server waits (default 10).
	TimeoutSeconds int32
}

// ServiceRef is the webhook's Service.
type ServiceRef struct {
	Namespace, Name string
	Port            int32
}

// Names are the DNS names (and IPs) the serving certificate must hold
// for the API server to verify it.
func (w WebhookConfig) Names() (dns []string, ips []net.IP, err error) {
	if w.URL != "" {
		u, err := url.Parse(w.URL)
		if err != nil || u.Scheme != "https" || u.Hostname() == "" {
			return nil, nil, fmt.Errorf("webhook URL %q: use https://HOST[:PORT]%s", w.URL, Path)
		}
		if ip := net.ParseIP(u.Hostname()); ip != nil {
			return nil, []net.IP{ip}, nil
		}
		return []string{u.Hostname()}, nil, nil
	}
	s := w.Service
	if s.Name == "" || s.Namespace == "" {
		return nil, nil, errors.New("webhook: neither a URL nor a Service (namespace and name) is set")
	}
	// The API server calls <svc>.<ns>.svc; the other forms serve
	// clients that resolve the short names.
	return []string{s.Name + "." + s.Namespace + ".svc", s.Name + "." + s.Namespace + ".svc.cluster.local", s.Name + "." + s.Namespace, s.Name}, nil, nil
}

func (w *WebhookConfig) defaults() error {
	if w.Name == "" {
		w.Name = mesh.InjectorName
	}
	if w.TimeoutSeconds == 0 {
		w.TimeoutSeconds = 10
	}
	if w.Service.Port == 0 {
		w.Service.Port = 443
	}
	switch w.FailurePolicy {
	case "":
		w.FailurePolicy = admregv1.Fail
	case admregv1.Fail, admregv1.Ignore:
	default:
		return fmt.Errorf("webhook failure policy %q: use Fail or Ignore", w.FailurePolicy)
	}
	return nil
}

// Build makes the configuration, with caBundle. As Istio's, it has one
// webhook per way a pod is selected: its namespace labelled
// legate-injection=enabled, or istio-injection=enabled, or — in a
// namespace with neither label — the pod labelled
// sidecar.legate.io/inject=true or sidecar.istio.io/inject=true. The
// pod label "false" opts out in the object selectors; the annotation is
// checked by the webhook (selectors cannot read annotations).
func (w WebhookConfig) Build(caBundle []byte) *admregv1.MutatingWebhookConfiguration {
	cc := admregv1.WebhookClientConfig{CABundle: caBundle}
	if w.URL != "" {
		u := w.URL
		cc.URL = &u
	} else {
		p, port := Path, w.Service.Port
		cc.Service = &admregv1.ServiceReference{Namespace: w.Service.Namespace, Name: w.Service.Name, Path: &p, Port: &port}
	}
	in := func(k, v string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpIn, Values: []string{v}}
	}
	notIn := func(k, v string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpNotIn, Values: []string{v}}
	}
	absent := func(k string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpDoesNotExist}
	}
	notOptedOut := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		notIn(mesh.InjectAnnotation, "false"), notIn(mesh.IstioInjectAnnotation, "false")}}
	mk := func(name string, ns, obj *metav1.LabelSelector) admregv1.MutatingWebhook {
		se := admregv1.SideEffectClassNone
		never := admregv1.NeverReinvocationPolicy
		fp := w.FailurePolicy
		to := w.TimeoutSeconds
		return admregv1.MutatingWebhook{
			Name: name, ClientConfig: cc, NamespaceSelector: ns, ObjectSelector: obj,
			Rules: []admregv1.RuleWithOperations{{Operations: []admregv1.OperationType{admregv1.Create},
				Rule: admregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			FailurePolicy: &fp, SideEffects: &se, AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds: &to, ReinvocationPolicy: &never,
		}
	}
	return &admregv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: w.Name, Labels: map[string]string{"app.kubernetes.io/name": "legate", "app.kubernetes.io/component": "sidecar-injector"}},
		Webhooks: []admregv1.MutatingWebhook{
			mk("namespace.sidecar-injector.legate.io",
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{in(mesh.InjectLabel, "enabled")}}, notOptedOut),
			mk("istio-namespace.sidecar-injector.legate.io",
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{in(mesh.IstioInjectLabel, "enabled"), absent(mesh.InjectLabel)}}, notOptedOut),
			mk("object.sidecar-injector.legate.io",
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{absent(mesh.InjectLabel), absent(mesh.IstioInjectLabel)}},
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{in(mesh.InjectAnnotation, "true"), notIn(mesh.IstioInjectAnnotation, "false")}}),
			mk("istio-object.sidecar-injector.legate.io",
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{absent(mesh.InjectLabel), absent(mesh.IstioInjectLabel)}},
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{in(mesh.IstioInjectAnnotation, "true"), absent(mesh.InjectAnnotation)}}),
		},
	}
}

// Reconcile creates the configuration when absent; when present it only
// sets caBundle in each webhook (the rest belongs to whoever applied it,
// e.g. deploy/base/40-injector.yaml). It reports whether it wrote anything.
func (w WebhookConfig) Reconcile(ctx context.Context, client kubernetes.Interface, caBundle []byte) (bool, error) {
	if err := w.defaults(); err != nil {
		return false, err
	}
	api := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	for attempt := 0; ; attempt++ {
		cur, err := api.Get(ctx, w.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = api.Create(ctx, w.Build(caBundle), metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) && attempt < 5 {
				continue
			}
			if err != nil {
				return false, fmt.Errorf("create MutatingWebhookConfiguration %s: %w", w.Name, err)
			}
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("read MutatingWebhookConfiguration %s: %w", w.Name, err)
		}
		changed := false
		for i := range cur.Webhooks {
			if !bytes.Equal(cur.Webhooks[i].ClientConfig.CABundle, caBundle) {
				cur.Webhooks[i].ClientConfig.CABundle = caBundle
				changed = true
			}
		}
		if !changed {
			return false, nil
		}
		_, err = api.Update(ctx, cur, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) && attempt < 5 {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("set caBundle of MutatingWebhookConfiguration %s: %w", w.Name, err)
		}
		return true, nil
	}
}

// Options configure Start.
type Options struct {
	// Listener is where the webhook is served (TLS is added).
	Listener net.Listener
	Config   Config
	Webhook  WebhookConfig
	// CA issues the serving certificate and is written as caBundle.
	CA     *CA
	Client kubernetes.Interface
	Log    *slog.Logger
	// Registry gets the injection counters.
	Registry prometheus.Registerer
	// Resync is how often the configuration's caBundle is checked and
	// restored (default 30s).
	Resync time.Duration
}

// Start issues the webhook's certificate, serves the webhook on
// o.Listener, writes the MutatingWebhookConfiguration and keeps its
// caBundle until ctx ends. The channel gets the server's error.
func Start(ctx context.Context, o Options) (<-chan error, error) {
	if o.Listener == nil || o.CA == nil || o.Client == nil || o.Log == nil {
		return nil, errors.New("sidecar injector: Listener, CA, Client and Log are required")
	}
	if err := o.Config.Validate(); err != nil {
		return nil, fmt.Errorf("sidecar injector: %w", err)
	}
	if err := o.Webhook.defaults(); err != nil {
		return nil, fmt.Errorf("sidecar injector: %w", err)
	}
	dns, ips, err := o.Webhook.Names()
	if err != nil {
		return nil, fmt.Errorf("sidecar injector: %w", err)
	}
	cert, err := o.CA.ServingCert(dns, ips, 365*24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("sidecar injector: %w", err)
	}
	if o.Resync <= 0 {
		o.Resync = 30 * time.Second
	}
	if _, err := o.Webhook.Reconcile(ctx, o.Client, o.CA.PEM); err != nil {
		return nil, fmt.Errorf("sidecar injector: %w (the controller needs get, create and update on mutatingwebhookconfigurations)", err)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, &Handler{Config: o.Config, Log: o.Log, Metrics: NewMetrics(o.Registry)})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// The API server gives a webhook timeoutSeconds (at most 30 s): a
		// client slower than that with its body is not the API server.
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 30 * time.Second,
		IdleTimeout:  90 * time.Second,
		TLSConfig:    &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		ErrorLog:     slog.NewLogLogger(o.Log.Handler(), slog.LevelDebug),
	}
	errs := make(chan error, 1)
	go func() {
		err := srv.ServeTLS(o.Listener, "", "")
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errs <- err
	}()
	go func() {
		t := time.NewTicker(o.Resync)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				srv.Shutdown(sctx)
				cancel()
				return
			case <-t.C:
				if changed, err := o.Webhook.Reconcile(ctx, o.Client, o.CA.PEM); err != nil {
					o.Log.Warn("sidecar injector: cannot keep the webhook configuration", "error", err)
				} else if changed {
					o.Log.Info("sidecar injector: restored the webhook configuration's caBundle", "name", o.Webhook.Name)
				}
			}
		}
	}()
	o.Log.Info("sidecar injector started", "address", o.Listener.Addr().String(), "webhook", o.Webhook.Name, "failurePolicy", string(o.Webhook.FailurePolicy))
	return errs, nil
}
