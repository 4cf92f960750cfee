package status

import (
	"testing"
	"time"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	contourv1alpha1 "github.com/legateproxy/legate/api/projectcontour/v1alpha1"
	"github.com/legateproxy/legate/internal/controller/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestExtensionServiceStatus: the Valid condition as Contour writes it,
// other controllers' conditions kept, the transition time kept while the
// condition does not change.
func TestExtensionServiceStatus(t *testing.T) {
	then := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	other := contourv1.DetailedCondition{Condition: metav1.Condition{Type: "Other", Status: metav1.ConditionTrue, Reason: "Mine", LastTransitionTime: then}}
	oldValid := contourv1.DetailedCondition{Condition: metav1.Condition{Type: "Valid", Status: metav1.ConditionTrue, Reason: "Valid", LastTransitionTime: then}}
	bad := []model.Problem{{Type: "ServiceError", Reason: "ServiceUnresolvedReference", Message: `unresolved service "auth/x"`}}
	warn := []model.Problem{{Type: "SpecError", Reason: "IgnoredField", Message: "ignoring field"}}
	for _, tc := range []struct {
		name           string
		errors, warns  []model.Problem
		old            []contourv1.DetailedCondition
		status         metav1.ConditionStatus
		reason, msg    string
		types          []string
		keepTransition bool
	}{
		{"valid with a warning", nil, warn, nil, metav1.ConditionTrue, "Valid", "Valid ExtensionService", []string{"Valid"}, false},
		{"errors", bad, nil, nil, metav1.ConditionFalse, "ErrorPresent", "At least one error present, see Errors for details", []string{"Valid"}, false},
		{"others kept, unchanged transition kept", nil, nil, []contourv1.DetailedCondition{other, oldValid}, metav1.ConditionTrue, "Valid", "Valid ExtensionService", []string{"Other", "Valid"}, true},
		{"turned invalid: new transition", bad, nil, []contourv1.DetailedCondition{oldValid, other}, metav1.ConditionFalse, "ErrorPresent", "At least one error present, see Errors for details", []string{"Valid", "Other"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ExtensionServiceStatus(&model.ExtensionStatus{Generation: 7, Errors: tc.errors, Warnings: tc.warns}, contourv1alpha1.ExtensionServiceStatus{Conditions: tc.old})
			var types []string
			var valid *contourv1.DetailedCondition
			for i, c := range got.Conditions {
				types = append(types, c.Type)
				if c.Type == "Valid" {
					valid = &got.Conditions[i]
				}
			}
			if len(types) != len(tc.types) || types[0] != tc.types[0] || types[len(types)-1] != tc.types[len(tc.types)-1] {
				t.Fatalf("conditions %v, want %v", types, tc.types)
			}
			if valid.Status != tc.status || valid.Reason != tc.reason || valid.Message != tc.msg || valid.ObservedGeneration != 7 ||
				len(valid.Errors) != len(tc.errors) || len(valid.Warnings) != len(tc.warns) {
				t.Errorf("Valid = %+v", valid)
			}
			if valid.LastTransitionTime.Equal(&then) != tc.keepTransition {
				t.Errorf("transition time %v, kept = %v, want %v", valid.LastTransitionTime, !tc.keepTransition, tc.keepTransition)
			}
			if !equalExtensionStatus(got, ExtensionServiceStatus(&model.ExtensionStatus{Generation: 7, Errors: tc.errors, Warnings: tc.warns}, got)) {
				t.Error("a second render of the written status differs: it would be rewritten on every build")
			}
		})
	}
}
