//go:build linux

package main

import (
	"errors"
	"strings"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge"
)

// serveFlag is the serve flag that sets each tlsbridge option: the name a
// user reads in an error, with the fix.
var serveFlag = map[tlsbridge.Option]string{
	tlsbridge.OptCert:       "--cert",
	tlsbridge.OptKey:        "--key",
	tlsbridge.OptClientAuth: "--client-auth",
	tlsbridge.OptClientCA:   "--client-ca",
	tlsbridge.OptCRL:        "--crl",
	tlsbridge.OptCRLStrict:  "--crl-strict",
	tlsbridge.OptAllowCN:    "--allow-cn",
	tlsbridge.OptAllowDNS:   "--allow-dns",
	tlsbridge.OptAllowURI:   "--allow-uri",
	tlsbridge.OptAllowEmail: "--allow-email",
	tlsbridge.OptAllowSPKI:  "--allow-spki",
}

func flagName(o tlsbridge.Option) string {
	if f, ok := serveFlag[o]; ok {
		return f
	}
	return string(o)
}

// flagError is an error whose text names serve's flags where tlsbridge
// named its options; the chain under it is kept.
type flagError struct {
	text string
	err  error
}

func (e *flagError) Error() string { return e.text }
func (e *flagError) Unwrap() error { return e.err }

// optionText is an error of tlsbridge's whose text names options
// (*tlsbridge.OptionError, *tlsbridge.CertValidityError).
type optionText interface {
	error
	Render(tlsbridge.Namer) string
}

// withFlags renders the tlsbridge error in err that names options with the
// flags' names; any other error is returned as it is.
func withFlags(err error) error {
	var oe optionText
	if err == nil || !errors.As(err, &oe) {
		return err
	}
	return &flagError{text: strings.Replace(err.Error(), oe.Error(), oe.Render(flagName), 1), err: err}
}
