package headers

import "strings"

// hopByHop are the connection-specific headers a proxy must not forward
// (RFC 9110 7.6.1), plus the ones Envoy strips.
var hopByHop = []string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "http2-settings"}

// StripHopByHop removes connection-specific headers and the headers the
// Connection header nominates. te: trailers is kept (gRPC needs it).
func StripHopByHop(m *Map) {
	var nominated [4]string
	var overflow []string
	n := 0
	for _, f := range m.Fields() {
		if f.Name != "connection" {
			continue
		}
		conn := f.Value
		for conn != "" {
			var tok string
			if i := strings.IndexByte(conn, ','); i >= 0 {
				tok, conn = conn[:i], conn[i+1:]
			} else {
				tok, conn = conn, ""
			}
			tok = Lower(strings.TrimSpace(tok))
			if tok != "" && tok != "close" && tok != "keep-alive" && tok != "upgrade" {
				if n < len(nominated) {
					nominated[n] = tok
					n++
				} else {
					overflow = append(overflow, tok)
				}
			}
		}
	}
	for _, tok := range nominated[:n] {
		m.Del(tok)
	}
	for _, tok := range overflow {
		m.Del(tok)
	}
	te := m.Get("te")
	for _, h := range hopByHop {
		m.Del(h)
	}
	if te != "" && HasToken(te, "trailers") {
		m.Add("te", "trailers")
	}
}

// SplitHostPort splits "host:port" into "host" and ":port" (IPv6-aware).
func SplitHostPort(a string) (string, string) {
	i := strings.LastIndexByte(a, ':')
	if i < 0 || strings.Contains(a[i:], "]") {
		return a, ""
	}
	return a[:i], a[i:]
}
