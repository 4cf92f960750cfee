package contourconfig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	contourv1alpha1 "github.com/legateproxy/legate/api/projectcontour/v1alpha1"
)

// LoadResource reads the ContourConfiguration namespace/name once, as
// Contour does at start-up (it is not watched: a change needs a
// restart), converts its spec with FromSpec and writes its Valid
// condition: True, or False with reason ErrorPresent, the errors in the
// message and one error per problem. A failed status write is logged,
// not returned: the configuration is still what it is.
func LoadResource(ctx context.Context, dyn dynamic.Interface, namespace, name string, log *slog.Logger) (*Config, error) {
	key := namespace + "/" + name
	res := dyn.Resource(contourv1alpha1.ContourConfigurationGVR).Namespace(namespace)
	u, err := res.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("ContourConfiguration %s: %w (create it in the controller's namespace, install deploy/crds/projectcontour.io_contourconfigurations.yaml, and give the controller get on contourconfigurations)", key, err)
	}
	cc, unknown, err := decodeContourConfiguration(u.Object)
	if err != nil {
		return nil, fmt.Errorf("ContourConfiguration %s: %w", key, err)
	}
	c, convErr := FromSpec(&cc.Spec)
	if unknown != nil {
		c, convErr = nil, errors.Join(unknown, convErr)
	}
	cc.Status = validStatus(cc.Generation, convErr, cc.Status)
	cc.APIVersion, cc.Kind = contourv1alpha1.GroupVersion.String(), "ContourConfiguration"
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&cc)
	if err == nil {
		_, err = res.UpdateStatus(ctx, &unstructured.Unstructured{Object: raw}, metav1.UpdateOptions{})
	}
	if err != nil && log != nil {
		log.Warn("could not write the ContourConfiguration's status (the controller needs update on contourconfigurations/status)", "contourconfiguration", key, "error", err)
	}
	if convErr != nil {
		return nil, fmt.Errorf("ContourConfiguration %s: %w", key, convErr)
	}
	return c, nil
}

// decodeContourConfiguration decodes an object; unknown reports the
// fields Legate's types lack (a newer Contour's CRD installed in place of
// ours), which must not vanish unseen: they make the object invalid.
func decodeContourConfiguration(obj map[string]any) (cc contourv1alpha1.ContourConfiguration, unknown, err error) {
	if unknown = runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj, &cc, true); unknown == nil {
		return cc, nil, nil
	}
	cc = contourv1alpha1.ContourConfiguration{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &cc); err != nil {
		return cc, nil, err
	}
	return cc, fmt.Errorf("%w: not implemented by Legate (a field Contour 1.33 does not have); remove it", unknown), nil
}

// validStatus is old with its Valid condition replaced (other
// controllers' conditions are kept; the transition time is kept when the
// status and reason are unchanged).
func validStatus(generation int64, err error, old contourv1alpha1.ContourConfigurationStatus) contourv1alpha1.ContourConfigurationStatus {
	cond := contourv1.DetailedCondition{Condition: metav1.Condition{Type: "Valid", Status: metav1.ConditionTrue,
		ObservedGeneration: generation, Reason: "Valid", Message: "Valid ContourConfiguration", LastTransitionTime: metav1.Now()}}
	if err != nil {
		cond.Status, cond.Reason = metav1.ConditionFalse, "ErrorPresent"
		msg := err.Error()
		if len(msg) > 32000 {
			msg = msg[:32000]
		}
		cond.Message = msg
		var list []error
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			list = j.Unwrap()
		} else {
			list = []error{err}
		}
		for _, e := range list {
			reason := "InvalidValue"
			if strings.Contains(e.Error(), "not implemented by Legate") {
				reason = "NotImplemented"
			}
			cond.Errors = append(cond.Errors, contourv1.SubCondition{Type: "SpecError", Status: metav1.ConditionTrue, Reason: reason, Message: e.Error()})
		}
	}
	out := contourv1alpha1.ContourConfigurationStatus{}
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

// ResourceNamespace is the namespace of the ContourConfiguration: Contour
// reads it from $CONTOUR_NAMESPACE; Legate also takes $POD_NAMESPACE (the
// controller's namespace, as its other namespaced objects), then
// legate-system. getenv is os.Getenv.
func ResourceNamespace(getenv func(string) string) string {
	for _, v := range []string{"CONTOUR_NAMESPACE", "POD_NAMESPACE"} {
		if ns := getenv(v); ns != "" {
			return ns
		}
	}
	return "legate-system"
}
