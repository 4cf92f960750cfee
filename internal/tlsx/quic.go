package tlsx

// QUIC transport sockets (envoy.transport_sockets.quic): a
// QuicDownstreamTransport or QuicUpstreamTransport wraps a TLS context;
// quic-go runs the TLS 1.3 handshake inside QUIC, so these contexts give
// a *tls.Config rather than wrapping a net.Conn.

import (
	"crypto/tls"
	"crypto/x509"

	quicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/quic/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// ALPNH3 is HTTP/3's ALPN protocol (RFC 9114 §3.1).
const ALPNH3 = "h3"

func init() {
	extension.Register(extension.Extension{Name: "envoy.transport_sockets.quic",
		Category: extension.DownstreamTransportSocket, Config: &quicv3.QuicDownstreamTransport{}, Factory: tlsSocket,
		Notes: "quic-go: QUIC listeners (udp_listener_config.quic_options) only; no 0-RTT (enable_early_data: true is refused)"})
	extension.Register(extension.Extension{Name: "envoy.transport_sockets.quic",
		Category: extension.UpstreamTransportSocket, Config: &quicv3.QuicUpstreamTransport{}, Factory: tlsSocket,
		Notes: "quic-go: HTTP/3 clusters (explicit_http_config or auto_config with http3_protocol_options)"})
}

func compileQUICServer(q *quicv3.QuicDownstreamTransport, tp string, d Deps) (*ServerContext, error) {
	if err := config.CheckFields(q, tp, "downstream_tls_context", "enable_early_data", "enable_resumption"); err != nil {
		return nil, err
	}
	if q.GetEnableEarlyData().GetValue() {
		// 0-RTT requests can be replayed; Legate does not accept early data.
		return nil, config.Unsupported(config.Join(tp, "enable_early_data"), "QUIC 0-RTT early data")
	}
	if q.GetDownstreamTlsContext() == nil {
		return nil, config.Errorf(config.Join(tp, "downstream_tls_context"), "a QUIC transport socket needs a downstream_tls_context")
	}
	sc, err := compileServer(q.GetDownstreamTlsContext(), config.Join(tp, "downstream_tls_context"), d)
	if err != nil {
		return nil, err
	}
	sc.quic = true
	if r := q.GetEnableResumption(); r != nil && !r.GetValue() {
		sc.noTickets = true
	}
	return sc, nil
}

func compileQUICClient(q *quicv3.QuicUpstreamTransport, tp string, d Deps, defaultALPN []string) (*ClientContext, error) {
	if err := config.CheckFields(q, tp, "upstream_tls_context"); err != nil {
		return nil, err
	}
	if q.GetUpstreamTlsContext() == nil {
		return nil, config.Errorf(config.Join(tp, "upstream_tls_context"), "a QUIC transport socket needs an upstream_tls_context")
	}
	cc, err := compileClient(q.GetUpstreamTlsContext(), config.Join(tp, "upstream_tls_context"), d, defaultALPN)
	if err != nil {
		return nil, err
	}
	cc.quic = true
	return cc, nil
}

// QUIC reports whether the context is a QuicDownstreamTransport's: it
// serves QUIC listeners, never TCP connections.
func (sc *ServerContext) QUIC() bool { return sc.quic }

// QUICConfig is the tls.Config a QUIC listener hands quic-go: every
// handshake takes the context's current certificates (SDS rotations
// apply to new connections), TLS 1.3 and ALPN h3 unless the context names
// its own protocols.
func (sc *ServerContext) QUICConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cfg, err := sc.config()
			if err != nil {
				sc.stats.connErr.Inc()
				return nil, err
			}
			c := cfg.Clone()
			c.MinVersion = tls.VersionTLS13
			if len(c.NextProtos) == 0 {
				c.NextProtos = []string{ALPNH3}
			}
			// The per-handshake config must not select again.
			c.GetConfigForClient = nil
			return c, nil
		},
	}
}

// QUICHandshakeDone records a finished QUIC handshake in the context's
// ssl.* statistics, as Server does for TLS over TCP.
func (sc *ServerContext) QUICHandshakeDone(st tls.ConnectionState) { sc.stats.done(st) }

// QUICTLSInfo describes a QUIC connection's handshake for streaminfo, and
// its SNI.
func QUICTLSInfo(st tls.ConnectionState) (*streaminfo.TLSInfo, string) {
	c := &Conn{st: st}
	return c.TLSInfo()
}

// QUIC reports whether the context is a QuicUpstreamTransport's.
func (cc *ClientContext) QUIC() bool { return cc.quic }

// QUICConfig is the tls.Config for a QUIC connection to an upstream with
// SNI sni ("" keeps the context's): ALPN h3 and the context's validation.
func (cc *ClientContext) QUICConfig(sni string) *tls.Config {
	cfg := cc.config().Clone()
	cfg.NextProtos = []string{ALPNH3}
	if sni != "" {
		cfg.ServerName = sni
	}
	cfg.MinVersion = tls.VersionTLS13
	if cc.sanValidation && cfg.ServerName != "" {
		// auto_san_validation: the certificate must be valid for the SNI.
		name, verify := cfg.ServerName, cfg.VerifyPeerCertificate
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
	return cfg
}

// QUICHandshakeDone records a finished upstream QUIC handshake.
func (cc *ClientContext) QUICHandshakeDone(st tls.ConnectionState) { cc.stats.done(st) }
