package aws_lambda

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	lambdav3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/aws_lambda/v3"

	"github.com/legateproxy/legate/internal/headers"
)

// TestParseArn: Envoy's parseArn.
func TestParseArn(t *testing.T) {
	for _, tc := range []struct {
		in     string
		ok     bool
		region string
		name   string
	}{
		{"arn:aws:lambda:us-west-2:987654321:function:hello_envoy", true, "us-west-2", "hello_envoy"},
		{"arn:aws:lambda:us-west-2:987654321:function:hello_envoy:v1", true, "us-west-2", "hello_envoy:v1"},
		{"arn:aws-cn:lambda:cn-north-1:1:function:f:$LATEST", true, "cn-north-1", "f:$LATEST"},
		{"arn:aws:lambda:us-west-2:987654321:function", false, "", ""},
		{"xrn:aws:lambda:us-west-2:987654321:function:f", false, "", ""},
		{"", false, "", ""},
	} {
		a, ok := ParseArn(tc.in)
		if ok != tc.ok || a.Region != tc.region || a.FunctionName != tc.name {
			t.Errorf("ParseArn(%q) = %+v %v, want region %q name %q ok %v", tc.in, a, ok, tc.region, tc.name, tc.ok)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  *lambdav3.Config
		want string
	}{
		{&lambdav3.Config{Arn: "arn:aws:lambda:us-west-2"}, "arn: aws_lambda_filter: Invalid ARN: arn:aws:lambda:us-west-2"},
	} {
		_, err := compileSettings(nil, tc.cfg, "f")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
	s, err := compileSettings(nil, &lambdav3.Config{Arn: "arn:aws:lambda:eu-west-1:1:function:fn:v2", InvocationMode: lambdav3.Config_ASYNCHRONOUS}, "f")
	if err != nil || s.path != "/2015-03-31/functions/fn:v2/invocations" || s.signer.Region != "eu-west-1" || s.signer.Service != "lambda" || !s.async {
		t.Errorf("settings %+v, %v", s, err)
	}
}

// TestJsonizeRequest: Envoy's JSON form of a request.
func TestJsonizeRequest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		path    string
		hdrs    [][2]string
		body    []byte
		want    lambdaRequest
		wantRaw string
	}{
		{name: "no body", path: "/a?x=1&y=%20&x=2&flag", hdrs: [][2]string{{"x-a", "1"}, {"x-a", "2"}, {"accept", "*/*"}},
			want: lambdaRequest{RawPath: "/a?x=1&y=%20&x=2&flag", Method: "GET", Headers: map[string]string{"x-a": "1,2", "accept": "*/*"},
				QueryStringParameters: map[string]string{"x": "1", "y": "%20", "flag": ""}},
			wantRaw: `"body":"","isBase64Encoded":false`},
		{name: "textual body", path: "/", hdrs: [][2]string{{"content-type", "application/json"}}, body: []byte(`{"a":"<b>"}`),
			want: lambdaRequest{RawPath: "/", Method: "GET", Headers: map[string]string{"content-type": "application/json"},
				QueryStringParameters: map[string]string{}, Body: `{"a":"<b>"}`},
			wantRaw: `"body":"{\"a\":\"<b>\"}"`},
		{name: "text/*", path: "/", hdrs: [][2]string{{"content-type", "text/plain; charset=utf-8"}}, body: []byte("hi"),
			want: lambdaRequest{RawPath: "/", Method: "GET", Headers: map[string]string{"content-type": "text/plain; charset=utf-8"},
				QueryStringParameters: map[string]string{}, Body: "hi"}},
		{name: "binary body", path: "/", hdrs: [][2]string{{"content-type", "application/octet-stream"}}, body: []byte{0, 1, 2},
			want: lambdaRequest{RawPath: "/", Method: "GET", Headers: map[string]string{"content-type": "application/octet-stream"},
				QueryStringParameters: map[string]string{}, Body: "AAEC", IsBase64Encoded: true}},
		{name: "no content-type", path: "/", body: []byte("x"),
			want: lambdaRequest{RawPath: "/", Method: "GET", Headers: map[string]string{}, QueryStringParameters: map[string]string{}, Body: "eA==", IsBase64Encoded: true}},
		{name: "chunked", path: "/", hdrs: [][2]string{{"content-type", "text/plain"}, {"transfer-encoding", "chunked"}}, body: []byte("x"),
			want: lambdaRequest{RawPath: "/", Method: "GET", Headers: map[string]string{"content-type": "text/plain", "transfer-encoding": "chunked"},
				QueryStringParameters: map[string]string{}, Body: "eA==", IsBase64Encoded: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &headers.Request{Method: "GET", Path: tc.path, Authority: "example.com"}
			for _, kv := range tc.hdrs {
				h.Map.Add(kv[0], kv[1])
			}
			js := jsonizeRequest(h, tc.body)
			var got lambdaRequest
			if err := json.Unmarshal(js, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
			if !strings.Contains(string(js), tc.wantRaw) {
				t.Errorf("JSON %s lacks %s", js, tc.wantRaw)
			}
		})
	}
}

// TestDejsonizeResponse: Envoy's reading of the function's answer.
func TestDejsonizeResponse(t *testing.T) {
	for _, tc := range []struct {
		name       string
		in         string
		wantStatus int
		wantBody   string
		wantHdr    map[string]string
		cookies    []string
		err        bool
	}{
		{name: "full", in: `{"statusCode": 201, "headers": {"x-a": "1", "Content-Type": "text/plain"}, "cookies": ["a=1", "b=2"], "body": "hello", "extra": true}`,
			wantStatus: 201, wantBody: "hello", wantHdr: map[string]string{"x-a": "1", "content-type": "text/plain"}, cookies: []string{"a=1", "b=2"}},
		{name: "snake case and base64", in: `{"status_code": "202", "is_base64_encoded": true, "body": "aGk="}`,
			wantStatus: 202, wantBody: "hi", wantHdr: map[string]string{"content-type": "application/json"}},
		{name: "no status keeps 200", in: `{}`, wantStatus: 200, wantHdr: map[string]string{"content-type": "application/json"}},
		{name: "bad base64 is an empty body", in: `{"isBase64Encoded": true, "body": "!!"}`, wantStatus: 200},
		{name: "not JSON", in: `hello`, wantStatus: 500, err: true},
		{name: "wrong type", in: `{"headers": {"a": 1}}`, wantStatus: 500, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &headers.Response{Status: 200}
			body, err := dejsonizeResponse(h, []byte(tc.in))
			if (err != nil) != tc.err || h.Status != tc.wantStatus || string(body) != tc.wantBody {
				t.Fatalf("status %d body %q err %v; want %d %q err %v", h.Status, body, err, tc.wantStatus, tc.wantBody, tc.err)
			}
			for k, v := range tc.wantHdr {
				if got := h.Map.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if got := h.Map.Values("set-cookie"); len(tc.cookies) > 0 && !reflect.DeepEqual(got, tc.cookies) {
				t.Errorf("set-cookie %v, want %v", got, tc.cookies)
			}
		})
	}
}
