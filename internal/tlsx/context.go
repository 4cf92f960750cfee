package tlsx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	quicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/quic/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// SDS resolves a named secret from an sds_config; the server provides it
// (static secrets, files, or an SDS subscription).
type SDS func(sc *tlsv3.SdsSecretConfig, path string) (*Secret, error)

// Deps are what compiling a TLS context needs.
type Deps struct {
	Store *Store
	SDS   SDS
	Stats stats.Scope // e.g. listener.<addr>.ssl. or cluster.<name>.ssl.
}

// tlsStats are Envoy's ssl.* statistics.
type tlsStats struct {
	scope                                     stats.Scope
	handshake, connErr, sessionReused, noCert *stats.Counter
	failNoCert, failVerify, failSAN, failHash *stats.Counter
}

func newTLSStats(s stats.Scope) *tlsStats {
	return &tlsStats{scope: s,
		handshake: s.Counter("handshake"), connErr: s.Counter("connection_error"),
		sessionReused: s.Counter("session_reused"), noCert: s.Counter("no_certificate"),
		failNoCert: s.Counter("fail_verify_no_cert"), failVerify: s.Counter("fail_verify_error"),
		failSAN: s.Counter("fail_verify_san"), failHash: s.Counter("fail_verify_cert_hash")}
}

func (s *tlsStats) done(st tls.ConnectionState) {
	s.handshake.Inc()
	if st.DidResume {
		s.sessionReused.Inc()
	}
	if len(st.PeerCertificates) == 0 {
		s.noCert.Inc()
	}
	s.scope.Counter("versions." + VersionName(st.Version)).Inc()
	s.scope.Counter("ciphers." + CipherName(st.CipherSuite)).Inc()
}

func (s *tlsStats) verifyFailed(err error) {
	switch err {
	case errNoCert:
		s.failNoCert.Inc()
	case errVerifySAN:
		s.failSAN.Inc()
	case errVerifyHash:
		s.failHash.Inc()
	default:
		s.failVerify.Inc()
	}
}

// common is the compiled CommonTlsContext.
type common struct {
	certs      []*Secret
	validation *Secret
	sans       []sanMatcher
	alpn       []string
	base       tls.Config
}

func compileCommon(cc *tlsv3.CommonTlsContext, path string, d Deps, server bool) (*common, error) {
	if err := config.CheckFields(cc, path, "tls_params", "tls_certificates", "tls_certificate_sds_secret_configs", "alpn_protocols",
		"validation_context", "validation_context_sds_secret_config", "combined_validation_context"); err != nil {
		return nil, err
	}
	c := &common{alpn: cc.GetAlpnProtocols()}
	if err := applyParams(&c.base, cc.GetTlsParams(), config.Join(path, "tls_params"), server); err != nil {
		return nil, err
	}
	for i, tc := range cc.GetTlsCertificates() {
		p := config.Index(config.Join(path, "tls_certificates"), i)
		sp := &tlsv3.Secret{Name: fmt.Sprintf("inline:%s", p), Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: tc}}
		if err := d.Store.Set(sp, "", p); err != nil {
			return nil, err
		}
		c.certs = append(c.certs, d.Store.Get(sp.Name))
	}
	for i, sc := range cc.GetTlsCertificateSdsSecretConfigs() {
		sec, err := d.SDS(sc, config.Index(config.Join(path, "tls_certificate_sds_secret_configs"), i))
		if err != nil {
			return nil, err
		}
		c.certs = append(c.certs, sec)
	}
	var vc *tlsv3.CertificateValidationContext
	var vsds *tlsv3.SdsSecretConfig
	vpath := path
	switch v := cc.GetValidationContextType().(type) {
	case *tlsv3.CommonTlsContext_ValidationContext:
		vc, vpath = v.ValidationContext, config.Join(path, "validation_context")
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		vsds = v.ValidationContextSdsSecretConfig
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		p := config.Join(path, "combined_validation_context")
		if err := config.CheckFields(v.CombinedValidationContext, p, "default_validation_context", "validation_context_sds_secret_config"); err != nil {
			return nil, err
		}
		vc, vpath = v.CombinedValidationContext.GetDefaultValidationContext(), config.Join(p, "default_validation_context")
		vsds = v.CombinedValidationContext.GetValidationContextSdsSecretConfig()
	}
	if vsds != nil {
		sec, err := d.SDS(vsds, config.Join(path, "validation_context_sds_secret_config"))
		if err != nil {
			return nil, err
		}
		c.validation = sec
	}
	if vc != nil {
		if c.validation != nil {
			// combined: SANs etc. from the default context, the CA from SDS.
			sans, err := compileSANMatchers(vc, vpath)
			if err != nil {
				return nil, err
			}
			c.sans = sans
		} else {
			sp := &tlsv3.Secret{Name: "inline:" + vpath, Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}}
			if err := d.Store.Set(sp, "", vpath); err != nil {
				return nil, err
			}
			c.validation = d.Store.Get(sp.Name)
			sans, _ := compileSANMatchers(vc, vpath)
			c.sans = sans
		}
	}
	return c, nil
}

