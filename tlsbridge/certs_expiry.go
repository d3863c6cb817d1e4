package tlsbridge

import (
	"crypto/x509"
	"time"
)

// NotAfter is when the first of the loaded server certificates expires
// (the zero time if none can be read).
func (s *CertStore) NotAfter() time.Time {
	var first time.Time
	for _, c := range s.cur.Load().certs {
		leaf := c.Leaf
		if leaf == nil && len(c.Certificate) > 0 {
			leaf, _ = x509.ParseCertificate(c.Certificate[0])
		}
		if leaf != nil && (first.IsZero() || leaf.NotAfter.Before(first)) {
			first = leaf.NotAfter
		}
	}
	return first
}
