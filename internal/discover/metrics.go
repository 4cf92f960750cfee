package discover

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the discoverer's Prometheus metrics: Gimbal's Kubernetes
// discoverer metrics under Gimbal's names, types and labels (its
// docs/monitoring.md), so that its dashboards and alerts (replicated /
// upstream services and endpoints) work unchanged, and one of Legate's
// own, the time of the last successful sync. The backendtype label is
// always "kubernetes".
type Metrics struct {
	backend string

	serviceEvent, endpointsEvent       *prometheus.GaugeVec   // namespace, backendname, name, backendtype
	serviceErrors, endpointsErrors     *prometheus.CounterVec // namespace, backendname, name, errortype, backendtype
	queueSize                          *prometheus.GaugeVec   // backendname, backendtype
	errors                             *prometheus.CounterVec // backendname, errortype, backendtype
	upstreamServices, replicatedSvcs   *prometheus.GaugeVec   // backendname, namespace, backendtype
	invalidServices                    *prometheus.GaugeVec   // backendname, namespace, backendtype
	upstreamEndpoints, replicatedEndps *prometheus.GaugeVec   // backendname, namespace, servicename, backendtype
	info                               *prometheus.GaugeVec   // backendname, version, backendtype
	lastSync                           *prometheus.GaugeVec   // backendname
}

// NewMetrics registers the metrics of the discoverer of backend on reg
// and sets gimbal_discoverer_info for version.
func NewMetrics(reg prometheus.Registerer, backend, version string) *Metrics {
	g := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	c := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	m := &Metrics{
		backend:           backend,
		serviceEvent:      g("gimbal_service_event_timestamp", "Timestamp last service event was processed", "namespace", "backendname", "name", "backendtype"),
		endpointsEvent:    g("gimbal_endpoints_event_timestamp", "Timestamp last endpoints event was processed", "namespace", "backendname", "name", "backendtype"),
		serviceErrors:     c("gimbal_service_error_total", "Number of service errors encountered", "namespace", "backendname", "name", "errortype", "backendtype"),
		endpointsErrors:   c("gimbal_endpoints_error_total", "Number of endpoints errors encountered", "namespace", "backendname", "name", "errortype", "backendtype"),
		queueSize:         g("gimbal_queuesize", "Number of items in process queue", "backendname", "backendtype"),
		errors:            c("gimbal_discoverer_error_total", "Number of errors that have occurred in the Discoverer", "backendname", "errortype", "backendtype"),
		upstreamServices:  g("gimbal_discoverer_upstream_services_total", "Total number of services in the backend (the ignored ones, such as default/kubernetes, not counted)", "backendname", "namespace", "backendtype"),
		replicatedSvcs:    g("gimbal_discoverer_replicated_services_total", "Total number of services replicated from the backend", "backendname", "namespace", "backendtype"),
		invalidServices:   g("gimbal_discoverer_invalid_services_total", "Total number of invalid services that could not be replicated from the backend", "backendname", "namespace", "backendtype"),
		upstreamEndpoints: g("gimbal_discoverer_upstream_endpoints_total", "Total number of endpoints in the backend", "backendname", "namespace", "servicename", "backendtype"),
		replicatedEndps:   g("gimbal_discoverer_replicated_endpoints_total", "Total number of endpoints replicated the backend", "backendname", "namespace", "servicename", "backendtype"),
		info:              g("gimbal_discoverer_info", "Information about discoverer", "backendname", "version", "backendtype"),
		lastSync: g("legate_discover_last_sync_timestamp_seconds",
			"Unix time of the last successful sync of a remote Service (its mirrored Service, EndpointSlices and Endpoints) into the local cluster", "backendname"),
	}
	reg.MustRegister(m.serviceEvent, m.endpointsEvent, m.serviceErrors, m.endpointsErrors, m.queueSize, m.errors,
		m.upstreamServices, m.replicatedSvcs, m.invalidServices, m.upstreamEndpoints, m.replicatedEndps, m.info, m.lastSync)
	m.info.WithLabelValues(backend, version, BackendType).Set(1)
	m.queueSize.WithLabelValues(backend, BackendType).Set(0)
	return m
}

// Error types of gimbal_service_error_total and gimbal_endpoints_error_total
// (Gimbal's were the actions add, update and delete; conflict and
// namespace are Legate's).
const (
	errAdd    = "add"
	errUpdate = "update"
	errDelete = "delete"
	// errConflict: an object of the mirror's name exists locally and is
	// not this backend's; it is left alone.
	errConflict = "conflict"
	// errNamespace: the namespace does not exist in the local cluster.
	errNamespace = "namespace"
)

// Error types of gimbal_discoverer_error_total.
const (
	errSync = "sync" // a sync of a service failed; it is retried with a backoff
)

func (m *Metrics) synced(now time.Time) {
	m.lastSync.WithLabelValues(m.backend).Set(float64(now.Unix()))
}

func (m *Metrics) queue(n int) { m.queueSize.WithLabelValues(m.backend, BackendType).Set(float64(n)) }

func (m *Metrics) serviceError(ns, name, kind string) {
	m.serviceErrors.WithLabelValues(ns, m.backend, name, kind, BackendType).Inc()
}

func (m *Metrics) endpointsError(ns, name, kind string) {
	m.endpointsErrors.WithLabelValues(ns, m.backend, name, kind, BackendType).Inc()
}

func (m *Metrics) discovererError(kind string) {
	m.errors.WithLabelValues(m.backend, kind, BackendType).Inc()
}

// service records a processed event of the Service mirrored as name
// (remote: the remote Service's name) with its endpoint counts.
func (m *Metrics) service(ns, name, remote string, upstream, replicated int, now time.Time) {
	ts := float64(now.Unix())
	m.serviceEvent.WithLabelValues(ns, m.backend, name, BackendType).Set(ts)
	m.endpointsEvent.WithLabelValues(ns, m.backend, name, BackendType).Set(ts)
	m.upstreamEndpoints.WithLabelValues(m.backend, ns, remote, BackendType).Set(float64(upstream))
	m.replicatedEndps.WithLabelValues(m.backend, ns, remote, BackendType).Set(float64(replicated))
}

// forget deletes the per-service series of a Service no longer mirrored.
func (m *Metrics) forget(ns, name, remote string) {
	m.serviceEvent.DeleteLabelValues(ns, m.backend, name, BackendType)
	m.endpointsEvent.DeleteLabelValues(ns, m.backend, name, BackendType)
	m.upstreamEndpoints.DeleteLabelValues(m.backend, ns, remote, BackendType)
	m.replicatedEndps.DeleteLabelValues(m.backend, ns, remote, BackendType)
}

// namespace sets the per-namespace service counts.
func (m *Metrics) namespace(ns string, upstream, replicated, invalid int) {
	m.upstreamServices.WithLabelValues(m.backend, ns, BackendType).Set(float64(upstream))
	m.replicatedSvcs.WithLabelValues(m.backend, ns, BackendType).Set(float64(replicated))
	m.invalidServices.WithLabelValues(m.backend, ns, BackendType).Set(float64(invalid))
}
