package controller

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	_ "google.golang.org/grpc/xds" // registers the xds:/// resolver and balancers

	"github.com/legateproxy/legate/internal/controller/source"
)

// startGRPCBackend serves grpc.health.v1 on loopback.
func startGRPCBackend(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

// TestProxylessGRPC checks our xDS output with a client we did not write:
// grpc-go's xDS resolver dials xds:///<service>.<namespace>:<port> and
// must reach both backends of the Service, then follow an endpoint change.
func TestProxylessGRPC(t *testing.T) {
	b1, b2, b3 := startGRPCBackend(t), startGRPCBackend(t), startGRPCBackend(t)
	dir := t.TempDir()
	svc := `
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  ports: [{name: grpc, port: 50051, targetPort: 9000}]
`
	grpcSlice := func(name, addr string) string {
		h, p, _ := net.SplitHostPort(addr)
		return fmt.Sprintf(`---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %s, namespace: default, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: grpc, port: %s}]
endpoints: [{addresses: [%q], conditions: {ready: true}}]
`, name, p, h)
	}
	writeFile(t, dir, "svc.yaml", svc)
	writeFile(t, dir, "eps.yaml", grpcSlice("echo-1", b1)+grpcSlice("echo-2", b2))
	st := source.NewStore()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := source.WatchManifests(ctx, dir, st, testLogger(t), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	x := startCP(t, st, cpOptions{})

	boot, _ := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri": x.xdsAddr, "channel_creds": []any{map[string]any{"type": "insecure"}}, "server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{"id": "proxyless-test"},
	})
	// grpc-go reads its bootstrap from the environment at start-up, so the
	// client runs in a child process (this test binary, TestProxylessClient).
	cmd := exec.Command(os.Args[0], "-test.run=^TestProxylessClient$", "-test.v")
	cmd.Env = append(os.Environ(), "GRPC_XDS_BOOTSTRAP_CONFIG="+string(boot), "LEGATE_PROXYLESS_TARGET=xds:///echo.default:50051")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	next := func() map[string]int {
		for lines.Scan() {
			l := lines.Text()
			if rest, ok := strings.CutPrefix(l, "SPREAD "); ok {
				got := map[string]int{}
				json.Unmarshal([]byte(rest), &got)
				return got
			}
			t.Log("client: " + l)
		}
		t.Fatalf("client exited early; NACKs seen by the server: %v", x.xds.NACKs())
		return nil
	}
	got := next()
	if got[b1] == 0 || got[b2] == 0 || len(got) != 2 {
		t.Fatalf("RPCs spread %v, want both %s and %s", got, b1, b2)
	}
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("grpc-go NACKed our resources: %v", n)
	}
	// Replace an endpoint: RPCs follow.
	writeFile(t, dir, "eps.yaml", grpcSlice("echo-1", b1)+grpcSlice("echo-2", b3))
	deadline := time.Now().Add(15 * time.Second)
	for {
		fmt.Fprintln(stdin, "again")
		got = next()
		if got[b3] > 0 && got[b2] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the endpoint change RPCs still spread %v, want %s not %s", got, b3, b2)
		}
		time.Sleep(200 * time.Millisecond)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client: %v", err)
	}
}

// TestProxylessClient is the gRPC client half of TestProxylessGRPC: it
// runs only as that test's child process. It prints the spread of 20 RPCs
// over backends, then again for each line read from stdin.
func TestProxylessClient(t *testing.T) {
	target := os.Getenv("LEGATE_PROXYLESS_TARGET")
	if target == "" {
		t.Skip("child process of TestProxylessGRPC")
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	in := bufio.NewScanner(os.Stdin)
	for {
		got := map[string]int{}
		for i := 0; i < 20; i++ {
			var p peer.Peer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true))
			cancel()
			if err != nil {
				t.Fatalf("RPC %d over %s: %v", i, target, err)
			}
			got[p.Addr.String()]++
		}
		b, _ := json.Marshal(got)
		fmt.Printf("SPREAD %s\n", b)
		if !in.Scan() {
			return
		}
	}
}
