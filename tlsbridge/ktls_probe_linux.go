package tlsbridge

import (
	"fmt"
	"os"
	"strings"
)

// availableULPs is where the kernel lists the TCP upper-layer protocols it
// has loaded.
const availableULPs = "/proc/sys/net/ipv4/tcp_available_ulp"

// KernelTLSUnavailable says why this kernel cannot take a TLS socket, or ""
// when its "tls" ULP is loaded. The kernel loads the module on demand only
// for callers with CAP_NET_ADMIN, which a sandboxed service lacks, so a
// module that is not loaded counts as missing.
func KernelTLSUnavailable() string {
	b, err := os.ReadFile(availableULPs)
	if err != nil {
		return fmt.Sprintf("cannot read %s: %v", availableULPs, err)
	}
	for _, u := range strings.Fields(string(b)) {
		if u == "tls" {
			return ""
		}
	}
	return fmt.Sprintf("the kernel has no TLS module loaded (%s: %q; load it with \"modprobe tls\", the package does so at boot)", availableULPs, strings.TrimSpace(string(b)))
}
