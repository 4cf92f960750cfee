package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/legateproxy/legate/internal/certgen"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/controller"
	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/mesh/ca"
)

func TestBootstrap(t *testing.T) {
	o := BootstrapOptions{
		Node:           mesh.NodeID{IP: netip.MustParseAddr("10.1.2.3"), Pod: "web-1", Namespace: "shop"},
		ServiceAccount: "web", StateDir: "/var/run/legate/sidecar",
	}
	ca, cert, key := o.BaseTLS()
	base := controller.Bootstrap(controller.BootstrapOptions{XDSHost: "legate-controller.legate-system.svc", XDSPort: 8001,
		AdminHost: "127.0.0.1", AdminPort: mesh.AdminPort, NodeID: o.Node.String(), Cluster: "web.shop",
		TLS: &controller.BootstrapTLS{CAFile: ca, CertFile: cert, KeyFile: key, ServerName: "legate-controller.legate-system.svc"}})
	out, err := Bootstrap(base, o)
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapv3.Bootstrap
	if _, err := config.Decode(out, &bs, "bootstrap"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if err := config.Validate(&bs, "bootstrap"); err != nil {
		t.Fatal(err)
	}
	if bs.GetNode().GetId() != "sidecar~10.1.2.3~web-1.shop~shop.svc.cluster.local" {
		t.Errorf("node id %q", bs.GetNode().GetId())
	}
	md := bs.GetNode().GetMetadata().GetFields()
	for k, v := range map[string]string{"NAMESPACE": "shop", "SERVICE_ACCOUNT": "web", "POD_NAME": "web-1", "INSTANCE_IPS": "10.1.2.3"} {
		if md[k].GetStringValue() != v {
			t.Errorf("metadata %s = %q, want %q", k, md[k].GetStringValue(), v)
		}
	}
	clusters := map[string]bool{}
	for _, c := range bs.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = true
		if c.GetName() == mesh.SDSCluster {
			if p := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetPipe().GetPath(); p != mesh.SDSSocket {
				t.Errorf("sds-grpc pipe %q", p)
			}
		}
	}
	for _, n := range []string{"legate-controller", mesh.SDSCluster, "agent", "prometheus_stats"} {
		if !clusters[n] {
			t.Errorf("no cluster %s", n)
		}
	}
	ports := map[uint32]bool{}
	for _, l := range bs.GetStaticResources().GetListeners() {
		ports[l.GetAddress().GetSocketAddress().GetPortValue()] = true
	}
	if !ports[mesh.ReadinessPort] || !ports[mesh.StatsPort] {
		t.Errorf("listener ports %v", ports)
	}
	if a := bs.GetAdmin().GetAddress().GetSocketAddress(); a.GetAddress() != "127.0.0.1" || a.GetPortValue() != mesh.AdminPort {
		t.Errorf("admin %v", a)
	}
	if !strings.Contains(string(out), "/var/run/legate/sidecar/cert-chain.pem") {
		t.Errorf("the xDS connection does not present the workload certificate:\n%s", out)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	p := filepath.Join(t.TempDir(), "socket")
	os.WriteFile(p, []byte("x"), 0o600)
	if _, err := Listen(p); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}
	// A stale socket is replaced.
	q := filepath.Join(t.TempDir(), "d", "s")
	l, err := Listen(q)
	if err != nil {
		t.Fatal(err)
	}
	l.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	l.Close()
	l, err = Listen(q)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	l.Close()
}

func TestHostOf(t *testing.T) {
	for in, want := range map[string]string{
		"legate-controller.legate-system.svc:15012": "legate-controller.legate-system.svc",
		"127.0.0.1:15012": "127.0.0.1", "[::1]:15012": "::1", "host": "host",
	} {
		if got := hostOf(in); got != want {
			t.Errorf("hostOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// SDS over delta xDS, to go-control-plane's generated client on a real
// Unix socket: both secrets, then new versions on rotation.
func TestSDSDelta(t *testing.T) {
	set, err := certgen.Generate(certgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ca.NewSigner(set.CA, set.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	issue := func() *Cert {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		csr, _ := x509.ParseCertificateRequest(der)
		p, err := signer.SignCSR(csr, "spiffe://cluster.local/ns/shop/sa/web", time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(p)
		leaf, _ := x509.ParseCertificate(b.Bytes)
		kd, _ := x509.MarshalPKCS8PrivateKey(key)
		return &Cert{ChainPEM: p, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), RootPEM: set.CA, Leaf: leaf, Received: time.Now()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sock := filepath.Join(t.TempDir(), "sds.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	s := NewSDS(nil)
	first := issue()
	s.Update(first)
	go s.Serve(ctx, l)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := secretservice.NewSecretDiscoveryServiceClient(conn).DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "sidecar~127.0.0.1~web-1.shop~shop.svc.cluster.local"},
		TypeUrl: resource.SecretType, ResourceNamesSubscribe: []string{mesh.SecretWorkload, mesh.SecretRoots}}); err != nil {
		t.Fatal(err)
	}
	recv := func(want ...string) map[string]*tlsv3.Secret {
		t.Helper()
		got := map[string]*tlsv3.Secret{}
		for len(got) < len(want) {
			resp, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range resp.GetResources() {
				var sec tlsv3.Secret
				if err := r.GetResource().UnmarshalTo(&sec); err != nil {
					t.Fatal(err)
				}
				got[r.GetName()] = &sec
			}
			st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: resp.GetNonce()})
		}
		return got
	}
	got := recv(mesh.SecretWorkload, mesh.SecretRoots)
	if !bytes.Equal(got[mesh.SecretWorkload].GetTlsCertificate().GetCertificateChain().GetInlineBytes(), first.ChainPEM) ||
		!bytes.Equal(got[mesh.SecretWorkload].GetTlsCertificate().GetPrivateKey().GetInlineBytes(), first.KeyPEM) {
		t.Fatal("secret default is not the agent's certificate and key")
	}
	if !bytes.Equal(got[mesh.SecretRoots].GetValidationContext().GetTrustedCa().GetInlineBytes(), set.CA) {
		t.Fatal("secret ROOTCA is not the roots")
	}
	second := issue()
	s.Update(second)
	// Delta sends what changed: the roots are the same.
	got = recv(mesh.SecretWorkload)
	if !bytes.Equal(got[mesh.SecretWorkload].GetTlsCertificate().GetCertificateChain().GetInlineBytes(), second.ChainPEM) {
		t.Fatal("rotation not pushed over delta SDS")
	}
}