func (c *common) certificates() []tls.Certificate {
	var out []tls.Certificate
	for _, s := range c.certs {
		if m := s.load(); m != nil {
			for _, cert := range m.certs {
				out = append(out, *cert)
			}
		}
	}
	return out
}

func (c *common) verifier(st *tlsStats) *verifier {
	if c.validation == nil {
		return nil
	}
	m := c.validation.load()
	if m == nil {
		return nil
	}
	sans := c.sans
	if len(sans) == 0 && m.vc != nil {
		sans, _ = compileSANMatchers(m.vc, "")
	}
	return &verifier{m: m, sans: sans, stats: st}
}

// ---- downstream ----

// ServerContext is a compiled DownstreamTlsContext.
type ServerContext struct {
	common *common
	// quic is set for a QuicDownstreamTransport (quic.go): the context
	// serves QUIC listeners only.
	quic        bool
	requireCert bool
	requireSNI  bool
	tickets     *Secret
	noTickets   bool
	stats       *tlsStats
	cached      atomic.Pointer[cachedConfig]
	// ocspPolicy is ocsp_staple_policy (LENIENT_STAPLING by default).
	ocspPolicy tlsv3.DownstreamTlsContext_OcspStaplePolicy
	// HandshakeTimeout bounds a handshake (slow or stuck clients).
	HandshakeTimeout time.Duration
}

type cachedConfig struct {
	key []*material
	cfg *tls.Config
	// ocspExpiry is when a stapled OCSP response expires and the config
	// must be rebuilt without it (zero: never).
	ocspExpiry time.Time
}

func init() {
	for _, c := range []extension.Category{extension.DownstreamTransportSocket, extension.UpstreamTransportSocket} {
		extension.Register(extension.Extension{Name: "envoy.transport_sockets.raw_buffer",
			Category: c, Config: &rawbufferv3.RawBuffer{}, Factory: rawBuffer})
	}
	extension.Register(extension.Extension{Name: "envoy.transport_sockets.tls",
		Category: extension.DownstreamTransportSocket, Config: &tlsv3.DownstreamTlsContext{}, Factory: tlsSocket,
		Notes: "crypto/tls: cipher suites and curves Go implements; no private key providers, OCSP policy or custom handshakers"})
	extension.Register(extension.Extension{Name: "envoy.transport_sockets.tls",
		Category: extension.UpstreamTransportSocket, Config: &tlsv3.UpstreamTlsContext{}, Factory: tlsSocket})
}

// The factories of transport sockets are markers: CompileServer and
// CompileClient build TLS; raw_buffer is plaintext.
type socketKind uint8

const (
	rawBuffer socketKind = iota
	tlsSocket
)

// IsRawBuffer resolves a transport socket through the registry and
// reports whether it is plaintext (raw_buffer); an @type that is neither
// raw_buffer nor TLS is an error naming it.
func IsRawBuffer(ts *corev3.TransportSocket, path string, upstream bool) (bool, error) {
	cat := extension.DownstreamTransportSocket
	if upstream {
		cat = extension.UpstreamTransportSocket
	}
	if ts.GetTypedConfig() == nil {
		// A bare name (v2 configs) selects the socket.
		if e := extension.ByName(cat, ts.GetName()); e != nil {
			return e.Factory == rawBuffer, nil
		}
	}
	r, err := extension.Lookup(cat, ts.GetTypedConfig(), config.Join(path, "typed_config"))
	if err != nil {
		return false, err
	}
	return r.Ext.Factory == rawBuffer, nil
}

