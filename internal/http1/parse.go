// Package http1 is Legate's HTTP/1.1 codec: a zero-copy parser for request
// and response heads, body framing (Content-Length, chunked, until close),
// and serializers, with the request-smuggling protections a proxy needs
// (RFC 9112 section 6.3 and the rules Envoy enforces by default).
//
// Parsed heads point into the connection's read buffer: their strings stay
// valid until the message is finished and the buffer is compacted. Callers
// that keep a value longer must copy it (strings.Clone).
package http1

import (
	"bytes"
	"errors"
	"strconv"
	"unsafe"

	"github.com/legateproxy/legate/internal/headers"
)

// ProtocolError is a malformed or unacceptable message. Status is the HTTP
// status a server answers with; Detail is Envoy's response code detail.
type ProtocolError struct {
	Status int
	Detail string
}

func (e *ProtocolError) Error() string { return "http1: " + e.Detail }

func perr(status int, detail string) error { return &ProtocolError{Status: status, Detail: detail} }

// Errors returned for specific conditions.
var (
	ErrHeadersTooLarge = &ProtocolError{Status: 431, Detail: "http1.headers_too_large"}
	ErrTooManyHeaders  = &ProtocolError{Status: 431, Detail: "http1.too_many_headers"}
)

// RequestHead is a parsed request line and header block.
type RequestHead struct {
	Method    string
	Target    string // the request-target as sent
	Path      string // origin-form path and query (from absolute-form too)
	Authority string // Host header, or the authority of an absolute-form target
	Scheme    string // scheme of an absolute-form target, else ""
	Minor     int    // HTTP/1.Minor
	Headers   headers.Map

	// ContentLength is the declared body length, or -1 when none was given.
	ContentLength int64
	Chunked       bool
	// KeepAlive is false when the client asked to close after this exchange.
	KeepAlive bool
	// Upgrade is the Upgrade header when Connection names "upgrade".
	Upgrade   string
	Expect100 bool
}

// Reset clears h for reuse, keeping header storage.
func (h *RequestHead) Reset() {
	hs := h.Headers
	hs.Reset()
	*h = RequestHead{Headers: hs}
}

// ResponseHead is a parsed status line and header block.
type ResponseHead struct {
	Status  int
	Reason  string
	Minor   int
	Headers headers.Map

	ContentLength int64
	Chunked       bool
	KeepAlive     bool
}

// Reset clears h for reuse, keeping header storage.
func (h *ResponseHead) Reset() {
	hs := h.Headers
	hs.Reset()
	*h = ResponseHead{Headers: hs}
}

// HeadEnd returns the length of the head at the start of b, including the
// empty line that ends it, or -1 if b does not hold a complete head yet.
// Lines may end in CRLF or a bare LF.
func HeadEnd(b []byte) int {
	if i := bytes.Index(b, crlfcrlf); i >= 0 {
		// A bare-LF blank line may come earlier.
		if j := bytes.Index(b[:i+2], lflf); j >= 0 {
			return j + 2
		}
		return i + 4
	}
	if j := bytes.Index(b, lflf); j >= 0 {
		return j + 2
	}
	if j := bytes.Index(b, lfcrlf); j >= 0 {
		return j + 3
	}
	return -1
}

var (
	crlfcrlf = []byte("\r\n\r\n")
	lflf     = []byte("\n\n")
	lfcrlf   = []byte("\n\r\n")
)

// str views b as a string without copying; see the package comment.
func str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// nextLine returns the line at the start of b (without its terminator) and
// the rest. A CR anywhere but before the LF is an error.
func nextLine(b []byte) (line, rest []byte, err error) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, nil, perr(400, "http1.codec_error")
	}
	line = b[:i]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, perr(400, "http1.invalid_characters")
	}
	return line, b[i+1:], nil
}

