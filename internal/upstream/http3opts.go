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
		"idle_network_timeout", "connection_keepalive", "max_packet_length", "connection_options", "client_connection_options"); err != nil {
		return err
	}
	// connection_options are QUICHE's connection option tags (congestion
	// control, loss detection, pacing experiments): quic-go has none.
	if o.GetConnectionOptions() != "" {
		return config.Unsupported(config.Join(path, "connection_options"), "QUICHE connection options (quic-go has no connection option tags)")
	}
	if o.GetClientConnectionOptions() != "" {
		return config.Unsupported(config.Join(path, "client_connection_options"), "QUICHE client connection options (quic-go has no connection option tags)")
	}
	if v := o.GetMaxPacketLength(); v != nil && v.GetValue() != 0 {
		// QUICHE sends packets of max_packet_length and no larger: quic-go
		// starts at InitialPacketSize and grows it by path MTU discovery,
		// which is turned off so that the size stays the maximum.
		n := v.GetValue()
		if n < 1200 {
			// RFC 9000 section 14: a QUIC path carries datagrams of 1200 bytes at least.
			return config.Errorf(config.Join(path, "max_packet_length"), "%d is below QUIC's minimum datagram size 1200 (RFC 9000 section 14)", n)
		}
		// 1452 is both QUICHE's and quic-go's largest outgoing packet.
		qc.InitialPacketSize = uint16(min(n, 1452))
		qc.DisablePathMTUDiscovery = true
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
