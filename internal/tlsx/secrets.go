// Package tlsx turns Envoy's TLS configuration — DownstreamTlsContext,
// UpstreamTlsContext, and secrets from inline data, files, static secrets or
// SDS — into crypto/tls configurations, and keeps them current: certificate
// and CA files are watched and a changed file (an atomic move, a Kubernetes
// Secret mount swapping its ..data link) is served from the next handshake
// on, without a restart and without touching established connections.
package tlsx

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/legateproxy/legate/internal/config"
)

// Secret is a named TLS secret whose value can change (SDS, watched
// files). Readers load its current material atomically.
type Secret struct {
	Name string
	cur  atomic.Pointer[material]
	// ready is closed once the secret has a value.
	ready     chan struct{}
	readyOnce sync.Once
	// VersionInfo and LastUpdated describe the current value.
	VersionInfo string
	LastUpdated time.Time
	proto       atomic.Pointer[tlsv3.Secret]
	store       *Store
}

// material is the parsed form of a secret.
type material struct {
	certs []*tls.Certificate // tls_certificate
	ca    *x509.CertPool     // validation_context.trusted_ca
	caPEM []byte
	crl   []*x509.RevocationList
	vc    *tlsv3.CertificateValidationContext
	keys  [][32]byte // session_ticket_keys
	// generic is a generic_secret's value.
	generic []byte
	files   []string // files the material was read from
	// staples are the certificates' ocsp_staple (nil entries: none).
	staples []*ocspStaple
}

// Ready returns a channel closed once the secret has a value.
func (s *Secret) Ready() <-chan struct{} { return s.ready }

func (s *Secret) load() *material { return s.cur.Load() }

// Generic returns a generic secret's current value (generic_secret.secret),
// or nil when the secret has no value or is of another type.
func (s *Secret) Generic() []byte {
	if m := s.load(); m != nil {
		return m.generic
	}
	return nil
}

// Proto returns the secret's current definition (nil until set).
func (s *Secret) Proto() *tlsv3.Secret { return s.proto.Load() }

// Store holds the named secrets and watches the files they read.
type Store struct {
	mu      sync.Mutex
	secrets map[string]*Secret
	log     *slog.Logger
	watch   *fileWatcher
}

// NewStore returns an empty secret store.
func NewStore(log *slog.Logger) *Store {
	if log == nil {
		log = slog.Default()
	}
	s := &Store{secrets: map[string]*Secret{}, log: log}
	s.watch = newFileWatcher(log)
	return s
}

// Close stops the file watcher.
func (s *Store) Close() { s.watch.close() }

// Get returns the secret called name, creating an empty one.
func (s *Store) Get(name string) *Secret {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.secrets[name]
	if sec == nil {
		sec = &Secret{Name: name, ready: make(chan struct{}), store: s}
		s.secrets[name] = sec
	}
	return sec
}

// Secrets lists every named secret.
func (s *Store) Secrets() []*Secret {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Secret, 0, len(s.secrets))
	for _, sec := range s.secrets {
		out = append(out, sec)
	}
	return out
}

// Set compiles and installs a secret's value (static secrets, SDS). An
// invalid value is rejected and the previous one stays.
func (s *Store) Set(sp *tlsv3.Secret, version, path string) error {
	m, err := compileSecret(sp, path)
	if err != nil {
		return err
	}
	sec := s.Get(sp.GetName())
	sec.install(m, sp, version)
	s.watchFiles(sec, sp, path)
	return nil
}

// Validate compiles a secret without installing it.
func Validate(sp *tlsv3.Secret, path string) error {
	_, err := compileSecret(sp, path)
	return err
}

func (sec *Secret) install(m *material, sp *tlsv3.Secret, version string) {
	sec.cur.Store(m)
	sec.proto.Store(sp)
	sec.VersionInfo, sec.LastUpdated = version, time.Now()
	sec.readyOnce.Do(func() { close(sec.ready) })
}

// watchFiles reloads the secret when one of its files changes.
func (s *Store) watchFiles(sec *Secret, sp *tlsv3.Secret, path string) {
	m := sec.load()
	if m == nil || len(m.files) == 0 {
		return
	}
	s.watch.add(sec.Name, m.files, func() {
		nm, err := compileSecret(sp, path)
		if err != nil {
			s.log.Warn("certificate files changed but do not load; the previous certificate stays in use", "secret", sec.Name, "error", err)
			return
		}
		sec.install(nm, sp, sec.VersionInfo)
		s.log.Info("certificate files reloaded", "secret", sec.Name)
	})
}

