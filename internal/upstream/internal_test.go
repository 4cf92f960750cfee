package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/userspace"
)

func internalTestCluster(t *testing.T, yaml string, reg *userspace.Registry) (*Cluster, error) {
	t.Helper()
	pc := &clusterv3.Cluster{}
	if _, err := config.Decode([]byte(yaml), pc, "cluster"); err != nil {
		t.Fatal(err)
	}
	return Compile(pc, "cluster", Deps{Stats: stats.NewStore(), Internal: reg})
}

const internalEndpoint = `name: c
connect_timeout: 1s
type: %s
load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {envoy_internal_address: {server_listener_name: inner, endpoint_id: e1}}}, health_status: %s}]}]}`

func TestInternalEndpoint(t *testing.T) {
	if _, err := internalTestCluster(t, fmt.Sprintf(internalEndpoint, "STRICT_DNS", "HEALTHY"), nil); err == nil ||
		!strings.Contains(err.Error(), `"envoy://inner/e1" is not one`) {
		t.Fatalf("STRICT_DNS with an internal endpoint: %v", err)
	}
	reg := userspace.NewRegistry(0)
	c, err := internalTestCluster(t, fmt.Sprintf(internalEndpoint, "STATIC", "HEALTHY"), reg)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(c.Close)
	<-c.Ready()
	h := c.Pick(&LBContext{})
	if h == nil || h.Address != "envoy://inner/e1" {
		t.Fatalf("host %v, want envoy://inner/e1", h)
	}
	// Nothing listens on "inner" yet: a connect failure, at once.
	if _, err := c.Acquire(time.Now().Add(time.Second), h, ""); err == nil || !errors.Is(err, userspace.ErrNoListener) {
		t.Fatalf("acquire with no internal listener: %v", err)
	}
	if got := c.Stats.cxConnectFail.Value(); got != 1 {
		t.Errorf("upstream_cx_connect_fail = %d, want 1", got)
	}
	ln, err := reg.Listen("inner")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				io.Copy(conn, conn)
			}()
		}
	}()
	cc, err := c.Acquire(time.Now().Add(time.Second), h, "")
	if err != nil {
		t.Fatal(err)
	}
	cc.Conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(cc.Conn, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(cc.Conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo over the internal connection: %q, %v", buf, err)
	}
	c.Release(cc, false)
}

func TestInternalEndpointWithoutRegistry(t *testing.T) {
	c, err := internalTestCluster(t, fmt.Sprintf(internalEndpoint, "STATIC", "UNHEALTHY"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The endpoint's health_status applies, as to socket addresses.
	h := newHost("envoy://inner/e1", HostConfig{})
	if _, err := c.dialAddr(context.Background(), h.Address, h, ConnOptions{}); !errors.Is(err, errNoRegistry) {
		t.Fatalf("dial without a registry: %v", err)
	}
	c.Start()
	t.Cleanup(c.Close)
	<-c.Ready()
	if hs := c.Hosts(); len(hs) != 1 || hs[0].Healthy() {
		t.Fatalf("an UNHEALTHY internal endpoint is healthy: %v", hs)
	}
}

// keyer is a FilterStatePoolKeyer transport for pool-key tests.
type keyer struct{ TransportSocket }

func (keyer) FilterStatePoolKey(fs map[string]streaminfo.FilterStateValue) string {
	if v, ok := fs["k"]; ok {
		return v.String()
	}
	return ""
}

func (keyer) Client(_ context.Context, conn net.Conn, _ string) (net.Conn, error) { return conn, nil }
func (keyer) ALPN(net.Conn) string                                                { return "" }

func TestPoolKeyByFilterState(t *testing.T) {
	c := &Cluster{}
	fs := func(v string) ConnOptions {
		return ConnOptions{FilterState: map[string]streaminfo.FilterStateValue{"k": streaminfo.StringObject(v)}}
	}
	if c.poolKey(fs("a")) != "" || c.PassesFilterState() {
		t.Fatal("a plain cluster keys pools by filter state")
	}
	c.transport = keyer{}
	if !c.PassesFilterState() || !c.perDownstreamPools() {
		t.Fatal("a filter-state keyed transport is not reported")
	}
	if a, b := c.poolKey(fs("a")), c.poolKey(fs("b")); a == b || a != c.poolKey(fs("a")) {
		t.Fatalf("pool keys: a=%q b=%q", a, b)
	}
	if k := c.poolKey(ConnOptions{}); k != "" {
		t.Fatalf("no filter state: key %q, want the default pool", k)
	}
}
