// Package certgen makes the certificates that secure xDS between legate
// controller and its proxies, as Contour's certgen does: a CA, a serving
// certificate for the controller (SANs for its Service names and
// loopback) and a client certificate for the proxies. The controller
// requires a client certificate signed by the CA; proxies verify the
// controller's certificate against the CA and its name.
//
// Files in a directory (ca.crt, ca.key, controller.crt, controller.key,
// proxy.crt, proxy.key) serve a local run — the controller creates them in
// its state directory when it is given none, and `legate bootstrap` finds
// them there. In Kubernetes `legate certgen --kube` writes two TLS Secrets
// (legate-controller-cert, legate-proxy-cert) that carry ca.crt too.
package certgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ServerName is the name proxies verify in the controller's certificate
// (its Service name).
const ServerName = "legate-controller"

// File names in a certificate directory.
const (
	CAFile             = "ca.crt"
	CAKeyFile          = "ca.key"
	ControllerCertFile = "controller.crt"
	ControllerKeyFile  = "controller.key"
	ProxyCertFile      = "proxy.crt"
	ProxyKeyFile       = "proxy.key"
)

// Set is a CA with the controller's and the proxies' certificates, PEM.
type Set struct {
	CA, CAKey                     []byte
	ControllerCert, ControllerKey []byte
	ProxyCert, ProxyKey           []byte
}

// Options tune Generate.
type Options struct {
	// Namespace is where the controller's Service lives (its certificate
	// names legate-controller.<namespace>.svc…); default legate-system.
	Namespace string
	// Lifetime of the certificates; default one year (Contour's certgen).
	Lifetime time.Duration
	// Now is the issue time (tests); default time.Now.
	Now time.Time
}

// Generate makes a new CA and the two certificates it signs.
func Generate(o Options) (*Set, error) {
	if o.Namespace == "" {
		o.Namespace = "legate-system"
	}
	if o.Lifetime <= 0 {
		o.Lifetime = 365 * 24 * time.Hour
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "legate-xds-ca", Organization: []string{"legate"}},
		NotBefore: o.Now.Add(-time.Hour), NotAfter: o.Now.Add(o.Lifetime),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	s := &Set{CA: pemBlock("CERTIFICATE", caDER)}
	if s.CAKey, err = keyPEM(caKey); err != nil {
		return nil, err
	}
	ns := o.Namespace
	dns := []string{ServerName, ServerName + "." + ns, ServerName + "." + ns + ".svc", ServerName + "." + ns + ".svc.cluster.local", "localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if s.ControllerCert, s.ControllerKey, err = leaf(ca, caKey, ServerName, dns, ips, x509.ExtKeyUsageServerAuth, o); err != nil {
		return nil, err
	}
	if s.ProxyCert, s.ProxyKey, err = leaf(ca, caKey, "legate-proxy", []string{"legate-proxy"}, nil, x509.ExtKeyUsageClientAuth, o); err != nil {
		return nil, err
	}
	return s, nil
}

func leaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, dns []string, ips []net.IP, usage x509.ExtKeyUsage, o Options) ([]byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn, Organization: []string{"legate"}},
		NotBefore: o.Now.Add(-time.Hour), NotAfter: o.Now.Add(o.Lifetime),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames: dns, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	kp, err := keyPEM(key)
	return pemBlock("CERTIFICATE", der), kp, err
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pemBlock("PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// Write stores the set in dir (created 0700); keys are 0600. Files are
// written beside and renamed into place, so a reader never sees half.
func (s *Set) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certificate directory: %w", err)
	}
	for name, data := range map[string][]byte{
		CAFile: s.CA, CAKeyFile: s.CAKey, ControllerCertFile: s.ControllerCert, ControllerKeyFile: s.ControllerKey,
		ProxyCertFile: s.ProxyCert, ProxyKeyFile: s.ProxyKey,
	} {
		mode := os.FileMode(0o644)
		if filepath.Ext(name) == ".key" {
			mode = 0o600
		}
		p := filepath.Join(dir, name)
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, data, mode); err != nil {
			return err
		}
		if err := os.Rename(tmp, p); err != nil {
			return err
		}
	}
	return nil
}

// Has reports whether dir holds a complete set.
func Has(dir string) bool {
	for _, n := range []string{CAFile, ControllerCertFile, ControllerKeyFile, ProxyCertFile, ProxyKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			return false
		}
	}
	return true
}

// Ensure returns dir, generating a set there first when it has none.
// created reports whether it did.
func Ensure(dir string, o Options) (created bool, err error) {
	if Has(dir) {
		return false, nil
	}
	s, err := Generate(o)
	if err != nil {
		return false, err
	}
	return true, s.Write(dir)
}

// StateDir is where a local controller keeps its generated certificates
// and `legate bootstrap` looks for them: $LEGATE_STATE_DIR, else
// $XDG_STATE_HOME/legate, else ~/.local/state/legate.
func StateDir() (string, error) {
	if d := os.Getenv("LEGATE_STATE_DIR"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "legate"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return "", errors.New("no state directory: set LEGATE_STATE_DIR or HOME")
	}
	return filepath.Join(home, ".local", "state", "legate"), nil
}

// XDSDir is the certificate directory inside a state directory.
func XDSDir(state string) string { return filepath.Join(state, "xds-certs") }
