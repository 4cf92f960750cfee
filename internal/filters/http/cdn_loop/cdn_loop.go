// Package cdn_loop is envoy.filters.http.cdn_loop: it detects loops
// between CDNs with the CDN-Loop request header of RFC 8586. A request
// whose CDN-Loop header does not parse is answered 400 "Invalid CDN-Loop
// header in request."; one that names cdn_id more than
// max_allowed_occurrences times is answered 502 "The server has detected
// a loop between CDNs."; any other request continues with cdn_id appended
// to the header. As Envoy's cdn_loop filter.cc, parser.cc and utils.cc.
package cdn_loop

import (
	"fmt"

	cdnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cdn_loop/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
)

// Name is the filter's name.
const Name = "envoy.filters.http.cdn_loop"

const header = "cdn-loop"

func init() {
	httpfilter.Register(Name, nil, &cdnv3.CdnLoopConfig{}, nil, httpfilter.Factory{Compile: compile}, "")
}

type filterConfig struct {
	cdnID string
	max   int
}

func compile(_ *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*cdnv3.CdnLoopConfig)
	if err := config.CheckFields(c, path, "cdn_id", "max_allowed_occurrences"); err != nil {
		return nil, err
	}
	// The proto requires a non-empty cdn_id (min_len 1), checked already;
	// this guards against a config built without validation.
	if c.GetCdnId() == "" {
		return nil, config.Errorf(config.Join(path, "cdn_id"), "cdn_id must not be empty")
	}
	// As Envoy, cdn_id must start with a valid cdn-id (RFC 8586 section 2).
	if _, err := (&parser{s: c.GetCdnId()}).cdnID(); err != nil {
		return nil, config.Errorf(config.Join(path, "cdn_id"), "Provided cdn_id %q is not a valid CDN identifier: %v", c.GetCdnId(), err)
	}
	return &filterConfig{cdnID: c.GetCdnId(), max: int(c.GetMaxAllowedOccurrences())}, nil
}

// NewFilter makes the stream's filter (stateless, shared).
func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

type filter struct {
	cfg *filterConfig
	cb  httpfilter.Callbacks
}

// DecodeHeaders checks and extends the CDN-Loop header.
func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	// CDN-Loop is one of Envoy's inline headers: several fields arrive
	// coalesced into one value, joined with ",".
	if h.Map.Has(header) {
		cur := h.Map.Joined(header)
		n, err := countOccurrences(cur, f.cfg.cdnID)
		if err != nil {
			f.cb.Log().Debug("cdn_loop: invalid CDN-Loop header", "value", cur, "error", err)
			f.cb.SendLocalReply(400, "Invalid CDN-Loop header in request.", httpfilter.LocalReply{Details: "invalid_cdn_loop_header"})
			return httpfilter.StopIteration
		}
		if n > f.cfg.max {
			f.cb.SendLocalReply(502, "The server has detected a loop between CDNs.", httpfilter.LocalReply{Details: "cdn_loop_detected"})
			return httpfilter.StopIteration
		}
		// Envoy's appendCopy: "," with no space, none after an empty value.
		if cur == "" {
			h.Map.Set(header, f.cfg.cdnID)
		} else {
			h.Map.Set(header, cur+","+f.cfg.cdnID)
		}
		return httpfilter.Continue
	}
	h.Map.Add(header, f.cfg.cdnID)
	return httpfilter.Continue
}

// countOccurrences parses a CDN-Loop value and counts the cdn-ids equal to
// id (case-sensitively, as Envoy).
func countOccurrences(v, id string) (int, error) {
	ids, err := parseCDNInfoList(v)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n, nil
}

// The grammar (RFC 8586 section 2):
//
//	CDN-Loop  = #cdn-info
//	cdn-info  = cdn-id *( OWS ";" OWS parameter )
//	cdn-id    = ( uri-host [ ":" port ] ) / pseudonym
//	pseudonym = token
//
// Like Envoy's parser, uri-host is a token or a plausible IPv6 literal in
// brackets (hex digits of either case, ":" and "."); a port is any run of
// digits after ":"; a parameter is token "=" ( token / quoted-string ).

