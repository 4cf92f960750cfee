package status

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"strings"

	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// mergeConditions returns want with each condition's LastTransitionTime
// kept from old when its status did not change (metav1.Condition
// semantics), now otherwise.
func mergeConditions(old, want []metav1.Condition) []metav1.Condition {
	now := metav1.Now()
	out := make([]metav1.Condition, len(want))
	for i, c := range want {
		c.LastTransitionTime = now
		for _, o := range old {
			if o.Type == c.Type && o.Status == c.Status {
				c.LastTransitionTime = o.LastTransitionTime
			}
		}
		out[i] = c
	}
	return out
}

func sameConditions(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		x.LastTransitionTime, y.LastTransitionTime = metav1.Time{}, metav1.Time{}
		if x != y {
			return false
		}
	}
	return true
}

// GatewayClassStatus renders a computed GatewayClass status.
func GatewayClassStatus(st *model.GatewayClassStatus, old gatewayv1.GatewayClassStatus) gatewayv1.GatewayClassStatus {
	out := gatewayv1.GatewayClassStatus{Conditions: mergeConditions(old.Conditions, st.Conditions)}
	for _, f := range st.SupportedFeatures {
		out.SupportedFeatures = append(out.SupportedFeatures, gatewayv1.SupportedFeature{Name: gatewayv1.FeatureName(f)})
	}
	return out
}

// GatewayStatus renders a computed Gateway status; addr is the proxy's
// address written when the Gateway has no address of its own.
func GatewayStatus(st *model.GatewayStatus, old gatewayv1.GatewayStatus, addr string) gatewayv1.GatewayStatus {
	out := gatewayv1.GatewayStatus{Conditions: mergeConditions(old.Conditions, st.Conditions)}
	addrs := st.Addresses
	if len(addrs) == 0 && addr != "" {
		addrs = []string{addr}
	}
	for _, a := range addrs {
		t := gatewayv1.IPAddressType
		if net.ParseIP(a) == nil {
			t = gatewayv1.HostnameAddressType
		}
		out.Addresses = append(out.Addresses, gatewayv1.GatewayStatusAddress{Type: &t, Value: a})
	}
	for _, l := range st.Listeners {
		var oldConds []metav1.Condition
		for _, ol := range old.Listeners {
			if string(ol.Name) == l.Name {
				oldConds = ol.Conditions
			}
		}
		kinds, conds := listenerStatus(l, oldConds)
		out.Listeners = append(out.Listeners, gatewayv1.ListenerStatus{
			Name: gatewayv1.SectionName(l.Name), SupportedKinds: kinds, AttachedRoutes: l.AttachedRoutes, Conditions: conds})
	}
	if st.AttachedListenerSets != nil {
		n := *st.AttachedListenerSets
		out.AttachedListenerSets = &n
	}
	return out
}

// listenerStatus is what a Gateway's and a ListenerSet's listener
// statuses share: the supported kinds (an empty list, not null, which the
// CRD requires) and the conditions, keeping the transition times of the
// old ones that did not change.
func listenerStatus(l model.ListenerStatus, old []metav1.Condition) ([]gatewayv1.RouteGroupKind, []metav1.Condition) {
	kinds := l.SupportedKinds
	if kinds == nil {
		kinds = []gatewayv1.RouteGroupKind{}
	}
	return kinds, mergeConditions(old, l.Conditions)
}

// ListenerSetStatus renders a computed ListenerSet status.
func ListenerSetStatus(st *model.ListenerSetStatus, old gatewayv1.ListenerSetStatus) gatewayv1.ListenerSetStatus {
	out := gatewayv1.ListenerSetStatus{Conditions: mergeConditions(old.Conditions, st.Conditions)}
	for _, l := range st.Listeners {
		var oldConds []metav1.Condition
		for _, ol := range old.Listeners {
			if string(ol.Name) == l.Name {
				oldConds = ol.Conditions
			}
		}
		kinds, conds := listenerStatus(l, oldConds)
		out.Listeners = append(out.Listeners, gatewayv1.ListenerEntryStatus{
			Name: gatewayv1.SectionName(l.Name), SupportedKinds: kinds, AttachedRoutes: l.AttachedRoutes, Conditions: conds})
	}
	return out
}

func equalListenerSetStatus(a, b gatewayv1.ListenerSetStatus) bool {
	if !sameConditions(a.Conditions, b.Conditions) || len(a.Listeners) != len(b.Listeners) {
		return false
	}
	for i := range a.Listeners {
		x, y := a.Listeners[i], b.Listeners[i]
		if x.Name != y.Name || x.AttachedRoutes != y.AttachedRoutes || !reflect.DeepEqual(x.SupportedKinds, y.SupportedKinds) || !sameConditions(x.Conditions, y.Conditions) {
			return false
		}
	}
	return true
}

