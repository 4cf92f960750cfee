package contourconfig

import (
	"fmt"
	"regexp"
	"strings"
)

// jsonFieldFormats are Contour's named json-fields and the Envoy command
// operator each logs; other names must be an operator without arguments
// (logged as %NAME%) or a "name=format" pair.
var jsonFieldFormats = map[string]string{
	"@timestamp":               "%START_TIME%",
	"ts":                       "%START_TIME%",
	"authority":                "%REQ(:AUTHORITY)%",
	"method":                   "%REQ(:METHOD)%",
	"path":                     "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
	"request_id":               "%REQ(X-REQUEST-ID)%",
	"uber_trace_id":            "%REQ(UBER-TRACE-ID)%",
	"upstream_service_time":    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
	"user_agent":               "%REQ(USER-AGENT)%",
	"x_forwarded_for":          "%REQ(X-FORWARDED-FOR)%",
	"x_trace_id":               "%REQ(X-TRACE-ID)%",
	"tls_ja3_fingerprint":      "%TLS_JA3_FINGERPRINT%",
	"tls_ja4_fingerprint":      "%TLS_JA4_FINGERPRINT%",
	"contour_config_kind":      "%METADATA(ROUTE:envoy.access_loggers.file:io.projectcontour.kind)%",
	"contour_config_namespace": "%METADATA(ROUTE:envoy.access_loggers.file:io.projectcontour.namespace)%",
	"contour_config_name":      "%METADATA(ROUTE:envoy.access_loggers.file:io.projectcontour.name)%",
}

// simpleOperators are the Envoy command operators without arguments that
// Contour accepts in formats and as json-fields names.
var simpleOperators = setOf(`BYTES_RECEIVED BYTES_SENT CONNECTION_ID CONNECTION_TERMINATION_DETAILS
DOWNSTREAM_DIRECT_REMOTE_ADDRESS DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT DOWNSTREAM_DIRECT_REMOTE_PORT
DOWNSTREAM_HEADER_BYTES_RECEIVED DOWNSTREAM_HEADER_BYTES_SENT DOWNSTREAM_LOCAL_ADDRESS
DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT DOWNSTREAM_LOCAL_PORT DOWNSTREAM_LOCAL_SUBJECT DOWNSTREAM_LOCAL_URI_SAN
DOWNSTREAM_PEER_CERT DOWNSTREAM_PEER_CERT_V_END DOWNSTREAM_PEER_CERT_V_START DOWNSTREAM_PEER_FINGERPRINT_1
DOWNSTREAM_PEER_FINGERPRINT_256 DOWNSTREAM_PEER_ISSUER DOWNSTREAM_PEER_SERIAL DOWNSTREAM_PEER_SUBJECT
DOWNSTREAM_PEER_URI_SAN DOWNSTREAM_REMOTE_ADDRESS DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT DOWNSTREAM_REMOTE_PORT
DOWNSTREAM_TLS_CIPHER DOWNSTREAM_TLS_SESSION_ID DOWNSTREAM_TLS_VERSION DOWNSTREAM_WIRE_BYTES_RECEIVED
DOWNSTREAM_WIRE_BYTES_SENT DURATION FILTER_CHAIN_NAME GRPC_STATUS GRPC_STATUS_NUMBER HOSTNAME LOCAL_REPLY_BODY
PROTOCOL REQUEST_HEADERS_BYTES REQUESTED_SERVER_NAME REQUEST_DURATION REQUEST_TX_DURATION RESPONSE_CODE
RESPONSE_CODE_DETAILS RESPONSE_DURATION RESPONSE_FLAGS RESPONSE_HEADERS_BYTES RESPONSE_TRAILERS_BYTES
RESPONSE_TX_DURATION ROUTE_NAME SPAN_ID START_TIME TLS_JA3_FINGERPRINT TLS_JA4_FINGERPRINT TRACE_ID
UPSTREAM_CLUSTER UPSTREAM_FILTER_STATE UPSTREAM_HEADER_BYTES_RECEIVED UPSTREAM_HEADER_BYTES_SENT UPSTREAM_HOST
UPSTREAM_LOCAL_ADDRESS UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT UPSTREAM_LOCAL_PORT UPSTREAM_PEER_CERT
UPSTREAM_PEER_CERT_V_END UPSTREAM_PEER_CERT_V_START UPSTREAM_PEER_ISSUER UPSTREAM_PEER_SUBJECT UPSTREAM_PROTOCOL
UPSTREAM_REMOTE_ADDRESS UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT UPSTREAM_REMOTE_PORT UPSTREAM_REQUEST_ATTEMPT_COUNT
UPSTREAM_TLS_CIPHER UPSTREAM_TLS_SESSION_ID UPSTREAM_TLS_VERSION UPSTREAM_TRANSPORT_FAILURE_REASON
UPSTREAM_WIRE_BYTES_RECEIVED UPSTREAM_WIRE_BYTES_SENT VIRTUAL_CLUSTER_NAME`)

// argOperators take arguments: START_TIME's are optional and it cannot
// be truncated.
var argOperators = setOf(`ENVIRONMENT METADATA REQ REQ_WITHOUT_QUERY RESP START_TIME TRAILER`)

func setOf(s string) map[string]bool {
	m := map[string]bool{}
	for _, f := range strings.Fields(s) {
		m[f] = true
	}
	return m
}

// operator matches a command operator: %NAME%, %NAME(args)% or
// %NAME(args):N%; a bare % (without a valid name) is an error.
var operator = regexp.MustCompile(`%(([A-Z0-9_]+)(\([^)]+\)(:[0-9]+)?)?%)?`)

// checkFormat validates the command operators of an Envoy format string
// against the ones Contour allows.
func checkFormat(s string) error {
	for _, m := range operator.FindAllStringSubmatch(s, -1) {
		name, args, trunc := m[2], m[3], m[4]
		switch {
		case name == "":
			return fmt.Errorf("%q is not a command operator (write %%%% for a literal %%, or %%NAME%%)", m[0])
		case simpleOperators[name] && args == "":
		case argOperators[name]:
			if args == "" && name != "START_TIME" {
				return fmt.Errorf("%s needs arguments, as %%%s(...)%%", m[0], name)
			}
			if name == "START_TIME" && trunc != "" {
				return fmt.Errorf("%s: START_TIME cannot be truncated", m[0])
			}
		default:
			return fmt.Errorf("%s: unknown Envoy command operator %s", m[0], name)
		}
	}
	return nil
}

// JSONFieldMap is the json access log's fields: each json-fields entry is
// a Contour field name, an Envoy operator name (lower case allowed) or
// name=format.
func JSONFieldMap(fields []string) (map[string]string, error) {
	out := map[string]string{}
	for _, f := range fields {
		if name, format, ok := strings.Cut(f, "="); ok {
			if err := checkFormat(format); err != nil {
				return nil, fmt.Errorf("%q: %w", f, err)
			}
			out[name] = format
			continue
		}
		if format, ok := jsonFieldFormats[f]; ok {
			out[f] = format
			continue
		}
		if simpleOperators[strings.ToUpper(f)] {
			out[f] = "%" + strings.ToUpper(f) + "%"
			continue
		}
		return nil, fmt.Errorf("%q is not a known field (use one of Contour's names such as authority or duration, an Envoy operator such as response_code, or name=%%FORMAT%%)", f)
	}
	return out, nil
}