// CompileServer compiles a DownstreamTlsContext.
func CompileServer(ts *corev3.TransportSocket, path string, d Deps) (*ServerContext, error) {
	tp := config.Join(path, "typed_config")
	r, err := extension.Lookup(extension.DownstreamTransportSocket, ts.GetTypedConfig(), tp)
	if err != nil {
		return nil, err
	}
	dtc, ok := r.Config.(*tlsv3.DownstreamTlsContext)
	if q, isQUIC := r.Config.(*quicv3.QuicDownstreamTransport); isQUIC {
		return compileQUICServer(q, tp, d)
	}
	if !ok {
		return nil, config.Errorf(tp, "@type %s is not a TLS context", r.Ext.TypeURL())
	}
	return compileServer(dtc, tp, d)
}

// compileServer compiles a DownstreamTlsContext at tp (a transport
// socket's typed_config, or a QUIC transport's downstream_tls_context).
func compileServer(dtc *tlsv3.DownstreamTlsContext, tp string, d Deps) (*ServerContext, error) {
	if err := config.CheckFields(dtc, tp, "common_tls_context", "require_client_certificate", "require_sni",
		"session_ticket_keys", "session_ticket_keys_sds_secret_config", "disable_stateless_session_resumption",
		"disable_stateful_session_resumption", "session_timeout", "full_scan_certs_on_sni_mismatch", "prefer_client_ciphers",
		"ocsp_staple_policy"); err != nil {
		return nil, err
	}
	c, err := compileCommon(dtc.GetCommonTlsContext(), config.Join(tp, "common_tls_context"), d, true)
	if err != nil {
		return nil, err
	}
	if len(c.certs) == 0 {
		return nil, config.Errorf(config.Join(tp, "common_tls_context"), "a server TLS context needs tls_certificates or tls_certificate_sds_secret_configs")
	}
	if err := checkOCSPConfig(c, dtc.GetOcspStaplePolicy(), config.Join(tp, "common_tls_context.tls_certificates")); err != nil {
		return nil, err
	}
	sc := &ServerContext{common: c, requireCert: dtc.GetRequireClientCertificate().GetValue(), requireSNI: dtc.GetRequireSni().GetValue(),
		stats: newTLSStats(d.Stats), HandshakeTimeout: 10 * time.Second, ocspPolicy: dtc.GetOcspStaplePolicy()}
	if sc.requireCert && c.validation == nil {
		return nil, config.Errorf(config.Join(tp, "require_client_certificate"), "require_client_certificate needs a validation_context with trusted_ca")
	}
	switch k := dtc.GetSessionTicketKeysType().(type) {
	case *tlsv3.DownstreamTlsContext_SessionTicketKeys:
		sp := &tlsv3.Secret{Name: "inline:" + config.Join(tp, "session_ticket_keys"), Type: &tlsv3.Secret_SessionTicketKeys{SessionTicketKeys: k.SessionTicketKeys}}
		if err := d.Store.Set(sp, "", config.Join(tp, "session_ticket_keys")); err != nil {
			return nil, err
		}
		sc.tickets = d.Store.Get(sp.Name)
	case *tlsv3.DownstreamTlsContext_SessionTicketKeysSdsSecretConfig:
		sec, err := d.SDS(k.SessionTicketKeysSdsSecretConfig, config.Join(tp, "session_ticket_keys_sds_secret_config"))
		if err != nil {
			return nil, err
		}
		sc.tickets = sec
	case *tlsv3.DownstreamTlsContext_DisableStatelessSessionResumption:
		sc.noTickets = k.DisableStatelessSessionResumption
	}
	return sc, nil
}