// RouteParents renders a route's parent statuses: those of other
// controllers kept, this controller's replaced by the computed ones.
func RouteParents(st *model.RouteStatus, old []gatewayv1.RouteParentStatus, controller string) []gatewayv1.RouteParentStatus {
	var out []gatewayv1.RouteParentStatus
	for _, p := range old {
		if string(p.ControllerName) != controller {
			out = append(out, p)
		}
	}
	for _, p := range st.Parents {
		var oldConds []metav1.Condition
		for _, o := range old {
			if string(o.ControllerName) == controller && reflect.DeepEqual(o.ParentRef, p.ParentRef) {
				oldConds = o.Conditions
			}
		}
		out = append(out, gatewayv1.RouteParentStatus{ParentRef: p.ParentRef, ControllerName: gatewayv1.GatewayController(controller),
			Conditions: mergeConditions(oldConds, p.Conditions)})
	}
	return out
}

func (w *Writer) updateStatus(ctx context.Context, gvr schema.GroupVersionResource, kind string, obj runtime.Object, ns string) error {
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: raw}
	u.SetAPIVersion(gatewayv1.SchemeGroupVersion.String())
	u.SetKind(kind)
	r := w.Dynamic.Resource(gvr)
	if ns != "" {
		_, err = r.Namespace(ns).UpdateStatus(ctx, u, metav1.UpdateOptions{})
	} else {
		_, err = r.UpdateStatus(ctx, u, metav1.UpdateOptions{})
	}
	return err
}

// writeGateways writes the status of managed GatewayClasses, Gateways,
// ListenerSets, HTTPRoutes, GRPCRoutes, TLSRoutes, TCPRoutes and BackendTLSPolicies that
// differs from the cluster's.
func (w *Writer) writeGateways(ctx context.Context, m *model.Model, objs *source.Objects, note func(error)) {
	gv := gatewayv1.SchemeGroupVersion
	for name, st := range m.GatewayClasses {
		gc := objs.GatewayClasses[types.NamespacedName{Name: name}]
		if gc == nil {
			continue
		}
		want := GatewayClassStatus(st, gc.Status)
		if sameConditions(gc.Status.Conditions, want.Conditions) && reflect.DeepEqual(gc.Status.SupportedFeatures, want.SupportedFeatures) {
			continue
		}
		cp := gc.DeepCopy()
		cp.Status = want
		if err := w.updateStatus(ctx, gv.WithResource("gatewayclasses"), "GatewayClass", cp, ""); err != nil {
			note(fmt.Errorf("status of GatewayClass %s: %w", name, err))
			continue
		}
		note(nil)
	}
	for key, st := range m.Gateways {
		gw := objs.Gateways[key]
		if gw == nil {
			continue
		}
		want := GatewayStatus(st, gw.Status, w.Address)
		if equalGatewayStatus(gw.Status, want) {
			continue
		}
		cp := gw.DeepCopy()
		cp.Status = want
		if err := w.updateStatus(ctx, gv.WithResource("gateways"), "Gateway", cp, gw.Namespace); err != nil {
			note(fmt.Errorf("status of Gateway %s: %w", key, err))
			continue
		}
		note(nil)
	}
	for key, st := range m.ListenerSets {
		ls := objs.ListenerSets[key]
		if ls == nil {
			continue
		}
		want := ListenerSetStatus(st, ls.Status)
		if equalListenerSetStatus(ls.Status, want) {
			continue
		}
		cp := ls.DeepCopy()
		cp.Status = want
		if err := w.updateStatus(ctx, gv.WithResource("listenersets"), "ListenerSet", cp, ls.Namespace); err != nil {
			note(fmt.Errorf("status of ListenerSet %s: %w", key, err))
			continue
		}
		note(nil)
	}
	for key, st := range m.Routes {
		var obj interface {
			runtime.Object
			GetNamespace() string
		}
		var parents *[]gatewayv1.RouteParentStatus
		switch key.Kind {
		case "HTTPRoute":
			hr := objs.HTTPRoutes[key.NamespacedName]
			if hr == nil {
				continue
			}
			cp := hr.DeepCopy()
			obj, parents = cp, &cp.Status.Parents
		case "GRPCRoute":
			gr := objs.GRPCRoutes[key.NamespacedName]
			if gr == nil {
				continue
			}
			cp := gr.DeepCopy()
			obj, parents = cp, &cp.Status.Parents
		case "TLSRoute":
			tr := objs.TLSRoutes[key.NamespacedName]
			if tr == nil {
				continue
			}
			cp := tr.DeepCopy()
			obj, parents = cp, &cp.Status.Parents
		case "TCPRoute":
			tr := objs.TCPRoutes[key.NamespacedName]
			if tr == nil {
				continue
			}
			cp := tr.DeepCopy()
			obj, parents = cp, &cp.Status.Parents
		default:
			continue
		}
		want := RouteParents(st, *parents, w.gatewayController())
		if equalParents(*parents, want) {
			continue
		}
		*parents = want
		if err := w.updateStatus(ctx, gv.WithResource(strings.ToLower(key.Kind)+"s"), key.Kind, obj, obj.GetNamespace()); err != nil {
			note(fmt.Errorf("status of %s %s: %w", key.Kind, key.NamespacedName, err))
			continue
		}
		note(nil)
	}
	w.writeBackendTLSPolicies(ctx, m, objs, note)
}

