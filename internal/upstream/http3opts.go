package upstream

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/quic-go/quic-go"

	"github.com/legateproxy/legate/internal/config"
)

// QUICProtocolOptions applies a QuicProtocolOptions (a QUIC listener's
// quic_options.quic_protocol_options, an HTTP/3 cluster's
// http3_protocol_options.quic_protocol_options) at path to qc; fields
// quic-go has no equivalent of are errors naming them.
func QUICProtocolOptions(o *corev3.QuicProtocolOptions, path string, qc *quic.Config) error {
	if o == nil {
		return nil
	}
	if err := config.CheckFields(o, path, "max_concurrent_streams", "initial_stream_window_size", "initial_connection_window_size",
		"idle_network_timeout", "connection_keepalive",
		// tuning with no effect on what is served: packet sizes and writers
		"max_packet_length", "connection_options", "client_connection_options"); err != nil {
		return err
	}
	if v := o.GetMaxConcurrentStreams(); v != nil {
		qc.MaxIncomingStreams = int64(v.GetValue())
	}
	if v := o.GetInitialStreamWindowSize(); v != nil {
		qc.InitialStreamReceiveWindow = uint64(v.GetValue())
		qc.MaxStreamReceiveWindow = max(qc.MaxStreamReceiveWindow, uint64(v.GetValue()))
	}
	if v := o.GetInitialConnectionWindowSize(); v != nil {
		qc.InitialConnectionReceiveWindow = uint64(v.GetValue())
		qc.MaxConnectionReceiveWindow = max(qc.MaxConnectionReceiveWindow, uint64(v.GetValue()))
	}
	if v := o.GetIdleNetworkTimeout(); v != nil {
		qc.MaxIdleTimeout = v.AsDuration()
	}
	if ka := o.GetConnectionKeepalive(); ka != nil {
		kp := config.Join(path, "connection_keepalive")
		if err := config.CheckFields(ka, kp, "max_interval", "initial_interval"); err != nil {
			return err
		}
		// quic-go pings at one fixed period: the longest Envoy would wait.
		if v := ka.GetMaxInterval(); v != nil {
			qc.KeepAlivePeriod = v.AsDuration()
		} else if v := ka.GetInitialInterval(); v != nil {
			qc.KeepAlivePeriod = v.AsDuration()
		}
	}
	if qc.MaxIdleTimeout == 0 {
		qc.MaxIdleTimeout = 300 * time.Second
	}
	return nil
}
