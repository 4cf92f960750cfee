package model

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// The currentStatus values of an HTTPProxy, as Contour writes them.
const (
	StatusValid    = "valid"
	StatusInvalid  = "invalid"
	StatusOrphaned = "orphaned"
)

// Condition types of HTTPProxy errors, as Contour names them.
const (
	ErrAuth          = "AuthError"
	ErrCORS          = "CORSError"
	ErrIPFilter      = "IPFilterError"
	ErrJWT           = "JWTVerificationError"
	ErrInclude       = "IncludeError"
	ErrOrphaned      = "Orphaned"
	ErrPrefixReplace = "PrefixReplaceError"
	ErrRootNamespace = "RootNamespaceError"
	ErrRoute         = "RouteError"
	ErrService       = "ServiceError"
	ErrSpec          = "SpecError"
	ErrTCPProxy      = "TCPProxyError"
	ErrTCPInclude    = "TCPProxyIncludeError"
	ErrTLS           = "TLSError"
	ErrVirtualHost   = "VirtualHostError"
)

// Problem is one error or warning on an object.
type Problem struct {
	Type, Reason, Message string
}

// ProxyStatus is the computed status of one HTTPProxy.
type ProxyStatus struct {
	Object     types.NamespacedName
	Generation int64
	FQDN       string
	Errors     []Problem
	Warnings   []Problem
	reached    bool
	orphaned   bool
}

// Current is "valid", "invalid" or "orphaned".
func (s *ProxyStatus) Current() string {
	switch {
	case s.orphaned:
		return StatusOrphaned
	case len(s.Errors) > 0:
		return StatusInvalid
	}
	return StatusValid
}

// Description is the human summary Contour writes beside currentStatus.
func (s *ProxyStatus) Description() string {
	if len(s.Errors) == 0 {
		if s.Current() == StatusOrphaned {
			return "this HTTPProxy is not part of a delegation chain from a root HTTPProxy"
		}
		return "Valid HTTPProxy"
	}
	msgs := make([]string, len(s.Errors))
	for i, e := range s.Errors {
		msgs[i] = e.Message
	}
	return strings.Join(msgs, ", ")
}

func (s *ProxyStatus) errorf(typ, reason, format string, args ...any) {
	s.Errors = append(s.Errors, Problem{typ, reason, fmt.Sprintf(format, args...)})
}

func (s *ProxyStatus) warnf(typ, reason, format string, args ...any) {
	s.Warnings = append(s.Warnings, Problem{typ, reason, fmt.Sprintf(format, args...)})
}

// IngressStatus is the computed status of one Ingress: whether this
// controller serves it, and the problems met.
type IngressStatus struct {
	Object   types.NamespacedName
	Served   bool
	Problems []string
}
