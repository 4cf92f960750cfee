package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"github.com/legateproxy/legate/internal/certgen"
	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/mesh/ca"
	xdsserver "github.com/legateproxy/legate/internal/xds/server"
)

// caFlags are the flags of the controller's workload certificate
// authority (internal/mesh/ca).
type caFlags struct {
	address, keyFile, trustDomain string
	ttl, maxTTL                   time.Duration
	// addressSet records an explicit --ca-address: then a CA that
	// cannot start is an error, not a warning.
	addressSet bool
}

// setTracker is a string flag that records being set.
type setTracker struct {
	v   *string
	set *bool
}

func (s setTracker) String() string {
	if s.v == nil {
		return ""
	}
	return *s.v
}

func (s setTracker) Set(v string) error { *s.v, *s.set = v, true; return nil }

func (c *caFlags) register(fs *flag.FlagSet) {
	c.address = "0.0.0.0:" + strconv.Itoa(mesh.CAPort)
	fs.Var(setTracker{&c.address, &c.addressSet}, "ca-address", "where sidecars get workload certificates (Istio's certificate service, over TLS with the xDS serving certificate); \"\" disables the CA")
	fs.StringVar(&c.keyFile, "ca-key-file", "", "the key of --xds-ca-file, which signs workload certificates (default: ca.key beside a generated CA)")
	fs.StringVar(&c.trustDomain, "trust-domain", mesh.DefaultTrustDomain, "SPIFFE trust domain of workload identities")
	fs.DurationVar(&c.ttl, "workload-cert-ttl", ca.DefaultTTL, "lifetime of a workload certificate when the sidecar asks for none")
	fs.DurationVar(&c.maxTTL, "max-workload-cert-ttl", ca.DefaultMaxTTL, "longest lifetime a sidecar may ask for")
}

// startCA serves the workload CA and publishes its root certificate into
// meshed namespaces, when the controller runs against Kubernetes (tokens
// are checked with TokenReview) and serves xDS over TLS (the CA is
// xDS's). It returns once both are running.
func (f *controllerFlags) startCA(ctx context.Context, log *slog.Logger, reg prometheus.Registerer, tlsFiles *xdsserver.TLSFiles) error {
	c := &f.ca
	if c.address == "" {
		return nil
	}
	if f.manifests != "" {
		log.Info("workload CA off: it authenticates sidecars with Kubernetes TokenReview, and --manifests runs without Kubernetes")
		return nil
	}
	if tlsFiles == nil {
		log.Warn("workload CA off: --insecure serves xDS without certificates, so there is no CA to sign with")
		return nil
	}
	keyFile := c.keyFile
	if keyFile == "" {
		if f.xdsCA != "" {
			if !c.addressSet {
				// Deployments from before the CA pass the xDS files
				// alone: they keep working, without workload identity.
				log.Warn("workload CA off: it signs with the key of --xds-ca-file; pass --ca-key-file to turn it on (or --ca-address \"\" to silence this)")
				return nil
			}
			return errors.New("the workload CA signs with the key of --xds-ca-file: pass --ca-key-file (or --ca-address \"\" to turn the CA off)")
		}
		keyFile = filepath.Join(filepath.Dir(tlsFiles.CA), certgen.CAKeyFile)
	}
	signer, err := ca.LoadSigner(tlsFiles.CA, keyFile)
	if err != nil {
		return fmt.Errorf("workload CA: %w (--xds-ca-file / --ca-key-file)", err)
	}
	cfg, err := kubeConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	srv, err := ca.New(ca.Options{
		Signer: signer, Auth: &ca.KubeAuthenticator{Client: client}, TrustDomain: c.trustDomain,
		DefaultTTL: c.ttl, MaxTTL: c.maxTTL, Log: log, Metrics: ca.NewMetrics(reg),
	})
	if err != nil {
		return fmt.Errorf("--workload-cert-ttl / --max-workload-cert-ttl: %w", err)
	}
	pub := &ca.RootCertPublisher{Client: client, RootPEM: signer.CertPEM, Log: log}
	if err := pub.Run(ctx); err != nil {
		return err
	}
	l, err := net.Listen("tcp", c.address)
	if err != nil {
		return fmt.Errorf("--ca-address: %w", err)
	}
	go func() {
		if err := srv.Serve(ctx, l, tlsFiles.Cert, tlsFiles.Key); err != nil {
			log.Error("workload CA stopped", "error", err)
		}
	}()
	log.Info("workload CA started", "address", l.Addr().String(), "trust_domain", c.trustDomain)
	return nil
}
