package testutil

import "testing"

func TestUnexpectedSkips(t *testing.T) {
	out := `=== RUN   TestX
=== RUN   TestX/a
    x_test.go:9: feature not claimed
--- SKIP: TestX/a (0.00s)
--- PASS: TestX/b (0.01s)
--- PASS: TestX (0.02s)
`
	if got := unexpectedSkips(out, false); len(got) != 1 {
		t.Errorf("without subtestsOK: %q, want the subtest's skip", got)
	}
	if got := unexpectedSkips(out, true); len(got) != 0 {
		t.Errorf("with subtestsOK: %q, want none", got)
	}
	top := "--- SKIP: TestX (0.00s)\n    needs root\n"
	if got := unexpectedSkips(top, true); len(got) != 1 {
		t.Errorf("a skipped test with subtestsOK: %q, want it reported", got)
	}
}
