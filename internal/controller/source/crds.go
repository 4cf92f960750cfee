package source

import (
	"context"
	"errors"
	"fmt"
	"strings"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	contourv1alpha1 "github.com/legateproxy/legate/api/projectcontour/v1alpha1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// CRD is a CustomResourceDefinition the controller reads.
type CRD struct {
	GVR schema.GroupVersionResource
	// File is its manifest in Legate's deploy/crds.
	File string
	// Required CRDs stop the controller when the cluster does not serve
	// them (as Contour, which logs and exits when an informer cannot
	// start); without an optional one the controller runs, with a warning
	// saying what does not work (Without).
	Required bool
	Without  string
	// ClusterScoped resources are listed and watched outside any
	// namespace, even when the controller watches one.
	ClusterScoped bool
}

// CRDs are the CustomResourceDefinitions the controller reads from a
// cluster. ExtensionService is optional: a cluster installed before
// Legate read ExtensionServices lacks it, and HTTPProxy authorization
// then reports ExtensionServiceNotFound.
var CRDs = []CRD{
	{GVR: contourv1.HTTPProxyGVR, File: "deploy/crds/projectcontour.io_httpproxies.yaml", Required: true},
	{GVR: contourv1.TLSCertificateDelegationGVR, File: "deploy/crds/projectcontour.io_tlscertificatedelegations.yaml", Required: true},
	{GVR: contourv1alpha1.ExtensionServiceGVR, File: "deploy/crds/projectcontour.io_extensionservices.yaml",
		Without: "HTTPProxy authorization cannot find its server (ExtensionServiceNotFound)"},
	gatewayCRD("gatewayclasses", "Gateway API is not served", true),
	gatewayCRD("gateways", "Gateway API is not served", false),
	gatewayCRD("httproutes", "HTTPRoutes are not served", false),
	gatewayCRD("grpcroutes", "GRPCRoutes are not served", false),
	gatewayCRD("tlsroutes", "TLSRoutes are not served", false),
	gatewayCRD("tcproutes", "TCPRoutes are not served", false),
	gatewayCRD("referencegrants", "routes and Gateways cannot refer to other namespaces (RefNotPermitted)", false),
	gatewayCRD("listenersets", "ListenerSets do not attach listeners to Gateways", false),
	gatewayCRD("backendtlspolicies", "BackendTLSPolicies do not apply: routes connect to their Services without TLS", false),
}

// gatewayCRD is an optional Gateway API v1 CRD, as the v1.6.3 standard
// channel ships it (copied to deploy/crds/gateway-api).
func gatewayCRD(resource, without string, cluster bool) CRD {
	return CRD{GVR: gatewayv1.SchemeGroupVersion.WithResource(resource),
		File:    "deploy/crds/gateway-api/gateway.networking.k8s.io_" + resource + ".yaml",
		Without: without, ClusterScoped: cluster}
}

// Name is the CRD's name, <resource>.<group> (httpproxies.projectcontour.io).
func (c CRD) Name() string { return c.GVR.GroupResource().String() }

// MissingCRDError says which required CRDs the cluster does not serve and
// the command that installs them.
type MissingCRDError struct{ Missing []CRD }

func (e *MissingCRDError) Error() string {
	names := make([]string, len(e.Missing))
	for i, c := range e.Missing {
		names[i] = c.Name() + " (" + c.GVR.GroupVersion().String() + ")"
	}
	what := "CRD " + names[0] + " is"
	if len(names) > 1 {
		what = "CRDs " + strings.Join(names, ", ") + " are"
	}
	return fmt.Sprintf("%s not installed in the cluster: install with `%s` (from Legate's repository or release), then restart the controller",
		what, ApplyCommand(e.Missing...))
}

// ApplyCommand is the kubectl command that installs crds.
func ApplyCommand(crds ...CRD) string {
	cmd := "kubectl apply"
	for _, c := range crds {
		cmd += " -f " + c.File
	}
	return cmd
}

// RBACError is a request the API server refused (403 Forbidden or 401
// Unauthorized): the controller's ServiceAccount lacks a permission.
type RBACError struct {
	// What was refused, e.g. "list httpproxies.projectcontour.io in all namespaces".
	What string
	Err  error
}

func (e *RBACError) Error() string {
	return fmt.Sprintf("RBAC: the API server refused to %s: %v: grant it to the controller's ServiceAccount (deploy/base/10-rbac.yaml)", e.What, e.Err)
}

func (e *RBACError) Unwrap() error { return e.Err }

func isRBAC(err error) bool { return apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) }

