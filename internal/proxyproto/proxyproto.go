// Package proxyproto reads and writes the PROXY protocol header that a
// proxy puts in front of a connection to pass on the client's addresses
// (HAProxy's proxy-protocol.txt: the text version 1 and the binary version
// 2 with its TLV extensions).
//
// Parse is the receiving side exactly as Envoy's listener filter
// envoy.filters.listener.proxy_protocol reads it: what it accepts and
// refuses, when it needs more bytes, and how a failure is classified for
// the filter's stats (no signature, a bad v1 line, a bad v2 header, a
// disallowed version). AppendV1, AppendV2 and AppendV2Local are the
// sending side as Envoy's upstream transport socket
// envoy.transport_sockets.upstream_proxy_protocol writes it.
//
// Data is what a parsed header leaves for the rest of the connection's
// life (Envoy's ProxyProtocolFilterState, the filter-state object
// envoy.network.proxy_protocol_options): the addresses and the TLVs to
// pass through, which the upstream transport socket writes again.
package proxyproto

import (
	"errors"
	"fmt"
)

// Version is a PROXY protocol version; NotFound is a connection without a
// header (allowed by allow_requests_without_proxy_protocol).
type Version uint8

// The versions.
const (
	NotFound Version = iota
	V1
	V2
)

// String returns "v1" or "v2" (the version's segment of Envoy's stats
// names proxy_proto.versions.<v>.*), "" for NotFound.
func (v Version) String() string {
	switch v {
	case V1:
		return "v1"
	case V2:
		return "v2"
	}
	return ""
}

// Registered TLV types (proxy-protocol.txt §2.2).
const (
	TypeALPN      byte = 0x01
	TypeAuthority byte = 0x02
	TypeCRC32C    byte = 0x03
	TypeNoop      byte = 0x04
	TypeUniqueID  byte = 0x05
	TypeSSL       byte = 0x20
	TypeNetNS     byte = 0x30
)

// Wire constants (proxy-protocol.txt §2.1, §2.2) and Envoy's limits.
const (
	// v1Signature is Envoy's PROXY_PROTO_V1_SIGNATURE: "PROXY" and the
	// space that must follow it.
	v1Signature = "PROXY "
	// MaxV1Len is the longest v1 line the spec lets a receiver accept,
	// CRLF included ("PROXY UNKNOWN" with two full IPv6 addresses and
	// ports, §2.1); Envoy's MAX_PROXY_PROTO_LEN_V1.
	MaxV1Len = 107
	// v2HeaderLen is the fixed part of a v2 header: the 12-byte signature,
	// the version/command byte, the family/transport byte and the 2-byte
	// length of what follows.
	v2HeaderLen = 16
	// InitialReadLen is how many bytes the receiver first reads (Envoy's
	// MAX_PROXY_PROTO_LEN_V2: the v2 fixed header and the largest address
	// block, AF_UNIX's 216 bytes); a v2 header announcing more is read to
	// its end (NeedBytes).
	InitialReadLen = v2HeaderLen + 216
	// MaxV2Len is the longest v2 header: the length field is 16 bits.
	MaxV2Len = v2HeaderLen + 0xffff
	// v2 address block lengths: two addresses and two ports.
	v2AddrLenInet  = 12
	v2AddrLenInet6 = 36
	// tlvHeaderLen is a TLV's type byte and 2-byte length.
	tlvHeaderLen = 3
)

// v2Signature is the 12-byte block that opens every v2 header (§2.2).
const v2Signature = "\r\n\r\n\x00\r\nQUIT\n"

// v2 version/command and family/transport values (§2.2).
const (
	v2Version   = 0x2
	cmdLocal    = 0x0
	cmdProxy    = 0x1
	famInet     = 0x1
	famInet6    = 0x2
	transStream = 0x1
	transDgram  = 0x2
	verCmdProxy = v2Version<<4 | cmdProxy
	verCmdLocal = v2Version<<4 | cmdLocal
	famTCP4     = famInet<<4 | transStream
	famTCP6     = famInet6<<4 | transStream
	// famUnspec is AF_UNSPEC with an unspecified transport, what a LOCAL
	// header carries.
	famUnspec = 0x00
)

// TLV is one v2 Type-Length-Value extension.
type TLV struct {
	Type  byte
	Value []byte
}

// ErrIncomplete says the bytes so far are a valid beginning: read more
// (up to NeedBytes) and parse again.
var ErrIncomplete = errors.New("proxyproto: incomplete PROXY protocol header")

// Error is a header Parse refuses. Version says what the bytes were taken
// for, which is the stat Envoy counts: NotFound (neither signature:
// proxy_proto.not_found_disallowed), V1 or V2 (proxy_proto.versions.<v>.
// error, or .disallowed when Denied).
type Error struct {
	Version Version
	// Denied is a well-formed start of a version that disallowed_versions
	// refuses.
	Denied bool
	Reason string
}

func (e *Error) Error() string {
	if e.Version == NotFound {
		return "proxyproto: " + e.Reason
	}
	return fmt.Sprintf("proxyproto: PROXY protocol %s: %s", e.Version, e.Reason)
}
