package jwt_authn

import (
	"strings"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"

	"github.com/legateproxy/legate/internal/config"
)

// requirement is a compiled JwtRequirement.
type requirement interface {
	check(v *verifier) error
}

type providerReq struct {
	p         *provider
	audiences []string
}

// check finds the provider's token and verifies it; a token at a location
// but for another issuer counts as missing for this provider.
func (r *providerReq) check(v *verifier) error {
	for _, loc := range r.p.locations {
		tok, ok := loc.extract(v.h)
		if !ok {
			continue
		}
		payload, raw, err := r.p.verify(tok, r.audiences)
		if err != nil {
			return err
		}
		v.verified = append(v.verified, verifiedToken{p: r.p, loc: loc, payload: payload, raw: raw})
		return nil
	}
	return errMissing
}

type anyReq []requirement

// check passes when one passes; the error reported is the first that is
// not "missing" (a bad token says more than an absent one).
func (r anyReq) check(v *verifier) error {
	var first error
	for _, sub := range r {
		n := len(v.verified)
		err := sub.check(v)
		if err == nil {
			return nil
		}
		v.verified = v.verified[:n]
		if je, ok := err.(*jwtError); first == nil || (ok && !je.missing) {
			if fe, ok := first.(*jwtError); first == nil || (ok && fe.missing) {
				first = err
			}
		}
	}
	if first == nil {
		first = errMissing
	}
	return first
}

type allReq []requirement

func (r allReq) check(v *verifier) error {
	for _, sub := range r {
		if err := sub.check(v); err != nil {
			return err
		}
	}
	return nil
}

// allowMissing passes when no token is present; a present token must verify.
type allowMissing struct{ f *filterConfig }

func (a allowMissing) check(v *verifier) error {
	err := a.any().check(v)
	if je, ok := err.(*jwtError); ok && je.missing {
		return nil
	}
	return err
}

func (a allowMissing) any() anyReq {
	var all anyReq
	for _, p := range a.f.sortedProviders() {
		all = append(all, &providerReq{p: p, audiences: p.audiences})
	}
	return all
}

// allowMissingOrFailed always passes (verified tokens are still forwarded).
type allowMissingOrFailed struct{ allowMissing }

func (a allowMissingOrFailed) check(v *verifier) error {
	_ = a.any().check(v)
	return nil
}

// extractOnly is extract_only_without_validation: every provider's
// token that parses is forwarded (forward_payload_header, claim_to_headers,
// payload_in_metadata) with no signature, issuer, audience or time check,
// and the request always passes. As Envoy (1.39+), the verification
// status header is set to "false" whenever a token was forwarded this way,
// so later filters can tell its claims were not verified.
type extractOnly struct {
	f            *filterConfig
	statusHeader string
}

func (e extractOnly) check(v *verifier) error {
	found := false
	for _, p := range e.f.sortedProviders() {
		for _, loc := range p.locations {
			tok, ok := loc.extract(v.h)
			if !ok {
				continue
			}
			_, claims, raw, err := decode(tok)
			if err != nil {
				continue
			}
			v.verified = append(v.verified, verifiedToken{p: p, loc: loc, payload: claims, raw: raw})
			found = true
			break
		}
	}
	if found {
		v.h.Map.Set(e.statusHeader, "false")
	}
	return nil
}

func (f *filterConfig) sortedProviders() []*provider {
	out := make([]*provider, 0, len(f.providers))
	for _, p := range f.providers {
		out = append(out, p)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].name < out[j-1].name; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func (f *filterConfig) requirement(r *jwtv3.JwtRequirement, path string) (requirement, error) {
	switch t := r.GetRequiresType().(type) {
	case *jwtv3.JwtRequirement_ProviderName:
		p := f.providers[t.ProviderName]
		if p == nil {
			return nil, config.Errorf(config.Join(path, "provider_name"), "provider %q is not configured", t.ProviderName)
		}
		return &providerReq{p: p, audiences: p.audiences}, nil
	case *jwtv3.JwtRequirement_ProviderAndAudiences:
		p := f.providers[t.ProviderAndAudiences.GetProviderName()]
		if p == nil {
			return nil, config.Errorf(config.Join(path, "provider_and_audiences.provider_name"), "provider %q is not configured", t.ProviderAndAudiences.GetProviderName())
		}
		return &providerReq{p: p, audiences: t.ProviderAndAudiences.GetAudiences()}, nil
	case *jwtv3.JwtRequirement_RequiresAny:
		var out anyReq
		for i, sub := range t.RequiresAny.GetRequirements() {
			s, err := f.requirement(sub, config.Index(config.Join(path, "requires_any.requirements"), i))
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	case *jwtv3.JwtRequirement_RequiresAll:
		var out allReq
		for i, sub := range t.RequiresAll.GetRequirements() {
			s, err := f.requirement(sub, config.Index(config.Join(path, "requires_all.requirements"), i))
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	case *jwtv3.JwtRequirement_AllowMissing:
		return allowMissing{f}, nil
	case *jwtv3.JwtRequirement_AllowMissingOrFailed:
		return allowMissingOrFailed{allowMissing{f}}, nil
	case *jwtv3.JwtRequirement_ExtractOnlyWithoutValidation:
		h := strings.ToLower(t.ExtractOnlyWithoutValidation.GetVerificationStatusHeader())
		if h == "" {
			h = "x-jwt-signature-verified"
		}
		return extractOnly{f: f, statusHeader: h}, nil
	}
	return nil, config.Errorf(path, "empty requirement")
}
