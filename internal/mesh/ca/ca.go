// Package ca is the controller's certificate authority for workload
// identity: sidecars (`legate sidecar`, or Istio's istio-agent) send a
// CSR with their Kubernetes ServiceAccount token and get back an X.509
// certificate naming their SPIFFE identity, signed by the CA that also
// signs the controller's xDS certificates.
//
// The protocol is Istio's certificate service
// (istio.v1.auth.IstioCertificateService/CreateCertificate from
// istio.io/api) with Istio's authentication: "authorization: Bearer
// <token>" metadata, checked with a Kubernetes TokenReview. As istiod,
// the issued certificate names only the caller's identity
// (spiffe://<trust domain>/ns/<namespace>/sa/<service account>),
// whatever the CSR asks for; a CSR that asks for another identity is
// refused outright so that a misconfigured agent hears about it.
package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/legateproxy/legate/internal/mesh"
)

// Defaults of Options.
const (
	// DefaultTTL is a workload certificate's lifetime when the request
	// asks for none (Istio's DEFAULT_WORKLOAD_CERT_TTL).
	DefaultTTL = 24 * time.Hour
	// DefaultMaxTTL is the longest lifetime a request may ask for
	// (Istio's MAX_WORKLOAD_CERT_TTL).
	DefaultMaxTTL = 90 * 24 * time.Hour
	// clockSkew backdates NotBefore so that a peer whose clock is a
	// little behind accepts a certificate issued a moment ago.
	clockSkew = time.Minute
)

// Results, the values of legate_ca_requests_total's result label.
const (
	ResultSuccess          = "success"
	ResultUnauthenticated  = "unauthenticated"
	ResultPermissionDenied = "permission_denied"
	ResultInvalidRequest   = "invalid_request"
	ResultError            = "error"
)

// Identity is an authenticated caller: the namespace and service account
// of its token.
type Identity struct {
	Namespace, ServiceAccount string
}

// Authenticator checks a bearer token and names its ServiceAccount.
// KubeAuthenticator is the one Legate uses.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Identity, error)
}

// Metrics are the CA's Prometheus metrics.
type Metrics struct {
	// Requests counts CreateCertificate calls by result.
	Requests *prometheus.CounterVec
}

// NewMetrics registers the CA's metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "legate_ca_requests_total",
		Help: "Workload certificate requests to the CA, by result (success, unauthenticated, permission_denied, invalid_request, error).",
	}, []string{"result"})}
	if reg != nil {
		reg.MustRegister(m.Requests)
	}
	return m
}

// Signer is the CA's certificate and key.
type Signer struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
}

// LoadSigner reads the CA certificate and its private key (PEM; the key
// PKCS#8, PKCS#1 or SEC 1), as certgen writes them.
func LoadSigner(certFile, keyFile string) (*Signer, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	return NewSigner(certPEM, keyPEM)
}

// NewSigner parses a CA certificate and key (PEM).
func NewSigner(certPEM, keyPEM []byte) (*Signer, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate and key: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("CA certificate: not a CA (needs basic constraints CA:TRUE and keyCertSign): pass the CA that signs the xDS certificates")
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("CA key: cannot sign")
	}
	// Only the first block: the file may hold a bundle.
	b, _ := pem.Decode(certPEM)
	return &Signer{Cert: cert, CertPEM: pem.EncodeToMemory(b), Key: key}, nil
}

