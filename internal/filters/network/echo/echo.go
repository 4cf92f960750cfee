// Package echo is envoy.filters.network.echo: a terminal network filter
// that writes back every byte it reads, until the client closes.
package echo

import (
	echov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/echo/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/listener"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.filters.network.echo", Category: extension.NetworkFilter,
		Config: &echov3.Echo{},
		Factory: listener.NetworkFilterFactory(func(_ *listener.Context, cfg proto.Message, _ listener.ChainOptions, path string) (listener.NetworkFilter, error) {
			if err := config.CheckFields(cfg, path); err != nil {
				return nil, err
			}
			return listener.NetworkFilterFunc(serve), nil
		})})
}

// serve echoes the connection. Envoy's echo does not enable half-close, so
// the client's end of stream closes the connection (after what was read
// before it is written back).
func serve(tc *listener.Conn) {
	buf := make([]byte, 16*1024)
	for {
		n, err := tc.Conn.Read(buf)
		if n > 0 {
			if _, werr := tc.Conn.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
