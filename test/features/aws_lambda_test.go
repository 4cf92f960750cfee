// AWS Lambda: envoy.filters.http.aws_lambda in front of a loopback
// endpoint that acts as Lambda's Invoke API and checks every SigV4
// signature with the AWS SDK for Go v2's signer.

package features_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/legateproxy/legate/internal/testutil"
)

// lambdaCall is what the fake Lambda endpoint saw of one invocation.
type lambdaCall struct {
	function, invocationType, region, accessKey string
	body                                        []byte
	err                                         error // the signature check
}

// fakeLambda is Lambda's Invoke API on loopback. It checks the signature
// against the credentials of each access key and answers by function:
// "echo" returns the request document it got as the body of a Lambda JSON
// response (base64), with headers and cookies; "raw" echoes the payload
// as it is (passthrough); "fail" is a function error; "garbage" answers
// 200 with a body that is not JSON; "async" accepts an Event invocation.
type fakeLambda struct {
	mu    sync.Mutex
	calls []lambdaCall
	keys  map[string]aws.Credentials
}

func (l *fakeLambda) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c := lambdaCall{invocationType: r.Header.Get("X-Amz-Invocation-Type"), body: body}
	fn, ok := strings.CutPrefix(r.URL.Path, "/2015-03-31/functions/")
	fn, ok2 := strings.CutSuffix(fn, "/invocations")
	c.function = fn
	switch {
	case r.Method != http.MethodPost || !ok || !ok2:
		c.err = fmt.Errorf("not an Invoke call: %s %s", r.Method, r.URL.Path)
	default:
		c.region, c.accessKey, c.err = l.verify(r, body)
	}
	l.mu.Lock()
	l.calls = append(l.calls, c)
	l.mu.Unlock()
	if c.err != nil {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, c.err)
		return
	}
	switch fn {
	case "echo", "echo:v2":
		out, _ := json.Marshal(map[string]any{
			"statusCode": 201, "headers": map[string]string{"x-function": fn, "content-type": "application/x-lambda-echo"},
			"cookies": []string{"a=1", "b=2"}, "body": base64.StdEncoding.EncodeToString(body), "isBase64Encoded": true})
		w.Header().Set("Content-Type", "application/json")
		w.Write(out)
	case "raw":
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(append([]byte("raw:"), body...))
	case "fail":
		w.Header().Set("X-Amz-Function-Error", "Unhandled")
		fmt.Fprint(w, `{"errorMessage":"boom"}`)
	case "garbage":
		fmt.Fprint(w, "this is not JSON")
	case "async":
		w.WriteHeader(http.StatusAccepted)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// verify signs the request again with the SDK (method, URI, host and the
// headers the proxy signed) and compares the Authorization headers.
func (l *fakeLambda) verify(r *http.Request, body []byte) (region, key string, err error) {
	auth := r.Header.Get("Authorization")
	algo, rest, _ := strings.Cut(auth, " ")
	var credential, signed string
	for _, f := range strings.Split(rest, ", ") {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "Credential":
			credential = v
		case "SignedHeaders":
			signed = v
		}
	}
	if algo != "AWS4-HMAC-SHA256" || credential == "" || signed == "" {
		return "", "", fmt.Errorf("authorization %q", auth)
	}
	parts := strings.Split(credential, "/") // AKID/date/region/service/aws4_request
	if len(parts) != 5 || parts[3] != "lambda" || parts[4] != "aws4_request" {
		return "", "", fmt.Errorf("credential scope %q", credential)
	}
	key, region = parts[0], parts[2]
	creds, ok := l.keys[key]
	if !ok {
		return region, key, fmt.Errorf("unknown access key %s", key)
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if h := sha256.Sum256(body); payload != hex.EncodeToString(h[:]) {
		return region, key, fmt.Errorf("x-amz-content-sha256 %s is not the SHA-256 of the %d-byte body", payload, len(body))
	}
	at, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return region, key, err
	}
	if creds.SessionToken != "" && r.Header.Get("X-Amz-Security-Token") != creds.SessionToken {
		return region, key, fmt.Errorf("x-amz-security-token %q", r.Header.Get("X-Amz-Security-Token"))
	}
	req, _ := http.NewRequest(r.Method, "http://"+r.Host+r.RequestURI, nil)
	req.Host = r.Host
	for _, n := range strings.Split(signed, ";") {
		switch n {
		case "host", "x-amz-security-token", "x-amz-date":
		case "content-length":
			req.ContentLength = r.ContentLength
		case "user-agent", "authorization", "expect", "transfer-encoding", "x-amzn-trace-id":
			return region, key, fmt.Errorf("header %s is signed: the SDK cannot check that", n)
		default:
			if len(r.Header.Values(n)) == 0 {
				return region, key, fmt.Errorf("signed header %s did not arrive", n)
			}
			req.Header[http.CanonicalHeaderKey(n)] = r.Header.Values(n)
		}
	}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, payload, "lambda", region, at); err != nil {
		return region, key, err
	}
	if want := req.Header.Get("Authorization"); want != auth {
		return region, key, fmt.Errorf("authorization\n%s\nthe SDK computes\n%s", auth, want)
	}
	return region, key, nil
}

