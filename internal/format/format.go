// Package format is Envoy's substitution formatter: format strings with
// command operators (%START_TIME%, %REQ(X?Y):Z%, %RESPONSE_FLAGS%, …) used
// by access logs and by header values. A format string is compiled once,
// at config time, into a list of operations; rendering appends to a byte
// slice and does not allocate.
package format

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/legateproxy/legate/internal/streaminfo"
)

// DefaultFormat is Envoy's default access-log format.
const DefaultFormat = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" " +
	"%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% " +
	"%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" " +
	"\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n"

// op renders one piece of a format string.
type op struct {
	literal string
	field   func(dst []byte, info *streaminfo.Info) ([]byte, bool)
	// typed, when set, renders the value as a JSON value for json_format
	// (Envoy's formatValue), for operators whose values are not strings.
	typed  func(dst []byte, info *streaminfo.Info) ([]byte, bool)
	maxLen int // :Z truncation, 0 = none
}

// Formatter is a compiled format string.
type Formatter struct {
	ops []op
	// empty is what a missing value renders as: "-" in access logs, "" in
	// header values.
	empty string
}

// Compile parses an access-log format string.
func Compile(text string) (*Formatter, error) { return compile(text, "-") }

// CompileHeaderValue parses a header value format (request_headers_to_add):
// missing values render as an empty string, as in Envoy.
func CompileHeaderValue(text string) (*Formatter, error) { return compile(text, "") }

func compile(text, empty string) (*Formatter, error) {
	f := &Formatter{empty: empty}
	var lit strings.Builder
	for i := 0; i < len(text); {
		c := text[i]
		if c != '%' {
			lit.WriteByte(c)
			i++
			continue
		}
		if i+1 < len(text) && text[i+1] == '%' {
			lit.WriteByte('%')
			i += 2
			continue
		}
		end := operatorEnd(text[i+1:])
		if end < 0 {
			return nil, fmt.Errorf("unterminated command operator in %q at offset %d", text, i)
		}
		cmd := text[i+1 : i+1+end]
		o, err := parseOperator(cmd)
		if err != nil {
			return nil, err
		}
		if lit.Len() > 0 {
			f.ops = append(f.ops, op{literal: lit.String()})
			lit.Reset()
		}
		f.ops = append(f.ops, o)
		i += end + 2
	}
	if lit.Len() > 0 {
		f.ops = append(f.ops, op{literal: lit.String()})
	}
	return f, nil
}

// operatorEnd returns the length of the operator at the start of s (up to
// its closing '%'), or -1. An argument in parentheses may itself contain
// '%' (START_TIME(%Y-%m-%d)): the operator ends at ")%" or ")":Z"%".
func operatorEnd(s string) int {
	i := 0
	for i < len(s) && (s[i] >= 'A' && s[i] <= 'Z' || s[i] >= '0' && s[i] <= '9' || s[i] == '_') {
		i++
	}
	if i < len(s) && s[i] == '(' {
		for j := i + 1; j < len(s); j++ {
			if s[j] != ')' {
				continue
			}
			k := j + 1
			if k < len(s) && s[k] == ':' {
				k++
				for k < len(s) && s[k] >= '0' && s[k] <= '9' {
					k++
				}
			}
			if k < len(s) && s[k] == '%' {
				return k
			}
		}
		return -1
	}
	return strings.IndexByte(s, '%')
}

// Append renders the format for info onto dst.
func (f *Formatter) Append(dst []byte, info *streaminfo.Info) []byte {
	for i := range f.ops {
		o := &f.ops[i]
		if o.field == nil {
			dst = append(dst, o.literal...)
			continue
		}
		start := len(dst)
		var ok bool
		dst, ok = o.field(dst, info)
		if !ok {
			dst = append(dst[:start], f.empty...)
			continue
		}
		if o.maxLen > 0 && len(dst)-start > o.maxLen {
			dst = dst[:start+o.maxLen]
		}
	}
	return dst
}

// String renders the format as a string (for tests and header values).
func (f *Formatter) String(info *streaminfo.Info) string { return string(f.Append(nil, info)) }

// parseOperator compiles one %COMMAND(arg):Z% operator.
func parseOperator(cmd string) (op, error) {
	name, arg, maxLen := cmd, "", 0
	// A trailing :Z sets the maximum length.
	if i := strings.LastIndexByte(cmd, ':'); i >= 0 && i > strings.LastIndexByte(cmd, ')') {
		if n, err := strconv.Atoi(cmd[i+1:]); err == nil {
			name, maxLen = cmd[:i], n
		}
	}
	if i := strings.IndexByte(name, '('); i >= 0 {
		if !strings.HasSuffix(name, ")") {
			return op{}, fmt.Errorf("invalid command operator %%%s%%: missing ')'", cmd)
		}
		name, arg = name[:i], name[i+1:len(name)-1]
	}
	var fn, typed fieldFn
	var err error
	switch name {
	case "DYNAMIC_METADATA":
		fn, typed, err = dynamicMetadata(arg)
	case "FILTER_STATE":
		fn, typed, err = filterState(arg)
	default:
		fn, err = field(name, arg)
	}
	if err != nil {
		return op{}, fmt.Errorf("%w (in %%%s%%)", err, cmd)
	}
	return op{field: fn, typed: typed, maxLen: maxLen}, nil
}