// config returns the tls.Config for the current secret values, rebuilt
// only when a secret changed.
func (sc *ServerContext) config() (*tls.Config, error) {
	key := make([]*material, 0, len(sc.common.certs)+2)
	for _, s := range sc.common.certs {
		key = append(key, s.load())
	}
	if sc.common.validation != nil {
		key = append(key, sc.common.validation.load())
	}
	if sc.tickets != nil {
		key = append(key, sc.tickets.load())
	}
	now := time.Now()
	if c := sc.cached.Load(); c != nil && sameKey(c.key, key) && (c.ocspExpiry.IsZero() || now.Before(c.ocspExpiry)) {
		return c.cfg, nil
	}
	certs, capable, ocspExpiry, differ := ocspCertificates(sc.common, sc.ocspPolicy, now)
	if len(certs) == 0 {
		return nil, errNotReady
	}
	cfg := sc.common.base.Clone()
	cfg.Certificates = certs
	cfg.NextProtos = sc.common.alpn
	cfg.SessionTicketsDisabled = sc.noTickets
	if sc.tickets != nil {
		if m := sc.tickets.load(); m != nil && len(m.keys) > 0 {
			cfg.SetSessionTicketKeys(m.keys)
		}
	}
	if v := sc.common.verifier(sc.stats); v != nil {
		cfg.ClientAuth = tls.RequestClientCert
		if sc.requireCert {
			cfg.ClientAuth = tls.RequireAnyClientCert
		}
		if v.m.ca != nil && !v.m.vc.GetSuppressClientCaList() {
			cfg.ClientCAs = v.m.ca
		}
		// VerifyConnection, not VerifyPeerCertificate: Go runs it on
		// resumed sessions too, so a ticket issued before a CA rotation
		// (same session_ticket_keys) cannot bring back a client the new
		// validation context refuses. Envoy gets this from the session ID
		// context it derives from the validation config.
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // optional client certificate not given
			}
			raw := make([][]byte, len(cs.PeerCertificates))
			for i, c := range cs.PeerCertificates {
				raw[i] = c.Raw
			}
			if err := v.verify(raw, ""); err != nil {
				sc.stats.verifyFailed(err)
				return err
			}
			return nil
		}
	}
	if differ {
		// A client that asks for a staple (status_request) must not get a
		// certificate whose policy fails without a valid response: Envoy
		// drops such certificates from the selection and rejects the
		// handshake when none is left. Other clients get every
		// certificate, unstapled. The callback is on the shared config so
		// that its automatic session ticket keys serve both.
		cc := cfg.Clone()
		cc.Certificates = capable
		cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			if !askedForStaple(h) {
				return nil, nil
			}
			if len(capable) == 0 {
				return nil, errOCSPStaple
			}
			return cc, nil
		}
	}
	sc.cached.Store(&cachedConfig{key: key, cfg: cfg, ocspExpiry: ocspExpiry})
	return cfg, nil
}

