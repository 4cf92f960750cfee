// Package rbac is envoy.filters.network.rbac: role-based access control of
// downstream connections (the engine is internal/filters/common/rbac) by
// their addresses, ports, SNI, TLS peer identity, dynamic metadata and
// filter state, with shadow rules that only count and record, Envoy's
// <stat_prefix>.rbac.* stats and its dynamic metadata. A denied connection
// is closed (after delay_deny, when set).
//
// As Envoy, the decision is made when the first data arrives on the
// connection (onData), not when it is accepted: a connection that sends
// nothing is never decided, counted or closed by the filter. CONTINUOUS
// enforcement decides again on every read.
package rbac

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	rbaccfgv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	engine "github.com/legateproxy/legate/internal/filters/common/rbac"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// Name is the filter's name and its dynamic-metadata namespace.
const Name = "envoy.filters.network.rbac"

func init() {
	extension.Register(extension.Extension{Name: Name, Category: extension.NetworkFilter, Config: &rbacv3.RBAC{},
		Factory: listener.ConnFilterFactory(func(ctx *listener.Context, cfg proto.Message, _ listener.ChainOptions, path string) (listener.ConnFilter, error) {
			return compile(ctx, cfg.(*rbacv3.RBAC), path)
		}),
		Notes: "CEL conditions, custom matchers and per-rule stats are not implemented; the policy is checked on each read, not on each protocol message, under CONTINUOUS"})
}

// ErrDenied is what a read of a connection the filter denied returns.
var ErrDenied = errors.New("rbac: connection denied")

// filterConfig is a compiled network RBAC filter.
type filterConfig struct {
	enforced, shadow *engine.Engine
	continuous       bool
	delayDeny        time.Duration
	// shadowResultKey and shadowPolicyKey are the dynamic-metadata fields
	// of the shadow decision, prefixed by shadow_rules_stat_prefix as
	// Envoy does.
	shadowResultKey, shadowPolicyKey string

	allowed, denied, shadowAllowed, shadowDenied *stats.Counter
	log                                          *slog.Logger
}

func compile(ctx *listener.Context, r *rbacv3.RBAC, path string) (*filterConfig, error) {
	if err := config.CheckFields(r, path, "rules", "matcher", "shadow_rules", "shadow_matcher", "shadow_rules_stat_prefix",
		"stat_prefix", "enforcement_type", "delay_deny"); err != nil {
		return nil, err
	}
	if r.GetStatPrefix() == "" {
		// The proto requires it (min_len 1); say so even when validation
		// was skipped.
		return nil, config.Errorf(config.Join(path, "stat_prefix"), "stat_prefix is required")
	}
	f := &filterConfig{continuous: r.GetEnforcementType() == rbacv3.RBAC_CONTINUOUS, log: ctx.Log}
	if f.log == nil {
		f.log = slog.Default()
	}
	if d := r.GetDelayDeny(); d != nil {
		f.delayDeny = d.AsDuration()
	}
	var err error
	// As Envoy, the matcher wins over rules (which are then ignored), and
	// rules may not look at HTTP headers: a connection has none.
	if r.GetMatcher() != nil {
		f.enforced, err = engine.CompileMatcherWith(r.GetMatcher(), config.Join(path, "matcher"), checkInput)
	} else if r.GetRules() != nil {
		if err = checkNoHeaders(r.GetRules(), config.Join(path, "rules")); err == nil {
			f.enforced, err = engine.Compile(r.GetRules(), config.Join(path, "rules"))
		}
	}
	if err != nil {
		return nil, err
	}
	if r.GetShadowMatcher() != nil {
		f.shadow, err = engine.CompileMatcherWith(r.GetShadowMatcher(), config.Join(path, "shadow_matcher"), checkInput)
	} else if r.GetShadowRules() != nil {
		if err = checkNoHeaders(r.GetShadowRules(), config.Join(path, "shadow_rules")); err == nil {
			f.shadow, err = engine.Compile(r.GetShadowRules(), config.Join(path, "shadow_rules"))
		}
	}
	if err != nil {
		return nil, err
	}
	// Envoy's generateStats: <stat_prefix>.rbac.<stat> for the enforced
	// rules, <stat_prefix>.rbac.<shadow_rules_stat_prefix>.<stat> for the
	// shadow rules.
	base := stats.JoinPrefix(r.GetStatPrefix(), "rbac.")
	shadowBase := stats.JoinPrefix(base, r.GetShadowRulesStatPrefix())
	f.allowed = ctx.Stats.Counter(stats.JoinPrefix(base, "allowed"))
	f.denied = ctx.Stats.Counter(stats.JoinPrefix(base, "denied"))
	f.shadowAllowed = ctx.Stats.Counter(stats.JoinPrefix(shadowBase, "shadow_allowed"))
	f.shadowDenied = ctx.Stats.Counter(stats.JoinPrefix(shadowBase, "shadow_denied"))
	f.shadowResultKey = r.GetShadowRulesStatPrefix() + "shadow_engine_result"
	f.shadowPolicyKey = r.GetShadowRulesStatPrefix() + "shadow_effective_policy_id"
	return f, nil
}

