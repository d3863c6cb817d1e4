//go:build linux

package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge"
)

// tlsbridge names options; serve's errors name the flag and the fix, and
// keep the chain for exit-status classification.
func TestWithFlagsNamesTheFlag(t *testing.T) {
	err := withFlags(tlsbridge.CheckClientAuth(tlsbridge.ClientAuthConfig{CAFile: "ca.pem", CRLStrict: true}))
	if err == nil || err.Error() != "--crl-strict needs --crl FILE" {
		t.Fatalf("got %v", err)
	}
	if !errors.Is(err, tlsbridge.ErrClientAuthUsage) {
		t.Errorf("%v lost its usage class", err)
	}
	_, _, err = tlsbridge.LoadCerts([]tlsbridge.CertPair{{CertFile: "/nonexistent/c.pem", KeyFile: "k"}})
	if got := withFlags(err).Error(); !strings.HasPrefix(got, "--cert: open /nonexistent/c.pem") {
		t.Errorf("got %q", got)
	}
}
