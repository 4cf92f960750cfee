package oauth2

import (
	"strings"

	"github.com/legateproxy/legate/internal/headers"
)

// cookie is one request cookie.
type cookie struct{ name, value string }

// cookieJar is a request's cookies in order, each name once (the first
// wins, as Envoy's Http::Utility::parseCookies keeps it).
type cookieJar []cookie

// parseCookies reads every Cookie header: pairs split on ';', surrounding
// spaces trimmed, a value's surrounding double quotes removed.
func parseCookies(h *headers.Request) cookieJar {
	var jar cookieJar
	for _, line := range h.Map.Values("cookie") {
		for _, part := range strings.Split(line, ";") {
			part = strings.TrimLeft(part, " ")
			k, v, ok := strings.Cut(part, "=")
			if !ok || k == "" {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			if jar.has(k) {
				continue
			}
			jar = append(jar, cookie{k, v})
		}
	}
	return jar
}

func (j cookieJar) get(name string) string {
	for _, c := range j {
		if c.name == name {
			return c.value
		}
	}
	return ""
}

func (j cookieJar) has(name string) bool {
	for _, c := range j {
		if c.name == name {
			return true
		}
	}
	return false
}

// set replaces a cookie's value or adds it.
func (j *cookieJar) set(name, value string) {
	for i := range *j {
		if (*j)[i].name == name {
			(*j)[i].value = value
			return
		}
	}
	*j = append(*j, cookie{name, value})
}

// drop removes the cookies del says to.
func (j *cookieJar) drop(del func(name string) bool) {
	out := (*j)[:0]
	for _, c := range *j {
		if !del(c.name) {
			out = append(out, c)
		}
	}
	*j = out
}

// write replaces the request's Cookie headers with one holding the jar,
// as Envoy does after changing cookies (an empty jar leaves an empty
// Cookie header, as Envoy's setReferenceKey of the joined string).
func (j cookieJar) write(h *headers.Request) {
	var b strings.Builder
	for i, c := range j {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(c.name)
		b.WriteByte('=')
		b.WriteString(c.value)
	}
	h.Map.Set("cookie", b.String())
}

// withSuffix is "<base>.<flow id>", the per-flow name of the nonce and
// code verifier cookies.
func withSuffix(base, flowID string) string { return base + "." + flowID }

// matchesBase says whether a cookie is base or base.<suffix>.
func matchesBase(name, base string) bool {
	return name == base || len(name) > len(base)+1 && strings.HasPrefix(name, base+".")
}

// flowCookie reads base.<flow id>, falling back to the unsuffixed name
// that releases before per-flow cookies wrote.
func flowCookie(jar cookieJar, base, flowID string) (string, bool) {
	if v := jar.get(withSuffix(base, flowID)); v != "" {
		return v, true
	}
	if v := jar.get(base); v != "" {
		return v, true
	}
	return "", false
}

// deleteCookie is Envoy's Set-Cookie that expires a cookie; names with
// the __Secure- or __Host- prefix need the Secure attribute for a browser
// to accept the deletion.
func deleteCookie(name, path, domainAttr string) string {
	s := name + "=deleted; path=" + path + "; expires=Thu, 01 Jan 1970 00:00:00 GMT" + domainAttr
	if strings.HasPrefix(name, "__Secure-") || strings.HasPrefix(name, "__Host-") {
		s += "; Secure"
	}
	return s
}
