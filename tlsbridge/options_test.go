package tlsbridge

import (
	"errors"
	"strings"
	"testing"
)

// testFlags names options as serve's command line does, so the tests read
// the texts a user reads.
func testFlags(o Option) string {
	return map[Option]string{OptCert: "--cert", OptKey: "--key", OptClientAuth: "--client-auth", OptClientCA: "--client-ca",
		OptCRL: "--crl", OptCRLStrict: "--crl-strict", OptAllowCN: "--allow-cn", OptAllowDNS: "--allow-dns",
		OptAllowURI: "--allow-uri", OptAllowEmail: "--allow-email", OptAllowSPKI: "--allow-spki"}[o]
}

// flagText is err's text with the options named as flags.
func flagText(err error) string {
	var r interface{ Render(Namer) string }
	if errors.As(err, &r) {
		return r.Render(testFlags)
	}
	return err.Error()
}

// The neutral text names no flag; the rendered one names them all, and
// a wrapped cause stays in the chain.
func TestOptionErrorRender(t *testing.T) {
	cause := errors.New("open x: permission denied")
	e := optErr(OptCRL, "%s %s: issued by %s, not in %s: %w", OptCRL, "x.crl", "CN=a", OptClientCA, cause)
	if got := e.Error(); strings.Contains(got, "--") || got != "CRL x.crl: issued by CN=a, not in client CA bundle: open x: permission denied" {
		t.Errorf("neutral text %q", got)
	}
	if got := e.Render(testFlags); got != "--crl x.crl: issued by CN=a, not in --client-ca: open x: permission denied" {
		t.Errorf("rendered text %q", got)
	}
	if !errors.Is(e, cause) || errors.Is(e, ErrClientAuthUsage) {
		t.Errorf("chain: Is(cause)=%v Is(usage)=%v", errors.Is(e, cause), errors.Is(e, ErrClientAuthUsage))
	}
	u := optUsage(OptClientAuth, "%s none: drop %s", OptClientAuth, []Option{OptClientCA, OptCRL})
	if got := u.Render(testFlags); got != "--client-auth none: drop --client-ca, --crl" || !errors.Is(u, ErrClientAuthUsage) {
		t.Errorf("usage text %q, Is(usage)=%v", got, errors.Is(u, ErrClientAuthUsage))
	}
}
