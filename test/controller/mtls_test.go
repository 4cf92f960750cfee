package controller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/legateproxy/legate/internal/certgen"
	"github.com/legateproxy/legate/internal/controller/source"
	legatetest "github.com/legateproxy/legate/internal/testutil"
)

// TestXDSMutualTLS: the controller serves xDS only to clients with a
// certificate its CA signed. A Legate proxy with the bootstrap `legate
// bootstrap` writes (the proxy certificate) gets its config, TLS secret
// included; an ADS client in plaintext, one over TLS without a
// certificate and one with a certificate from another CA get nothing —
// not the private key — and each is logged and counted.
func TestXDSMutualTLS(t *testing.T) {
	a := legatetest.StartUpstream(t, legatetest.EchoHandler("a"))
	srvCA := legatetest.NewCA(t, "app-ca")
	leaf := srvCA.Issue(t, "app", "app.example.com")
	dir := t.TempDir()
	writeFile(t, dir, "objs.yaml", services("svc-a")+slice("svc-a", a.Addr)+fmt.Sprintf(`---
apiVersion: v1
kind: Secret
metadata: {name: app-tls, namespace: default}
type: kubernetes.io/tls
stringData:
  tls.crt: %q
  tls.key: %q
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: app, namespace: default}
spec:
  virtualhost: {fqdn: app.example.com, tls: {secretName: app-tls}}
  routes: [{services: [{name: svc-a, port: 80}]}]
`, leaf.CertPEM, leaf.KeyPEM))
	st := source.NewStore()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := source.WatchManifests(ctx, dir, st, testLogger(t), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	x := startCP(t, st, cpOptions{mtls: true})

	// The proxy with its certificate is served, TLS secret included.
	p := startProxy(t, x)
	legatetest.Eventually(t, 10*time.Second, func() bool {
		c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", x.httpsPort), &tls.Config{ServerName: "app.example.com", RootCAs: srvCA.Pool})
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, "the mTLS-fed proxy never served the virtual host's certificate")
	if n := p.Stat(t, "cluster.legate-controller.ssl.handshake"); n < 1 {
		t.Errorf("cluster.legate-controller.ssl.handshake = %d: xDS did not go over TLS", n)
	}

	// Clients that must get nothing.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(x.tls.CA)
	other, err := certgen.Generate(certgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	otherCert, _ := tls.X509KeyPair(other.ProxyCert, other.ProxyKey)
	for _, tc := range []struct {
		name   string
		creds  credentials.TransportCredentials
		reason string
	}{
		{"plaintext", insecure.NewCredentials(), "not_tls"},
		{"TLS without a client certificate", credentials.NewTLS(&tls.Config{ServerName: certgen.ServerName, RootCAs: pool}), "handshake"},
		{"a certificate from another CA", credentials.NewTLS(&tls.Config{ServerName: certgen.ServerName, RootCAs: pool, Certificates: []tls.Certificate{otherCert}}), "handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(x.xds.Metrics().Rejected.WithLabelValues(tc.reason))
			got, err := adsFetch(x.xdsAddr, tc.creds, resourcev3.SecretType)
			if err == nil || len(got) > 0 {
				t.Fatalf("an unauthenticated client got %d resources (err %v)", len(got), err)
			}
			legatetest.Eventually(t, 5*time.Second, func() bool {
				return testutil.ToFloat64(x.xds.Metrics().Rejected.WithLabelValues(tc.reason)) > before
			}, "the rejected client was not counted (reason %s)", tc.reason)
		})
	}
	// And the right certificate works for a plain ADS client too (the
	// test's negative cases are not failing for another reason).
	good, _ := tls.X509KeyPair(x.tls.ProxyCert, x.tls.ProxyKey)
	got, err := adsFetch(x.xdsAddr, credentials.NewTLS(&tls.Config{ServerName: certgen.ServerName, RootCAs: pool, Certificates: []tls.Certificate{good}}), resourcev3.ClusterType)
	if err != nil || len(got) == 0 {
		t.Fatalf("a client with the proxy certificate got %d clusters: %v", len(got), err)
	}
}

// adsFetch opens an ADS stream, asks for every resource of a type and
// returns what the first response carried.
func adsFetch(addr string, creds credentials.TransportCredentials, typeURL string) ([]string, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: typeURL, Node: &corev3.Node{Id: "intruder", Cluster: "legate"}}); err != nil {
		return nil, err
	}
	r, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range r.GetResources() {
		out = append(out, strings.TrimPrefix(a.GetTypeUrl(), "type.googleapis.com/"))
	}
	return out, nil
}
