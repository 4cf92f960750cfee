package asyncclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/credentials/local"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
)

// GRPCTarget is where a GrpcService's calls go: a cluster (envoy_grpc,
// Cluster and Authority) or, for google_grpc, a target URI dialed directly
// by grpc-go with the service's channel and call credentials (Google).
type GRPCTarget struct {
	Cluster, Authority string
	Google             *GoogleGRPC
}

// GoogleGRPC is a compiled GrpcService.google_grpc.
type GoogleGRPC struct {
	target string
	// key identifies the channel for the connection cache.
	key  string
	opts []grpc.DialOption
	// conn is the channel, once dialed.
	conn atomic.Pointer[grpc.ClientConn]
}

// String names the target in logs and errors.
func (t GRPCTarget) String() string {
	if t.Google != nil {
		return t.Google.target
	}
	return t.Cluster
}

// CompileGRPCTarget compiles a GrpcService's target (envoy_grpc or
// google_grpc) at path; the service's timeout and initial_metadata are
// its user's to read. Nothing is dialed here.
func CompileGRPCTarget(gs *corev3.GrpcService, path string) (GRPCTarget, error) {
	if eg := gs.GetEnvoyGrpc(); eg != nil {
		if err := config.CheckFields(eg, config.Join(path, "envoy_grpc"), "cluster_name", "authority", "retry_policy", "max_receive_message_length", "skip_envoy_headers"); err != nil {
			return GRPCTarget{}, err
		}
		return GRPCTarget{Cluster: eg.GetClusterName(), Authority: eg.GetAuthority()}, nil
	}
	g := gs.GetGoogleGrpc()
	if g == nil {
		return GRPCTarget{}, config.Errorf(path, "a grpc service needs envoy_grpc or google_grpc")
	}
	gp := config.Join(path, "google_grpc")
	// stat_prefix names the client's stats, which Legate does not keep per
	// google_grpc client; per_stream_buffer_limit_bytes bounds buffering
	// grpc-go does itself.
	if err := config.CheckFields(g, gp, "target_uri", "channel_credentials", "call_credentials", "stat_prefix", "per_stream_buffer_limit_bytes"); err != nil {
		return GRPCTarget{}, err
	}
	if g.GetTargetUri() == "" {
		return GRPCTarget{}, config.Errorf(config.Join(gp, "target_uri"), "target_uri is empty")
	}
	// The channel is cached by the whole google_grpc message, so a config
	// reload with the same service reuses it.
	kb, err := proto.MarshalOptions{Deterministic: true}.Marshal(g)
	if err != nil {
		return GRPCTarget{}, config.Errorf(gp, "%v", err)
	}
	out := &GoogleGRPC{target: g.GetTargetUri(), key: "google\x00" + string(kb)}
	// Without channel credentials Envoy's Google gRPC client connects in
	// plaintext (InsecureChannelCredentials).
	creds := insecure.NewCredentials()
	if cc := g.GetChannelCredentials(); cc != nil {
		cp := config.Join(gp, "channel_credentials")
		switch c := cc.GetCredentialSpecifier().(type) {
		case *corev3.GrpcService_GoogleGrpc_ChannelCredentials_SslCredentials:
			tc, err := sslCredentials(c.SslCredentials, config.Join(cp, "ssl_credentials"))
			if err != nil {
				return GRPCTarget{}, err
			}
			creds = credentials.NewTLS(tc)
		case *corev3.GrpcService_GoogleGrpc_ChannelCredentials_LocalCredentials:
			// gRPC's local credentials: a UDS or loopback peer only.
			creds = local.NewCredentials()
		default:
			return GRPCTarget{}, config.Unsupported(cp, "these channel credentials (Google default credentials)", "ssl_credentials", "local_credentials")
		}
	}
	out.opts = append(out.opts, grpc.WithTransportCredentials(creds))
	if len(g.GetCallCredentials()) > 0 && g.GetChannelCredentials().GetSslCredentials() == nil && g.GetChannelCredentials().GetLocalCredentials() == nil {
		// gRPC's access-token credentials need privacy and integrity: a
		// token is never sent on a plaintext channel.
		return GRPCTarget{}, config.Errorf(config.Join(gp, "call_credentials"), "call credentials need ssl_credentials or local_credentials channel credentials (the token would go in plaintext)")
	}
	for i, cc := range g.GetCallCredentials() {
		cp := config.Index(config.Join(gp, "call_credentials"), i)
		t, ok := cc.GetCredentialSpecifier().(*corev3.GrpcService_GoogleGrpc_CallCredentials_AccessToken)
		if !ok {
			return GRPCTarget{}, config.Unsupported(cp, "these call credentials (Google, IAM, STS and plugin credentials fetch tokens over the network)", "access_token")
		}
		out.opts = append(out.opts, grpc.WithPerRPCCredentials(accessToken{token: t.AccessToken}))
	}
	return GRPCTarget{Google: out}, nil
}

