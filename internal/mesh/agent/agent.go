// Package agent is the workload side of Legate's mesh identity, what
// istio-agent is to Envoy: it keeps a private key in memory, has the
// controller's CA (Istio's certificate service, internal/mesh/ca) sign
// a certificate for the pod's SPIFFE identity with the pod's
// ServiceAccount token, rotates it at half its lifetime, serves it and
// the roots to the proxy over SDS on a Unix socket (sds.go), writes
// them as files for the proxy's own xDS connection, and writes the
// sidecar's bootstrap (bootstrap.go).
//
// It fails closed: a CA that cannot be reached leaves the current
// certificate in place until it expires; from then on Ready reports an
// error (the pod's readiness probe fails) until a new one is issued.
package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"

	"github.com/legateproxy/legate/internal/mesh"
)

// Files the agent writes in its state directory, for the proxy's xDS
// connection (the bootstrap names them; the proxy watches them).
const (
	CertChainFile = "cert-chain.pem"
	KeyFile       = "key.pem"
	RootCertFile  = "root-cert.pem"
)

// Backoff bounds of retries after a failed certificate request.
const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// Options configure an Agent.
type Options struct {
	// CAAddress is the CA's HOST:PORT; CAServerName is the name checked
	// in its certificate (default: the host of CAAddress).
	CAAddress, CAServerName string
	// RootCertFile holds the CA certificate(s) that verify the CA and
	// the controller, and that SDS serves as ROOTCA.
	RootCertFile string
	// TokenFile is the projected ServiceAccount token (audience
	// mesh.TokenAudience), read again for every request.
	TokenFile string
	// Identity of the pod.
	TrustDomain, Namespace, ServiceAccount string
	// TTL asks the CA for this lifetime (0: the CA's default).
	TTL time.Duration
	// StateDir receives CertChainFile, KeyFile and RootCertFile
	// (created 0700; empty: no files).
	StateDir string
	Log      *slog.Logger
	// Registry gets the agent's metrics (nil: not registered).
	Registry prometheus.Registerer
}

// Cert is an issued workload certificate with its key and the roots.
type Cert struct {
	// ChainPEM is the leaf followed by the CA chain, as the CA sent it.
	ChainPEM, KeyPEM, RootPEM []byte
	Leaf                      *x509.Certificate
	// Received is when the agent got it; rotation is planned from it
	// (NotBefore is backdated by the CA for clock skew).
	Received time.Time
}

// Agent obtains and rotates the workload certificate.
type Agent struct {
	o  Options
	id string

	requests *prometheus.CounterVec
	expiry   prometheus.Gauge

	mu   sync.Mutex
	cur  *Cert
	subs []func(*Cert)
}

// New checks o and returns an agent.
func New(o Options) (*Agent, error) {
	if o.CAAddress == "" || o.RootCertFile == "" || o.TokenFile == "" {
		return nil, errors.New("agent: the CA address, the root certificate file and the token file are required")
	}
	if o.Namespace == "" || o.ServiceAccount == "" {
		return nil, errors.New("agent: the pod's namespace and service account are required (POD_NAMESPACE, SERVICE_ACCOUNT)")
	}
	if o.CAServerName == "" {
		o.CAServerName = hostOf(o.CAAddress)
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	a := &Agent{o: o, id: mesh.SPIFFEID(o.TrustDomain, o.Namespace, o.ServiceAccount)}
	a.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "legate_sidecar_certificate_requests_total",
		Help: "Workload certificate requests to the CA, by result (success, error).",
	}, []string{"result"})
	a.expiry = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "legate_sidecar_certificate_expiry_timestamp_seconds",
		Help: "When the current workload certificate expires (Unix time).",
	})
	if o.Registry != nil {
		o.Registry.MustRegister(a.requests, a.expiry)
	}
	return a, nil
}

// Identity is the SPIFFE id the agent asks for.
func (a *Agent) Identity() string { return a.id }

