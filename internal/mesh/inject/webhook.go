package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// patchFunc is Patch; tests replace it to check that a panic becomes an
// error answer.
var patchFunc = Patch

// Path is where the webhook is served (Istio's).
const Path = "/inject"

// maxBody bounds an AdmissionReview: the API server's own request limit
// is 3 MiB, and a pod is far smaller.
const maxBody = 6 << 20

// Metrics count what the webhook did (Istio's sidecar_injection_*
// counters, prefixed legate_).
type Metrics struct {
	Requests prometheus.Counter
	Success  prometheus.Counter
	Skip     *prometheus.CounterVec
	Failure  *prometheus.CounterVec
}

// NewMetrics makes the counters and registers them on reg (if set).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounter(prometheus.CounterOpts{Name: "legate_sidecar_injection_requests_total", Help: "Admission requests the sidecar injector received."}),
		Success:  prometheus.NewCounter(prometheus.CounterOpts{Name: "legate_sidecar_injection_success_total", Help: "Pods the sidecar injector injected."}),
		Skip: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "legate_sidecar_injection_skip_total", Help: "Pods the sidecar injector left alone, by reason."},
			[]string{"reason"}),
		Failure: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "legate_sidecar_injection_failure_total", Help: "Admission requests the sidecar injector refused or could not read, by reason."},
			[]string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.Requests, m.Success, m.Skip, m.Failure)
	}
	return m
}

// Handler is the mutating admission webhook: it answers AdmissionReview
// v1 requests for pods with the JSON patch Patch makes.
type Handler struct {
	Config Config
	// Log and Metrics default to slog.Default and unregistered counters.
	Log     *slog.Logger
	Metrics *Metrics
	init    sync.Once
}

// ServeHTTP answers one AdmissionReview.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.init.Do(func() {
		if h.Log == nil {
			h.Log = slog.Default()
		}
		if h.Metrics == nil {
			h.Metrics = NewMetrics(nil)
		}
	})
	h.Metrics.Requests.Inc()
	if r.Method != http.MethodPost {
		h.fail(w, http.StatusMethodNotAllowed, "bad_request", "use POST with an AdmissionReview")
		return
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		h.fail(w, http.StatusUnsupportedMediaType, "bad_request", fmt.Sprintf("content type %q: want application/json", r.Header.Get("Content-Type")))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		h.fail(w, http.StatusBadRequest, "bad_request", "read request: "+err.Error())
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		h.fail(w, http.StatusBadRequest, "bad_request", "not an AdmissionReview: "+err.Error())
		return
	}
	if review.Request == nil {
		h.fail(w, http.StatusBadRequest, "bad_request", "AdmissionReview has no request")
		return
	}
	resp := h.review(review.Request)
	resp.UID = review.Request.UID
	out := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Response: resp,
	}
	data, err := json.Marshal(out)
	if err != nil {
		h.fail(w, http.StatusInternalServerError, "internal", "encode response: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(data)
}

// review decides one request; it never panics (a panic in Patch is an
// error answer, so a bug cannot take the webhook — and with
// failurePolicy Fail, pod creation — down).
func (h *Handler) review(req *admissionv1.AdmissionRequest) (resp *admissionv1.AdmissionResponse) {
	defer func() {
		if p := recover(); p != nil {
			h.Log.Error("sidecar injector panicked", "namespace", req.Namespace, "name", req.Name, "panic", p)
			h.Metrics.Failure.WithLabelValues("internal").Inc()
			resp = denied(fmt.Sprintf("legate sidecar injector: internal error: %v", p))
		}
	}()
	if req.Resource.Group != "" || req.Resource.Resource != "pods" || req.SubResource != "" {
		// Only pods are configured; anything else passes unchanged.
		h.Metrics.Skip.WithLabelValues("not_pod").Inc()
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		h.Log.Warn("sidecar injector: unreadable pod", "namespace", req.Namespace, "error", err)
		h.Metrics.Failure.WithLabelValues("bad_request").Inc()
		return denied("legate sidecar injector: cannot read the pod: " + err.Error())
	}
	// A pod being created has no namespace in its body yet.
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	ops, skip, err := patchFunc(&pod, h.Config)
	if err != nil {
		reason := "internal"
		var inv *InvalidError
		if errors.As(err, &inv) {
			reason = "invalid_pod"
		}
		h.Log.Warn("sidecar injection refused", "namespace", pod.Namespace, "pod", name, "error", err)
		h.Metrics.Failure.WithLabelValues(reason).Inc()
		return denied("legate sidecar injector: " + err.Error())
	}
	if skip != nil {
		h.Log.Debug("sidecar not injected", "namespace", pod.Namespace, "pod", name, "reason", skip.Message)
		h.Metrics.Skip.WithLabelValues(skip.Reason).Inc()
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		h.Metrics.Failure.WithLabelValues("internal").Inc()
		return denied("legate sidecar injector: encode patch: " + err.Error())
	}
	h.Log.Info("sidecar injected", "namespace", pod.Namespace, "pod", name)
	h.Metrics.Success.Inc()
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: patch, PatchType: &pt}
}

func denied(msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Message: msg, Reason: metav1.StatusReasonBadRequest, Code: http.StatusBadRequest,
	}}
}

// fail answers a request that is not a readable AdmissionReview.
func (h *Handler) fail(w http.ResponseWriter, code int, reason, msg string) {
	h.Log.Warn("sidecar injector: bad request", "error", msg)
	h.Metrics.Failure.WithLabelValues(reason).Inc()
	http.Error(w, "legate sidecar injector: "+msg, code)
}
