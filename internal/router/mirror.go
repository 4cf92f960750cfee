package router

import (
	"io"
	"strings"
	"time"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/upstream"
)

// mirror sends fire-and-forget copies of the request to the route's
// request_mirror_policies clusters, with "-shadow" appended to the host as
// Envoy does. Requests whose body is streamed (over 1 MiB) are mirrored
// without it being available, so they are not mirrored.
func (s *Stream) mirror(a *route.RouteAction, at *attempt) {
	if len(a.Mirrors) == 0 || at.bodyMode == bodyStream {
		return
	}
	for i := range a.Mirrors {
		m := &a.Mirrors[i]
		if !m.MirrorSampled() {
			continue
		}
		var cl *upstream.Cluster
		if m.Cluster != nil {
			cl = m.Cluster.Get()
		} else if name := s.Req.Get(m.ClusterHeader); name != "" {
			cl = s.cfg.Clusters.Get(name)
		}
		if cl == nil {
			continue
		}
		authority := at.authority
		if !m.NoShadowSuffix {
			host, port := headers.SplitHostPort(at.authority)
			authority = host + "-shadow" + port
		}
		req := headers.Request{Method: s.Req.Method, Path: at.path, Authority: authority, Map: s.Req.Map.Clone()}
		req.Path = strings.Clone(req.Path)
		req.Method = strings.Clone(req.Method)
		body := at.body
		timeout := a.Timeout
		go sendShadow(cl, s.cfg.Clusters.Get, &req, body, timeout, s.Info.Protocol == "HTTP/2")
	}
}

// sendShadow performs one mirrored request and discards the response.
func sendShadow(cl *upstream.Cluster, lookup func(string) *upstream.Cluster, req *headers.Request, body []byte, timeout time.Duration, downstreamH2 bool) {
	if !cl.TryStartRequest(upstream.PriorityDefault) {
		return
	}
	defer cl.EndRequest(upstream.PriorityDefault)
	// An aggregate mirror cluster sends to its chosen child, on the
	// child's settings.
	cl, h := cl.Choose(&upstream.LBContext{}, lookup)
	if h == nil {
		return
	}
	cl.Stats.RqTotal.Inc()
	h.HostStarted()
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	proto := cl.Protocol
	if proto == upstream.UseDownstream {
		proto = upstream.HTTP1
		if downstreamH2 {
			proto = upstream.HTTP2
		}
	}
	ex := cl.Open(h, proto)
	r := upstream.Request{Method: req.Method, Path: req.Path, Authority: req.Authority, Headers: &req.Map,
		Body: body, Length: int64(len(body)), Deadline: deadline}
	var head http1.ResponseHead
	if err := ex.Send(&r, &head); err != nil {
		ex.Close(false)
		h.HostFinished(false, false)
		return
	}
	_, err := io.Copy(io.Discard, ex.Body())
	ex.Close(err == nil)
	cl.Stats.ChargeCode(head.Status)
	h.HostFinished(err == nil && head.Status < 500, false)
}
