// Package rbac is the policy engine of Envoy's RBAC filters
// (envoy.config.rbac.v3): permissions and principals over the request and
// the connection, policies with ALLOW, DENY and LOG actions, or the
// unified-matcher form with envoy.config.rbac.v3.Action. The HTTP and the
// network RBAC filters share it.
package rbac

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/cel"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/matcher"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func init() {
	// The action of RBAC's matcher form; compiled by the engine itself.
	extension.Register(extension.Extension{Name: "envoy.filters.rbac.action", Category: extension.MatchingAction,
		Config: &rbacv3.Action{}, Factory: struct{}{}})
}

// Ctx is what the engine checks: the request (nil for a connection) and
// the stream or connection record.
type Ctx struct {
	Req  *headers.Request
	Info *streaminfo.Info
}

type rule func(c *Ctx) bool

type policy struct {
	name        string
	permissions []rule
	principals  []rule
	// condition is the policy's CEL condition (nil: none); a policy
	// matches only when it evaluates to true.
	condition *cel.Program
}

// Engine is a compiled RBAC (or the matcher form).
type Engine struct {
	action   rbacv3.RBAC_Action
	policies []policy // sorted by name, as Envoy's std::map
	matcher  *matcher.Matcher
}

// Result is an engine decision.
type Result struct {
	Allowed bool
	// Policy is the policy that decided (empty when none matched).
	Policy string
	// Log is set for a LOG engine when a policy matched.
	Log bool
}

// Compile compiles rules (nil rules: nil engine, which allows all).
func Compile(r *rbacv3.RBAC, path string) (*Engine, error) {
	if r == nil {
		return nil, nil
	}
	if err := config.CheckFields(r, path, "action", "policies"); err != nil {
		return nil, err
	}
	e := &Engine{action: r.GetAction()}
	names := make([]string, 0, len(r.GetPolicies()))
	for n := range r.GetPolicies() {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		pp := fmt.Sprintf("%s.policies[%q]", path, n)
		p := r.GetPolicies()[n]
		if err := config.CheckFields(p, pp, "permissions", "principals", "condition", "checked_condition"); err != nil {
			return nil, err
		}
		pol := policy{name: n}
		var err error
		switch {
		case p.GetCondition() != nil && p.GetCheckedCondition() != nil:
			return nil, config.Errorf(pp, "only one of condition or checked_condition may be set")
		case p.GetCondition() != nil:
			pol.condition, err = cel.CompileParsed(p.GetCondition(), config.Join(pp, "condition"))
		case p.GetCheckedCondition() != nil:
			pol.condition, err = cel.CompileChecked(p.GetCheckedCondition(), config.Join(pp, "checked_condition"))
		}
		if err != nil {
			return nil, err
		}
		for i, perm := range p.GetPermissions() {
			c, err := permission(perm, config.Index(config.Join(pp, "permissions"), i))
			if err != nil {
				return nil, err
			}
			pol.permissions = append(pol.permissions, c)
		}
		for i, pr := range p.GetPrincipals() {
			c, err := principal(pr, config.Index(config.Join(pp, "principals"), i))
			if err != nil {
				return nil, err
			}
			pol.principals = append(pol.principals, c)
		}
		e.policies = append(e.policies, pol)
	}
	return e, nil
}

// CompileMatcher compiles the matcher form: actions are
// envoy.config.rbac.v3.Action.
func CompileMatcher(m *xdsmatcherv3.Matcher, path string) (*Engine, error) {
	return CompileMatcherWith(m, path, nil)
}

