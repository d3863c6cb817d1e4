package tests

import "testing"

// slowTier skips a test of a slow tier (booted systemd, the kernel TLS VM,
// load, the rsync version matrix) under go test -short, so that the fast
// tier runs in about a minute. make test and .ci/run never pass -short.
func slowTier(t testing.TB, tier string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: skipping the %s tier", tier)
	}
}
