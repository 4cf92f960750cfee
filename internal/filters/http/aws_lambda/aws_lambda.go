// Package aws_lambda is envoy.filters.http.aws_lambda: it turns a request
// into an AWS Lambda Invoke call (POST /2015-03-31/functions/<function>/
// invocations, signed with SigV4 for the "lambda" service in the ARN's
// region by the signer of internal/filters/common/aws), as Envoy's
// aws_lambda_filter.cc.
//
// As Envoy, the filter acts only on requests whose route's cluster has the
// metadata com.amazonaws.lambda: {egress_gateway: true}; others pass
// untouched. With payload_passthrough the request body goes to the
// function as it is, and the function's answer comes back as it is.
// Otherwise the request becomes the JSON document Envoy documents
// (rawPath, method, headers coalesced with ",", queryStringParameters
// (the first value of each name, not decoded), body and isBase64Encoded
// (a body is base64-encoded unless its content-type is textual: JSON,
// javascript, XML or text/*, with no transfer-encoding but identity)), and
// a successful synchronous answer (status below 300, no
// x-amz-function-error) is read back as {statusCode, headers, cookies,
// body, isBase64Encoded}: headers replace the response's (content-type is
// application/json unless they say otherwise), cookies become set-cookie
// headers. An answer that is not such JSON becomes a 500 with an empty
// body and counts in server_error. An error answer reaches the client as
// the function gave it. ASYNCHRONOUS sends X-Amz-Invocation-Type: Event
// (RequestResponse otherwise) and passes the answer through.
//
// Credentials: Config.credentials (inline), else credentials_profile (the
// credentials file's profile, and nothing else, as Envoy), else Envoy's
// default chain (environment, credentials file; the network providers are
// not implemented, see internal/filters/common/aws). A PerRouteConfig
// replaces the whole config on its route.
//
// Stats, under http.<stat_prefix>.aws_lambda.: server_error, and the
// histogram upstream_rq_payload_size (the size of a request body sent).
//
// The filter may also run in a cluster's upstream filter chain, as Envoy
// registers it as an upstream filter too: there (Envoy's is_upstream) it
// acts on every request, without the cluster metadata check, and its stats
// are under cluster.<name>.aws_lambda.
package aws_lambda

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	lambdav3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/aws_lambda/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/filters/common/aws"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/upstream"
)

// Name is the filter's name.
const Name = "envoy.filters.http.aws_lambda"

// serviceName is the SigV4 service of Lambda's Invoke API.
const serviceName = "lambda"

// Envoy's cluster metadata that marks a Lambda egress gateway.
const (
	metadataNamespace = "com.amazonaws.lambda"
	metadataKey       = "egress_gateway"
)

func init() {
	httpfilter.Register(Name, nil, &lambdav3.Config{}, &lambdav3.PerRouteConfig{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute, Upstream: true},
		"also an upstream filter; JSON transformation or payload passthrough, synchronous and asynchronous invocation, "+
			"SigV4 with inline, profile or default-chain credentials (the providers that fetch them over the network are not implemented)")
}

// Arn is a parsed Lambda function ARN (Envoy's parseArn).
type Arn struct {
	Partition, Service, Region, AccountID, ResourceType string
	// FunctionName includes a version or alias (hello:v1).
	FunctionName string
}

// ParseArn parses arn:<partition>:<service>:<region>:<account>:<type>:<name>[:<qualifier>],
// as Envoy: at least seven parts, the first "arn"; an eighth part is the
// function's version or alias.
func ParseArn(s string) (Arn, bool) {
	p := strings.Split(s, ":")
	if len(p) < 7 || p[0] != "arn" {
		return Arn{}, false
	}
	a := Arn{Partition: p[1], Service: p[2], Region: p[3], AccountID: p[4], ResourceType: p[5], FunctionName: p[6]}
	if len(p) > 7 {
		a.FunctionName += ":" + p[7]
	}
	return a, true
}

