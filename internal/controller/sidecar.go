package controller

import (
	"context"
	"fmt"
	"net/http"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/legateproxy/legate/internal/controller/xdsgen"
	"github.com/legateproxy/legate/internal/mesh"
)

// sidecarRequested builds the snapshot of a sidecar whose first stream
// just asked (the xDS server calls it). Before the first build there are
// no objects: the first rebuild builds every known sidecar.
func (c *Controller) sidecarRequested(node string) {
	c.mu.Lock()
	ready := c.objs != nil
	c.mu.Unlock()
	if ready {
		c.buildSidecars(context.Background(), []string{node})
	}
}

// rebuildSidecars rebuilds every sidecar the xDS server keeps, and drops
// the debug copies of forgotten ones.
func (c *Controller) rebuildSidecars(ctx context.Context) {
	nodes := c.xds.Sidecars()
	keep := map[string]bool{}
	for _, n := range nodes {
		keep[n] = true
	}
	c.mu.Lock()
	for n := range c.sidecars {
		if !keep[n] {
			delete(c.sidecars, n)
		}
	}
	c.mu.Unlock()
	c.buildSidecars(ctx, nodes)
}

// buildSidecars renders and serves the snapshots of nodes from the
// newest objects.
func (c *Controller) buildSidecars(ctx context.Context, nodes []string) {
	c.sideMu.Lock()
	defer c.sideMu.Unlock()
	c.mu.Lock()
	objs := c.objs
	c.mu.Unlock()
	if objs == nil {
		return
	}
	for _, node := range nodes {
		n, ok := mesh.ParseNodeID(node)
		if !ok {
			continue
		}
		r := xdsgen.Sidecar(objs, n, c.opt.Sidecar)
		c.sidecarBuild.Inc()
		res := map[resourcev3.Type][]types.Resource{
			resourcev3.ListenerType: asResources(r.Listeners),
			resourcev3.RouteType:    asResources(r.Routes),
			resourcev3.ClusterType:  asResources(r.Clusters),
			resourcev3.EndpointType: asResources(r.Endpoints),
		}
		set, err := c.xds.SetSidecar(ctx, node, res)
		if err != nil {
			c.opt.Log.Error("sidecar xDS snapshot rejected", "node", node, "error", err)
			continue
		}
		if !set {
			continue // forgotten while it was built
		}
		c.mu.Lock()
		c.sidecars[node] = r
		c.mu.Unlock()
		for _, note := range r.Notes {
			c.opt.Log.Debug("sidecar configuration", "node", node, "note", note)
		}
	}
}

// authorizeSidecar checks a workload certificate's ServiceAccount against
// the pod of its node id, when the store knows the pod (a pod not seen
// yet is allowed: its namespace was checked).
func (c *Controller) authorizeSidecar(n mesh.NodeID, namespace, serviceAccount string) error {
	c.mu.Lock()
	objs := c.objs
	c.mu.Unlock()
	if objs == nil {
		return nil
	}
	p := objs.Pods[k8stypes.NamespacedName{Namespace: n.Namespace, Name: n.Pod}]
	if p == nil {
		return nil
	}
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	if sa != serviceAccount {
		return fmt.Errorf("pod %s/%s runs as ServiceAccount %q, not %q", n.Namespace, n.Pod, sa, serviceAccount)
	}
	if !podHasIP(p, n.IP.String()) {
		return fmt.Errorf("pod %s/%s does not have IP %s", n.Namespace, n.Pod, n.IP)
	}
	return nil
}

func podHasIP(p *corev1.Pod, ip string) bool {
	if p.Status.PodIP == "" && len(p.Status.PodIPs) == 0 {
		return true // not scheduled yet: nothing to compare
	}
	if p.Status.PodIP == ip {
		return true
	}
	for _, x := range p.Status.PodIPs {
		if x.IP == ip {
			return true
		}
	}
	return false
}

func sidecarMessages(r *xdsgen.SidecarResources) []proto.Message {
	var msgs []proto.Message
	for _, x := range r.Listeners {
		msgs = append(msgs, x)
	}
	for _, x := range r.Routes {
		msgs = append(msgs, x)
	}
	for _, x := range r.Clusters {
		msgs = append(msgs, x)
	}
	for _, x := range r.Endpoints {
		msgs = append(msgs, x)
	}
	return msgs
}

// writeMessages writes resources as a JSON array of Anys.
func writeMessages(w http.ResponseWriter, msgs []proto.Message) {
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte("[\n"))
	for i, msg := range msgs {
		b, _ := protojson.MarshalOptions{Indent: "  "}.Marshal(anyOf(msg))
		w.Write(b)
		if i < len(msgs)-1 {
			w.Write([]byte(",\n"))
		}
	}
	w.Write([]byte("\n]\n"))
}
