package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/legateproxy/legate/internal/mesh"
)

// SDS serves the workload certificate (mesh.SecretWorkload) and the
// roots (mesh.SecretRoots) to the local proxy with go-control-plane's
// secret discovery service, state of the world and delta, and pushes a
// new version of both on every rotation.
type SDS struct {
	cache *cachev3.LinearCache
	log   *slog.Logger
}

// NewSDS returns an SDS server with no secrets yet: a proxy that asks
// before the first certificate waits for it.
func NewSDS(log *slog.Logger) *SDS {
	if log == nil {
		log = slog.Default()
	}
	return &SDS{cache: cachev3.NewLinearCache(resource.SecretType), log: log}
}

// Secrets are the two secrets for c, as istio-agent serves them.
func Secrets(c *Cert) map[string]types.Resource {
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	return map[string]types.Resource{
		mesh.SecretWorkload: &tlsv3.Secret{Name: mesh.SecretWorkload, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(c.ChainPEM), PrivateKey: inline(c.KeyPEM),
		}}},
		mesh.SecretRoots: &tlsv3.Secret{Name: mesh.SecretRoots, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(c.RootPEM),
		}}},
	}
}

// Update serves c from now on.
func (s *SDS) Update(c *Cert) {
	s.cache.SetResources(Secrets(c))
	s.log.Debug("SDS: serving a new workload certificate", "serial", c.Leaf.SerialNumber.Text(16))
}

// Listen binds the Unix socket at path (a stale socket from an earlier
// run is removed; the socket is 0600: it hands out the private key).
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("SDS socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("SDS socket %s: exists and is not a socket; remove it or pass another --sds-socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("SDS socket %s: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("SDS socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("SDS socket: %w", err)
	}
	return l, nil
}

// Serve serves SDS on l until ctx ends.
func (s *SDS) Serve(ctx context.Context, l net.Listener) error {
	g := grpc.NewServer()
	secretservice.RegisterSecretDiscoveryServiceServer(g, serverv3.NewServer(ctx, s.cache, nil))
	go func() {
		<-ctx.Done()
		g.Stop()
	}()
	if err := g.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) && ctx.Err() == nil {
		return fmt.Errorf("SDS: %w", err)
	}
	return nil
}