// settings is a compiled Config (Envoy's FilterSettings).
type settings struct {
	arn         Arn
	path        string // the Invoke path
	async       bool
	passthrough bool
	hostRewrite string
	signer      *aws.Signer
}

type filterStats struct {
	serverError *stats.Counter
	payloadSize *stats.Histogram
}

// filterConfig is the filter's compiled config.
type filterConfig struct {
	def      *settings
	st       filterStats
	clusters *upstream.Manager
	// upstream: the filter is in a cluster's upstream filter chain.
	upstream bool
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	s, err := compileSettings(ctx.Log, msg.(*lambdav3.Config), path)
	if err != nil {
		return nil, err
	}
	sc := ctx.Scope("aws_lambda.")
	// A cluster's upstream filters compile with the cluster's stats scope
	// (router.CompileUpstreamFilters), a connection manager's with http.*.
	fc := &filterConfig{def: s, clusters: ctx.Clusters, upstream: strings.HasPrefix(ctx.StatPrefix, "cluster."),
		st: filterStats{serverError: sc.Counter("server_error"), payloadSize: sc.Histogram("upstream_rq_payload_size")}}
	return fc, nil
}

func compilePerRoute(ctx *httpfilter.Context, msg proto.Message, path string) (any, error) {
	pr := msg.(*lambdav3.PerRouteConfig)
	if err := config.CheckFields(pr, path, "invoke_config"); err != nil {
		return nil, err
	}
	return compileSettings(ctx.Log, pr.GetInvokeConfig(), config.Join(path, "invoke_config"))
}

func compileSettings(log *slog.Logger, c *lambdav3.Config, path string) (*settings, error) {
	if err := config.CheckFields(c, path, "arn", "payload_passthrough", "invocation_mode", "host_rewrite",
		"credentials_profile", "credentials", "match_excluded_headers", "match_included_headers"); err != nil {
		return nil, err
	}
	arn, ok := ParseArn(c.GetArn())
	if !ok {
		// Envoy's message.
		return nil, config.Errorf(config.Join(path, "arn"), "aws_lambda_filter: Invalid ARN: %s", c.GetArn())
	}
	s := &settings{arn: arn, path: "/2015-03-31/functions/" + arn.FunctionName + "/invocations",
		async:       c.GetInvocationMode() == lambdav3.Config_ASYNCHRONOUS,
		passthrough: c.GetPayloadPassthrough(), hostRewrite: c.GetHostRewrite(),
		signer: &aws.Signer{Service: serviceName, Region: arn.Region}}
	switch {
	case c.GetCredentials() != nil:
		cr := c.GetCredentials()
		if err := config.CheckFields(cr, config.Join(path, "credentials"), "access_key_id", "secret_access_key", "session_token"); err != nil {
			return nil, err
		}
		s.signer.Credentials = aws.Static{AccessKeyID: cr.GetAccessKeyId(), SecretAccessKey: cr.GetSecretAccessKey(), SessionToken: cr.GetSessionToken()}
	case c.GetCredentialsProfile() != "":
		// As Envoy: only the credentials file, with that profile.
		s.signer.Credentials = &aws.File{Profile: c.GetCredentialsProfile()}
	default:
		pc, err := aws.CompileProvider(nil, path)
		if err != nil {
			return nil, err
		}
		s.signer.Credentials = pc.Provider
		if len(pc.Missing) > 0 && !pc.Provider.Credentials().Valid() && log != nil {
			log.Warn("aws_lambda: no credentials in the environment or the AWS credentials file, and the providers of "+
				"Envoy's default chain that fetch them over the network are not implemented by legate: requests go unsigned "+
				"until credentials appear", "path", path, "not_implemented", strings.Join(pc.Missing, "; "))
		}
	}
	if err := s.signer.CompileHeaderMatchers(c.GetMatchExcludedHeaders(), c.GetMatchIncludedHeaders(), path); err != nil {
		return nil, err
	}
	return s, nil
}

// NewFilter makes the filter of one stream.
func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

