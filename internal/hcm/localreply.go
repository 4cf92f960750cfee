package hcm

import (
	"github.com/legateproxy/legate/internal/listener"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/legateproxy/legate/internal/accesslog"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/format"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// localReplyConfig is the connection manager's local_reply_config: how
// Envoy rewrites the replies it generates itself (404 no route, 503 no
// healthy upstream, a filter's 403 …). The first mapper whose filter
// matches may change the status, the body and the headers; then the body
// is formatted (the mapper's body_format_override, else body_format) with
// %LOCAL_REPLY_BODY% standing for the body.
type localReplyConfig struct {
	mappers     []replyMapper
	format      format.Entry
	contentType string
}

type replyMapper struct {
	match       func(*streaminfo.Info) bool
	status      int
	body        *string
	format      format.Entry
	contentType string
	headers     []route.HeaderOp
}

func compileLocalReply(lc *hcmv3.LocalReplyConfig, path string, d *listener.Context) (*localReplyConfig, error) {
	if err := config.CheckFields(lc, path, "mappers", "body_format"); err != nil {
		return nil, err
	}
	out := &localReplyConfig{}
	var err error
	if bf := lc.GetBodyFormat(); bf != nil {
		if out.format, out.contentType, err = compileReplyFormat(bf, config.Join(path, "body_format")); err != nil {
			return nil, err
		}
	}
	for i, m := range lc.GetMappers() {
		p := config.Index(config.Join(path, "mappers"), i)
		if err := config.CheckFields(m, p, "filter", "status_code", "body", "body_format_override", "headers_to_add"); err != nil {
			return nil, err
		}
		rm := replyMapper{}
		if rm.match, err = accesslog.CompileFilter(m.GetFilter(), config.Join(p, "filter"), d.LogFiles); err != nil {
			return nil, err
		}
		if v := m.GetStatusCode(); v != nil {
			rm.status = int(v.GetValue())
		}
		if b := m.GetBody(); b != nil {
			text, err := dataSource(b, config.Join(p, "body"))
			if err != nil {
				return nil, err
			}
			rm.body = &text
		}
		if bf := m.GetBodyFormatOverride(); bf != nil {
			if rm.format, rm.contentType, err = compileReplyFormat(bf, config.Join(p, "body_format_override")); err != nil {
				return nil, err
			}
		}
		if len(m.GetHeadersToAdd()) > 0 {
			if rm.headers, err = route.CompileHeaderOps(m.GetHeadersToAdd(), config.Join(p, "headers_to_add"), d.CompileValue); err != nil {
				return nil, err
			}
		}
		out.mappers = append(out.mappers, rm)
	}
	return out, nil
}

// compileReplyFormat compiles a body format and its content type (Envoy:
// text/plain for text, application/json for JSON, unless content_type).
func compileReplyFormat(f *corev3.SubstitutionFormatString, path string) (format.Entry, string, error) {
	e, err := format.FromSubstitutionFormatString(f, path)
	if err != nil {
		return nil, "", err
	}
	ct := "text/plain" // Envoy's ContentTypeValues.Text
	if f.GetJsonFormat() != nil {
		ct = "application/json"
	}
	if f.GetContentType() != "" {
		ct = f.GetContentType()
	}
	return e, ct, nil
}

func dataSource(ds *corev3.DataSource, path string) (string, error) {
	b, _, err := config.ReadDataSource(ds, path)
	return string(b), err
}

// rewrite applies the config to a local reply about to be sent: it
// returns the status, body and content type to send ("" content type:
// unchanged) and adds the mapper's headers to the response.
func (lr *localReplyConfig) rewrite(s *stream, status int, body string) (int, string, string) {
	info := &s.info
	info.ResponseCode = status
	fmtEntry, ct := lr.format, lr.contentType
	for i := range lr.mappers {
		m := &lr.mappers[i]
		if !m.match(info) {
			continue
		}
		// Envoy's order: body, headers_to_add (where %RESPONSE_CODE% is
		// still the original code), status_code, then the body format
		// (which sees the rewritten code).
		if m.body != nil {
			body = *m.body
		}
		if len(m.headers) > 0 {
			route.ApplyHeaderOps(&s.resp.Map, m.headers, info)
		}
		if m.status != 0 {
			status = m.status
			info.ResponseCode = status
		}
		if m.format != nil {
			fmtEntry, ct = m.format, m.contentType
		}
		break
	}
	if fmtEntry == nil {
		return status, body, ""
	}
	info.LocalReplyBody = body
	out := string(fmtEntry.Append(nil, info))
	info.LocalReplyBody = ""
	if out == "" {
		return status, out, ""
	}
	return status, out, ct
}
