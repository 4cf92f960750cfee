// Package v1 holds the Go types of Contour's projectcontour.io/v1 API —
// HTTPProxy and TLSCertificateDelegation — with the same JSON schema as
// Contour's, so that manifests written for Contour apply unchanged to a
// cluster where Legate's CRDs are installed. The CRDs in deploy/crds are
// generated from these types (make generate).
//
// +kubebuilder:object:generate=true
// +groupName=projectcontour.io
package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of HTTPProxy and TLSCertificateDelegation.
const GroupName = "projectcontour.io"

// GroupVersion is projectcontour.io/v1.
var GroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1"}

// HTTPProxyGVR and TLSCertificateDelegationGVR name the resources for
// dynamic clients and informers.
var (
	HTTPProxyGVR                = GroupVersion.WithResource("httpproxies")
	TLSCertificateDelegationGVR = GroupVersion.WithResource("tlscertificatedelegations")
)

var (
	// SchemeBuilder registers the types of this group with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the types of this group to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&HTTPProxy{}, &HTTPProxyList{},
		&TLSCertificateDelegation{}, &TLSCertificateDelegationList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