func sslCredentials(s *corev3.GrpcService_GoogleGrpc_SslCredentials, path string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.GetRootCerts() != nil {
		b, _, err := config.ReadDataSource(s.GetRootCerts(), config.Join(path, "root_certs"))
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, config.Errorf(config.Join(path, "root_certs"), "no PEM certificates found")
		}
		tc.RootCAs = pool
	}
	if (s.GetCertChain() == nil) != (s.GetPrivateKey() == nil) {
		return nil, config.Errorf(path, "cert_chain and private_key go together")
	}
	if s.GetCertChain() != nil {
		chain, _, err := config.ReadDataSource(s.GetCertChain(), config.Join(path, "cert_chain"))
		if err != nil {
			return nil, err
		}
		key, _, err := config.ReadDataSource(s.GetPrivateKey(), config.Join(path, "private_key"))
		if err != nil {
			return nil, err
		}
		cert, err := tls.X509KeyPair(chain, key)
		if err != nil {
			return nil, config.Errorf(path, "cert_chain and private_key do not load: %v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// accessToken is the access_token call credential: "authorization:
// Bearer <token>" on every call, as gRPC's AccessTokenCredentials, which
// require a secure channel (TLS, or local credentials over a Unix
// socket).
type accessToken struct{ token string }

func (a accessToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + a.token}, nil
}

func (a accessToken) RequireTransportSecurity() bool { return true }

// GRPCTo returns a connection for gRPC calls to the target: the cluster's
// (as GRPC) or one dialed to a google_grpc target, cached by its config.
func (c *Client) GRPCTo(t GRPCTarget) (*grpc.ClientConn, error) {
	if t.Google == nil {
		return c.GRPC(t.Cluster, t.Authority)
	}
	if cc := t.Google.conn.Load(); cc != nil {
		return cc, nil // the per-request path: no lock, no lookup
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cc := c.grpc[t.Google.key]
	if cc == nil {
		var err error
		if cc, err = grpc.NewClient(t.Google.target, t.Google.opts...); err != nil {
			return nil, fmt.Errorf("google_grpc target %s: %w", t.Google.target, err)
		}
		c.grpc[t.Google.key] = cc
	}
	t.Google.conn.Store(cc)
	return cc, nil
}

// GRPCService is a compiled GrpcService for callers that keep streams or
// make calls of their own (access-log and stats-sink exporters): where to,
// the timeout of one call or send (the service's timeout, else the
// caller's default) and initial_metadata, lower-cased.
type GRPCService struct {
	Target  GRPCTarget
	Timeout time.Duration
	MD      metadata.MD
}

// CompileGRPCService compiles gs at path (nil: "a grpc_service is
// required"); def is the timeout when gs has none.
func CompileGRPCService(gs *corev3.GrpcService, path string, def time.Duration) (*GRPCService, error) {
	if gs == nil {
		return nil, config.Errorf(path, "a grpc_service is required")
	}
	if err := config.CheckFields(gs, path, "envoy_grpc", "google_grpc", "timeout", "initial_metadata"); err != nil {
		return nil, err
	}
	t, err := CompileGRPCTarget(gs, path)
	if err != nil {
		return nil, err
	}
	if t.Google == nil && t.Cluster == "" {
		return nil, config.Errorf(config.Join(path, "envoy_grpc.cluster_name"), "a cluster is required")
	}
	s := &GRPCService{Target: t, Timeout: def, MD: metadata.MD{}}
	if d := gs.GetTimeout(); d != nil && d.AsDuration() > 0 {
		s.Timeout = d.AsDuration()
	}
	for _, m := range gs.GetInitialMetadata() {
		s.MD.Append(strings.ToLower(m.GetKey()), m.GetValue())
	}
	return s, nil
}

// Context returns the outgoing context of a call (the service's
// metadata) and its cancel, which the caller must call.
func (s *GRPCService) Context(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	if len(s.MD) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, s.MD)
	}
	return ctx, cancel
}
