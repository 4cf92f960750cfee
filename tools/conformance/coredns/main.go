// Command coredns is CoreDNS v1.12.2 with only the plugins the Gateway API
// conformance suite's coredns Deployment uses (its Corefile: forward, log,
// errors, whoami), plus health and ready. It is built for the test
// environment's node agent (test/kubeenv), which runs it for the image
// registry.k8s.io/coredns/coredns. Flags are CoreDNS's own (-conf FILE).
package main

import (
	"github.com/coredns/coredns/coremain"

	// The plugins this build registers.
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/whoami"
)

func main() {
	coremain.Run()
}
