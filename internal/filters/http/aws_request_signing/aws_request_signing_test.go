package aws_request_signing_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/smithy-go/logging"

	"github.com/legateproxy/legate/internal/testutil"
)

// The backends of these tests check each request's signature the way an
// AWS service would, independently of Legate: they rebuild the request
// from the headers its Authorization header says are signed and sign it
// again with the AWS SDK for Go v2's SigV4 signer (for SigV4A, the SDK's
// canonical request and an ECDSA verification with the key derived from
// the secret by the test's own derivation), then compare.

// sdkIgnored are the headers the SDK's signer never signs: a signature
// over them cannot be checked with it.
var sdkIgnored = map[string]bool{"authorization": true, "user-agent": true, "x-amzn-trace-id": true, "expect": true, "transfer-encoding": true}

// signing is what a verifying backend expects.
type signing struct {
	creds   awssdk.Credentials
	service string
	region  string // the region, or the region set for SigV4A
	s3      bool   // the path is not encoded again
	v4a     bool
}

// seen is one request as the backend saw it.
type seen struct {
	host, uri, auth, contentSha, token, regionSet string
	signedHeaders                                 []string
	body                                          string
	err                                           error
}

type verifier struct {
	want signing
	mu   sync.Mutex
	reqs []seen
	// fail503 answers that many signed requests with 503 (to be retried).
	fail503 int
}

func (v *verifier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s := seen{host: r.Host, uri: r.RequestURI, auth: r.Header.Get("Authorization"), contentSha: r.Header.Get("X-Amz-Content-Sha256"),
		token: r.Header.Get("X-Amz-Security-Token"), regionSet: r.Header.Get("X-Amz-Region-Set"), body: string(body)}
	if strings.Contains(r.URL.RawQuery, "X-Amz-Signature=") {
		s.err = verifyQuery(r, body, v.want)
	} else {
		s.signedHeaders, s.err = verifyHeader(r, body, v.want)
	}
	v.mu.Lock()
	v.reqs = append(v.reqs, s)
	fail := s.err == nil && v.fail503 > 0
	if fail {
		v.fail503--
	}
	v.mu.Unlock()
	if s.err != nil {
		http.Error(w, s.err.Error(), http.StatusForbidden)
		return
	}
	if fail {
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("signature ok"))
}

func (v *verifier) count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.reqs)
}

func (v *verifier) last(t *testing.T) seen {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.reqs) == 0 {
		t.Fatal("the backend got no request")
	}
	return v.reqs[len(v.reqs)-1]
}

// parseAuthorization splits "ALGO Credential=..., SignedHeaders=..., Signature=...".
func parseAuthorization(a string) (algo, credential string, signed []string, sig string, err error) {
	algo, rest, ok := strings.Cut(a, " ")
	if !ok {
		return "", "", nil, "", fmt.Errorf("authorization %q", a)
	}
	for _, f := range strings.Split(rest, ", ") {
		k, val, _ := strings.Cut(f, "=")
		switch k {
		case "Credential":
			credential = val
		case "SignedHeaders":
			signed = strings.Split(val, ";")
		case "Signature":
			sig = val
		}
	}
	if credential == "" || signed == nil || sig == "" {
		return "", "", nil, "", fmt.Errorf("authorization %q", a)
	}
	return algo, credential, signed, sig, nil
}

// rebuild is the request the SDK signs again: method, URI, host and only
// the signed headers (the SDK adds x-amz-date, x-amz-security-token and
// content-length itself).
func rebuild(r *http.Request, signed []string) (*http.Request, error) {
	req, err := http.NewRequest(r.Method, "http://"+r.Host+r.RequestURI, nil)
	if err != nil {
		return nil, err
	}
	req.Host = r.Host
	for _, n := range signed {
		switch {
		case sdkIgnored[n]:
			return nil, fmt.Errorf("header %s is signed: the SDK cannot check that", n)
		case n == "host", n == "x-amz-security-token":
		case n == "content-length":
			req.ContentLength = r.ContentLength
		default:
			vs := r.Header.Values(n)
			if len(vs) == 0 {
				return nil, fmt.Errorf("signed header %s did not reach the backend", n)
			}
			req.Header[http.CanonicalHeaderKey(n)] = vs
		}
	}
	return req, nil
}