func compileSecret(sp *tlsv3.Secret, path string) (*material, error) {
	if err := config.CheckFields(sp, path, "name", "tls_certificate", "validation_context", "session_ticket_keys", "generic_secret"); err != nil {
		return nil, err
	}
	m := &material{}
	switch t := sp.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		c, files, err := loadCertificate(t.TlsCertificate, config.Join(path, "tls_certificate"))
		if err != nil {
			return nil, err
		}
		m.certs, m.files = []*tls.Certificate{c}, files
		st, f, err := loadOCSPStaple(t.TlsCertificate.GetOcspStaple(), c.Leaf, config.Join(path, "tls_certificate.ocsp_staple"))
		if err != nil {
			return nil, err
		}
		m.staples = []*ocspStaple{st}
		if f != "" {
			m.files = append(m.files, f)
		}
	case *tlsv3.Secret_ValidationContext:
		if err := m.setValidation(t.ValidationContext, config.Join(path, "validation_context")); err != nil {
			return nil, err
		}
	case *tlsv3.Secret_SessionTicketKeys:
		for i, k := range t.SessionTicketKeys.GetKeys() {
			b, _, err := readData(k, config.Index(config.Join(path, "session_ticket_keys.keys"), i))
			if err != nil {
				return nil, err
			}
			if len(b) != 80 {
				return nil, config.Errorf(config.Index(config.Join(path, "session_ticket_keys.keys"), i), "a session ticket key must be 80 bytes, got %d", len(b))
			}
			m.keys = append(m.keys, ticketKey(b))
		}
	case *tlsv3.Secret_GenericSecret:
		// Held for the extensions that name a generic secret; Envoy
		// accepts them whether or not anything reads them.
		gp := config.Join(path, "generic_secret")
		if err := config.CheckFields(t.GenericSecret, gp, "secret"); err != nil {
			return nil, err
		}
		if t.GenericSecret.GetSecret() == nil {
			return nil, config.Errorf(config.Join(gp, "secret"), "a generic secret needs a value")
		}
		b, f, err := readData(t.GenericSecret.GetSecret(), config.Join(gp, "secret"))
		if err != nil {
			return nil, err
		}
		m.generic = b
		if f != "" {
			m.files = []string{f}
		}
	default:
		return nil, config.Errorf(path, "secret %q has no value", sp.GetName())
	}
	return m, nil
}

// readData reads a DataSource; it returns the file name when it came from one.
func readData(ds *corev3.DataSource, path string) ([]byte, string, error) {
	return config.ReadDataSource(ds, path)
}

// loadCertificate reads a certificate chain and key.
func loadCertificate(tc *tlsv3.TlsCertificate, path string) (*tls.Certificate, []string, error) {
	if err := config.CheckFields(tc, path, "certificate_chain", "private_key", "watched_directory", "password", "ocsp_staple"); err != nil {
		return nil, nil, err
	}
	if tc.GetPassword() != nil {
		return nil, nil, config.Unsupported(config.Join(path, "password"), "password-protected private keys")
	}
	chain, f1, err := readData(tc.GetCertificateChain(), config.Join(path, "certificate_chain"))
	if err != nil {
		return nil, nil, err
	}
	key, f2, err := readData(tc.GetPrivateKey(), config.Join(path, "private_key"))
	if err != nil {
		return nil, nil, err
	}
	c, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, nil, config.Errorf(path, "certificate and key do not load: %v", err)
	}
	if c.Leaf == nil && len(c.Certificate) > 0 {
		c.Leaf, _ = x509.ParseCertificate(c.Certificate[0])
	}
	var files []string
	for _, f := range []string{f1, f2} {
		if f != "" {
			files = append(files, f)
		}
	}
	return &c, files, nil
}

func (m *material) setValidation(vc *tlsv3.CertificateValidationContext, path string) error {
	if err := config.CheckFields(vc, path, "trusted_ca", "match_typed_subject_alt_names", "match_subject_alt_names", "crl",
		"verify_certificate_spki", "verify_certificate_hash", "allow_expired_certificate", "trust_chain_verification",
		"watched_directory", "only_verify_leaf_cert_crl", "max_verify_depth", "system_root_certs"); err != nil {
		return err
	}
	m.vc = vc
	if ds := vc.GetTrustedCa(); ds != nil {
		b, f, err := readData(ds, config.Join(path, "trusted_ca"))
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return config.Errorf(config.Join(path, "trusted_ca"), "no PEM certificates found")
		}
		m.ca, m.caPEM = pool, b
		if f != "" {
			m.files = append(m.files, f)
		}
	} else if vc.GetSystemRootCerts() != nil {
		pool, err := x509.SystemCertPool()
		if err != nil {
			return config.Errorf(config.Join(path, "system_root_certs"), "%v", err)
		}
		m.ca = pool
	}
	if ds := vc.GetCrl(); ds != nil {
		b, f, err := readData(ds, config.Join(path, "crl"))
		if err != nil {
			return err
		}
		for len(b) > 0 {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				break
			}
			crl, err := x509.ParseRevocationList(blk.Bytes)
			if err != nil {
				return config.Errorf(config.Join(path, "crl"), "%v", err)
			}
			m.crl = append(m.crl, crl)
		}
		if len(m.crl) == 0 {
			return config.Errorf(config.Join(path, "crl"), "no PEM CRL found")
		}
		if f != "" {
			m.files = append(m.files, f)
		}
	}
	if vc.GetTrustChainVerification() == tlsv3.CertificateValidationContext_VERIFY_TRUST_CHAIN && m.ca == nil && len(vc.GetVerifyCertificateHash()) == 0 && len(vc.GetVerifyCertificateSpki()) == 0 && len(vc.GetMatchTypedSubjectAltNames()) == 0 && len(vc.GetMatchSubjectAltNames()) == 0 {
		return nil
	}
	if _, err := compileSANMatchers(vc, path); err != nil {
		return err
	}
	return nil
}

var errNotReady = errors.New("TLS secret not available yet")

func ticketKey(b []byte) [32]byte {
	var k [32]byte
	// Envoy's 80-byte key is name(16) | HMAC(32) | AES(32); Go derives its
	// own keys from 32 bytes, taken here from the HMAC and AES parts.
	copy(k[:], sha256Sum(b[16:]))
	return k
}
