// Package aws is AWS request signing as Envoy's source/extensions/common/aws
// does it, for the filters that sign requests to AWS services
// (envoy.filters.http.aws_request_signing): Signature Version 4 (HMAC-SHA256
// with a region) and Signature Version 4A (ECDSA P-256 with a region set),
// in the Authorization header or in the query string (presigned), and the
// credentials and region providers that need no network: inline
// credentials, the environment, the AWS credentials and config files.
//
// The canonical request follows Envoy's utility.cc, which follows AWS's
// specification: the method; the path, normalized (dot segments, empty
// segments) and URI-encoded once more (the request's path is already
// encoded, so AWS's "double encoding") except for the S3 services, whose
// path is used verbatim; the query parameters decoded, re-encoded (RFC 3986
// unreserved characters kept, a space as %20) and sorted; every header of the
// request with a non-empty value except x-forwarded-for, x-forwarded-proto,
// x-amzn-trace-id and those excluded by configuration, lower-cased, values
// trimmed with inner runs of whitespace collapsed, repeated headers joined
// with ","; host from :authority without a default port (80, 443); the
// signed header names; and the payload hash (the SHA-256 of the body, of
// the empty string, or UNSIGNED-PAYLOAD).
//
// Three deliberate differences from Envoy, where Envoy's output is not
// what AWS (and its SDKs) compute: a query parameter that carries an
// encoded "+" (%2B) is canonicalized as %2B (Envoy turns it into %20, as a
// literal "+"); a ".." segment at the root is dropped (Envoy keeps an extra
// "/"); and a presigned request's X-Amz-Security-Token is percent-encoded
// like the other parameters (Envoy leaves the "/", "+" and "=" of a session
// token as they are, in the query and in the canonical request).
package aws

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/legateproxy/legate/internal/headers"
)

// Algorithm is the signing algorithm.
type Algorithm uint8

const (
	// SigV4 is AWS4-HMAC-SHA256, valid in one region.
	SigV4 Algorithm = iota
	// SigV4A is AWS4-ECDSA-P256-SHA256, valid in a region set.
	SigV4A
)

// Payload hashes.
const (
	// EmptyHash is the SHA-256 of the empty string.
	EmptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	// UnsignedPayload stands for a body that is not signed.
	UnsignedPayload = "UNSIGNED-PAYLOAD"
)

const (
	algoV4  = "AWS4-HMAC-SHA256"
	algoV4A = "AWS4-ECDSA-P256-SHA256"

	hdrContentSha256 = "x-amz-content-sha256"
	hdrDate          = "x-amz-date"
	hdrSecurityToken = "x-amz-security-token"
	hdrRegionSet     = "x-amz-region-set"
	hdrAuthorization = "authorization"

	qAlgorithm     = "X-Amz-Algorithm"
	qCredential    = "X-Amz-Credential"
	qDate          = "X-Amz-Date"
	qExpires       = "X-Amz-Expires"
	qRegionSet     = "X-Amz-Region-Set"
	qSecurityToken = "X-Amz-Security-Token"
	qSignature     = "X-Amz-Signature"
	qSignedHeaders = "X-Amz-SignedHeaders"

	longDate  = "20060102T150405Z"
	shortDate = "20060102"
)

// DefaultExpiration is the validity of a query-string signature when the
// config gives none (Envoy's SignatureQueryParameterValues::DefaultExpiration).
const DefaultExpiration = 5

// defaultExcluded are the headers Envoy never signs: they are likely to
// change on the way (retries, later proxies).
var defaultExcluded = []string{"x-forwarded-for", "x-forwarded-proto", "x-amzn-trace-id"}

// Signer signs requests for one service in one region (SigV4) or region
// set (SigV4A). It is safe for concurrent use.
type Signer struct {
	Service   string
	Region    string
	Algorithm Algorithm
	// Credentials provides the keys at signing time.
	Credentials Provider
	// Exclude matches header names (lower case) that are not signed;
	// Include, when not empty, the only ones that are besides the
	// required ones (host and x-amz-*), and Exclude is not used.
	Exclude []func(string) bool
	Include []func(string) bool
	// QueryString signs in the query string (a presigned request) valid for
	// Expiration seconds rather than in the Authorization header.
	QueryString bool
	Expiration  int
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	// v4aKey caches the last SigV4A key derived.
	v4aKey atomic.Pointer[derivedKey]
}

