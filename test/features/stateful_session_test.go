package features_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/legateproxy/legate/internal/testutil"
)

// sessionCookie is the value Envoy's cookie session state writes: the
// base64 of an envoy.Cookie message (address = 1, expires = 2).
func sessionCookie(addr string) string {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, addr)
	return base64.StdEncoding.EncodeToString(b)
}

// cookieAddress decodes a session cookie value back to its address.
func cookieAddress(t *testing.T, v string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(strings.Trim(v, `"`))
	if err != nil {
		t.Fatalf("session cookie %q: %v", v, err)
	}
	num, typ, n := protowire.ConsumeTag(raw)
	if n < 0 || num != 1 || typ != protowire.BytesType {
		t.Fatalf("session cookie %q: not an envoy.Cookie message", v)
	}
	s, m := protowire.ConsumeString(raw[n:])
	if m < 0 {
		t.Fatalf("session cookie %q: bad address", v)
	}
	return s
}

// setCookie returns the Set-Cookie of the named cookie ("" when none).
func setCookie(h http.Header, name string) string {
	for _, v := range h.Values("Set-Cookie") {
		if strings.HasPrefix(v, name+"=") {
			return v
		}
	}
	return ""
}

// Three upstreams behind a round-robin cluster with HTTP health checks;
// u2 can be made to fail them. The filter's own config is a cookie
// session (with stats); routes override it with a header session, a
// strict cookie session, or disable it.
func TestStatefulSession(t *testing.T) {
	var u2Down atomic.Bool
	names := []string{"u0", "u1", "u2"}
	var ups []*testutil.Upstream
	byAddr := map[string]string{}
	for i, n := range names {
		echo := testutil.EchoHandler(n)
		i := i
		u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" {
				if i == 2 && u2Down.Load() {
					w.WriteHeader(503)
				}
				return
			}
			echo.ServeHTTP(w, r)
		}))
		ups = append(ups, u)
		byAddr[u.Addr] = n
	}
	hc := "health_checks: [{timeout: 1s, interval: 0.05s, no_traffic_interval: 0.05s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /healthz}}]"
	cookieState := `{name: envoy.http.stateful_session.cookie, typed_config: {"@type": type.googleapis.com/envoy.extensions.http.stateful_session.cookie.v3.CookieBasedSessionState,
	  cookie: {name: session, path: /, ttl: 120s, attributes: [{name: SameSite, value: Strict}]}}}`
	p := start(t, cfg{
		hcm: `http_filters:
		- {name: envoy.filters.http.stateful_session, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession, stat_prefix: sess,
		    session_state: ` + strings.ReplaceAll(cookieState, "\n", " ") + `}}
		- {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}`,
		vhosts: vhost(
			`{match: {prefix: /header}, route: {cluster: c}, typed_per_filter_config: {envoy.filters.http.stateful_session: {"@type": type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute,
			  stateful_session: {session_state: {name: envoy.http.stateful_session.header, typed_config: {"@type": type.googleapis.com/envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState, name: x-session}}}}}}`,
			`{match: {prefix: /strict}, route: {cluster: c}, typed_per_filter_config: {envoy.filters.http.stateful_session: {"@type": type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute,
			  stateful_session: {strict: true, session_state: `+strings.ReplaceAll(cookieState, "\n", " ")+`}}}}`,
			`{match: {prefix: /nosession}, route: {cluster: c}, typed_per_filter_config: {envoy.filters.http.stateful_session: {"@type": type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute, disabled: true}}}`,
			`{match: {prefix: /}, route: {cluster: c}}`),
		clusters: "[" + staticCluster("c", hc, ups[0].Addr, ups[1].Addr, ups[2].Addr) + "]",
	})
	c := testutil.Client()

	t.Run("cookie", func(t *testing.T) {
		// No cookie: the load balancer picks and the client learns the host.
		code, h, body := testutil.Get(t, c, p.URL("http", "/app"))
		if code != 200 {
			t.Fatalf("status %d: %s", code, body)
		}
		sc := setCookie(h, "session")
		if sc == "" {
			t.Fatalf("no session Set-Cookie in %v", h)
		}
		val, attrs, _ := strings.Cut(strings.TrimPrefix(sc, "session="), ";")
		if want := " Max-Age=120; Path=/; SameSite=Strict; HttpOnly"; attrs != want {
			t.Errorf("cookie attributes %q, want %q", attrs, want)
		}
		addr := cookieAddress(t, val)
		first := byAddr[addr]
		if first == "" || upstreamOf(body) != "upstream="+first {
			t.Fatalf("cookie names %s (%s), served by %s", addr, first, upstreamOf(body))
		}
		// With the cookie every request goes to that host, and no new cookie.
		for i := 0; i < 6; i++ {
			code, h, body := testutil.Get(t, c, p.URL("http", "/app"), "cookie", "other=1; session="+val)
			if code != 200 || upstreamOf(body) != "upstream="+first {
				t.Fatalf("request %d: %d %s, want %s", i, code, upstreamOf(body), first)
			}
			if sc := setCookie(h, "session"); sc != "" {
				t.Fatalf("request %d: Set-Cookie %q for the host the client asked for", i, sc)
			}
		}
		// Each upstream can be named, in the proto form and in the old
		// plain-address form Envoy still accepts.
		for i, u := range ups {
			for _, v := range []string{sessionCookie(u.Addr), base64.StdEncoding.EncodeToString([]byte(u.Addr))} {
				for k := 0; k < 3; k++ {
					_, _, body := testutil.Get(t, c, p.URL("http", "/app"), "cookie", fmt.Sprintf(`session="%s"`, v))
					if upstreamOf(body) != "upstream="+names[i] {
						t.Fatalf("cookie for %s went to %s", names[i], upstreamOf(body))
					}
				}
			}
		}
		if n := p.Stat(t, "http.ingress.stateful_session.sess.routed"); n < 6+18 {
			t.Errorf("routed = %d, want >= 24", n)
		}
	})

	t.Run("header", func(t *testing.T) {
		code, h, body := testutil.Get(t, c, p.URL("http", "/header"))
		if code != 200 {
			t.Fatalf("status %d", code)
		}
		enc := h.Get("x-session")
		raw, err := base64.StdEncoding.DecodeString(enc)
		if err != nil || byAddr[string(raw)] == "" {
			t.Fatalf("x-session %q does not name an upstream (%v)", enc, err)
		}
		first := byAddr[string(raw)]
		if upstreamOf(body) != "upstream="+first {
			t.Fatalf("header names %s, served by %s", first, upstreamOf(body))
		}
		if sc := setCookie(h, "session"); sc != "" {
			t.Errorf("the route's header session also set a cookie: %q", sc)
		}
		for i := 0; i < 6; i++ {
			code, h, body := testutil.Get(t, c, p.URL("http", "/header"), "x-session", enc)
			if code != 200 || upstreamOf(body) != "upstream="+first {
				t.Fatalf("request %d: %d %s, want %s", i, code, upstreamOf(body), first)
			}
			if h.Get("x-session") != "" {
				t.Fatalf("request %d: x-session answered for the host the client asked for", i)
			}
		}
	})

	t.Run("disabled per route", func(t *testing.T) {
		seen := map[string]bool{}
		for i := 0; i < 9; i++ {
			_, h, body := testutil.Get(t, c, p.URL("http", "/nosession"), "cookie", "session="+sessionCookie(ups[0].Addr))
			seen[upstreamOf(body)] = true
			if sc := setCookie(h, "session"); sc != "" {
				t.Fatalf("disabled route set %q", sc)
			}
		}
		if len(seen) < 2 {
			t.Errorf("disabled route followed the cookie: only %v", seen)
		}
	})

	t.Run("strict and fallback", func(t *testing.T) {
		gone := sessionCookie("127.0.0.1:1") // not a host of the cluster
		code, _, body := testutil.Get(t, c, p.URL("http", "/strict"), "cookie", "session="+gone)
		if code != 503 || body != "no healthy upstream" {
			t.Fatalf("strict, unknown host: %d %q, want 503 no healthy upstream", code, body)
		}
		openBefore := p.Stat(t, "http.ingress.stateful_session.sess.failed_open")
		code, h, body := testutil.Get(t, c, p.URL("http", "/app"), "cookie", "session="+gone)
		if code != 200 {
			t.Fatalf("non-strict, unknown host: %d %q", code, body)
		}
		if sc := setCookie(h, "session"); sc == "" || "upstream="+byAddr[cookieAddress(t, strings.TrimPrefix(strings.Split(sc, ";")[0], "session="))] != upstreamOf(body) {
			t.Fatalf("fallback: Set-Cookie %q does not name the host that served (%s)", sc, upstreamOf(body))
		}
		if n := p.Stat(t, "http.ingress.stateful_session.sess.failed_open"); n != openBefore+1 {
			t.Errorf("failed_open %d -> %d, want +1", openBefore, n)
		}

		// u2 fails its health checks: a strict session on it is refused,
		// a non-strict one moves to a healthy host.
		u2 := sessionCookie(ups[2].Addr)
		u2Down.Store(true)
		testutil.Eventually(t, 10*time.Second, func() bool {
			code, _, _ := testutil.Get(t, c, p.URL("http", "/strict"), "cookie", "session="+u2)
			return code == 503
		}, "strict session on an unhealthy host never answered 503")
		for i := 0; i < 4; i++ {
			code, h, body := testutil.Get(t, c, p.URL("http", "/app"), "cookie", "session="+u2)
			if code != 200 || upstreamOf(body) == "upstream=u2" {
				t.Fatalf("non-strict on unhealthy u2: %d %s", code, upstreamOf(body))
			}
			if setCookie(h, "session") == "" {
				t.Fatal("fallback host not written back to the client")
			}
		}
		u2Down.Store(false)
		testutil.Eventually(t, 10*time.Second, func() bool {
			code, _, body := testutil.Get(t, c, p.URL("http", "/strict"), "cookie", "session="+u2)
			return code == 200 && upstreamOf(body) == "upstream=u2"
		}, "strict session did not return to u2 once healthy")
	})
}