type fieldFn = func(dst []byte, info *streaminfo.Info) ([]byte, bool)

func durOf(get func(*streaminfo.Info) time.Duration) fieldFn {
	return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
		d := get(info)
		if d <= 0 {
			return dst, false
		}
		return strconv.AppendInt(dst, d.Milliseconds(), 10), true
	}
}

func str(get func(*streaminfo.Info) string) fieldFn {
	return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
		v := get(info)
		if v == "" {
			return dst, false
		}
		return append(dst, v...), true
	}
}

func uintField(get func(*streaminfo.Info) uint64) fieldFn {
	return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
		return strconv.AppendUint(dst, get(info), 10), true
	}
}

// field returns the renderer of a command operator.
func field(name, arg string) (fieldFn, error) {
	switch name {
	case "START_TIME", "START_TIME_LOCAL":
		tf, err := compileTime(arg, name == "START_TIME_LOCAL")
		if err != nil {
			return nil, err
		}
		return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
			if info.StartTime.IsZero() {
				return dst, false
			}
			return tf.append(dst, info.StartTime), true
		}, nil
	case "REQ", "RESP", "TRAILER":
		return headerField(name, arg)
	case "REQUEST_HEADER", "RESPONSE_HEADER", "RESPONSE_TRAILER":
		// Envoy's long names for the same operators (1.31+).
		return headerField(map[string]string{"REQUEST_HEADER": "REQ", "RESPONSE_HEADER": "RESP", "RESPONSE_TRAILER": "TRAILER"}[name], arg)
	case "PROTOCOL":
		return str(func(i *streaminfo.Info) string { return i.Protocol }), nil
	case "GRPC_STATUS", "GRPC_STATUS_NUMBER":
		return grpcStatusField(name, arg)
	case "RESPONSE_CODE":
		return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
			return strconv.AppendInt(dst, int64(info.ResponseCode), 10), true
		}, nil
	case "RESPONSE_CODE_DETAILS":
		return str(func(i *streaminfo.Info) string { return i.ResponseCodeDetails }), nil
	case "LOCAL_REPLY_BODY":
		// The body of a local reply, for local_reply_config.body_format.
		return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
			return append(dst, info.LocalReplyBody...), true
		}, nil
	case "CONNECTION_TERMINATION_DETAILS":
		return str(func(i *streaminfo.Info) string { return i.ConnTerminationDetails }), nil
	case "RESPONSE_FLAGS":
		return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
			return info.ResponseFlags.AppendShort(dst), true
		}, nil
	case "RESPONSE_FLAGS_LONG":
		return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
			return info.ResponseFlags.AppendLong(dst), true
		}, nil
	case "BYTES_RECEIVED":
		return uintField(func(i *streaminfo.Info) uint64 { return i.BytesReceived }), nil
	case "BYTES_SENT":
		return uintField(func(i *streaminfo.Info) uint64 { return i.BytesSent }), nil
	case "UPSTREAM_WIRE_BYTES_SENT":
		return uintField(func(i *streaminfo.Info) uint64 { return i.UpstreamBytesSent }), nil
	case "UPSTREAM_WIRE_BYTES_RECEIVED":
		return uintField(func(i *streaminfo.Info) uint64 { return i.UpstreamBytesReceived }), nil
	case "DURATION":
		return durOf(func(i *streaminfo.Info) time.Duration { return i.Done }), nil
	case "REQUEST_DURATION":
		return durOf(func(i *streaminfo.Info) time.Duration { return i.LastDownstreamRxByte }), nil
	case "REQUEST_TX_DURATION":
		return durOf(func(i *streaminfo.Info) time.Duration { return i.LastUpstreamTxByte }), nil
	case "RESPONSE_DURATION":
		return durOf(func(i *streaminfo.Info) time.Duration { return i.FirstUpstreamRxByte }), nil
	case "RESPONSE_TX_DURATION":
		return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
			if info.FirstUpstreamRxByte <= 0 || info.LastDownstreamTxByte <= 0 {
				return dst, false
			}
			return strconv.AppendInt(dst, (info.LastDownstreamTxByte - info.FirstUpstreamRxByte).Milliseconds(), 10), true
		}, nil
	case "UPSTREAM_HOST":
		return str(func(i *streaminfo.Info) string { return i.UpstreamHost }), nil
	case "UPSTREAM_HOST_NAME":
		return str(upstreamHostName), nil
	case "UPSTREAM_HOST_NAME_WITHOUT_PORT":
		return str(func(i *streaminfo.Info) string {
			n := upstreamHostName(i)
			if h, _, err := net.SplitHostPort(n); err == nil {
				return h
			}
			return n
		}), nil
	case "UPSTREAM_CLUSTER":
		return str(func(i *streaminfo.Info) string { return i.UpstreamCluster }), nil
	case "UPSTREAM_TRANSPORT_FAILURE_REASON":
		return str(func(i *streaminfo.Info) string { return i.UpstreamTransportFailureReason }), nil
	case "UPSTREAM_REQUEST_ATTEMPT_COUNT":
		return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
			return strconv.AppendInt(dst, int64(info.UpstreamRequestAttemptCount), 10), true
		}, nil
	case "CONNECTION_ID":
		return uintField(func(i *streaminfo.Info) uint64 { return i.ConnectionID }), nil
	case "REQUESTED_SERVER_NAME":
		return str(func(i *streaminfo.Info) string { return i.RequestedServerName }), nil
	case "ROUTE_NAME":
		return str(func(i *streaminfo.Info) string { return i.RouteName }), nil
	case "VIRTUAL_HOST_NAME":
		return str(func(i *streaminfo.Info) string { return i.VirtualHostName }), nil
	case "VIRTUAL_CLUSTER_NAME":
		// Legate refuses virtual_clusters, so no request has one: "-", as
		// Envoy prints for a request outside every virtual cluster.
		return func(dst []byte, _ *streaminfo.Info) ([]byte, bool) { return dst, false }, nil
	case "HOSTNAME":
		return str(func(i *streaminfo.Info) string { return i.Hostname }), nil
	case "DOWNSTREAM_TLS_VERSION", "DOWNSTREAM_TLS_CIPHER", "DOWNSTREAM_TLS_SESSION_ID", "DOWNSTREAM_PEER_SUBJECT",
		"DOWNSTREAM_PEER_ISSUER", "DOWNSTREAM_LOCAL_SUBJECT", "DOWNSTREAM_PEER_URI_SAN", "DOWNSTREAM_PEER_DNS_SAN",
		"DOWNSTREAM_PEER_FINGERPRINT_256", "DOWNSTREAM_PEER_SERIAL":
		return tlsField(name, func(i *streaminfo.Info) *streaminfo.TLSInfo { return i.DownstreamTLS }), nil
	case "UPSTREAM_TLS_VERSION", "UPSTREAM_TLS_CIPHER", "UPSTREAM_TLS_SESSION_ID", "UPSTREAM_PEER_SUBJECT",
		"UPSTREAM_PEER_ISSUER", "UPSTREAM_LOCAL_SUBJECT", "UPSTREAM_PEER_URI_SAN", "UPSTREAM_PEER_DNS_SAN",
		"UPSTREAM_PEER_FINGERPRINT_256", "UPSTREAM_PEER_SERIAL":
		return tlsField(strings.Replace(name, "UPSTREAM", "DOWNSTREAM", 1), func(i *streaminfo.Info) *streaminfo.TLSInfo { return i.UpstreamTLS }), nil
	}
	if fn, ok, err := addrField(name, arg); ok {
		return fn, err
	}
	return nil, fmt.Errorf("not supported field in StreamInfo: %s", name)
}