func checkPayload(hash string, body []byte) error {
	if hash == "UNSIGNED-PAYLOAD" {
		return nil
	}
	if h := sha256.Sum256(body); hash != hex.EncodeToString(h[:]) {
		return fmt.Errorf("x-amz-content-sha256 %s is not the SHA-256 of the body (%d bytes)", hash, len(body))
	}
	return nil
}

// capture keeps the canonical string the SDK logs.
type capture struct{ canonical string }

func (c *capture) Logf(_ logging.Classification, _ string, v ...any) { c.canonical = fmt.Sprint(v[0]) }

func verifyHeader(r *http.Request, body []byte, want signing) ([]string, error) {
	algo, credential, signed, sig, err := parseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return nil, err
	}
	at, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return signed, fmt.Errorf("x-amz-date: %v", err)
	}
	if d := time.Since(at); d < -time.Minute || d > time.Minute {
		return signed, fmt.Errorf("x-amz-date %s is not now", at)
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if err := checkPayload(payload, body); err != nil {
		return signed, err
	}
	if want.creds.SessionToken != "" && r.Header.Get("X-Amz-Security-Token") != want.creds.SessionToken {
		return signed, fmt.Errorf("x-amz-security-token %q", r.Header.Get("X-Amz-Security-Token"))
	}
	req, err := rebuild(r, signed)
	if err != nil {
		return signed, err
	}
	c := &capture{}
	opts := func(o *v4.SignerOptions) {
		o.DisableURIPathEscaping = want.s3
		o.LogSigning, o.Logger = true, c
	}
	if err := v4.NewSigner().SignHTTP(context.Background(), want.creds, req, payload, want.service, want.region, at, opts); err != nil {
		return signed, err
	}
	if want.v4a {
		if algo != "AWS4-ECDSA-P256-SHA256" {
			return signed, fmt.Errorf("algorithm %s", algo)
		}
		scope := at.Format("20060102") + "/" + want.service + "/aws4_request"
		if credential != want.creds.AccessKeyID+"/"+scope {
			return signed, fmt.Errorf("credential %s", credential)
		}
		if got := r.Header.Get("X-Amz-Region-Set"); got != want.region {
			return signed, fmt.Errorf("x-amz-region-set %q", got)
		}
		ch := sha256.Sum256([]byte(c.canonical))
		sts := "AWS4-ECDSA-P256-SHA256\n" + at.Format("20060102T150405Z") + "\n" + scope + "\n" + hex.EncodeToString(ch[:])
		der, err := hex.DecodeString(sig)
		if err != nil {
			return signed, err
		}
		h := sha256.Sum256([]byte(sts))
		if !ecdsa.VerifyASN1(v4aPublicKey(want.creds), h[:], der) {
			return signed, fmt.Errorf("SigV4A signature does not verify; canonical request:\n%s", c.canonical)
		}
		return signed, nil
	}
	if got, wantAuth := r.Header.Get("Authorization"), req.Header.Get("Authorization"); got != wantAuth {
		return signed, fmt.Errorf("authorization\n%s\nthe SDK computes\n%s\nits canonical request:\n%s", got, wantAuth, c.canonical)
	}
	return signed, nil
}

