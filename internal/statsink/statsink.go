// Package statsink is Envoy's stats sinks (bootstrap stats_sinks):
// envoy.stat_sinks.statsd (UDP to an address, or TCP to the hosts of a
// cluster) and envoy.stat_sinks.dog_statsd (DogStatsD tags from Envoy's
// tag extraction), flushed every stats_flush_interval from the stats
// store: counters as the delta since the last flush (|c), gauges as their
// value (|g), histograms as the mean of the interval's samples (|ms; Envoy
// sends each sample as it is recorded). A sink that cannot send drops the
// flush and counts it; it never slows a request.
//
// envoy.stat_sinks.metrics_service (io.prometheus.client.MetricFamily on
// the MetricsService stream) and envoy.stat_sinks.open_telemetry (OTLP
// metrics) export each flush over gRPC through a cluster (grpc.go).
package statsink

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/upstream"
)

// factory compiles a sink config.
type factory func(cfg proto.Message, path string) (*sink, error)

func init() {
	extension.Register(extension.Extension{Name: "envoy.stat_sinks.statsd", Category: extension.StatSink,
		Config: &metricsv3.StatsdSink{}, Factory: factory(compileStatsd), Notes: "histograms are sent as the interval's mean"})
	extension.Register(extension.Extension{Name: "envoy.stat_sinks.dog_statsd", Category: extension.StatSink,
		Config: &metricsv3.DogStatsdSink{}, Factory: factory(compileDogStatsd), Notes: "histograms are sent as the interval's mean"})
}

type sink struct {
	prefix   string
	dog      bool
	udp      string // host:port
	cluster  string // TCP through a cluster
	maxBytes int
	conn     net.Conn
	// grpc is a sink that exports a whole round over gRPC
	// (metrics_service, open_telemetry) instead of statsd lines.
	grpc grpcSink
}

func udpAddress(a *corev3.Address, path string) (string, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", config.Unsupported(path, "this address kind", "socket_address")
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))), nil
}

func compileStatsd(msg proto.Message, path string) (*sink, error) {
	c := msg.(*metricsv3.StatsdSink)
	if err := config.CheckFields(c, path, "address", "tcp_cluster_name", "prefix"); err != nil {
		return nil, err
	}
	s := &sink{prefix: "envoy", maxBytes: 1432}
	if c.GetPrefix() != "" {
		s.prefix = c.GetPrefix()
	}
	switch {
	case c.GetAddress() != nil:
		a, err := udpAddress(c.GetAddress(), config.Join(path, "address"))
		if err != nil {
			return nil, err
		}
		s.udp = a
	case c.GetTcpClusterName() != "":
		s.cluster = c.GetTcpClusterName()
	default:
		return nil, config.Errorf(path, "a statsd sink needs an address or a tcp_cluster_name")
	}
	return s, nil
}

func compileDogStatsd(msg proto.Message, path string) (*sink, error) {
	c := msg.(*metricsv3.DogStatsdSink)
	if err := config.CheckFields(c, path, "address", "prefix", "max_bytes_per_datagram"); err != nil {
		return nil, err
	}
	s := &sink{prefix: "envoy", dog: true, maxBytes: 1432}
	if c.GetPrefix() != "" {
		s.prefix = c.GetPrefix()
	}
	if c.GetMaxBytesPerDatagram() != nil {
		s.maxBytes = int(c.GetMaxBytesPerDatagram().GetValue())
	}
	a, err := udpAddress(c.GetAddress(), config.Join(path, "address"))
	if err != nil {
		return nil, err
	}
	s.udp = a
	return s, nil
}

// Flusher sends the store to its sinks periodically.
type Flusher struct {
	store    *stats.Store
	sinks    []*sink
	interval time.Duration
	clusters *upstream.Manager
	log      *slog.Logger
	stop     chan struct{}
	once     sync.Once

	lastCounters map[*stats.Counter]uint64
	lastHist     map[*stats.Histogram]histState
	lastFlush    time.Time
	dropped      *stats.Counter
	svc          *services
}

// histState is a histogram at the last flush.
type histState struct {
	count uint64
	sum   float64
	cum   []uint64
}

// Compile reads stats_sinks and stats_flush_interval (no sockets yet).
func Compile(b *bootstrapv3.Bootstrap, st *stats.Store, clusters *upstream.Manager, log *slog.Logger) (*Flusher, error) {
	if len(b.GetStatsSinks()) == 0 {
		return nil, nil
	}
	f := &Flusher{store: st, interval: 5 * time.Second, clusters: clusters, log: log, stop: make(chan struct{}),
		lastCounters: map[*stats.Counter]uint64{}, lastHist: map[*stats.Histogram]histState{},
		dropped: st.Counter("stats.sink_flush_dropped"), lastFlush: time.Now(),
		svc: &services{clusters: clusters, node: b.GetNode(), log: log}}
	if d := b.GetStatsFlushInterval(); d != nil {
		f.interval = d.AsDuration()
	}
	for i, sk := range b.GetStatsSinks() {
		p := config.Index("stats_sinks", i)
		if err := config.CheckFields(sk, p, "name", "typed_config"); err != nil {
			return nil, err
		}
		r, err := extension.Lookup(extension.StatSink, sk.GetTypedConfig(), config.Join(p, "typed_config"))
		if err != nil {
			return nil, err
		}
		s, err := r.Ext.Factory.(factory)(r.Config, config.Join(p, "typed_config"))
		if err != nil {
			return nil, err
		}
		if s.grpc != nil {
			s.grpc.init(f.svc, st)
		}
		f.sinks = append(f.sinks, s)
	}
	return f, nil
}

