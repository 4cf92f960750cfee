package ext_proc

import (
	"regexp"
	"strconv"
	"strings"

	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/strmatch"
)

// This file is Envoy's header mutation rules
// (source/extensions/filters/common/mutation_rules/mutation_rules.cc) and
// ext_proc's mutation_utils.cc: which header changes a processor may make,
// and applying a HeaderMutation or BodyMutation.

// checkOp is what a mutation does to one header.
type checkOp uint8

const (
	opSet checkOp = iota
	opAppend
	opRemove
)

// checkResult is a rule's verdict on one change.
type checkResult uint8

const (
	resultOK checkResult = iota
	// resultIgnore skips the change (and counts it rejected).
	resultIgnore
	// resultFail rejects the whole response (disallow_is_error).
	resultFail
)

// rules is a compiled HeaderMutationRules.
type rules struct {
	allowAllRouting, allowEnvoy, disallowSystem, disallowAll, disallowIsError bool
	allow, disallow                                                           *regexp.Regexp
}

// permissiveRules are the rules Envoy applies to an ImmediateResponse's
// headers (ext_proc.cc's ImmediateMutationChecker): routing and x-envoy
// headers may be set, so that a processor can build any error reply
// whatever mutation_rules say.
var permissiveRules = &rules{allowAllRouting: true, allowEnvoy: true}