// Result is what signing computed, for logs and tests.
type Result struct {
	// Signed is false when there were no credentials: the request was
	// left unsigned (as Envoy and the AWS SDKs do for anonymous requests).
	Signed           bool
	CanonicalRequest string
	StringToSign     string
	Signature        string
}

// SignEmptyPayload signs a request without a body: x-amz-content-sha256
// is the hash of the empty string (Envoy's signEmptyPayload).
func (s *Signer) SignEmptyPayload(r *headers.Request) (Result, error) {
	r.Map.Set(hdrContentSha256, EmptyHash)
	return s.Sign(r, EmptyHash)
}

// SignUnsignedPayload signs a request whose body is not signed
// (Envoy's signUnsignedPayload).
func (s *Signer) SignUnsignedPayload(r *headers.Request) (Result, error) {
	r.Map.Set(hdrContentSha256, UnsignedPayload)
	return s.Sign(r, UnsignedPayload)
}

// Sign signs r with the given payload hash (hex SHA-256 of the body, or
// UnsignedPayload). In header mode it sets x-amz-content-sha256, x-amz-date,
// x-amz-security-token (with a session token), x-amz-region-set (SigV4A)
// and Authorization, replacing any the request had; in query-string mode it
// adds the X-Amz-* parameters and X-Amz-Signature to the path's query.
func (s *Signer) Sign(r *headers.Request, contentHash string) (Result, error) {
	if !s.QueryString && contentHash != "" {
		r.Map.Set(hdrContentSha256, contentHash)
	}
	var creds Credentials
	if s.Credentials != nil {
		creds = s.Credentials.Credentials()
	}
	if !creds.Valid() {
		// Empty or anonymous credentials: the request goes unsigned, as
		// with the AWS SDKs.
		return Result{}, nil
	}
	if r.Method == "" {
		return Result{}, errors.New("message is missing :method header")
	}
	if r.Path == "" {
		return Result{}, errors.New("message is missing :path header")
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	t := now().UTC()
	long, short := t.Format(longDate), t.Format(shortDate)

	if !s.QueryString {
		// Envoy's addRequiredHeaders.
		r.Map.Del(hdrAuthorization)
		r.Map.Del(hdrSecurityToken)
		if creds.SessionToken != "" {
			r.Map.Set(hdrSecurityToken, creds.SessionToken)
		}
		r.Map.Set(hdrDate, long)
		if s.Algorithm == SigV4A {
			r.Map.Set(hdrRegionSet, s.Region)
		}
	}
	ch := CanonicalHeaders(r, s.excluded())
	scope := s.scope(short)
	credential := creds.AccessKeyID + "/" + scope

	if s.QueryString {
		q := parseQuery(r.Path)
		if s.Algorithm == SigV4A {
			q.add(qRegionSet, EncodeQueryComponent(s.Region))
		}
		q.add(qAlgorithm, s.algorithm())
		q.add(qDate, long)
		q.add(qExpires, strconv.Itoa(s.expiration()))
		if creds.SessionToken != "" {
			q.add(qSecurityToken, EncodeQueryComponent(creds.SessionToken))
		}
		q.add(qCredential, EncodeQueryComponent(credential))
		q.add(qSignedHeaders, EncodeQueryComponent(ch.Names()))
		r.Path = q.replace(r.Path)
	}

	hash := contentHash
	if hash == "" {
		hash = EmptyHash
	}
	res := Result{Signed: true}
	res.CanonicalRequest = CanonicalRequest(r.Method, r.Path, ch, hash, !isS3(s.Service))
	res.StringToSign = s.algorithm() + "\n" + long + "\n" + scope + "\n" + hexSHA256(res.CanonicalRequest)
	sig, err := s.signature(creds, short, res.StringToSign)
	if err != nil {
		return Result{}, err
	}
	res.Signature = sig

	if s.QueryString {
		q := parseQuery(r.Path)
		q.add(qSignature, sig)
		r.Path = q.replace(r.Path)
	} else {
		r.Map.Set(hdrAuthorization, s.algorithm()+" Credential="+credential+", SignedHeaders="+ch.Names()+", Signature="+sig)
	}
	return res, nil
}

func (s *Signer) algorithm() string {
	if s.Algorithm == SigV4A {
		return algoV4A
	}
	return algoV4
}

func (s *Signer) expiration() int {
	if s.Expiration <= 0 {
		return DefaultExpiration
	}
	return s.Expiration
}

// scope is the credential scope: date/region/service/aws4_request, without
// the region for SigV4A.
func (s *Signer) scope(short string) string {
	if s.Algorithm == SigV4A {
		return short + "/" + s.Service + "/aws4_request"
	}
	return short + "/" + s.Region + "/" + s.Service + "/aws4_request"
}

func (s *Signer) signature(c Credentials, short, stringToSign string) (string, error) {
	if s.Algorithm == SigV4A {
		return s.signV4A(c, stringToSign)
	}
	k := SigningKey(c.SecretAccessKey, short, s.Region, s.Service)
	return hex.EncodeToString(hmacSHA256(k, stringToSign)), nil
}

// SigningKey is SigV4's derived key:
// HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request").
func SigningKey(secret, short, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), short)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, "aws4_request")
}