// Current is the certificate in use (nil before the first).
func (a *Agent) Current() *Cert {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cur
}

// Subscribe calls f with every new certificate (and the current one at
// once, if there is one).
func (a *Agent) Subscribe(f func(*Cert)) {
	a.mu.Lock()
	a.subs = append(a.subs, f)
	cur := a.cur
	a.mu.Unlock()
	if cur != nil {
		f(cur)
	}
}

// Ready reports whether a valid certificate is in place.
func (a *Agent) Ready(now time.Time) error {
	c := a.Current()
	if c == nil {
		return errors.New("no workload certificate yet")
	}
	if !now.Before(c.Leaf.NotAfter) {
		return fmt.Errorf("workload certificate expired at %s and the CA has not issued a new one", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Fetch asks the CA for a new certificate once, and installs it.
func (a *Agent) Fetch(ctx context.Context) (*Cert, error) {
	c, err := a.request(ctx)
	if err != nil {
		a.requests.WithLabelValues("error").Inc()
		return nil, err
	}
	a.requests.WithLabelValues("success").Inc()
	if err := a.writeFiles(c); err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.cur = c
	subs := append([]func(*Cert){}, a.subs...)
	a.mu.Unlock()
	a.expiry.Set(float64(c.Leaf.NotAfter.Unix()))
	a.o.Log.Info("workload certificate issued", "identity", a.id, "expires", c.Leaf.NotAfter.UTC().Format(time.RFC3339), "serial", c.Leaf.SerialNumber.Text(16))
	for _, f := range subs {
		f(c)
	}
	return c, nil
}

// Start fetches the first certificate, retrying with backoff until it
// succeeds or ctx ends.
func (a *Agent) Start(ctx context.Context) error {
	b := minBackoff
	for {
		_, err := a.Fetch(ctx)
		if err == nil {
			return nil
		}
		a.o.Log.Error("cannot get a workload certificate from the CA; retrying", "ca", a.o.CAAddress, "identity", a.id, "retry_in", b.String(), "error", err)
		if !sleep(ctx, jitter(b)) {
			return ctx.Err()
		}
		b = min(2*b, maxBackoff)
	}
}

// Run rotates the certificate at about half its lifetime until ctx ends;
// a failed request is retried with jittered backoff while the current
// certificate stays in use.
func (a *Agent) Run(ctx context.Context) {
	b := minBackoff
	expiredLogged := false
	for {
		c := a.Current()
		var wait time.Duration
		if c != nil {
			life := max(c.Leaf.NotAfter.Sub(c.Received), 0)
			// Half the remaining lifetime at issue, jittered by up to
			// a tenth so that pods issued together do not renew
			// together.
			at := c.Received.Add(life/2 + time.Duration(mrand.Int64N(int64(life/10)+1)))
			wait = time.Until(at)
		}
		if wait > 0 && !sleep(ctx, wait) {
			return
		}
		for {
			_, err := a.Fetch(ctx)
			if err == nil {
				b, expiredLogged = minBackoff, false
				break
			}
			if ctx.Err() != nil {
				return
			}
			if rerr := a.Ready(time.Now()); rerr != nil {
				if !expiredLogged {
					a.o.Log.Error("workload certificate expired and cannot be renewed: failing readiness", "identity", a.id, "ca", a.o.CAAddress, "error", err)
					expiredLogged = true
				}
			} else {
				a.o.Log.Warn("cannot renew the workload certificate; keeping the current one", "identity", a.id, "ca", a.o.CAAddress,
					"expires", c.Leaf.NotAfter.UTC().Format(time.RFC3339), "retry_in", b.String(), "error", err)
			}
			d := jitter(b)
			if cur := a.Current(); cur != nil {
				// Try once more just before expiry rather than after.
				if until := time.Until(cur.Leaf.NotAfter); until > 0 && until < d {
					d = until
				}
			}
			if !sleep(ctx, d) {
				return
			}
			b = min(2*b, maxBackoff)
		}
	}
}

// request does one CSR round trip.
func (a *Agent) request(ctx context.Context) (*Cert, error) {
	rootPEM, err := os.ReadFile(a.o.RootCertFile)
	if err != nil {
		return nil, fmt.Errorf("root certificate: %w (mount ConfigMap %s key %s)", err, mesh.RootCertConfigMap, mesh.RootCertKey)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		return nil, fmt.Errorf("root certificate %s: no PEM certificate in it", a.o.RootCertFile)
	}
	tok, err := os.ReadFile(a.o.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("ServiceAccount token: %w (project one with audience %s)", err, mesh.TokenAudience)
	}
	token := strings.TrimSpace(string(tok))
	if token == "" {
		return nil, fmt.Errorf("ServiceAccount token %s is empty", a.o.TokenFile)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(a.id)
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: a.o.CAServerName, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient(a.o.CAAddress, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", a.o.CAAddress, err)
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cctx = metadata.AppendToOutgoingContext(cctx, "authorization", "Bearer "+token)
	resp, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(cctx, &pb.IstioCertificateRequest{
		Csr:              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		ValidityDuration: int64(a.o.TTL / time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", a.o.CAAddress, err)
	}
	received := time.Now()
	chain := resp.GetCertChain()
	if len(chain) == 0 {
		return nil, fmt.Errorf("CA %s: empty certificate chain", a.o.CAAddress)
	}
	block, _ := pem.Decode([]byte(chain[0]))
	if block == nil {
		return nil, fmt.Errorf("CA %s: the first element of the chain is not PEM", a.o.CAAddress)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA %s: leaf certificate: %w", a.o.CAAddress, err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != a.id {
		return nil, fmt.Errorf("CA %s issued a certificate for %v, not %s", a.o.CAAddress, leaf.URIs, a.id)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("CA %s issued a certificate for another key", a.o.CAAddress)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AppendCertsFromPEM([]byte(c))
	}
	// A certificate the roots do not verify would be refused by every
	// peer: better to keep the old one and say so.
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: received,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, fmt.Errorf("CA %s: the issued certificate does not verify against %s: %w", a.o.CAAddress, a.o.RootCertFile, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Cert{
		ChainPEM: []byte(strings.Join(trimAll(chain), "\n") + "\n"),
		KeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		RootPEM:  rootPEM, Leaf: leaf, Received: received,
	}, nil
}

func trimAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.TrimSpace(s)
	}
	return out
}

// writeFiles replaces the state directory's files, each by a rename so
// that the proxy never reads half of one. Between the key's rename and
// the chain's the pair does not match; a reader that loads then keeps
// the pair it had and picks up the new one on its next check.
func (a *Agent) writeFiles(c *Cert) error {
	if a.o.StateDir == "" {
		return nil
	}
	if err := os.MkdirAll(a.o.StateDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{RootCertFile, c.RootPEM, 0o644}, {KeyFile, c.KeyPEM, 0o600}, {CertChainFile, c.ChainPEM, 0o644}} {
		p := filepath.Join(a.o.StateDir, f.name)
		// A stale .tmp (a crash between write and rename) would keep its
		// mode through WriteFile: start from none.
		if err := os.Remove(p + ".tmp"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("state directory: %w", err)
		}
		if err := os.WriteFile(p+".tmp", f.data, f.mode); err != nil {
			return fmt.Errorf("state directory: %w", err)
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			return fmt.Errorf("state directory: %w", err)
		}
	}
	return nil
}

func hostOf(addr string) string {
	h := addr
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		h = addr[:i]
	}
	return strings.Trim(h, "[]")
}

func jitter(d time.Duration) time.Duration {
	// ±25%.
	return d*3/4 + time.Duration(mrand.Int64N(int64(d/2)+1))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
