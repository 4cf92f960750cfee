package server

import (
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	internallistenerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/bootstrap/internal_listener/v3"
	googlere2v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/regex_engines/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/userspace"
)

// bootstrapFactory compiles a bootstrap extension's typed config.
type bootstrapFactory func(s *Server, cfg proto.Message, path string) error

func init() {
	// Envoy's internal listener registry: listeners with internal_listener
	// and cluster endpoints with an envoy_internal_address need it (Envoy
	// refuses an internal listener without it).
	extension.Register(extension.Extension{Name: "envoy.bootstrap.internal_listener", Category: extension.Bootstrap,
		Config: &internallistenerv3.InternalListener{},
		Notes:  "internal connections are in-process socketpairs; buffer_size_kb sets their socket buffers",
		Factory: bootstrapFactory(func(s *Server, cfg proto.Message, path string) error {
			if err := config.CheckFields(cfg, path, "buffer_size_kb"); err != nil {
				return err
			}
			size := userspace.DefaultBufferSize
			if v := cfg.(*internallistenerv3.InternalListener).GetBufferSizeKb(); v != nil {
				size = int(v.GetValue()) * 1024
			}
			s.internal = userspace.NewRegistry(size)
			return nil
		})})
}

func init() {
	// Legate's regular expressions are Go's regexp, which implements RE2's
	// syntax and linear-time guarantee: google_re2 is what it always runs.
	extension.Register(extension.Extension{Name: "envoy.regex_engines.google_re2", Category: extension.RegexEngine,
		Config: &googlere2v3.GoogleRE2{},
		Notes:  "Go's regexp, which implements RE2's syntax; the only engine, so default_regex_engine changes nothing"})
}

// checkRegexEngine resolves default_regex_engine through the registry, so
// an engine Legate lacks (hyperscan) is "not implemented".
func checkRegexEngine(b *bootstrapv3.Bootstrap) error {
	e := b.GetDefaultRegexEngine()
	if e == nil {
		return nil
	}
	if err := config.CheckFields(e, "default_regex_engine", "name", "typed_config"); err != nil {
		return err
	}
	_, err := extension.Lookup(extension.RegexEngine, e.GetTypedConfig(), "default_regex_engine.typed_config")
	return err
}

// compileBootstrapExtensions compiles bootstrap_extensions through the
// registry.
func (s *Server) compileBootstrapExtensions(b *bootstrapv3.Bootstrap) error {
	for i, e := range b.GetBootstrapExtensions() {
		p := config.Index("bootstrap_extensions", i)
		if err := config.CheckFields(e, p, "name", "typed_config"); err != nil {
			return err
		}
		tp := config.Join(p, "typed_config")
		r, err := extension.Lookup(extension.Bootstrap, e.GetTypedConfig(), tp)
		if err != nil {
			return err
		}
		if err := r.Ext.Factory.(bootstrapFactory)(s, r.Config, tp); err != nil {
			return err
		}
	}
	return nil
}