// CompileMatcherWith is CompileMatcher with a check of every input's
// decoded typed_config (at its path) before it compiles: the network RBAC
// filter refuses inputs a connection does not have, as Envoy's
// ActionValidationVisitor does. A nil input accepts every input.
func CompileMatcherWith(m *xdsmatcherv3.Matcher, path string, input func(cfg proto.Message, path string) error) (*Engine, error) {
	if m == nil {
		return nil, nil
	}
	mt, err := matcher.CompileWith(m, path, matcher.Options{Input: input, Action: func(tc *xdscorev3.TypedExtensionConfig, p string) (any, error) {
		r, err := extension.Lookup(extension.MatchingAction, tc.GetTypedConfig(), config.Join(p, "typed_config"))
		if err != nil {
			return nil, err
		}
		a, ok := r.Config.(*rbacv3.Action)
		if !ok {
			return nil, config.Errorf(p, "RBAC matcher actions must be envoy.config.rbac.v3.Action")
		}
		return a, nil
	}})
	if err != nil {
		return nil, err
	}
	return &Engine{matcher: mt}, nil
}

// Check decides for c. A nil engine allows.
func (e *Engine) Check(c *Ctx) Result {
	if e == nil {
		return Result{Allowed: true}
	}
	if e.matcher != nil {
		v, ok := e.matcher.Match(&matcher.Data{Req: c.Req, Info: c.Info})
		a, _ := v.(*rbacv3.Action)
		if !ok || a == nil {
			return Result{} // no action matched: denied
		}
		switch a.GetAction() {
		case rbacv3.RBAC_ALLOW:
			return Result{Allowed: true, Policy: a.GetName()}
		case rbacv3.RBAC_LOG:
			return Result{Allowed: true, Policy: a.GetName(), Log: true}
		}
		return Result{Policy: a.GetName()}
	}
	matched := ""
	for i := range e.policies {
		if e.policies[i].matches(c) {
			matched = e.policies[i].name
			break
		}
	}
	switch e.action {
	case rbacv3.RBAC_ALLOW:
		return Result{Allowed: matched != "", Policy: matched}
	case rbacv3.RBAC_DENY:
		return Result{Allowed: matched == "", Policy: matched}
	}
	return Result{Allowed: true, Policy: matched, Log: matched != ""}
}

// IsLog reports a LOG engine (its decision is a log hint, not access).
func (e *Engine) IsLog() bool { return e != nil && e.matcher == nil && e.action == rbacv3.RBAC_LOG }

func (p *policy) matches(c *Ctx) bool {
	return anyOf(p.permissions, c) && anyOf(p.principals, c) &&
		(p.condition == nil || p.condition.Matches(c.Req, c.Info))
}

func anyOf(rs []rule, c *Ctx) bool {
	for _, r := range rs {
		if r(c) {
			return true
		}
	}
	return false
}

func allOf(rs []rule, c *Ctx) bool {
	for _, r := range rs {
		if !r(c) {
			return false
		}
	}
	return true
}

func permission(p *rbacv3.Permission, path string) (rule, error) {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_AndRules:
		rs, err := permissions(r.AndRules.GetRules(), config.Join(path, "and_rules.rules"))
		return func(c *Ctx) bool { return allOf(rs, c) }, err
	case *rbacv3.Permission_OrRules:
		rs, err := permissions(r.OrRules.GetRules(), config.Join(path, "or_rules.rules"))
		return func(c *Ctx) bool { return anyOf(rs, c) }, err
	case *rbacv3.Permission_Any:
		return func(*Ctx) bool { return r.Any }, nil
	case *rbacv3.Permission_Header:
		return header(r.Header, config.Join(path, "header"))
	case *rbacv3.Permission_UrlPath:
		return urlPath(r.UrlPath, config.Join(path, "url_path"))
	case *rbacv3.Permission_DestinationIp:
		pfx, err := cidr(r.DestinationIp, config.Join(path, "destination_ip"))
		return func(c *Ctx) bool {
			return c.Info.DownstreamLocal.IsValid() && pfx.Contains(c.Info.DownstreamLocal.Addr().Unmap())
		}, err
	case *rbacv3.Permission_DestinationPort:
		return func(c *Ctx) bool { return uint32(c.Info.DownstreamLocal.Port()) == r.DestinationPort }, nil
	case *rbacv3.Permission_DestinationPortRange:
		lo, hi := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		return func(c *Ctx) bool { p := int32(c.Info.DownstreamLocal.Port()); return p >= lo && p < hi }, nil
	case *rbacv3.Permission_Metadata:
		return metadata(r.Metadata, config.Join(path, "metadata"))
	case *rbacv3.Permission_NotRule:
		in, err := permission(r.NotRule, config.Join(path, "not_rule"))
		return func(c *Ctx) bool { return !in(c) }, err
	case *rbacv3.Permission_RequestedServerName:
		m, err := route.CompileStringMatcher(r.RequestedServerName, config.Join(path, "requested_server_name"))
		return func(c *Ctx) bool { return m(c.Info.RequestedServerName) }, err
	}
	return nil, config.Unsupported(path, "this permission (matcher, uri_template, sourced_metadata)",
		"and_rules", "or_rules", "any", "header", "url_path", "destination_ip", "destination_port", "destination_port_range",
		"metadata", "not_rule", "requested_server_name")
}

