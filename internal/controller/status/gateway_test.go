package status

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/legateproxy/legate/internal/controller/model"
)

// TestPolicyAncestors: a BackendTLSPolicy's ancestors of other
// controllers are kept, this controller's replaced (with the transition
// time of an unchanged condition) or removed when no route uses it.
func TestPolicyAncestors(t *testing.T) {
	const ours, theirs = "legateproxy.io/gateway-controller", "example.com/other"
	gw := func(name string) gatewayv1.ParentReference {
		return gatewayv1.ParentReference{Name: gatewayv1.ObjectName(name)}
	}
	then := metav1.Unix(1000, 0)
	accepted := metav1.Condition{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", ObservedGeneration: 2}
	old := []gatewayv1.PolicyAncestorStatus{
		{AncestorRef: gw("other"), ControllerName: theirs, Conditions: []metav1.Condition{accepted}},
		{AncestorRef: gw("a"), ControllerName: ours, Conditions: []metav1.Condition{func() metav1.Condition { c := accepted; c.LastTransitionTime = then; return c }()}},
		{AncestorRef: gw("gone"), ControllerName: ours, Conditions: []metav1.Condition{accepted}},
	}
	st := &model.BackendTLSPolicyStatus{Ancestors: []gatewayv1.ParentReference{gw("a"), gw("b")}, Conditions: []metav1.Condition{accepted}}
	got := PolicyAncestors(st, old, ours)
	var names []string
	for _, a := range got {
		names = append(names, string(a.ControllerName)+"/"+string(a.AncestorRef.Name))
	}
	if want := []string{theirs + "/other", ours + "/a", ours + "/b"}; len(names) != 3 || names[0] != want[0] || names[1] != want[1] || names[2] != want[2] {
		t.Fatalf("ancestors %v, want %v", names, want)
	}
	if !got[1].Conditions[0].LastTransitionTime.Equal(&then) {
		t.Errorf("unchanged condition's transition time %v, want %v", got[1].Conditions[0].LastTransitionTime, then)
	}
	if equalAncestors(old, got) {
		t.Error("changed ancestors compare equal")
	}
	if !equalAncestors(got, PolicyAncestors(st, got, ours)) {
		t.Error("the same status again differs: it would be rewritten on every build")
	}
	if rest := PolicyAncestors(nil, old, ours); len(rest) != 1 || rest[0].ControllerName != theirs {
		t.Errorf("unused policy: ancestors %+v, want only the other controller's", rest)
	}
}

// TestListenerSetStatus: a ListenerSet's conditions and listener
// statuses render with the transition time of unchanged conditions kept,
// and a Gateway's attachedListenerSets is written and compared.
func TestListenerSetStatus(t *testing.T) {
	then := metav1.Unix(1000, 0)
	accepted := metav1.Condition{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", ObservedGeneration: 2}
	st := &model.ListenerSetStatus{Generation: 2, Conditions: []metav1.Condition{accepted},
		Listeners: []model.ListenerStatus{{Name: "web", AttachedRoutes: 3, Conditions: []metav1.Condition{accepted}}}}
	old := gatewayv1.ListenerSetStatus{Conditions: []metav1.Condition{func() metav1.Condition { c := accepted; c.LastTransitionTime = then; return c }()}}
	got := ListenerSetStatus(st, old)
	if !got.Conditions[0].LastTransitionTime.Equal(&then) {
		t.Errorf("unchanged condition's transition time %v, want %v", got.Conditions[0].LastTransitionTime, then)
	}
	if len(got.Listeners) != 1 || got.Listeners[0].Name != "web" || got.Listeners[0].AttachedRoutes != 3 || got.Listeners[0].SupportedKinds == nil {
		t.Errorf("listeners %+v, want web with 3 routes and a (possibly empty) supportedKinds list", got.Listeners)
	}
	if equalListenerSetStatus(old, got) {
		t.Error("a status with new listeners compares equal to the old one")
	}
	if !equalListenerSetStatus(got, ListenerSetStatus(st, got)) {
		t.Error("the same status again differs: it would be rewritten on every build")
	}

	n := int32(2)
	gs := &model.GatewayStatus{Conditions: []metav1.Condition{accepted}, AttachedListenerSets: &n}
	gwOld := GatewayStatus(gs, gatewayv1.GatewayStatus{}, "192.0.2.1")
	if gwOld.AttachedListenerSets == nil || *gwOld.AttachedListenerSets != 2 {
		t.Fatalf("attachedListenerSets %v, want 2", gwOld.AttachedListenerSets)
	}
	n2 := int32(1)
	gs.AttachedListenerSets = &n2
	if equalGatewayStatus(gwOld, GatewayStatus(gs, gwOld, "192.0.2.1")) {
		t.Error("a changed attachedListenerSets compares equal: it would not be written")
	}
}
