// Package credential_injector is envoy.filters.http.credential_injector:
// it adds a credential to every request before it goes upstream, for the
// workload behind the proxy (not for end users). The credential comes
// from an extension: envoy.http.injected_credentials.generic (a generic
// secret, static or SDS, set in a header, Authorization by default, with
// an optional prefix) or envoy.http.injected_credentials.oauth2 (an
// OAuth2 access token the proxy obtains with the client credentials grant
// from a token endpoint reached through a cluster, sent as "Bearer
// <token>" in Authorization and renewed in the background).
//
// A request that already carries the header keeps it unless overwrite is
// set (already_exists). A credential that cannot be had (an empty secret,
// no token yet) fails the request with 401 "Failed to inject credential."
// unless allow_request_without_credential lets it through without one.
// Stats are http.<stat_prefix>.credential_injector.{injected,failed,
// already_exists} and, for oauth2, http.<stat_prefix>.credential_injector.
// oauth2.{token_requested,token_fetched,token_fetch_failed_on_*}. As
// Envoy's source/extensions/filters/http/credential_injector and
// source/extensions/http/injected_credentials.
package credential_injector

import (
	"errors"
	"fmt"
	"log/slog"

	civ3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/credential_injector/v3"
	genericv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/injected_credentials/generic/v3"
	oauth2v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/injected_credentials/oauth2/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
)

// Name is the filter's name.
const Name = "envoy.filters.http.credential_injector"

func init() {
	httpfilter.Register(Name, nil, &civ3.CredentialInjector{}, nil,
		httpfilter.Factory{Compile: compile},
		"credential: envoy.http.injected_credentials.generic and envoy.http.injected_credentials.oauth2 (client credentials grant)")
}

// errAlreadyExists and errNoCredential are an injector's outcomes besides
// success (Envoy's AlreadyExists and NotFound statuses).
var (
	errAlreadyExists = errors.New("credential already exists in the header")
	errNoCredential  = errors.New("no credential to inject")
)

// injector adds the credential to a request (Envoy's CredentialInjector).
type injector interface {
	inject(h *headers.Request, overwrite bool) error
}

// starter is an injector with background work (the oauth2 token
// provider), started when the config is first used rather than compiled.
type starter interface {
	// ready starts the work on first use and waits, bounded, for its
	// first attempt to end.
	ready()
}

type filterConfig struct {
	inj                      injector
	overwrite, allowWithout  bool
	injected, failed, exists *stats.Counter
	log                      *slog.Logger
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*civ3.CredentialInjector)
	if err := config.CheckFields(c, path, "overwrite", "allow_request_without_credential", "credential"); err != nil {
		return nil, err
	}
	cp := config.Join(path, "credential")
	if err := config.CheckFields(c.GetCredential(), cp, "name", "typed_config"); err != nil {
		return nil, err
	}
	tp := config.Join(cp, "typed_config")
	if c.GetCredential().GetTypedConfig() == nil {
		return nil, config.Errorf(tp, "typed_config is required (envoy.http.injected_credentials.generic or envoy.http.injected_credentials.oauth2)")
	}
	_, m, err := extension.Unpack(c.GetCredential().GetTypedConfig(), tp)
	if err != nil {
		return nil, err
	}
	log := ctx.Log
	if log == nil {
		log = slog.Default()
	}
	// Envoy: <stat_prefix>credential_injector. for the filter and its
	// credential extension.
	prefix := "credential_injector."
	var inj injector
	switch m := m.(type) {
	case *genericv3.Generic:
		inj, err = compileGeneric(ctx, m, tp)
	case *oauth2v3.OAuth2:
		inj, err = compileOAuth2(ctx, m, tp, ctx.Scope(prefix+"oauth2."), log)
	default:
		return nil, config.Unsupported(tp, fmt.Sprintf("credential %s", proto.MessageName(m)),
			"envoy.http.injected_credentials.generic", "envoy.http.injected_credentials.oauth2")
	}
	if err != nil {
		return nil, err
	}
	sc := ctx.Scope(prefix)
	return &filterConfig{inj: inj, overwrite: c.GetOverwrite(), allowWithout: c.GetAllowRequestWithoutCredential(),
		injected: sc.Counter("injected"), failed: sc.Counter("failed"), exists: sc.Counter("already_exists"), log: log}, nil
}

// NewFilter makes the stream's filter; the first one starts the
// credential's background work (no side effects at compile time).
func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

type filter struct {
	cfg *filterConfig
	cb  httpfilter.Callbacks
}

// DecodeHeaders injects the credential.
func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	c := f.cfg
	if s, ok := c.inj.(starter); ok {
		s.ready()
	}
	err := c.inj.inject(h, c.overwrite)
	switch {
	case err == nil:
		c.injected.Inc()
	case errors.Is(err, errAlreadyExists):
		// The request's own credential stays; it goes on.
		c.exists.Inc()
	default:
		c.failed.Inc()
		c.log.Debug("credential_injector: failed to inject credential", "error", err)
		if !c.allowWithout {
			f.cb.SendLocalReply(401, "Failed to inject credential.", httpfilter.LocalReply{Details: "failed_to_inject_credential"})
			return httpfilter.StopIteration
		}
	}
	return httpfilter.Continue
}
