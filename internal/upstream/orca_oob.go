package upstream

import (
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	orcasvc "github.com/cncf/xds/go/xds/service/orca/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// orcaOOB keeps one out-of-band ORCA stream per host of a cluster whose
// client_side_weighted_round_robin has enable_oob_load_report: each host
// is asked, through xds.service.orca.v3.OpenRcaService/StreamCoreMetrics,
// for a report every oob_reporting_period, and every report updates the
// host's weight as a per-request report would. The stream runs over a
// connection of its own to the host's address, through the cluster's
// transport socket (Envoy's OrcaOobManager does the same with the
// cluster's HTTP/2 connection pool).
type orcaOOB struct {
	s *cswrr
	c *Cluster

	mu      sync.Mutex
	streams map[*Host]func() // cancel of each host's stream
}

// sync starts streams for new hosts and ends those of hosts that left.
func (o *orcaOOB) sync(hosts []*Host) {
	o.mu.Lock()
	defer o.mu.Unlock()
	keep := make(map[*Host]bool, len(hosts))
	for _, h := range hosts {
		keep[h] = true
		if _, ok := o.streams[h]; !ok {
			ctx, cancel := context.WithCancel(context.Background())
			o.streams[h] = cancel
			go o.stream(ctx, h)
		}
	}
	for h, cancel := range o.streams {
		if !keep[h] {
			cancel()
			delete(o.streams, h)
		}
	}
}

func (o *orcaOOB) closeAll() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for h, cancel := range o.streams {
		cancel()
		delete(o.streams, h)
	}
}

// stream keeps one host's stream open until ctx ends, reconnecting after
// failures with Envoy's jittered backoff (1s doubling to 60s, reset by a
// report). A host that answers UNIMPLEMENTED does not serve ORCA: as
// Envoy, it is not asked again (it keeps the default weight).
func (o *orcaOOB) stream(ctx context.Context, h *Host) {
	// As Envoy's OrcaOobSession: the :authority is the configured one, else
	// the host's name, else its address.
	authority := o.s.cfg.oobAuthority
	if authority == "" {
		authority = h.Hostname()
	}
	if authority == "" {
		authority = h.Address
	}
	cc, err := grpc.NewClient("passthrough:///"+h.Address,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return o.c.DialHost(ctx, h.Address)
		}))
	if err != nil {
		o.c.log.Warn("ORCA out-of-band client not created", "cluster", o.c.Name, "host", h.Address, "error", err)
		return
	}
	defer cc.Close()
	client := orcasvc.NewOpenRcaServiceClient(cc)
	backoff := time.Second
	for ctx.Err() == nil {
		got, err := o.once(ctx, client, h)
		if ctx.Err() != nil {
			return
		}
		if status.Code(err) == codes.Unimplemented {
			o.c.log.Warn("host does not serve ORCA out-of-band reports (OpenRcaService unimplemented); it keeps the default weight", "cluster", o.c.Name, "host", h.Address)
			return
		}
		o.c.log.Debug("ORCA out-of-band stream ended", "cluster", o.c.Name, "host", h.Address, "error", err)
		if got {
			backoff = time.Second
		}
		// Full jitter over [backoff/2, backoff), so hosts restarted together
		// are not all dialed at once.
		wait := backoff/2 + rand.N(backoff/2)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 60*time.Second)
	}
}

// once runs one stream; it reports whether a report arrived, and the error
// that ended the stream.
func (o *orcaOOB) once(ctx context.Context, client orcasvc.OpenRcaServiceClient, h *Host) (bool, error) {
	st, err := client.StreamCoreMetrics(ctx, &orcasvc.OrcaLoadReportRequest{ReportInterval: durationpb.New(o.s.cfg.oobPeriod)})
	if err != nil {
		return false, err
	}
	got := false
	for {
		r, err := st.Recv()
		if err != nil {
			return got, err
		}
		got = true
		o.s.report(o.c, h, r)
	}
}
