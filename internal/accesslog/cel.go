package accesslog

import (
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/cel"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// filterFactory compiles an extension filter's typed config (the Factory
// of an extension.AccessLogFilter registration).
type filterFactory func(cfg proto.Message, path string) (filter, error)

func init() {
	extension.Register(extension.Extension{Name: "envoy.access_loggers.extension_filters.cel", Category: extension.AccessLogFilter,
		Config: &celv3.ExpressionFilter{},
		Notes:  "CEL's standard library with string functions always on (cel_config only widens what Envoy allows)",
		Factory: filterFactory(func(cfg proto.Message, path string) (filter, error) {
			ef := cfg.(*celv3.ExpressionFilter)
			if err := config.CheckFields(ef, path, "expression", "cel_config"); err != nil {
				return nil, err
			}
			p, err := cel.CompileText(ef.GetExpression(), config.Join(path, "expression"))
			if err != nil {
				return nil, err
			}
			// An expression that errors does not log, as Envoy.
			return func(i *streaminfo.Info) bool { return p.Matches(i.Request, i) }, nil
		})})
}
