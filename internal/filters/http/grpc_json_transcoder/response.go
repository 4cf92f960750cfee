package grpc_json_transcoder

import (
	"encoding/base64"
	"encoding/binary"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/legateproxy/legate/internal/headers"
)

// frameReader takes gRPC messages out of response data as their frames
// complete (the library's MessageReader).
type frameReader struct{ buf []byte }

// next returns the next complete message, or ok false when more data is
// needed; compressed frames fail, as in the library.
func (r *frameReader) next() (msg []byte, ok bool, err error) {
	if len(r.buf) < 5 {
		return nil, false, nil
	}
	if r.buf[0] != 0 {
		return nil, false, statusErr(codes.Internal, "Unsupported gRPC frame flag: %d", r.buf[0])
	}
	n := binary.BigEndian.Uint32(r.buf[1:5])
	if uint64(len(r.buf)-5) < uint64(n) {
		return nil, false, nil
	}
	msg = r.buf[5 : 5+n]
	r.buf = r.buf[5+n:]
	return msg, true, nil
}

// finish reports a frame cut short at the end of the response.
func (r *frameReader) finish() error {
	switch {
	case len(r.buf) == 0:
		return nil
	case len(r.buf) < 5:
		return statusErr(codes.Internal, "Incomplete gRPC frame header received")
	}
	return statusErr(codes.Internal, "Incomplete gRPC frame expected size: %d actual size: %d", binary.BigEndian.Uint32(r.buf[1:5]), len(r.buf)-5)
}

// responseJSON prints one response message.
func (tc *transcoderConfig) responseJSON(mi *methodInfo, payload []byte) ([]byte, error) {
	m := dynamicpb.NewMessage(mi.desc.Output())
	if err := (proto.UnmarshalOptions{Resolver: tc.types}).Unmarshal(payload, m); err != nil {
		return nil, statusErr(codes.Internal, "%v", err)
	}
	b, err := tc.print.toJSON(m)
	if err != nil {
		return nil, statusErr(codes.Internal, "%v", err)
	}
	return b, nil
}

// streamWriter frames a server stream's messages as Envoy's
// ResponseToJsonTranslator: a JSON array, or newline-delimited, or
// server-sent events.
type streamWriter struct {
	p     *printOptions
	first bool
}

func (w *streamWriter) message(dst, js []byte) []byte {
	switch {
	case w.p.sse:
		dst = append(dst, "data: "...)
		dst = append(dst, js...)
		return append(dst, "\n\n"...)
	case w.p.newline:
		dst = append(dst, js...)
		return append(dst, '\n')
	}
	if w.first {
		dst = append(dst, ',')
	} else {
		dst = append(dst, '[')
		w.first = true
	}
	return append(dst, js...)
}

// end closes the array ("[]" for an empty stream).
func (w *streamWriter) end(dst []byte) []byte {
	if w.p.sse || w.p.newline {
		return dst
	}
	if w.first {
		return append(dst, ']')
	}
	return append(dst, "[]"...)
}

// httpBody reads the HttpBody at the response_body path of a response
// message: its content type and data.
func (tc *transcoderConfig) httpBody(mi *methodInfo, payload []byte) (ct string, data []byte, err error) {
	m := dynamicpb.NewMessage(mi.desc.Output())
	if err := proto.Unmarshal(payload, m); err != nil {
		return "", nil, err
	}
	msg := protoreflect.Message(m)
	for _, fd := range mi.respBody {
		msg = msg.Get(fd).Message()
	}
	fields := msg.Descriptor().Fields()
	if fd := fields.ByName("content_type"); fd != nil {
		ct = msg.Get(fd).String()
	}
	if fd := fields.ByName("data"); fd != nil {
		data = msg.Get(fd).Bytes()
	}
	return ct, data, nil
}

// grpcToHTTP is Envoy's Grpc::Utility::grpcToHttpStatus.
func grpcToHTTP(code int) int {
	switch codes.Code(code) {
	case codes.OK:
		return 200
	case codes.Canceled:
		return 499
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return 400
	case codes.DeadlineExceeded:
		return 504
	case codes.NotFound:
		return 404
	case codes.AlreadyExists, codes.Aborted:
		return 409
	case codes.PermissionDenied:
		return 403
	case codes.ResourceExhausted:
		return 429
	case codes.Unimplemented:
		return 501
	case codes.Unavailable:
		return 503
	case codes.Unauthenticated:
		return 401
	}
	return 500 // Unknown, Internal, DataLoss and codes past the known ones
}

// grpcStatus is Envoy's Grpc::Common::getGrpcStatus with user-defined
// codes allowed: ok false without grpc-status, -1 for one that is not a
// number.
func grpcStatus(m *headers.Map) (code int, ok bool) {
	v := m.Get("grpc-status")
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return -1, true
	}
	return int(n), true
}

// statusJSON is convert_grpc_status: the google.rpc.Status of
// grpc-status-details-bin, or one made of grpc-status and grpc-message,
// as JSON; ok false when it cannot be printed (a detail type the
// descriptor set lacks).
func (tc *transcoderConfig) statusJSON(code int, m *headers.Map) ([]byte, bool) {
	var st *status.Status
	if bin := m.Get("grpc-status-details-bin"); bin != "" {
		if raw, err := base64.RawStdEncoding.DecodeString(trimPadding(bin)); err == nil {
			var s status.Status
			if proto.Unmarshal(raw, &s) == nil {
				st = &s
			}
		}
	}
	if st == nil {
		st = &status.Status{Code: int32(code), Message: urlUnescape(m.Get("grpc-message"), unescapeAll, false)}
	}
	b, err := tc.print.toJSON(st)
	if err != nil {
		return nil, false
	}
	return b, true
}

func trimPadding(s string) string {
	for len(s) > 0 && s[len(s)-1] == '=' {
		s = s[:len(s)-1]
	}
	return s
}
