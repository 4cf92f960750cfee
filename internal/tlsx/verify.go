package tlsx

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/legateproxy/legate/internal/config"
)

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// sanMatcher matches one subject alternative name.
type sanMatcher struct {
	typ   tlsv3.SubjectAltNameMatcher_SanType // 0 = any type (match_subject_alt_names)
	match func(string) bool
}

func stringMatch(sm *matcherv3.StringMatcher, path string) (func(string) bool, error) {
	if err := config.CheckFields(sm, path, "exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"); err != nil {
		return nil, err
	}
	ic := sm.GetIgnoreCase()
	norm := func(s string) string {
		if ic {
			return strings.ToLower(s)
		}
		return s
	}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		v := norm(p.Exact)
		return func(s string) bool { return norm(s) == v }, nil
	case *matcherv3.StringMatcher_Prefix:
		v := norm(p.Prefix)
		return func(s string) bool { return strings.HasPrefix(norm(s), v) }, nil
	case *matcherv3.StringMatcher_Suffix:
		v := norm(p.Suffix)
		return func(s string) bool { return strings.HasSuffix(norm(s), v) }, nil
	case *matcherv3.StringMatcher_Contains:
		v := norm(p.Contains)
		return func(s string) bool { return strings.Contains(norm(s), v) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return nil, config.Errorf(config.Join(path, "safe_regex.regex"), "%v", err)
		}
		return func(s string) bool { return re.MatchString(s) }, nil
	}
	return nil, config.Errorf(path, "string matcher has no pattern")
}

func compileSANMatchers(vc *tlsv3.CertificateValidationContext, path string) ([]sanMatcher, error) {
	var out []sanMatcher
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		p := config.Index(config.Join(path, "match_typed_subject_alt_names"), i)
		if err := config.CheckFields(m, p, "san_type", "matcher"); err != nil {
			return nil, err
		}
		if m.GetSanType() == tlsv3.SubjectAltNameMatcher_OTHER_NAME {
			return nil, config.Unsupported(config.Join(p, "san_type"), "OTHER_NAME", "DNS", "URI", "EMAIL", "IP_ADDRESS")
		}
		fn, err := stringMatch(m.GetMatcher(), config.Join(p, "matcher"))
		if err != nil {
			return nil, err
		}
		out = append(out, sanMatcher{typ: m.GetSanType(), match: fn})
	}
	for i, sm := range vc.GetMatchSubjectAltNames() {
		fn, err := stringMatch(sm, config.Index(config.Join(path, "match_subject_alt_names"), i))
		if err != nil {
			return nil, err
		}
		out = append(out, sanMatcher{match: fn})
	}
	return out, nil
}

// sanMatches reports whether any SAN of the certificate matches any matcher.
func sanMatches(c *x509.Certificate, ms []sanMatcher) bool {
	for _, m := range ms {
		try := func(typ tlsv3.SubjectAltNameMatcher_SanType, vals []string) bool {
			if m.typ != 0 && m.typ != typ {
				return false
			}
			for _, v := range vals {
				if m.match(v) {
					return true
				}
			}
			return false
		}
		var uris, ips []string
		for _, u := range c.URIs {
			uris = append(uris, u.String())
		}
		for _, ip := range c.IPAddresses {
			ips = append(ips, ip.String())
		}
		if try(tlsv3.SubjectAltNameMatcher_DNS, c.DNSNames) || try(tlsv3.SubjectAltNameMatcher_URI, uris) ||
			try(tlsv3.SubjectAltNameMatcher_EMAIL, c.EmailAddresses) || try(tlsv3.SubjectAltNameMatcher_IP_ADDRESS, ips) {
			return true
		}
	}
	return false
}

// verifier checks a peer certificate chain as Envoy's validation context.
type verifier struct {
	m    *material
	sans []sanMatcher
	// serverName, for upstream verification of the SNI when no SAN matcher
	// is configured (Envoy's auto_sni_san_validation).
	stats *tlsStats
}

var (
	errNoCert     = errors.New("peer did not present a certificate")
	errVerifySAN  = errors.New("peer certificate does not match any configured subject alt name")
	errVerifyHash = errors.New("peer certificate does not match the configured hash or SPKI")
)

