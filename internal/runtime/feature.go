package runtime

import (
	"math/rand/v2"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// Fractional is a compiled RuntimeFractionalPercent (filter_enabled,
// filter_enforced, shadow_enabled, …): its default percentage, which the
// runtime key overrides when the key is set, as Envoy's
// Runtime::FeatureEnabled does.
type Fractional struct {
	rt  *Loader
	key string
	def *typev3.FractionalPercent
}

// NewFractional compiles p against the loader rt (which may be nil). An
// unset p is 0 %: Envoy treats an unset filter_enabled/filter_enforced as
// off; callers for which unset means "always" check p for nil first.
func NewFractional(rt *Loader, p *corev3.RuntimeFractionalPercent) Fractional {
	def := p.GetDefaultValue()
	if def == nil {
		def = &typev3.FractionalPercent{}
	}
	return Fractional{rt: rt, key: p.GetRuntimeKey(), def: def}
}

// Roll draws against the current percentage.
func (f Fractional) Roll() bool {
	num, den := f.rt.Snapshot().Fraction(f.key, f.def)
	if num >= den {
		return true
	}
	return num > 0 && rand.Uint32N(den) < num
}

// FeatureEnabled is Envoy's Runtime::featureEnabled(key, def): the key's
// value (def when unset) is a percentage, drawn against per call. rt may
// be nil.
func FeatureEnabled(rt *Loader, key string, def uint64) bool {
	pct := rt.Snapshot().Integer(key, def)
	if pct >= 100 {
		return true
	}
	return pct > 0 && rand.Uint64N(100) < pct
}

// FeatureFlag is a compiled RuntimeFeatureFlag: a default boolean that the
// runtime key overrides.
type FeatureFlag struct {
	rt  *Loader
	key string
	def bool
}

// NewFeatureFlag compiles f against rt. An unset flag, or one without a
// default_value, is on — the proto's documented default.
func NewFeatureFlag(rt *Loader, f *corev3.RuntimeFeatureFlag) FeatureFlag {
	return FeatureFlag{rt: rt, key: f.GetRuntimeKey(), def: f.GetDefaultValue() == nil || f.GetDefaultValue().GetValue()}
}

// Enabled reports the flag's current value.
func (f FeatureFlag) Enabled() bool {
	if f.key == "" {
		return f.def
	}
	return f.rt.Snapshot().Bool(f.key, f.def)
}
