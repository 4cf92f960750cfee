package upstream

import (
	"math"
	"math/rand/v2"

	aggregatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/aggregate/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.clusters.aggregate", Category: extension.ClusterType,
		Config: &aggregatev3.ClusterConfig{}, Factory: clusterTypeFactory(compileAggregate),
		Notes: "within the chosen child, the child's own load balancer picks the priority; max_requests is the aggregate's; previous_priorities moves retries to the next levels; with previous_hosts alone a retry moves on once a child's hosts are all excluded"})
}

// Aggregate is an aggregate cluster's configuration: the names of its
// child clusters in failover order. The children are looked up by name per
// request, so they may arrive from CDS after the aggregate (a missing one
// is skipped, as in Envoy).
type Aggregate struct {
	Clusters []string
}

func compileAggregate(cfg proto.Message, c *Cluster, path string, _ Deps) error {
	ac := cfg.(*aggregatev3.ClusterConfig)
	if err := config.CheckFields(ac, path, "clusters"); err != nil {
		return err
	}
	if len(ac.GetClusters()) == 0 {
		// Envoy's proto validation: clusters has min_items 1.
		return config.Errorf(config.Join(path, "clusters"), "an aggregate cluster needs at least one cluster")
	}
	seen := map[string]bool{}
	for i, n := range ac.GetClusters() {
		p := config.Index(config.Join(path, "clusters"), i)
		if n == "" {
			return config.Errorf(p, "empty cluster name")
		}
		if n == c.Name {
			return config.Errorf(p, "an aggregate cluster cannot name itself")
		}
		if seen[n] {
			return config.Errorf(p, "cluster %q is listed twice", n)
		}
		seen[n] = true
	}
	c.Aggregate = &Aggregate{Clusters: append([]string(nil), ac.GetClusters()...)}
	return nil
}

// aggLevel is one priority level of one child in the linearized priority
// set of an aggregate cluster.
type aggLevel struct {
	child  *Cluster
	prio   *prioSet // nil for a child whose hosts appear per request
	health float64  // percent, after overprovisioning
	hosts  int
}

// avoided reports whether one of the hosts the previous_priorities retry
// priority avoids is at this level.
func (l *aggLevel) avoided(ctx *LBContext) bool {
	if l.prio == nil || ctx == nil {
		return false
	}
	for _, h := range ctx.AvoidLevels {
		if l.prio.has(h) {
			return true
		}
	}
	return false
}

// PickChild chooses the child cluster and host of an aggregate cluster for
// one attempt. lookup returns a running cluster by name (nil: none yet).
//
// As Envoy's aggregate load balancer, the children's priority levels are
// linearized in the configured order (child 0's P0, P1, ..., then child
// 1's P0, ...) and the usual priority load is computed over that list: a
// level takes what its health (× the child's overprovisioning factor)
// allows of the load left, so traffic stays on the first child while it
// is healthy enough and spills to later ones as it loses healthy hosts.
// With no healthy host anywhere, the levels share the load by host count
// (panic mode). With the previous_priorities retry priority, the levels
// of the hosts already attempted are left out of that computation. A child
// whose hosts were all tried already (previous_hosts) gives way to the
// next one. A missing child, or one that is itself an
// aggregate, is skipped.
func (a *Aggregate) PickChild(ctx *LBContext, lookup func(string) *Cluster) (*Cluster, *Host) {
	var levels []aggLevel
	total := 0.0
	for _, name := range a.Clusters {
		ch := lookup(name)
		if ch == nil || ch.Aggregate != nil {
			continue
		}
		if ch.OrigDst != nil || ch.DFP != nil {
			// Hosts appear per request: treat the child as one healthy level.
			levels = append(levels, aggLevel{child: ch, health: 100, hosts: 1})
			total += 100
			continue
		}
		hs := ch.hosts.Load()
		for _, p := range hs.prios {
			l := aggLevel{child: ch, prio: p, hosts: len(p.hosts)}
			if len(p.hosts) > 0 {
				l.health = math.Min(100, ch.lb.overprovision*100*float64(len(p.healthy))/float64(len(p.hosts)))
			}
			total += l.health
			levels = append(levels, l)
		}
	}
	if len(levels) == 0 {
		return nil, nil
	}
	if ctx != nil && len(ctx.AvoidLevels) > 0 {
		// previous_priorities: the levels already attempted give their load
		// to the others, unless none of those has health left (then Envoy
		// forgets the attempted levels).
		left := 0.0
		for i := range levels {
			if !levels[i].avoided(ctx) {
				left += levels[i].health
			}
		}
		if left > 0 {
			for i := range levels {
				if levels[i].avoided(ctx) {
					levels[i].health = 0
				}
			}
			total = left
		}
	}
	loads := make([]float64, len(levels))
	if total > 0 {
		remaining, norm := 100.0, math.Min(total, 100)
		for i, l := range levels {
			share := math.Min(remaining, l.health*100/norm)
			remaining -= share
			loads[i] = share
		}
	} else {
		n := 0
		for _, l := range levels {
			n += l.hosts
		}
		if n == 0 {
			return nil, nil
		}
		for i, l := range levels {
			loads[i] = 100 * float64(l.hosts) / float64(n)
		}
	}
	r := rand.Float64() * 100
	start := len(levels) - 1
	for i, l := range loads {
		if r < l {
			start = i
			break
		}
		r -= l
	}
	// Pick from the chosen level's child; a child with nothing left to
	// offer (no host, or only hosts already tried) hands over to the next
	// levels in order, then the earlier ones.
	var fallback *Cluster
	var fallbackHost *Host
	tried := map[*Cluster]bool{}
	for k := 0; k < len(levels); k++ {
		l := levels[(start+k)%len(levels)]
		if tried[l.child] || (l.hosts == 0 && loads[(start+k)%len(levels)] == 0) {
			continue
		}
		tried[l.child] = true
		h := l.child.Pick(ctx)
		if h == nil {
			continue
		}
		if !ctx.excluded(h) {
			return l.child, h
		}
		if fallback == nil {
			fallback, fallbackHost = l.child, h
		}
	}
	return fallback, fallbackHost
}

// Choose picks the host for a request to c and the cluster whose settings
// (protocol, TLS, pools, stats) apply to it: for an aggregate cluster the
// child PickChild chooses (nil, nil when none has a host), else c itself
// with its own Pick. Every path that sends a request to a route's cluster
// picks through it, so an aggregate works on all of them. lookup finds
// the children by name (the cluster manager's Get).
func (c *Cluster) Choose(ctx *LBContext, lookup func(string) *Cluster) (*Cluster, *Host) {
	if c.Aggregate == nil {
		return c, c.Pick(ctx)
	}
	child, h := c.Aggregate.PickChild(ctx, lookup)
	if child == nil {
		return c, nil
	}
	return child, h
}
