package format

import (
	"testing"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// TestGRPCStatus: %GRPC_STATUS% and %GRPC_STATUS_NUMBER% as Envoy prints
// them (Contour's default json-fields log both).
func TestGRPCStatus(t *testing.T) {
	grpcReq := func() *headers.Request {
		r := &headers.Request{Method: "POST", Path: "/pkg.Svc/M"}
		r.Add("content-type", "application/grpc+proto")
		return r
	}
	withTrailer := func(code string) *headers.Map { m := &headers.Map{}; m.Add("grpc-status", code); return m }
	respWith := func(code string) *headers.Response {
		r := &headers.Response{Status: 200}
		r.Add("grpc-status", code)
		return r
	}
	for _, tc := range []struct {
		name   string
		info   *streaminfo.Info
		format string
		want   string
	}{
		{"not gRPC", &streaminfo.Info{Request: &headers.Request{Method: "GET"}, ResponseCode: 200}, "%GRPC_STATUS% %GRPC_STATUS_NUMBER%", "- -"},
		{"trailer", &streaminfo.Info{Request: grpcReq(), ResponseCode: 200, RespTrailers: withTrailer("14")}, "%GRPC_STATUS% %GRPC_STATUS(SNAKE_STRING)% %GRPC_STATUS(NUMBER)% %GRPC_STATUS_NUMBER%", "Unavailable UNAVAILABLE 14 14"},
		{"trailers-only response", &streaminfo.Info{Request: grpcReq(), ResponseCode: 200, Response: respWith("0")}, "%GRPC_STATUS% %GRPC_STATUS(CAMEL_STRING)%", "OK OK"},
		{"from the HTTP status", &streaminfo.Info{Request: grpcReq(), ResponseCode: 503}, "%GRPC_STATUS% %GRPC_STATUS_NUMBER%", "Unavailable 14"},
		{"no response", &streaminfo.Info{Request: grpcReq()}, "%GRPC_STATUS%", "-"},
		{"unknown code", &streaminfo.Info{Request: grpcReq(), RespTrailers: withTrailer("99")}, "%GRPC_STATUS% %GRPC_STATUS_NUMBER%", "InvalidCode 99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Compile(tc.format)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.String(tc.info); got != tc.want {
				t.Errorf("%s = %q, want %q", tc.format, got, tc.want)
			}
		})
	}
	if _, err := Compile("%GRPC_STATUS(LOUD)%"); err == nil {
		t.Error("GRPC_STATUS(LOUD) compiled")
	}
}