func compileRules(r *mutationv3.HeaderMutationRules, path string) (*rules, error) {
	out := &rules{}
	if r == nil {
		return out, nil
	}
	if err := config.CheckFields(r, path, "allow_all_routing", "allow_envoy", "disallow_system", "disallow_all",
		"allow_expression", "disallow_expression", "disallow_is_error"); err != nil {
		return nil, err
	}
	out.allowAllRouting = r.GetAllowAllRouting().GetValue()
	out.allowEnvoy = r.GetAllowEnvoy().GetValue()
	out.disallowSystem = r.GetDisallowSystem().GetValue()
	out.disallowAll = r.GetDisallowAll().GetValue()
	out.disallowIsError = r.GetDisallowIsError().GetValue()
	var err error
	if r.GetAllowExpression() != nil {
		if out.allow, err = fullMatch(r.GetAllowExpression(), config.Join(path, "allow_expression")); err != nil {
			return nil, err
		}
	}
	if r.GetDisallowExpression() != nil {
		if out.disallow, err = fullMatch(r.GetDisallowExpression(), config.Join(path, "disallow_expression")); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// fullMatch compiles a RegexMatcher anchored at both ends: Envoy's regex
// matchers match the whole string (RE2::FullMatch).
func fullMatch(rm interface{ GetRegex() string }, path string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(`^(?:` + rm.GetRegex() + `)$`)
	if err != nil {
		return nil, config.Errorf(path, "invalid regex %q: %v", rm.GetRegex(), err)
	}
	return re, nil
}

// routingHeaders may change only with allow_all_routing (Envoy's
// "extra routing headers": host, :authority, :method, :scheme).
var routingHeaders = map[string]bool{"host": true, ":authority": true, ":method": true, ":scheme": true}

// allowed is Envoy's Checker::isAllowed, in its order: the host and
// pseudo-headers can never be removed; disallow_expression, then
// allow_expression, then disallow_all, routing headers, system headers
// (always for append, since they take one value) and x-envoy headers.
func (r *rules) allowed(op checkOp, name string) bool {
	if op == opRemove && (strings.HasPrefix(name, ":") || name == "host") {
		return false
	}
	if r.disallow != nil && r.disallow.MatchString(name) {
		return false
	}
	if r.allow != nil && r.allow.MatchString(name) {
		return true
	}
	if r.disallowAll {
		return false
	}
	if !r.allowAllRouting && routingHeaders[name] {
		return false
	}
	if strings.HasPrefix(name, ":") && (op == opAppend || r.disallowSystem) {
		return false
	}
	if !r.allowEnvoy && strings.HasPrefix(name, "x-envoy") {
		return false
	}
	return true
}

// validValue is Envoy's Checker::isValidValue: regular header values must
// be valid field values; host/:authority, :scheme and :status must hold
// what Envoy can use.
func validValue(name, value string) bool {
	if !strings.HasPrefix(name, ":") && !headers.ValidValue(value) {
		return false
	}
	switch name {
	case "host", ":authority":
		return value != "" && headers.ValidValue(value) && !strings.ContainsAny(value, "/?#@ ")
	case ":scheme":
		return value == "http" || value == "https"
	case ":status":
		n, err := strconv.Atoi(value)
		return err == nil && n >= 200
	}
	return true
}

func (r *rules) check(op checkOp, name, value string) checkResult {
	if r.allowed(op, name) && (op == opRemove || validValue(name, value)) {
		return resultOK
	}
	if r.disallowIsError {
		return resultFail
	}
	return resultIgnore
}

// validHeaderValue rejects NUL, CR and LF (RFC 9110 section 5.5, as
// Envoy's HeaderUtility::headerValueIsValid).

// validHeaderName accepts an RFC 9110 token, or one after a leading ':'.
func validHeaderName(n string) bool { return http1.IsToken(strings.TrimPrefix(n, ":")) }

// headerMap is what a mutation changes: request or response headers (with
// their pseudo-headers) or trailers.
type headerMap interface {
	get(name string) (string, bool)
	set(name, value string)
	add(name, value string)
	remove(name string)
	count() int
	bytes() int
}

// Envoy's defaults for max_request_headers_count and
// max_request_headers_kb, which a mutation's result must stay within.
const (
	maxHeadersCount = 100
	maxHeadersBytes = 60 * 1024
)

func mapBytes(m *headers.Map) int {
	n := 0
	for _, f := range m.Fields() {
		n += len(f.Name) + len(f.Value)
	}
	return n
}

// requestMap adapts a request head.
type requestMap struct{ h *headers.Request }

func (m requestMap) get(name string) (string, bool) { return m.h.Lookup(name) }
func (m requestMap) set(name, value string) {
	switch name {
	case ":method":
		m.h.Method = value
	case ":path":
		m.h.Path = value
	case ":authority", "host":
		m.h.Authority = value
	case ":scheme":
		m.h.Scheme = value
	default:
		if !strings.HasPrefix(name, ":") {
			m.h.Map.Set(name, value)
		}
	}
}
func (m requestMap) add(name, value string) {
	if strings.HasPrefix(name, ":") || name == "host" {
		m.set(name, value)
		return
	}
	m.h.Map.Add(name, value)
}
func (m requestMap) remove(name string) { m.h.Map.Del(name) }
func (m requestMap) count() int         { return m.h.Map.Len() + 4 }
func (m requestMap) bytes() int {
	return mapBytes(&m.h.Map) + len(m.h.Method) + len(m.h.Path) + len(m.h.Authority) + len(m.h.Scheme)
}

// responseMap adapts a response head.
type responseMap struct{ h *headers.Response }

func (m responseMap) get(name string) (string, bool) {
	if name == ":status" {
		return strconv.Itoa(m.h.Status), true
	}
	return m.h.Map.Lookup(name)
}
func (m responseMap) set(name, value string) {
	if name == ":status" {
		if n, err := strconv.Atoi(value); err == nil {
			m.h.Status = n
		}
		return
	}
	if !strings.HasPrefix(name, ":") {
		m.h.Map.Set(name, value)
	}
}
func (m responseMap) add(name, value string) {
	if strings.HasPrefix(name, ":") {
		m.set(name, value)
		return
	}
	m.h.Map.Add(name, value)
}
func (m responseMap) remove(name string) { m.h.Map.Del(name) }
func (m responseMap) count() int         { return m.h.Map.Len() + 1 }
func (m responseMap) bytes() int         { return mapBytes(&m.h.Map) + 3 }

// trailerMap adapts trailers.
type trailerMap struct{ m *headers.Map }

func (m trailerMap) get(name string) (string, bool) { return m.m.Lookup(name) }
func (m trailerMap) set(name, value string)         { m.m.Set(name, value) }
func (m trailerMap) add(name, value string)         { m.m.Add(name, value) }
func (m trailerMap) remove(name string)             { m.m.Del(name) }
func (m trailerMap) count() int                     { return m.m.Len() }
func (m trailerMap) bytes() int                     { return mapBytes(m.m) }

// headerValue is the value a HeaderValue carries: raw_value (what Envoy
// reads and sends by default, send_header_raw_value) or, when only it is
// set, value.
func headerValue(h *corev3.HeaderValue) string {
	if len(h.GetRawValue()) > 0 {
		return string(h.GetRawValue())
	}
	return h.GetValue()
}

// errMutation is a rejected mutation that fails the response; its text is
// Envoy's, and becomes the local reply's details.
type errMutation struct{ msg string }

func (e *errMutation) Error() string { return e.msg }

// applyHeaderMutation is Envoy's MutationUtils::applyHeaderMutations: the
// removals, then the sets, each checked against the rules; a change the
// rules refuse is skipped and counted in rejected, or, with
// disallow_is_error, fails the whole response. replacing is
// CONTINUE_AND_REPLACE, under which :method may always change.
func applyHeaderMutation(mut *extprocsvc.HeaderMutation, m headerMap, replacing bool, r *rules, rejected *stats.Counter) error {
	if mut == nil {
		return nil
	}
	if len(mut.GetRemoveHeaders()) > maxHeadersCount || len(mut.GetSetHeaders()) > maxHeadersCount {
		rejected.Inc()
		return &errMutation{"Header mutation remove header count " + strconv.Itoa(len(mut.GetRemoveHeaders())) +
			" or set header count " + strconv.Itoa(len(mut.GetSetHeaders())) + " exceed the HCM header countlimit " + strconv.Itoa(maxHeadersCount)}
	}
	for _, name := range mut.GetRemoveHeaders() {
		if !validHeaderName(name) {
			rejected.Inc()
			return &errMutation{"Invalid character in remove_headers mutation."}
		}
		name = headers.Lower(name)
		switch r.check(opRemove, name, "") {
		case resultOK:
			m.remove(name)
		case resultIgnore:
			rejected.Inc()
		case resultFail:
			rejected.Inc()
			return &errMutation{"Invalid attempt to remove " + name}
		}
	}
	for _, sh := range mut.GetSetHeaders() {
		h := sh.GetHeader()
		if h == nil {
			continue
		}
		if h.GetValue() != "" && len(h.GetRawValue()) > 0 {
			rejected.Inc()
			return &errMutation{"Only one of value or raw_value in the HeaderValue message should be set."}
		}
		value := headerValue(h)
		if !validHeaderName(h.GetKey()) || !headers.ValidValue(value) {
			rejected.Inc()
			return &errMutation{"Invalid character in set_headers mutation."}
		}
		name := headers.Lower(h.GetKey())
		_, exists := m.get(name)
		var appendMode bool
		switch sh.GetAppendAction() {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			// The zero value: the deprecated append field decides, and
			// unset it means overwrite, as Envoy reads ext_proc mutations.
			appendMode = sh.GetAppend().GetValue()
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if exists {
				continue
			}
			appendMode = true
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if !exists {
				continue
			}
		default:
			return &errMutation{"Invalid append_action value " + name}
		}
		op := opSet
		if appendMode && exists {
			op = opAppend
		}
		res := r.check(op, name, value)
		if replacing && name == ":method" {
			// As Envoy: CONTINUE_AND_REPLACE may always change :method.
			res = resultOK
		}
		switch res {
		case resultOK:
			if appendMode {
				m.add(name, value)
			} else {
				m.set(name, value)
			}
		case resultIgnore:
			rejected.Inc()
		case resultFail:
			rejected.Inc()
			return &errMutation{"Invalid attempt to modify " + name}
		}
	}
	if m.bytes() > maxHeadersBytes || m.count() > maxHeadersCount {
		rejected.Inc()
		return &errMutation{"Header mutation causes end result header count " + strconv.Itoa(m.count()) + " or header size " +
			strconv.Itoa(m.bytes()) + " bytes, exceeding the count limit " + strconv.Itoa(maxHeadersCount) +
			" or the size limit 60 kilobytes"}
	}
	return nil
}

// applyBodyMutation replaces or clears body (Envoy's applyBodyMutations);
// it reports whether it changed anything.
func applyBodyMutation(mut *extprocsvc.BodyMutation, body []byte) ([]byte, bool) {
	switch m := mut.GetMutation().(type) {
	case *extprocsvc.BodyMutation_Body:
		return m.Body, true
	case *extprocsvc.BodyMutation_ClearBody:
		if m.ClearBody {
			return nil, true
		}
	}
	return body, false
}

// forwardRules is a compiled forward_rules: which headers the processor
// sees (Envoy's headerCanBeForwarded).
type forwardRules struct {
	allowed, disallowed []strmatch.Matcher
}

func (f *forwardRules) forward(name string) bool {
	if f == nil {
		return true
	}
	for i := range f.disallowed {
		if f.disallowed[i].Match(name) {
			return false
		}
	}
	if len(f.allowed) == 0 {
		return true
	}
	for i := range f.allowed {
		if f.allowed[i].Match(name) {
			return true
		}
	}
	return false
}
