package tlsx

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
)

func nextPEMCert(b []byte) (*x509.Certificate, []byte) {
	for {
		blk, rest := pem.Decode(b)
		if blk == nil {
			return nil, nil
		}
		if blk.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, nil
			}
			return c, rest
		}
		b = rest
	}
}

// ClientHello is what the tls_inspector listener filter learns from the
// first bytes of a connection.
type ClientHello struct {
	TLS        bool     // the connection starts with a TLS handshake
	ServerName string   // SNI
	ALPN       []string // offered application protocols
}

// ErrNeedMore means the bytes seen so far do not hold the whole
// ClientHello yet.
var ErrNeedMore = errors.New("tls_inspector: need more bytes")

// ParseClientHello inspects the start of a connection. It returns
// ErrNeedMore when b is a prefix of a TLS record that is not complete, and
// a ClientHello with TLS false when the bytes are not TLS.
func ParseClientHello(b []byte) (ClientHello, error) {
	if len(b) < 1 {
		return ClientHello{}, ErrNeedMore
	}
	if b[0] != 0x16 { // handshake record
		return ClientHello{}, nil
	}
	if len(b) < 5 {
		return ClientHello{}, ErrNeedMore
	}
	if b[1] != 3 {
		return ClientHello{}, nil
	}
	recLen := int(b[3])<<8 | int(b[4])
	if len(b) < 5+recLen {
		return ClientHello{}, ErrNeedMore
	}
	h := b[5 : 5+recLen]
	if len(h) < 4 || h[0] != 1 { // ClientHello
		return ClientHello{}, nil
	}
	hl := int(h[1])<<16 | int(h[2])<<8 | int(h[3])
	h = h[4:]
	if hl < len(h) {
		h = h[:hl]
	}
	out := ClientHello{TLS: true}
	// legacy_version(2) random(32)
	if len(h) < 34 {
		return out, nil
	}
	h = h[34:]
	skip := func(lenBytes int) bool {
		if len(h) < lenBytes {
			return false
		}
		n := 0
		for i := 0; i < lenBytes; i++ {
			n = n<<8 | int(h[i])
		}
		if len(h) < lenBytes+n {
			return false
		}
		h = h[lenBytes+n:]
		return true
	}
	if !skip(1) || !skip(2) || !skip(1) { // session id, cipher suites, compression
		return out, nil
	}
	if len(h) < 2 {
		return out, nil
	}
	extLen := int(h[0])<<8 | int(h[1])
	h = h[2:]
	if extLen < len(h) {
		h = h[:extLen]
	}
	for len(h) >= 4 {
		typ := int(h[0])<<8 | int(h[1])
		l := int(h[2])<<8 | int(h[3])
		if len(h) < 4+l {
			break
		}
		data := h[4 : 4+l]
		h = h[4+l:]
		switch typ {
		case 0: // server_name
			if len(data) < 2 {
				continue
			}
			list := data[2:]
			for len(list) >= 3 {
				nt := list[0]
				nl := int(list[1])<<8 | int(list[2])
				if len(list) < 3+nl {
					break
				}
				if nt == 0 {
					out.ServerName = string(list[3 : 3+nl])
				}
				list = list[3+nl:]
			}
		case 16: // application_layer_protocol_negotiation
			if len(data) < 2 {
				continue
			}
			list := data[2:]
			for len(list) >= 1 {
				pl := int(list[0])
				if len(list) < 1+pl {
					break
				}
				out.ALPN = append(out.ALPN, string(list[1:1+pl]))
				list = list[1+pl:]
			}
		}
	}
	return out, nil
}