type parser struct {
	s string
	i int
}

func (p *parser) atEnd() bool { return p.i >= len(p.s) }

func (p *parser) skipOWS() {
	for !p.atEnd() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *parser) errorf(what string) error {
	if p.atEnd() {
		return fmt.Errorf("expected %s at position %d; found end of input", what, p.i)
	}
	return fmt.Errorf("expected %s at position %d; found %q", what, p.i, p.s[p.i])
}

// tchar is RFC 7230 section 3.2.6's token character.
func tchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

func (p *parser) token() error {
	start := p.i
	for !p.atEnd() && tchar(p.s[p.i]) {
		p.i++
	}
	if p.i == start {
		return p.errorf("token")
	}
	return nil
}

// qdtext and obs-text: RFC 7230 section 3.2.6.
func qdtext(c byte) bool {
	return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e) || c >= 0x80
}

func (p *parser) quotedString() error {
	if p.atEnd() || p.s[p.i] != '"' {
		return p.errorf("opening quote")
	}
	p.i++
	for !p.atEnd() && p.s[p.i] != '"' {
		c := p.s[p.i]
		switch {
		case qdtext(c):
			p.i++
		case c == '\\':
			p.i++
			if p.atEnd() {
				return p.errorf("escaped character")
			}
			// quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
			e := p.s[p.i]
			if !(e == '\t' || e == ' ' || (e >= 0x21 && e <= 0x7e) || e >= 0x80) {
				return p.errorf("escapable character")
			}
			p.i++
		default:
			return p.errorf("closing quote")
		}
	}
	if p.atEnd() {
		return p.errorf("closing quote")
	}
	p.i++
	return nil
}

func hexdig(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func (p *parser) ipv6() error {
	p.i++ // '['
	for !p.atEnd() && (hexdig(p.s[p.i]) || p.s[p.i] == ':' || p.s[p.i] == '.') {
		p.i++
	}
	if p.atEnd() || p.s[p.i] != ']' {
		return p.errorf("closing ']' of IPv6 literal")
	}
	p.i++
	return nil
}

func (p *parser) cdnID() (string, error) {
	start := p.i
	if p.atEnd() {
		return "", p.errorf("cdn-id")
	}
	var err error
	if p.s[p.i] == '[' {
		err = p.ipv6()
	} else {
		err = p.token()
	}
	if err != nil {
		return "", err
	}
	if !p.atEnd() && p.s[p.i] == ':' {
		p.i++
		for !p.atEnd() && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
	}
	return p.s[start:p.i], nil
}

func (p *parser) parameter() error {
	if err := p.token(); err != nil {
		return err
	}
	if p.atEnd() || p.s[p.i] != '=' {
		return p.errorf("'='")
	}
	p.i++
	if p.atEnd() {
		return p.errorf("token or quoted-string")
	}
	if p.s[p.i] == '"' {
		return p.quotedString()
	}
	return p.token()
}

func (p *parser) cdnInfo() (string, error) {
	id, err := p.cdnID()
	if err != nil {
		return "", err
	}
	p.skipOWS()
	for !p.atEnd() && p.s[p.i] == ';' {
		p.i++
		p.skipOWS()
		if err := p.parameter(); err != nil {
			return "", err
		}
		p.skipOWS()
	}
	return id, nil
}

// parseCDNInfoList returns the cdn-ids of a CDN-Loop value. Empty list
// elements are allowed (RFC 7230 section 7's #rule).
func parseCDNInfoList(v string) ([]string, error) {
	p := &parser{s: v}
	var ids []string
	p.skipOWS()
	for !p.atEnd() {
		if p.s[p.i] == ',' {
			p.i++
			p.skipOWS()
			continue
		}
		id, err := p.cdnInfo()
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
		p.skipOWS()
		if p.atEnd() {
			break
		}
		if p.s[p.i] != ',' {
			return nil, p.errorf("','")
		}
		p.i++
		p.skipOWS()
	}
	return ids, nil
}
