package memstat

import "testing"

func TestReadIsConsistent(t *testing.T) {
	keep := make([]byte, 8<<20)
	s := Read()
	if s.Allocated < uint64(len(keep)) {
		t.Errorf("allocated %d < the 8 MiB this test holds", s.Allocated)
	}
	if s.HeapSize < s.Allocated || s.HeapSize < s.PageheapUnmapped+s.PageheapFree {
		t.Errorf("heap size %d is less than its parts: %+v", s.HeapSize, s)
	}
	if s.Physical < s.Allocated {
		t.Errorf("physical %d < allocated %d", s.Physical, s.Allocated)
	}
	if s.Goroutines == 0 {
		t.Error("no goroutines counted")
	}
	_ = keep[len(keep)-1]
}