func sameKey(a, b []*material) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Server runs the TLS handshake on an accepted connection.
func (sc *ServerContext) Server(conn net.Conn) (net.Conn, error) {
	cfg, err := sc.config()
	if err != nil {
		sc.stats.connErr.Inc()
		return nil, err
	}
	tc := tls.Server(conn, cfg)
	if sc.HandshakeTimeout > 0 {
		conn.SetDeadline(time.Now().Add(sc.HandshakeTimeout))
	}
	if err := tc.Handshake(); err != nil {
		sc.stats.connErr.Inc()
		if strings.Contains(err.Error(), "didn't provide a certificate") {
			sc.stats.failNoCert.Inc()
		}
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	if sc.requireSNI && st.ServerName == "" {
		sc.stats.connErr.Inc()
		tc.Close()
		return nil, fmt.Errorf("require_sni: client sent no SNI")
	}
	sc.stats.done(st)
	return &Conn{Conn: tc, st: st, local: servedLeaf(cfg, st.ServerName)}, nil
}

// servedLeaf is the certificate the handshake presented: the only one, or
// (Go does not report its choice) the first whose names match the SNI, as
// Go picks among several, else the first.
func servedLeaf(cfg *tls.Config, sni string) *x509.Certificate {
	if len(cfg.Certificates) == 0 {
		return nil
	}
	if len(cfg.Certificates) > 1 && sni != "" {
		for _, c := range cfg.Certificates {
			if c.Leaf != nil && c.Leaf.VerifyHostname(sni) == nil {
				return c.Leaf
			}
		}
	}
	return cfg.Certificates[0].Leaf
}

// Certificates returns the leaf certificates in use (admin /certs).
func (sc *ServerContext) Certificates() []*x509.Certificate { return leaves(sc.common) }

// CA returns the validation CA certificates in use.
func (sc *ServerContext) CA() []*x509.Certificate { return caCerts(sc.common) }

func leaves(c *common) []*x509.Certificate {
	var out []*x509.Certificate
	for _, cert := range c.certificates() {
		if cert.Leaf != nil {
			out = append(out, cert.Leaf)
		}
	}
	return out
}

func caCerts(c *common) []*x509.Certificate {
	if c.validation == nil {
		return nil
	}
	m := c.validation.load()
	if m == nil {
		return nil
	}
	var out []*x509.Certificate
	rest := m.caPEM
	for len(rest) > 0 {
		var cert *x509.Certificate
		cert, rest = nextPEMCert(rest)
		if cert == nil {
			break
		}
		out = append(out, cert)
	}
	return out
}

// Conn is an established TLS connection with what access logs and
// filter-chain selection need.
type Conn struct {
	*tls.Conn
	st tls.ConnectionState
	// local is the certificate this side presented (server side; nil
	// when unknown).
	local *x509.Certificate
}

// NegotiatedProtocol returns the ALPN protocol.
func (c *Conn) NegotiatedProtocol() string { return c.st.NegotiatedProtocol }

// TLSInfo describes the connection for streaminfo, and the SNI.
func (c *Conn) TLSInfo() (*streaminfo.TLSInfo, string) {
	info := &streaminfo.TLSInfo{Version: VersionName(c.st.Version), Cipher: CipherName(c.st.CipherSuite)}
	if l := c.local; l != nil {
		info.LocalSubject = l.Subject.String()
		for _, u := range l.URIs {
			info.LocalURISAN = append(info.LocalURISAN, u.String())
		}
	}
	if len(c.st.PeerCertificates) > 0 {
		p := c.st.PeerCertificates[0]
		info.PeerCert = p
		info.PeerChain = c.st.PeerCertificates[1:]
		info.PeerSubject = p.Subject.String()
		info.PeerIssuer = p.Issuer.String()
		info.PeerDNSSAN = p.DNSNames
		for _, u := range p.URIs {
			info.PeerURISAN = append(info.PeerURISAN, u.String())
		}
		info.PeerSerial = strings.ToLower(p.SerialNumber.Text(16))
		info.PeerFingerprint = hex.EncodeToString(sha256Sum(p.Raw))
	}
	return info, c.st.ServerName
}

// CloseWrite half-closes the TLS stream.
func (c *Conn) CloseWrite() error { return c.Conn.CloseWrite() }

// ---- upstream ----

// ClientContext is a compiled UpstreamTlsContext.
type ClientContext struct {
	// quic is set for a QuicUpstreamTransport (quic.go).
	quic bool
	// sanValidation checks the certificate against the SNI (auto_san_validation).
	sanValidation bool
	common        *common
	sni           string
	alpn          []string
	stats         *tlsStats
	cached        atomic.Pointer[cachedConfig]
	cacheSize     int // session cache entries; 0 disables resumption
}

// CompileClient compiles an UpstreamTlsContext. defaultALPN is used when
// the context names none (h2 for HTTP/2 clusters, as Envoy).
func CompileClient(ts *corev3.TransportSocket, path string, d Deps, defaultALPN []string) (*ClientContext, error) {
	tp := config.Join(path, "typed_config")
	r, err := extension.Lookup(extension.UpstreamTransportSocket, ts.GetTypedConfig(), tp)
	if err != nil {
		return nil, err
	}
	utc, ok := r.Config.(*tlsv3.UpstreamTlsContext)
	if q, isQUIC := r.Config.(*quicv3.QuicUpstreamTransport); isQUIC {
		return compileQUICClient(q, tp, d, defaultALPN)
	}
	if !ok {
		return nil, config.Errorf(tp, "@type %s is not a TLS context", r.Ext.TypeURL())
	}
	return compileClient(utc, tp, d, defaultALPN)
}

// compileClient compiles an UpstreamTlsContext at tp (a transport
// socket's typed_config, or a QUIC transport's upstream_tls_context).
func compileClient(utc *tlsv3.UpstreamTlsContext, tp string, d Deps, defaultALPN []string) (*ClientContext, error) {
	if err := config.CheckFields(utc, tp, "common_tls_context", "sni", "allow_renegotiation", "max_session_keys"); err != nil {
		return nil, err
	}
	c, err := compileCommon(utc.GetCommonTlsContext(), config.Join(tp, "common_tls_context"), d, false)
	if err != nil {
		return nil, err
	}
	cc := &ClientContext{common: c, sni: utc.GetSni(), alpn: c.alpn, stats: newTLSStats(d.Stats)}
	if len(cc.alpn) == 0 {
		cc.alpn = defaultALPN
	}
	keys := 1
	if v := utc.GetMaxSessionKeys(); v != nil {
		keys = int(v.GetValue())
	}
	cc.cacheSize = keys * 64
	return cc, nil
}

func (cc *ClientContext) config() *tls.Config {
	key := []*material{}
	for _, s := range cc.common.certs {
		key = append(key, s.load())
	}
	if cc.common.validation != nil {
		key = append(key, cc.common.validation.load())
	}
	if c := cc.cached.Load(); c != nil && sameKey(c.key, key) {
		return c.cfg
	}
	cfg := cc.common.base.Clone()
	cfg.Certificates = cc.common.certificates()
	cfg.NextProtos = cc.alpn
	cfg.ServerName = cc.sni
	if cc.cacheSize > 0 {
		// A new session cache with every change of certificates or
		// validation context: Go does not verify the peer again on a
		// resumed session, so sessions from before a CA rotation must not
		// resume (Envoy's new SSL_CTX on a context update has the same
		// effect).
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(cc.cacheSize)
	}
	// As Envoy, the server certificate is checked only as the validation
	// context says; with none, it is not checked.
	cfg.InsecureSkipVerify = true
	if v := cc.common.verifier(cc.stats); v != nil {
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if err := v.verify(raw, cc.sni); err != nil {
				cc.stats.verifyFailed(err)
				return err
			}
			return nil
		}
	}
	cc.cached.Store(&cachedConfig{key: key, cfg: cfg})
	return cfg
}

