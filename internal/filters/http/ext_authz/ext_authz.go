// Package ext_authz is envoy.filters.http.ext_authz: every request is
// checked by an external authorization service — gRPC
// (envoy.service.auth.v3.Authorization/Check) or plain HTTP — called
// through the cluster manager. An OK answer may add, replace or remove
// request headers, add response headers and publish dynamic metadata; a
// denial is answered with the service's status, headers and body; an
// unreachable or failing service follows failure_mode_allow and
// status_on_error, as Envoy's ext_authz.
package ext_authz

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// Name is the filter's name and its dynamic-metadata namespace.
const Name = "envoy.filters.http.ext_authz"

func init() {
	httpfilter.Register(Name, []string{"envoy.ext_authz"}, &extauthzv3.ExtAuthz{}, &extauthzv3.ExtAuthzPerRoute{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"envoy_grpc, google_grpc (ssl or local channel credentials, access_token call credentials) and http_service; header mutation rules and CEL are not implemented")
}

type matchers []func(string) bool

func (ms matchers) match(s string) bool {
	for _, m := range ms {
		if m(s) {
			return true
		}
	}
	return false
}

func compileList(l *matcherv3.ListStringMatcher, path string) (matchers, error) {
	var out matchers
	for i, p := range l.GetPatterns() {
		m, err := route.CompileStringMatcher(p, config.Index(config.Join(path, "patterns"), i))
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

type filterConfig struct {
	async   *asyncclient.Client
	grpc    bool
	cluster string
	// target is the gRPC service's (envoy_grpc cluster or google_grpc).
	target                                        asyncclient.GRPCTarget
	authority                                     string
	timeout                                       time.Duration
	initialMD                                     []*corev3.HeaderValue
	uri                                           *url.URL
	pathPrefix                                    string
	reqHeadersAdd                                 []*corev3.HeaderValue
	allowedHeaders                                matchers // headers sent to the service (nil: all for gRPC)
	upstreamSet                                   matchers // HTTP service: authz response headers copied to the request
	upstreamAppend                                matchers
	clientHeaders                                 matchers // on denial (nil: all)
	clientOnOK                                    matchers
	metadataFrom                                  matchers
	failureAllow                                  bool
	failureHeader                                 bool
	statusOnError                                 int
	withBody                                      bool
	maxBody                                       int64
	allowPartial                                  bool
	packAsBytes                                   bool
	clearRoute                                    bool
	peerCert                                      bool
	mdNamespaces                                  []string
	ok, denied, errored, disabled, failureAllowed *stats.Counter
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*extauthzv3.ExtAuthz)
	if err := config.CheckFields(c, path, "grpc_service", "http_service", "transport_api_version", "failure_mode_allow",
		"failure_mode_allow_header_add", "with_request_body", "clear_route_cache", "status_on_error", "metadata_context_namespaces",
		"include_peer_certificate", "stat_prefix", "allowed_headers", "disallowed_headers", "charge_cluster_response_stats"); err != nil {
		return nil, err
	}
	if c.GetTransportApiVersion() != corev3.ApiVersion_V3 && c.GetTransportApiVersion() != corev3.ApiVersion_AUTO {
		return nil, config.Errorf(config.Join(path, "transport_api_version"), "only V3 exists")
	}
	f := &filterConfig{async: ctx.Async, timeout: 200 * time.Millisecond, failureAllow: c.GetFailureModeAllow(),
		failureHeader: c.GetFailureModeAllowHeaderAdd(), statusOnError: 403, clearRoute: c.GetClearRouteCache(),
		peerCert: c.GetIncludePeerCertificate(), mdNamespaces: c.GetMetadataContextNamespaces()}
	if s := c.GetStatusOnError(); s != nil && s.GetCode() != 0 {
		f.statusOnError = int(s.GetCode())
	}
	if b := c.GetWithRequestBody(); b != nil {
		f.withBody, f.maxBody, f.allowPartial, f.packAsBytes = true, int64(b.GetMaxRequestBytes()), b.GetAllowPartialMessage(), b.GetPackAsBytes()
	}
	var err error
	if f.allowedHeaders, err = compileList(c.GetAllowedHeaders(), config.Join(path, "allowed_headers")); err != nil {
		return nil, err
	}
	if c.GetDisallowedHeaders() != nil {
		return nil, config.Unsupported(config.Join(path, "disallowed_headers"), "disallowed_headers")
	}
	switch {
	case c.GetGrpcService() != nil:
		gp := config.Join(path, "grpc_service")
		gs := c.GetGrpcService()
		if err := config.CheckFields(gs, gp, "envoy_grpc", "google_grpc", "timeout", "initial_metadata"); err != nil {
			return nil, err
		}
		t, err := asyncclient.CompileGRPCTarget(gs, gp)
		if err != nil {
			return nil, err
		}
		f.grpc, f.target, f.cluster, f.authority, f.initialMD = true, t, t.String(), t.Authority, gs.GetInitialMetadata()
		if gs.GetTimeout() != nil {
			f.timeout = gs.GetTimeout().AsDuration()
		}
	case c.GetHttpService() != nil:
		hp := config.Join(path, "http_service")
		hs := c.GetHttpService()
		if err := config.CheckFields(hs, hp, "server_uri", "path_prefix", "authorization_request", "authorization_response"); err != nil {
			return nil, err
		}
		su := hs.GetServerUri()
		if err := config.CheckFields(su, config.Join(hp, "server_uri"), "uri", "cluster", "timeout"); err != nil {
			return nil, err
		}
		f.cluster, f.pathPrefix = su.GetCluster(), hs.GetPathPrefix()
		if su.GetTimeout() != nil {
			f.timeout = su.GetTimeout().AsDuration()
		}
		raw := su.GetUri()
		if !strings.Contains(raw, "://") {
			raw = "http://" + raw
		}
		if f.uri, err = url.Parse(raw); err != nil {
			return nil, config.Errorf(config.Join(hp, "server_uri.uri"), "%v", err)
		}
		if ar := hs.GetAuthorizationRequest(); ar != nil {
			ap := config.Join(hp, "authorization_request")
			if err := config.CheckFields(ar, ap, "allowed_headers", "headers_to_add"); err != nil {
				return nil, err
			}
			if f.allowedHeaders, err = compileList(ar.GetAllowedHeaders(), config.Join(ap, "allowed_headers")); err != nil {
				return nil, err
			}
			f.reqHeadersAdd = ar.GetHeadersToAdd()
		}
		if ar := hs.GetAuthorizationResponse(); ar != nil {
			ap := config.Join(hp, "authorization_response")
			if err := config.CheckFields(ar, ap, "allowed_upstream_headers", "allowed_upstream_headers_to_append", "allowed_client_headers",
				"allowed_client_headers_on_success", "dynamic_metadata_from_headers"); err != nil {
				return nil, err
			}
			for _, x := range []struct {
				dst *matchers
				l   *matcherv3.ListStringMatcher
				n   string
			}{{&f.upstreamSet, ar.GetAllowedUpstreamHeaders(), "allowed_upstream_headers"}, {&f.upstreamAppend, ar.GetAllowedUpstreamHeadersToAppend(), "allowed_upstream_headers_to_append"},
				{&f.clientHeaders, ar.GetAllowedClientHeaders(), "allowed_client_headers"}, {&f.clientOnOK, ar.GetAllowedClientHeadersOnSuccess(), "allowed_client_headers_on_success"},
				{&f.metadataFrom, ar.GetDynamicMetadataFromHeaders(), "dynamic_metadata_from_headers"}} {
				if *x.dst, err = compileList(x.l, config.Join(ap, x.n)); err != nil {
					return nil, err
				}
			}
		}
	default:
		return nil, config.Errorf(path, "ext_authz needs grpc_service or http_service")
	}
	if f.cluster == "" {
		return nil, config.Errorf(path, "the authorization service needs a cluster")
	}
	sc := ctx.Scope("ext_authz.")
	if p := c.GetStatPrefix(); p != "" {
		sc = ctx.Scope("ext_authz." + p + ".")
	}
	f.ok, f.denied, f.errored, f.disabled, f.failureAllowed = sc.Counter("ok"), sc.Counter("denied"), sc.Counter("error"), sc.Counter("disabled"), sc.Counter("failure_mode_allowed")
	return f, nil
}

// perRoute is a compiled ExtAuthzPerRoute.
type perRoute struct {
	disabled   bool
	extensions map[string]string
	noBody     bool
}

func compilePerRoute(_ *httpfilter.Context, msg proto.Message, path string) (any, error) {
	p := msg.(*extauthzv3.ExtAuthzPerRoute)
	out := &perRoute{disabled: p.GetDisabled()}
	if cs := p.GetCheckSettings(); cs != nil {
		if err := config.CheckFields(cs, config.Join(path, "check_settings"), "context_extensions", "disable_request_body_buffering"); err != nil {
			return nil, err
		}
		out.extensions, out.noBody = cs.GetContextExtensions(), cs.GetDisableRequestBodyBuffering()
	}
	return out, nil
}

func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

type filter struct {
	cfg      *filterConfig
	cb       httpfilter.Callbacks
	route    *perRoute
	respAdd  []httpfilter.HeaderValue
	skip     bool
	waitBody bool
}

func (f *filter) DecodeHeaders(h *headers.Request, end bool) httpfilter.Status {
	f.route, _ = f.cb.PerRouteConfig().(*perRoute)
	if f.route != nil && f.route.disabled {
		f.cfg.disabled.Inc()
		f.skip = true
		return httpfilter.Continue
	}
	if f.cfg.withBody && !end && (f.route == nil || !f.route.noBody) {
		// Buffer the body (up to max_request_bytes) and check at its end.
		f.waitBody = true
		f.cb.SetDecoderBufferLimit(f.cfg.maxBody)
		return httpfilter.StopIteration
	}
	return f.check(h, nil)
}

func (f *filter) DecodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if !f.waitBody {
		return httpfilter.Continue
	}
	if !end && (!f.cfg.allowPartial || int64(b.Len()) < f.cfg.maxBody) {
		return httpfilter.StopAndBuffer
	}
	f.waitBody = false
	body := b.Bytes()
	if int64(len(body)) > f.cfg.maxBody {
		body = body[:f.cfg.maxBody]
	}
	return f.check(f.cb.RequestHeaders(), body)
}

func (f *filter) EncodeHeaders(h *headers.Response, _ bool) httpfilter.Status {
	for _, hv := range f.respAdd {
		if hv.Append {
			h.Map.Add(hv.Key, hv.Value)
		} else {
			h.Map.Set(hv.Key, hv.Value)
		}
	}
	return httpfilter.Continue
}

// outcome is a check's result.
type outcome struct {
	allowed  bool
	status   int
	body     string
	reqSet   []httpfilter.HeaderValue
	reqDel   []string
	respAdd  []httpfilter.HeaderValue
	denyHdrs []httpfilter.HeaderValue
	metadata *structpb.Struct
}

func (f *filter) check(h *headers.Request, body []byte) httpfilter.Status {
	c := f.cfg
	// A zero timeout is none, as Envoy's router and async clients read it
	// (Contour renders responseTimeout: infinity as 0s).
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if c.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
	}
	defer cancel()
	var out outcome
	var err error
	if c.grpc {
		out, err = f.checkGRPC(ctx, h, body)
	} else {
		out, err = f.checkHTTP(ctx, h, body)
	}
	info := f.cb.StreamInfo()
	if err != nil {
		f.cb.Log().Warn("authorization service failed", "cluster", c.cluster, "error", err)
		c.errored.Inc()
		if c.failureAllow {
			c.failureAllowed.Inc()
			if c.failureHeader {
				h.Map.Set("x-envoy-auth-failure-mode-allowed", "true")
			}
			return httpfilter.Continue
		}
		f.cb.SendLocalReply(c.statusOnError, "", httpfilter.LocalReply{Details: "ext_authz_error", Flag: streaminfo.UnauthorizedExternalService})
		return httpfilter.StopIteration
	}
	if out.metadata != nil && len(out.metadata.GetFields()) > 0 {
		info.SetDynamicMetadata(Name, out.metadata.GetFields())
	}
	if !out.allowed {
		c.denied.Inc()
		status := out.status
		if status == 0 {
			status = 403
		}
		f.cb.SendLocalReply(status, out.body, httpfilter.LocalReply{Details: "ext_authz_denied", Flag: streaminfo.UnauthorizedExternalService, Headers: out.denyHdrs})
		return httpfilter.StopIteration
	}
	c.ok.Inc()
	for _, hv := range out.reqSet {
		if hv.Append {
			h.Map.Add(hv.Key, hv.Value)
		} else {
			h.Map.Set(hv.Key, hv.Value)
		}
	}
	for _, n := range out.reqDel {
		// As Envoy, pseudo-headers and Host cannot be removed.
		if !strings.HasPrefix(n, ":") && n != "host" {
			h.Map.Del(n)
		}
	}
	f.respAdd = out.respAdd
	if c.clearRoute && (len(out.reqSet) > 0 || len(out.reqDel) > 0) {
		f.cb.ClearRouteCache()
	}
	return httpfilter.Continue
}

