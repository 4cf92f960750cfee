package upstream

import (
	"fmt"
	"io"
	"net"
	"strconv"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// WriteClusters renders the admin /clusters output for every cluster,
// in Envoy's text format or (jsonFormat) as envoy.admin.v3.Clusters.
func (m *Manager) WriteClusters(w io.Writer, jsonFormat bool) error {
	cls := m.Clusters()
	if jsonFormat {
		out := &adminv3.Clusters{}
		for _, c := range cls {
			out.ClusterStatuses = append(out.ClusterStatuses, c.status())
		}
		b, err := protojson.MarshalOptions{Multiline: true, Indent: " ", UseProtoNames: true}.Marshal(out)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	for _, c := range cls {
		n := c.Name
		fmt.Fprintf(w, "%s::observability_name::%s\n", n, n)
		for i, p := range []string{"default_priority", "high_priority"} {
			b := c.breakersFor(Priority(i))
			fmt.Fprintf(w, "%s::%s::max_connections::%d\n", n, p, b.maxConnections)
			fmt.Fprintf(w, "%s::%s::max_pending_requests::%d\n", n, p, b.maxPending)
			fmt.Fprintf(w, "%s::%s::max_requests::%d\n", n, p, b.maxRequests)
			fmt.Fprintf(w, "%s::%s::max_retries::%d\n", n, p, b.maxRetries)
		}
		fmt.Fprintf(w, "%s::added_via_api::%t\n", n, c.AddedViaAPI)
		for _, h := range c.Hosts() {
			s := h.stats
			pre := n + "::" + h.Address + "::"
			for _, kv := range []struct {
				k string
				v int64
			}{
				{"cx_active", s.CxActive.Load()}, {"cx_connect_fail", int64(s.CxConnectFail.Load())},
				{"cx_total", int64(s.CxTotal.Load())}, {"rq_active", s.RqActive.Load()},
				{"rq_error", int64(s.RqError.Load())}, {"rq_success", int64(s.RqSuccess.Load())},
				{"rq_timeout", int64(s.RqTimeout.Load())}, {"rq_total", int64(s.RqTotal.Load())},
			} {
				fmt.Fprintf(w, "%s%s::%d\n", pre, kv.k, kv.v)
			}
			fmt.Fprintf(w, "%shostname::%s\n", pre, h.Hostname())
			fmt.Fprintf(w, "%shealth_flags::%s\n", pre, h.HealthFlagsString())
			fmt.Fprintf(w, "%sweight::%d\n", pre, c.lbWeight(h))
			fmt.Fprintf(w, "%sregion::%s\n", pre, h.Config().Locality.GetRegion())
			fmt.Fprintf(w, "%szone::%s\n", pre, h.Config().Locality.GetZone())
			fmt.Fprintf(w, "%ssub_zone::%s\n", pre, h.Config().Locality.GetSubZone())
			fmt.Fprintf(w, "%scanary::false\n", pre)
			fmt.Fprintf(w, "%spriority::%d\n", pre, h.Priority())
			fmt.Fprintf(w, "%ssuccess_rate::-1\n", pre)
			fmt.Fprintf(w, "%slocal_origin_success_rate::-1\n", pre)
		}
	}
	return nil
}

func (c *Cluster) status() *adminv3.ClusterStatus {
	cs := &adminv3.ClusterStatus{Name: c.Name, AddedViaApi: c.AddedViaAPI, ObservabilityName: c.Name,
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections:     wrapperspb.UInt32(c.breakers.maxConnections),
			MaxPendingRequests: wrapperspb.UInt32(c.breakers.maxPending),
			MaxRequests:        wrapperspb.UInt32(c.breakers.maxRequests),
			MaxRetries:         wrapperspb.UInt32(c.breakers.maxRetries),
		}}},
	}
	for _, h := range c.Hosts() {
		host, port, _ := net.SplitHostPort(h.Address)
		p, _ := strconv.Atoi(port)
		s := h.stats
		f := h.Flags()
		eds := corev3.HealthStatus_HEALTHY
		if f&FlagFailedEDSHealth != 0 {
			eds = corev3.HealthStatus_UNHEALTHY
		} else if f&FlagDegradedEDS != 0 {
			eds = corev3.HealthStatus_DEGRADED
		}
		addr := &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}}
		if network, path := dialNetwork(h.Address); network == "unix" {
			addr = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path}}}
		} else if ia, ok := parseInternal(h.Address); ok {
			addr = &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{
				AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: ia.Listener}, EndpointId: ia.Endpoint}}}
		}
		hs := &adminv3.HostStatus{
			Address:  addr,
			Weight:   c.lbWeight(h),
			Hostname: h.Hostname(),
			Priority: h.Priority(),
			Locality: h.Config().Locality,
			HealthStatus: &adminv3.HostHealthStatus{
				FailedActiveHealthCheck: f&FlagFailedActiveHC != 0,
				FailedOutlierCheck:      f&FlagFailedOutlier != 0,
				PendingActiveHc:         f&FlagPendingActiveHC != 0,
				PendingDynamicRemoval:   f&FlagPendingDynamicRemoval != 0,
				EdsHealthStatus:         eds,
			},
			SuccessRate: &typev3.Percent{Value: -1},
		}
		for _, kv := range []struct {
			k string
			v uint64
			g bool
		}{
			{"cx_active", uint64(s.CxActive.Load()), true}, {"cx_connect_fail", s.CxConnectFail.Load(), false},
			{"cx_total", s.CxTotal.Load(), false}, {"rq_active", uint64(s.RqActive.Load()), true},
			{"rq_error", s.RqError.Load(), false}, {"rq_success", s.RqSuccess.Load(), false},
			{"rq_timeout", s.RqTimeout.Load(), false}, {"rq_total", s.RqTotal.Load(), false},
		} {
			t := adminv3.SimpleMetric_COUNTER
			if kv.g {
				t = adminv3.SimpleMetric_GAUGE
			}
			hs.Stats = append(hs.Stats, &adminv3.SimpleMetric{Name: kv.k, Value: kv.v, Type: t})
		}
		cs.HostStatuses = append(cs.HostStatuses, hs)
	}
	return cs
}
