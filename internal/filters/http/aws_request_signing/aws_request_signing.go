// Package aws_request_signing is envoy.filters.http.aws_request_signing:
// it signs requests for an AWS service with Signature Version 4 (or 4A),
// as Envoy's aws_request_signing_filter.cc, with the signer of
// internal/filters/common/aws.
//
// For a request without a body, or with use_unsigned_payload, the filter
// signs when the headers arrive (x-amz-content-sha256 is the hash of the
// empty string, or UNSIGNED-PAYLOAD). Otherwise it holds the headers and
// buffers the whole body (within the buffer limit: 413 past it, as Envoy)
// and signs with the body's SHA-256 at its end. host_rewrite replaces the
// authority before signing (and for the upstream). A per-route
// AwsRequestSigningPerRoute replaces the whole config, with its own stats
// under <stat_prefix>aws_request_signing.
//
// Stats, under the connection manager's http.<stat_prefix>. (a cluster's
// cluster.<name>. upstream): aws_request_signing.signing_added,
// signing_failed, payload_signing_added, payload_signing_failed. As in
// Envoy, a request signed while no credentials are available goes on
// unsigned and still counts as signing_added.
//
// The filter may also run in a cluster's upstream filter chain, as Envoy
// registers it as an upstream HTTP filter too: there it signs the upstream
// request as the router sends it (after its host and path rewrites), every
// retry anew.
package aws_request_signing

import (
	"log/slog"
	"strings"

	arsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/aws_request_signing/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/filters/common/aws"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
)

// Name is the filter's name.
const Name = "envoy.filters.http.aws_request_signing"

func init() {
	httpfilter.Register(Name, nil, &arsv3.AwsRequestSigning{}, &arsv3.AwsRequestSigningPerRoute{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute, Upstream: true},
		"SigV4 and SigV4A, in headers or the query string, the body signed or UNSIGNED-PAYLOAD; also an upstream filter; "+
			"credentials inline, from the environment, the credentials file or the config file; the providers that fetch "+
			"credentials over the network (STS AssumeRole and web identity, IAM Roles Anywhere, container and EC2 "+
			"instance metadata) are not implemented")
}

// filterConfig is a compiled AwsRequestSigning (Envoy's FilterConfigImpl).
type filterConfig struct {
	signer             *aws.Signer
	hostRewrite        string
	useUnsignedPayload bool
	st                 filterStats
}

type filterStats struct {
	signingAdded, signingFailed, payloadAdded, payloadFailed *stats.Counter
}

func newStats(sc stats.Scope) filterStats {
	sc = sc.Scope("aws_request_signing.")
	return filterStats{sc.Counter("signing_added"), sc.Counter("signing_failed"),
		sc.Counter("payload_signing_added"), sc.Counter("payload_signing_failed")}
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	fc, err := compileSigning(ctx.Log, msg.(*arsv3.AwsRequestSigning), path)
	if err != nil {
		return nil, err
	}
	fc.st = newStats(ctx.Stats.Scope(ctx.StatPrefix))
	return httpfilter.ConfigFunc(func(cb httpfilter.Callbacks) httpfilter.Filter {
		return &filter{cb: cb, def: fc}
	}), nil
}

func compilePerRoute(ctx *httpfilter.Context, msg proto.Message, path string) (any, error) {
	pr := msg.(*arsv3.AwsRequestSigningPerRoute)
	if err := config.CheckFields(pr, path, "aws_request_signing", "stat_prefix"); err != nil {
		return nil, err
	}
	p := config.Join(path, "aws_request_signing")
	if pr.GetAwsRequestSigning() == nil {
		return nil, config.Errorf(p, "a per-route config needs aws_request_signing (it replaces the filter's whole config)")
	}
	fc, err := compileSigning(ctx.Log, pr.GetAwsRequestSigning(), p)
	if err != nil {
		return nil, err
	}
	// As Envoy: the per-route stats are <stat_prefix>aws_request_signing.*
	// in the server's root scope.
	fc.st = newStats(ctx.Stats.Scope(pr.GetStatPrefix()))
	return fc, nil
}