// routeCluster (downstream) and addDecodedData are implemented by the
// connection manager's and the upstream filter chain's callbacks.
type routeCluster interface{ RouteCluster() string }
type addDecodedData interface{ AddDecodedData(p []byte) }

type filter struct {
	cfg  *filterConfig
	cb   httpfilter.Callbacks
	s    *settings
	skip bool
	req  *headers.Request
	resp *headers.Response
}

// isLambdaGateway is Envoy's isTargetClusterLambdaGateway: the route's
// cluster has com.amazonaws.lambda.egress_gateway set to the bool true.
func (f *filter) isLambdaGateway() bool {
	if f.cfg.upstream {
		return true // the cluster chose the filter: no check, as Envoy
	}
	rc, ok := f.cb.(routeCluster)
	if !ok || f.cfg.clusters == nil {
		return false
	}
	c := f.cfg.clusters.Get(rc.RouteCluster())
	if c == nil || c.Proto == nil {
		return false
	}
	v, ok := c.Proto.GetMetadata().GetFilterMetadata()[metadataNamespace].GetFields()[metadataKey]
	if !ok {
		return false
	}
	// Only the bool true counts (not "true" or 1), as Envoy.
	b, isBool := v.GetKind().(*structpb.Value_BoolValue)
	return isBool && b.BoolValue
}

// settings is the route's PerRouteConfig, else the filter's.
func (f *filter) settings() *settings {
	if pr, ok := f.cb.PerRouteConfig().(*settings); ok {
		return pr
	}
	return f.cfg.def
}

// setLambdaHeaders makes the request an Invoke call (Envoy's
// setLambdaHeaders).
func (s *settings) setLambdaHeaders(h *headers.Request) {
	h.Method = "POST"
	h.Path = s.path
	if s.async {
		h.Map.Set("x-amz-invocation-type", "Event")
	} else {
		h.Map.Set("x-amz-invocation-type", "RequestResponse")
	}
	if s.hostRewrite != "" {
		h.Authority = s.hostRewrite
	}
}

// DecodeHeaders holds a request with a body for its end; a header-only
// request is transformed (or passed through) and signed now.
func (f *filter) DecodeHeaders(h *headers.Request, endStream bool) httpfilter.Status {
	if !f.isLambdaGateway() {
		f.skip = true
		return httpfilter.Continue
	}
	f.s = f.settings()
	if !endStream {
		f.req = h
		return httpfilter.StopIteration
	}
	s := f.s
	if s.passthrough {
		s.setLambdaHeaders(h)
		f.sign(h, aws.EmptyHash)
		return httpfilter.Continue
	}
	js := jsonizeRequest(h, nil)
	// After the JSON: it reflects the request as it came.
	s.setLambdaHeaders(h)
	h.Map.Set("content-length", strconv.Itoa(len(js)))
	h.Map.Set("content-type", "application/json")
	f.sign(h, aws.HashPayload(js))
	if ad, ok := f.cb.(addDecodedData); ok {
		ad.AddDecodedData(js)
	}
	return httpfilter.Continue
}

// DecodeData buffers the body, then transforms and signs at its end.
func (f *filter) DecodeData(b *httpfilter.Buffer, endStream bool) httpfilter.Status {
	if f.skip || f.req == nil {
		return httpfilter.Continue
	}
	if !endStream {
		return httpfilter.StopAndBuffer
	}
	s, h := f.s, f.req
	if !s.passthrough {
		b.Set(jsonizeRequest(h, b.Bytes()))
		h.Map.Set("content-length", strconv.Itoa(b.Len()))
		h.Map.Set("content-type", "application/json")
	}
	s.setLambdaHeaders(h)
	f.sign(h, aws.HashPayload(b.Bytes()))
	f.cfg.st.payloadSize.Record(float64(b.Len()))
	f.req = nil
	return httpfilter.Continue
}