// verifyQuery checks a presigned request with the SDK's PresignHTTP.
func verifyQuery(r *http.Request, body []byte, want signing) error {
	q := r.URL.Query()
	sig := q.Get("X-Amz-Signature")
	at, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
	if err != nil {
		return fmt.Errorf("X-Amz-Date: %v", err)
	}
	if r.Header.Get("Authorization") != "" || r.Header.Get("X-Amz-Date") != "" {
		return fmt.Errorf("a presigned request with signing headers")
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if payload == "" {
		h := sha256.Sum256(body)
		payload = hex.EncodeToString(h[:])
	} else if err := checkPayload(payload, body); err != nil {
		return err
	}
	req, err := rebuild(r, strings.Split(q.Get("X-Amz-SignedHeaders"), ";"))
	if err != nil {
		return err
	}
	q.Del("X-Amz-Signature")
	req.URL.RawQuery = q.Encode()
	u, _, err := v4.NewSigner().PresignHTTP(context.Background(), want.creds, req, payload, want.service, want.region, at,
		func(o *v4.SignerOptions) { o.DisableURIPathEscaping, o.DisableHeaderHoisting = want.s3, true })
	if err != nil {
		return err
	}
	pu, _ := url.Parse(u)
	if got := pu.Query().Get("X-Amz-Signature"); got != sig {
		return fmt.Errorf("X-Amz-Signature %s, the SDK computes %s (%s)", sig, got, u)
	}
	return nil
}

// v4aPublicKey derives the SigV4A public key of an access key pair as
// AWS specifies it (NIST SP 800-108 counter-mode HMAC-SHA256 KDF over
// "AWS4A"+secret; the candidate c must be at most n-2; the key is c+1).
func v4aPublicKey(c awssdk.Credentials) *ecdsa.PublicKey {
	curve := elliptic.P256()
	nMinus2 := new(big.Int).Sub(curve.Params().N, big.NewInt(2))
	for counter := byte(1); counter < 255; counter++ {
		mac := hmac.New(sha256.New, []byte("AWS4A"+c.SecretAccessKey))
		fmt.Fprintf(mac, "\x00\x00\x00\x01AWS4-ECDSA-P256-SHA256\x00%s%c\x00\x00\x01\x00", c.AccessKeyID, counter)
		k := new(big.Int).SetBytes(mac.Sum(nil))
		if k.Cmp(nMinus2) <= 0 {
			k.Add(k, big.NewInt(1))
			x, y := curve.ScalarBaseMult(k.FillBytes(make([]byte, 32)))
			return &ecdsa.PublicKey{Curve: curve, X: x, Y: y}
		}
	}
	panic("no key")
}

var inline = awssdk.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", SessionToken: "IQoJb3JpZ2lu/token+with=special"}

const head = `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: main
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    per_connection_buffer_limit_bytes: 4096
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
`

const cluster = `
  clusters:
  - name: backend
    type: STATIC
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: {{.Host}}, port_value: {{.Port}}}}}}]}]}
`

// downstream is a connection manager with the filter (config indented for
// typed_config) and routes.
func downstream(filterCfg, routes string) string {
	return head + `
          http_filters:
          - name: envoy.filters.http.aws_request_signing
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning
` + indent(filterCfg, 14) + `
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
` + indent(routes, 14) + cluster
}

func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "\n")
}

func start(t *testing.T, cfg string, want signing) (*verifier, *testutil.Proxy) {
	t.Helper()
	v := &verifier{want: want}
	u := testutil.StartUpstream(t, v)
	h, p := u.Host()
	return v, testutil.StartProxy(t, cfg, map[string]string{"Host": h, "Port": p})
}

// send makes a request without User-Agent (which Envoy would sign and the
// SDK cannot check) and returns the status and body.
func send(t *testing.T, method, url string, body io.Reader, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", "")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := testutil.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// chunks is a body without content-length, sent in pieces.
type chunks struct{ parts []string }

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.parts) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.parts[0])
	c.parts[0] = c.parts[0][n:]
	if c.parts[0] == "" {
		c.parts = c.parts[1:]
	}
	return n, nil
}

const inlineCreds = `
credential_provider:
  inline_credential: {access_key_id: AKIDEXAMPLE, secret_access_key: wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, session_token: "IQoJb3JpZ2lu/token+with=special"}
`