// verify runs the configured checks on the raw chain.
func (v *verifier) verify(rawCerts [][]byte, serverName string) error {
	if len(rawCerts) == 0 {
		return errNoCert
	}
	certs := make([]*x509.Certificate, 0, len(rawCerts))
	for _, r := range rawCerts {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return err
		}
		certs = append(certs, c)
	}
	leaf := certs[0]
	vc := v.m.vc
	if v.m.ca != nil && vc.GetTrustChainVerification() != tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED {
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		opts := x509.VerifyOptions{Roots: v.m.ca, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
		if vc.GetAllowExpiredCertificate() {
			opts.CurrentTime = leaf.NotBefore.Add(time.Second)
		}
		chains, err := leaf.Verify(opts)
		if err != nil {
			return err
		}
		if len(v.m.crl) > 0 {
			if err := checkCRL(chains, v.m.crl, vc.GetOnlyVerifyLeafCertCrl()); err != nil {
				return err
			}
		}
	}
	if len(vc.GetVerifyCertificateHash()) > 0 || len(vc.GetVerifyCertificateSpki()) > 0 {
		ok := false
		h := sha256.Sum256(leaf.Raw)
		for _, want := range vc.GetVerifyCertificateHash() {
			if strings.EqualFold(strings.ReplaceAll(want, ":", ""), hex.EncodeToString(h[:])) {
				ok = true
			}
		}
		spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
		for _, want := range vc.GetVerifyCertificateSpki() {
			if want == base64.StdEncoding.EncodeToString(spki[:]) {
				ok = true
			}
		}
		if !ok {
			return errVerifyHash
		}
	}
	if len(v.sans) > 0 && !sanMatches(leaf, v.sans) {
		return errVerifySAN
	}
	return nil
}

// checkCRL rejects a chain with a revoked certificate.
func checkCRL(chains [][]*x509.Certificate, crls []*x509.RevocationList, leafOnly bool) error {
	for _, chain := range chains {
		for i, c := range chain {
			if leafOnly && i > 0 {
				break
			}
			for _, crl := range crls {
				if crl.Issuer.String() != c.Issuer.String() {
					continue
				}
				for _, r := range crl.RevokedCertificateEntries {
					if r.SerialNumber.Cmp(c.SerialNumber) == 0 {
						return fmt.Errorf("certificate %s is revoked", c.Subject)
					}
				}
			}
		}
	}
	return nil
}

// --- protocol parameters ---

var versions = map[tlsv3.TlsParameters_TlsProtocol]uint16{
	tlsv3.TlsParameters_TLSv1_0: tls.VersionTLS10, tlsv3.TlsParameters_TLSv1_1: tls.VersionTLS11,
	tlsv3.TlsParameters_TLSv1_2: tls.VersionTLS12, tlsv3.TlsParameters_TLSv1_3: tls.VersionTLS13,
}

// cipherNames maps OpenSSL/BoringSSL cipher names (as Envoy takes them) to Go.
var cipherNames = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":     tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":     tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":     tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":          tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":            tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":          tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":            tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	"AES128-GCM-SHA256":               tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":               tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-SHA":                      tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"AES256-SHA":                      tls.TLS_RSA_WITH_AES_256_CBC_SHA,
	"ECDHE-ECDSA-CHACHA20-POLY1305-D": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
}

// curveNames are BoringSSL's group names (and their OpenSSL aliases, which
// BoringSSL's curves list accepts too) of the groups Go's crypto/tls has.
var curveNames = map[string]tls.CurveID{
	"X25519": tls.X25519, "P-256": tls.CurveP256, "P-384": tls.CurveP384, "P-521": tls.CurveP521,
	"x25519": tls.X25519, "prime256v1": tls.CurveP256, "secp384r1": tls.CurveP384, "secp521r1": tls.CurveP521,
	"X25519MLKEM768": tls.X25519MLKEM768,
}

