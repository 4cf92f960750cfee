// Package ratelimit is the client of Envoy's global Rate Limit Service
// (envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit) that the
// HTTP and network rate limit filters share, as Envoy's
// source/extensions/filters/common/ratelimit: it compiles a
// RateLimitServiceConfig (envoy_grpc through the cluster manager,
// transport_api_version V3), sends a domain and descriptors, and turns the
// answer — or a failure — into a Result.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	commonrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/route"
)

// Method is the gRPC method the filters call.
const Method = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

// DefaultTimeout is the filters' timeout when theirs is unset (20ms).
const DefaultTimeout = 20 * time.Millisecond

// Service is a compiled rate_limit_service: where and how to call.
type Service struct {
	async    *asyncclient.Client
	cluster  string
	target   asyncclient.GRPCTarget
	metadata []string // initial_metadata as key, value pairs
}

// Cluster is the cluster the service is reached through.
func (s *Service) Cluster() string { return s.cluster }

// CompileService compiles a RateLimitServiceConfig at path. As Envoy, the
// transport API version must be V3 (AUTO and V2 are refused).
func CompileService(c *ratelimitconfv3.RateLimitServiceConfig, path string, async *asyncclient.Client) (*Service, error) {
	if c == nil {
		return nil, config.Errorf(path, "rate_limit_service is required")
	}
	if err := config.CheckFields(c, path, "grpc_service", "transport_api_version"); err != nil {
		return nil, err
	}
	if c.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		return nil, config.Errorf(config.Join(path, "transport_api_version"),
			"V2 (and AUTO) transport API versions are no longer supported; set transport_api_version: V3 (as Envoy)")
	}
	gp := config.Join(path, "grpc_service")
	gs := c.GetGrpcService()
	// grpc_service.timeout is accepted and has no effect, as in Envoy: the
	// rate limit client sets the filter's own timeout on every call.
	if err := config.CheckFields(gs, gp, "envoy_grpc", "google_grpc", "timeout", "initial_metadata"); err != nil {
		return nil, err
	}
	t, err := asyncclient.CompileGRPCTarget(gs, gp)
	if err != nil {
		return nil, err
	}
	s := &Service{async: async, target: t, cluster: t.String()}
	for _, m := range gs.GetInitialMetadata() {
		s.metadata = append(s.metadata, headers.Lower(m.GetKey()), m.GetValue())
	}
	return s, nil
}

// Status is the outcome of a call.
type Status uint8

// Call outcomes (Envoy's LimitStatus).
const (
	// OK: no descriptor is over its limit.
	OK Status = iota
	// OverLimit: at least one descriptor is over its limit.
	OverLimit
	// Error: the service could not be reached or failed.
	Error
)

// Result is what a call returned.
type Result struct {
	Status Status
	// Statuses are the per-descriptor statuses, in request order.
	Statuses []*rlsv3.RateLimitResponse_DescriptorStatus
	// ResponseHeaders and RequestHeaders are the service's
	// response_headers_to_add and request_headers_to_add (names lower case).
	ResponseHeaders, RequestHeaders []headers.Field
	// Body is raw_body, the body of a local reply.
	Body string
	// Metadata is dynamic_metadata (nil when none).
	Metadata *structpb.Struct
	// Err says why the call failed (Status Error).
	Err error
}

// Request builds the RateLimitRequest for domain and descriptors.
func Request(domain string, ds []route.Descriptor, hitsAddend uint32) *rlsv3.RateLimitRequest {
	req := &rlsv3.RateLimitRequest{Domain: domain, HitsAddend: hitsAddend}
	for _, d := range ds {
		pd := &commonrlv3.RateLimitDescriptor{IsNegativeHits: d.NegativeHits}
		for _, e := range d.Entries {
			pd.Entries = append(pd.Entries, &commonrlv3.RateLimitDescriptor_Entry{Key: e.Key, Value: e.Value})
		}
		if d.Limit != nil {
			pd.Limit = &commonrlv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: d.Limit.RequestsPerUnit, Unit: d.Limit.Unit}
		}
		if d.HitsAddend != nil {
			pd.HitsAddend = wrapperspb.UInt64(*d.HitsAddend)
		}
		req.Descriptors = append(req.Descriptors, pd)
	}
	return req
}

// errUnknownCode is a response whose overall_code is UNKNOWN.
var errUnknownCode = errors.New("the rate limit service answered overall_code UNKNOWN")

// Limit asks the service about descriptors in domain, waiting at most
// timeout (0: no limit).
func (s *Service) Limit(ctx context.Context, timeout time.Duration, req *rlsv3.RateLimitRequest) Result {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cc, err := s.async.GRPCTo(s.target)
	if err != nil {
		return Result{Status: Error, Err: fmt.Errorf("rate limit service cluster %q: %w", s.cluster, err)}
	}
	if len(s.metadata) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, s.metadata...)
	}
	resp := &rlsv3.RateLimitResponse{}
	if err := cc.Invoke(ctx, Method, req, resp); err != nil {
		return Result{Status: Error, Err: fmt.Errorf("rate limit service call through cluster %q: %w", s.cluster, err)}
	}
	r := Result{Status: OK, Statuses: resp.GetStatuses(), Body: string(resp.GetRawBody()), Metadata: resp.GetDynamicMetadata()}
	switch resp.GetOverallCode() {
	case rlsv3.RateLimitResponse_OVER_LIMIT:
		r.Status = OverLimit
	case rlsv3.RateLimitResponse_UNKNOWN:
		// Envoy asserts on UNKNOWN and otherwise treats it as OK; say so
		// in the logs of whoever calls.
		r.Err = errUnknownCode
	}
	for _, h := range resp.GetResponseHeadersToAdd() {
		r.ResponseHeaders = append(r.ResponseHeaders, headers.Field{Name: headers.Lower(h.GetKey()), Value: h.GetValue()})
	}
	for _, h := range resp.GetRequestHeadersToAdd() {
		r.RequestHeaders = append(r.RequestHeaders, headers.Field{Name: headers.Lower(h.GetKey()), Value: h.GetValue()})
	}
	return r
}
