package ext_authz_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/testutil"
)

// authServer is an authorization service on the official protos.
type authServer struct {
	authv3.UnimplementedAuthorizationServer
}

func hv(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}

func (authServer) Check(_ context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	h := r.GetAttributes().GetRequest().GetHttp()
	if h.GetHeaders()["x-allow"] != "yes" {
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized}, Body: "nope",
				Headers: []*corev3.HeaderValueOption{hv("www-authenticate", `Bearer realm="legate"`)}}}}, nil
	}
	ok := &authv3.OkHttpResponse{
		Headers:              []*corev3.HeaderValueOption{hv("x-user", "alice"), hv("x-tenant", r.GetAttributes().GetContextExtensions()["tenant"]), hv("x-body", h.GetBody())},
		HeadersToRemove:      []string{"x-secret"},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-authz", Value: "ok"}, Append: wrapperspb.Bool(true)}},
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: ok},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{"user": structpb.NewStringValue("alice")}}}, nil
}

const grpcConfig = `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: {{.Log}},
            log_format: {text_format: "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %DYNAMIC_METADATA(envoy.filters.http.ext_authz:user)%\n"}}}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/public"}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz: {"@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute, disabled: true}
              - match: {prefix: "/tenant"}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings: {context_extensions: {tenant: t1}}
              - match: {prefix: "/"}
                route: {cluster: backend}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              with_request_body: {max_request_bytes: 1024, allow_partial_message: true}
              failure_mode_allow: {{.FailOpen}}
              failure_mode_allow_header_add: true
              grpc_service:
                envoy_grpc: {cluster_name: authz}
                timeout: 2s
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    type: STATIC
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Backend}}}}}}]}]}
  - name: authz
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: authz, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Authz}}}}}}]}]}
`

func do(t *testing.T, method, url, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	return testutil.Do(t, testutil.Client(), method, url, body, hdr...)
}

func TestExtAuthzGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, authServer{})
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	up := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	_, bport := up.Host()
	_, aport, _ := net.SplitHostPort(ln.Addr().String())
	logPath := filepath.Join(t.TempDir(), "access.log")
	p := testutil.StartProxy(t, grpcConfig, map[string]string{"Backend": bport, "Authz": aport, "Log": logPath, "FailOpen": "false"})
	url := p.URL("http", "/app")

	code, h, body := do(t, "POST", url, "hello", "x-allow", "yes", "x-secret", "s3cret")
	if code != 200 || !strings.Contains(body, "header:x-user=alice") || strings.Contains(body, "x-secret") ||
		!strings.Contains(body, "header:x-body=hello") || h.Get("x-authz") != "ok" {
		t.Errorf("allowed: %d x-authz=%q\n%s", code, h.Get("x-authz"), body)
	}
	code, h, body = do(t, "GET", url, "")
	if code != 401 || body != "nope" || h.Get("www-authenticate") != `Bearer realm="legate"` {
		t.Errorf("denied: %d %q %v", code, body, h)
	}
	if code, _, body = do(t, "GET", p.URL("http", "/tenant"), "", "x-allow", "yes"); code != 200 || !strings.Contains(body, "header:x-tenant=t1") {
		t.Errorf("context extensions: %d\n%s", code, body)
	}
	if code, _, _ = do(t, "GET", p.URL("http", "/public"), ""); code != 200 {
		t.Errorf("disabled route: %d", code)
	}
	for name, want := range map[string]int64{"http.ingress.ext_authz.ok": 2, "http.ingress.ext_authz.denied": 1, "http.ingress.ext_authz.disabled": 1} {
		if got := p.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "/app 200 - via_upstream alice") && strings.Contains(string(b), "/app 401 UAEX ext_authz_denied -")
	}, "access log lacks ext_authz metadata and flags")

	// The service goes away: closed by default, open with failure_mode_allow.
	gs.Stop()
	if code, _, _ = do(t, "GET", url, "", "x-allow", "yes"); code != 403 {
		t.Errorf("service down, fail closed: %d, want 403", code)
	}
	if n := p.Stat(t, "http.ingress.ext_authz.error"); n != 1 {
		t.Errorf("ext_authz.error = %d", n)
	}
	p2 := testutil.StartProxy(t, grpcConfig, map[string]string{"Backend": bport, "Authz": aport, "Log": logPath + "2", "FailOpen": "true"})
	code, _, body = do(t, "GET", p2.URL("http", "/app"), "")
	if code != 200 || !strings.Contains(body, "header:x-envoy-auth-failure-mode-allowed=true") {
		t.Errorf("service down, fail open: %d\n%s", code, body)
	}
	if n := p2.Stat(t, "http.ingress.ext_authz.failure_mode_allowed"); n != 1 {
		t.Errorf("failure_mode_allowed = %d", n)
	}
}

// The HTTP service of Envoy's ext_authz example (examples/ext_authz).
const httpConfig = `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: backend}}]}]}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              http_service:
                server_uri: {uri: ext_authz, cluster: authz, timeout: 0.250s}
                path_prefix: /check
                authorization_response:
                  allowed_upstream_headers: {patterns: [{exact: x-current-user}]}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    type: STATIC
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Backend}}}}}}]}]}
  - name: authz
    type: STATIC
    load_assignment: {cluster_name: authz, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Authz}}}}}}]}]}
`

