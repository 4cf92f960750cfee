// Package status writes the controller's computed status back to
// Kubernetes: HTTPProxy currentStatus, description and Contour-style
// detailed conditions, ExtensionService Valid conditions, the load
// balancer address of served Ingresses and valid HTTPProxies, and the
// Gateway API's GatewayClass, Gateway (addresses, listeners), route
// parent and BackendTLSPolicy ancestor conditions. Only
// changed statuses are written.
package status

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"reflect"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// Writer updates status subresources.
type Writer struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	Log     *slog.Logger
	// Address is the load balancer address written to Ingress and HTTPProxy
	// status (an IP or a hostname), and to Gateways without an address of
	// their own; empty writes none.
	Address string
	// GatewayController is the controllerName of the GatewayClasses the
	// controller manages (default model.DefaultGatewayController): route
	// parent statuses of that controller are its own.
	GatewayController string
}

// ProxyStatus renders a computed status as Contour writes it, reusing
// the transition time of an unchanged Valid condition.
func ProxyStatus(st *model.ProxyStatus, old contourv1.HTTPProxyStatus, lb corev1.LoadBalancerStatus) contourv1.HTTPProxyStatus {
	cond := contourv1.DetailedCondition{Condition: metav1.Condition{
		Type: "Valid", Status: metav1.ConditionTrue, ObservedGeneration: st.Generation,
		Reason: "Valid", Message: "Valid HTTPProxy",
	}}
	if cur := st.Current(); cur != model.StatusValid {
		cond.Status = metav1.ConditionFalse
		cond.Reason, cond.Message = "ErrorPresent", "At least one error present, see Errors for details"
		if cur == model.StatusOrphaned {
			cond.Reason, cond.Message = "Orphaned", "this HTTPProxy is not part of a delegation chain from a root HTTPProxy"
		}
	}
	for _, e := range st.Errors {
		cond.Errors = append(cond.Errors, contourv1.SubCondition{Type: e.Type, Status: metav1.ConditionTrue, Reason: e.Reason, Message: e.Message})
	}
	for _, w := range st.Warnings {
		cond.Warnings = append(cond.Warnings, contourv1.SubCondition{Type: w.Type, Status: metav1.ConditionTrue, Reason: w.Reason, Message: w.Message})
	}
	cond.LastTransitionTime = metav1.Now()
	for _, oc := range old.Conditions {
		if oc.Type == "Valid" && oc.Status == cond.Status && oc.Reason == cond.Reason {
			cond.LastTransitionTime = oc.LastTransitionTime
		}
	}
	out := contourv1.HTTPProxyStatus{CurrentStatus: st.Current(), Description: st.Description(), Conditions: []contourv1.DetailedCondition{cond}}
	if st.Current() == model.StatusValid && st.FQDN != "" {
		out.LoadBalancer = lb
	}
	return out
}

func (w *Writer) loadBalancer() corev1.LoadBalancerStatus {
	if w.Address == "" {
		return corev1.LoadBalancerStatus{}
	}
	if net.ParseIP(w.Address) != nil {
		return corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: w.Address}}}
	}
	return corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{Hostname: w.Address}}}
}

// Write updates every status that differs from the cluster's. It returns
// the number of objects written and the first error (others are logged).
func (w *Writer) Write(ctx context.Context, m *model.Model, objs *source.Objects) (int, error) {
	n := 0
	var first error
	note := func(err error) {
		if err == nil {
			n++
			return
		}
		if first == nil {
			first = err
		}
		w.Log.Warn("status update failed; will retry on the next change", "error", err)
	}
	lb := w.loadBalancer()
	for key, st := range m.Proxies {
		p := objs.HTTPProxies[key]
		if p == nil {
			continue
		}
		want := ProxyStatus(st, p.Status, lb)
		if equalStatus(p.Status, want) {
			continue
		}
		cp := p.DeepCopy()
		cp.Status = want
		cp.APIVersion, cp.Kind = contourv1.GroupVersion.String(), "HTTPProxy"
		raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cp)
		if err != nil {
			note(err)
			continue
		}
		_, err = w.Dynamic.Resource(contourv1.HTTPProxyGVR).Namespace(p.Namespace).UpdateStatus(ctx, &unstructured.Unstructured{Object: raw}, metav1.UpdateOptions{})
		if err != nil {
			err = fmt.Errorf("status of HTTPProxy %s: %w", key, err)
		}
		note(err)
	}
	w.writeExtensionServices(ctx, m, objs, note)
	w.writeGateways(ctx, m, objs, note)
	for key, st := range m.Ingresses {
		ing := objs.Ingresses[key]
		if ing == nil || !st.Served || w.Address == "" {
			continue
		}
		want := networkingv1.IngressLoadBalancerStatus{}
		for _, i := range lb.Ingress {
			want.Ingress = append(want.Ingress, networkingv1.IngressLoadBalancerIngress{IP: i.IP, Hostname: i.Hostname})
		}
		if reflect.DeepEqual(ing.Status.LoadBalancer, want) {
			continue
		}
		cp := ing.DeepCopy()
		cp.Status.LoadBalancer = want
		_, err := w.Client.NetworkingV1().Ingresses(ing.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{})
		if err != nil {
			err = fmt.Errorf("status of Ingress %s: %w", key, err)
		}
		note(err)
	}
	return n, first
}

func equalStatus(a, b contourv1.HTTPProxyStatus) bool {
	return reflect.DeepEqual(normalize(a), normalize(b))
}

func normalize(s contourv1.HTTPProxyStatus) contourv1.HTTPProxyStatus {
	s = *s.DeepCopy()
	for i := range s.Conditions {
		s.Conditions[i].LastTransitionTime = metav1.Time{}
	}
	if len(s.LoadBalancer.Ingress) == 0 {
		s.LoadBalancer.Ingress = nil
	}
	return s
}
