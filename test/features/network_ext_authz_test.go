// Network external authorization: envoy.filters.network.ext_authz asks a
// gRPC Authorization service about each connection on its first data, and
// closes the refused ones; failure_mode_allow; ext_authz.<stat_prefix>.*.

package features_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/legateproxy/legate/internal/testutil"
)

// netAuthz is an Authorization service whose next answer the test sets.
type netAuthz struct {
	authv3.UnimplementedAuthorizationServer
	mu       sync.Mutex
	decision string // ok, deny, error_response, fail, slow
	last     *authv3.CheckRequest
	calls    int
}

func (s *netAuthz) set(d string) {
	s.mu.Lock()
	s.decision = d
	s.mu.Unlock()
}

func (s *netAuthz) lastRequest() (*authv3.CheckRequest, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.calls
}

func (s *netAuthz) Check(ctx context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	s.mu.Lock()
	s.last, s.calls = r, s.calls+1
	d := s.decision
	s.mu.Unlock()
	switch d {
	case "ok":
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_OK)}}, nil
	case "error_response":
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_UNAVAILABLE)},
			HttpResponse: &authv3.CheckResponse_ErrorResponse{ErrorResponse: &authv3.DeniedHttpResponse{}}}, nil
	case "fail":
		return nil, grpcstatus.Error(grpccodes.Unavailable, "down")
	case "slow":
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
			// The proxy gave up (its 0.5 s timeout, propagated as the
			// call's deadline). An OK here could still race the
			// proxy's own timer on a loaded machine and let the
			// connection through: the test is about the timeout.
			return nil, ctx.Err()
		}
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_OK)}}, nil
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)}}, nil
}

func extAuthzFilter(fields string) string {
	return fmt.Sprintf(`{name: envoy.filters.network.ext_authz, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz,
		grpc_service: {envoy_grpc: {cluster_name: authz}, timeout: 0.5s}, transport_api_version: V3, %s}}`, fields)
}

