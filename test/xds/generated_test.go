package xds

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/legateproxy/legate/internal/certgen"
	"github.com/legateproxy/legate/internal/testutil"
)

// The bootstraps Istio's agent and Envoy Gateway generate (testdata/
// bootstraps, rendered from those projects' templates; see each file's
// header), run unchanged but for addresses, ports and paths, against
// go-control-plane as their control plane.

// serveADS runs go-control-plane's ADS (state of the world and delta) on
// l, optionally with server TLS.
func serveADS(t *testing.T, l net.Listener, cache cachev3.SnapshotCache, opts ...grpc.ServerOption) {
	t.Helper()
	srv := grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, serverv3.NewServer(context.Background(), cache, nil))
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
}

// appSnapshot is a listener on listen routing to an EDS cluster named
// cluster with the given backend, all over ADS; extra adds resources.
func appSnapshot(t *testing.T, listen, cluster string, backends []string, extra ...types.Resource) *cachev3.Snapshot {
	var eps []types.Resource
	eps = append(eps, endpointsNamed(cluster, backends))
	clusters := []types.Resource{edsCluster(cluster, adsSource())}
	for _, r := range extra {
		switch r := r.(type) {
		case *clusterv3.Cluster:
			clusters = append(clusters, r)
		default:
			eps = append(eps, r)
		}
	}
	return snapshotOf(t, 1, map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {listener("app", listen, "app-routes")},
		resourcev3.RouteType:    {routeTo("app-routes", cluster)},
		resourcev3.ClusterType:  clusters,
		resourcev3.EndpointType: eps,
	})
}

func readFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "bootstraps", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestIstioSidecarBootstrap: Istio's sidecar bootstrap — delta ADS over
// a Unix socket pipe, initial_fetch_timeout 0s, Istio's stats_tags (with
// Envoy's lookahead idiom) and stats_matcher, the internal_listener
// bootstrap extension, the downstream-connections overload monitor, the
// 15090 Prometheus and 15021 health listeners — serves what istiod would
// push, and its stats come out with Istio's tags and inclusion list.
func TestIstioSidecarBootstrap(t *testing.T) {
	dir := t.TempDir()
	xdsSock := filepath.Join(dir, "XDS")
	ln, err := net.Listen("unix", xdsSock)
	if err != nil {
		t.Fatal(err)
	}
	const node = "sidecar~10.244.1.7~app-1.default~default.svc.cluster.local"
	cache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	backends := upstreams(t, 1)
	listen := freeAddr(t)
	const cluster = "outbound|80||app.default.svc.cluster.local"
	if err := cache.SetSnapshot(context.Background(), node, appSnapshot(t, listen, cluster, backends)); err != nil {
		t.Fatal(err)
	}
	serveADS(t, ln, cache)

	y := readFixture(t, "istio-sidecar.yaml")
	adminPort, promPort, statusPort := testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t)
	y = strings.NewReplacer(
		"./etc/istio/proxy/XDS", xdsSock,
		"./var/run/secrets/workload-spiffe-uds/socket", filepath.Join(dir, "SDS"),
		"/var/lib/istio/data/envoy.prof", filepath.Join(dir, "envoy.prof"),
		"port_value: 15000", fmt.Sprintf("port_value: %d", adminPort),
		"port_value: 15090", fmt.Sprintf("port_value: %d", promPort),
		"port_value: 15021", fmt.Sprintf("port_value: %d", statusPort),
		"address: 0.0.0.0", "address: 127.0.0.1",
	).Replace(y)
	p := testutil.StartProxy(t, y, nil)
	url := "http://" + listen + "/"
	testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(url); return b == "b0" }, "the xDS listener pushed over the pipe does not serve")
	testutil.Eventually(t, 5*time.Second, func() bool {
		c, _, _ := getQuiet("http://" + p.Admin + "/ready")
		return c == 200
	}, "the server never left INITIALIZING")

	// Prometheus through the 15090 listener (routed to the admin API).
	_, body, err := getQuiet(fmt.Sprintf("http://127.0.0.1:%d/stats/prometheus", promPort))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, `envoy_cluster_upstream_cx_total{cluster_name="xds-grpc"}`) {
		t.Errorf("Istio's cluster_name tag is not applied:\n%.2000s", body)
	}
	if strings.Contains(body, "outbound|80") || strings.Contains(body, "envoy_cluster_name=") {
		t.Errorf("stats outside Istio's inclusion list (or Envoy's default tags, which use_all_default_tags: false drops) are exposed:\n%.2000s", body)
	}
	if !strings.Contains(body, "envoy_server_live") {
		t.Errorf("server.* (included) missing:\n%.1000s", body)
	}
}

