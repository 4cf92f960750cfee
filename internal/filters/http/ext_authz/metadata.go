package ext_authz

import (
	"context"

	"google.golang.org/grpc/metadata"
)

// metadataContext adds grpc_service.initial_metadata to a call.
func metadataContext(ctx context.Context, kv []string) context.Context {
	if len(kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}