func TestExtAuthzHTTP(t *testing.T) {
	var seen http.Header
	var seenPath string
	authz := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, seenPath = r.Header.Clone(), r.URL.Path
		if r.Header.Get("Authorization") == "Bearer token1" {
			w.Header().Set("x-current-user", "user1")
			w.Header().Set("x-not-forwarded", "1")
			return
		}
		w.Header().Set("x-reason", "bad token")
		w.WriteHeader(403)
		w.Write([]byte("denied by the authz service"))
	}))
	up := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	_, bport := up.Host()
	_, aport := authz.Host()
	p := testutil.StartProxy(t, httpConfig, map[string]string{"Backend": bport, "Authz": aport})
	code, _, body := do(t, "GET", p.URL("http", "/service?x=1"), "", "Authorization", "Bearer token1", "x-other", "v")
	if code != 200 || !strings.Contains(body, "header:x-current-user=user1") || strings.Contains(body, "x-not-forwarded") {
		t.Errorf("allowed: %d\n%s", code, body)
	}
	if seenPath != "/check/service" || seen.Get("x-other") != "" || seen.Get("Authorization") == "" {
		t.Errorf("authz service saw path %q headers %v", seenPath, seen)
	}
	code, h, body := do(t, "GET", p.URL("http", "/service"), "", "Authorization", "Bearer wrong")
	if code != 403 || body != "denied by the authz service" || h.Get("x-reason") != "bad token" {
		t.Errorf("denied: %d %q %v", code, body, h)
	}
}

// tokenAuthServer allows only calls that carry the access_token call
// credential (when it requires one).
type tokenAuthServer struct {
	authServer
	token bool
}

func (s tokenAuthServer) Check(ctx context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if got := md.Get("authorization"); s.token && (len(got) != 1 || got[0] != "Bearer s3cret-token") {
		return nil, status.Errorf(codes.Unauthenticated, "authorization metadata %q", got)
	}
	return s.authServer.Check(ctx, r)
}

// TestExtAuthzGoogleGRPC: the authorization service reached through
// google_grpc (as OPA's Envoy quick start configures it: target_uri and
// stat_prefix, no cluster), in plaintext, and over TLS with
// ssl_credentials (root_certs) and an access_token call credential, which
// is refused on a plaintext channel.
func TestExtAuthzGoogleGRPC(t *testing.T) {
	ca := testutil.NewCA(t, "authz-ca")
	leaf := ca.Issue(t, "authz", "127.0.0.1", "localhost")
	serve := func(token bool, opts ...grpc.ServerOption) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer(opts...)
		authv3.RegisterAuthorizationServer(gs, tokenAuthServer{token: token})
		go gs.Serve(ln)
		t.Cleanup(gs.Stop)
		return ln.Addr().String()
	}
	plain := serve(false)
	secure := serve(true, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{leaf.TLS}})))
	up := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	for _, tc := range []struct{ name, service string }{
		{"plaintext", fmt.Sprintf("{target_uri: %q, stat_prefix: ext_authz}", plain)},
		{"tls", fmt.Sprintf("{target_uri: %q, stat_prefix: ext_authz, channel_credentials: {ssl_credentials: {root_certs: {inline_string: %q}}}, call_credentials: [{access_token: s3cret-token}]}", secure, ca.CertPEM)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := strings.Replace(grpcConfig, "envoy_grpc: {cluster_name: authz}", "google_grpc: "+tc.service, 1)
			cfg = cfg[:strings.Index(cfg, "  - name: authz")]
			_, bport := up.Host()
			p := testutil.StartProxy(t, cfg, map[string]string{"Backend": bport, "Log": filepath.Join(t.TempDir(), "access.log"), "FailOpen": "false"})
			if code, _, body := do(t, "GET", p.URL("http", "/app"), "", "x-allow", "yes"); code != 200 || !strings.Contains(body, "header:x-user=alice") {
				t.Errorf("allowed: %d\n%s", code, body)
			}
			if code, _, body := do(t, "GET", p.URL("http", "/app"), ""); code != 401 || body != "nope" {
				t.Errorf("denied: %d %q", code, body)
			}
		})
	}
	// A token the service refuses is an error: fail closed (403).
	cfg := strings.Replace(grpcConfig, "envoy_grpc: {cluster_name: authz}", fmt.Sprintf("google_grpc: {target_uri: %q, stat_prefix: x, channel_credentials: {ssl_credentials: {root_certs: {inline_string: %q}}}, call_credentials: [{access_token: wrong}]}", secure, ca.CertPEM), 1)
	cfg = cfg[:strings.Index(cfg, "  - name: authz")]
	_, bport := up.Host()
	p := testutil.StartProxy(t, cfg, map[string]string{"Backend": bport, "Log": filepath.Join(t.TempDir(), "access.log"), "FailOpen": "false"})
	if code, _, _ := do(t, "GET", p.URL("http", "/app"), "", "x-allow", "yes"); code != 403 {
		t.Errorf("refused call credential: %d, want 403", code)
	}
	// Credentials that fetch tokens over the network are refused by name,
	// and a token is never sent in plaintext.
	for _, tc := range []struct{ service, want string }{
		{"google_grpc: {target_uri: x, stat_prefix: x, channel_credentials: {local_credentials: {}}, call_credentials: [{google_compute_engine: {}}]}", "call_credentials[0]"},
		{"google_grpc: {target_uri: x, stat_prefix: x, call_credentials: [{access_token: t}]}", "would go in plaintext"},
	} {
		bad := strings.Replace(grpcConfig, "envoy_grpc: {cluster_name: authz}", tc.service, 1)
		if _, err := testutil.TryStartProxy(t, bad, map[string]string{"Backend": bport, "Authz": "1", "Log": filepath.Join(t.TempDir(), "l"), "FailOpen": "false"}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.service, err, tc.want)
		}
	}
}