// Client runs the TLS handshake on a new upstream connection.
func (cc *ClientContext) Client(ctx context.Context, conn net.Conn, sni string) (net.Conn, error) {
	cfg := cc.config()
	if sni != "" && sni != cfg.ServerName {
		cfg = cfg.Clone()
		cfg.ServerName = sni
	}
	if cc.sanValidation && cfg.ServerName != "" {
		// auto_san_validation: the certificate must be valid for the SNI.
		name, verify := cfg.ServerName, cfg.VerifyPeerCertificate
		cfg = cfg.Clone()
		cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
			if verify != nil {
				if err := verify(raw, chains); err != nil {
					return err
				}
			}
			leaf, err := x509.ParseCertificate(raw[0])
			if err == nil {
				err = leaf.VerifyHostname(name)
			}
			if err != nil {
				cc.stats.failSAN.Inc()
			}
			return err
		}
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		cc.stats.connErr.Inc()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	st := tc.ConnectionState()
	cc.stats.done(st)
	return &Conn{Conn: tc, st: st}, nil
}

// ALPN returns the protocol negotiated on an upstream connection.
func (cc *ClientContext) ALPN(conn net.Conn) string {
	if c, ok := conn.(*Conn); ok {
		return c.st.NegotiatedProtocol
	}
	return ""
}

// SetSANValidation turns on auto_san_validation.
func (cc *ClientContext) SetSANValidation(on bool) { cc.sanValidation = on }

// HasValidation reports whether the context verifies the peer.
func (cc *ClientContext) HasValidation() bool { return cc.common.validation != nil }

// CertInfo describes a certificate for the admin API.
type CertInfo struct {
	Serial              string
	NotBefore, NotAfter time.Time
	DNS, URIs           []string
}

func certInfo(c *x509.Certificate) *CertInfo {
	ci := &CertInfo{Serial: strings.ToLower(c.SerialNumber.Text(16)), NotBefore: c.NotBefore, NotAfter: c.NotAfter, DNS: c.DNSNames}
	for _, u := range c.URIs {
		ci.URIs = append(ci.URIs, u.String())
	}
	return ci
}

// Certificates returns the secret's certificates and CA certificates.
func (s *Secret) Certificates() (certs, cas []*CertInfo) {
	m := s.load()
	if m == nil {
		return nil, nil
	}
	for _, c := range m.certs {
		if c.Leaf != nil {
			certs = append(certs, certInfo(c.Leaf))
		}
	}
	rest := m.caPEM
	for len(rest) > 0 {
		var c *x509.Certificate
		c, rest = nextPEMCert(rest)
		if c == nil {
			break
		}
		cas = append(cas, certInfo(c))
	}
	return certs, cas
}