func TestNetworkExtAuthz(t *testing.T) {
	up := startTCPEcho(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	authz := &netAuthz{}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, authz)
	go gs.Serve(ln)
	defer gs.Stop()
	authzCluster := strings.TrimSuffix(staticCluster("authz", "", ln.Addr().String()), "}") +
		`, typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {"@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}}`

	ca := testutil.NewCA(t, "authz-ca")
	server := ca.Issue(t, "svc", "svc.example.com")
	client := ca.Issue(t, "frontend", "spiffe://cluster.local/ns/default/sa/frontend")
	ts := fmt.Sprintf(`, transport_socket: {name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext,
		require_client_certificate: true, common_tls_context: {tls_certificates: [{certificate_chain: %s, private_key: %s}], validation_context: {trusted_ca: %s}}}}`,
		pemInline(server.CertPEM), pemInline(server.KeyPEM), pemInline(ca.CertPEM))
	listeners := netListener("authz", extAuthzFilter("stat_prefix: tcp"), "up", "") +
		netListener("open", extAuthzFilter("stat_prefix: open, failure_mode_allow: true"), "up", "") +
		netListener("tls", extAuthzFilter("stat_prefix: tlsz, include_peer_certificate: true, include_tls_session: true"), "up", ts)
	p := testutil.StartProxy(t, netBootstrap(listeners, "", up.Cluster("up"), authzCluster), nil)
	stat := func(name string) int64 { return p.Stat(t, "ext_authz."+name) }

	t.Run("ok", func(t *testing.T) {
		authz.set("ok")
		c, err := net.Dial("tcp", p.Addr("authz"))
		if err != nil {
			t.Fatal(err)
		}
		clientPort := c.LocalAddr().(*net.TCPAddr).Port
		if got := tcpEchoExchange(t, c, "hello"); got != "hello" {
			t.Fatalf("allowed connection got %q", got)
		}
		if stat("tcp.ok") != 1 || stat("tcp.total") != 1 || stat("tcp.active") != 0 {
			t.Errorf("ok=%d total=%d active=%d", stat("tcp.ok"), stat("tcp.total"), stat("tcp.active"))
		}
		r, _ := authz.lastRequest()
		src, dst := r.GetAttributes().GetSource().GetAddress().GetSocketAddress(), r.GetAttributes().GetDestination().GetAddress().GetSocketAddress()
		_, lport, _ := net.SplitHostPort(p.Addr("authz"))
		if src.GetAddress() != "127.0.0.1" || int(src.GetPortValue()) != clientPort || strconv.Itoa(int(dst.GetPortValue())) != lport {
			t.Errorf("check request source %v destination %v (client port %d, listener port %s)", src, dst, clientPort, lport)
		}
	})

	t.Run("no data, no check", func(t *testing.T) {
		_, before := authz.lastRequest()
		c, err := net.Dial("tcp", p.Addr("authz"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !stillOpen(c, 300*time.Millisecond) {
			t.Fatal("an idle connection was closed")
		}
		if _, n := authz.lastRequest(); n != before {
			t.Errorf("the service was asked before any data (%d calls, was %d)", n, before)
		}
		// Its end of stream is checked, though: under tcp_proxy (half-close)
		// Envoy's onData runs with end_stream.
		c.Close()
		testutil.Eventually(t, 3*time.Second, func() bool { _, n := authz.lastRequest(); return n == before+1 && stat("tcp.ok") == 2 },
			"end of stream: ok = %d", stat("tcp.ok"))
	})

	t.Run("denied", func(t *testing.T) {
		authz.set("deny")
		if got := tcpSend(t, p.Addr("authz"), "secret-deny"); got != "" {
			t.Fatalf("denied connection got %q", got)
		}
		testutil.Eventually(t, 3*time.Second, func() bool { return stat("tcp.denied") == 1 && stat("tcp.cx_closed") == 1 },
			"denied=%d cx_closed=%d", stat("tcp.denied"), stat("tcp.cx_closed"))
		if strings.Contains(up.Received(), "secret") {
			t.Error("a denied connection's bytes reached the upstream")
		}
	})

	t.Run("errors", func(t *testing.T) {
		for i, d := range []string{"fail", "slow", "error_response"} {
			authz.set(d)
			if got := tcpSend(t, p.Addr("authz"), "secret-"+d); got != "" {
				t.Fatalf("%s: got %q", d, got)
			}
			testutil.Eventually(t, 3*time.Second, func() bool { return stat("tcp.error") == int64(i+1) }, "%s: error = %d", d, stat("tcp.error"))
			if got := tcpSend(t, p.Addr("open"), "open-"+d); got != "open-"+d {
				t.Fatalf("%s with failure_mode_allow: got %q", d, got)
			}
			// Counted with the check's outcome; read with Eventually, as the
			// other counters here, so a loaded machine's scheduling does not
			// decide the test.
			testutil.Eventually(t, 3*time.Second, func() bool { return stat("open.failure_mode_allowed") == int64(i+1) },
				"%s: open.failure_mode_allowed = %d", d, stat("open.failure_mode_allowed"))
		}
		if v := stat("tcp.cx_closed"); v != 4 {
			t.Errorf("tcp.cx_closed = %d, want 4 (1 denial, 3 errors)", v)
		}
		if v := stat("open.cx_closed"); v != 0 {
			t.Errorf("open.cx_closed = %d", v)
		}
		if strings.Contains(up.Received(), "secret") {
			t.Error("a refused connection's bytes reached the upstream")
		}
	})

	t.Run("TLS peer", func(t *testing.T) {
		authz.set("ok")
		c, err := tls.Dial("tcp", p.Addr("tls"), &tls.Config{RootCAs: ca.Pool, ServerName: "svc.example.com", Certificates: []tls.Certificate{client.TLS}})
		if err != nil {
			t.Fatal(err)
		}
		if got := tcpEchoExchange(t, c, "tls"); got != "tls" {
			t.Fatalf("got %q", got)
		}
		r, _ := authz.lastRequest()
		a := r.GetAttributes()
		if a.GetSource().GetPrincipal() != "spiffe://cluster.local/ns/default/sa/frontend" {
			t.Errorf("source principal %q", a.GetSource().GetPrincipal())
		}
		if !strings.Contains(a.GetSource().GetCertificate(), "BEGIN%20CERTIFICATE") {
			t.Errorf("source certificate %q, want the URL-encoded PEM", a.GetSource().GetCertificate())
		}
		if a.GetTlsSession().GetSni() != "svc.example.com" {
			t.Errorf("tls_session %v", a.GetTlsSession())
		}
	})
}

func TestNetworkExtAuthzConfigErrors(t *testing.T) {
	up := startTCPEcho(t)
	for _, c := range []struct{ fields, path string }{
		{"stat_prefix: x, shadow_mode: true", "shadow_mode"},
		{"stat_prefix: x, send_tls_alert_on_denial: true", "send_tls_alert_on_denial"},
		{"stat_prefix: x, bootstrap_metadata_labels_key: labels", "bootstrap_metadata_labels_key"},
	} {
		_, err := testutil.TryStartProxy(t, netBootstrap(netListener("l", extAuthzFilter(c.fields), "up", ""), "", up.Cluster("up"), up.Cluster("authz")), nil)
		if err == nil || !strings.Contains(err.Error(), c.path) {
			t.Errorf("%s: %v, want an error naming %s", c.fields, err, c.path)
		}
	}
}
