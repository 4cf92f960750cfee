// HTTP Basic authentication: envoy.filters.http.basic_auth.

package features_test

import (
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// htpasswdSHA is an htpasswd line in Apache's {SHA} form (htpasswd -s).
func htpasswdSHA(user, password string) string {
	sum := sha1.Sum([]byte(password))
	return user + ":{SHA}" + base64.StdEncoding.EncodeToString(sum[:])
}

func basicCreds(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// TestBasicAuth: envoy.filters.http.basic_auth — credentials read from a
// configured header (x-auth, not Authorization) are checked against
// {SHA} htpasswd users; a request without them, with another scheme, with
// a token that is not user:password, or with a wrong password is answered
// 401 with Envoy's body and details and `www-authenticate: Basic
// realm="<scheme>://<host><path>"`, without reaching the upstream; a good
// one passes with the user's name in x-user; a route's users replace the
// filter's and a route's realm the default one; basic_auth.allowed and
// .denied count.
func TestBasicAuth(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	logPath := filepath.Join(t.TempDir(), "a.log")
	users := strings.Join([]string{"# users", htpasswdSHA("alice", "wonderland"), "", htpasswdSHA("bob", "builder")}, "\n") + "\n"
	const perRoute = `"@type": type.googleapis.com/envoy.extensions.filters.http.basic_auth.v3.BasicAuthPerRoute`
	p := start(t, cfg{
		hcm: `access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `, log_format: {text_format: "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n"}}}]
		  http_filters: [{name: envoy.filters.http.basic_auth, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.basic_auth.v3.BasicAuth,
		    users: {inline_string: ` + fmt.Sprintf("%q", users) + `}, authentication_header: X-Auth, forward_username_header: x-user}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts: vhost(
			`{match: {prefix: /staff}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.basic_auth: {`+perRoute+`, users: {inline_string: `+fmt.Sprintf("%q", htpasswdSHA("carol", "c4r0l"))+`}, realm: staff}}}`,
			"{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()
	host := p.Addr("http")
	for _, tc := range []struct {
		path, auth, body, realm string
	}{
		{"/a", "", "User authentication failed. Missing username and password.", "http://" + host + "/a"},
		{"/b", "Bearer xyz", "User authentication failed. Expected 'Basic' authentication scheme.", "http://" + host + "/b"},
		{"/c", "Basic " + base64.StdEncoding.EncodeToString([]byte("no-colon")), "User authentication failed. Invalid basic credential format.", "http://" + host + "/c"},
		{"/d?x=1", basicCreds("alice", "wrong"), "User authentication failed. Invalid username/password combination.", "http://" + host + "/d?x=1"},
		{"/e", basicCreds("nobody", "wonderland"), "User authentication failed. Invalid username/password combination.", "http://" + host + "/e"},
		// The route's users replace the filter's.
		{"/staff/x", basicCreds("alice", "wonderland"), "User authentication failed. Invalid username/password combination.", "staff"},
	} {
		var hdr []string
		if tc.auth != "" {
			hdr = []string{"x-auth", tc.auth}
		}
		code, h, body := testutil.Do(t, c, "GET", p.URL("http", tc.path), "", hdr...)
		if code != 401 || body != tc.body {
			t.Errorf("%s %q: %d %q, want 401 %q", tc.path, tc.auth, code, body, tc.body)
		}
		if got, want := h.Get("www-authenticate"), `Basic realm="`+tc.realm+`"`; got != want {
			t.Errorf("%s: www-authenticate %q, want %q", tc.path, got, want)
		}
	}
	// Credentials in Authorization are not looked at when another header is configured.
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/f"), "authorization", basicCreds("alice", "wonderland")); code != 401 {
		t.Errorf("credentials in authorization: %d, want 401", code)
	}
	if up.Hits() != 0 {
		t.Fatalf("%d refused requests reached the upstream", up.Hits())
	}

	for _, tc := range []struct{ path, user, password string }{
		{"/ok", "alice", "wonderland"},
		{"/ok2", "bob", "builder"},
		{"/staff/y", "carol", "c4r0l"},
	} {
		// Padding may be left out, as Envoy's decodeWithoutPadding.
		code, _, body := testutil.Get(t, c, p.URL("http", tc.path), "x-auth", strings.TrimRight(basicCreds(tc.user, tc.password), "="))
		if code != 200 || !strings.Contains(body, "header:x-user="+tc.user+"\n") {
			t.Errorf("%s as %s: %d, want 200 with x-user:\n%s", tc.path, tc.user, code, body)
		}
	}
	if got := p.Stat(t, "http.ingress.basic_auth.allowed"); got != 3 {
		t.Errorf("basic_auth.allowed = %d, want 3", got)
	}
	if got := p.Stat(t, "http.ingress.basic_auth.denied"); got != 7 {
		t.Errorf("basic_auth.denied = %d, want 7", got)
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "/a 401 no_credential_for_basic_auth\n") &&
			strings.Contains(string(b), "/b 401 invalid_scheme_for_basic_auth\n") &&
			strings.Contains(string(b), "/c 401 invalid_format_for_basic_auth\n") &&
			strings.Contains(string(b), "/e 401 invalid_credential_for_basic_auth\n")
	}, "access log lacks the basic_auth details")
}

// TestBasicAuthConfigErrors: an htpasswd list Envoy refuses is a config
// error naming the users field, and so are the fields Legate lacks.
func TestBasicAuthConfigErrors(t *testing.T) {
	for _, tc := range []struct{ users, extra, want string }{
		{"alice", "", "username:password is expected"},
		{"alice:$apr1$abc$def", "", "please use {SHA}"},
		{"alice:{SHA}short", "", "invalid SHA hash length"},
		{htpasswdSHA("alice", "a") + "\n" + htpasswdSHA("alice", "b"), "", "duplicate user"},
		{":{SHA}xxxxxxxxxxxxxxxxxxxxxxxxxxxx", "", "empty user name or password"},
		{"", "", "DataSource cannot be empty"},
		{htpasswdSHA("alice", "a"), ", allow_missing: true, emit_dynamic_metadata: true", "not supported"},
	} {
		_, err := testutil.TryStartProxy(t, cfg{
			hcm: `http_filters: [{name: envoy.filters.http.basic_auth, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.basic_auth.v3.BasicAuth,
			    users: {inline_string: ` + fmt.Sprintf("%q", tc.users) + `}` + tc.extra + `}},
			  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
			vhosts:   vhost("{match: {prefix: /}, direct_response: {status: 200}}"),
			clusters: "[]",
		}.String(), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "users") && tc.extra == "" {
			t.Errorf("users %q%s: %v, want an error with %q", tc.users, tc.extra, err, tc.want)
		}
	}
}