// networkInputs are the matching inputs a connection offers: Envoy's
// network RBAC filter refuses any other input in its matchers.
var networkInputs = map[string]bool{
	"envoy.extensions.matching.common_inputs.network.v3.DestinationIPInput":   true,
	"envoy.extensions.matching.common_inputs.network.v3.DestinationPortInput": true,
	"envoy.extensions.matching.common_inputs.network.v3.SourceIPInput":        true,
	"envoy.extensions.matching.common_inputs.network.v3.SourcePortInput":      true,
	"envoy.extensions.matching.common_inputs.network.v3.DirectSourceIPInput":  true,
	"envoy.extensions.matching.common_inputs.network.v3.ServerNameInput":      true,
	"envoy.extensions.matching.common_inputs.network.v3.FilterStateInput":     true,
	"envoy.extensions.matching.common_inputs.ssl.v3.UriSanInput":              true,
	"envoy.extensions.matching.common_inputs.ssl.v3.DnsSanInput":              true,
	"envoy.extensions.matching.common_inputs.ssl.v3.SubjectInput":             true,
}

func checkInput(cfg proto.Message, path string) error {
	name := string(cfg.ProtoReflect().Descriptor().FullName())
	if networkInputs[name] {
		return nil
	}
	return config.Errorf(path, "RBAC network filter cannot match 'type.googleapis.com/%s'", name)
}

