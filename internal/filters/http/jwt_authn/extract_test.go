package jwt_authn

import "testing"

// TestExtractJWT: what follows a value prefix gives the token as Envoy's
// extractor cuts it: from the first JWT character (base64url or '.') to
// the next character that is not one.
func TestExtractJWT(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{" a.b.c", "a.b.c"},
		{"  a.b.c", "a.b.c"},
		{" a.b.c, other", "a.b.c"},
		{" a.b.c;x", "a.b.c"},
		{" a-b_c.d", "a-b_c.d"},
		{"a.b.c ", "a.b.c"},
		{"", ""},
		{"  ", "  "}, // no JWT character: the value as it is (then "missing": no token verifies)
	} {
		if got := extractJWT(c.in); got != c.want {
			t.Errorf("extractJWT(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
