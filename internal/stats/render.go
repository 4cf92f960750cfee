package stats

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Filter selects metrics for rendering, as the admin /stats query does.
type Filter struct {
	Regex    *regexp.Regexp // filter=
	UsedOnly bool           // usedonly
	Type     string         // type=Counters|Gauges|Histograms|All ("" is All)
}

func (f Filter) keep(name string, used bool, typ string) bool {
	if f.Regex != nil && !f.Regex.MatchString(name) {
		return false
	}
	if f.UsedOnly && !used {
		return false
	}
	return f.Type == "" || strings.EqualFold(f.Type, "All") || strings.EqualFold(f.Type, typ)
}

var quantiles = []float64{0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1}

// WriteText renders "name: value" lines, counters and gauges sorted by name
// then histograms with quantile summaries, as Envoy's /stats.
func (s *Store) WriteText(w io.Writer, f Filter) error {
	snap := s.Snapshot()
	type line struct{ name, val string }
	var lines []line
	for _, c := range snap.Counters {
		if f.keep(c.name, c.Value() > 0, "Counters") {
			lines = append(lines, line{c.name, strconv.FormatUint(c.Value(), 10)})
		}
	}
	for _, g := range snap.Gauges {
		if f.keep(g.name, g.Value() != 0, "Gauges") {
			lines = append(lines, line{g.name, strconv.FormatInt(g.Value(), 10)})
		}
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].name < lines[j].name })
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l.name)
		b.WriteString(": ")
		b.WriteString(l.val)
		b.WriteByte('\n')
	}
	for _, h := range snap.Histograms {
		if !f.keep(h.name, h.Count() > 0, "Histograms") {
			continue
		}
		b.WriteString(h.name)
		b.WriteString(":")
		if h.Count() == 0 {
			b.WriteString(" No recorded values\n")
			continue
		}
		for _, q := range quantiles {
			fmt.Fprintf(&b, " P%s(nan,%s)", strconv.FormatFloat(q*100, 'f', -1, 64), fmtFloat(h.Quantile(q)))
		}
		b.WriteByte('\n')
	}
	_, err := w.Write(b.Bytes())
	return err
}