// checkNoHeaders refuses header permissions and principals, as Envoy's
// network RBAC factory does (validateRbacRules), at any depth of and/or/not.
func checkNoHeaders(r *rbaccfgv3.RBAC, path string) error {
	for name, p := range r.GetPolicies() {
		pp := fmt.Sprintf("%s.policies[%q]", path, name)
		for i, perm := range p.GetPermissions() {
			if err := checkPermission(perm, config.Index(config.Join(pp, "permissions"), i)); err != nil {
				return err
			}
		}
		for i, pr := range p.GetPrincipals() {
			if err := checkPrincipal(pr, config.Index(config.Join(pp, "principals"), i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func headerError(path string) error {
	return config.Errorf(config.Join(path, "header"), "header rules are not supported by the RBAC network filter (a connection has no headers)")
}

func checkPermission(p *rbaccfgv3.Permission, path string) error {
	switch r := p.GetRule().(type) {
	case *rbaccfgv3.Permission_Header:
		return headerError(path)
	case *rbaccfgv3.Permission_AndRules:
		for i, x := range r.AndRules.GetRules() {
			if err := checkPermission(x, config.Index(config.Join(path, "and_rules.rules"), i)); err != nil {
				return err
			}
		}
	case *rbaccfgv3.Permission_OrRules:
		for i, x := range r.OrRules.GetRules() {
			if err := checkPermission(x, config.Index(config.Join(path, "or_rules.rules"), i)); err != nil {
				return err
			}
		}
	case *rbaccfgv3.Permission_NotRule:
		return checkPermission(r.NotRule, config.Join(path, "not_rule"))
	}
	return nil
}

func checkPrincipal(p *rbaccfgv3.Principal, path string) error {
	switch r := p.GetIdentifier().(type) {
	case *rbaccfgv3.Principal_Header:
		return headerError(path)
	case *rbaccfgv3.Principal_AndIds:
		for i, x := range r.AndIds.GetIds() {
			if err := checkPrincipal(x, config.Index(config.Join(path, "and_ids.ids"), i)); err != nil {
				return err
			}
		}
	case *rbaccfgv3.Principal_OrIds:
		for i, x := range r.OrIds.GetIds() {
			if err := checkPrincipal(x, config.Index(config.Join(path, "or_ids.ids"), i)); err != nil {
				return err
			}
		}
	case *rbaccfgv3.Principal_NotId:
		return checkPrincipal(r.NotId, config.Join(path, "not_id"))
	}
	return nil
}

// OnNewConnection wraps the connection so that its first read (every read
// under CONTINUOUS) is checked before the bytes reach the next filter.
// Nothing is decided here: Envoy's filter decides in onData, so a
// connection that never sends is neither allowed nor denied.
func (f *filterConfig) OnNewConnection(tc *listener.Conn) error {
	if f.enforced == nil && f.shadow == nil {
		return nil
	}
	tc.Conn = &conn{Conn: tc.Conn, f: f, tc: tc, closed: make(chan struct{})}
	// The decision comes later, from the read side: the metadata map must
	// exist now for the terminal filter's record (tcp_proxy's access log)
	// to share it.
	if tc.Metadata == nil {
		tc.Metadata = map[string]*structpb.Struct{}
	}
	return nil
}

// result is one engine's decision on a connection.
type result int

const (
	unknown result = iota
	allow
	deny
)

// conn is a downstream connection under RBAC: reads are checked. It
// deliberately hides the socket (no SyscallConn/TCPSocket), so that
// netx's raw-syscall reads cannot bypass the check.
type conn struct {
	net.Conn
	f  *filterConfig
	tc *listener.Conn

	enforced, shadow result
	// denied is set once the connection was denied: reads fail.
	denied    bool
	closeOnce sync.Once
	closed    chan struct{}
}

// Read reads from the connection and, on the first data (or the first end
// of stream: Envoy's onData runs for a half-closed connection too), checks
// the policies. A denied connection is closed without passing the bytes on.
func (c *conn) Read(p []byte) (int, error) {
	if c.denied {
		return 0, ErrDenied
	}
	n, err := c.Conn.Read(p)
	if n == 0 && !errors.Is(err, io.EOF) {
		return n, err
	}
	if c.check() {
		return n, err
	}
	c.denied = true
	if c.f.delayDeny > 0 {
		// As Envoy: reading stops and the connection is closed when the
		// delay is over (or sooner, if it is closed meanwhile).
		t := time.NewTimer(c.f.delayDeny)
		select {
		case <-t.C:
		case <-c.closed:
			t.Stop()
		}
	}
	c.Close()
	return 0, ErrDenied
}

// check runs the engines as Envoy's onData and reports whether the data
// may go on.
func (c *conn) check() bool {
	f := c.f
	var info *streaminfo.Info
	ctx := func() *engine.Ctx {
		if info == nil {
			info = c.tc.StreamInfo()
		}
		return &engine.Ctx{Info: info}
	}
	if f.shadow != nil && (f.continuous || c.shadow == unknown) {
		res := f.shadow.Check(ctx())
		result := "allowed"
		c.shadow = allow
		if res.Allowed {
			f.shadowAllowed.Inc()
		} else {
			f.shadowDenied.Inc()
			result = "denied"
			c.shadow = deny
		}
		md := map[string]*structpb.Value{f.shadowResultKey: structpb.NewStringValue(result)}
		if res.Policy != "" {
			md[f.shadowPolicyKey] = structpb.NewStringValue(res.Policy)
		}
		c.tc.SetMetadata(Name, md)
		info = nil // the enforced rules see the shadow result, as in Envoy
	}
	if f.enforced == nil {
		return true // no engine: allowed by default
	}
	if !f.continuous && c.enforced != unknown {
		return c.enforced == allow
	}
	res := f.enforced.Check(ctx())
	if f.enforced.IsLog() {
		// A LOG engine allows and hints the access logs (Envoy's
		// handleAction for an enforced engine).
		c.tc.SetMetadata("envoy.common", map[string]*structpb.Value{"access_log_hint": structpb.NewBoolValue(res.Log)})
	}
	if res.Allowed {
		f.allowed.Inc()
		c.enforced = allow
		return true
	}
	f.denied.Inc()
	c.enforced = deny
	policy := res.Policy
	if policy == "" {
		policy = "none"
	}
	// Envoy records this as the connection's termination details.
	f.log.Debug("rbac denied the connection", "remote", c.tc.Remote.String(),
		"details", "rbac_access_denied_matched_policy["+sanitizePolicy(policy)+"]")
	return false
}

// sanitizePolicy replaces whitespace in a policy name with '_', as Envoy's
// responseDetail does, so the details stay one access-log token.
func sanitizePolicy(p string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\f', '\v', '\n', '\r':
			return '_'
		}
		return r
	}, p)
}

// Close closes the connection and ends a pending delayed denial.
func (c *conn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// CloseWrite half-closes the connection when it can (tcp_proxy relays a
// downstream half-close).
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// NegotiatedProtocol is the ALPN protocol of a TLS connection (the HTTP
// connection manager picks its codec by it).
func (c *conn) NegotiatedProtocol() string {
	if a, ok := c.Conn.(interface{ NegotiatedProtocol() string }); ok {
		return a.NegotiatedProtocol()
	}
	return ""
}
