package http1

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/legateproxy/legate/internal/config"
)

// HeaderKeyFormat compiles Http1ProtocolOptions.header_key_format (at
// path): proper reports proper_case_words. The stateful formatters
// (preserve_case) keep each header's case as it arrived, which Legate's
// header maps do not record, so they are refused.
func HeaderKeyFormat(f *corev3.Http1ProtocolOptions_HeaderKeyFormat, path string) (proper bool, err error) {
	switch f.GetHeaderFormat().(type) {
	case nil:
		return false, nil
	case *corev3.Http1ProtocolOptions_HeaderKeyFormat_ProperCaseWords_:
		return true, nil
	default:
		return false, config.Unsupported(config.Join(path, "stateful_formatter"), "stateful header formatters (preserve_case)", "proper_case_words")
	}
}
