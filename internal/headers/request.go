package headers

// Request is a request head in Envoy's model: the pseudo-headers as fields
// and the regular headers in Map. For HTTP/1 the Host header is Authority.
type Request struct {
	Method    string
	Scheme    string
	Authority string
	Path      string
	Map
}

// Get returns a header, accepting the pseudo-header names :method,
// :scheme, :authority (and host) and :path as Envoy's matchers do.
func (r *Request) Get(name string) string {
	v, _ := r.Lookup(name)
	return v
}

// Lookup is Get that also reports presence.
func (r *Request) Lookup(name string) (string, bool) {
	if len(name) > 0 && name[0] == ':' || name == "host" {
		switch name {
		case ":method":
			return r.Method, r.Method != ""
		case ":path":
			return r.Path, r.Path != ""
		case ":authority", "host":
			return r.Authority, r.Authority != ""
		case ":scheme":
			return r.Scheme, r.Scheme != ""
		}
	}
	return r.Map.Lookup(name)
}

// Values returns every value of a header (pseudo-headers have one).
func (r *Request) Values(name string) []string {
	if v, ok := r.Lookup(name); ok && (len(name) > 0 && name[0] == ':' || name == "host") {
		return []string{v}
	}
	return r.Map.Values(name)
}

// JoinedLookup is every value of a header joined with "," (the form
// Envoy's header matchers see) and whether it is present; pseudo-headers
// have one value.
func (r *Request) JoinedLookup(name string) (string, bool) {
	if v, ok := r.Lookup(name); ok && (len(name) > 0 && name[0] == ':' || name == "host") {
		return v, true
	}
	return r.Map.JoinedLookup(name)
}

// Reset clears the request, keeping header storage.
func (r *Request) Reset() {
	m := r.Map
	m.Reset()
	*r = Request{Map: m}
}

// Response is a response head: status and headers.
type Response struct {
	Status int
	Map
}

// Reset clears the response, keeping header storage.
func (r *Response) Reset() {
	m := r.Map
	m.Reset()
	*r = Response{Map: m}
}
