package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/legateproxy/legate/internal/certgen"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/mesh"
	lt "github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/xds/resource"
)

// xdsCA is the controller's xDS CA (certgen's), to issue workload
// certificates as the mesh CA does (it signs with the same CA).
func xdsCA(t *testing.T, set *certgen.Set) *lt.CA {
	t.Helper()
	b, _ := pem.Decode(set.CA)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := pem.Decode(set.CAKey)
	k, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		k8, err2 := x509.ParsePKCS8PrivateKey(kb.Bytes)
		if err2 != nil {
			t.Fatal(err)
		}
		k = k8.(*ecdsa.PrivateKey)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &lt.CA{Cert: c, Key: k, CertPEM: set.CA, Pool: pool}
}

// TestSidecarAuthorization: over the controller's xDS mTLS, a workload
// certificate (SPIFFE id, signed by the xDS CA) gets its own sidecar's
// configuration, and is refused (PermissionDenied, counted) for a node
// id of another namespace, for a pod the store says runs as another
// ServiceAccount, and for the gateway proxies' node ids.
func TestSidecarAuthorization(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "objs.yaml"), []byte(sidecarObjects), 0o644); err != nil {
		t.Fatal(err)
	}
	objs, err := source.LoadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := source.NewStore()
	st.Replace(objs)
	x := startCP(t, st, cpOptions{mtls: true})
	ca := xdsCA(t, x.tls)
	for _, tc := range []struct {
		name, id, node, reason string
	}{
		{"own pod", mesh.SPIFFEID("", "shop", "web"), sidecarNode, ""},
		{"another namespace", mesh.SPIFFEID("", "evil", "web"), sidecarNode, "namespace"},
		{"another ServiceAccount", mesh.SPIFFEID("", "shop", "db"), sidecarNode, "service_account"},
		{"a gateway node id", mesh.SPIFFEID("", "shop", "web"), "test-proxy", "not_sidecar"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf := ca.Issue(t, "w", tc.id)
			creds := credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{leaf.TLS}, ServerName: certgen.ServerName})
			conn, err := grpc.NewClient(x.xdsAddr, grpc.WithTransportCredentials(creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
			if err != nil {
				t.Fatal(err)
			}
			before := testutil.ToFloat64(x.xds.Metrics().Unauthorized.WithLabelValues(tc.reason))
			s.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: tc.node}, TypeUrl: resourcev3.ListenerType})
			resp, err := s.Recv()
			if tc.reason != "" {
				if status.Code(err) != codes.PermissionDenied {
					t.Fatalf("got %v, %v; want PermissionDenied", resp, err)
				}
				if got := testutil.ToFloat64(x.xds.Metrics().Unauthorized.WithLabelValues(tc.reason)); got != before+1 {
					t.Errorf("legate_xds_unauthorized_streams_total{reason=%q} = %v, want %v", tc.reason, got, before+1)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, a := range resp.Resources {
				d, err := resource.ForURL(resourcev3.ListenerType).Decode(a)
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, d.Name)
			}
			if got := strings.Join(names, " "); !strings.Contains(got, "virtualOutbound") || strings.Contains(got, "ingress_http") {
				t.Errorf("listeners %s: want the sidecar's, not the gateway's", got)
			}
		})
	}
}
