package server

import (
	"math"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/tlsx"
	"github.com/legateproxy/legate/internal/upstream"
)

// setupTLS creates the secret store, installs static secrets and wires TLS
// compilation into listeners and clusters.
func (s *Server) setupTLS() error {
	s.secrets = tlsx.NewStore(s.log)
	for i, sp := range s.Bootstrap.GetStaticResources().GetSecrets() {
		p := config.Index("static_resources.secrets", i)
		if err := config.Validate(sp, p); err != nil {
			return err
		}
		if err := s.secrets.Set(sp, "", p); err != nil {
			return err
		}
	}
	s.deps.TLS = downstreamTLS{s}
	s.deps.SDS = s.sds
	return nil
}

// downstreamTLS compiles listeners' DownstreamTlsContexts against the
// server's secrets and SDS.
type downstreamTLS struct{ s *Server }

func (t downstreamTLS) DownstreamTransport(ts *corev3.TransportSocket, path, statPrefix string) (listener.ServerTransport, error) {
	if raw, err := tlsx.IsRawBuffer(ts, path, false); raw || err != nil {
		return nil, err
	}
	s := t.s
	return tlsx.CompileServer(ts, path, tlsx.Deps{Store: s.secrets, SDS: s.sds, Stats: s.Stats.Scope(statPrefix)})
}

// clusterTransport compiles a cluster's transport socket: raw_buffer
// (nil), an UpstreamTlsContext, or an extension with an
// upstream.TransportSocketFactory (upstream_proxy_protocol), which may
// wrap another transport socket compiled here in turn.
func (s *Server) clusterTransport(ts *corev3.TransportSocket, path string, c *clusterv3.Cluster, alpn []string) (upstream.TransportSocket, error) {
	name := c.GetName()
	if c.GetAltStatName() != "" {
		name = c.GetAltStatName()
	}
	if ts.GetTypedConfig() != nil {
		tp := config.Join(path, "typed_config")
		if r, err := extension.Lookup(extension.UpstreamTransportSocket, ts.GetTypedConfig(), tp); err == nil {
			if f, ok := r.Ext.Factory.(upstream.TransportSocketFactory); ok {
				return f(r.Config, tp, upstream.TransportContext{Stats: s.Stats.Scope("cluster." + stats.SanitizeName(name) + "."),
					ClusterMetadata: c.GetMetadata(),
					Inner: func(inner *corev3.TransportSocket, p string) (upstream.TransportSocket, error) {
						return s.clusterTransport(inner, p, c, alpn)
					}})
			}
		}
	}
	if raw, err := tlsx.IsRawBuffer(ts, path, true); raw || err != nil {
		return nil, err
	}
	cc, err := tlsx.CompileClient(ts, path, tlsx.Deps{Store: s.secrets, SDS: s.sds, Stats: s.Stats.Scope("cluster." + name + ".ssl.")}, alpn)
	if err != nil {
		return nil, err
	}
	if !cc.HasValidation() {
		s.log.Warn("upstream TLS without a validation_context: the server certificate is not verified (as in Envoy)", "cluster", c.GetName())
	}
	return cc, nil
}

// sds resolves an SdsSecretConfig to the secret's slot in the store: a
// static secret (no sds_config), or one that SDS fills — from a watched
// file, the ADS stream, its own gRPC stream or REST. Only the config
// source is checked here; the subscription follows once the listener or
// cluster that names the secret is accepted, and they warm until it
// arrives.
func (s *Server) sds(sc *tlsv3.SdsSecretConfig, path string) (*tlsx.Secret, error) {
	if err := config.CheckFields(sc, path, "name", "sds_config"); err != nil {
		return nil, err
	}
	name := sc.GetName()
	cs := sc.GetSdsConfig()
	if cs == nil {
		sec := s.secrets.Get(name)
		if sec.Proto() == nil {
			return nil, config.Errorf(config.Join(path, "name"), "no static secret named %q (define it under static_resources.secrets, or give an sds_config)", name)
		}
		return sec, nil
	}
	if s.dyn == nil {
		// Validating a resource file (legate validate): the config source
		// is the bootstrap's business, unknown here, as a listener file's
		// RDS names are another file's.
		return s.secrets.Get(name), nil
	}
	if err := s.dyn.checkSDS(cs, config.Join(path, "sds_config")); err != nil {
		return nil, err
	}
	return s.secrets.Get(name), nil
}

// Certs implements /certs: every certificate in use, with its validity.
func (s *Server) Certs() proto.Message {
	out := &adminv3.Certificates{}
	if s.secrets == nil {
		return out
	}
	for _, sec := range s.secrets.Secrets() {
		certs, cas := sec.Certificates()
		if len(certs) == 0 && len(cas) == 0 {
			continue
		}
		c := &adminv3.Certificate{}
		for _, x := range certs {
			c.CertChain = append(c.CertChain, certDetails(x, sec.Name))
		}
		for _, x := range cas {
			c.CaCert = append(c.CaCert, certDetails(x, sec.Name))
		}
		out.Certificates = append(out.Certificates, c)
	}
	return out
}

// daysUntilFirstCertExpiring is server.days_until_first_cert_expiring:
// the whole days until the first certificate in use expires, CAs
// included, 0 once one has; with no certificate, the largest uint32, as
// Envoy's context manager reports.
func (s *Server) daysUntilFirstCertExpiring() int64 {
	days := int64(math.MaxUint32)
	if s.secrets == nil {
		return days
	}
	for _, sec := range s.secrets.Secrets() {
		certs, cas := sec.Certificates()
		for _, x := range append(certs, cas...) {
			days = min(days, max(0, int64(time.Until(x.NotAfter).Hours()/24)))
		}
	}
	return days
}

func certDetails(x *tlsx.CertInfo, path string) *adminv3.CertificateDetails {
	d := &adminv3.CertificateDetails{
		Path:                path,
		SerialNumber:        x.Serial,
		DaysUntilExpiration: uint64(max(0, int(time.Until(x.NotAfter).Hours()/24))),
		ValidFrom:           timestamppb.New(x.NotBefore),
		ExpirationTime:      timestamppb.New(x.NotAfter),
	}
	for _, n := range x.DNS {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_Dns{Dns: n}})
	}
	for _, n := range x.URIs {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_Uri{Uri: n}})
	}
	return d
}
