package hcm

import (
	"math/rand/v2"
	"net/netip"
	"strings"
)

// internalOnlyHeaders are the x-envoy-* headers Envoy removes from requests
// that come from outside (they would let clients steer the proxy).
var internalOnlyHeaders = map[string]bool{
	"x-envoy-decorator-operation": true, "x-envoy-downstream-service-cluster": true,
	"x-envoy-downstream-service-node": true, "x-envoy-expected-rq-timeout-ms": true,
	"x-envoy-external-address": true, "x-envoy-force-trace": true, "x-envoy-internal": true,
	"x-envoy-ip-tags": true, "x-envoy-max-retries": true, "x-envoy-retry-grpc-on": true,
	"x-envoy-retry-on": true, "x-envoy-upstream-alt-stat-name": true,
	"x-envoy-upstream-rq-per-try-timeout-ms": true, "x-envoy-upstream-rq-timeout-alt-response": true,
	"x-envoy-upstream-rq-timeout-ms": true, "x-envoy-original-path": true,
	"x-envoy-hedge-on-per-try-timeout": true, "x-envoy-is-timeout-retry": true,
	"x-envoy-retriable-header-names": true, "x-envoy-retriable-status-codes": true,
	"x-envoy-upstream-stream-duration-ms": true, "x-envoy-attempt-count": true,
}

var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("fc00::/7"),
}

// isInternal reports whether addr counts as internal for x-envoy-internal
// and header sanitization.
func (c *hcmConfig) isInternal(addr netip.Addr) bool {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return false
	}
	ranges := privateRanges
	if !c.internalDefault {
		ranges = c.internalCIDRs
	}
	for _, p := range ranges {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// lastXFF returns the address n positions from the right of the
// x-forwarded-for value (0 = last), or an invalid address.
func lastXFF(xff string, n int) netip.Addr {
	parts := strings.Split(xff, ",")
	i := len(parts) - 1 - n
	if i < 0 {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(strings.TrimSpace(parts[i]))
	if err != nil {
		return netip.Addr{}
	}
	return a
}

// newRequestID returns a random UUID v4, as Envoy's x-request-id.
func newRequestID() string {
	var b [36]byte
	hi, lo := rand.Uint64(), rand.Uint64()
	var u [16]byte
	for i := 0; i < 8; i++ {
		u[i] = byte(hi >> (56 - 8*i))
		u[8+i] = byte(lo >> (56 - 8*i))
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	const hexd = "0123456789abcdef"
	j := 0
	for i := 0; i < 16; i++ {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b[j] = '-'
			j++
		}
		b[j], b[j+1] = hexd[u[i]>>4], hexd[u[i]&0xf]
		j += 2
	}
	return string(b[:])
}

// normalizePath removes dot segments (RFC 3986 5.2.4), turns backslashes
// into slashes, upper-cases percent-encodings and decodes percent-encoded
// unreserved characters, as Envoy's normalize_path. It reports false for a
// path that cannot be normalized (such as one that climbs above the root).
func normalizePath(p string) (string, bool) {
	path, query := p, ""
	if i := strings.IndexByte(p, '?'); i >= 0 {
		path, query = p[:i], p[i:]
	}
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '\\':
			b.WriteByte('/')
		case c == '%' && i+2 < len(path) && isHex(path[i+1]) && isHex(path[i+2]):
			v := unhex(path[i+1])<<4 | unhex(path[i+2])
			if isUnreserved(v) {
				b.WriteByte(v)
			} else {
				b.WriteByte('%')
				b.WriteByte(upperHex(path[i+1]))
				b.WriteByte(upperHex(path[i+2]))
			}
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	segs := strings.Split(b.String(), "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		switch s {
		case ".":
			if i == len(segs)-1 {
				out = append(out, "")
			}
		case "..":
			if len(out) <= 1 {
				return "", false
			}
			out = out[:len(out)-1]
			if i == len(segs)-1 {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	res := strings.Join(out, "/")
	if res == "" {
		res = "/"
	}
	return res + query, true
}

// mergeSlashes collapses runs of '/' in the path (not the query).
func mergeSlashes(p string) string {
	if !strings.Contains(p, "//") {
		return p
	}
	path, query := p, ""
	if i := strings.IndexByte(p, '?'); i >= 0 {
		path, query = p[:i], p[i:]
	}
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		if path[i] == '/' && i > 0 && path[i-1] == '/' {
			continue
		}
		b.WriteByte(path[i])
	}
	return b.String() + query
}

// unescapeSlashes decodes %2F, %2f, %5C and %5c in the path.
func unescapeSlashes(p string) (string, bool) {
	path, query := p, ""
	if i := strings.IndexByte(p, '?'); i >= 0 {
		path, query = p[:i], p[i:]
	}
	r := strings.NewReplacer("%2F", "/", "%2f", "/", "%5C", "\\", "%5c", "\\")
	np := r.Replace(path)
	return np + query, np != path
}

func hasEscapedSlash(p string) bool {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	lp := strings.ToLower(p)
	return strings.Contains(lp, "%2f") || strings.Contains(lp, "%5c")
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}
