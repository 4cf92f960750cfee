package route

import (
	"math/rand/v2"
	"strings"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

// VirtualHost finds the virtual host for an authority, in Envoy's order:
// exact domain, longest *.suffix, longest prefix*, then "*". Matching is
// case-insensitive; the port is part of the authority unless the table
// ignores ports (ignore_port_in_host_matching).
func (t *Table) VirtualHost(authority string) *VirtualHost {
	host := lowerASCII(authority)
	if t.ignorePort {
		host = stripPort(host)
	}
	if vh, ok := t.exact[host]; ok {
		return vh
	}
	for _, ws := range t.suffixes {
		if len(host) > ws.n {
			if vh, ok := ws.hosts[host[len(host)-ws.n:]]; ok {
				return vh
			}
		}
	}
	for _, ws := range t.prefixes {
		if len(host) > ws.n {
			if vh, ok := ws.hosts[host[:ws.n]]; ok {
				return vh
			}
		}
	}
	return t.star
}

// Route returns the first route of the request's virtual host that
// matches, or nil (404 NR). A virtual host with a matcher runs it on the
// request headers first (vhmatcher.go); only its candidates are matched.
func (t *Table) Route(r *headers.Request) *Route {
	vh := t.VirtualHost(r.Authority)
	if vh == nil {
		return nil
	}
	if vh.matcher != nil {
		return vh.matchRoute(r)
	}
	for _, rt := range vh.Routes {
		if rt.match.matches(r) {
			return rt
		}
	}
	return nil
}

// lowerASCII lower-cases s, allocating only when it has upper case.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

func stripPort(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		return h[:i]
	}
	return h
}

// PickCluster returns the cluster to forward to (and the weighted cluster
// entry, if any). For cluster_header it returns the name to look up.
func (a *RouteAction) PickCluster(r *headers.Request) (ref *upstream.Ref, name string, wc *WeightedCluster) {
	switch {
	case a.Cluster != nil:
		return a.Cluster, a.Cluster.Name(), nil
	case a.ClusterHeader != "":
		return nil, r.Get(a.ClusterHeader), nil
	case len(a.Weighted) > 0:
		x := rand.Uint64N(a.totalWeight)
		for i := range a.Weighted {
			w := &a.Weighted[i]
			if x < w.Weight {
				if w.Cluster == nil {
					return nil, r.Get(w.ClusterHeader), w
				}
				return w.Cluster, w.Cluster.Name(), w
			}
			x -= w.Weight
		}
	}
	return nil, "", nil
}

// RewritePath returns the upstream path after prefix_rewrite or
// regex_rewrite, and whether it changed.
func (a *RouteAction) RewritePath(path string) (string, bool) {
	switch {
	case a.hasPrefixRewrite:
		if a.matchKind == pathPrefix || a.matchKind == pathExact || a.matchKind == pathSeparatedPrefix {
			if hasPrefix(path, a.matchPrefix, a.caseSensitive) {
				return a.PrefixRewrite + path[len(a.matchPrefix):], true
			}
		}
	case a.RegexRewrite != nil:
		p, q := path, ""
		if i := strings.IndexByte(path, '?'); i >= 0 {
			p, q = path[:i], path[i:]
		}
		return a.RegexRewrite.ReplaceAllString(p, a.RegexSubst) + q, true
	}
	return path, false
}

// ApplyRequest applies every level's request header mutations: weighted
// cluster, route, virtual host, route configuration — or the reverse when
// most_specific_header_mutations_wins is set. It returns the (reusable)
// scratch buffer.
func (t *Table) ApplyRequest(rt *Route, wc *WeightedCluster, m *headers.Map, info *streaminfo.Info, buf []byte) []byte {
	levels := t.levels(rt, wc)
	for _, l := range levels {
		if l != nil {
			buf = applyOps(m, l.ReqAdd, l.ReqRemove, info, buf)
		}
	}
	return buf
}

// ApplyResponse applies every level's response header mutations.
func (t *Table) ApplyResponse(rt *Route, wc *WeightedCluster, m *headers.Map, info *streaminfo.Info, buf []byte) []byte {
	levels := t.levels(rt, wc)
	for _, l := range levels {
		if l != nil {
			buf = applyOps(m, l.RespAdd, l.RespRemove, info, buf)
		}
	}
	return buf
}

func (t *Table) levels(rt *Route, wc *WeightedCluster) [4]*Mutations {
	var w *Mutations
	if wc != nil {
		w = &wc.Mutations
	}
	var vm, rm *Mutations
	if rt != nil {
		rm = &rt.Mutations
		if rt.VHost != nil {
			vm = &rt.VHost.Mutations
		}
	}
	if t.mostSpecificWins {
		return [4]*Mutations{&t.Mutations, vm, rm, w}
	}
	return [4]*Mutations{w, rm, vm, &t.Mutations}
}

// MirrorSampled reports whether a mirror policy fires for this request.
func (m *Mirror) MirrorSampled() bool {
	return m.PerMillion >= 1_000_000 || rand.Uint32N(1_000_000) < m.PerMillion
}
