// Package headers is the ordered HTTP header map used across the proxy, in
// Envoy's model: names are lower case, order is kept, a name may repeat, and
// the request pseudo-headers (:method, :path, :authority, :scheme) live
// beside the map in the request head rather than in it.
//
// The map is a slice, not a Go map: requests carry a handful of headers, a
// linear scan over them is faster than hashing, and a slice can be reset and
// reused without allocating.
package headers

import "strings"

// Field is one header line. Name is lower case.
type Field struct {
	Name  string
	Value string
}

// Map is an ordered multimap of header fields. The zero value is empty and
// ready to use.
type Map struct {
	fields []Field
}

// Len returns the number of fields.
func (m *Map) Len() int { return len(m.fields) }

// Fields returns the fields in order; the slice must not be modified.
func (m *Map) Fields() []Field { return m.fields }

// At returns the i-th field.
func (m *Map) At(i int) Field { return m.fields[i] }

// Reset empties the map, keeping its storage.
func (m *Map) Reset() {
	clear(m.fields)
	m.fields = m.fields[:0]
}

// Get returns the first value of name (lower case), or "".
func (m *Map) Get(name string) string {
	for i := range m.fields {
		if m.fields[i].Name == name {
			return m.fields[i].Value
		}
	}
	return ""
}

// Lookup returns the first value of name and whether it is present.
func (m *Map) Lookup(name string) (string, bool) {
	for i := range m.fields {
		if m.fields[i].Name == name {
			return m.fields[i].Value, true
		}
	}
	return "", false
}

// Has reports whether name is present.
func (m *Map) Has(name string) bool {
	_, ok := m.Lookup(name)
	return ok
}

// Values returns every value of name, in order.
func (m *Map) Values(name string) []string {
	var out []string
	for i := range m.fields {
		if m.fields[i].Name == name {
			out = append(out, m.fields[i].Value)
		}
	}
	return out
}

// Joined returns all values of name joined with ",", as a single header
// would carry them.
func (m *Map) Joined(name string) string {
	first := -1
	for i := range m.fields {
		if m.fields[i].Name == name {
			if first >= 0 {
				return strings.Join(m.Values(name), ",")
			}
			first = i
		}
	}
	if first < 0 {
		return ""
	}
	return m.fields[first].Value
}

// JoinedLookup is Joined that also reports presence. One value costs no
// allocation: matchers call it on every request.
func (m *Map) JoinedLookup(name string) (string, bool) {
	first := -1
	for i := range m.fields {
		if m.fields[i].Name == name {
			if first >= 0 {
				return strings.Join(m.Values(name), ","), true
			}
			first = i
		}
	}
	if first < 0 {
		return "", false
	}
	return m.fields[first].Value, true
}

// Add appends a field. name must be lower case.
func (m *Map) Add(name, value string) {
	m.fields = append(m.fields, Field{Name: name, Value: value})
}

// Set replaces every value of name with one value, keeping the position of
// the first occurrence.
func (m *Map) Set(name, value string) {
	for i := range m.fields {
		if m.fields[i].Name == name {
			m.fields[i].Value = value
			m.delFrom(name, i+1)
			return
		}
	}
	m.Add(name, value)
}

// SetDefault adds name only if it is absent.
func (m *Map) SetDefault(name, value string) {
	if !m.Has(name) {
		m.Add(name, value)
	}
}

// Append adds value to an existing header, comma-separated, or adds the
// header, as Envoy's "append" header action does for the first occurrence.
func (m *Map) Append(name, value string) {
	for i := range m.fields {
		if m.fields[i].Name == name {
			if m.fields[i].Value == "" {
				m.fields[i].Value = value
			} else {
				m.fields[i].Value += "," + value
			}
			return
		}
	}
	m.Add(name, value)
}

// Del removes every field called name and reports whether any was present.
func (m *Map) Del(name string) bool {
	n := len(m.fields)
	m.delFrom(name, 0)
	return len(m.fields) != n
}

func (m *Map) delFrom(name string, from int) {
	j := from
	for i := from; i < len(m.fields); i++ {
		if m.fields[i].Name != name {
			m.fields[j] = m.fields[i]
			j++
		}
	}
	clear(m.fields[j:])
	m.fields = m.fields[:j]
}

// DelFunc removes every field for which drop returns true.
func (m *Map) DelFunc(drop func(Field) bool) {
	j := 0
	for i := range m.fields {
		if !drop(m.fields[i]) {
			m.fields[j] = m.fields[i]
			j++
		}
	}
	clear(m.fields[j:])
	m.fields = m.fields[:j]
}

// CopyFrom replaces m's contents with a copy of o's fields.
func (m *Map) CopyFrom(o *Map) {
	m.fields = append(m.fields[:0], o.fields...)
}

// Clone returns an independent copy whose strings are also copied, so it
// stays valid after the buffers the original pointed into are reused.
func (m *Map) Clone() Map {
	out := Map{fields: make([]Field, len(m.fields))}
	for i, f := range m.fields {
		out.fields[i] = Field{Name: strings.Clone(f.Name), Value: strings.Clone(f.Value)}
	}
	return out
}

// Range calls fn for each field in order until it returns false.
func (m *Map) Range(fn func(name, value string) bool) {
	for _, f := range m.fields {
		if !fn(f.Name, f.Value) {
			return
		}
	}
}

// HasToken reports whether the comma-separated header value v contains
// token, compared case-insensitively (as Connection: keep-alive, Upgrade).
func HasToken(v, token string) bool {
	for v != "" {
		var part string
		if i := strings.IndexByte(v, ','); i >= 0 {
			part, v = v[:i], v[i+1:]
		} else {
			part, v = v, ""
		}
		if strings.EqualFold(strings.TrimSpace(part), token) {
			return true
		}
	}
	return false
}

// Lower returns s in lower case, without allocating when it already is.
func Lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// ValidValue is Envoy's HeaderUtility::headerValueIsValid: a field value
// holds no NUL, CR or LF (RFC 9110 §5.5), so it cannot split a message.
func ValidValue(v string) bool { return !strings.ContainsAny(v, "\x00\r\n") }
