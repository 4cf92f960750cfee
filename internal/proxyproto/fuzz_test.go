package proxyproto

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParse checks, on any input and every option set, that Parse does
// not panic and keeps its promises: an accepted header lies within the
// input, says where it ends, and carries addresses unless Local; every
// proper prefix of an accepted header asks for more bytes (a receiver
// never decides before the header is complete); and an accepted header's
// addresses and TLVs survive being written again by AppendV1/AppendV2.
// The seed corpus is in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n\r\n"), uint8(0))
	f.Add([]byte("PROXY UNKNOWN\r\n"), uint8(0))
	f.Add(v2(0x21, 0x11, -1, tcp4, []byte{0xEA, 0, 3, 'v', 'p', 'c'}), uint8(0))
	f.Add(v2(0x21, 0x21, -1, tcp6), uint8(4))
	f.Add(v2(0x20, 0x00, 0), uint8(1))
	f.Add([]byte("GET / HTTP/1.1\r\n"), uint8(4))
	f.Fuzz(func(t *testing.T, in []byte, flags uint8) {
		o := Options{DisallowV1: flags&1 != 0, DisallowV2: flags&2 != 0, AllowNone: flags&4 != 0}
		h, err := Parse(in, o)
		if err != nil {
			var e *Error
			if !errors.Is(err, ErrIncomplete) && !errors.As(err, &e) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			if h != nil {
				t.Fatalf("a header with an error: %+v", h)
			}
			if errors.Is(err, ErrIncomplete) && len(in) >= NeedBytes(in) && len(in) > MaxV1Len {
				t.Fatalf("asks for more bytes than it will ever be given: %d held, need %d", len(in), NeedBytes(in))
			}
			return
		}
		if h.Version == NotFound {
			if !o.AllowNone || h.Len != 0 {
				t.Fatalf("no header without AllowNone, or with a length: %+v", h)
			}
			return
		}
		if h.Len <= 0 || h.Len > len(in) || (h.Version == V1 && h.Len > MaxV1Len) || h.Len > MaxV2Len {
			t.Fatalf("header length %d of %d input bytes", h.Len, len(in))
		}
		if (h.Version == V1 && o.DisallowV1) || (h.Version == V2 && o.DisallowV2) {
			t.Fatalf("a disallowed version accepted: %+v", h)
		}
		if !h.Local && (!h.Src.IsValid() || !h.Dst.IsValid() || !unicast(h.Src.Addr()) || !unicast(h.Dst.Addr())) {
			t.Fatalf("addresses %v → %v", h.Src, h.Dst)
		}
		if !o.AllowNone {
			for k := 1; k < h.Len; k++ {
				if _, err := Parse(in[:k], o); !errors.Is(err, ErrIncomplete) {
					t.Fatalf("prefix of %d of a %d-byte header: %v", k, h.Len, err)
				}
			}
		}
		if again, err := Parse(in[:h.Len], o); err != nil || again.Len != h.Len || again.Src != h.Src {
			t.Fatalf("the header alone: %+v, %v", again, err)
		}
		if h.Local {
			return
		}
		var out []byte
		if h.Version == V1 {
			out = AppendV1(nil, h.Src, h.Dst)
		} else {
			var fit bool
			if out, fit = AppendV2(nil, h.Src, h.Dst, h.TLVs); !fit {
				t.Fatal("TLVs that came in one header do not fit in one")
			}
		}
		back, err := Parse(out, Options{})
		if err != nil || back.Version != h.Version || back.Src.Port() != h.Src.Port() || back.Dst.Port() != h.Dst.Port() ||
			back.Src.Addr().Unmap() != h.Src.Addr().Unmap() || back.Dst.Addr().Unmap() != h.Dst.Addr().Unmap() ||
			len(back.TLVs) != len(h.TLVs) {
			t.Fatalf("rewritten %q: %+v, %v; was %+v", out, back, err, h)
		}
		for i := range h.TLVs {
			if back.TLVs[i].Type != h.TLVs[i].Type || !bytes.Equal(back.TLVs[i].Value, h.TLVs[i].Value) {
				t.Fatalf("TLV %d rewritten as %v; was %v", i, back.TLVs[i], h.TLVs[i])
			}
		}
	})
}
