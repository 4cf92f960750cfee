package format

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/legateproxy/legate/internal/streaminfo"
)

// grpcNames are gRPC status names as Envoy's %GRPC_STATUS% prints them:
// CamelCase by default (Envoy's Grpc::Utility::grpcStatusToString), or
// upper snake case with SNAKE_STRING.
var grpcNames = [...][2]string{
	{"OK", "OK"}, {"Canceled", "CANCELLED"}, {"Unknown", "UNKNOWN"}, {"InvalidArgument", "INVALID_ARGUMENT"},
	{"DeadlineExceeded", "DEADLINE_EXCEEDED"}, {"NotFound", "NOT_FOUND"}, {"AlreadyExists", "ALREADY_EXISTS"},
	{"PermissionDenied", "PERMISSION_DENIED"}, {"ResourceExhausted", "RESOURCE_EXHAUSTED"},
	{"FailedPrecondition", "FAILED_PRECONDITION"}, {"Aborted", "ABORTED"}, {"OutOfRange", "OUT_OF_RANGE"},
	{"Unimplemented", "UNIMPLEMENTED"}, {"Internal", "INTERNAL"}, {"Unavailable", "UNAVAILABLE"},
	{"DataLoss", "DATA_LOSS"}, {"Unauthenticated", "UNAUTHENTICATED"},
}

// grpcStatusField is %GRPC_STATUS(CAMEL_STRING|SNAKE_STRING|NUMBER)% and
// %GRPC_STATUS_NUMBER%: the gRPC status of a gRPC request (content-type
// application/grpc…) from the response trailers, else the response
// headers, else mapped from the HTTP status as Envoy's httpToGrpcStatus;
// absent for other requests.
func grpcStatusField(name, arg string) (fieldFn, error) {
	mode := arg
	if name == "GRPC_STATUS_NUMBER" {
		mode = "NUMBER"
	}
	switch mode {
	case "", "CAMEL_STRING", "SNAKE_STRING", "NUMBER":
	default:
		return nil, fmt.Errorf("GRPC_STATUS format %q: use CAMEL_STRING, SNAKE_STRING or NUMBER", arg)
	}
	return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
		code, ok := grpcStatus(info)
		if !ok {
			return dst, false
		}
		switch {
		case mode == "NUMBER":
			return strconv.AppendInt(dst, int64(code), 10), true
		case code < 0 || code >= len(grpcNames):
			return append(dst, "InvalidCode"...), true
		case mode == "SNAKE_STRING":
			return append(dst, grpcNames[code][1]...), true
		}
		return append(dst, grpcNames[code][0]...), true
	}, nil
}

func grpcStatus(info *streaminfo.Info) (int, bool) {
	if info.Request == nil {
		return 0, false
	}
	if ct, _ := info.Request.Lookup("content-type"); !strings.HasPrefix(ct, "application/grpc") {
		return 0, false
	}
	for _, get := range []func() (string, bool){
		func() (string, bool) {
			if info.RespTrailers == nil {
				return "", false
			}
			return info.RespTrailers.Lookup("grpc-status")
		},
		func() (string, bool) {
			if info.Response == nil {
				return "", false
			}
			return info.Response.Lookup("grpc-status")
		},
	} {
		if v, ok := get(); ok {
			if n, err := strconv.Atoi(v); err == nil {
				return n, true
			}
		}
	}
	switch info.ResponseCode {
	case 0:
		return 0, false
	case 200:
		// A gRPC response without grpc-status is malformed: Unknown.
		return 2, true
	case 400:
		return 13, true // Internal
	case 401:
		return 16, true // Unauthenticated
	case 403:
		return 7, true // PermissionDenied
	case 404:
		return 12, true // Unimplemented
	case 429, 502, 503, 504:
		return 14, true // Unavailable
	}
	return 2, true // Unknown
}
