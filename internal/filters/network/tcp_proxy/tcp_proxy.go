// Package tcp_proxy is envoy.filters.network.tcp_proxy: a terminal
// network filter that connects each downstream connection to a host of a
// cluster (by name or weighted), with connect attempts, an idle timeout,
// access logs and Envoy's tcp.<stat_prefix>.* stats; with tunneling_config
// the connection goes as the payload of an HTTP CONNECT or POST
// (tunnel.go).
package tcp_proxy

import (
	"cmp"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/accesslog"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/netx"
	"github.com/legateproxy/legate/internal/proxyproto"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

// tcpProxyConfig is a compiled tcp_proxy network filter.
type tcpProxyConfig struct {
	clusters    []*upstream.Ref
	weights     []uint64
	total       uint64
	idleTimeout time.Duration
	maxAttempts int
	accessLogs  []*accesslog.Logger
	stats       tcpStats
	hostname    string
	// weighted is weighted_clusters: then the per-connection cluster
	// (filter state) is not consulted, as Envoy's getRouteFromEntries.
	weighted bool
	manager  *upstream.Manager
	// tunnel is tunneling_config (tunnel.go): nil proxies raw TCP.
	tunnel *tunnelConfig
	log    *slog.Logger
}

// ClusterKey is the filter-state key of a connection's pre-selected
// cluster (Envoy's TcpProxy::PerConnectionCluster: sni_cluster and
// set_filter_state set it); it overrides the configured cluster.
const ClusterKey = "envoy.tcp_proxy.cluster"

type tcpStats struct {
	cxTotal, noRoute, idleTimeout, rxBytes, txBytes, connectFail *stats.Counter
}

func init() {
	extension.Register(extension.Extension{Name: "envoy.filters.network.tcp_proxy",
		Category: extension.NetworkFilter, Config: &tcpv3.TcpProxy{},
		Factory: listener.NetworkFilterFactory(func(ctx *listener.Context, cfg proto.Message, _ listener.ChainOptions, path string) (listener.NetworkFilter, error) {
			return compileTCPProxy(cfg.(*tcpv3.TcpProxy), path, ctx)
		})})
}

func compileTCPProxy(t *tcpv3.TcpProxy, path string, d *listener.Context) (*tcpProxyConfig, error) {
	if err := config.CheckFields(t, path, "stat_prefix", "cluster", "weighted_clusters", "idle_timeout", "access_log",
		"max_connect_attempts", "access_log_flush_interval", "tunneling_config"); err != nil {
		return nil, err
	}
	c := &tcpProxyConfig{idleTimeout: time.Hour, maxAttempts: 1, hostname: d.Hostname, manager: d.Clusters}
	if t.GetIdleTimeout() != nil {
		c.idleTimeout = t.GetIdleTimeout().AsDuration()
	}
	if v := t.GetMaxConnectAttempts(); v != nil {
		c.maxAttempts = int(v.GetValue())
	}
	switch cs := t.GetClusterSpecifier().(type) {
	case *tcpv3.TcpProxy_Cluster:
		c.clusters = []*upstream.Ref{d.Clusters.Ref(cs.Cluster)}
		c.weights = []uint64{1}
	case *tcpv3.TcpProxy_WeightedClusters:
		c.weighted = true
		for i, w := range cs.WeightedClusters.GetClusters() {
			if err := config.CheckFields(w, config.Index(config.Join(path, "weighted_clusters.clusters"), i), "name", "weight"); err != nil {
				return nil, err
			}
			c.clusters = append(c.clusters, d.Clusters.Ref(w.GetName()))
			c.weights = append(c.weights, uint64(w.GetWeight()))
		}
	}
	for _, w := range c.weights {
		c.total += w
	}
	if c.total == 0 {
		return nil, config.Errorf(path, "tcp_proxy needs a cluster or weighted_clusters with a positive weight")
	}
	for _, r := range c.clusters {
		if !d.Clusters.Has(r.Name()) {
			// As Envoy, an unknown cluster is not a config error for tcp_proxy
			// (it may arrive by CDS); the connection is closed at run time.
			continue
		}
	}
	if tc := t.GetTunnelingConfig(); tc != nil {
		tn, err := compileTunnel(tc, config.Join(path, "tunneling_config"))
		if err != nil {
			return nil, err
		}
		c.tunnel, c.log = tn, cmp.Or(d.Log, slog.Default())
	}
	logs, err := d.AccessLogs(t.GetAccessLog(), config.Join(path, "access_log"))
	if err != nil {
		return nil, err
	}
	c.accessLogs = logs
	s := d.Stats.Scope("tcp." + stats.SanitizeName(t.GetStatPrefix()) + ".")
	c.stats = tcpStats{
		cxTotal: s.Counter("downstream_cx_total"), noRoute: s.Counter("downstream_cx_no_route"),
		idleTimeout: s.Counter("idle_timeout"), rxBytes: s.Counter("downstream_cx_rx_bytes_total"),
		txBytes: s.Counter("downstream_cx_tx_bytes_total"), connectFail: s.Counter("upstream_flush_total"),
	}
	return c, nil
}

// ServeConn proxies one downstream connection to an upstream host.
func (c *tcpProxyConfig) ServeConn(tc *listener.Conn) {
	c.stats.cxTotal.Inc()
	conn := tc.Conn
	// The access log sees the connection's own record: what listener and
	// network filters left in its dynamic metadata and filter state
	// (proxy_protocol TLVs), as Envoy's tcp_proxy logs the connection's
	// stream info.
	info := tc.StreamInfo()
	info.StartTime, info.Hostname = time.Now(), c.hostname
	defer func() {
		info.Done = info.Since()
		for _, l := range c.accessLogs {
			l.Log(info)
		}
	}()
	ref := c.clusters[0]
	if len(c.clusters) > 1 {
		x := rand.Uint64N(c.total)
		for i, w := range c.weights {
			if x < w {
				ref = c.clusters[i]
				break
			}
			x -= w
		}
	}
	cl := ref.Get()
	if v, ok := tc.FilterState[ClusterKey]; ok && v != nil && !c.weighted {
		// An unknown pre-selected cluster is no route, as Envoy.
		cl = c.manager.Get(v.String())
	}
	if cl == nil {
		c.stats.noRoute.Inc()
		info.SetFlag(streaminfo.NoClusterFound)
		return
	}
	info.UpstreamCluster = cl.Name
	if c.tunnel != nil {
		c.serveTunnel(tc, info, cl)
		return
	}
	var up net.Conn
	lb := &upstream.LBContext{OriginalDst: tc.OriginalDst} // for ORIGINAL_DST clusters: the restored destination only
	if cl.DFP != nil {
		lb.Authority = dfpAuthority(tc)
	}
	for a := 0; a < max(c.maxAttempts, 1); a++ {
		h := cl.Pick(lb)
		if h == nil {
			info.SetFlag(streaminfo.NoHealthyUpstream)
			return
		}
		info.UpstreamHost = h.Address
		info.UpstreamRequestAttemptCount++
		// The upstream connection is made for this downstream one: a
		// PROXY protocol transport socket announces its addresses.
		var opts upstream.ConnOptions
		if cl.SendsProxyProtocol() {
			opts.ProxyProtocol = proxyproto.Downstream(tc.FilterState, tc.Remote, tc.Local)
		}
		cc, err := cl.AcquireWith(time.Time{}, h, opts)
		if err == nil {
			up = cc.Conn
			h.HostStarted()
			defer func() {
				h.HostFinished(true, false)
				cl.Release(cc, false)
			}()
			break
		}
		info.SetFlag(streaminfo.UpstreamConnectionFailure)
	}
	if up == nil {
		return
	}
	if la, ok := up.LocalAddr().(*net.TCPAddr); ok {
		info.UpstreamLocalAddress = la.String()
	}
	sent, recv := netx.Splice(conn, nil, up, nil, c.idleTimeout)
	info.BytesReceived, info.BytesSent = sent, recv
	c.stats.rxBytes.Add(sent)
	c.stats.txBytes.Add(recv)
}

// dfpAuthority is the host[:port] a dynamic forward proxy cluster sends
// the connection to, as Envoy's cluster reads it for a downstream
// connection: the envoy.upstream.dynamic_host filter state or the SNI,
// with the envoy.upstream.dynamic_port filter state when it is a port
// (sni_dynamic_forward_proxy sets it; without it the cluster's default).
func dfpAuthority(tc *listener.Conn) string {
	host := tc.SNI
	if v, ok := tc.FilterState["envoy.upstream.dynamic_host"]; ok && v != nil {
		host = v.String()
	}
	if host == "" {
		return ""
	}
	if v, ok := tc.FilterState["envoy.upstream.dynamic_port"]; ok && v != nil {
		if p, err := strconv.ParseUint(v.String(), 10, 16); err == nil && p > 0 {
			return net.JoinHostPort(host, v.String())
		}
	}
	return host
}