// status_on_strict_destination_not_found answers a strict session whose
// host is not in the cluster; override_host_status decides which hosts
// qualify (here only UNHEALTHY ones, so a healthy host is refused with
// 503, as it exists).
func TestStatefulSessionStrictStatus(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	filter := func(status string) string {
		return `http_filters:
		- {name: envoy.filters.http.stateful_session, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession, strict: true, status_on_strict_destination_not_found: ` + status + `,
		    session_state: {name: envoy.http.stateful_session.header, typed_config: {"@type": type.googleapis.com/envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState, name: x-session}}}}
		- {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}`
	}
	p := start(t, cfg{hcm: filter("410"), vhosts: vhost(`{match: {prefix: /}, route: {cluster: c}}`),
		clusters: "[" + staticCluster("c", "", u.Addr) + ", " +
			staticCluster("only_unhealthy", "common_lb_config: {override_host_status: {statuses: [UNHEALTHY]}}", u.Addr) + "]"})
	c := testutil.Client()
	enc := func(a string) string { return base64.StdEncoding.EncodeToString([]byte(a)) }
	if code, _, body := testutil.Get(t, c, p.URL("http", "/"), "x-session", enc("127.0.0.1:1")); code != 410 || body != "no healthy upstream" {
		t.Errorf("missing strict host: %d %q, want 410", code, body)
	}
	if code, _, body := testutil.Get(t, c, p.URL("http", "/"), "x-session", enc(u.Addr)); code != 200 || upstreamOf(body) != "upstream=u" {
		t.Errorf("present strict host: %d %q", code, body)
	}
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/"), "x-session", "!!not base64"); code != 200 {
		t.Errorf("undecodable header: %d, want 200 (no session)", code)
	}

	p2 := start(t, cfg{hcm: filter("410"), vhosts: vhost(`{match: {prefix: /}, route: {cluster: only_unhealthy}}`),
		clusters: "[" + staticCluster("only_unhealthy", "common_lb_config: {override_host_status: {statuses: [UNHEALTHY]}}", u.Addr) + "]"})
	if code, _, _ := testutil.Get(t, c, p2.URL("http", "/"), "x-session", enc(u.Addr)); code != 503 {
		t.Errorf("healthy host outside override_host_status: %d, want 503", code)
	}

	// Config errors name their path (an empty header name fails the
	// proto's validation before Envoy's own check).
	for _, bad := range []struct{ hcm, want string }{
		{strings.Replace(filter("0"), "name: x-session", "name: ''", 1), "session_state.typed_config.name"},
	} {
		_, err := testutil.TryStartProxy(t, cfg{hcm: bad.hcm, vhosts: vhost(`{match: {prefix: /}, route: {cluster: c}}`),
			clusters: "[" + staticCluster("c", "", u.Addr) + "]"}.String(), nil)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("config error %v, want %q", err, bad.want)
		}
	}
}
