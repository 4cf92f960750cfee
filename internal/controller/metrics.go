package controller

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
)

// BuildInfo labels contour_build_info.
type BuildInfo struct {
	// Branch and Revision (git SHA) the binary was built from, and its
	// Version; empty when unknown.
	Branch, Revision, Version string
}

// contourMetrics are the controller metrics Contour exports
// (internal/metrics/metrics.go of Contour 1.33), under Contour's names,
// types and labels, so that dashboards and alerts written for Contour
// work with Legate. They are computed from Legate's own build: the model
// is Contour's DAG, its xDS rendering Contour's xDS cache regeneration.
type contourMetrics struct {
	buildInfo *prometheus.GaugeVec

	total, root, orphaned *prometheus.GaugeVec // by namespace
	valid, invalid        *prometheus.GaugeVec // by namespace and vhost
	// last holds the label sets set by the previous build, so that a
	// namespace or vhost that went away is deleted (as Contour does).
	last map[*prometheus.GaugeVec]map[[2]string]bool

	rebuildTimestamp prometheus.Gauge
	rebuildTotal     prometheus.Counter
	rebuildSeconds   prometheus.Summary
	onUpdate         prometheus.Summary
	cacheObjects     *prometheus.GaugeVec
}

// contourObjectives are the quantiles of Contour's duration summaries.
var contourObjectives = map[float64]float64{0: 0.01, 0.25: 0.01, 0.5: 0.01, 0.75: 0.01, 0.9: 0.01, 0.95: 0.005, 0.99: 0.001, 1: 0.001}

func newContourMetrics(bi BuildInfo) *contourMetrics {
	g := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	m := &contourMetrics{
		buildInfo: g("contour_build_info", "Build information of the controller (Contour's metric): the branch and git SHA it was built from, and its version. Always 1.", "branch", "revision", "version"),
		total:     g("contour_httpproxy", "Total number of HTTPProxies that exist regardless of status.", "namespace"),
		root:      g("contour_httpproxy_root", "Total number of root HTTPProxies (with a virtual host).", "namespace"),
		orphaned:  g("contour_httpproxy_orphaned", "Total number of orphaned HTTPProxies which have no root delegating to them.", "namespace"),
		valid:     g("contour_httpproxy_valid", "Total number of valid HTTPProxies.", "namespace", "vhost"),
		invalid:   g("contour_httpproxy_invalid", "Total number of invalid HTTPProxies.", "namespace", "vhost"),
		last:      map[*prometheus.GaugeVec]map[[2]string]bool{},
		rebuildTimestamp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "contour_dagrebuild_timestamp",
			Help: "Timestamp of the last DAG rebuild (Legate: of the last full model build)."}),
		rebuildTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "contour_dagrebuild_total",
			Help: "Total number of times DAG has been rebuilt since startup (Legate: full model builds)."}),
		rebuildSeconds: prometheus.NewSummary(prometheus.SummaryOpts{Name: "contour_dagrebuild_seconds",
			Help: "Duration in seconds of DAG rebuilds (Legate: of model builds).", Objectives: contourObjectives}),
		onUpdate: prometheus.NewSummary(prometheus.SummaryOpts{Name: "contour_cachehandler_onupdate_duration_seconds",
			Help: "Histogram for the runtime of xDS cache regeneration (Legate: rendering the model as xDS resources and serving them).",
			// Contour's own objectives for this summary.
			Objectives: map[float64]float64{0.5: 0.05, 0.9: 0.01, 0.99: 0.001}}),
		cacheObjects: g("contour_dag_cache_object", "Total number of items that are currently in the DAG cache (Legate: the objects the model is built from), by kind.", "kind"),
	}
	m.buildInfo.WithLabelValues(bi.Branch, bi.Revision, bi.Version).Set(1)
	return m
}

func (m *contourMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.buildInfo, m.total, m.root, m.orphaned, m.valid, m.invalid,
		m.rebuildTimestamp, m.rebuildTotal, m.rebuildSeconds, m.onUpdate, m.cacheObjects}
}

// rebuilt records a full build that took took (model) and render (xDS).
func (m *contourMetrics) rebuilt(at time.Time, took, render time.Duration, objs *source.Objects) {
	m.rebuildTimestamp.Set(float64(at.Unix()))
	m.rebuildTotal.Inc()
	m.rebuildSeconds.Observe(took.Seconds())
	m.onUpdate.Observe(render.Seconds())
	// Contour's kinds (k8s.KindOf) of what its DAG cache holds: not
	// EndpointSlices (its endpoints translator reads them) nor Pods.
	for kind, n := range map[string]int{
		"Service": len(objs.Services), "Secret": len(objs.Secrets), "Ingress": len(objs.Ingresses),
		"HTTPProxy": len(objs.HTTPProxies), "TLSCertificateDelegation": len(objs.Delegations),
		"ExtensionService": len(objs.ExtensionServices), "Namespace": len(objs.Namespaces),
	} {
		m.cacheObjects.WithLabelValues(kind).Set(float64(n))
	}
}

// setProxies sets the HTTPProxy gauges from a model's statuses, as
// Contour's calculateRouteMetric does from its status cache: valid and
// invalid by namespace and vhost (the root's fqdn; empty for included
// proxies), orphaned and total by namespace, roots (proxies with an
// fqdn, valid or not) by namespace. Contour sets contour_httpproxy_root
// once per vhost with that vhost's count, so with several roots in a
// namespace it shows one of them (1) instead of their number; Legate
// exports the number, which is what its help text says. m nil (a
// replica that is not the leader: Contour sets them on the leader only,
// so that sums over replicas count each HTTPProxy once) deletes them.
func (c *contourMetrics) setProxies(m *model.Model) {
	counts := map[*prometheus.GaugeVec]map[[2]string]float64{c.total: {}, c.root: {}, c.orphaned: {}, c.valid: {}, c.invalid: {}}
	if m != nil {
		for _, st := range m.Proxies {
			ns := st.Object.Namespace
			counts[c.total][[2]string{ns}]++
			if st.FQDN != "" {
				counts[c.root][[2]string{ns}]++
			}
			switch st.Current() {
			case model.StatusValid:
				counts[c.valid][[2]string{ns, st.FQDN}]++
			case model.StatusOrphaned:
				counts[c.orphaned][[2]string{ns}]++
			default:
				counts[c.invalid][[2]string{ns, st.FQDN}]++
			}
		}
	}
	for vec, values := range counts {
		byNamespace := vec == c.total || vec == c.root || vec == c.orphaned
		labels := func(k [2]string) []string {
			if byNamespace {
				return k[:1]
			}
			return k[:]
		}
		for k := range c.last[vec] {
			if _, still := values[k]; !still {
				vec.DeleteLabelValues(labels(k)...)
			}
		}
		c.last[vec] = map[[2]string]bool{}
		for k, v := range values {
			vec.WithLabelValues(labels(k)...).Set(v)
			c.last[vec][k] = true
		}
	}
}
