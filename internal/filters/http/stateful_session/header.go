package stateful_session

import (
	"encoding/base64"

	headerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/stateful_session/header/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
)

// headerState is a compiled HeaderBasedSessionState: the header carries
// the base64 of the host's plain "ip:port", both ways.
type headerState struct{ name string }

func compileHeader(m *headerv3.HeaderBasedSessionState, path string) (*headerState, error) {
	if err := config.CheckFields(m, path, "name"); err != nil {
		return nil, err
	}
	if m.GetName() == "" {
		// Envoy's message.
		return nil, config.Errorf(config.Join(path, "name"), "Header name cannot be empty for header based stateful sessions")
	}
	return &headerState{name: headers.Lower(m.GetName())}, nil
}

func (hs *headerState) create(h *headers.Request) *session {
	v, _ := h.Map.Lookup(hs.name)
	s := &session{address: decodeBase64(v)}
	s.update = func(host string, rh *headers.Response) {
		if host == s.address {
			return
		}
		// Envoy sets (replaces) the header.
		rh.Map.Set(hs.name, base64.StdEncoding.EncodeToString([]byte(host)))
	}
	return s
}