// SignCSR checks a CSR's signature and signs a workload certificate for
// id from its public key, valid for ttl (cut at the CA's own expiry).
func (s *Signer) SignCSR(csr *x509.CertificateRequest, id string, ttl time.Duration, now time.Time) ([]byte, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature: %w", err)
	}
	u, err := url.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("identity %q: %w", id, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(ttl)
	if notAfter.After(s.Cert.NotAfter) {
		notAfter = s.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// As Istio's workload certificates: no subject, the identity is
		// the (then critical) URI SAN alone.
		URIs:        []*url.URL{u},
		NotBefore:   now.Add(-clockSkew),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.Cert, csr.PublicKey, s.Key)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// Options configure a Server.
type Options struct {
	Signer *Signer
	Auth   Authenticator
	// TrustDomain of the identities issued (default cluster.local).
	TrustDomain string
	// DefaultTTL and MaxTTL bound certificate lifetimes (DefaultTTL,
	// DefaultMaxTTL when zero).
	DefaultTTL, MaxTTL time.Duration
	Log                *slog.Logger
	Metrics            *Metrics
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Server implements IstioCertificateService.
type Server struct {
	pb.UnimplementedIstioCertificateServiceServer
	o Options
}

// New returns a CA server.
func New(o Options) (*Server, error) {
	if o.Signer == nil || o.Auth == nil {
		return nil, errors.New("CA: a signer and an authenticator are required")
	}
	if o.DefaultTTL <= 0 {
		o.DefaultTTL = DefaultTTL
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = DefaultMaxTTL
	}
	if o.DefaultTTL > o.MaxTTL {
		return nil, fmt.Errorf("CA: default certificate lifetime %s exceeds the maximum %s", o.DefaultTTL, o.MaxTTL)
	}
	if o.TrustDomain == "" {
		o.TrustDomain = mesh.DefaultTrustDomain
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Server{o: o}, nil
}

// CreateCertificate authenticates the caller's token, checks the CSR and
// returns the signed certificate followed by the CA.
func (s *Server) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	remote := ""
	if p, ok := peerAddr(ctx); ok {
		remote = p
	}
	fail := func(result string, code codes.Code, msg string, args ...any) error {
		s.o.Metrics.Requests.WithLabelValues(result).Inc()
		err := fmt.Sprintf(msg, args...)
		s.o.Log.Warn("CA: certificate request refused", "remote", remote, "result", result, "error", err)
		return status.Error(code, err)
	}
	token, err := bearerToken(ctx)
	if err != nil {
		return nil, fail(ResultUnauthenticated, codes.Unauthenticated, "%v", err)
	}
	who, err := s.o.Auth.Authenticate(ctx, token)
	if err != nil {
		return nil, fail(ResultUnauthenticated, codes.Unauthenticated, "token: %v", err)
	}
	id := mesh.SPIFFEID(s.o.TrustDomain, who.Namespace, who.ServiceAccount)
	block, _ := pem.Decode([]byte(req.GetCsr()))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fail(ResultInvalidRequest, codes.InvalidArgument, "csr: not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fail(ResultInvalidRequest, codes.InvalidArgument, "csr: %v", err)
	}
	// The issued certificate names the token's identity only; a CSR
	// asking for anything else is a caller claiming to be someone else.
	for _, u := range csr.URIs {
		if u.String() != id {
			return nil, fail(ResultPermissionDenied, codes.PermissionDenied, "csr asks for %s but the token is for %s", u, id)
		}
	}
	if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 {
		return nil, fail(ResultPermissionDenied, codes.PermissionDenied, "csr asks for DNS, IP or email names; workload certificates name only %s", id)
	}
	ttl := s.o.DefaultTTL
	if d := req.GetValidityDuration(); d < 0 {
		return nil, fail(ResultInvalidRequest, codes.InvalidArgument, "validity_duration %d: negative", d)
	} else if d > 0 {
		if time.Duration(d) > s.o.MaxTTL/time.Second {
			// As istiod: a longer lifetime than allowed is an error, not
			// silently shortened.
			return nil, fail(ResultInvalidRequest, codes.InvalidArgument, "validity_duration %ds exceeds the CA's maximum %s", d, s.o.MaxTTL)
		}
		ttl = time.Duration(d) * time.Second
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fail(ResultInvalidRequest, codes.InvalidArgument, "csr signature: %v", err)
	}
	leaf, err := s.o.Signer.SignCSR(csr, id, ttl, s.o.Now())
	if err != nil {
		return nil, fail(ResultError, codes.Internal, "%v", err)
	}
	s.o.Metrics.Requests.WithLabelValues(ResultSuccess).Inc()
	s.o.Log.Info("CA: issued workload certificate", "identity", id, "ttl", ttl.String(), "remote", remote)
	return &pb.IstioCertificateResponse{CertChain: []string{string(leaf), string(s.o.Signer.CertPEM)}}, nil
}

// bearerToken reads Istio's "authorization: Bearer <token>" metadata.
func bearerToken(ctx context.Context) (string, error) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return "", errors.New("no authorization metadata: send \"authorization: Bearer <ServiceAccount token>\"")
	}
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok && strings.TrimSpace(t) != "" {
			return strings.TrimSpace(t), nil
		}
	}
	return "", errors.New("no bearer token: send \"authorization: Bearer <ServiceAccount token>\"")
}

// Serve serves the CA on l over TLS with the certificate in certFile and
// keyFile (the controller's serving certificate; re-read when the files
// change), until ctx ends.
func (s *Server) Serve(ctx context.Context, l net.Listener, certFile, keyFile string) error {
	kp := &keyPair{cert: certFile, key: keyFile}
	if _, err := kp.get(nil); err != nil {
		l.Close()
		return err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.get, NextProtos: []string{"h2"}}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	pb.RegisterIstioCertificateServiceServer(g, s)
	go func() {
		<-ctx.Done()
		g.GracefulStop()
	}()
	if err := g.Serve(l); err != nil && ctx.Err() == nil {
		return fmt.Errorf("CA server: %w", err)
	}
	return nil
}

// keyPair is a certificate read again when its files change (a rotated
// Secret mount), checked at most once a second.
type keyPair struct {
	cert, key string

	mu      sync.Mutex
	checked time.Time
	stamp   string
	cur     *tls.Certificate
}

func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cur != nil && time.Since(k.checked) < time.Second {
		return k.cur, nil
	}
	k.checked = time.Now()
	stamp := ""
	for _, p := range []string{k.cert, k.key} {
		fi, err := os.Stat(p)
		if err != nil {
			if k.cur != nil {
				return k.cur, nil
			}
			return nil, fmt.Errorf("CA serving certificate: %w", err)
		}
		stamp += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	if stamp == k.stamp {
		return k.cur, nil
	}
	c, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		if k.cur != nil {
			return k.cur, nil // keep serving with what was loaded
		}
		return nil, fmt.Errorf("CA serving certificate %s / %s: %w", k.cert, k.key, err)
	}
	k.cur, k.stamp = &c, stamp
	return k.cur, nil
}
