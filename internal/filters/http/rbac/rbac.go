// Package rbac is envoy.filters.http.rbac: role-based access control of
// requests (internal/filters/common/rbac), with shadow rules that only
// count and record, per-route RBACPerRoute, a 403 "RBAC: access denied"
// with rbac_access_denied_matched_policy[...] details, Envoy's stats and
// its dynamic metadata.
package rbac

import (
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"sync"
	"sync/atomic"

	"github.com/legateproxy/legate/internal/config"
	engine "github.com/legateproxy/legate/internal/filters/common/rbac"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
)

// Name is the filter's name and its dynamic-metadata namespace.
const Name = "envoy.filters.http.rbac"

func init() {
	httpfilter.Register(Name, nil, &rbacv3.RBAC{}, &rbacv3.RBACPerRoute{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"CEL conditions, custom matchers and per-rule stats are not implemented")
}

// rules are one RBAC config's engines.
type rules struct {
	enforced, shadow *engine.Engine
	off              bool // RBACPerRoute without rbac: disabled on the route
}

type filterConfig struct {
	rules
	allowed, denied, shadowAllowed, shadowDenied, logged, notLogged *stats.Counter
	// policyValues are the policy names' metadata values (string →
	// *structpb.Value).
	policyValues sync.Map
	// enforcedStructs are the metadata Structs of enforcedMeta (as
	// *lastMeta), by policy
	// and outcome: two per policy name the filter has matched (names come
	// from configuration, its per-route configs included, never from requests).
	enforcedStructs sync.Map
	// lastEnforced is the entry of enforcedStructs used last.
	lastEnforced atomic.Pointer[lastMeta]
}

func compileRules(r *rbacv3.RBAC, path string) (rules, error) {
	if err := config.CheckFields(r, path, "rules", "matcher", "shadow_rules", "shadow_matcher",
		"shadow_rules_stat_prefix", "rules_stat_prefix", "track_per_rule_stats"); err != nil {
		return rules{}, err
	}
	if r.GetTrackPerRuleStats() {
		return rules{}, config.Unsupported(config.Join(path, "track_per_rule_stats"), "per-rule stats")
	}
	var out rules
	var err error
	if r.GetMatcher() != nil {
		out.enforced, err = engine.CompileMatcher(r.GetMatcher(), config.Join(path, "matcher"))
	} else {
		out.enforced, err = engine.Compile(r.GetRules(), config.Join(path, "rules"))
	}
	if err != nil {
		return rules{}, err
	}
	if r.GetShadowMatcher() != nil {
		out.shadow, err = engine.CompileMatcher(r.GetShadowMatcher(), config.Join(path, "shadow_matcher"))
	} else {
		out.shadow, err = engine.Compile(r.GetShadowRules(), config.Join(path, "shadow_rules"))
	}
	return out, err
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	r := msg.(*rbacv3.RBAC)
	rs, err := compileRules(r, path)
	if err != nil {
		return nil, err
	}
	sc := ctx.Scope("rbac.")
	p, sp := r.GetRulesStatPrefix(), r.GetShadowRulesStatPrefix()
	return &filterConfig{rules: rs,
		allowed: sc.Counter(p + "allowed"), denied: sc.Counter(p + "denied"),
		shadowAllowed: sc.Counter(sp + "shadow_allowed"), shadowDenied: sc.Counter(sp + "shadow_denied"),
		logged: sc.Counter(p + "logged"), notLogged: sc.Counter(p + "not_logged"),
	}, nil
}

func compilePerRoute(_ *httpfilter.Context, msg proto.Message, path string) (any, error) {
	pr := msg.(*rbacv3.RBACPerRoute)
	if err := config.CheckFields(pr, path, "rbac"); err != nil {
		return nil, err
	}
	if pr.GetRbac() == nil {
		return &rules{off: true}, nil
	}
	rs, err := compileRules(pr.GetRbac(), config.Join(path, "rbac"))
	return &rs, err
}

func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

type filter struct {
	cfg *filterConfig
	cb  httpfilter.Callbacks
	// ctx is the engines' view of the request, kept in the filter (which
	// is on the heap anyway) so that checking allocates nothing.
	ctx engine.Ctx
}

// The metadata values the filter writes on every request, built once:
// metadata values are read, never changed, once set.
var (
	allowedValue = structpb.NewStringValue("allowed")
	deniedValue  = structpb.NewStringValue("denied")
	boolValue    = map[bool]*structpb.Value{true: structpb.NewBoolValue(true), false: structpb.NewBoolValue(false)}
)

func resultValue(r string) *structpb.Value {
	if r == "allowed" {
		return allowedValue
	}
	return deniedValue
}

// enforcedMeta is the filter's metadata after the enforced engine
// decided (enforced_engine_result, and enforced_effective_policy_id when
// a policy matched), built once per policy and outcome and shared by the
// requests (streaminfo.Info.SetFrozenDynamicMetadata).
func (c *filterConfig) enforcedMeta(policy string, allowed bool) *structpb.Struct {
	type key struct {
		policy  string
		allowed bool
	}
	// Most requests meet the outcome of the one before: the last one
	// is compared first (a policy name is the engine's own string, so
	// equal names usually share their bytes), before the map's hashing.
	if l := c.lastEnforced.Load(); l != nil && l.allowed == allowed && l.policy == policy {
		return l.st
	}
	k := key{policy, allowed}
	if v, ok := c.enforcedStructs.Load(k); ok {
		l := v.(*lastMeta)
		c.lastEnforced.Store(l)
		return l.st
	}
	result := "denied"
	if allowed {
		result = "allowed"
	}
	st := &structpb.Struct{Fields: map[string]*structpb.Value{"enforced_engine_result": resultValue(result)}}
	if policy != "" {
		st.Fields["enforced_effective_policy_id"] = c.policyValue(policy)
	}
	v, _ := c.enforcedStructs.LoadOrStore(k, &lastMeta{policy: policy, allowed: allowed, st: st})
	return v.(*lastMeta).st
}

// lastMeta is the enforced metadata of the last outcome.
type lastMeta struct {
	policy  string
	allowed bool
	st      *structpb.Struct
}

// policyValue is the metadata value of a policy name, built once per name.
func (c *filterConfig) policyValue(name string) *structpb.Value {
	if v, ok := c.policyValues.Load(name); ok {
		return v.(*structpb.Value)
	}
	v, _ := c.policyValues.LoadOrStore(name, structpb.NewStringValue(name))
	return v.(*structpb.Value)
}

func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	rs := &f.cfg.rules
	if pr, ok := f.cb.PerRouteConfig().(*rules); ok {
		if pr.off {
			return httpfilter.Continue
		}
		rs = pr
	}
	info := f.cb.StreamInfo()
	f.ctx = engine.Ctx{Req: h, Info: info}
	c := &f.ctx
	if rs.shadow != nil {
		res := rs.shadow.Check(c)
		result := "allowed"
		if res.Allowed {
			f.cfg.shadowAllowed.Inc()
		} else {
			f.cfg.shadowDenied.Inc()
			result = "denied"
		}
		info.SetDynamicMetadataValue(Name, "shadow_engine_result", resultValue(result))
		if res.Policy != "" {
			info.SetDynamicMetadataValue(Name, "shadow_effective_policy_id", f.cfg.policyValue(res.Policy))
		}
	}
	if rs.enforced == nil {
		return httpfilter.Continue
	}
	res := rs.enforced.Check(c)
	if rs.enforced.IsLog() {
		// A LOG engine never denies; it hints the access logs.
		info.SetDynamicMetadataValue("envoy.common", "access_log_hint", boolValue[res.Log])
		if res.Log {
			f.cfg.logged.Inc()
		} else {
			f.cfg.notLogged.Inc()
		}
		return httpfilter.Continue
	}
	info.SetFrozenDynamicMetadata(Name, f.cfg.enforcedMeta(res.Policy, res.Allowed))
	if res.Allowed {
		f.cfg.allowed.Inc()
		return httpfilter.Continue
	}
	f.cfg.denied.Inc()
	policy := res.Policy
	if policy == "" {
		policy = "none"
	}
	f.cb.SendLocalReply(403, "RBAC: access denied", httpfilter.LocalReply{Details: "rbac_access_denied_matched_policy[" + policy + "]"})
	return httpfilter.StopIteration
}