// TestDownstreamPayloadSigning: with use_unsigned_payload false (the
// default) the filter holds the request until its body is complete and
// signs its SHA-256; a request without a body is signed at once with the
// hash of the empty string. The backend recomputes each signature with
// the AWS SDK.
func TestDownstreamPayloadSigning(t *testing.T) {
	v, p := start(t, downstream(`
service_name: vpc-lattice-svcs
region: us-west-2
match_excluded_headers: [{prefix: x-envoy}]
`+inlineCreds, `
- match: {prefix: /}
  route: {cluster: backend}
`), signing{creds: inline, service: "vpc-lattice-svcs", region: "us-west-2"})

	// A body with content-length, a path that is encoded again (non-S3)
	// and a query that is sorted and encoded.
	code, body := send(t, "POST", p.URL("main", "/path/a%20b:c/?b=2&a=1&sp=x+y&enc=%2B&utf=%E1%88%B4"), strings.NewReader("hello signed body"),
		"x-custom", "  several   spaces  ", "x-envoy-ignored", "1", "content-type", "text/plain")
	if code != 200 {
		t.Fatalf("POST: %d %s", code, body)
	}
	got := v.last(t)
	if got.body != "hello signed body" || got.contentSha == "UNSIGNED-PAYLOAD" {
		t.Errorf("backend saw %+v", got)
	}
	for _, n := range got.signedHeaders {
		if strings.HasPrefix(n, "x-envoy") || n == "x-forwarded-proto" || n == "x-forwarded-for" {
			t.Errorf("%s is signed: %v", n, got.signedHeaders)
		}
	}
	if !strings.Contains(strings.Join(got.signedHeaders, ";"), "content-length;content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token;x-custom") {
		t.Errorf("signed headers %v", got.signedHeaders)
	}

	// A chunked body, whole before it is signed.
	code, body = send(t, "PUT", p.URL("main", "/chunked"), &chunks{[]string{"first ", "second ", "third"}})
	if code != 200 {
		t.Fatalf("chunked PUT: %d %s", code, body)
	}
	if got := v.last(t); got.body != "first second third" {
		t.Errorf("backend saw body %q", got.body)
	}

	// No body: the empty payload. The client's own Authorization is
	// replaced.
	code, body = send(t, "GET", p.URL("main", "/get?x=1"), nil, "authorization", "Basic dXNlcjpwYXNz")
	if code != 200 {
		t.Fatalf("GET: %d %s", code, body)
	}
	if got := v.last(t); got.contentSha != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("x-amz-content-sha256 %q", got.contentSha)
	}

	// Over HTTP/2 (h2c): the authority is the host.
	req, _ := http.NewRequest("POST", p.URL("main", "/h2?k=v"), strings.NewReader("h2 body"))
	req.Header.Set("User-Agent", "")
	resp, err := testutil.H2CClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("HTTP/2 POST: %s %d %s", resp.Proto, resp.StatusCode, b)
	}

	// A body over the buffer limit is 413 and never reaches the backend.
	n := v.count()
	code, _ = send(t, "POST", p.URL("main", "/big"), strings.NewReader(strings.Repeat("x", 5000)))
	if code != 413 || v.count() != n {
		t.Errorf("body over the buffer limit: %d, backend requests %d, want 413 and %d", code, v.count(), n)
	}

	for name, want := range map[string]int64{
		"http.main.aws_request_signing.signing_added":          4,
		"http.main.aws_request_signing.payload_signing_added":  3,
		"http.main.aws_request_signing.signing_failed":         0,
		"http.main.aws_request_signing.payload_signing_failed": 0,
	} {
		if got := p.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

// TestPerRouteUnsignedPayload: a per-route AwsRequestSigningPerRoute
// replaces the whole config (here S3, UNSIGNED-PAYLOAD, host_rewrite) and
// counts under its stat_prefix; with an unsigned payload the body is not
// held back.
func TestPerRouteUnsignedPayload(t *testing.T) {
	v, p := start(t, downstream(`
service_name: vpc-lattice-svcs
region: us-west-2
`+inlineCreds, `
- match: {prefix: /bucket}
  route: {cluster: backend}
  typed_per_filter_config:
    envoy.filters.http.aws_request_signing:
      "@type": type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigningPerRoute
      stat_prefix: s3_route.
      aws_request_signing:
        service_name: s3
        region: eu-central-1
        use_unsigned_payload: true
        host_rewrite: examplebucket.s3.eu-central-1.amazonaws.com
        credential_provider:
          inline_credential: {access_key_id: AKIDEXAMPLE, secret_access_key: wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, session_token: "IQoJb3JpZ2lu/token+with=special"}
- match: {prefix: /}
  route: {cluster: backend}
`), signing{creds: inline, service: "s3", region: "eu-central-1", s3: true})

	code, body := send(t, "PUT", p.URL("main", "/bucket/key%20with%20space//x"), strings.NewReader("object data"))
	if code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	got := v.last(t)
	if got.host != "examplebucket.s3.eu-central-1.amazonaws.com" || got.contentSha != "UNSIGNED-PAYLOAD" || got.body != "object data" {
		t.Errorf("backend saw %+v", got)
	}
	if got := p.Stat(t, "s3_route.aws_request_signing.signing_added"); got != 1 {
		t.Errorf("s3_route.aws_request_signing.signing_added = %d", got)
	}
	if got := p.Stat(t, "s3_route.aws_request_signing.payload_signing_added"); got != 0 {
		t.Errorf("s3_route.aws_request_signing.payload_signing_added = %d", got)
	}
	if got := p.Stat(t, "http.main.aws_request_signing.signing_added"); got != 0 {
		t.Errorf("the filter's own stats counted a per-route signing: %d", got)
	}
}

// TestEnvironmentCredentials: with no credential_provider the credentials
// come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN
// and the region from AWS_REGION; without them, from the credentials
// file's profile.
func TestEnvironmentCredentials(t *testing.T) {
	for _, v := range []string{"AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"} {
		t.Setenv(v, "")
	}
	t.Setenv("HOME", t.TempDir())
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_REGION", "ap-southeast-2")
	env := awssdk.Credentials{AccessKeyID: "ENVAKID", SecretAccessKey: "env/secret+key", SessionToken: "envtoken"}
	t.Setenv("AWS_ACCESS_KEY_ID", env.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", env.SecretAccessKey)
	t.Setenv("AWS_SESSION_TOKEN", env.SessionToken)
	v, p := start(t, downstream(`service_name: execute-api`, `
- match: {prefix: /}
  route: {cluster: backend}
`), signing{creds: env, service: "execute-api", region: "ap-southeast-2"})
	if code, body := send(t, "POST", p.URL("main", "/prod/items"), strings.NewReader(`{"a":1}`)); code != 200 {
		t.Fatalf("environment credentials: %d %s", code, body)
	}
	if got := v.last(t); got.token != "envtoken" {
		t.Errorf("x-amz-security-token %q", got.token)
	}

	// The credentials file, its profile named in the config; the region
	// from the profile.
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_REGION", "")
	file := filepath.Join(t.TempDir(), "credentials")
	os.WriteFile(file, []byte("[default]\naws_access_key_id = DEFAULTAKID\naws_secret_access_key = x\n\n[prod]\naws_access_key_id = FILEAKID\naws_secret_access_key = file/secret\nregion = sa-east-1\n"), 0o600)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", file)
	fileCreds := awssdk.Credentials{AccessKeyID: "FILEAKID", SecretAccessKey: "file/secret"}
	v, p = start(t, downstream(`
service_name: es
credential_provider:
  credentials_file_provider: {profile: prod}
`, `
- match: {prefix: /}
  route: {cluster: backend}
`), signing{creds: fileCreds, service: "es", region: "sa-east-1"})
	if code, body := send(t, "GET", p.URL("main", "/_search?q=x"), nil); code != 200 {
		t.Fatalf("credentials file: %d %s", code, body)
	}
	if got := v.last(t); got.token != "" || !strings.HasPrefix(got.auth, "AWS4-HMAC-SHA256 Credential=FILEAKID/") {
		t.Errorf("backend saw %+v", got)
	}

	// No credentials anywhere: the request goes on unsigned (Envoy's
	// anonymous case) and still counts as signing_added.
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "absent"))
	v, p = start(t, downstream("service_name: es\nregion: us-east-1", `
- match: {prefix: /}
  route: {cluster: backend}
`), signing{creds: fileCreds, service: "es", region: "us-east-1"})
	if code, _ := send(t, "GET", p.URL("main", "/"), nil); code != 403 {
		t.Errorf("anonymous request: %d, want the backend's 403", code)
	}
	if got := v.last(t); got.auth != "" || got.contentSha == "" {
		t.Errorf("anonymous request: backend saw %+v", got)
	}
	if got := p.Stat(t, "http.main.aws_request_signing.signing_added"); got != 1 {
		t.Errorf("signing_added = %d", got)
	}
}

