package format

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/legateproxy/legate/internal/streaminfo"
)

type addrPort = netip.AddrPort

const (
	fullAddr = iota
	ipOnly
	portOnly
)

func addr(get func(*streaminfo.Info) addrPort, mode int) fieldFn {
	return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
		a := get(info)
		if !a.Addr().IsValid() {
			return dst, false
		}
		switch mode {
		case ipOnly:
			return a.Addr().Unmap().AppendTo(dst), true
		case portOnly:
			return strconv.AppendUint(dst, uint64(a.Port()), 10), true
		}
		return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()).AppendTo(dst), true
	}
}

func tlsField(name string, get func(*streaminfo.Info) *streaminfo.TLSInfo) fieldFn {
	pick := map[string]func(*streaminfo.TLSInfo) string{
		"DOWNSTREAM_TLS_VERSION":          func(t *streaminfo.TLSInfo) string { return t.Version },
		"DOWNSTREAM_TLS_CIPHER":           func(t *streaminfo.TLSInfo) string { return t.Cipher },
		"DOWNSTREAM_TLS_SESSION_ID":       func(t *streaminfo.TLSInfo) string { return t.SessionID },
		"DOWNSTREAM_PEER_SUBJECT":         func(t *streaminfo.TLSInfo) string { return t.PeerSubject },
		"DOWNSTREAM_PEER_ISSUER":          func(t *streaminfo.TLSInfo) string { return t.PeerIssuer },
		"DOWNSTREAM_LOCAL_SUBJECT":        func(t *streaminfo.TLSInfo) string { return t.LocalSubject },
		"DOWNSTREAM_PEER_URI_SAN":         func(t *streaminfo.TLSInfo) string { return strings.Join(t.PeerURISAN, ",") },
		"DOWNSTREAM_PEER_DNS_SAN":         func(t *streaminfo.TLSInfo) string { return strings.Join(t.PeerDNSSAN, ",") },
		"DOWNSTREAM_PEER_FINGERPRINT_256": func(t *streaminfo.TLSInfo) string { return t.PeerFingerprint },
		"DOWNSTREAM_PEER_SERIAL":          func(t *streaminfo.TLSInfo) string { return t.PeerSerial },
	}[name]
	return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
		t := get(info)
		if t == nil {
			return dst, false
		}
		v := pick(t)
		if v == "" {
			return dst, false
		}
		return append(dst, v...), true
	}
}

// timeFormat is a compiled strftime-style format (Envoy's START_TIME).
type timeFormat struct {
	steps []timeStep
	local bool
}

type timeStep struct {
	lit  string
	kind byte // 0 literal; else a specifier
	n    int  // fractional digits
}

// compileTime compiles Envoy's START_TIME format: strftime specifiers plus
// %f / %1f..%9f (fractional seconds), %E#S (seconds with # digits), %s
// (epoch seconds). The empty format is Envoy's default,
// %Y-%m-%dT%H:%M:%S.%3fZ in UTC.
func compileTime(f string, local bool) (*timeFormat, error) {
	if f == "" {
		f = "%Y-%m-%dT%H:%M:%S.%3fZ"
	}
	tf := &timeFormat{local: local}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			tf.steps = append(tf.steps, timeStep{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(f); i++ {
		if f[i] != '%' || i+1 >= len(f) {
			lit.WriteByte(f[i])
			continue
		}
		i++
		c := f[i]
		switch {
		case c == '%':
			lit.WriteByte('%')
		case c >= '1' && c <= '9' && i+1 < len(f) && f[i+1] == 'f':
			flush()
			tf.steps = append(tf.steps, timeStep{kind: 'f', n: int(c - '0')})
			i++
		case c == 'E' && i+2 < len(f) && f[i+2] == 'S' && (f[i+1] >= '0' && f[i+1] <= '9' || f[i+1] == '*'):
			flush()
			n := 9
			if f[i+1] != '*' {
				n = int(f[i+1] - '0')
			}
			tf.steps = append(tf.steps, timeStep{kind: 'S'}, timeStep{kind: 'E', n: n})
			i += 2
		case strings.IndexByte("YmdHMSyjbBaAZzTDFepIsfu", c) >= 0:
			flush()
			step := timeStep{kind: c}
			if c == 'f' {
				step.n = 9
			}
			tf.steps = append(tf.steps, step)
		default:
			return nil, fmt.Errorf("START_TIME format: unsupported specifier %%%c", c)
		}
	}
	flush()
	return tf, nil
}

func appendPad(dst []byte, v, width int) []byte {
	var buf [20]byte
	s := strconv.AppendInt(buf[:0], int64(v), 10)
	for i := len(s); i < width; i++ {
		dst = append(dst, '0')
	}
	return append(dst, s...)
}

func (tf *timeFormat) append(dst []byte, t time.Time) []byte {
	if tf.local {
		t = t.Local()
	} else {
		t = t.UTC()
	}
	for _, s := range tf.steps {
		switch s.kind {
		case 0:
			dst = append(dst, s.lit...)
		case 'Y':
			dst = appendPad(dst, t.Year(), 4)
		case 'y':
			dst = appendPad(dst, t.Year()%100, 2)
		case 'm':
			dst = appendPad(dst, int(t.Month()), 2)
		case 'd':
			dst = appendPad(dst, t.Day(), 2)
		case 'e':
			if t.Day() < 10 {
				dst = append(dst, ' ')
			}
			dst = strconv.AppendInt(dst, int64(t.Day()), 10)
		case 'H':
			dst = appendPad(dst, t.Hour(), 2)
		case 'I':
			h := t.Hour() % 12
			if h == 0 {
				h = 12
			}
			dst = appendPad(dst, h, 2)
		case 'p':
			if t.Hour() < 12 {
				dst = append(dst, "AM"...)
			} else {
				dst = append(dst, "PM"...)
			}
		case 'M':
			dst = appendPad(dst, t.Minute(), 2)
		case 'S':
			dst = appendPad(dst, t.Second(), 2)
		case 'j':
			dst = appendPad(dst, t.YearDay(), 3)
		case 'b':
			dst = append(dst, t.Month().String()[:3]...)
		case 'B':
			dst = append(dst, t.Month().String()...)
		case 'a':
			dst = append(dst, t.Weekday().String()[:3]...)
		case 'A':
			dst = append(dst, t.Weekday().String()...)
		case 'u':
			wd := int(t.Weekday())
			if wd == 0 {
				wd = 7
			}
			dst = strconv.AppendInt(dst, int64(wd), 10)
		case 'Z':
			name, _ := t.Zone()
			dst = append(dst, name...)
		case 'z':
			dst = t.AppendFormat(dst, "-0700")
		case 'T':
			dst = t.AppendFormat(dst, "15:04:05")
		case 'D':
			dst = t.AppendFormat(dst, "01/02/06")
		case 'F':
			dst = t.AppendFormat(dst, "2006-01-02")
		case 's':
			dst = strconv.AppendInt(dst, t.Unix(), 10)
		case 'f':
			var buf [12]byte
			ns := appendPad(buf[:0], t.Nanosecond(), 9)
			dst = append(dst, ns[:s.n]...)
		case 'E':
			if s.n > 0 {
				var buf [12]byte
				ns := appendPad(buf[:0], t.Nanosecond(), 9)
				dst = append(dst, '.')
				dst = append(dst, ns[:s.n]...)
			}
		}
	}
	return dst
}
