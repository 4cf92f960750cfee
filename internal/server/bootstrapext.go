package server

import (
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	internallistenerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/bootstrap/internal_listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
)

// bootstrapFactory compiles a bootstrap extension's typed config.
type bootstrapFactory func(s *Server, cfg proto.Message, path string) error

func init() {
	// Envoy's internal listener registry. Istio's and Envoy Gateway's
	// bootstraps always carry it; it does nothing until a listener uses an
	// internal address, which Legate refuses by name where it appears
	// (listener.internal_listener, envoy_internal_address).
	extension.Register(extension.Extension{Name: "envoy.bootstrap.internal_listener", Category: extension.Bootstrap,
		Config: &internallistenerv3.InternalListener{},
		Notes:  "accepted; internal listeners themselves are not implemented (refused where a listener or address uses one)",
		Factory: bootstrapFactory(func(_ *Server, cfg proto.Message, path string) error {
			return config.CheckFields(cfg, path, "buffer_size_kb")
		})})
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
