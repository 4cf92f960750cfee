package headers

import "strings"

// HasContentType reports a content-type that is base or base+<suffix>
// (application/grpc, application/grpc+proto), as Envoy's content-type
// checks compare it.
func HasContentType(ct, base string) bool {
	return strings.HasPrefix(ct, base) && (len(ct) == len(base) || ct[len(base)] == '+')
}

// IsGRPC is Envoy's Grpc::Common::hasGrpcContentType: application/grpc or
// application/grpc+<codec> (not grpc-web).
func IsGRPC(ct string) bool { return HasContentType(ct, "application/grpc") }
