// Package direct_response is envoy.filters.network.direct_response: a
// terminal network filter that writes a fixed response (a DataSource) to
// every new connection and closes it after the write.
package direct_response

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	drv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/direct_response/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/listener"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.filters.network.direct_response", Category: extension.NetworkFilter,
		Config: &drv3.Config{},
		Factory: listener.NetworkFilterFactory(func(_ *listener.Context, cfg proto.Message, _ listener.ChainOptions, path string) (listener.NetworkFilter, error) {
			return compile(cfg.(*drv3.Config), path)
		})})
}

// filter is a compiled direct_response.
type filter struct {
	response []byte
}

func compile(c *drv3.Config, path string) (*filter, error) {
	if err := config.CheckFields(c, path, "response"); err != nil {
		return nil, err
	}
	b, err := read(c.GetResponse(), config.Join(path, "response"))
	if err != nil {
		return nil, err
	}
	return &filter{response: b}, nil
}

// read reads a DataSource as Envoy's Config::DataSource::read with
// allow_empty: an unset source is an empty response.
func read(ds *corev3.DataSource, path string) ([]byte, error) {
	if ds == nil {
		return nil, nil
	}
	if err := config.CheckFields(ds, path, "filename", "inline_bytes", "inline_string", "environment_variable"); err != nil {
		return nil, err
	}
	if ds.GetSpecifier() == nil {
		return nil, nil
	}
	b, _, err := config.ReadDataSource(ds, path)
	return b, err
}

// ServeConn writes the response, ends the write side (Envoy writes it with
// end_stream on a half-close connection) and returns: the listener closes
// the connection. What the client sends is never read.
func (f *filter) ServeConn(tc *listener.Conn) {
	if len(f.response) > 0 {
		if _, err := tc.Conn.Write(f.response); err != nil {
			return
		}
	}
	if cw, ok := tc.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}
