package proxy

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
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
func (s *stream) mirror(a *route.RouteAction, at *attempt) {
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
		} else if name := s.req.Get(m.ClusterHeader); name != "" {
			cl = s.d.Clusters.Get(name)
		}
		if cl == nil {
			continue
		}
		authority := at.authority
		if !m.NoShadowSuffix {
			host, port := splitHostPort(at.authority)
			authority = host + "-shadow" + port
		}
		req := headers.Request{Method: s.req.Method, Path: at.path, Authority: authority, Map: s.req.Map.Clone()}
		req.Path = strings.Clone(req.Path)
		req.Method = strings.Clone(req.Method)
		body := at.body
		timeout := a.Timeout
		go sendShadow(cl, &req, body, timeout, s.info.Protocol == "HTTP/2")
	}
}

// sendShadow performs one mirrored request and discards the response.
func sendShadow(cl *upstream.Cluster, req *headers.Request, body []byte, timeout time.Duration, downstreamH2 bool) {
	if !cl.TryStartRequest(upstream.PriorityDefault) {
		return
	}
	defer cl.EndRequest(upstream.PriorityDefault)
	h := cl.Pick(nil)
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
	if proto == upstream.UseDownstream && downstreamH2 {
		proto = upstream.HTTP2
	}
	if proto == upstream.HTTP2 {
		hr := &http.Request{Method: req.Method, URL: &url.URL{Scheme: "http", Host: h.Address, Opaque: req.Path}, Host: req.Authority, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body))}
		for _, f := range req.Fields() {
			hr.Header[f.Name] = append(hr.Header[f.Name], f.Value)
		}
		resp, err := cl.RoundTripH2(hr)
		if err != nil {
			h.HostFinished(false, false)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		cl.Stats.RqStatus.Inc(resp.StatusCode)
		h.HostFinished(resp.StatusCode < 500, false)
		return
	}
	cc, err := cl.Acquire(deadline, h, "")
	if err != nil {
		h.HostFinished(false, false)
		return
	}
	if !deadline.IsZero() {
		cc.Conn.SetDeadline(deadline)
	}
	framing := http1.NoBody
	if len(body) > 0 {
		framing = http1.Length
	}
	cc.W = http1.AppendRequestHead(cc.W[:0], req.Method, req.Path, req.Authority, &req.Map, framing, int64(len(body)), "")
	cc.W = append(cc.W, body...)
	ok := false
	var status int
	if _, err := cc.Conn.Write(cc.W); err == nil {
		if head, err := cc.R.Head(64 * 1024); err == nil {
			var rh http1.ResponseHead
			if http1.ParseResponse(head, &rh, 0) == nil {
				cc.R.Consume(len(head))
				status = rh.Status
				fr, n := rh.Framing(req.Method)
				var br http1.BodyReader
				br.Reset(cc.R, fr, n)
				_, err := io.Copy(io.Discard, &br)
				ok = err == nil && rh.KeepAlive && fr != http1.ToClose
			}
		}
	}
	cc.Conn.SetDeadline(time.Time{})
	cl.Release(cc, ok)
	if status > 0 {
		cl.Stats.RqStatus.Inc(status)
	}
	h.HostFinished(ok && status < 500, false)
}