// TestUpstreamFilter: in a cluster's upstream filter chain the filter
// signs the upstream request as the router sends it — the rewritten path
// and host are what is signed — over HTTP/1.1 and HTTP/2, and signs every
// retry anew.
func TestUpstreamFilter(t *testing.T) {
	for _, proto := range []string{"http_protocol_options", "http2_protocol_options"} {
		t.Run(proto, func(t *testing.T) {
			v, p := start(t, head+`
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /old}
                route: {cluster: backend, prefix_rewrite: /new, host_rewrite_literal: lattice.example.com,
                  retry_policy: {retry_on: 5xx, num_retries: 1}}
`+cluster+`
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {`+proto+`: {}}
        http_filters:
        - name: envoy.filters.http.aws_request_signing
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning
            service_name: vpc-lattice-svcs
            region: us-east-1
            match_excluded_headers: [{prefix: x-envoy-attempt}]
            credential_provider:
              inline_credential: {access_key_id: AKIDEXAMPLE, secret_access_key: wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, session_token: "IQoJb3JpZ2lu/token+with=special"}
        - name: envoy.filters.http.upstream_codec
          typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec}
`, signing{creds: inline, service: "vpc-lattice-svcs", region: "us-east-1"})
			code, body := send(t, "POST", p.URL("main", "/old/thing?z=1"), strings.NewReader("upstream body"))
			if code != 200 {
				t.Fatalf("POST: %d %s", code, body)
			}
			got := v.last(t)
			if got.uri != "/new/thing?z=1" || got.host != "lattice.example.com" || got.body != "upstream body" {
				t.Errorf("backend saw %+v", got)
			}
			// Headers the router added are the upstream request's, signed.
			if !strings.Contains(strings.Join(got.signedHeaders, ";"), "x-envoy-original-path") {
				t.Errorf("signed headers %v", got.signedHeaders)
			}
			// A chunked body, and a retry: the second attempt is signed
			// again (and verified).
			v.mu.Lock()
			v.fail503 = 1
			v.mu.Unlock()
			code, body = send(t, "PUT", p.URL("main", "/old/chunked"), &chunks{[]string{"one ", "two"}})
			if code != 200 {
				t.Fatalf("retried PUT: %d %s", code, body)
			}
			if got, n := v.last(t), v.count(); n != 3 || got.body != "one two" || got.err != nil {
				t.Errorf("backend saw %d requests, the last %+v", n, got)
			}
			code, body = send(t, "GET", p.URL("main", "/old/get"), nil)
			if code != 200 {
				t.Fatalf("GET: %d %s", code, body)
			}
			for name, want := range map[string]int64{
				"cluster.backend.aws_request_signing.signing_added":         4,
				"cluster.backend.aws_request_signing.payload_signing_added": 3,
			} {
				if got := p.Stat(t, name); got != want {
					t.Errorf("%s = %d, want %d", name, got, want)
				}
			}
		})
	}
}