// ParseRequest parses the complete head in b (as delimited by HeadEnd) into
// h. Header names are lower-cased in place. maxHeaders bounds the header
// count (0 means 100, Envoy's default).
func ParseRequest(b []byte, h *RequestHead, maxHeaders int) error {
	line, rest, err := nextLine(b)
	if err != nil {
		return err
	}
	// Tolerate one empty line before the request line (RFC 9112 2.2).
	if len(line) == 0 {
		if line, rest, err = nextLine(rest); err != nil {
			return err
		}
	}
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return perr(400, "http1.codec_error")
	}
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp2 == sp1 {
		return perr(400, "http1.codec_error") // HTTP/0.9 simple request
	}
	method, target, version := line[:sp1], line[sp1+1:sp2], line[sp2+1:]
	if !IsToken(method) {
		return perr(400, "http1.invalid_method")
	}
	if len(target) == 0 || !validTarget(target) {
		return perr(400, "http1.invalid_url")
	}
	minor, ok := parseVersion(version)
	if !ok {
		return perr(400, "http1.codec_error")
	}
	h.Method, h.Target, h.Minor = str(method), str(target), minor
	h.ContentLength = -1
	h.KeepAlive = minor >= 1
	if err := h.setTarget(target); err != nil {
		return err
	}
	var host string
	var hostSeen bool
	var conn, upgrade, te string
	var clSeen bool
	if maxHeaders <= 0 {
		maxHeaders = 100
	}
	for {
		line, rest, err = nextLine(rest)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			break
		}
		name, value, err := splitHeader(line)
		if err != nil {
			return err
		}
		switch name {
		case "host":
			if hostSeen {
				return perr(400, "http1.multiple_host")
			}
			hostSeen, host = true, value
			continue // kept as Authority, not in Headers
		case "content-length":
			n, ok := parseContentLength(value)
			if !ok || (clSeen && n != h.ContentLength) {
				return perr(400, "http1.content_length_not_allowed")
			}
			clSeen, h.ContentLength = true, n
		case "transfer-encoding":
			if te != "" {
				te += "," + value
			} else {
				te = value
			}
		case "connection":
			if conn != "" {
				conn += "," + value
			} else {
				conn = value
			}
		case "upgrade":
			upgrade = value
		case "expect":
			if equalFold(value, "100-continue") {
				h.Expect100 = true
			}
		}
		if h.Headers.Len() >= maxHeaders {
			return ErrTooManyHeaders
		}
		h.Headers.Add(name, value)
	}
	if te != "" {
		if minor == 0 {
			return perr(400, "http1.transfer_encoding_not_allowed")
		}
		if clSeen {
			return perr(400, "http1.content_length_and_chunked_not_allowed")
		}
		if !equalFold(trimOWS(te), "chunked") {
			return perr(501, "http1.invalid_transfer_encoding")
		}
		h.Chunked = true
	}
	if hostSeen && h.Authority == "" {
		h.Authority = host
	}
	if !hostSeen && minor >= 1 && h.Authority == "" {
		return perr(400, "http1.missing_host_header")
	}
	if conn != "" {
		if headers.HasToken(conn, "close") {
			h.KeepAlive = false
		} else if minor == 0 && headers.HasToken(conn, "keep-alive") {
			h.KeepAlive = true
		}
		if upgrade != "" && headers.HasToken(conn, "upgrade") {
			h.Upgrade = upgrade
		}
	}
	return nil
}

// setTarget derives Path, Authority and Scheme from the request-target.
func (h *RequestHead) setTarget(t []byte) error {
	switch {
	case t[0] == '/':
		h.Path = str(t)
	case len(t) == 1 && t[0] == '*':
		h.Path = "*"
	case hasPrefixFold(t, "http://") || hasPrefixFold(t, "https://"):
		i := bytes.Index(t, []byte("://"))
		h.Scheme = str(t[:i])
		rest := t[i+3:]
		j := bytes.IndexAny(rest, "/?")
		if j < 0 {
			h.Authority, h.Path = str(rest), "/"
		} else {
			h.Authority = str(rest[:j])
			if rest[j] == '?' {
				// "http://h?q" has an empty path; the origin-form is "/?q".
				h.Path = "/" + str(rest[j:])
			} else {
				h.Path = str(rest[j:])
			}
		}
		if h.Authority == "" {
			return perr(400, "http1.invalid_url")
		}
	default:
		// authority-form, only for CONNECT; the connection manager decides.
		h.Authority = str(t)
	}
	return nil
}

