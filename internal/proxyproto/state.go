package proxyproto

import (
	"net/netip"

	"github.com/legateproxy/legate/internal/streaminfo"
)

// FilterStateKey is the filter-state key of Data (Envoy's
// ProxyProtocolFilterState::key()).
const FilterStateKey = "envoy.network.proxy_protocol_options"

// TLVFilterStateKey is the filter-state key under which the listener
// filter with tlv_location FILTER_STATE records the TLVs its rules name.
const TLVFilterStateKey = "envoy.network.proxy_protocol.tlv"

// Data is a connection's PROXY protocol record (Envoy's
// ProxyProtocolFilterState, connection lifespan): the addresses an
// upstream PROXY header announces and the downstream TLVs it may pass
// through.
type Data struct {
	// Src and Dst are the downstream connection's source and destination:
	// the PROXY header's, or the socket's for a LOCAL/UNKNOWN header or a
	// connection without one.
	Src, Dst netip.AddrPort
	// TLVs are the downstream header's TLVs that pass_through_tlvs keeps.
	TLVs []TLV
	// Version is the downstream header's version (NotFound when the
	// record comes from the socket's addresses).
	Version Version
}

// String is the object's plain form: Envoy's ProxyProtocolFilterState has
// none, so it is empty.
func (d *Data) String() string { return "" }

// Key is what tells apart upstream connections made for different
// downstream addresses (Envoy's asStringForHash, which the transport
// socket adds to the connection pool's hash): source then destination,
// TLVs not included.
func (d *Data) Key() string { return d.Src.String() + d.Dst.String() }

var _ streaminfo.FilterStateValue = (*Data)(nil)

// Downstream returns the PROXY protocol record of a connection: the one
// its filter state holds (the listener filter parsed a header), or its
// own addresses, as Envoy's HTTP connection manager and tcp_proxy record
// them when no listener filter did.
func Downstream(fs map[string]streaminfo.FilterStateValue, remote, local netip.AddrPort) *Data {
	if d, ok := fs[FilterStateKey].(*Data); ok {
		return d
	}
	return SocketData(remote, local)
}

// SocketData is the record of a connection's own addresses. A dual-stack
// socket's IPv4 peers are IPv4-mapped IPv6 addresses to Go; Envoy sees
// them as IPv4, so they are unmapped.
func SocketData(remote, local netip.AddrPort) *Data {
	unmap := func(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
	return &Data{Src: unmap(remote), Dst: unmap(local)}
}

// TLVObject is the filter-state object of tlv_location FILTER_STATE: the
// named TLV values, read as %FILTER_STATE(envoy.network.proxy_protocol.
// tlv:FIELD:<key>)%.
type TLVObject struct {
	fields map[string]string
}

// Set records a value under key unless the key has one (the first TLV
// of a key wins, as Envoy's metadata insert does).
func (o *TLVObject) Set(key, value string) {
	if o.fields == nil {
		o.fields = map[string]string{}
	}
	if _, dup := o.fields[key]; !dup {
		o.fields[key] = value
	}
}

// Len is the number of keys recorded.
func (o *TLVObject) Len() int { return len(o.fields) }

// Field returns the value recorded under name.
func (o *TLVObject) Field(name string) (any, bool) {
	v, ok := o.fields[name]
	if !ok {
		return nil, false
	}
	return v, true
}

// String is the object's plain form; Legate gives it none (its fields
// are read one at a time).
func (o *TLVObject) String() string { return "" }

var _ streaminfo.FieldFilterStateValue = (*TLVObject)(nil)