func (f *filter) sign(h *headers.Request, hash string) {
	if _, err := f.s.signer.Sign(h, hash); err != nil {
		f.cb.Log().Debug("aws lambda: signing failed", "error", err)
	}
}

// EncodeHeaders passes an error answer through (a status of 300 or more,
// or x-amz-function-error) and holds a successful one for its body.
func (f *filter) EncodeHeaders(h *headers.Response, endStream bool) httpfilter.Status {
	if f.skip || f.s == nil || endStream {
		return httpfilter.Continue
	}
	if h.Status >= 300 || h.Map.Has("x-amz-function-error") {
		f.skip = true
		return httpfilter.Continue
	}
	f.resp = h
	return httpfilter.StopIteration
}

// EncodeData reads the function's JSON answer back into the response at
// its end (not for passthrough or asynchronous invocations).
func (f *filter) EncodeData(b *httpfilter.Buffer, endStream bool) httpfilter.Status {
	if f.skip || f.s == nil || f.resp == nil || f.s.passthrough || f.s.async {
		return httpfilter.Continue
	}
	if !endStream {
		return httpfilter.StopAndBuffer
	}
	body, err := dejsonizeResponse(f.resp, b.Bytes())
	if err != nil {
		f.cb.Log().Debug("aws lambda: the function's answer is not a Lambda JSON response", "error", err)
		f.cfg.st.serverError.Inc()
	}
	b.Set(body)
	f.resp.Map.Set("content-length", strconv.Itoa(len(body)))
	return httpfilter.Continue
}

// lambdaRequest is Envoy's source.extensions.filters.http.aws_lambda.Request
// in its JSON form (every field printed, as Envoy's
// always_print_primitive_fields).
type lambdaRequest struct {
	RawPath               string            `json:"rawPath"`
	Method                string            `json:"method"`
	Headers               map[string]string `json:"headers"`
	QueryStringParameters map[string]string `json:"queryStringParameters"`
	Body                  string            `json:"body"`
	IsBase64Encoded       bool              `json:"isBase64Encoded"`
}

