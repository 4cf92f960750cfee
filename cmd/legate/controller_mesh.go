package main

import (
	"flag"

	"github.com/legateproxy/legate/internal/controller"
	"github.com/legateproxy/legate/internal/controller/xdsgen"
)

// meshFlags are the flags of sidecar configuration (the resources the
// controller serves mesh sidecars: xdsgen.Sidecar).
type meshFlags struct {
	trustDomain, outboundPolicy, mtls string
}

func (m *meshFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.trustDomain, "mesh-trust-domain", "", "SPIFFE trust domain of the identities sidecars accept from each other (default: --trust-domain)")
	fs.StringVar(&m.outboundPolicy, "mesh-outbound-traffic-policy", xdsgen.OutboundAllowAny, "what sidecars do with traffic to destinations no Service names: ALLOW_ANY (pass it through) or REGISTRY_ONLY (refuse it)")
	fs.StringVar(&m.mtls, "mesh-mtls", xdsgen.MTLSPermissive, "what sidecars accept inbound: PERMISSIVE (mesh mTLS and plaintext) or STRICT (mesh mTLS only)")
}

// apply sets the controller's sidecar options from the flags.
func (m *meshFlags) apply(opt *controller.Options, f *controllerFlags) error {
	td := m.trustDomain
	if td == "" {
		td = f.ca.trustDomain
	}
	opt.Sidecar = xdsgen.SidecarOptions{TrustDomain: td, OutboundPolicy: m.outboundPolicy, MTLS: m.mtls}
	return opt.Sidecar.Validate()
}