// TestEnvoyGatewayBootstrap: Envoy Gateway's proxy bootstrap — an mTLS
// xds_cluster whose client certificate and CA come from SDS files, a
// static EDS local cluster with a typed least-request load-balancing
// policy, admin access_log, the downstream-connections overload monitor
// — gets its config from a management server that requires that
// client certificate, and serves it.
func TestEnvoyGatewayBootstrap(t *testing.T) {
	dir := t.TempDir()
	set, err := certgen.Generate(certgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Write(dir); err != nil {
		t.Fatal(err)
	}
	// Envoy Gateway's server certificate names "envoy-gateway".
	caCert, _ := tls.X509KeyPair(set.CA, set.CAKey)
	ca, _ := x509.ParseCertificate(caCert.Certificate[0])
	srvCA := &testutil.CA{Cert: ca, Key: caKeyOf(t, set), CertPEM: set.CA}
	srvLeaf := srvCA.Issue(t, "envoy-gateway", "envoy-gateway")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(set.CA)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	backends := upstreams(t, 1)
	listen := freeAddr(t)
	local := endpointsNamed("default/eg", backends) // the proxies themselves
	if err := cache.SetSnapshot(context.Background(), "envoy-default-eg-0", appSnapshot(t, listen, "default/backend", backends, local)); err != nil {
		t.Fatal(err)
	}
	serveADS(t, ln, cache, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{srvLeaf.TLS},
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert})))

	sds := func(name string) string {
		s := strings.NewReplacer("/certs/tls.crt", filepath.Join(dir, certgen.ProxyCertFile), "/certs/tls.key", filepath.Join(dir, certgen.ProxyKeyFile),
			"/certs/ca.crt", filepath.Join(dir, certgen.CAFile)).Replace(readFixture(t, name))
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(s), 0o600)
		return p
	}
	h, port, _ := net.SplitHostPort(ln.Addr().String())
	y := strings.NewReplacer(
		"/sds/xds-certificate.json", sds("xds-certificate.json"),
		"/sds/xds-trusted-ca.json", sds("xds-trusted-ca.json"),
		"envoy-gateway.envoy-gateway-system.svc.cluster.local.", h,
		"port_value: 18000", "port_value: "+port,
		"port_value: 19000", fmt.Sprintf("port_value: %d", testutil.FreePort(t)),
		"port_value: 19001", fmt.Sprintf("port_value: %d", testutil.FreePort(t)),
		"address: 0.0.0.0", "address: 127.0.0.1",
	).Replace(readFixture(t, "envoy-gateway.yaml"))
	// The node comes from --service-node and --service-cluster, as EG runs
	// Envoy.
	y = strings.Replace(y, "node:\n", "node:\n  id: envoy-default-eg-0\n  cluster: default/eg\n", 1)
	p := testutil.StartProxy(t, y, nil)
	url := "http://" + listen + "/"
	testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(url); return b == "b0" }, "the listener from the mTLS xDS stream does not serve")
	if n := p.Stat(t, "cluster.xds_cluster.ssl.handshake"); n < 1 {
		t.Errorf("cluster.xds_cluster.ssl.handshake = %d", n)
	}
}

// caKeyOf parses the set's CA key.
func caKeyOf(t *testing.T, s *certgen.Set) *ecdsa.PrivateKey {
	t.Helper()
	kp, err := tls.X509KeyPair(s.CA, s.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	return kp.PrivateKey.(*ecdsa.PrivateKey)
}
