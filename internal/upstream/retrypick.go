package upstream

import (
	"math"

	"google.golang.org/protobuf/types/known/structpb"
)

// HostFilter is what the omit_canary_hosts and omit_host_metadata retry
// host predicates reject: a pick that lands on such a host is made again
// (up to host_selection_retry_max_attempts more times), as Envoy's
// RetryHostPredicate::shouldSelectAnotherHost. It is compiled once per
// route and never changed.
type HostFilter struct {
	// Canary rejects hosts marked canary (envoy.lb metadata canary: true,
	// Envoy's HostDescription::canary).
	Canary bool
	// Metadata rejects hosts whose envoy.lb metadata has every one of its
	// key/value pairs (omit_host_metadata's metadata_match).
	Metadata []*structpb.Struct
}

// Rejects reports whether a pick of h should be made again.
func (f *HostFilter) Rejects(h *Host) bool {
	if f == nil {
		return false
	}
	lb := h.Config().Metadata.GetFilterMetadata()[envoyLB].GetFields()
	if f.Canary && lb["canary"].GetBoolValue() {
		return true
	}
	for _, m := range f.Metadata {
		if metadataContains(lb, m) {
			return true
		}
	}
	return false
}

// metadataContains is Envoy's Config::Metadata::metadataLabelMatch: every
// field of want is present in have with an equal value. An empty want
// matches nothing (Envoy's omit_host_metadata with no labels omits no
// host).
func metadataContains(have map[string]*structpb.Value, want *structpb.Struct) bool {
	if len(want.GetFields()) == 0 {
		return false
	}
	for k, v := range want.GetFields() {
		hv, ok := have[k]
		if !ok || valueKey(hv) != valueKey(v) {
			return false
		}
	}
	return true
}

// avoidMask is the set of c's priority levels an attempt should avoid:
// those of the hosts in ctx.AvoidLevels that belong to c (the
// previous_priorities retry priority). Levels above 63 are never avoided.
func (hs *hostSet) avoidMask(ctx *LBContext) uint64 {
	if ctx == nil || len(ctx.AvoidLevels) == 0 || len(hs.prios) < 2 {
		return 0
	}
	var m uint64
	for _, h := range ctx.AvoidLevels {
		p := h.Priority()
		if p < 64 && int(p) < len(hs.prios) && hs.prios[p].has(h) {
			m |= 1 << p
		}
	}
	return m
}

func (p *prioSet) has(h *Host) bool {
	for _, x := range p.hosts {
		if x == h {
			return true
		}
	}
	return false
}

// avoidingLoad is the cumulative priority load with the levels in mask
// taken out, as Envoy's PreviousPrioritiesRetryPriority: each remaining
// level's health (already capped at 100 and overprovisioned) is
// redistributed over their sum, the highest levels first. ok is false
// when no remaining level has any health: Envoy then forgets the
// attempted priorities and uses the unmodified load.
func (hs *hostSet) avoidingLoad(mask uint64, out []int) (load []int, ok bool) {
	total := 0.0
	for i, h := range hs.health {
		if i < 64 && mask&(1<<i) != 0 {
			continue
		}
		total += h
	}
	total = math.Min(total, 100)
	if total <= 0 {
		return nil, false
	}
	out = out[:0]
	remaining, cum := 100.0, 0.0
	for i, h := range hs.health {
		share := 0.0
		if i >= 64 || mask&(1<<i) == 0 {
			share = math.Min(remaining, h*100/total)
		}
		remaining -= share
		cum += share
		out = append(out, int(math.Round(cum)))
	}
	if out[len(out)-1] < 100 {
		// Rounding: what is left goes to the last level that takes load,
		// as Envoy gives the remainder to an available level.
		for i := len(out) - 1; i >= 0; i-- {
			if i >= 64 || mask&(1<<i) == 0 {
				for j := i; j < len(out); j++ {
					out[j] = 100
				}
				break
			}
		}
	}
	return out, true
}
