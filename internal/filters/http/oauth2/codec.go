package oauth2

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// The encodings below are Envoy's (source/extensions/filters/http/oauth2/
// filter.cc): a session written by Envoy validates here and the other way
// round, given the same hmac_secret.

// hmacPayload joins what the OauthHMAC cookie signs: the cookie domain
// (or the request's host), the expiry and the three tokens, one per line.
func hmacPayload(domain, expires, token, idToken, refreshToken string) string {
	return strings.Join([]string{domain, expires, token, idToken, refreshToken}, "\n")
}

func hmacSHA256(secret []byte, msg string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// encodeHMAC is the OauthHMAC cookie value Envoy writes: the base64
// (standard, padded) of the raw HMAC-SHA256.
func encodeHMAC(secret []byte, domain, expires, token, idToken, refreshToken string) string {
	return base64.StdEncoding.EncodeToString(hmacSHA256(secret, hmacPayload(domain, expires, token, idToken, refreshToken)))
}

// encodeHMACHex is the legacy form (base64 of the hex digest) that Envoy
// still accepts, so sessions from older releases survive an upgrade.
func encodeHMACHex(secret []byte, domain, expires, token, idToken, refreshToken string) string {
	return base64.StdEncoding.EncodeToString([]byte(hex.EncodeToString(hmacSHA256(secret, hmacPayload(domain, expires, token, idToken, refreshToken)))))
}

// hmacValid compares in constant time against both encodings.
func hmacValid(secret []byte, got, domain, expires, token, idToken, refreshToken string) bool {
	return constEq(encodeHMAC(secret, domain, expires, token, idToken, refreshToken), got) ||
		constEq(encodeHMACHex(secret, domain, expires, token, idToken, refreshToken), got)
}

func constEq(a, b string) bool {
	return len(a) == len(b) && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// randomHex is Envoy's Hex::uint64ToHex of a random 64-bit number: the
// flow id, and the nonce of the CSRF token.
func randomHex() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// csrfToken is "<nonce>.<base64(HMAC(nonce))>", the signed double-submit
// cookie OWASP recommends, as Envoy generates it.
func csrfToken(secret []byte, nonce string) string {
	return nonce + "." + base64.StdEncoding.EncodeToString(hmacSHA256(secret, nonce))
}

// csrfTokenValid checks the token's HMAC (so a nonce cookie planted by
// another site without the secret is refused).
func csrfTokenValid(secret []byte, token string) bool {
	nonce, mac, ok := strings.Cut(token, ".")
	if !ok {
		return false
	}
	return constEq(base64.StdEncoding.EncodeToString(hmacSHA256(secret, nonce)), mac)
}

// state is the OAuth state parameter (RFC 6749 section 4.1.1): Envoy's
// base64url JSON object with the original URL, the CSRF token and the
// flow id that names the flow's cookies.
type state struct {
	URL       string `json:"url"`
	CSRFToken string `json:"csrf_token"`
	FlowID    string `json:"flow_id"`
}

// encodeState writes the state in Envoy's field order, base64url without
// padding.
func encodeState(s state) string {
	var b strings.Builder
	b.WriteString(`{"url":`)
	writeJSONString(&b, s.URL)
	b.WriteString(`,"csrf_token":`)
	writeJSONString(&b, s.CSRFToken)
	b.WriteString(`,"flow_id":`)
	writeJSONString(&b, s.FlowID)
	b.WriteString("}")
	return base64.RawURLEncoding.EncodeToString([]byte(b.String()))
}

func writeJSONString(b *strings.Builder, s string) {
	j, _ := json.Marshal(s)
	b.Write(j)
}

// decodeState reads a state parameter. It returns the decoded text (for
// the 401's details) and whether the url and csrf_token fields exist, as
// Envoy requires; flow_id is optional (states from older releases).
func decodeState(param string) (st state, text string, err error) {
	raw, derr := base64URLDecode(param)
	text = string(raw)
	if derr != nil {
		return st, text, errStateJSON
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return st, text, errStateJSON
	}
	u, okURL := m["url"]
	c, okCSRF := m["csrf_token"]
	if !okURL || !okCSRF {
		return st, text, errStateFields
	}
	// Non-string values read as empty, as a protobuf Struct's
	// string_value would.
	json.Unmarshal(u, &st.URL)
	json.Unmarshal(c, &st.CSRFToken)
	if f, ok := m["flow_id"]; ok {
		json.Unmarshal(f, &st.FlowID)
	}
	return st, text, nil
}

// detailError is an error whose text is Envoy's log and response code
// details wording (capitalized as Envoy writes it).
type detailError string

func (e detailError) Error() string { return string(e) }

const (
	errStateJSON   = detailError("State query param is not a valid JSON")
	errStateFields = detailError("State query param does not contain url or CSRF token")
)

// base64URLDecode accepts base64url with or without padding (Envoy's
// Base64Url::decode).
func base64URLDecode(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// codeVerifier is a PKCE code verifier (RFC 7636 section 4.1) of 32 random
// octets, base64url: 43 characters.
func codeVerifier() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// codeChallenge is the S256 challenge of a verifier (RFC 7636 section 4.2).
func codeChallenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// encrypt is Envoy's token encryption: AES-256-CBC with PKCS#7 padding,
// the key the SHA-256 of the HMAC secret, a random IV prepended, all
// base64url without padding.
func encrypt(plaintext string, secret []byte) string {
	key := sha256.Sum256(secret)
	block, _ := aes.NewCipher(key[:])
	pad := aes.BlockSize - len(plaintext)%aes.BlockSize
	buf := make([]byte, aes.BlockSize+len(plaintext)+pad)
	iv := buf[:aes.BlockSize]
	rand.Read(iv)
	copy(buf[aes.BlockSize:], plaintext)
	for i := len(buf) - pad; i < len(buf); i++ {
		buf[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(buf[aes.BlockSize:], buf[aes.BlockSize:])
	return base64.RawURLEncoding.EncodeToString(buf)
}

// decrypt reverses encrypt; the errors are Envoy's wording.
func decrypt(encrypted string, secret []byte) (string, error) {
	data, _ := base64URLDecode(encrypted)
	if len(data) <= aes.BlockSize {
		return "", detailError("Invalid encrypted data")
	}
	ct := data[aes.BlockSize:]
	if len(ct)%aes.BlockSize != 0 {
		return "", errors.New("failed to finalize decryption")
	}
	key := sha256.Sum256(secret)
	block, _ := aes.NewCipher(key[:])
	out := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, data[:aes.BlockSize]).CryptBlocks(out, ct)
	pad := int(out[len(out)-1])
	if pad == 0 || pad > aes.BlockSize || pad > len(out) {
		return "", errors.New("failed to finalize decryption")
	}
	for _, c := range out[len(out)-pad:] {
		if int(c) != pad {
			return "", errors.New("failed to finalize decryption")
		}
	}
	return string(out[:len(out)-pad]), nil
}

// jwtExp returns a JWT's exp claim (0 when the token is not a JWT or has
// none), as Envoy's JwtVerify::Jwt::parseFromString reads it to size the
// refresh and ID token cookies.
func jwtExp(token string) int64 {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return 0
	}
	hb, err := base64URLDecode(parts[0])
	if err != nil {
		return 0
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(hb, &hdr) != nil || hdr.Alg == "" {
		return 0
	}
	pb, err := base64URLDecode(parts[1])
	if err != nil {
		return 0
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(pb, &claims) != nil {
		return 0
	}
	n, err := strconv.ParseInt(claims.Exp.String(), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// urlEncode is Envoy's PercentEncoding::urlEncode: everything but the
// RFC 3986 unreserved characters is percent-encoded (a space as %20).
func urlEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
	}
	return b.String()
}

// percentEncode is Envoy's PercentEncoding::encode(value, reserved):
// the reserved characters, '%', controls and bytes from '~' up are
// encoded, the rest kept.
func percentEncode(s, reserved string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' || c >= '~' || c == '%' || strings.IndexByte(reserved, c) >= 0 {
			b.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// formReserved are the characters Envoy encodes in the token request's
// form values.
const formReserved = ":/=&?+"