// applyParams maps tls_params onto a tls.Config; unsupported values are
// errors that say what Go's crypto/tls can do.
func applyParams(cfg *tls.Config, p *tlsv3.TlsParameters, path string, server bool) error {
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS13
	if !server {
		cfg.MinVersion = tls.VersionTLS12
	}
	if p == nil {
		return nil
	}
	if err := config.CheckFields(p, path, "tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites", "ecdh_curves"); err != nil {
		return err
	}
	if v := p.GetTlsMinimumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
		cfg.MinVersion = versions[v]
	}
	if v := p.GetTlsMaximumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
		cfg.MaxVersion = versions[v]
	}
	if cfg.MinVersion > cfg.MaxVersion {
		return config.Errorf(path, "tls_minimum_protocol_version is above tls_maximum_protocol_version")
	}
	for i, spec := range p.GetCipherSuites() {
		// Envoy accepts OpenSSL cipher lists such as "[A|B]" (equal preference).
		for _, name := range strings.FieldsFunc(spec, func(r rune) bool { return r == '[' || r == ']' || r == '|' }) {
			id, ok := cipherNames[name]
			if !ok {
				return config.Errorf(config.Index(config.Join(path, "cipher_suites"), i), "cipher %q is not available in Go's crypto/tls (TLS 1.3 suites are always on and not configurable; supported TLS 1.2 names: ECDHE-ECDSA/RSA-AES128/256-GCM-SHA256/384, ECDHE-*-CHACHA20-POLY1305, ECDHE-*-AES128/256-SHA, AES128/256-GCM-SHA256/384, AES128/256-SHA)", name)
			}
			cfg.CipherSuites = append(cfg.CipherSuites, id)
		}
	}
	for i, entry := range p.GetEcdhCurves() {
		// Envoy joins the list with ":" into one BoringSSL curves list, so
		// an entry may itself be a colon-joined list ("X25519:P-256", as
		// the SPIRE examples write it); each name must be known, an empty
		// one included, as BoringSSL refuses the whole list otherwise.
		for _, name := range strings.Split(entry, ":") {
			id, ok := curveNames[name]
			if !ok {
				return config.Errorf(config.Index(config.Join(path, "ecdh_curves"), i), "curve %q is not available in Go's crypto/tls (X25519, P-256, P-384, P-521, X25519MLKEM768)", name)
			}
			if !slices.Contains(cfg.CurvePreferences, id) {
				cfg.CurvePreferences = append(cfg.CurvePreferences, id)
			}
		}
	}
	return nil
}

// VersionName renders a TLS version as Envoy does (TLSv1.2).
func VersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return "unknown"
}

// CipherName renders a cipher suite with its OpenSSL name as Envoy does.
func CipherName(id uint16) string {
	for n, v := range cipherNames {
		if v == id && !strings.HasSuffix(n, "-D") {
			return n
		}
	}
	switch id {
	case tls.TLS_AES_128_GCM_SHA256:
		return "TLS_AES_128_GCM_SHA256"
	case tls.TLS_AES_256_GCM_SHA384:
		return "TLS_AES_256_GCM_SHA384"
	case tls.TLS_CHACHA20_POLY1305_SHA256:
		return "TLS_CHACHA20_POLY1305_SHA256"
	}
	return tls.CipherSuiteName(id)
}

// --- file watching ---

// fileWatcher polls files and calls back when one changes (content
// identity: size, mtime, inode of the resolved target), which catches an
// atomic rename and a Kubernetes ..data symlink swap alike.
type fileWatcher struct {
	mu    sync.Mutex
	subs  map[string]*watchSub
	stop  chan struct{}
	start sync.Once
	log   *slog.Logger
}

type watchSub struct {
	files []string
	ids   []string
	fn    func()
}

func newFileWatcher(log *slog.Logger) *fileWatcher {
	return &fileWatcher{subs: map[string]*watchSub{}, stop: make(chan struct{}), log: log}
}

func fileID(p string) string {
	fi, err := os.Stat(p)
	if err != nil {
		return "missing"
	}
	return fmt.Sprintf("%d/%d/%v", fi.Size(), fi.ModTime().UnixNano(), inode(fi))
}

func (w *fileWatcher) add(key string, files []string, fn func()) {
	sub := &watchSub{files: files, fn: fn}
	for _, f := range files {
		sub.ids = append(sub.ids, fileID(f))
	}
	w.mu.Lock()
	w.subs[key] = sub
	w.mu.Unlock()
	w.start.Do(func() { go w.run() })
}

func (w *fileWatcher) run() {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		w.mu.Lock()
		var fire []func()
		for _, s := range w.subs {
			changed := false
			for i, f := range s.files {
				if id := fileID(f); id != s.ids[i] {
					s.ids[i] = id
					changed = true
				}
			}
			if changed {
				fire = append(fire, s.fn)
			}
		}
		w.mu.Unlock()
		for _, fn := range fire {
			fn()
		}
	}
}

func (w *fileWatcher) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
}
