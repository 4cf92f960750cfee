package credential_injector

import (
	"strings"

	genericv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/injected_credentials/generic/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/tlsx"
)

// generic is envoy.http.injected_credentials.generic: a generic secret's
// value, after an optional prefix, in a header.
type generic struct {
	header string // lower case
	prefix string
	secret *tlsx.Secret
}

func compileGeneric(ctx *httpfilter.Context, m *genericv3.Generic, path string) (*generic, error) {
	if err := config.CheckFields(m, path, "credential", "header", "header_value_prefix"); err != nil {
		return nil, err
	}
	sec, err := resolveSecret(ctx, m.GetCredential(), config.Join(path, "credential"))
	if err != nil {
		return nil, err
	}
	g := &generic{header: "authorization", prefix: m.GetHeaderValuePrefix(), secret: sec}
	if m.GetHeader() != "" {
		g.header = headers.Lower(m.GetHeader())
	}
	return g, nil
}

func (g *generic) inject(h *headers.Request, overwrite bool) error {
	if _, ok := h.Map.Lookup(g.header); ok && !overwrite {
		return errAlreadyExists
	}
	// As Envoy: secret files often end with a newline, which a header
	// value cannot carry.
	v := strings.TrimRight(string(g.secret.Generic()), "\r\n")
	if v == "" {
		return errNoCredential
	}
	h.Map.Set(g.header, g.prefix+v)
	return nil
}

// resolveSecret finds a generic secret (static, or filled by SDS once the
// listener is accepted).
func resolveSecret(ctx *httpfilter.Context, sc *tlsv3.SdsSecretConfig, path string) (*tlsx.Secret, error) {
	if sc == nil {
		return nil, config.Errorf(path, "a secret is required")
	}
	if ctx.SDS == nil {
		return nil, config.Errorf(path, "secrets are not available here")
	}
	return ctx.SDS(sc, path)
}