// --- gRPC service ---

func (f *filter) checkGRPC(ctx context.Context, h *headers.Request, body []byte) (outcome, error) {
	c := f.cfg
	cc, err := c.async.GRPCTo(c.target)
	if err != nil {
		return outcome{}, err
	}
	req := f.checkRequest(h, body)
	resp := &authv3.CheckResponse{}
	md := []string{}
	for _, m := range c.initialMD {
		md = append(md, m.GetKey(), m.GetValue())
	}
	ctx = metadataContext(ctx, md)
	if err := cc.Invoke(ctx, "/envoy.service.auth.v3.Authorization/Check", req, resp); err != nil {
		return outcome{}, err
	}
	out := outcome{metadata: resp.GetDynamicMetadata()}
	if resp.GetStatus().GetCode() == int32(code.Code_OK) {
		out.allowed = true
		okr := resp.GetOkResponse()
		for _, hv := range okr.GetHeaders() {
			out.reqSet = append(out.reqSet, headerValue(hv))
		}
		out.reqDel = lowerAll(okr.GetHeadersToRemove())
		for _, hv := range okr.GetResponseHeadersToAdd() {
			out.respAdd = append(out.respAdd, headerValue(hv))
		}
		if okr.GetDynamicMetadata() != nil && out.metadata == nil {
			out.metadata = okr.GetDynamicMetadata()
		}
		return out, nil
	}
	dr := resp.GetDeniedResponse()
	out.status = int(dr.GetStatus().GetCode())
	if out.status == 0 && dr.GetStatus() == nil {
		out.status = 403
	}
	out.body = dr.GetBody()
	for _, hv := range dr.GetHeaders() {
		out.denyHdrs = append(out.denyHdrs, headerValue(hv))
	}
	return out, nil
}