// upstreamHostName is Envoy's UPSTREAM_HOST_NAME: the host's name, else
// its address.
func upstreamHostName(i *streaminfo.Info) string {
	if i.UpstreamHostname != "" {
		return i.UpstreamHostname
	}
	return i.UpstreamHost
}

// headerField renders REQ(X?Y), RESP(X?Y) or TRAILER(X?Y).
func headerField(kind, arg string) (fieldFn, error) {
	if arg == "" {
		return nil, fmt.Errorf("%s needs a header name", kind)
	}
	main, alt, _ := strings.Cut(arg, "?")
	main, alt = strings.ToLower(main), strings.ToLower(alt)
	get := func(info *streaminfo.Info, name string) (string, bool) {
		switch kind {
		case "REQ":
			if info.Request == nil {
				return "", false
			}
			return info.Request.Lookup(name)
		case "RESP":
			if info.Response == nil {
				return "", false
			}
			return info.Response.Lookup(name)
		default:
			if info.RespTrailers == nil {
				return "", false
			}
			return info.RespTrailers.Lookup(name)
		}
	}
	return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
		v, ok := get(info, main)
		if !ok && alt != "" {
			v, ok = get(info, alt)
		}
		if !ok {
			return dst, false
		}
		return append(dst, v...), true
	}, nil
}

// readFile is os.ReadFile (a variable for tests).
var readFile = os.ReadFile
