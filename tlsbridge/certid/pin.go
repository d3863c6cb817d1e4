package certid

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
)

// Pin is the SHA-256 of a certificate's SubjectPublicKeyInfo, the form
// curl (--pinnedpubkey sha256//...) and HPKP use, so a pin survives
// certificate renewal with the same key.
type Pin [sha256.Size]byte

// ParsePin reads "sha256:BASE64" (also curl's "sha256//BASE64").
func ParsePin(s string) (Pin, error) {
	var p Pin
	var b64 string
	switch {
	case strings.HasPrefix(s, "sha256:"):
		b64 = s[len("sha256:"):]
	case strings.HasPrefix(s, "sha256//"):
		b64 = s[len("sha256//"):]
	default:
		return p, fmt.Errorf("pin %q: want sha256:BASE64", s)
	}
	// Strict: the 44th character carries two unused bits, and a pin that
	// sets them would otherwise be taken for another spelling of a
	// different pin's bytes; only the canonical form is a pin.
	raw, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(raw) != sha256.Size {
		return p, fmt.Errorf("pin %q: want sha256: followed by 44 base64 characters (a SHA-256 of the key)", s)
	}
	copy(p[:], raw)
	return p, nil
}

func (p Pin) String() string { return "sha256:" + base64.StdEncoding.EncodeToString(p[:]) }

// PinOf returns the pin of a certificate's public key.
func PinOf(c *x509.Certificate) Pin { return sha256.Sum256(c.RawSubjectPublicKeyInfo) }

// Names lists the DNS and IP names of a certificate.
func Names(c *x509.Certificate) []string {
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}