// headerValue converts a HeaderValueOption of a check response: as
// ext_authz documents, append defaults to false there (add or overwrite).
func headerValue(hv *corev3.HeaderValueOption) httpfilter.HeaderValue {
	app := false
	if hv.GetAppend() != nil {
		app = hv.GetAppend().GetValue()
	}
	return httpfilter.HeaderValue{Key: headers.Lower(hv.GetHeader().GetKey()), Value: hv.GetHeader().GetValue(), Append: app}
}

func lowerAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = headers.Lower(s)
	}
	return out
}

// checkRequest builds the AttributeContext Envoy sends.
func (f *filter) checkRequest(h *headers.Request, body []byte) *authv3.CheckRequest {
	c := f.cfg
	info := f.cb.StreamInfo()
	hm := map[string]string{}
	add := func(k, v string) {
		if c.allowedHeaders != nil && !c.allowedHeaders.match(k) {
			return
		}
		if prev, ok := hm[k]; ok {
			hm[k] = prev + "," + v
		} else {
			hm[k] = v
		}
	}
	add(":authority", h.Authority)
	add(":method", h.Method)
	add(":path", h.Path)
	if h.Scheme != "" {
		add(":scheme", h.Scheme)
	}
	for _, fd := range h.Map.Fields() {
		add(fd.Name, fd.Value)
	}
	p, q, _ := strings.Cut(h.Path, "?")
	q, frag, _ := strings.Cut(q, "#")
	scheme := h.Scheme
	if scheme == "" {
		scheme = h.Map.Get("x-forwarded-proto")
	}
	size := int64(-1)
	if cl, err := strconv.ParseInt(h.Map.Get("content-length"), 10, 64); err == nil {
		size = cl
	}
	hr := &authv3.AttributeContext_HttpRequest{Id: h.Map.Get("x-request-id"), Method: h.Method, Headers: hm, Path: p, Query: q,
		Fragment: frag, Host: h.Authority, Scheme: scheme, Size: size, Protocol: info.Protocol}
	if body != nil {
		if c.packAsBytes {
			hr.RawBody = body
		} else {
			hr.Body = string(body)
		}
	}
	source := &authv3.AttributeContext_Peer{Address: sockAddr(info.DownstreamRemote.Addr().String(), info.DownstreamRemote.Port())}
	if t := info.DownstreamTLS; t != nil && t.PeerCert != nil {
		if len(t.PeerURISAN) > 0 {
			source.Principal = t.PeerURISAN[0]
		} else {
			source.Principal = t.PeerSubject
		}
		if c.peerCert {
			source.Certificate = streaminfo.URLEncodedPEM(t.PeerCert)
		}
	}
	ctxExt := map[string]string{}
	if f.route != nil {
		for k, v := range f.route.extensions {
			ctxExt[k] = v
		}
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:            source,
		Destination:       &authv3.AttributeContext_Peer{Address: sockAddr(info.DownstreamLocal.Addr().String(), info.DownstreamLocal.Port())},
		Request:           &authv3.AttributeContext_Request{Time: timestamppb.New(info.StartTime), Http: hr},
		ContextExtensions: ctxExt,
		TlsSession:        nil,
	}}
	if info.RequestedServerName != "" {
		req.Attributes.TlsSession = &authv3.AttributeContext_TLSSession{Sni: info.RequestedServerName}
	}
	if len(c.mdNamespaces) > 0 {
		mc := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
		for _, ns := range c.mdNamespaces {
			if st := info.DynamicMetadata[ns]; st != nil {
				mc.FilterMetadata[ns] = st
			}
		}
		req.Attributes.MetadataContext = mc
	}
	return req
}

