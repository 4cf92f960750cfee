package applog

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
)

// Components are Envoy's logger names (the ALL_LOGGER_IDS list of Envoy's
// source/common/common/logger.h), in Envoy's order, which /logging lists.
// Each has its own level; a record's component is its "logger" attribute
// (see Component), and a record without one belongs to DefaultComponent.
var Components = [...]string{
	"admin", "alternate_protocols_cache", "aws", "assert", "backtrace", "basic_auth",
	"cache_filter", "client", "config", "connection", "conn_handler", "decompression",
	"dns", "dubbo", "envoy_bug", "ext_authz", "ext_proc", "rocketmq", "file", "filter",
	"forward_proxy", "geolocation", "grpc", "happy_eyeballs", "hc", "health_checker",
	"http", "http2", "hystrix", "init", "io", "jwt", "kafka", "key_value_store", "lua",
	"main", "matcher", "misc", "mongo", "multi_connection", "oauth2", "quic",
	"quic_stream", "pool", "rate_limit_quota", "rbac", "rds", "redis", "router",
	"runtime", "stats", "secret", "tap", "testing", "thrift", "tracing", "upstream",
	"udp", "wasm", "websocket", "golang",
}

// ComponentKey is the attribute that names a record's component (it is
// what %n prints, not an attribute of the message).
const ComponentKey = "logger"

// DefaultComponent is the component of records that name none.
const DefaultComponent = LoggerName

var componentIndex = func() map[string]int {
	m := make(map[string]int, len(Components))
	for i, c := range Components {
		m[c] = i
	}
	return m
}()

// IsComponent reports whether name is one of Envoy's logger names.
func IsComponent(name string) bool {
	_, ok := componentIndex[name]
	return ok
}

// Component returns log with its records in component name (one of
// Components): `applog.Component(log, "upstream").Debug(…)` is filtered
// by the upstream logger's level and prints [upstream] for %n. A name
// that is not an Envoy logger name is a programming error: it panics.
func Component(log *slog.Logger, name string) *slog.Logger {
	if !IsComponent(name) {
		panic("applog: " + name + " is not an Envoy logger name (see applog.Components)")
	}
	return log.With(ComponentKey, name)
}

// Registry holds the level of each component, as Envoy's logger registry
// holds them. All is the process level (--log-level, the server's
// LogLevel): SetAll sets it too, so code that reads only it still sees
// /logging?level=.
type Registry struct {
	all    *slog.LevelVar
	levels [len(Components)]slog.LevelVar
	// min is the lowest level of any component: a handler not bound to a
	// component lets records of that level through to Handle, which
	// filters them by the component each names.
	min atomic.Int64
	mu  sync.Mutex // serialises changes (min is recomputed)
}

var (
	levelsMu    sync.Mutex
	levelsByAll = map[*slog.LevelVar]*Registry{}
)

// NewRegistry returns component levels all at all's level, and registers
// them as the Registry of all (RegistryFor).
func NewRegistry(all *slog.LevelVar) *Registry {
	if all == nil {
		all = new(slog.LevelVar)
	}
	l := &Registry{all: all}
	l.SetAll(all.Level())
	levelsMu.Lock()
	levelsByAll[all] = l
	levelsMu.Unlock()
	return l
}

// RegistryFor returns the Registry made by NewRegistry(all), or makes them: the
// admin API finds the component levels from the server's process level.
func RegistryFor(all *slog.LevelVar) *Registry {
	levelsMu.Lock()
	l, ok := levelsByAll[all]
	levelsMu.Unlock()
	if ok {
		return l
	}
	return NewRegistry(all)
}

// Level returns the level of component (DefaultComponent's for a name
// that is not a component).
func (l *Registry) Level(component string) slog.Level {
	i, ok := componentIndex[component]
	if !ok {
		i = componentIndex[DefaultComponent]
	}
	return l.levels[i].Level()
}

// Min is the lowest level of any component.
func (l *Registry) Min() slog.Level { return slog.Level(l.min.Load()) }

// All is the process level.
func (l *Registry) All() *slog.LevelVar { return l.all }

// SetAll sets every component, and the process level, to lvl
// (/logging?level=, --log-level).
func (l *Registry) SetAll(lvl slog.Level) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Set(lvl)
	for i := range l.levels {
		l.levels[i].Set(lvl)
	}
	l.min.Store(int64(lvl))
}

// Set sets the level of each named component; a name that is not a
// component changes nothing and is an error (Envoy's "unknown logger
// name").
func (l *Registry) Set(changes map[string]slog.Level) error {
	for name := range changes {
		if !IsComponent(name) {
			return fmt.Errorf("unknown logger name")
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, lvl := range changes {
		l.levels[componentIndex[name]].Set(lvl)
	}
	m := l.levels[0].Level()
	for i := range l.levels {
		m = min(m, l.levels[i].Level())
	}
	l.min.Store(int64(m))
	return nil
}

// Each calls f with each component and its level, in Envoy's order.
func (l *Registry) Each(f func(component string, lvl slog.Level)) {
	for i, c := range Components {
		f(c, l.levels[i].Level())
	}
}

// ComponentLevel is one entry of --component-log-level.
type ComponentLevel struct {
	Component string
	Level     slog.Level
}

// ParseComponentLevels parses --component-log-level (upstream:debug,
// connection:trace) with Envoy's errors: every entry is name:level, the
// level one of Envoy's and the name one of Components.
func ParseComponentLevels(s string) ([]ComponentLevel, error) {
	if s == "" {
		return nil, nil
	}
	var out []ComponentLevel
	for _, e := range strings.Split(s, ",") {
		parts := strings.Split(e, ":")
		if len(parts) != 2 {
			return nil, fmt.Errorf("error: component log level not correctly specified '%s'", e)
		}
		name, level := parts[0], parts[1]
		lvl, ok := ParseLevel(level)
		if !ok {
			return nil, fmt.Errorf("error: invalid log level specified '%s'", level)
		}
		if !IsComponent(name) {
			return nil, fmt.Errorf("error: invalid component specified '%s'", name)
		}
		out = append(out, ComponentLevel{name, lvl})
	}
	return out, nil
}

// ParseLevel converts a level name of Envoy's command line: trace, debug,
// info, warning (or warn), error, critical, off.
func ParseLevel(s string) (slog.Level, bool) {
	l, ok := Levels[s]
	return l, ok
}

// LevelNames are Envoy's level names, in order (spdlog's).
var LevelNames = [...]string{"trace", "debug", "info", "warning", "error", "critical", "off"}

// ParseEnvoyLevel converts one of LevelNames exactly, as Envoy's admin
// /logging does (no "warn", no other case).
func ParseEnvoyLevel(s string) (slog.Level, bool) {
	for _, n := range LevelNames {
		if n == s {
			return Levels[n], true
		}
	}
	return 0, false
}
