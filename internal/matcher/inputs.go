package matcher

import (
	"net/url"
	"strconv"
	"strings"

	networkinputsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/common_inputs/network/v3"
	sslinputsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/common_inputs/ssl/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func register(name string, cfg proto.Message, f InputFactory) {
	extension.Register(extension.Extension{Name: name, Category: extension.MatchingInput, Config: cfg, Factory: f})
}

func fixed(in Input) InputFactory {
	return func(cfg proto.Message, path string) (Input, error) {
		if err := config.CheckFields(cfg, path); err != nil {
			return nil, err
		}
		return in, nil
	}
}

func init() {
	register("envoy.matching.inputs.request_headers", &matcherv3.HttpRequestHeaderMatchInput{}, func(cfg proto.Message, path string) (Input, error) {
		name := headers.Lower(cfg.(*matcherv3.HttpRequestHeaderMatchInput).GetHeaderName())
		return func(d *Data) (string, bool) {
			if d.Req == nil {
				return "", false
			}
			// Pseudo-headers come from the request line, as Envoy's map
			// holds them; several values are joined with ",", as Envoy.
			if strings.HasPrefix(name, ":") || name == "host" {
				return d.Req.Lookup(name)
			}
			if !d.Req.Map.Has(name) {
				return "", false
			}
			return d.Req.Map.Joined(name), true
		}, nil
	})
	register("envoy.matching.inputs.request_trailers", &matcherv3.HttpRequestTrailerMatchInput{}, func(cfg proto.Message, path string) (Input, error) {
		name := headers.Lower(cfg.(*matcherv3.HttpRequestTrailerMatchInput).GetHeaderName())
		return func(d *Data) (string, bool) {
			if d.Info == nil || d.Info.ReqTrailers == nil || !d.Info.ReqTrailers.Has(name) {
				return "", false
			}
			return d.Info.ReqTrailers.Joined(name), true
		}, nil
	})
	register("envoy.matching.inputs.response_headers", &matcherv3.HttpResponseHeaderMatchInput{}, func(cfg proto.Message, path string) (Input, error) {
		name := headers.Lower(cfg.(*matcherv3.HttpResponseHeaderMatchInput).GetHeaderName())
		return func(d *Data) (string, bool) {
			if d.Resp == nil || !d.Resp.Map.Has(name) {
				return "", false
			}
			return d.Resp.Map.Joined(name), true
		}, nil
	})
	register("envoy.matching.inputs.response_trailers", &matcherv3.HttpResponseTrailerMatchInput{}, func(cfg proto.Message, path string) (Input, error) {
		name := headers.Lower(cfg.(*matcherv3.HttpResponseTrailerMatchInput).GetHeaderName())
		return func(d *Data) (string, bool) {
			if d.Info == nil || d.Info.RespTrailers == nil || !d.Info.RespTrailers.Has(name) {
				return "", false
			}
			return d.Info.RespTrailers.Joined(name), true
		}, nil
	})
	register("envoy.matching.inputs.query_params", &matcherv3.HttpRequestQueryParamMatchInput{}, func(cfg proto.Message, path string) (Input, error) {
		name := cfg.(*matcherv3.HttpRequestQueryParamMatchInput).GetQueryParam()
		return func(d *Data) (string, bool) {
			if d.Req == nil {
				return "", false
			}
			_, q, ok := strings.Cut(d.Req.Path, "?")
			if !ok {
				return "", false
			}
			vs, err := url.ParseQuery(q)
			if err != nil || len(vs[name]) == 0 {
				return "", false
			}
			return vs[name][0], true
		}, nil
	})
	ip := func(get func(*streaminfo.Info) string) Input {
		return func(d *Data) (string, bool) {
			if d.Info == nil {
				return "", false
			}
			v := get(d.Info)
			return v, v != ""
		}
	}
	register("envoy.matching.inputs.destination_ip", &networkinputsv3.DestinationIPInput{}, fixed(ip(func(i *streaminfo.Info) string {
		if !i.DownstreamLocal.IsValid() {
			return ""
		}
		return i.DownstreamLocal.Addr().Unmap().String()
	})))
	register("envoy.matching.inputs.destination_port", &networkinputsv3.DestinationPortInput{}, fixed(ip(func(i *streaminfo.Info) string {
		if !i.DownstreamLocal.IsValid() {
			return ""
		}
		return strconv.Itoa(int(i.DownstreamLocal.Port()))
	})))
	register("envoy.matching.inputs.source_ip", &networkinputsv3.SourceIPInput{}, fixed(ip(func(i *streaminfo.Info) string {
		if !i.DownstreamRemote.IsValid() {
			return ""
		}
		return i.DownstreamRemote.Addr().Unmap().String()
	})))
	register("envoy.matching.inputs.direct_source_ip", &networkinputsv3.DirectSourceIPInput{}, fixed(ip(func(i *streaminfo.Info) string {
		if !i.DownstreamDirectRemote.IsValid() {
			return ""
		}
		return i.DownstreamDirectRemote.Addr().Unmap().String()
	})))
	register("envoy.matching.inputs.source_port", &networkinputsv3.SourcePortInput{}, fixed(ip(func(i *streaminfo.Info) string {
		if !i.DownstreamRemote.IsValid() {
			return ""
		}
		return strconv.Itoa(int(i.DownstreamRemote.Port()))
	})))
	register("envoy.matching.inputs.source_type", &networkinputsv3.SourceTypeInput{}, fixed(ip(func(i *streaminfo.Info) string {
		// "local" when the peer is on this host (loopback or our own address).
		a := i.DownstreamDirectRemote.Addr().Unmap()
		if a.IsLoopback() || (i.DownstreamLocal.IsValid() && a == i.DownstreamLocal.Addr().Unmap()) {
			return "local"
		}
		return ""
	})))
	register("envoy.matching.inputs.server_name", &networkinputsv3.ServerNameInput{}, fixed(ip(func(i *streaminfo.Info) string { return i.RequestedServerName })))
	register("envoy.matching.inputs.application_protocol", &networkinputsv3.ApplicationProtocolInput{}, fixed(ip(func(i *streaminfo.Info) string {
		// Envoy's form: each protocol quoted, comma-separated ("'h2','http/1.1'").
		var b strings.Builder
		for j, p := range i.ApplicationProtocols {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString("'" + p + "'")
		}
		return b.String()
	})))
	register("envoy.matching.inputs.transport_protocol", &networkinputsv3.TransportProtocolInput{}, fixed(ip(func(i *streaminfo.Info) string {
		if i.TransportProtocol != "" {
			return i.TransportProtocol
		}
		if i.DownstreamTLS != nil {
			return "tls"
		}
		return "raw_buffer"
	})))
	register("envoy.matching.inputs.filter_state", &networkinputsv3.FilterStateInput{}, func(cfg proto.Message, path string) (Input, error) {
		key := cfg.(*networkinputsv3.FilterStateInput).GetKey()
		return func(d *Data) (string, bool) {
			if d.Info == nil {
				return "", false
			}
			v, ok := d.Info.FilterState[key]
			if !ok || v == nil {
				return "", false
			}
			return v.String(), true
		}, nil
	})
	peer := func(get func(*streaminfo.TLSInfo) string) Input {
		return func(d *Data) (string, bool) {
			if d.Info == nil || d.Info.DownstreamTLS == nil || d.Info.DownstreamTLS.PeerCert == nil {
				return "", false
			}
			v := get(d.Info.DownstreamTLS)
			return v, v != ""
		}
	}
	register("envoy.matching.inputs.uri_san", &sslinputsv3.UriSanInput{}, fixed(peer(func(t *streaminfo.TLSInfo) string { return strings.Join(t.PeerURISAN, ",") })))
	register("envoy.matching.inputs.dns_san", &sslinputsv3.DnsSanInput{}, fixed(peer(func(t *streaminfo.TLSInfo) string { return strings.Join(t.PeerDNSSAN, ",") })))
	register("envoy.matching.inputs.subject", &sslinputsv3.SubjectInput{}, fixed(peer(func(t *streaminfo.TLSInfo) string { return t.PeerSubject })))
}