// compileSigning is Envoy's createSigner, with the filter settings.
func compileSigning(log *slog.Logger, c *arsv3.AwsRequestSigning, path string) (*filterConfig, error) {
	if err := config.CheckFields(c, path, "service_name", "region", "host_rewrite", "use_unsigned_payload",
		"match_excluded_headers", "match_included_headers", "signing_algorithm", "query_string", "credential_provider"); err != nil {
		return nil, err
	}
	s := &aws.Signer{Service: c.GetServiceName(), Region: c.GetRegion()}
	if c.GetSigningAlgorithm() == arsv3.AwsRequestSigning_AWS_SIGV4A {
		s.Algorithm = aws.SigV4A
	}
	pc, err := aws.CompileProvider(c.GetCredentialProvider(), config.Join(path, "credential_provider"))
	if err != nil {
		return nil, err
	}
	s.Credentials = pc.Provider
	for _, w := range pc.Warnings {
		if log != nil {
			log.Warn("aws_request_signing: " + w)
		}
	}
	if s.Region == "" {
		r, ok := pc.Region.Region(s.Algorithm == aws.SigV4A)
		if !ok {
			env := "AWS_REGION, AWS_DEFAULT_REGION"
			if s.Algorithm == aws.SigV4A {
				env = "AWS_SIGV4A_SIGNING_REGION_SET"
			}
			return nil, config.Errorf(config.Join(path, "region"), "AWS region is not set in the configuration and failed to be retrieved "+
				"from the environment (%s) or the AWS credentials and config files", env)
		}
		s.Region = r
	}
	if s.Algorithm == aws.SigV4 && strings.ContainsAny(s.Region, "*,") {
		return nil, config.Errorf(config.Join(path, "region"), "SigV4 region string cannot contain wildcards or commas; "+
			"region sets can be specified when using signing_algorithm: AWS_SIGV4A (region %q)", s.Region)
	}
	if err := s.CompileHeaderMatchers(c.GetMatchExcludedHeaders(), c.GetMatchIncludedHeaders(), path); err != nil {
		return nil, err
	}
	if qs := c.GetQueryString(); qs != nil {
		p := config.Join(path, "query_string")
		if err := config.CheckFields(qs, p, "expiration_time"); err != nil {
			return nil, err
		}
		s.QueryString = true
		s.Expiration = aws.DefaultExpiration
		if d := qs.GetExpirationTime(); d != nil {
			// Whole seconds, as Envoy's PROTOBUF_GET_SECONDS_OR_DEFAULT.
			s.Expiration = int(d.GetSeconds())
		}
	}
	if len(pc.Missing) > 0 && !pc.Provider.Credentials().Valid() && log != nil {
		log.Warn("aws_request_signing: no credentials in the environment or the AWS credentials file, and the providers of "+
			"Envoy's default chain that fetch them over the network are not implemented by legate: requests go unsigned "+
			"until credentials appear", "path", path, "not_implemented", strings.Join(pc.Missing, "; "))
	}
	return &filterConfig{signer: s, hostRewrite: c.GetHostRewrite(), useUnsignedPayload: c.GetUseUnsignedPayload()}, nil
}

// filter is the filter of one stream.
type filter struct {
	cb  httpfilter.Callbacks
	def *filterConfig
	// cfg is the config of this stream (per route or the filter's); req is
	// set while the headers wait for the body to be signed.
	cfg *filterConfig
	req *headers.Request
}

// config is Envoy's getConfig: the most specific per-route config, else
// the filter's.
func (f *filter) config() *filterConfig {
	if f.cfg == nil {
		f.cfg = f.def
		if pr, ok := f.cb.PerRouteConfig().(*filterConfig); ok {
			f.cfg = pr
		}
	}
	return f.cfg
}

// DecodeHeaders rewrites the host, then signs a request that has no body
// to wait for; one whose body is signed waits for it.
func (f *filter) DecodeHeaders(h *headers.Request, endStream bool) httpfilter.Status {
	c := f.config()
	if c.hostRewrite != "" {
		h.Authority = c.hostRewrite
	}
	if !c.useUnsignedPayload && !endStream {
		f.req = h
		return httpfilter.StopIteration
	}
	var res aws.Result
	var err error
	if c.useUnsignedPayload {
		res, err = c.signer.SignUnsignedPayload(h)
	} else {
		res, err = c.signer.SignEmptyPayload(h)
	}
	f.count(c, res, err, false)
	return httpfilter.Continue
}

// DecodeData buffers the body until its end, then signs with its hash.
func (f *filter) DecodeData(b *httpfilter.Buffer, endStream bool) httpfilter.Status {
	if f.req == nil {
		return httpfilter.Continue
	}
	if !endStream {
		return httpfilter.StopAndBuffer
	}
	c := f.config()
	res, err := c.signer.Sign(f.req, aws.HashPayload(b.Bytes()))
	f.req = nil
	f.count(c, res, err, true)
	return httpfilter.Continue
}

func (f *filter) count(c *filterConfig, res aws.Result, err error, payload bool) {
	if err != nil {
		f.cb.Log().Debug("aws request signing failed", "error", err)
		c.st.signingFailed.Inc()
		if payload {
			c.st.payloadFailed.Inc()
		}
		return
	}
	// As Envoy, a request left unsigned for want of credentials
	// (res.Signed false) counts as signing_added too.
	c.st.signingAdded.Inc()
	if payload {
		c.st.payloadAdded.Inc()
	}
}