// Start flushes every interval until Stop.
func (f *Flusher) Start() {
	if f == nil {
		return
	}
	go func() {
		t := time.NewTicker(f.interval)
		defer t.Stop()
		for {
			select {
			case <-f.stop:
				f.Flush() // the last values, as Envoy on shutdown
				for _, s := range f.sinks {
					if s.grpc != nil {
						s.grpc.stop()
					}
				}
				f.svc.close()
				return
			case <-t.C:
				f.Flush()
			}
		}
	}()
}

// Stop ends flushing.
func (f *Flusher) Stop() {
	if f != nil {
		f.once.Do(func() { close(f.stop) })
	}
}

// Flush sends one round to every sink.
func (f *Flusher) Flush() {
	r := f.collect()
	type line struct {
		name, value, kind string
	}
	var lines []line
	for _, c := range r.counters {
		lines = append(lines, line{c.c.Name(), strconv.FormatUint(c.delta, 10), "c"})
	}
	for _, g := range r.gauges {
		lines = append(lines, line{g.Name(), strconv.FormatInt(g.Value(), 10), "g"})
	}
	for _, h := range r.hists {
		if h.icount > 0 {
			mean := h.isum / float64(h.icount)
			lines = append(lines, line{h.h.Name(), strconv.FormatFloat(mean, 'f', -1, 64), "ms"})
		}
	}
	for _, s := range f.sinks {
		if s.grpc != nil {
			s.grpc.flush(r)
			continue
		}
		var buf bytes.Buffer
		for _, l := range lines {
			var b []byte
			if s.dog {
				name, tags := f.store.ExtractTags(l.name)
				b = fmt.Appendf(nil, "%s.%s:%s|%s", s.prefix, name, l.value, l.kind)
				for i, t := range tags {
					sep := ","
					if i == 0 {
						sep = "|#"
					}
					b = fmt.Appendf(b, "%s%s:%s", sep, t.Name, t.Value)
				}
			} else {
				b = fmt.Appendf(nil, "%s.%s:%s|%s", s.prefix, l.name, l.value, l.kind)
			}
			if s.udp != "" && buf.Len() > 0 && buf.Len()+1+len(b) > s.maxBytes {
				f.send(s, buf.Bytes())
				buf.Reset()
			}
			if buf.Len() > 0 {
				buf.WriteByte('\n')
			}
			buf.Write(b)
		}
		if buf.Len() > 0 {
			if s.cluster != "" {
				buf.WriteByte('\n')
			}
			f.send(s, buf.Bytes())
		}
	}
}

// collect takes the round's snapshot: the used counters with their
// delta since the last flush, every gauge, and the histograms that
// recorded something, with their interval (since the last flush) and
// cumulative statistics. Only the flusher goroutine calls it.
func (f *Flusher) collect() *round {
	snap := f.store.Snapshot()
	now := time.Now()
	r := &round{at: now, last: f.lastFlush, store: f.store}
	f.lastFlush = now
	for _, c := range snap.Counters {
		v := c.Value()
		last := f.lastCounters[c]
		f.lastCounters[c] = v
		if v == 0 {
			continue // never used: Envoy's sinks skip unused stats
		}
		r.counters = append(r.counters, counterPoint{c: c, value: v, delta: v - min(last, v)})
	}
	r.gauges = snap.Gauges
	for _, h := range snap.Histograms {
		n, sum, cum := h.Count(), h.Sum(), h.Cumulative()
		last := f.lastHist[h]
		f.lastHist[h] = histState{count: n, sum: sum, cum: cum}
		if n == 0 {
			continue
		}
		hp := histPoint{h: h, count: n, sum: sum, cum: cum, icount: n - min(last.count, n), isum: sum - last.sum,
			icum: make([]uint64, len(cum))}
		for i := range cum {
			var l uint64
			if i < len(last.cum) {
				l = last.cum[i]
			}
			hp.icum[i] = cum[i] - min(l, cum[i])
		}
		r.hists = append(r.hists, hp)
	}
	return r
}

func (f *Flusher) send(s *sink, b []byte) {
	if s.conn == nil {
		var err error
		if s.udp != "" {
			s.conn, err = net.Dial("udp", s.udp)
		} else {
			s.conn, err = f.dialCluster(s.cluster)
		}
		if err != nil {
			f.dropped.Inc()
			return
		}
	}
	s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := s.conn.Write(b); err != nil {
		f.dropped.Inc()
		s.conn.Close()
		s.conn = nil
	}
}

func (f *Flusher) dialCluster(name string) (net.Conn, error) {
	cl := f.clusters.Get(name)
	if cl == nil {
		return nil, fmt.Errorf("statsd cluster %q does not exist", name)
	}
	h := cl.Pick(&upstream.LBContext{})
	if h == nil {
		return nil, fmt.Errorf("statsd cluster %q has no healthy host", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return cl.DialHost(ctx, h.Address)
}