// jsonizeRequest is Envoy's jsonizeRequest; body is nil for a request
// without one.
func jsonizeRequest(h *headers.Request, body []byte) []byte {
	r := lambdaRequest{RawPath: h.Path, Method: h.Method, Headers: map[string]string{}, QueryStringParameters: map[string]string{}}
	for _, fl := range h.Map.Fields() {
		if strings.HasPrefix(fl.Name, ":") {
			continue // pseudo-headers are not headers
		}
		if v, ok := r.Headers[fl.Name]; ok {
			r.Headers[fl.Name] = v + "," + fl.Value
		} else {
			r.Headers[fl.Name] = fl.Value
		}
	}
	if _, q, ok := strings.Cut(h.Path, "?"); ok {
		// As Envoy's parseQueryString: not decoded; the first value of a
		// name is kept.
		q, _, _ = strings.Cut(q, "#")
		for _, kv := range strings.Split(q, "&") {
			if kv == "" {
				continue
			}
			k, v, _ := strings.Cut(kv, "=")
			if _, seen := r.QueryStringParameters[k]; !seen {
				r.QueryStringParameters[k] = v
			}
		}
	}
	if body != nil {
		if isTextual(&h.Map) {
			r.Body = string(body)
		} else {
			r.Body, r.IsBase64Encoded = base64.StdEncoding.EncodeToString(body), true
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // protobuf's JSON printer leaves <, > and & as they are
	_ = enc.Encode(r)        // a struct of strings and maps always encodes
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// isTextual is Envoy's isContentTypeTextual.
func isTextual(m *headers.Map) bool {
	if te, ok := m.Lookup("transfer-encoding"); ok && !strings.EqualFold(te, "identity") {
		return false // compressed or chunked: base64 whatever the type
	}
	ct, ok := m.Lookup("content-type")
	if !ok {
		return false
	}
	ct = strings.ToLower(ct)
	return ct == "application/json" || ct == "application/javascript" || ct == "application/xml" || strings.HasPrefix(ct, "text/")
}

// dejsonizeResponse is Envoy's dejsonizeResponse: it applies the
// function's JSON answer to h and returns the body. Invalid JSON makes the
// response a 500 with no body.
func dejsonizeResponse(h *headers.Response, js []byte) ([]byte, error) {
	r, err := parseResponse(js)
	if err != nil {
		h.Status = 500
		return nil, err
	}
	// JSON is the default content-type; the function's headers may say
	// otherwise.
	h.Map.Set("content-type", "application/json")
	for _, k := range r.headerOrder {
		lk := headers.Lower(k)
		// The function's JSON is untrusted: names must be tokens and values
		// free of CR/LF (no response splitting), and framing is Legate's.
		if strings.HasPrefix(k, ":") || !http1.IsToken(k) || !headers.ValidValue(r.headers[k]) ||
			lk == "content-length" || lk == "transfer-encoding" || lk == "connection" {
			continue
		}
		h.Map.Set(lk, r.headers[k])
	}
	for _, c := range r.cookies {
		if headers.ValidValue(c) {
			h.Map.Add("set-cookie", c)
		}
	}
	if r.statusCode != 0 {
		if r.statusCode < 100 || r.statusCode > 599 {
			h.Status = 500
			return nil, fmt.Errorf("the function answered statusCode %d", r.statusCode)
		}
		h.Status = int(r.statusCode)
	}
	if r.body == "" {
		return nil, nil
	}
	if r.isBase64 {
		b, err := base64.StdEncoding.DecodeString(r.body)
		if err != nil {
			return nil, nil // Envoy's Base64::decode gives nothing for bad input
		}
		return b, nil
	}
	return []byte(r.body), nil
}

// lambdaResponse is Envoy's Response message.
type lambdaResponse struct {
	statusCode  uint32
	headers     map[string]string
	headerOrder []string
	cookies     []string
	body        string
	isBase64    bool
}

// parseResponse reads a Response the way protobuf's JSON parser does:
// fields by their JSON (lowerCamelCase) or proto (snake_case) names,
// unknown fields ignored, a number or a numeric string for statusCode.
func parseResponse(js []byte) (*lambdaResponse, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(js, &raw); err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, errors.New("the answer is null, not an object")
	}
	field := func(camel, snake string) (json.RawMessage, bool) {
		if v, ok := raw[camel]; ok && string(v) != "null" {
			return v, true
		}
		if v, ok := raw[snake]; ok && string(v) != "null" {
			return v, true
		}
		return nil, false
	}
	r := &lambdaResponse{}
	if v, ok := field("statusCode", "status_code"); ok {
		var n uint32
		if err := json.Unmarshal(v, &n); err != nil {
			var s string
			if json.Unmarshal(v, &s) != nil {
				return nil, fmt.Errorf("statusCode: %w", err)
			}
			u, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("statusCode: %w", err)
			}
			n = uint32(u)
		}
		r.statusCode = n
	}
	if v, ok := field("headers", "headers"); ok {
		if err := json.Unmarshal(v, &r.headers); err != nil {
			return nil, fmt.Errorf("headers: %w", err)
		}
		for k := range r.headers {
			r.headerOrder = append(r.headerOrder, k)
		}
		slices.Sort(r.headerOrder)
	}
	if v, ok := field("cookies", "cookies"); ok {
		if err := json.Unmarshal(v, &r.cookies); err != nil {
			return nil, fmt.Errorf("cookies: %w", err)
		}
	}
	if v, ok := field("body", "body"); ok {
		if err := json.Unmarshal(v, &r.body); err != nil {
			return nil, fmt.Errorf("body: %w", err)
		}
	}
	if v, ok := field("isBase64Encoded", "is_base64_encoded"); ok {
		if err := json.Unmarshal(v, &r.isBase64); err != nil {
			return nil, fmt.Errorf("isBase64Encoded: %w", err)
		}
	}
	return r, nil
}
