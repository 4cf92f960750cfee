package ext_authz

import (
	"crypto/x509"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func compileYAML(t *testing.T, y string) (*filterConfig, error) {
	t.Helper()
	c := &extauthzv3.ExtAuthz{}
	if _, err := config.Decode([]byte(y), c, "authz"); err != nil {
		t.Fatal(err)
	}
	return compile(&listener.Context{Stats: stats.NewStore(), Log: slog.Default(), Async: asyncclient.New(nil)}, c, "authz")
}

func TestConfig(t *testing.T) {
	const grpc = `grpc_service: {envoy_grpc: {cluster_name: authz}}`
	for _, c := range []struct{ cfg, errPath string }{
		{`{stat_prefix: x, ` + grpc + `}`, ""},
		{`{stat_prefix: x, ` + grpc + `, failure_mode_allow: true, include_peer_certificate: true, include_tls_session: true, metadata_context_namespaces: [a],
			filter_enabled_metadata: {filter: f, path: [{key: k}], value: {present_match: true}}}`, ""},
		{`{stat_prefix: x}`, "authz.grpc_service"},
		{`{stat_prefix: x, grpc_service: {google_grpc: {target_uri: "x:1", stat_prefix: g, channel_credentials: {google_default: {}}}}}`, "authz.grpc_service.google_grpc.channel_credentials"},
		{`{stat_prefix: x, grpc_service: {envoy_grpc: {cluster_name: authz}, retry_policy: {num_retries: 2}}}`, "authz.grpc_service.retry_policy"},
		{`{stat_prefix: x, ` + grpc + `, shadow_mode: true}`, "authz.shadow_mode"},
		{`{stat_prefix: x, ` + grpc + `, send_tls_alert_on_denial: true}`, "authz.send_tls_alert_on_denial"},
		{`{stat_prefix: x, ` + grpc + `, bootstrap_metadata_labels_key: l}`, "authz.bootstrap_metadata_labels_key"},
	} {
		_, err := compileYAML(t, c.cfg)
		switch {
		case c.errPath == "" && err != nil:
			t.Errorf("%s: %v", c.cfg, err)
		case c.errPath != "" && (err == nil || !strings.Contains(err.Error(), c.errPath)):
			t.Errorf("%s: error %v, want one naming %s", c.cfg, err, c.errPath)
		}
	}
	// The loader upgrades a V2 in config text; over xDS it is an error.
	c := &extauthzv3.ExtAuthz{}
	if _, err := config.Decode([]byte(`{stat_prefix: x, `+grpc+`}`), c, "authz"); err != nil {
		t.Fatal(err)
	}
	c.TransportApiVersion = corev3.ApiVersion_V2
	if _, err := compile(&listener.Context{Stats: stats.NewStore(), Log: slog.Default(), Async: asyncclient.New(nil)}, c, "authz"); err == nil || !strings.Contains(err.Error(), "authz.transport_api_version") {
		t.Errorf("transport_api_version V2: error %v, want one naming authz.transport_api_version", err)
	}
}

// The request is Envoy's createTcpCheck.
func TestRequest(t *testing.T) {
	f, err := compileYAML(t, `{stat_prefix: x, grpc_service: {envoy_grpc: {cluster_name: authz}}, include_tls_session: true, metadata_context_namespaces: [pp]}`)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := net.Pipe()
	tc := &listener.Conn{Conn: a, Remote: netip.MustParseAddrPort("10.0.0.1:1234"), Local: netip.MustParseAddrPort("10.0.0.2:443"), SNI: "svc",
		TLS: &streaminfo.TLSInfo{PeerCert: &x509.Certificate{}, PeerDNSSAN: []string{"client.example"}, PeerSubject: "CN=client"}}
	tc.SetMetadata("pp", map[string]*structpb.Value{"tlv": structpb.NewStringValue("v")})
	tc.SetMetadata("other", map[string]*structpb.Value{"x": structpb.NewStringValue("y")})
	f.OnNewConnection(tc)
	r := tc.Conn.(*conn).request().GetAttributes()
	if s := r.GetSource(); s.GetAddress().GetSocketAddress().GetAddress() != "10.0.0.1" || s.GetAddress().GetSocketAddress().GetPortValue() != 1234 ||
		s.GetPrincipal() != "client.example" || s.GetCertificate() != "" {
		t.Errorf("source %v (principal: the DNS SAN without a URI SAN; no certificate unless asked)", s)
	}
	if d := r.GetDestination(); d.GetAddress().GetSocketAddress().GetPortValue() != 443 {
		t.Errorf("destination %v", d)
	}
	if r.GetTlsSession().GetSni() != "svc" {
		t.Errorf("tls_session %v", r.GetTlsSession())
	}
	md := r.GetMetadataContext().GetFilterMetadata()
	if len(md) != 1 || md["pp"].GetFields()["tlv"].GetStringValue() != "v" {
		t.Errorf("metadata_context %v, want only the pp namespace", md)
	}
}
