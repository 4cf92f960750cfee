// Package sni_cluster is envoy.filters.network.sni_cluster: it names the
// upstream cluster of a connection after its SNI, by setting the
// envoy.tcp_proxy.cluster filter state that tcp_proxy routes by.
package sni_cluster

import (
	snicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/sni_cluster/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/filters/network/tcp_proxy"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.filters.network.sni_cluster", Category: extension.NetworkFilter,
		Config: &snicv3.SniCluster{},
		Factory: listener.ConnFilterFactory(func(_ *listener.Context, cfg proto.Message, _ listener.ChainOptions, path string) (listener.ConnFilter, error) {
			if err := config.CheckFields(cfg, path); err != nil {
				return nil, err
			}
			return listener.ConnFilterFunc(onNewConnection), nil
		}),
		Notes: "the SNI is the terminated TLS connection's or, on TLS passthrough chains, the tls_inspector's"})
}

// onNewConnection sets the cluster to the SNI; a connection without one
// keeps tcp_proxy's configured cluster, as Envoy. The value stays mutable
// in Envoy, so a later filter may set another.
func onNewConnection(tc *listener.Conn) error {
	if tc.SNI != "" {
		tc.SetFilterState(tcp_proxy.ClusterKey, streaminfo.StringObject(tc.SNI))
	}
	return nil
}