func (l *fakeLambda) last(t *testing.T) lambdaCall {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.calls) == 0 {
		t.Fatal("the Lambda endpoint got no call")
	}
	c := l.calls[len(l.calls)-1]
	if c.err != nil {
		t.Fatalf("the Lambda endpoint refused the call to %s: %v", c.function, c.err)
	}
	return c
}

func (l *fakeLambda) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.calls)
}

// lambdaDo sends a request without User-Agent (which Envoy signs and the
// SDK leaves out of its signatures).
func lambdaDo(t *testing.T, method, url, body string, hdr ...string) (int, http.Header, string) {
	return testutil.Do(t, testutil.Client(), method, url, body, append([]string{"User-Agent", ""}, hdr...)...)
}

// TestAwsLambda: the request becomes a signed Invoke call of the ARN's
// function in its region; the JSON transformation both ways (rawPath,
// method, headers, query parameters, base64 or text body; status,
// headers, cookies, base64 body back), payload passthrough, asynchronous
// invocation, a per-route ARN with credentials_profile, function errors
// and bad answers (500, server_error), and a cluster without the Lambda
// metadata left alone.
func TestAwsLambda(t *testing.T) {
	fl := &fakeLambda{keys: map[string]aws.Credentials{
		"AKIDINLINE":  {AccessKeyID: "AKIDINLINE", SecretAccessKey: "inline-secret", SessionToken: "inline-token"},
		"AKIDPROFILE": {AccessKeyID: "AKIDPROFILE", SecretAccessKey: "profile-secret"},
	}}
	lambda := testutil.StartUpstream(t, fl)
	plain := testutil.StartUpstream(t, testutil.EchoHandler("plain"))
	dir := t.TempDir()
	credFile := filepath.Join(dir, "credentials")
	if err := os.WriteFile(credFile, []byte("[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = x\n\n[lambda-test]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", credFile)

	perRoute := func(arn, extra string) string {
		return fmt.Sprintf(`typed_per_filter_config: {envoy.filters.http.aws_lambda: {"@type": type.googleapis.com/envoy.extensions.filters.http.aws_lambda.v3.PerRouteConfig, invoke_config: {arn: "%s"%s}}}`, arn, extra)
	}
	p := start(t, cfg{
		hcm: `http_filters: [{name: envoy.filters.http.aws_lambda, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.aws_lambda.v3.Config,
			arn: "arn:aws:lambda:us-west-2:987654321:function:echo", host_rewrite: lambda.us-west-2.amazonaws.com,
			credentials: {access_key_id: AKIDINLINE, secret_access_key: inline-secret, session_token: inline-token}}},
			{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts: vhost(
			`{match: {prefix: /raw}, route: {cluster: lambda}, `+perRoute("arn:aws:lambda:us-west-2:1:function:raw", ", payload_passthrough: true, credentials: {access_key_id: AKIDINLINE, secret_access_key: inline-secret, session_token: inline-token}")+`}`,
			`{match: {prefix: /async}, route: {cluster: lambda}, `+perRoute("arn:aws:lambda:us-west-2:1:function:async", ", invocation_mode: ASYNCHRONOUS, credentials: {access_key_id: AKIDINLINE, secret_access_key: inline-secret, session_token: inline-token}")+`}`,
			`{match: {prefix: /profile}, route: {cluster: lambda}, `+perRoute("arn:aws:lambda:eu-central-1:1:function:echo:v2", ", credentials_profile: lambda-test")+`}`,
			`{match: {prefix: /fail}, route: {cluster: lambda}, `+perRoute("arn:aws:lambda:us-west-2:1:function:fail", ", credentials: {access_key_id: AKIDINLINE, secret_access_key: inline-secret, session_token: inline-token}")+`}`,
			`{match: {prefix: /garbage}, route: {cluster: lambda}, `+perRoute("arn:aws:lambda:us-west-2:1:function:garbage", ", credentials: {access_key_id: AKIDINLINE, secret_access_key: inline-secret, session_token: inline-token}")+`}`,
			`{match: {prefix: /plain}, route: {cluster: plain}}`,
			`{match: {prefix: /}, route: {cluster: lambda}}`),
		clusters: "[" + staticCluster("lambda", "metadata: {filter_metadata: {com.amazonaws.lambda: {egress_gateway: true}}}", lambda.Addr) + ", " +
			staticCluster("plain", "metadata: {filter_metadata: {com.amazonaws.lambda: {egress_gateway: 'true'}}}", plain.Addr) + "]",
	})

	// The JSON transformation, a text body: the function's answer is
	// read back (status, headers, cookies, base64 body).
	code, h, body := lambdaDo(t, "PUT", p.URL("http", "/hello/world?a=1&b=two%20words&a=3"), `{"k":"<v>"}`, "content-type", "application/json", "x-multi", "1", "x-multi", "2")
	call := fl.last(t)
	if code != 201 || h.Get("x-function") != "echo" || h.Get("content-type") != "application/x-lambda-echo" || fmt.Sprint(h.Values("set-cookie")) != "[a=1 b=2]" {
		t.Fatalf("transformed answer: %d, headers %v, body %q", code, h, body)
	}
	if call.function != "echo" || call.region != "us-west-2" || call.accessKey != "AKIDINLINE" || call.invocationType != "RequestResponse" {
		t.Errorf("call %+v", call)
	}
	var doc struct {
		RawPath               string            `json:"rawPath"`
		Method                string            `json:"method"`
		Headers               map[string]string `json:"headers"`
		QueryStringParameters map[string]string `json:"queryStringParameters"`
		Body                  string            `json:"body"`
		IsBase64Encoded       *bool             `json:"isBase64Encoded"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("the function got %q: %v", body, err)
	}
	if doc.RawPath != "/hello/world?a=1&b=two%20words&a=3" || doc.Method != "PUT" || doc.Body != `{"k":"<v>"}` || doc.IsBase64Encoded == nil || *doc.IsBase64Encoded ||
		doc.QueryStringParameters["a"] != "1" || doc.QueryStringParameters["b"] != "two%20words" ||
		doc.Headers["x-multi"] != "1,2" || doc.Headers["content-type"] != "application/json" {
		t.Errorf("request document %+v", doc)
	}
	if _, ok := doc.Headers[":path"]; ok {
		t.Errorf("pseudo-headers in the document: %v", doc.Headers)
	}

	// A binary body is base64; a header-only request has an empty body.
	_, _, body = lambdaDo(t, "POST", p.URL("http", "/bin"), "\x00\x01\x02", "content-type", "application/octet-stream")
	fl.last(t)
	if err := json.Unmarshal([]byte(body), &doc); err != nil || doc.Body != "AAEC" || !*doc.IsBase64Encoded {
		t.Errorf("binary body document %q (%v)", body, err)
	}
	code, _, body = lambdaDo(t, "GET", p.URL("http", "/nobody"), "")
	fl.last(t)
	if err := json.Unmarshal([]byte(body), &doc); code != 201 || err != nil || doc.Method != "GET" || doc.Body != "" || *doc.IsBase64Encoded {
		t.Errorf("header-only request: %d, document %q (%v)", code, body, err)
	}

	// Per-route ARN with credentials_profile: another region and key, a
	// qualified function name.
	code, _, _ = lambdaDo(t, "GET", p.URL("http", "/profile"), "")
	call = fl.last(t)
	if code != 201 || call.function != "echo:v2" || call.region != "eu-central-1" || call.accessKey != "AKIDPROFILE" {
		t.Errorf("per-route call: %d, %+v", code, call)
	}

	// Passthrough: the payload and the answer go as they are.
	code, h, body = lambdaDo(t, "POST", p.URL("http", "/raw"), "payload bytes", "content-type", "text/plain")
	call = fl.last(t)
	if code != 200 || body != "raw:payload bytes" || h.Get("content-type") != "application/octet-stream" || string(call.body) != "payload bytes" {
		t.Errorf("passthrough: %d %q %v; the function got %q", code, body, h, call.body)
	}

	// Asynchronous invocation: X-Amz-Invocation-Type: Event, Lambda's 202
	// passed on.
	code, _, _ = lambdaDo(t, "POST", p.URL("http", "/async"), `{"job":1}`, "content-type", "application/json")
	call = fl.last(t)
	if code != 202 || call.invocationType != "Event" {
		t.Errorf("async: %d, invocation type %q", code, call.invocationType)
	}

	// A function error reaches the client as the function gave it.
	code, h, body = lambdaDo(t, "GET", p.URL("http", "/fail"), "")
	fl.last(t)
	if code != 200 || h.Get("x-amz-function-error") != "Unhandled" || body != `{"errorMessage":"boom"}` {
		t.Errorf("function error: %d %v %q", code, h, body)
	}

	// An answer that is not Lambda JSON: 500, empty body, server_error.
	code, _, body = lambdaDo(t, "GET", p.URL("http", "/garbage"), "")
	fl.last(t)
	if code != 500 || body != "" {
		t.Errorf("bad answer: %d %q, want 500 and no body", code, body)
	}
	if got := p.Stat(t, "http.ingress.aws_lambda.server_error"); got != 1 {
		t.Errorf("aws_lambda.server_error = %d, want 1", got)
	}

	// A cluster whose egress_gateway is not the bool true: untouched.
	n := fl.count()
	code, _, body = lambdaDo(t, "GET", p.URL("http", "/plain/x?q=1"), "")
	if code != 200 || upstreamOf(body) != "upstream=plain" || !strings.Contains(body, "path=/plain/x?q=1") || strings.Contains(body, "authorization") || fl.count() != n {
		t.Errorf("non-Lambda cluster: %d %q", code, body)
	}
}

// TestAwsLambdaRefused: a bad ARN is Envoy's error at its path.
func TestAwsLambdaRefused(t *testing.T) {
	_, err := testutil.TryStartProxy(t, cfg{
		hcm: `http_filters: [{name: envoy.filters.http.aws_lambda, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.aws_lambda.v3.Config, arn: "arn:aws:lambda:us-west-2"}},
			{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts:   vhost("{match: {prefix: /}, direct_response: {status: 200}}"),
		clusters: "[]",
	}.String(), nil)
	if err == nil || !strings.Contains(err.Error(), "typed_config.arn") || !strings.Contains(err.Error(), "aws_lambda_filter: Invalid ARN: arn:aws:lambda:us-west-2") {
		t.Fatalf("error %v", err)
	}
}

// TestAwsLambdaUpstream: the filter in a cluster's upstream filter chain
// (Envoy's aws-lambda-filter-upstream.yaml example): no cluster metadata
// needed; a header-only request gets its JSON document as the body; a
// request with a body too; stats under cluster.<name>.aws_lambda.
func TestAwsLambdaUpstream(t *testing.T) {
	fl := &fakeLambda{keys: map[string]aws.Credentials{"AKIDUP": {AccessKeyID: "AKIDUP", SecretAccessKey: "up-secret"}}}
	lambda := testutil.StartUpstream(t, fl)
	filters := `typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {"@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions,
		explicit_http_config: {http_protocol_options: {}},
		http_filters: [{name: envoy.filters.http.aws_lambda, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.aws_lambda.v3.Config,
			arn: "arn:aws:lambda:us-west-2:987654321:function:echo", payload_passthrough: false, credentials: {access_key_id: AKIDUP, secret_access_key: up-secret}}},
			{name: envoy.filters.http.upstream_codec, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec}}]}}`
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: lambda}}"),
		clusters: "[" + staticCluster("lambda", filters, lambda.Addr) + "]",
	})
	var doc struct {
		RawPath, Method, Body string
		IsBase64Encoded       bool
	}
	code, h, body := lambdaDo(t, "GET", p.URL("http", "/up?x=1"), "")
	call := fl.last(t)
	if err := json.Unmarshal([]byte(body), &doc); code != 201 || err != nil || h.Get("x-function") != "echo" || doc.RawPath != "/up?x=1" || doc.Method != "GET" || call.region != "us-west-2" {
		t.Fatalf("header-only upstream request: %d %v %q (%v), call %+v", code, h, body, err, call)
	}
	code, _, body = lambdaDo(t, "POST", p.URL("http", "/up"), "text body", "content-type", "text/plain")
	fl.last(t)
	if err := json.Unmarshal([]byte(body), &doc); code != 201 || err != nil || doc.Body != "text body" || doc.IsBase64Encoded {
		t.Errorf("upstream request with a body: %d %q (%v)", code, body, err)
	}
	if got := p.Stat(t, "cluster.lambda.aws_lambda.server_error"); got != 0 {
		t.Errorf("cluster.lambda.aws_lambda.server_error = %d", got)
	}
}
