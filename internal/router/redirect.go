package router

import (
	"net/url"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// followRedirect takes an internal redirect for the upstream response of
// the last attempt, as Envoy's Filter::setupRedirect and
// convertRequestHeadersForInternalRedirect: when it returns true, s.Req
// is the redirected request and the response was discarded; when false,
// the request is as it was and the response goes to the client.
func (s *Stream) followRedirect(at *attempt, p *route.InternalRedirect) bool {
	cl := at.cl
	// Envoy redirects only a request it holds whole, replaying a body it
	// buffered; Legate redirects requests without a body (one with a
	// body gets the redirect response, as in Envoy when the body did not
	// fit its buffer).
	complete := at.bodyMode == bodyNone
	loc := at.head.Headers.Get("location")
	if !complete || loc == "" || !s.convertForRedirect(at, p, loc) {
		cl.Stats.InternalRedirectFailed.Inc()
		return false
	}
	cl.Stats.InternalRedirectSucceeded.Inc()
	// The redirect response ends here: its host answered.
	if !s.cfg.NoDynamicStats {
		cl.Stats.ChargeCode(at.head.Status)
	}
	at.host.HostFinished(true, false)
	at.setLive(nil)
	at.ex.Discard()
	at.ex = nil
	s.Redirected = true
	return true
}

func inc(c *stats.Counter) {
	if c != nil {
		c.Inc()
	}
}

// convertForRedirect rewrites the request for the Location loc, checking
// what Envoy checks in order: an absolute http(s) URL, the scheme, the
// redirect count, a route for the new request and the predicates.
func (s *Stream) convertForRedirect(at *attempt, p *route.InternalRedirect, loc string) bool {
	st := s.cfg.Stats
	u, err := url.Parse(loc)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		inc(st.RedirectBadLocation)
		return false
	}
	r := s.Req
	downHTTPS := r.Scheme == "https" || (r.Scheme == "" && s.Info.DownstreamTLS != nil)
	targetHTTPS := u.Scheme == "https"
	if !p.AllowCrossScheme && downHTTPS != targetHTTPS {
		inc(st.RedirectUnsafeScheme)
		return false
	}
	if uint32(len(s.Info.Redirects)) >= p.Max {
		inc(st.RedirectTooMany)
		return false
	}
	saved := struct {
		method, scheme, authority, path string
		m                               headers.Map
	}{r.Method, r.Scheme, r.Authority, r.Path, r.Map.Clone()}
	restore := func() {
		r.Method, r.Scheme, r.Authority, r.Path = saved.method, saved.scheme, saved.authority, saved.path
		r.Map = saved.m
	}
	// response_headers_to_copy: the response's values replace the
	// request's; a header the response lacks is removed.
	for _, h := range p.CopyHeaders {
		r.Map.Del(h)
		for _, v := range at.head.Headers.Values(h) {
			r.Map.Add(h, v)
		}
	}
	r.Scheme, r.Authority = u.Scheme, u.Host
	// The fragment is not part of the request (Envoy strips it rather
	// than refusing the redirected request).
	r.Path = u.EscapedPath()
	if r.Path == "" {
		r.Path = "/"
	}
	if u.RawQuery != "" || u.ForceQuery {
		r.Path += "?" + u.RawQuery
	}
	target := s.Table.Route(r)
	if target == nil {
		restore()
		inc(st.RedirectNoRoute)
		return false
	}
	var visited []string
	for _, rd := range s.Info.Redirects {
		if rd.From == s.Route.Name {
			visited = append(visited, rd.To)
		}
	}
	for _, pr := range p.Predicates {
		if !pr.Accept(s.Route.Name, target.Name, visited, downHTTPS, targetHTTPS) {
			restore()
			inc(st.RedirectPredicate)
			return false
		}
	}
	// RFC 9110 section 15.4.4: a 303 is followed with GET (HEAD stays).
	if at.head.Status == 303 && r.Method != "GET" && r.Method != "HEAD" {
		r.Method = "GET"
		r.Map.Del("content-length")
	}
	s.Info.Redirects = append(s.Info.Redirects, streaminfo.Redirect{From: s.Route.Name, To: target.Name})
	// The URL before this redirect, for the second pass (Envoy's
	// x-envoy-original-url).
	scheme := "http"
	if downHTTPS {
		scheme = "https"
	}
	r.Map.Set("x-envoy-original-url", scheme+"://"+saved.authority+saved.path)
	return true
}
