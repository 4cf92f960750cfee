package redis_proxy

import (
	"math/rand/v2"
	"strings"
	"time"

	redisv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/redis_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/runtime"
)

// fault is one compiled RedisFault.
type fault struct {
	isError bool
	delay   time.Duration
	rt      *runtime.Loader
	key     string
	def     *typev3.FractionalPercent
}

// percent is the fault's share, as Envoy reads it: the numerator of
// fault_enabled (its runtime key's value when set), taken as a percentage.
func (f *fault) percent() uint64 {
	// A percentage, whatever the denominator (Envoy's
	// getIntegerNumeratorOfFractionalPercent).
	num, den := f.rt.Snapshot().Fraction(f.key, f.def)
	if den == 0 {
		return 0
	}
	return uint64(num) * 100 / uint64(den)
}

// faults are the faults by lower-case command; allKey holds those for
// every command (Envoy's FaultManagerImpl).
type faults map[string][]*fault

const allKey = ""

func compileFaults(ctx *listener.Context, fs []*redisv3.RedisProxy_RedisFault, path string) (faults, error) {
	if len(fs) == 0 {
		return nil, nil
	}
	m := faults{}
	var all []*fault
	for i, rf := range fs {
		p := config.Index(path, i)
		if err := config.CheckFields(rf, p, "fault_type", "fault_enabled", "delay", "commands"); err != nil {
			return nil, err
		}
		f := &fault{isError: rf.GetFaultType() == redisv3.RedisProxy_RedisFault_ERROR, rt: ctx.Runtime,
			key: rf.GetFaultEnabled().GetRuntimeKey(), def: rf.GetFaultEnabled().GetDefaultValue()}
		if f.def == nil {
			f.def = &typev3.FractionalPercent{}
		}
		if d := rf.GetDelay(); d != nil {
			f.delay = d.AsDuration()
		}
		if len(rf.GetCommands()) == 0 {
			all = append(all, f)
			continue
		}
		for _, c := range rf.GetCommands() {
			c = strings.ToLower(c)
			m[c] = append(m[c], f)
		}
	}
	// The faults for every command also apply, after its own, to each
	// command that has faults of its own.
	for c := range m {
		m[c] = append(m[c], all...)
	}
	if len(all) > 0 {
		m[allKey] = all
	}
	return m, nil
}

// pick draws the fault for a command, if any: one number in [0, 100)
// against the faults' percentages added up in order, so that the faults
// of a command share it (Envoy's amortized fault selection).
func (fs faults) pick(cmd string) *fault {
	if len(fs) == 0 {
		return nil
	}
	list, ok := fs[cmd]
	if !ok {
		list = fs[allKey]
	}
	if len(list) == 0 {
		return nil
	}
	r := rand.Uint64N(100)
	var sum uint64
	for _, f := range list {
		p := f.percent()
		if r < p+sum {
			return f
		}
		sum += p
	}
	return nil
}