// PolicyAncestors renders a BackendTLSPolicy's ancestor statuses: those
// of other controllers kept, this controller's replaced by the computed
// ones (none when st is nil: no route of a managed Gateway uses it).
func PolicyAncestors(st *model.BackendTLSPolicyStatus, old []gatewayv1.PolicyAncestorStatus, controller string) []gatewayv1.PolicyAncestorStatus {
	out := []gatewayv1.PolicyAncestorStatus{}
	for _, a := range old {
		if string(a.ControllerName) != controller {
			out = append(out, a)
		}
	}
	if st == nil {
		return out
	}
	for _, ref := range st.Ancestors {
		if len(out) == 16 { // the CRD's limit
			break
		}
		var oldConds []metav1.Condition
		for _, o := range old {
			if string(o.ControllerName) == controller && reflect.DeepEqual(o.AncestorRef, ref) {
				oldConds = o.Conditions
			}
		}
		out = append(out, gatewayv1.PolicyAncestorStatus{AncestorRef: ref, ControllerName: gatewayv1.GatewayController(controller),
			Conditions: mergeConditions(oldConds, st.Conditions)})
	}
	return out
}

// writeBackendTLSPolicies writes the ancestor statuses of the
// BackendTLSPolicies that differ from the cluster's, removing this
// controller's from policies no managed route uses any more.
func (w *Writer) writeBackendTLSPolicies(ctx context.Context, m *model.Model, objs *source.Objects, note func(error)) {
	ctrl := w.gatewayController()
	for key, p := range objs.BackendTLSPolicies {
		want := PolicyAncestors(m.BackendTLSPolicies[key], p.Status.Ancestors, ctrl)
		if equalAncestors(p.Status.Ancestors, want) {
			continue
		}
		cp := p.DeepCopy()
		cp.Status.Ancestors = want
		if err := w.updateStatus(ctx, gatewayv1.SchemeGroupVersion.WithResource("backendtlspolicies"), "BackendTLSPolicy", cp, p.Namespace); err != nil {
			note(fmt.Errorf("status of BackendTLSPolicy %s: %w", key, err))
			continue
		}
		note(nil)
	}
}

func equalAncestors(a, b []gatewayv1.PolicyAncestorStatus) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !reflect.DeepEqual(a[i].AncestorRef, b[i].AncestorRef) || a[i].ControllerName != b[i].ControllerName || !sameConditions(a[i].Conditions, b[i].Conditions) {
			return false
		}
	}
	return true
}

func (w *Writer) gatewayController() string {
	if w.GatewayController == "" {
		return model.DefaultGatewayController
	}
	return w.GatewayController
}

func equalGatewayStatus(a, b gatewayv1.GatewayStatus) bool {
	if !sameConditions(a.Conditions, b.Conditions) || !reflect.DeepEqual(a.Addresses, b.Addresses) || len(a.Listeners) != len(b.Listeners) ||
		!reflect.DeepEqual(a.AttachedListenerSets, b.AttachedListenerSets) {
		return false
	}
	for i := range a.Listeners {
		x, y := a.Listeners[i], b.Listeners[i]
		if x.Name != y.Name || x.AttachedRoutes != y.AttachedRoutes || !reflect.DeepEqual(x.SupportedKinds, y.SupportedKinds) || !sameConditions(x.Conditions, y.Conditions) {
			return false
		}
	}
	return true
}

func equalParents(a, b []gatewayv1.RouteParentStatus) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !reflect.DeepEqual(a[i].ParentRef, b[i].ParentRef) || a[i].ControllerName != b[i].ControllerName || !sameConditions(a[i].Conditions, b[i].Conditions) {
			return false
		}
	}
	return true
}
