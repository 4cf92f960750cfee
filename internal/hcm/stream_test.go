package hcm

import (
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
)

// TestStreamResetClearsRequestState checks that reset leaves nothing of a
// request behind but the connection's fields and the reusable storage.
func TestStreamResetClearsRequestState(t *testing.T) {
	cfg, cs := &hcmConfig{}, &connState{}
	s := &stream{cfg: cfg, conn: cs}
	s.req.Method, s.req.Path = "GET", "/a"
	s.req.Add("x-a", "1")
	s.resp.Status = 200
	s.resp.Add("x-b", "2")
	s.info.DynamicMetadata = map[string]*structpb.Struct{"f": {}}
	s.info.RouteName = "r"
	s.pickName, s.replied, s.closeConn, s.upgrade = "c", true, true, "websocket"
	s.scratch = append(s.scratch, "abc"...)
	s.reset()
	if s.cfg != cfg || s.conn != cs {
		t.Fatalf("reset dropped the connection's fields: cfg %p conn %p", s.cfg, s.conn)
	}
	if s.req.Method != "" || s.req.Path != "" || s.req.Len() != 0 || s.resp.Status != 0 || s.resp.Len() != 0 {
		t.Fatalf("reset kept request or response headers: %+v %+v", s.req, s.resp)
	}
	if s.info.RouteName != "" || len(s.info.DynamicMetadata) != 0 || s.info.DynamicMetadata == nil {
		t.Fatalf("reset: stream info not cleared with its metadata map kept: %+v", s.info)
	}
	if s.pickName != "" || s.replied || s.closeConn || s.upgrade != "" || len(s.scratch) != 0 || cap(s.scratch) == 0 {
		t.Fatalf("reset kept per-request fields: pick %q replied %v close %v upgrade %q scratch %d/%d", s.pickName, s.replied, s.closeConn, s.upgrade, len(s.scratch), cap(s.scratch))
	}
}

// BenchmarkStreamReset measures clearing a stream between two requests.
func BenchmarkStreamReset(b *testing.B) {
	s := &stream{cfg: &hcmConfig{}, conn: &connState{}}
	s.info.DynamicMetadata = map[string]*structpb.Struct{}
	b.ReportAllocs()
	for b.Loop() {
		s.req.Method, s.req.Path = "GET", "/a"
		s.req.Add("x-a", "1")
		s.resp.Status = 200
		s.reset()
	}
}