// TestSigV4A: AWS_SIGV4A signs with the ECDSA key derived from the secret,
// for a region set carried in x-amz-region-set.
func TestSigV4A(t *testing.T) {
	v, p := start(t, downstream(`
service_name: vpc-lattice-svcs
region: "us-east-1,us-west-*"
signing_algorithm: AWS_SIGV4A
`+inlineCreds, `
- match: {prefix: /}
  route: {cluster: backend}
`), signing{creds: inline, service: "vpc-lattice-svcs", region: "us-east-1,us-west-*", v4a: true})
	if code, body := send(t, "POST", p.URL("main", "/v4a/path?q=1"), strings.NewReader("sigv4a body")); code != 200 {
		t.Fatalf("POST: %d %s", code, body)
	}
	if code, body := send(t, "GET", p.URL("main", "/v4a"), nil); code != 200 {
		t.Fatalf("GET: %d %s", code, body)
	}
	if got := v.last(t); got.regionSet != "us-east-1,us-west-*" {
		t.Errorf("x-amz-region-set %q", got.regionSet)
	}
}

// TestQueryString: query_string presigns the request: the X-Amz-*
// parameters and X-Amz-Signature are in the query, valid expiration_time.
func TestQueryString(t *testing.T) {
	v, p := start(t, downstream(`
service_name: s3
region: us-east-1
query_string: {expiration_time: 60s}
`+inlineCreds, `
- match: {prefix: /}
  route: {cluster: backend}
`), signing{creds: inline, service: "s3", region: "us-east-1", s3: true})
	if code, body := send(t, "GET", p.URL("main", "/bucket/object.txt?versionId=3"), nil); code != 200 {
		t.Fatalf("GET: %d %s", code, body)
	}
	got := v.last(t)
	if !strings.Contains(got.uri, "X-Amz-Expires=60&") || !strings.Contains(got.uri, "versionId=3") || got.auth != "" {
		t.Errorf("backend saw %+v", got)
	}
	if code, body := send(t, "PUT", p.URL("main", "/bucket/upload"), strings.NewReader("presigned body")); code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
}

