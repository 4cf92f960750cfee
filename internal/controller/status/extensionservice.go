package status

import (
	"context"
	"fmt"
	"reflect"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	contourv1alpha1 "github.com/legateproxy/legate/api/projectcontour/v1alpha1"
	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// ExtensionServiceStatus renders a computed ExtensionService status as
// Contour writes it: one Valid condition ("Valid ExtensionService", or
// ErrorPresent with the errors; warnings leave it true), replacing only
// the old Valid condition (other controllers' conditions are kept) and
// reusing its transition time when unchanged.
func ExtensionServiceStatus(st *model.ExtensionStatus, old contourv1alpha1.ExtensionServiceStatus) contourv1alpha1.ExtensionServiceStatus {
	cond := contourv1.DetailedCondition{Condition: metav1.Condition{
		Type: "Valid", Status: metav1.ConditionTrue, ObservedGeneration: st.Generation,
		Reason: "Valid", Message: "Valid ExtensionService",
	}}
	if !st.Valid() {
		cond.Status = metav1.ConditionFalse
		cond.Reason, cond.Message = "ErrorPresent", "At least one error present, see Errors for details"
	}
	for _, e := range st.Errors {
		cond.Errors = append(cond.Errors, contourv1.SubCondition{Type: e.Type, Status: metav1.ConditionTrue, Reason: e.Reason, Message: e.Message})
	}
	for _, w := range st.Warnings {
		cond.Warnings = append(cond.Warnings, contourv1.SubCondition{Type: w.Type, Status: metav1.ConditionTrue, Reason: w.Reason, Message: w.Message})
	}
	cond.LastTransitionTime = metav1.Now()
	out := contourv1alpha1.ExtensionServiceStatus{}
	replaced := false
	for _, oc := range old.Conditions {
		if oc.Type != "Valid" {
			out.Conditions = append(out.Conditions, oc)
			continue
		}
		if oc.Status == cond.Status && oc.Reason == cond.Reason {
			cond.LastTransitionTime = oc.LastTransitionTime
		}
		out.Conditions = append(out.Conditions, cond)
		replaced = true
	}
	if !replaced {
		out.Conditions = append(out.Conditions, cond)
	}
	return out
}

// writeExtensionServices updates the status of every ExtensionService
// whose computed status differs from the cluster's; note counts writes
// and reports errors as Write does.
func (w *Writer) writeExtensionServices(ctx context.Context, m *model.Model, objs *source.Objects, note func(error)) {
	for key, st := range m.Extensions {
		e := objs.ExtensionServices[key]
		if e == nil {
			continue
		}
		want := ExtensionServiceStatus(st, e.Status)
		if equalExtensionStatus(e.Status, want) {
			continue
		}
		cp := e.DeepCopy()
		cp.Status = want
		cp.APIVersion, cp.Kind = contourv1alpha1.GroupVersion.String(), "ExtensionService"
		raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cp)
		if err != nil {
			note(err)
			continue
		}
		_, err = w.Dynamic.Resource(contourv1alpha1.ExtensionServiceGVR).Namespace(e.Namespace).UpdateStatus(ctx, &unstructured.Unstructured{Object: raw}, metav1.UpdateOptions{})
		if err != nil {
			err = fmt.Errorf("status of ExtensionService %s: %w (the controller needs update on extensionservices/status)", key, err)
		}
		note(err)
	}
}

func equalExtensionStatus(a, b contourv1alpha1.ExtensionServiceStatus) bool {
	norm := func(s contourv1alpha1.ExtensionServiceStatus) contourv1alpha1.ExtensionServiceStatus {
		s = *s.DeepCopy()
		for i := range s.Conditions {
			s.Conditions[i].LastTransitionTime = metav1.Time{}
		}
		return s
	}
	return reflect.DeepEqual(norm(a), norm(b))
}
