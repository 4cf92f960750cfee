package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	datav3 "github.com/envoyproxy/go-control-plane/envoy/data/core/v3"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/http1"
)

// grpcCheck builds a gRPC health check (grpc.health.v1.Health/Check with
// service_name, authority and initial_metadata), over one reused HTTP/2
// connection per host, through the cluster's transport socket if any.
func grpcCheck(c *Cluster, hc *corev3.HealthCheck_GrpcHealthCheck, path string) (func(context.Context, *Host) (bool, bool), func(*Host), error) {
	if err := config.CheckFields(hc, path, "service_name", "authority", "initial_metadata"); err != nil {
		return nil, nil, err
	}
	md := metadata.MD{}
	for _, h := range hc.GetInitialMetadata() {
		md.Append(h.GetHeader().GetKey(), h.GetHeader().GetValue())
	}
	authority := hc.GetAuthority()
	if authority == "" {
		authority = c.Name
	}
	var mu sync.Mutex
	conns := map[*Host]*grpc.ClientConn{}
	get := func(h *Host) (*grpc.ClientConn, error) {
		mu.Lock()
		defer mu.Unlock()
		if cc := conns[h]; cc != nil {
			return cc, nil
		}
		dial := func(ctx context.Context, addr string) (net.Conn, error) {
			conn, err := c.dialAddr(ctx, addr, h, ConnOptions{})
			t := c.transportFor(h)
			if err != nil || t == nil {
				return conn, err
			}
			return t.Client(ctx, conn, "")
		}
		cc, err := grpc.NewClient("passthrough:///"+h.healthAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(dial), grpc.WithAuthority(authority), grpc.WithUserAgent("Envoy/HC"))
		if err != nil {
			return nil, err
		}
		conns[h] = cc
		return cc, nil
	}
	stop := func(h *Host) {
		mu.Lock()
		defer mu.Unlock()
		if cc := conns[h]; cc != nil {
			cc.Close()
			delete(conns, h)
		}
	}
	check := func(ctx context.Context, h *Host) (bool, bool) {
		cc, err := get(h)
		if err != nil {
			return false, true
		}
		if len(md) > 0 {
			ctx = metadata.NewOutgoingContext(ctx, md)
		}
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: hc.GetServiceName()})
		if err != nil {
			return false, true
		}
		return resp.GetStatus() == healthpb.HealthCheckResponse_SERVING, false
	}
	return check, stop, nil
}

// hostByHealthAddr finds the host whose health checks dial addr (its
// health_check_config port, else its own address); nil if none.
func (c *Cluster) hostByHealthAddr(addr string) *Host {
	for _, h := range c.hosts.Load().all {
		if h.healthAddr() == addr {
			return h
		}
	}
	return nil
}

// h2Check performs an HTTP health check over HTTP/2 (codec_client_type
// HTTP2): prior knowledge over TCP, or ALPN h2 through the cluster's TLS.
// Health checks keep their own connections, as Envoy's do.
func h2Check(c *Cluster, host, path string, hdrs *headers.Map, ok func(int) bool) func(context.Context, *Host) (bool, bool) {
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		t := c.transport
		if len(c.tsMatches) > 0 {
			// The host's own socket (transport_socket_matches).
			t = c.transportFor(c.hostByHealthAddr(addr))
		}
		if err != nil || t == nil {
			return conn, err
		}
		return t.Client(ctx, conn, "")
	}}
	return func(ctx context.Context, h *Host) (bool, bool) {
		ex := OpenH2(tr, h.healthAddr())
		defer ex.Close(false)
		req := Request{Method: "GET", Path: path, Authority: host, Headers: hdrs, Ctx: ctx}
		var resp http1.ResponseHead
		if err := ex.Send(&req, &resp); err != nil {
			return false, true
		}
		return ok(resp.Status), false
	}
}

// eventLog writes Envoy's health check events (envoy.data.core.v3.
// HealthCheckEvent) as JSON lines to event_log_path. The file is opened at
// the first event, not when the cluster compiles (a rejected update must
// leave nothing behind), and closed with the cluster.
type eventLog struct {
	path string
	kind datav3.HealthCheckerType
	c    *Cluster
	mu   sync.Mutex
	f    *os.File
	// openFailed is set once opening failed (logged once).
	openFailed, closed bool
}

// newEventLog checks event_log_path without creating it: its directory
// must exist.
func newEventLog(c *Cluster, path, field string, kind datav3.HealthCheckerType) (*eventLog, error) {
	if st, err := os.Stat(filepath.Dir(path)); err != nil || !st.IsDir() {
		return nil, config.Errorf(field, "the directory of the health check event log %q does not exist", path)
	}
	return &eventLog{path: path, kind: kind, c: c}, nil
}

// close closes the file; later events are dropped.
func (l *eventLog) close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

func (l *eventLog) write(h *Host, set func(e *datav3.HealthCheckEvent)) {
	if l == nil {
		return
	}
	hostPart, portPart, _ := net.SplitHostPort(h.Address)
	port, _ := strconv.Atoi(portPart)
	e := &datav3.HealthCheckEvent{
		HealthCheckerType: l.kind,
		Host: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: hostPart, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}},
		ClusterName: l.c.Name,
		Timestamp:   timestamppb.New(time.Now()),
	}
	set(e)
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}.Marshal(e)
	if err != nil {
		return
	}
	// One event per line, without protojson's randomized spacing.
	var line bytes.Buffer
	if json.Compact(&line, b) == nil {
		b = line.Bytes()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.openFailed {
		return
	}
	if l.f == nil {
		f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			l.openFailed = true
			l.c.log.Warn("cannot open the health check event log; its events are dropped", "cluster", l.c.Name, "path", l.path, "error", err)
			return
		}
		l.f = f
	}
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		l.c.log.Warn("health check event log write failed", "cluster", l.c.Name, "error", err)
	}
}

func (l *eventLog) ejected(h *Host) {
	l.write(h, func(e *datav3.HealthCheckEvent) {
		e.Event = &datav3.HealthCheckEvent_EjectUnhealthyEvent{EjectUnhealthyEvent: &datav3.HealthCheckEjectUnhealthy{FailureType: datav3.HealthCheckFailureType_ACTIVE}}
	})
}

func (l *eventLog) added(h *Host, first bool) {
	l.write(h, func(e *datav3.HealthCheckEvent) {
		e.Event = &datav3.HealthCheckEvent_AddHealthyEvent{AddHealthyEvent: &datav3.HealthCheckAddHealthy{FirstCheck: first}}
	})
}

func (l *eventLog) failed(h *Host, first bool) {
	l.write(h, func(e *datav3.HealthCheckEvent) {
		e.Event = &datav3.HealthCheckEvent_HealthCheckFailureEvent{HealthCheckFailureEvent: &datav3.HealthCheckFailure{FailureType: datav3.HealthCheckFailureType_ACTIVE, FirstCheck: first}}
	})
}

func (l *eventLog) succeeded(h *Host) {
	l.write(h, func(e *datav3.HealthCheckEvent) {
		e.Event = &datav3.HealthCheckEvent_SuccessfulHealthCheckEvent{SuccessfulHealthCheckEvent: &datav3.HealthCheckSuccessful{}}
	})
}
