package upstream

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	orcav3 "github.com/cncf/xds/go/xds/data/orca/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/headers"
)

// ORCA (Open Request Cost Aggregation) per-request load reports: an
// upstream sends its load with a response, in a header or trailer, and
// load balancers that weigh hosts by load (client_side_weighted_round_robin)
// read it. The names and formats are Envoy's (source/common/orca).
const (
	// OrcaHeader carries a report in one of three formats, told apart by a
	// prefix: "TEXT " (comma-separated name=value pairs), "JSON " (the
	// OrcaLoadReport in proto JSON) or "BIN " (the serialized proto in
	// base64).
	OrcaHeader = "endpoint-load-metrics"
	// OrcaHeaderBin is the binary form gRPC servers send (grpc-go's orca
	// package, in trailers): the serialized OrcaLoadReport in base64.
	OrcaHeaderBin = "endpoint-load-metrics-bin"
)

// errNoOrca says a response carried no ORCA report (not an error of the
// upstream: reports are optional).
var errNoOrca = errors.New("no ORCA data sent from the backend")

// ParseOrcaLoadReport reads the ORCA report of a response's headers or
// trailers, as Envoy's Orca::parseOrcaLoadReportHeaders: the legacy binary
// header first, else the formatted one. It returns errNoOrca when neither
// is present.
func ParseOrcaLoadReport(h *headers.Map) (*orcav3.OrcaLoadReport, error) {
	if h == nil {
		return nil, errNoOrca
	}
	if v, ok := h.Lookup(OrcaHeaderBin); ok {
		return parseOrcaBinary(v)
	}
	v, ok := h.Lookup(OrcaHeader)
	if !ok {
		return nil, errNoOrca
	}
	switch {
	case strings.HasPrefix(v, "BIN "):
		return parseOrcaBinary(v[len("BIN "):])
	case strings.HasPrefix(v, "TEXT "):
		return parseOrcaText(v[len("TEXT "):])
	case strings.HasPrefix(v, "JSON "):
		r := &orcav3.OrcaLoadReport{}
		if err := protojson.Unmarshal([]byte(v[len("JSON "):]), r); err != nil {
			return nil, fmt.Errorf("%s: invalid JSON: %w", OrcaHeader, err)
		}
		return r, nil
	}
	// As Envoy, the error names the first five characters (or the word
	// before a space) of what was sent.
	prefix := v[:min(5, len(v))]
	if i := strings.IndexByte(prefix, ' '); i >= 0 {
		prefix = prefix[:i]
	}
	return nil, fmt.Errorf("unsupported ORCA header format: %s", prefix)
}

func parseOrcaBinary(v string) (*orcav3.OrcaLoadReport, error) {
	if v == "" {
		return nil, errors.New("ORCA binary header value is empty")
	}
	// grpc-go sends base64 without padding; Envoy accepts both.
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(v, "="))
	}
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("unable to decode ORCA binary header value: %s", v)
	}
	r := &orcav3.OrcaLoadReport{}
	if err := proto.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("unable to parse binary header to OrcaLoadReport: %w", err)
	}
	return r, nil
}

// parseOrcaText reads "name=value, ..." (":" is accepted for "=", as
// Envoy): the report's scalar fields by name, and named_metrics.<key>,
// utilization.<key> and request_cost.<key> map entries.
func parseOrcaText(v string) (*orcav3.OrcaLoadReport, error) {
	r := &orcav3.OrcaLoadReport{}
	seen := map[string]bool{}
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, val, ok := strings.Cut(item, "=")
		if !ok {
			name, val, _ = strings.Cut(item, ":")
		}
		name, val = strings.TrimSpace(name), strings.TrimSpace(val)
		if seen[name] {
			return nil, fmt.Errorf("%s contains duplicate metric: %s", OrcaHeader, name)
		}
		seen[name] = true
		if name == "" {
			return nil, errors.New("metric names cannot be empty strings")
		}
		if val == "" {
			return nil, errors.New("metric values cannot be empty strings")
		}
		x, err := strconv.ParseFloat(val, 64)
		switch {
		case err != nil && !errors.Is(err, strconv.ErrRange):
			return nil, fmt.Errorf("unable to parse custom backend load metric value(%s): %s", name, val)
		case math.IsNaN(x):
			return nil, fmt.Errorf("custom backend load metric value(%s) cannot be NaN", name)
		case math.IsInf(x, 0):
			return nil, fmt.Errorf("custom backend load metric value(%s) cannot be infinity", name)
		case x < 0:
			return nil, fmt.Errorf("custom backend load metric value(%s) cannot be negative", name)
		}
		if err := setOrcaMetric(r, name, x); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func setOrcaMetric(r *orcav3.OrcaLoadReport, name string, x float64) error {
	for _, m := range []struct {
		prefix, kind string
		m            *map[string]float64
	}{
		{"named_metrics.", "named", &r.NamedMetrics},
		{"utilization.", "utilization", &r.Utilization},
		{"request_cost.", "request cost", &r.RequestCost},
	} {
		if key, ok := strings.CutPrefix(name, m.prefix); ok {
			if key == "" {
				return fmt.Errorf("%s metric key is empty", m.kind)
			}
			if *m.m == nil {
				*m.m = map[string]float64{}
			}
			(*m.m)[key] = x
			return nil
		}
	}
	switch name {
	case "cpu_utilization":
		r.CpuUtilization = x
	case "mem_utilization":
		r.MemUtilization = x
	case "application_utilization":
		r.ApplicationUtilization = x
	case "eps":
		r.Eps = x
	case "rps_fractional":
		r.RpsFractional = x
	default:
		return fmt.Errorf("unsupported metric name: %s", name)
	}
	return nil
}

// orcaMaxUtilization is the largest of the named metrics (the
// metric_names_for_computing_utilization of a policy): scalar fields by
// name, map entries as <map>.<key>, <map>.* for every entry of a map.
func orcaMaxUtilization(names []string, r *orcav3.OrcaLoadReport) float64 {
	best := 0.0
	take := func(x float64) {
		if x > best {
			best = x
		}
	}
	for _, n := range names {
		switch n {
		case "cpu_utilization":
			take(r.GetCpuUtilization())
			continue
		case "mem_utilization":
			take(r.GetMemUtilization())
			continue
		case "application_utilization":
			take(r.GetApplicationUtilization())
			continue
		case "eps":
			take(r.GetEps())
			continue
		case "rps_fractional":
			take(r.GetRpsFractional())
			continue
		}
		for prefix, m := range map[string]map[string]float64{"named_metrics.": r.GetNamedMetrics(), "utilization.": r.GetUtilization(), "request_cost.": r.GetRequestCost()} {
			key, ok := strings.CutPrefix(n, prefix)
			if !ok {
				continue
			}
			if key == "*" {
				for _, x := range m {
					take(x)
				}
			} else if x, ok := m[key]; ok {
				take(x)
			}
		}
	}
	return best
}
