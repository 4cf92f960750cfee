package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admregv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/legateproxy/legate/internal/certgen"
	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/mesh/inject"
	xdsserver "github.com/legateproxy/legate/internal/xds/server"
)

// injectFlags are the flags of the controller's sidecar injection
// webhook (internal/mesh/inject). Injection is on when --inject-address
// is set.
type injectFlags struct {
	address, webhookURL, service, failurePolicy string
	servicePort                                 int
	sidecar                                     injectSidecarFlags
}

func (i *injectFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&i.address, "inject-address", "", fmt.Sprintf("serve the sidecar injection webhook here over TLS (e.g. 0.0.0.0:%d, istiod's port); empty: no injection", mesh.InjectorPort))
	fs.StringVar(&i.webhookURL, "inject-webhook-url", "", "URL the API server calls the webhook at (clientConfig.url: a controller outside the cluster); default: --inject-service")
	fs.StringVar(&i.service, "inject-service", "legate-sidecar-injector", "Service in the controller's namespace ($POD_NAMESPACE or legate-system) the API server calls the webhook through")
	fs.IntVar(&i.servicePort, "inject-service-port", 443, "port of --inject-service")
	fs.StringVar(&i.failurePolicy, "inject-failure-policy", "Fail", "failurePolicy of a webhook configuration the controller creates: Fail (pods of meshed namespaces are not created while the webhook is down) or Ignore")
	i.sidecar.register(fs)
}

// startInjector serves the injection webhook with a certificate from the
// xDS CA (or, with --insecure, a CA made in memory) and keeps that CA in
// the MutatingWebhookConfiguration legate-sidecar-injector. It returns
// once the webhook is served.
func (f *controllerFlags) startInjector(ctx context.Context, log *slog.Logger, reg prometheus.Registerer, tlsFiles *xdsserver.TLSFiles) error {
	i := &f.inject
	if i.address == "" {
		return nil
	}
	if f.manifests != "" {
		return errors.New("--inject-address needs Kubernetes (the API server calls the webhook); --manifests runs without it")
	}
	if f.insecure {
		// Without the CA (off with --insecure) injected sidecars could
		// never get a certificate, and their pods never become ready.
		return errors.New("--inject-address needs the workload CA, which --insecure turns off: serve xDS over mTLS (drop --insecure)")
	}
	// Sidecars ask for identities of the CA's trust domain.
	i.sidecar.trustDomain = f.ca.trustDomain
	var fp admregv1.FailurePolicyType
	switch i.failurePolicy {
	case "Fail", "Ignore":
		fp = admregv1.FailurePolicyType(i.failurePolicy)
	default:
		return fmt.Errorf("--inject-failure-policy %q: use Fail or Ignore", i.failurePolicy)
	}
	if i.servicePort < 1 || i.servicePort > 65535 {
		return fmt.Errorf("--inject-service-port %d: want 1-65535", i.servicePort)
	}
	ca, err := f.injectorCA(log, tlsFiles)
	if err != nil {
		return err
	}
	cfg, err := kubeConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "legate-system"
	}
	l, err := net.Listen("tcp", i.address)
	if err != nil {
		return fmt.Errorf("--inject-address: %w", err)
	}
	errs, err := inject.Start(ctx, inject.Options{
		Listener: l, Config: i.sidecar.config(), CA: ca, Client: client, Log: log, Registry: reg,
		Webhook: inject.WebhookConfig{URL: i.webhookURL, FailurePolicy: fp,
			Service: inject.ServiceRef{Namespace: ns, Name: i.service, Port: int32(i.servicePort)}},
	})
	if err != nil {
		l.Close()
		return err
	}
	go func() {
		if err := <-errs; err != nil {
			log.Error("sidecar injector stopped", "error", err)
		}
	}()
	return nil
}

// injectorCA is the CA that signs the webhook's certificate: the xDS CA
// (with --ca-key-file, or the key beside a generated CA), so replicas
// agree on the caBundle.
func (f *controllerFlags) injectorCA(log *slog.Logger, tlsFiles *xdsserver.TLSFiles) (*inject.CA, error) {
	if tlsFiles == nil {
		log.Warn("sidecar injector: --insecure gives no xDS CA; signing the webhook certificate with a CA made in memory (replicas each write their own caBundle: run one)")
		return inject.NewCA(365 * 24 * time.Hour)
	}
	keyFile := f.ca.keyFile
	if keyFile == "" {
		if f.xdsCA != "" {
			return nil, errors.New("the sidecar injector signs its certificate with the key of --xds-ca-file: pass --ca-key-file")
		}
		keyFile = filepath.Join(filepath.Dir(tlsFiles.CA), certgen.CAKeyFile)
	}
	certPEM, err := os.ReadFile(tlsFiles.CA)
	if err != nil {
		return nil, fmt.Errorf("sidecar injector CA: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("sidecar injector CA key: %w (--ca-key-file)", err)
	}
	ca, err := inject.LoadCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("sidecar injector: %w (--xds-ca-file / --ca-key-file)", err)
	}
	return ca, nil
}