func fmtFloat(v float64) string {
	if math.IsNaN(v) {
		return "nan"
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

// WriteJSON renders the metrics as Envoy's /stats?format=json.
func (s *Store) WriteJSON(w io.Writer, f Filter) error {
	snap := s.Snapshot()
	type stat struct {
		Name  string `json:"name"`
		Value any    `json:"value"`
	}
	var out []any
	for _, c := range snap.Counters {
		if f.keep(c.name, c.Value() > 0, "Counters") {
			out = append(out, stat{c.name, c.Value()})
		}
	}
	for _, g := range snap.Gauges {
		if f.keep(g.name, g.Value() != 0, "Gauges") {
			out = append(out, stat{g.name, g.Value()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].(stat).Name < out[j].(stat).Name })
	type qv struct {
		Interval   *float64 `json:"interval"`
		Cumulative *float64 `json:"cumulative"`
	}
	type computed struct {
		Name   string `json:"name"`
		Values []qv   `json:"values"`
	}
	var cq []computed
	for _, h := range snap.Histograms {
		if !f.keep(h.name, h.Count() > 0, "Histograms") {
			continue
		}
		c := computed{Name: h.name}
		for _, q := range quantiles {
			v := h.Quantile(q)
			var p *float64
			if !math.IsNaN(v) {
				p = &v
			}
			c.Values = append(c.Values, qv{Cumulative: p})
		}
		cq = append(cq, c)
	}
	if len(cq) > 0 {
		sq := make([]float64, len(quantiles))
		for i, q := range quantiles {
			sq[i] = q * 100
		}
		out = append(out, map[string]any{"histograms": map[string]any{"supported_quantiles": sq, "computed_quantiles": cq}})
	}
	if out == nil {
		out = []any{}
	}
	return json.NewEncoder(w).Encode(map[string]any{"stats": out})
}

// tagRule is one of Envoy's default tag extractors: when re matches a stat
// name, submatch 2 is the tag's value and submatch 1 is cut from the name.
type tagRule struct {
	tag    string
	re     *regexp.Regexp
	substr string // a cheap pre-check, as in Envoy
}

// defaultTagRules are Envoy's default tag extraction regexes
// (source/common/config/well_known_names.cc), in Envoy's order, rewritten
// for RE2 (Envoy's "x(?=\.).*?\." becomes "x\.(?:.*?\.)?").
var defaultTagRules = []tagRule{
	{"envoy.response_code", regexp.MustCompile(`_rq(_(\d{3}))$`), "_rq_"},
	{"envoy.response_code_class", regexp.MustCompile(`_rq_(\d)xx$`), "_rq_"},
	{"envoy.http_user_agent", regexp.MustCompile(`^http\.(?:.*?\.)?user_agent\.((.*?)\.)\w+?$`), ".user_agent."},
	{"envoy.virtual_cluster", regexp.MustCompile(`^vhost\.(?:.*?\.)?vcluster\.((.*?)\.)\w+?$`), ".vcluster."},
	{"envoy.fault_downstream_cluster", regexp.MustCompile(`^http\.(?:.*?\.)?fault\.((.*?)\.)\w+?$`), ".fault."},
	{"envoy.ssl_cipher", regexp.MustCompile(`^listener\.(?:.*?\.)?ssl\.cipher(\.(.*?))$`), ".ssl.cipher."},
	{"envoy.ssl_cipher_suite", regexp.MustCompile(`^cluster\.(?:.*?\.)?ssl\.ciphers(\.(.*?))$`), ".ssl.ciphers."},
	{"envoy.grpc_bridge_service", regexp.MustCompile(`^cluster\.(?:.*?\.)?grpc\.((.*?)\.)`), ".grpc."},
	{"envoy.tcp_prefix", regexp.MustCompile(`^tcp\.((.*?)\.)\w+?$`), "tcp."},
	{"envoy.udp_prefix", regexp.MustCompile(`^udp\.((.*?)\.)\w+?$`), "udp."},
	{"envoy.ratelimit_prefix", regexp.MustCompile(`^ratelimit\.((.*?)\.)\w+?$`), "ratelimit."},
	{"envoy.cluster_name", regexp.MustCompile(`^cluster\.(([^\.]+)\.).*`), "cluster."},
	{"envoy.http_conn_manager_prefix", regexp.MustCompile(`^listener\.(?:.*?\.)?http\.((.*?)\.)`), ".http."},
	{"envoy.http_conn_manager_prefix", regexp.MustCompile(`^http\.((.*?)\.)`), "http."},
	{"envoy.listener_address", regexp.MustCompile(`^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)`), "listener."},
	{"envoy.virtual_host", regexp.MustCompile(`^vhost\.((.*?)\.)`), "vhost."},
	{"envoy.rds_route_config", regexp.MustCompile(`^http\.(?:.*?\.)?rds\.((.*?)\.)\w+?$`), ".rds."},
	{"envoy.worker_id", regexp.MustCompile(`^listener_manager\.((worker_\d+)\.)`), "listener_manager.worker_"},
}

// Tag is an extracted name/value pair.
type Tag struct{ Name, Value string }

// ExtractTags applies Envoy's default tag extraction to a stat name and
// returns the tag-stripped name and the tags.
func ExtractTags(name string) (string, []Tag) {
	var tags []Tag
	for _, r := range defaultTagRules {
		if !strings.Contains(name, r.substr) {
			continue
		}
		m := r.re.FindStringSubmatchIndex(name)
		if m == nil || m[2] < 0 {
			continue
		}
		// With two groups the second is the value and the first is cut;
		// with one, that group is both (so upstream_rq_2xx → upstream_rq_xx).
		vs, ve := m[2], m[3]
		if len(m) >= 6 && m[4] >= 0 {
			vs, ve = m[4], m[5]
		}
		tags = append(tags, Tag{Name: r.tag, Value: name[vs:ve]})
		name = name[:m[2]] + name[m[3]:]
	}
	return name, tags
}

var promInvalid = regexp.MustCompile(`[^a-zA-Z0-9_]`)

func promName(s string) string { return "envoy_" + promInvalid.ReplaceAllString(s, "_") }

func promLabels(tags []Tag, extra string) string {
	if len(tags) == 0 && extra == "" {
		return ""
	}
	parts := make([]string, 0, len(tags)+1)
	for _, t := range tags {
		parts = append(parts, promInvalid.ReplaceAllString(t.Name, "_")+"=\""+escapeLabel(t.Value)+"\"")
	}
	if extra != "" {
		parts = append(parts, extra)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func escapeLabel(v string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(v)
}

// WritePrometheus renders the metrics in the Prometheus text format with
// Envoy's metric names and labels (envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="web"}).
func (s *Store) WritePrometheus(w io.Writer, f Filter) error {
	snap := s.Snapshot()
	type series struct{ labels, value string }
	type family struct {
		typ    string
		series []series
	}
	fams := map[string]*family{}
	add := func(name, typ, labels, value string) {
		fm := fams[name]
		if fm == nil {
			fm = &family{typ: typ}
			fams[name] = fm
		}
		fm.series = append(fm.series, series{labels, value})
	}
	for _, c := range snap.Counters {
		if f.keep(c.name, c.Value() > 0, "Counters") {
			n, tags := s.ExtractTags(c.name)
			add(promName(n), "counter", promLabels(tags, ""), strconv.FormatUint(c.Value(), 10))
		}
	}
	for _, g := range snap.Gauges {
		if f.keep(g.name, g.Value() != 0, "Gauges") {
			n, tags := s.ExtractTags(g.name)
			add(promName(n), "gauge", promLabels(tags, ""), strconv.FormatInt(g.Value(), 10))
		}
	}
	var b bytes.Buffer
	for _, h := range snap.Histograms {
		if !f.keep(h.name, h.Count() > 0, "Histograms") {
			continue
		}
		n, tags := s.ExtractTags(h.name)
		pn := promName(n)
		fm := fams[pn]
		if fm == nil {
			fm = &family{typ: "histogram"}
			fams[pn] = fm
		}
		cum := h.Cumulative()
		for i, le := range h.Buckets() {
			fm.series = append(fm.series, series{"_bucket" + promLabels(tags, `le="`+strconv.FormatFloat(le, 'f', -1, 64)+`"`), strconv.FormatUint(cum[i], 10)})
		}
		fm.series = append(fm.series,
			series{"_bucket" + promLabels(tags, `le="+Inf"`), strconv.FormatUint(h.Count(), 10)},
			series{"_sum" + promLabels(tags, ""), strconv.FormatFloat(h.Sum(), 'g', -1, 64)},
			series{"_count" + promLabels(tags, ""), strconv.FormatUint(h.Count(), 10)})
	}
	names := make([]string, 0, len(fams))
	for n := range fams {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fm := fams[n]
		fmt.Fprintf(&b, "# TYPE %s %s\n", n, fm.typ)
		for _, s := range fm.series {
			b.WriteString(n + s.labels + " " + s.value + "\n") // histogram labels carry their _bucket/_sum/_count suffix
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}
