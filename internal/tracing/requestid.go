package tracing

import "strconv"

// Reason is why a request is traced (Envoy's Tracing::Reason), as the
// x-request-id carries it.
type Reason uint8

// The trace reasons.
const (
	NotTraceable Reason = iota
	Sampling
	ServiceForced
	ClientForced
)

func (r Reason) String() string {
	switch r {
	case Sampling:
		return "sampling"
	case ServiceForced:
		return "service_forced"
	case ClientForced:
		return "client_forced"
	}
	return "not_traceable"
}

// The UUID request id extension's packing (Envoy's
// UUIDRequestIDExtension): the version nibble of a 36-character UUID
// holds the trace reason.
const (
	uuidLength        = 36
	traceBytePosition = 14
	traceSampled      = '9'
	traceForced       = 'a'
	traceClient       = 'b'
	noTrace           = '4'
)

// RequestIDInteger is Envoy's UUIDRequestIDExtension::getInteger: the
// first 8 characters of the request id read as hex (false: no id, or not
// hex).
func RequestIDInteger(id string) (uint64, bool) {
	if len(id) < 8 {
		return 0, false
	}
	n, err := strconv.ParseUint(id[:8], 16, 64)
	return n, err == nil
}

// TraceReasonOf is the reason packed in a request id (getTraceReason):
// NotTraceable unless it is a 36-character UUID whose version nibble is
// one of the trace values.
func TraceReasonOf(id string) Reason {
	if len(id) != uuidLength {
		return NotTraceable
	}
	switch id[traceBytePosition] {
	case traceForced:
		return ServiceForced
	case traceSampled:
		return Sampling
	case traceClient:
		return ClientForced
	}
	return NotTraceable
}

// WithTraceReason packs r into a request id (setTraceReason); an id that
// is not 36 characters long is returned as it is.
func WithTraceReason(id string, r Reason) string {
	if len(id) != uuidLength {
		return id
	}
	var c byte
	switch r {
	case ServiceForced:
		c = traceForced
	case ClientForced:
		c = traceClient
	case Sampling:
		c = traceSampled
	default:
		c = noTrace
	}
	if id[traceBytePosition] == c {
		return id
	}
	b := []byte(id)
	b[traceBytePosition] = c
	return string(b)
}
