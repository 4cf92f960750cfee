// Package v1alpha1 holds the Go types of Contour's projectcontour.io/v1alpha1
// ExtensionService and ContourConfiguration, with the same JSON schema as
// Contour 1.33's, so that manifests written for Contour apply unchanged
// where Legate's CRDs are installed. An ExtensionService binds Kubernetes Services as the gRPC
// server of a proxy extension (today: an HTTPProxy's external
// authorization). The CRD in deploy/crds is generated from these types
// (make generate).
//
// +kubebuilder:object:generate=true
// +groupName=projectcontour.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of ExtensionService.
const GroupName = "projectcontour.io"

// GroupVersion is projectcontour.io/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

// ExtensionServiceGVR names the resource for dynamic clients and informers.
var ExtensionServiceGVR = GroupVersion.WithResource("extensionservices")

var (
	// SchemeBuilder registers the types of this group with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the types of this group to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &ExtensionService{}, &ExtensionServiceList{}, &ContourConfiguration{}, &ContourConfigurationList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