// TestConfigErrors: what is not implemented or invalid is refused at its
// path.
func TestConfigErrors(t *testing.T) {
	for _, v := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SIGV4A_SIGNING_REGION_SET", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"} {
		t.Setenv(v, "")
	}
	t.Setenv("HOME", t.TempDir())
	const at = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config."
	for _, tc := range []struct{ name, cfg, want string }{
		{"no region", "service_name: s3", at + "region"},
		{"region set with SigV4", "service_name: s3\nregion: 'us-east-*'", at + "region"},
		{"instance profile", "service_name: s3\nregion: us-east-1\ncredential_provider: {instance_profile_credential_provider: {}}", at + "credential_provider.instance_profile_credential_provider"},
		{"web identity", "service_name: s3\nregion: us-east-1\ncredential_provider: {assume_role_with_web_identity_provider: {role_arn: arn, web_identity_token_data_source: {inline_string: t}}}",
			at + "credential_provider.assume_role_with_web_identity_provider"},
		{"container", "service_name: s3\nregion: us-east-1\ncredential_provider: {container_credential_provider: {}}", at + "credential_provider.container_credential_provider"},
		{"assume role", "service_name: s3\nregion: us-east-1\ncredential_provider: {assume_role_credential_provider: {role_arn: arn}}", at + "credential_provider.assume_role_credential_provider"},
		{"iam roles anywhere", "service_name: s3\nregion: us-east-1\ncredential_provider: {iam_roles_anywhere_credential_provider: {role_arn: r, certificate: {filename: /c}, private_key: {filename: /k}, trust_anchor_arn: t, profile_arn: p}}",
			at + "credential_provider.iam_roles_anywhere_credential_provider"},
		{"expiration over an hour", "service_name: s3\nregion: us-east-1\nquery_string: {expiration_time: 4000s}", "query_string.expiration_time"},
		{"bad header regex", "service_name: s3\nregion: us-east-1\nmatch_excluded_headers: [{safe_regex: {regex: '('}}]", at + "match_excluded_headers[0].safe_regex.regex"},
		{"no service", "region: us-east-1", "service_name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testutil.TryStartProxy(t, downstream(tc.cfg, `
- match: {prefix: /}
  route: {cluster: backend}
`), map[string]string{"Host": "127.0.0.1", "Port": "1"})
			if err == nil {
				t.Fatal("config accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s", err, tc.want)
			}
		})
	}
	// A per-route config is checked with the route table.
	_, err := testutil.TryStartProxy(t, downstream("service_name: s3\nregion: us-east-1", `
- match: {prefix: /}
  route: {cluster: backend}
  typed_per_filter_config:
    envoy.filters.http.aws_request_signing:
      "@type": type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigningPerRoute
      stat_prefix: x
      aws_request_signing: {service_name: s3, region: "*"}
`), map[string]string{"Host": "127.0.0.1", "Port": "1"})
	if err == nil || !strings.Contains(err.Error(), `typed_per_filter_config["envoy.filters.http.aws_request_signing"].aws_request_signing.region`) {
		t.Errorf("per-route error %v", err)
	}
}