func sockAddr(ip string, port uint16) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}
}

// --- HTTP service ---

// alwaysSent are the request headers the HTTP service always gets (with
// any matched by authorization_request.allowed_headers), as Envoy.
var alwaysSent = map[string]bool{"authorization": true, "method": true, "path": true, "host": true}

func (f *filter) checkHTTP(ctx context.Context, h *headers.Request, body []byte) (outcome, error) {
	c := f.cfg
	u := *c.uri
	p, q, _ := strings.Cut(h.Path, "?")
	u.Path = strings.TrimSuffix(u.Path, "/") + c.pathPrefix + p
	u.RawQuery = q
	var rb io.Reader = http.NoBody
	if body != nil {
		rb = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, h.Method, u.String(), rb)
	if err != nil {
		return outcome{}, err
	}
	req.Host = h.Authority
	for _, fd := range h.Map.Fields() {
		if alwaysSent[fd.Name] || c.allowedHeaders.match(fd.Name) {
			if fd.Name == "content-length" || fd.Name == "transfer-encoding" {
				continue
			}
			req.Header.Add(fd.Name, fd.Value)
		}
	}
	for _, hv := range c.reqHeadersAdd {
		req.Header.Set(hv.GetKey(), hv.GetValue())
	}
	resp, err := c.async.Do(ctx, c.cluster, req)
	if err != nil {
		return outcome{}, err
	}
	defer resp.Body.Close()
	rbody, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return outcome{}, err
	}
	var out outcome
	md := map[string]*structpb.Value{}
	for k, vs := range resp.Header {
		lk := headers.Lower(k)
		for _, v := range vs {
			if c.metadataFrom.match(lk) {
				md[lk] = structpb.NewStringValue(v)
			}
		}
	}
	if len(md) > 0 {
		out.metadata = &structpb.Struct{Fields: md}
	}
	if resp.StatusCode == http.StatusOK {
		out.allowed = true
		for k, vs := range resp.Header {
			lk := headers.Lower(k)
			for _, v := range vs {
				switch {
				case c.upstreamSet.match(lk):
					out.reqSet = append(out.reqSet, httpfilter.HeaderValue{Key: lk, Value: v})
				case c.upstreamAppend.match(lk):
					out.reqSet = append(out.reqSet, httpfilter.HeaderValue{Key: lk, Value: v, Append: true})
				}
				if c.clientOnOK.match(lk) {
					out.respAdd = append(out.respAdd, httpfilter.HeaderValue{Key: lk, Value: v})
				}
			}
		}
		return out, nil
	}
	out.status, out.body = resp.StatusCode, string(rbody)
	for k, vs := range resp.Header {
		lk := headers.Lower(k)
		if lk == "content-length" || lk == "transfer-encoding" || lk == "connection" || lk == "date" || lk == "server" {
			continue
		}
		// Without allowed_client_headers, the service's headers all go to
		// the client.
		if c.clientHeaders == nil || c.clientHeaders.match(lk) {
			for _, v := range vs {
				out.denyHdrs = append(out.denyHdrs, httpfilter.HeaderValue{Key: lk, Value: v, Append: true})
			}
		}
	}
	return out, nil
}
