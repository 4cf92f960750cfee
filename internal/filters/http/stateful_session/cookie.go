package stateful_session

import (
	"encoding/base64"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	cookiev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/stateful_session/cookie/v3"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
)

// cookieState is a compiled CookieBasedSessionState.
type cookieState struct {
	name  string
	path  string
	ttl   int64 // seconds; 0: a session cookie, with no expiry in its value
	attrs []string
	// now is the clock the expiry is read against, in seconds: Envoy's
	// monotonic time (steady_clock since its epoch), which is what Envoy
	// writes into the cookie, so cookies stay valid across a restart of
	// a proxy on the same machine as they do with Envoy.
	now func() int64
}

func monotonicSeconds() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Now().Unix()
	}
	return ts.Sec
}

func compileCookie(m *cookiev3.CookieBasedSessionState, path string) (*cookieState, error) {
	if err := config.CheckFields(m, path, "cookie"); err != nil {
		return nil, err
	}
	c := m.GetCookie()
	cp := config.Join(path, "cookie")
	if err := config.CheckFields(c, cp, "name", "ttl", "path", "attributes"); err != nil {
		return nil, err
	}
	if c.GetName() == "" {
		// Envoy's message.
		return nil, config.Errorf(config.Join(cp, "name"), "Cookie key cannot be empty for cookie based stateful sessions")
	}
	out := &cookieState{name: c.GetName(), path: c.GetPath(), ttl: c.GetTtl().GetSeconds(), now: monotonicSeconds}
	for i, a := range c.GetAttributes() {
		if err := config.CheckFields(a, config.Index(config.Join(cp, "attributes"), i), "name", "value"); err != nil {
			return nil, err
		}
		if a.GetValue() == "" {
			out.attrs = append(out.attrs, a.GetName())
		} else {
			out.attrs = append(out.attrs, a.GetName()+"="+a.GetValue())
		}
	}
	return out, nil
}

// pathMatch is Envoy's cookie path rule: no path or "/" matches every
// request; a path ending in "/" matches the paths it prefixes; another
// path matches itself and what follows it after "/", "?" or "#".
func (c *cookieState) pathMatch(p string) bool {
	if c.path == "" || c.path == "/" {
		return true
	}
	if !strings.HasPrefix(p, c.path) {
		return false
	}
	if strings.HasSuffix(c.path, "/") || len(p) == len(c.path) {
		return true
	}
	switch p[len(c.path)] {
	case '/', '?', '#':
		return true
	}
	return false
}

func (c *cookieState) create(h *headers.Request) *session {
	if !c.pathMatch(h.Path) {
		return nil
	}
	s := &session{address: c.parse(cookieValue(h.Map.Values("cookie"), c.name))}
	s.update = func(host string, rh *headers.Response) {
		if host == s.address {
			return
		}
		// Envoy appends a Set-Cookie (addReferenceKey), leaving the
		// upstream's own cookies in place.
		rh.Map.Add("set-cookie", c.setCookie(base64.StdEncoding.EncodeToString(c.encode(host))))
	}
	return s
}

// Fields of Envoy's envoy.Cookie message (source/extensions/http/
// stateful_session/cookie/cookie.proto): the cookie value is the base64 of
// this message serialized.
const (
	cookieFieldAddress = 1 // string
	cookieFieldExpires = 2 // int64, seconds of Envoy's monotonic clock
)

// encode is the cookie payload for host: its address, and the expiry when
// the cookie has a ttl.
func (c *cookieState) encode(host string) []byte {
	var b []byte
	b = protowire.AppendTag(b, cookieFieldAddress, protowire.BytesType)
	b = protowire.AppendString(b, host)
	if c.ttl != 0 {
		b = protowire.AppendTag(b, cookieFieldExpires, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(c.now()+c.ttl))
	}
	return b
}

var oldFormatOnce sync.Once

// parse reads a cookie value: base64 of an envoy.Cookie message, or, as
// Envoy still accepts (with a warning, logged once), base64 of the plain
// "ip:port". An expired cookie, an empty address or bad base64 is no
// session.
func (c *cookieState) parse(v string) string {
	if v == "" {
		return ""
	}
	raw := decodeBase64(v)
	addr, expires, ok := parseCookieProto([]byte(raw))
	if !ok {
		oldFormatOnce.Do(func() {
			slog.Warn("stateful_session: Non-proto cookie format detected. This format will be rejected in the future.")
		})
		return raw
	}
	if addr == "" {
		return ""
	}
	if expires != 0 && c.now() > expires {
		// Expired: the load balancer picks and a new cookie is set.
		return ""
	}
	return addr
}

// parseCookieProto parses an envoy.Cookie as protobuf's ParseFromString
// does: any well-formed message parses (unknown fields are skipped, and a
// known field of another wire type counts as unknown); only malformed
// bytes fail, which is how Envoy tells the plain old form apart.
func parseCookieProto(b []byte) (addr string, expires int64, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num == 0 {
			return "", 0, false
		}
		b = b[n:]
		switch {
		case num == cookieFieldAddress && typ == protowire.BytesType:
			v, m := protowire.ConsumeString(b)
			if m < 0 {
				return "", 0, false
			}
			addr, b = v, b[m:]
		case num == cookieFieldExpires && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return "", 0, false
			}
			expires, b = int64(v), b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return "", 0, false
			}
			b = b[m:]
		}
	}
	return addr, expires, true
}

// setCookie is Envoy's makeSetCookieValue(name, value, path, ttl,
// httponly=true, attributes): name="value"; Max-Age=ttl; Path=path;
// attributes...; HttpOnly.
func (c *cookieState) setCookie(value string) string {
	var b strings.Builder
	b.WriteString(c.name)
	b.WriteString(`="`)
	b.WriteString(value)
	b.WriteByte('"')
	if c.ttl != 0 {
		b.WriteString("; Max-Age=")
		b.WriteString(strconv.FormatInt(c.ttl, 10))
	}
	if c.path != "" {
		b.WriteString("; Path=")
		b.WriteString(c.path)
	}
	for _, a := range c.attrs {
		b.WriteString("; ")
		b.WriteString(a)
	}
	b.WriteString("; HttpOnly")
	return b.String()
}

// cookieValue is Envoy's parseCookieValue: the first cookie of that name
// in the Cookie headers, without surrounding double quotes.
func cookieValue(lines []string, name string) string {
	for _, line := range lines {
		for _, part := range strings.Split(line, ";") {
			eq := strings.IndexByte(part, '=')
			if eq < 0 {
				continue
			}
			if strings.TrimLeft(part[:eq], " ") != name {
				continue
			}
			v := part[eq+1:]
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v
		}
	}
	return ""
}