// excluded returns whether a header is left out of the signature.
func (s *Signer) excluded() func(string) bool {
	return func(name string) bool {
		for _, d := range defaultExcluded {
			if name == d {
				return true
			}
		}
		if len(s.Include) > 0 {
			if name == "host" || strings.HasPrefix(name, "x-amz-") {
				return false
			}
			for _, m := range s.Include {
				if m(name) {
					return false
				}
			}
			return true
		}
		for _, m := range s.Exclude {
			if m(name) {
				return true
			}
		}
		return false
	}
}

// isS3 reports the services whose paths are neither normalized nor encoded
// again (Envoy's useDoubleUriEncode / shouldNormalizeUriPath).
func isS3(service string) bool {
	return strings.EqualFold(service, "s3") || strings.EqualFold(service, "s3-outposts") || strings.EqualFold(service, "s3-express")
}

// Header is one canonical header.
type Header struct{ Name, Value string }

// Headers are canonical headers, sorted by name.
type Headers []Header

// Names is the signed headers list: the names joined with ";".
func (h Headers) Names() string {
	var b strings.Builder
	for i, x := range h {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(x.Name)
	}
	return b.String()
}

// CanonicalHeaders is Envoy's Utility::canonicalizeHeaders: every header
// with a non-empty value not excluded, values trimmed with runs of
// whitespace collapsed, repeated names joined with ","; then host from the
// authority, without a default port.
func CanonicalHeaders(r *headers.Request, excluded func(string) bool) Headers {
	idx := map[string]int{}
	var out Headers
	for _, f := range r.Map.Fields() {
		if f.Name == "" || f.Value == "" || f.Name[0] == ':' {
			continue
		}
		if excluded != nil && excluded(f.Name) {
			continue
		}
		v := collapseSpace(f.Value)
		if i, ok := idx[f.Name]; ok {
			out[i].Value += "," + v
			continue
		}
		idx[f.Name] = len(out)
		out = append(out, Header{f.Name, v})
	}
	if a := r.Authority; a != "" {
		if _, ok := idx["host"]; !ok {
			out = append(out, Header{"host", hostWithoutDefaultPort(a)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// hostWithoutDefaultPort drops :80 and :443 as the AWS SDKs (and Envoy) do.
func hostWithoutDefaultPort(a string) string {
	if h, p, ok := strings.Cut(a, ":"); ok && !strings.Contains(p, ":") && (p == "80" || p == "443") {
		return h
	}
	return a
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// collapseSpace trims ASCII whitespace and collapses inner runs of it to
// one character (absl::RemoveExtraAsciiWhitespace, which keeps the last of
// a run; header values have only spaces and tabs).
func collapseSpace(v string) string {
	i, j := 0, len(v)
	for i < j && isSpace(v[i]) {
		i++
	}
	for j > i && isSpace(v[j-1]) {
		j--
	}
	v = v[i:j]
	run := false
	for k := 0; k < len(v); k++ {
		if isSpace(v[k]) {
			if run {
				goto slow
			}
			run = true
		} else {
			run = false
		}
	}
	return v
slow:
	b := make([]byte, 0, len(v))
	for k := 0; k < len(v); k++ {
		c := v[k]
		if isSpace(c) && len(b) > 0 && isSpace(b[len(b)-1]) {
			b[len(b)-1] = c
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

// CanonicalRequest is Envoy's Utility::createCanonicalRequest. path is the
// request's :path with its query; encodePath normalizes the path and
// encodes it again (every service but S3).
func CanonicalRequest(method, path string, h Headers, contentHash string, encodePath bool) string {
	p, query, hasQuery := strings.Cut(path, "?")
	if encodePath {
		p = uriEncodePath(normalizePath(p))
	}
	if p == "" {
		p = "/"
	}
	var b strings.Builder
	b.WriteString(method)
	b.WriteByte('\n')
	b.WriteString(p)
	b.WriteByte('\n')
	if hasQuery {
		b.WriteString(CanonicalQuery(query))
	}
	b.WriteByte('\n')
	for _, x := range h {
		b.WriteString(x.Name)
		b.WriteByte(':')
		b.WriteString(x.Value)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(h.Names())
	b.WriteByte('\n')
	b.WriteString(contentHash)
	return b.String()
}

// normalizePath removes empty and "." segments and resolves ".." ones,
// keeping a trailing slash (AWS's path normalization, Envoy's
// normalizePath; a ".." at the root stays at the root).
func normalizePath(p string) string {
	var segs []string
	for _, s := range strings.Split(p, "/") {
		switch s {
		case "", ".":
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		default:
			segs = append(segs, s)
		}
	}
	out := "/" + strings.Join(segs, "/")
	if strings.HasSuffix(p, "/") && len(out) > 1 {
		out += "/"
	}
	return out
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

const upperHex = "0123456789ABCDEF"

// uriEncodePath percent-encodes every byte of the path but unreserved
// characters and "/".
func uriEncodePath(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if unreserved(c) || c == '/' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&15])
	}
	return b.String()
}

// EncodeQueryComponent percent-encodes every byte but the RFC 3986
// unreserved characters (upper-case hex; a space is %20).
func EncodeQueryComponent(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&15])
	}
	return b.String()
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// decodeQueryComponent decodes %XX escapes (a malformed one is kept as it
// is) and a literal "+" as a space, as a query string is read.
func decodeQueryComponent(s string) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && i+2 < len(s):
			hi, ok1 := fromHex(s[i+1])
			lo, ok2 := fromHex(s[i+2])
			if ok1 && ok2 {
				b = append(b, hi<<4|lo)
				i += 2
				continue
			}
			b = append(b, c)
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

// CanonicalQuery is the canonical query string: parameters split at the
// first "=", each name and value decoded then encoded again (an
// X-Amz-Security-Token value is kept as it is: the signer encoded it),
// sorted by name then value.
func CanonicalQuery(q string) string {
	type kv struct{ k, v string }
	var ps []kv
	for _, f := range strings.Split(q, "&") {
		if f == "" {
			continue
		}
		k, v, _ := strings.Cut(f, "=")
		if k == qSecurityToken {
			ps = append(ps, kv{k, v})
			continue
		}
		ps = append(ps, kv{EncodeQueryComponent(decodeQueryComponent(k)), EncodeQueryComponent(decodeQueryComponent(v))})
	}
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].k != ps[j].k {
			return ps[i].k < ps[j].k
		}
		return ps[i].v < ps[j].v
	})
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String()
}

// query is Envoy's QueryParamsMulti: parameters by name (sorted), each
// name's values in the order they were added, kept as they are (not
// decoded).
type query struct {
	names []string
	vals  map[string][]string
}

func parseQuery(path string) *query {
	q := &query{vals: map[string][]string{}}
	_, raw, ok := strings.Cut(path, "?")
	if !ok {
		return q
	}
	for _, f := range strings.Split(raw, "&") {
		if f == "" {
			continue
		}
		k, v, _ := strings.Cut(f, "=")
		q.add(k, v)
	}
	return q
}

func (q *query) add(k, v string) {
	if _, ok := q.vals[k]; !ok {
		i := sort.SearchStrings(q.names, k)
		q.names = append(q.names, "")
		copy(q.names[i+1:], q.names[i:])
		q.names[i] = k
	}
	q.vals[k] = append(q.vals[k], v)
}

// replace returns path with its query replaced by q (Envoy's
// replaceQueryString: names sorted, "name=value" pairs).
func (q *query) replace(path string) string {
	p, _, _ := strings.Cut(path, "?")
	var b strings.Builder
	b.WriteString(p)
	sep := byte('?')
	for _, k := range q.names {
		for _, v := range q.vals[k] {
			b.WriteByte(sep)
			sep = '&'
			b.WriteString(k)
			b.WriteByte('=')
			b.WriteString(v)
		}
	}
	return b.String()
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

func hexSHA256(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// HashPayload is the hex SHA-256 of a body.
func HashPayload(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
