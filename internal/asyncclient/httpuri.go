package asyncclient

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
)

// HostPath splits an HttpUri's uri (a JWKS, token or collector endpoint)
// as Envoy's Http::Utility::extractHostPathFromUri: the authority after
// "://" (or from the start), the path from the first '/' after it ("/"
// when there is none). The side call goes to the HttpUri's cluster with
// that host as its :authority.
func HostPath(uri string) (host, path string) {
	if i := strings.Index(uri, "://"); i >= 0 {
		uri = uri[i+3:]
	}
	if i := strings.IndexByte(uri, '/'); i >= 0 {
		return uri[:i], uri[i:]
	}
	return uri, "/"
}

// ServiceHeader reads one of an HttpService's request_headers_to_add (hv,
// at path) for an exporter's POSTs: the lower-cased name, which may not
// be empty or a pseudo-header, and the value, sent as written (substitution
// formatters and raw_value are refused). The caller checks which other
// fields of hv it implements.
func ServiceHeader(hv *corev3.HeaderValueOption, path string) (name, value string, err error) {
	name, value = headers.Lower(hv.GetHeader().GetKey()), hv.GetHeader().GetValue()
	if name == "" || strings.HasPrefix(name, ":") {
		return "", "", config.Errorf(config.Join(path, "header.key"), "invalid header name %q", hv.GetHeader().GetKey())
	}
	if strings.Contains(value, "%") {
		return "", "", config.Unsupported(config.Join(path, "header.value"), "substitution formatters in OTLP export headers")
	}
	if len(hv.GetHeader().GetRawValue()) > 0 {
		return "", "", config.Unsupported(config.Join(path, "header.raw_value"), "raw_value")
	}
	return name, value, nil
}
