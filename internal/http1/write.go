package http1

import (
	"strconv"

	"github.com/legateproxy/legate/internal/headers"
)

// framingHeader reports whether name is set by the serializer itself.
func framingHeader(name string) bool {
	switch name {
	case "content-length", "transfer-encoding", "connection":
		return true
	}
	return false
}

func appendFields(dst []byte, h *headers.Map) []byte {
	for _, f := range h.Fields() {
		if framingHeader(f.Name) || (len(f.Name) > 0 && f.Name[0] == ':') {
			continue
		}
		dst = append(dst, f.Name...)
		dst = append(dst, ": "...)
		dst = append(dst, f.Value...)
		dst = append(dst, "\r\n"...)
	}
	return dst
}

func appendFraming(dst []byte, f Framing, length int64) []byte {
	switch f {
	case Length:
		dst = append(dst, "content-length: "...)
		dst = strconv.AppendInt(dst, length, 10)
		dst = append(dst, "\r\n"...)
	case Chunked:
		dst = append(dst, "transfer-encoding: chunked\r\n"...)
	}
	return dst
}

// AppendRequestHead serializes a request head. The framing headers
// (content-length, transfer-encoding, connection) come from f, length and
// keepAlive, not from h. extraConnection, when set, is added as the
// Connection header value (as "upgrade" for an upgrade request).
func AppendRequestHead(dst []byte, method, path, authority string, h *headers.Map, f Framing, length int64, extraConnection string) []byte {
	dst = append(dst, method...)
	dst = append(dst, ' ')
	dst = append(dst, path...)
	dst = append(dst, " HTTP/1.1\r\nhost: "...)
	dst = append(dst, authority...)
	dst = append(dst, "\r\n"...)
	dst = appendFields(dst, h)
	if f == Length && length == 0 && !bodyExpected(method) {
		f = NoBody
	}
	dst = appendFraming(dst, f, length)
	if extraConnection != "" {
		dst = append(dst, "connection: "...)
		dst = append(dst, extraConnection...)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// bodyExpected reports whether a request with this method carries a
// content-length even when empty, as Envoy sends "content-length: 0" on
// POST/PUT/PATCH.
func bodyExpected(method string) bool {
	return method == "POST" || method == "PUT" || method == "PATCH"
}

// AppendResponseHead serializes a response status line and headers for an
// HTTP/1.minor client. close adds "connection: close".
func AppendResponseHead(dst []byte, minor, status int, h *headers.Map, f Framing, length int64, close bool) []byte {
	if minor == 0 {
		dst = append(dst, "HTTP/1.0 "...)
	} else {
		dst = append(dst, "HTTP/1.1 "...)
	}
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	dst = append(dst, StatusText(status)...)
	dst = append(dst, "\r\n"...)
	dst = appendFields(dst, h)
	dst = appendFraming(dst, f, length)
	if close {
		dst = append(dst, "connection: close\r\n"...)
	} else if minor == 0 {
		dst = append(dst, "connection: keep-alive\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// AppendUpgradeResponseHead serializes a 101 Switching Protocols head.
func AppendUpgradeResponseHead(dst []byte, h *headers.Map, upgrade string) []byte {
	dst = append(dst, "HTTP/1.1 101 Switching Protocols\r\n"...)
	dst = appendFields(dst, h)
	dst = append(dst, "connection: upgrade\r\nupgrade: "...)
	dst = append(dst, upgrade...)
	return append(dst, "\r\n\r\n"...)
}

// AppendChunk appends data as one chunk of the chunked coding.
func AppendChunk(dst, data []byte) []byte {
	if len(data) == 0 {
		return dst
	}
	dst = strconv.AppendUint(dst, uint64(len(data)), 16)
	dst = append(dst, "\r\n"...)
	dst = append(dst, data...)
	return append(dst, "\r\n"...)
}

// AppendChunkHeader appends the size line of a chunk of n bytes.
func AppendChunkHeader(dst []byte, n int) []byte {
	dst = strconv.AppendUint(dst, uint64(n), 16)
	return append(dst, "\r\n"...)
}

// AppendLastChunk ends a chunked body, with trailers if any.
func AppendLastChunk(dst []byte, trailers *headers.Map) []byte {
	dst = append(dst, "0\r\n"...)
	if trailers != nil {
		dst = appendFields(dst, trailers)
	}
	return append(dst, "\r\n"...)
}

// StatusText returns the reason phrase for code (as Envoy writes it).
func StatusText(code int) string {
	if code >= 0 && code < len(statusText) && statusText[code] != "" {
		return statusText[code]
	}
	return "Unknown"
}

var statusText = func() []string {
	t := make([]string, 600)
	for code, s := range map[int]string{
		100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints",
		200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information",
		204: "No Content", 205: "Reset Content", 206: "Partial Content", 207: "Multi-Status",
		208: "Already Reported", 226: "IM Used",
		300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other",
		304: "Not Modified", 305: "Use Proxy", 307: "Temporary Redirect", 308: "Permanent Redirect",
		400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
		404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
		407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
		411: "Length Required", 412: "Precondition Failed", 413: "Payload Too Large",
		414: "URI Too Long", 415: "Unsupported Media Type", 416: "Range Not Satisfiable",
		417: "Expectation Failed", 418: "I'm a teapot", 421: "Misdirected Request",
		422: "Unprocessable Entity", 423: "Locked", 424: "Failed Dependency", 425: "Too Early",
		426: "Upgrade Required", 428: "Precondition Required", 429: "Too Many Requests",
		431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
		500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
		503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
		506: "Variant Also Negotiates", 507: "Insufficient Storage", 508: "Loop Detected",
		510: "Not Extended", 511: "Network Authentication Required",
	} {
		t[code] = s
	}
	return t
}()

// ProperCaseHead rewrites the header names of a serialized head in place
// as Envoy's header_key_format proper_case_words: the first character of
// a name and any letter after a non-alphanumeric character are upper
// case ("content-type" → "Content-Type", "foo$b#$are" → "Foo$B#$Are").
// The request or status line (the first line) is left alone. Names are
// ASCII tokens (RFC 9110 §5.1), so the length never changes.
func ProperCaseHead(head []byte) {
	i := 0
	for i < len(head) && head[i] != '\n' {
		i++
	}
	for i++; i < len(head); i++ {
		// At the start of a header line: up-case until the colon.
		if head[i] == '\r' {
			return // the blank line ending the head
		}
		upper := true
		for ; i < len(head) && head[i] != ':'; i++ {
			c := head[i]
			isAlpha := c|0x20 >= 'a' && c|0x20 <= 'z'
			if upper && c >= 'a' && c <= 'z' {
				head[i] = c - 'a' + 'A'
			}
			upper = !isAlpha && !(c >= '0' && c <= '9')
		}
		for i < len(head) && head[i] != '\n' {
			i++
		}
	}
}
