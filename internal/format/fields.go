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

// addrSources are the addresses of Envoy's <STEM>_ADDRESS,
// <STEM>_ADDRESS_WITHOUT_PORT and <STEM>_PORT operators.
var addrSources = map[string]func(*streaminfo.Info) addrPort{
	"DOWNSTREAM_REMOTE":        func(i *streaminfo.Info) addrPort { return i.DownstreamRemote },
	"DOWNSTREAM_DIRECT_REMOTE": func(i *streaminfo.Info) addrPort { return i.DownstreamDirectRemote },
	"DOWNSTREAM_LOCAL":         func(i *streaminfo.Info) addrPort { return i.DownstreamLocal },
	"UPSTREAM_LOCAL":           func(i *streaminfo.Info) addrPort { return parseAddrPort(i.UpstreamLocalAddress) },
	// The upstream connection's peer: the chosen host's address, which
	// Envoy documents as identical to %UPSTREAM_HOST% for a host with one
	// address once connected.
	"UPSTREAM_REMOTE": func(i *streaminfo.Info) addrPort { return parseAddrPort(i.UpstreamHost) },
}

// parseAddrPort parses "ip:port" ("" or anything else: the zero value,
// rendered as "-").
func parseAddrPort(s string) addrPort {
	a, err := netip.ParseAddrPort(s)
	if err != nil {
		return addrPort{}
	}
	return a
}

// addrField compiles an address operator: ok is false when name is not
// one. _WITHOUT_PORT takes Envoy's optional MASK_PREFIX_LEN argument.
func addrField(name, arg string) (fn fieldFn, ok bool, err error) {
	stem, mode := "", fullAddr
	switch {
	case strings.HasSuffix(name, "_ADDRESS_WITHOUT_PORT"):
		stem, mode = strings.TrimSuffix(name, "_ADDRESS_WITHOUT_PORT"), ipOnly
	case strings.HasSuffix(name, "_ADDRESS"):
		stem = strings.TrimSuffix(name, "_ADDRESS")
	case strings.HasSuffix(name, "_PORT"):
		stem, mode = strings.TrimSuffix(name, "_PORT"), portOnly
	}
	get, ok := addrSources[stem]
	if !ok {
		return nil, false, nil
	}
	if mode == fullAddr && arg == "" {
		// The upstream addresses are kept as text: render them as they
		// are (a pipe's path included).
		switch stem {
		case "UPSTREAM_LOCAL":
			return str(func(i *streaminfo.Info) string { return i.UpstreamLocalAddress }), true, nil
		case "UPSTREAM_REMOTE":
			return str(func(i *streaminfo.Info) string { return i.UpstreamHost }), true, nil
		}
	}
	mask := -1
	if arg != "" {
		if mode != ipOnly {
			return nil, true, fmt.Errorf("%s takes no argument", name)
		}
		// Envoy: 0-32 for IPv4, 0-128 for IPv6.
		n, err := strconv.Atoi(arg)
		if err != nil || n < 0 || n > 128 {
			return nil, true, fmt.Errorf("%s: MASK_PREFIX_LEN %q must be an integer between 0 and 128", name, arg)
		}
		mask = n
	}
	return addr(get, mode, mask), true, nil
}

// addr renders an address, its IP (masked to mask bits in CIDR notation
// when mask >= 0) or its port.
func addr(get func(*streaminfo.Info) addrPort, mode, mask int) fieldFn {
	return func(dst []byte, info *streaminfo.Info) ([]byte, bool) {
		a := get(info)
		if !a.Addr().IsValid() {
			return dst, false
		}
		ip := a.Addr().Unmap()
		switch mode {
		case ipOnly:
			if mask < 0 {
				return ip.AppendTo(dst), true
			}
			p, err := ip.Prefix(mask)
			if err != nil {
				return dst, false // a mask longer than an IPv4 address
			}
			return p.AppendTo(dst), true
		case portOnly:
			return strconv.AppendUint(dst, uint64(a.Port()), 10), true
		}
		return netip.AddrPortFrom(ip, a.Port()).AppendTo(dst), true
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