// ParseResponse parses the complete head in b into h.
func ParseResponse(b []byte, h *ResponseHead, maxHeaders int) error {
	line, rest, err := nextLine(b)
	if err != nil {
		return err
	}
	if len(line) < 12 || line[8] != ' ' {
		return perr(502, "upstream.invalid_status_line")
	}
	minor, ok := parseVersion(line[:8])
	if !ok {
		return perr(502, "upstream.invalid_status_line")
	}
	code, err := strconv.Atoi(str(line[9:12]))
	if err != nil || code < 100 || code > 999 || (len(line) > 12 && line[12] != ' ') {
		return perr(502, "upstream.invalid_status_line")
	}
	h.Status, h.Minor = code, minor
	if len(line) > 13 {
		h.Reason = str(line[13:])
	}
	h.ContentLength = -1
	h.KeepAlive = minor >= 1
	var conn, te string
	var clSeen bool
	if maxHeaders <= 0 {
		maxHeaders = 100
	}
	for {
		line, rest, err = nextLine(rest)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			break
		}
		name, value, err := splitHeader(line)
		if err != nil {
			return err
		}
		switch name {
		case "content-length":
			n, ok := parseContentLength(value)
			if !ok || (clSeen && n != h.ContentLength) {
				return perr(502, "upstream.content_length_invalid")
			}
			clSeen, h.ContentLength = true, n
		case "transfer-encoding":
			if te != "" {
				te += "," + value
			} else {
				te = value
			}
		case "connection":
			if conn != "" {
				conn += "," + value
			} else {
				conn = value
			}
		}
		if h.Headers.Len() >= maxHeaders {
			return perr(502, "upstream.too_many_headers")
		}
		h.Headers.Add(name, value)
	}
	if te != "" {
		if !headers.HasToken(te, "chunked") {
			// Any other coding: body runs until close (RFC 9112 6.3 item 4 for responses).
			h.KeepAlive = false
		} else {
			h.Chunked = true
			h.ContentLength = -1
		}
	}
	if conn != "" {
		if headers.HasToken(conn, "close") {
			h.KeepAlive = false
		} else if minor == 0 && headers.HasToken(conn, "keep-alive") {
			h.KeepAlive = true
		}
	}
	return nil
}

// splitHeader splits "Name: value", lower-casing the name in place and
// trimming optional whitespace around the value.
func splitHeader(line []byte) (string, string, error) {
	if line[0] == ' ' || line[0] == '\t' {
		return "", "", perr(400, "http1.invalid_characters") // obsolete line folding
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return "", "", perr(400, "http1.codec_error")
	}
	name := line[:colon]
	for i, c := range name {
		if !tokenTable[c] {
			return "", "", perr(400, "http1.invalid_characters")
		}
		if 'A' <= c && c <= 'Z' {
			name[i] = c + ('a' - 'A')
		}
	}
	v := line[colon+1:]
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	for _, c := range v {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return "", "", perr(400, "http1.invalid_characters")
		}
	}
	return str(name), str(v), nil
}

func parseVersion(v []byte) (int, bool) {
	if len(v) != 8 || string(v[:7]) != "HTTP/1." {
		return 0, false
	}
	switch v[7] {
	case '0':
		return 0, true
	case '1':
		return 1, true
	}
	return 0, false
}

// parseContentLength accepts only a run of digits (and an identical
// comma-separated repetition, which RFC 9110 allows).
func parseContentLength(v string) (int64, bool) {
	var first int64 = -1
	for v != "" {
		part := v
		if i := indexByte(v, ','); i >= 0 {
			part, v = v[:i], v[i+1:]
		} else {
			v = ""
		}
		part = trimOWS(part)
		if part == "" || len(part) > 18 {
			return 0, false
		}
		var n int64
		for i := 0; i < len(part); i++ {
			c := part[i]
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int64(c-'0')
		}
		if first >= 0 && n != first {
			return 0, false
		}
		first = n
	}
	return first, first >= 0
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, p string) bool {
	return len(b) >= len(p) && equalFold(str(b[:len(p)]), p)
}

// IsToken reports whether b is a non-empty RFC 9110 §5.6.2 token (a
// method, a header name).
func IsToken[T ~string | ~[]byte](b T) bool {
	for i := 0; i < len(b); i++ {
		if !tokenTable[b[i]] {
			return false
		}
	}
	return len(b) > 0
}

// validTarget rejects control characters, spaces and DEL in the target.
func validTarget(b []byte) bool {
	for _, c := range b {
		if c <= 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// tokenTable marks the tchar set of RFC 9110 5.6.2.
var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// ErrBodyTooLarge reports a chunk size beyond what we accept.
var ErrBodyTooLarge = errors.New("http1: chunk size too large")
