package applog

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// FromConfig compiles the bootstrap's application_log_config into a
// handler writing to w at level lv. escaped is --log-format-escaped.
func FromConfig(alc *bootstrapv3.Bootstrap_ApplicationLogConfig, w io.Writer, lv slog.Leveler, escaped bool) (*Handler, error) {
	lf := alc.GetLogFormat()
	if lf == nil {
		return nil, fmt.Errorf("application_log_config: log_format is required")
	}
	o := Options{Level: lv, Escaped: escaped}
	switch f := lf.GetLogFormat().(type) {
	case *bootstrapv3.Bootstrap_ApplicationLogConfig_LogFormat_TextFormat:
		o.Format = f.TextFormat
		if o.Format == "" {
			return nil, fmt.Errorf("application_log_config.log_format.text_format: empty format")
		}
	case *bootstrapv3.Bootstrap_ApplicationLogConfig_LogFormat_JsonFormat:
		o.JSON = map[string]string{}
		for k, v := range f.JsonFormat.GetFields() {
			sv, ok := v.GetKind().(*structpb.Value_StringValue)
			if !ok {
				return nil, fmt.Errorf("application_log_config.log_format.json_format.%s: only string values (formats) are implemented", k)
			}
			// As Envoy: %v and %_ would put unescaped text inside a JSON
			// string; %j is the message for JSON.
			if strings.Contains(sv.StringValue, "%v") || strings.Contains(sv.StringValue, "%_") {
				return nil, fmt.Errorf("application_log_config.log_format.json_format.%s: %%v and %%_ are not allowed in a JSON format; use %%j", k)
			}
			o.JSON[k] = sv.StringValue
		}
		if len(o.JSON) == 0 {
			return nil, fmt.Errorf("application_log_config.log_format.json_format: empty format")
		}
	default:
		return nil, fmt.Errorf("application_log_config.log_format: give text_format or json_format")
	}
	h, err := New(w, o)
	if err != nil {
		return nil, fmt.Errorf("application_log_config.log_format: %w", err)
	}
	return h, nil
}
