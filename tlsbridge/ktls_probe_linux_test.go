package tlsbridge

import (
	"os"
	"strings"
	"testing"
)

// The probe asks the kernel, not /proc/sys: its answer must agree with the
// kernel's own list of loaded ULPs (read after the probe, which loads the
// module itself when run with CAP_NET_ADMIN), and name the module when it
// is missing.
func TestKernelTLSProbeAgreesWithTheKernel(t *testing.T) {
	ran, err := probeTLSULP()
	if !ran {
		t.Fatalf("the loopback probe could not run: %v", err)
	}
	got := KernelTLSUnavailable()
	b, ferr := os.ReadFile(availableULPs)
	if ferr != nil {
		t.Fatal(ferr)
	}
	listed := strings.Contains(" "+strings.TrimSpace(string(b))+" ", " tls ")
	t.Logf("%s: %q; probe: err=%v, KernelTLSUnavailable()=%q", availableULPs, strings.TrimSpace(string(b)), err, got)
	switch {
	case listed && (err != nil || got != ""):
		t.Errorf("the kernel lists tls, but the probe says %v / %q", err, got)
	case !listed && got != noTLSModule:
		t.Errorf("the kernel has no tls ULP; KernelTLSUnavailable() = %q, want %q", got, noTLSModule)
	}
}