// checkCRDs asks API discovery which CRDs of CRDs the cluster serves, and
// returns the resources to watch: a missing required CRD is a
// MissingCRDError, a missing optional one a warning of the same shape.
func (k *Kube) checkCRDs() ([]CRD, error) {
	served := map[schema.GroupVersion]map[string]bool{}
	for _, c := range CRDs {
		gv := c.GVR.GroupVersion()
		if _, done := served[gv]; done {
			continue
		}
		served[gv] = map[string]bool{}
		rs, err := k.Client.Discovery().ServerResourcesForGroupVersion(gv.String())
		switch {
		case apierrors.IsNotFound(err):
			// No CRD of this group version at all: the API server has
			// no /apis/<group>/<version> to discover.
		case isRBAC(err):
			return nil, &RBACError{What: "get API discovery of " + gv.String() +
				" (the system:discovery ClusterRole, bound to every authenticated user by default, allows it)", Err: err}
		case err != nil:
			return nil, fmt.Errorf("API discovery of %s: %w: check the API server address and that the controller reaches it", gv, err)
		default:
			for _, r := range rs.APIResources {
				served[gv][r.Name] = true
			}
		}
	}
	var missing []CRD
	var gvrs []CRD
	for _, c := range CRDs {
		switch {
		case served[c.GVR.GroupVersion()][c.GVR.Resource]:
			gvrs = append(gvrs, c)
		case c.Required:
			missing = append(missing, c)
		default:
			k.Log.Warn(fmt.Sprintf("CRD %s is not installed in the cluster: not watching %s, so %s; install with `%s`",
				c.Name(), c.GVR.Resource, c.Without, ApplyCommand(c)),
				"crd", c.Name(), "groupVersion", c.GVR.GroupVersion().String(), "fix", ApplyCommand(c))
		}
	}
	if len(missing) > 0 {
		return nil, &MissingCRDError{Missing: missing}
	}
	return gvrs, nil
}

// checkList lists one object of every resource the informers watch, so
// that a missing RBAC rule is an error naming the resource at once
// instead of an informer retrying until the sync timeout.
func (k *Kube) checkList(ctx context.Context, crds []CRD, configMaps bool) error {
	one := metav1.ListOptions{Limit: 1}
	where := "in all namespaces"
	if k.Namespace != "" {
		where = "in namespace " + k.Namespace
	}
	core := []struct {
		name string
		list func() error
	}{
		{"services", func() error { _, err := k.Client.CoreV1().Services(k.Namespace).List(ctx, one); return err }},
		{"secrets", func() error { _, err := k.Client.CoreV1().Secrets(k.Namespace).List(ctx, one); return err }},
		{"endpointslices.discovery.k8s.io", func() error {
			_, err := k.Client.DiscoveryV1().EndpointSlices(k.Namespace).List(ctx, one)
			return err
		}},
		{"ingresses.networking.k8s.io", func() error {
			_, err := k.Client.NetworkingV1().Ingresses(k.Namespace).List(ctx, one)
			return err
		}},
	}
	if configMaps {
		core = append(core, struct {
			name string
			list func() error
		}{"configmaps", func() error { _, err := k.Client.CoreV1().ConfigMaps(k.Namespace).List(ctx, one); return err }})
	}
	for _, c := range crds {
		ns := k.Namespace
		if c.ClusterScoped {
			ns = ""
		}
		core = append(core, struct {
			name string
			list func() error
		}{c.Name(), func() error {
			_, err := k.Dynamic.Resource(c.GVR).Namespace(ns).List(ctx, one)
			return err
		}})
	}
	var errs []error
	for _, r := range core {
		err := r.list()
		switch {
		case err == nil:
		case isRBAC(err):
			errs = append(errs, &RBACError{What: "list " + r.name + " " + where, Err: err})
		default:
			return fmt.Errorf("list %s %s: %w", r.name, where, err)
		}
	}
	return errors.Join(errs...)
}
