package tlsbridge

import (
	"crypto/x509"
	"testing"
)

func FuzzSplitCRLFile(f *testing.F) {
	f.Add([]byte("-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n"))
	f.Add([]byte{0x30, 0x82, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, der := range SplitCRLFile(b) {
			// The parser must reject garbage with an error, not a panic.
			x509.ParseRevocationList(der)
		}
	})
}