func permissions(ps []*rbacv3.Permission, path string) ([]rule, error) {
	out := make([]rule, 0, len(ps))
	for i, p := range ps {
		r, err := permission(p, config.Index(path, i))
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func principal(p *rbacv3.Principal, path string) (rule, error) {
	switch r := p.GetIdentifier().(type) {
	case *rbacv3.Principal_AndIds:
		rs, err := principals(r.AndIds.GetIds(), config.Join(path, "and_ids.ids"))
		return func(c *Ctx) bool { return allOf(rs, c) }, err
	case *rbacv3.Principal_OrIds:
		rs, err := principals(r.OrIds.GetIds(), config.Join(path, "or_ids.ids"))
		return func(c *Ctx) bool { return anyOf(rs, c) }, err
	case *rbacv3.Principal_Any:
		return func(*Ctx) bool { return r.Any }, nil
	case *rbacv3.Principal_Authenticated_:
		return authenticated(r.Authenticated, config.Join(path, "authenticated"))
	case *rbacv3.Principal_SourceIp:
		// The connection's remote address: a PROXY protocol header's
		// source, not x-forwarded-for (Envoy's ConnectionRemote).
		return ipRule(r.SourceIp, config.Join(path, "source_ip"), func(i *streaminfo.Info) netip.AddrPort {
			if i.DownstreamConnRemote.IsValid() {
				return i.DownstreamConnRemote
			}
			return i.DownstreamDirectRemote
		})
	case *rbacv3.Principal_DirectRemoteIp:
		return ipRule(r.DirectRemoteIp, config.Join(path, "direct_remote_ip"), func(i *streaminfo.Info) netip.AddrPort { return i.DownstreamDirectRemote })
	case *rbacv3.Principal_RemoteIp:
		return ipRule(r.RemoteIp, config.Join(path, "remote_ip"), func(i *streaminfo.Info) netip.AddrPort { return i.DownstreamRemote })
	case *rbacv3.Principal_Header:
		return header(r.Header, config.Join(path, "header"))
	case *rbacv3.Principal_UrlPath:
		return urlPath(r.UrlPath, config.Join(path, "url_path"))
	case *rbacv3.Principal_Metadata:
		return metadata(r.Metadata, config.Join(path, "metadata"))
	case *rbacv3.Principal_FilterState:
		return filterState(r.FilterState, config.Join(path, "filter_state"))
	case *rbacv3.Principal_NotId:
		in, err := principal(r.NotId, config.Join(path, "not_id"))
		return func(c *Ctx) bool { return !in(c) }, err
	}
	return nil, config.Unsupported(path, "this principal (sourced_metadata, custom)",
		"and_ids", "or_ids", "any", "authenticated", "source_ip", "direct_remote_ip", "remote_ip", "header", "url_path",
		"metadata", "filter_state", "not_id")
}

func principals(ps []*rbacv3.Principal, path string) ([]rule, error) {
	out := make([]rule, 0, len(ps))
	for i, p := range ps {
		r, err := principal(p, config.Index(path, i))
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// authenticated matches a TLS peer; with principal_name, against its URI
// SANs, then its DNS SANs, then its subject, as Envoy.
func authenticated(a *rbacv3.Principal_Authenticated, path string) (rule, error) {
	if err := config.CheckFields(a, path, "principal_name"); err != nil {
		return nil, err
	}
	var m func(string) bool
	if a.GetPrincipalName() != nil {
		var err error
		if m, err = route.CompileStringMatcher(a.GetPrincipalName(), config.Join(path, "principal_name")); err != nil {
			return nil, err
		}
	}
	return func(c *Ctx) bool {
		// As Envoy's AuthenticatedMatcher: any TLS connection is
		// "authenticated" (connection.ssl() is set), with or without a
		// client certificate; principal_name then matches the peer's SANs
		// and subject, which are empty without one.
		t := c.Info.DownstreamTLS
		if t == nil {
			return false
		}
		if m == nil {
			return true
		}
		for _, s := range t.PeerURISAN {
			if m(s) {
				return true
			}
		}
		for _, s := range t.PeerDNSSAN {
			if m(s) {
				return true
			}
		}
		return m(t.PeerSubject)
	}, nil
}

func header(h *routev3.HeaderMatcher, path string) (rule, error) {
	m, err := route.CompileHeaderMatcher(h, path)
	if err != nil {
		return nil, err
	}
	return func(c *Ctx) bool { return c.Req != nil && m(c.Req) }, nil
}

func urlPath(p *matcherv3.PathMatcher, path string) (rule, error) {
	if err := config.CheckFields(p, path, "path"); err != nil {
		return nil, err
	}
	m, err := route.CompileStringMatcher(p.GetPath(), config.Join(path, "path"))
	if err != nil {
		return nil, err
	}
	return func(c *Ctx) bool {
		if c.Req == nil {
			return false
		}
		// The path without query and fragment, as Envoy's PathMatcher.
		v := c.Req.Path
		if i := strings.IndexAny(v, "?#"); i >= 0 {
			v = v[:i]
		}
		return m(v)
	}, nil
}

func cidr(r *corev3.CidrRange, path string) (netip.Prefix, error) {
	a, err := netip.ParseAddr(r.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, config.Errorf(config.Join(path, "address_prefix"), "%q is not an IP address", r.GetAddressPrefix())
	}
	bits := a.BitLen()
	if r.GetPrefixLen() != nil {
		bits = int(r.GetPrefixLen().GetValue())
	}
	p, err := a.Unmap().Prefix(bits)
	if err != nil {
		return netip.Prefix{}, config.Errorf(config.Join(path, "prefix_len"), "%v", err)
	}
	return p, nil
}

func ipRule(r *corev3.CidrRange, path string, get func(*streaminfo.Info) netip.AddrPort) (rule, error) {
	p, err := cidr(r, path)
	return func(c *Ctx) bool { a := get(c.Info); return a.IsValid() && p.Contains(a.Addr().Unmap()) }, err
}

// metadata matches the stream's dynamic metadata.
func metadata(m *matcherv3.MetadataMatcher, path string) (rule, error) {
	if err := config.CheckFields(m, path, "filter", "path", "value", "invert"); err != nil {
		return nil, err
	}
	var keys []string
	for i, s := range m.GetPath() {
		if s.GetKey() == "" {
			return nil, config.Errorf(config.Index(config.Join(path, "path"), i), "a path segment needs a key")
		}
		keys = append(keys, s.GetKey())
	}
	vm, err := valueMatcher(m.GetValue(), config.Join(path, "value"))
	if err != nil {
		return nil, err
	}
	ns, invert := m.GetFilter(), m.GetInvert()
	return func(c *Ctx) bool {
		var v *structpb.Value
		if st := c.Info.DynamicMetadata[ns]; st != nil {
			v = structpb.NewStructValue(st)
			for _, k := range keys {
				if s := v.GetStructValue(); s != nil {
					v = s.GetFields()[k]
				} else {
					v = nil
				}
				if v == nil {
					break
				}
			}
		}
		return vm(v) != invert
	}, nil
}

func valueMatcher(vm *matcherv3.ValueMatcher, path string) (func(*structpb.Value) bool, error) {
	switch m := vm.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_NullMatch_:
		return func(v *structpb.Value) bool { _, ok := v.GetKind().(*structpb.Value_NullValue); return ok }, nil
	case *matcherv3.ValueMatcher_PresentMatch:
		return func(v *structpb.Value) bool { return (v != nil) == m.PresentMatch }, nil
	case *matcherv3.ValueMatcher_BoolMatch:
		return func(v *structpb.Value) bool {
			b, ok := v.GetKind().(*structpb.Value_BoolValue)
			return ok && b.BoolValue == m.BoolMatch
		}, nil
	case *matcherv3.ValueMatcher_StringMatch:
		sm, err := route.CompileStringMatcher(m.StringMatch, config.Join(path, "string_match"))
		return func(v *structpb.Value) bool {
			s, ok := v.GetKind().(*structpb.Value_StringValue)
			return ok && sm(s.StringValue)
		}, err
	case *matcherv3.ValueMatcher_DoubleMatch:
		dm := m.DoubleMatch
		return func(v *structpb.Value) bool {
			n, ok := v.GetKind().(*structpb.Value_NumberValue)
			if !ok {
				return false
			}
			switch r := dm.GetMatchPattern().(type) {
			case *matcherv3.DoubleMatcher_Exact:
				return n.NumberValue == r.Exact
			case *matcherv3.DoubleMatcher_Range:
				return n.NumberValue >= r.Range.GetStart() && n.NumberValue < r.Range.GetEnd()
			}
			return false
		}, nil
	case *matcherv3.ValueMatcher_ListMatch:
		inner, err := valueMatcher(m.ListMatch.GetOneOf(), config.Join(path, "list_match.one_of"))
		return func(v *structpb.Value) bool {
			for _, e := range v.GetListValue().GetValues() {
				if inner(e) {
					return true
				}
			}
			return false
		}, err
	case *matcherv3.ValueMatcher_OrMatch:
		var ms []func(*structpb.Value) bool
		for i, x := range m.OrMatch.GetValueMatchers() {
			f, err := valueMatcher(x, config.Index(config.Join(path, "or_match.value_matchers"), i))
			if err != nil {
				return nil, err
			}
			ms = append(ms, f)
		}
		return func(v *structpb.Value) bool {
			for _, f := range ms {
				if f(v) {
					return true
				}
			}
			return false
		}, nil
	}
	return nil, config.Errorf(path, "value matcher has no pattern")
}

func filterState(m *matcherv3.FilterStateMatcher, path string) (rule, error) {
	sm := m.GetStringMatch()
	if sm == nil {
		return nil, config.Unsupported(path, "this filter_state matcher", "string_match")
	}
	f, err := route.CompileStringMatcher(sm, config.Join(path, "string_match"))
	key := m.GetKey()
	return func(c *Ctx) bool {
		v, ok := c.Info.FilterState[key]
		return ok && v != nil && f(v.String())
	}, err
}

// MetadataMatcher compiles an envoy.type.matcher.v3.MetadataMatcher over
// dynamic metadata by namespace, as the engine's metadata rules match it,
// for filters that gate on metadata (network ext_authz's
// filter_enabled_metadata).
func MetadataMatcher(m *matcherv3.MetadataMatcher, path string) (func(md map[string]*structpb.Struct) bool, error) {
	r, err := metadata(m, path)
	if err != nil {
		return nil, err
	}
	return func(md map[string]*structpb.Struct) bool {
		return r(&Ctx{Info: &streaminfo.Info{DynamicMetadata: md}})
	}, nil
}
