package discover

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

// Labels and values the discoverer puts on what it writes. The two
// gimbal.projectcontour.io labels are Gimbal's, so that the kubectl
// selectors of Gimbal's documentation (list or delete what a backend
// discovered) work unchanged.
const (
	// LabelBackend names the backend (remote cluster) an object was
	// discovered in. It is what makes an object the discoverer's own:
	// the discoverer of backend B only ever changes or deletes objects
	// labelled LabelBackend=B.
	LabelBackend = "gimbal.projectcontour.io/backend"
	// LabelService is the name of the Service in the remote cluster an
	// object mirrors (shortened as ShortenLabelValue does, which leaves
	// any valid Service name unchanged).
	LabelService = "gimbal.projectcontour.io/service"
	// LabelManagedBy is the common app.kubernetes.io label, set to
	// ManagedBy on every mirrored object.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedBy is the value of LabelManagedBy and of the EndpointSlices'
	// endpointslice.kubernetes.io/managed-by label (which keeps
	// Kubernetes' own EndpointSlice controllers away from them).
	ManagedBy = "legate-discover"
	// BackendType is the backendtype label of Gimbal's metrics for a
	// Kubernetes discoverer.
	BackendType = "kubernetes"
)

// maxNameLength is the longest DNS label (RFC 1035), the limit of a
// Service name.
const maxNameLength = 63

// hashLength is how many hex digits of a part's SHA-256 replace the end
// of a part that is cut.
const hashLength = 6

var backendNameRE = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)

// ValidateBackendName checks that name can be a backend name: a DNS label
// that starts with a letter (Gimbal's rule, with the DNS label's 63
// character limit), since it starts every discovered name and is the
// value of LabelBackend.
func ValidateBackendName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("the backend name is empty: give each remote cluster a name such as nodek8s (--backend-name)")
	case len(name) > maxNameLength:
		return fmt.Errorf("backend name %q is %d characters long: use at most %d (a DNS label)", name, len(name), maxNameLength)
	case !backendNameRE.MatchString(name):
		return fmt.Errorf("backend name %q is not a DNS label starting with a letter: use lowercase letters, digits and '-', beginning with a letter and not ending with '-'", name)
	}
	return nil
}

// DiscoveredName is the name of the local mirror of the remote object
// name discovered in backend: "<backend>-<name>", shortened as Gimbal's
// discoverers shorten it when it would reach 63 characters (see
// shorten), so that HTTPProxies written for Gimbal find the same names.
func DiscoveredName(backend, name string) string {
	return shorten(maxNameLength, backend, name)
}

// ShortenLabelValue returns v, or, when v is longer than a label value
// may be (63 characters), v cut to 57 characters followed by the first 6
// hex digits of its SHA-256 (Gimbal's rule).
func ShortenLabelValue(v string) string {
	return shorten(maxNameLength, v)
}

// shorten joins parts with "-". When the result is limit characters or
// longer, each part gets a budget of limit/len(parts) characters and the
// parts are cut, last first, until the result is shorter than limit: a
// part over its budget keeps its first budget-6 characters followed by
// the first 6 hex digits of its SHA-256. This is the algorithm of
// Gimbal's "Discovery naming conventions" (and of Contour's hashname),
// reproduced so that the names are the same: note that a joined name of
// exactly limit characters is shortened too.
func shorten(limit int, parts ...string) string {
	parts = append([]string(nil), parts...)
	r := strings.Join(parts, "-")
	if len(r) < limit {
		return r
	}
	budget := limit / len(parts)
	for i := len(parts) - 1; i >= 0; i-- {
		sum := sha256.Sum256([]byte(parts[i]))
		parts[i] = cut(budget, parts[i], hex.EncodeToString(sum[:])[:hashLength])
		if r = strings.Join(parts, "-"); len(r) < limit {
			break
		}
	}
	return r
}

// cut returns s when it fits in budget characters, else its beginning
// followed by suffix, budget characters in all (only the beginning of
// suffix when budget leaves no room for s).
func cut(budget int, s, suffix string) string {
	switch {
	case len(s) <= budget:
		return s
	case budget <= len(suffix):
		return suffix[:budget]
	}
	return s[:budget-len(suffix)] + suffix
}
