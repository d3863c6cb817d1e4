// Package testpki makes certificate authorities, certificates and CRLs for
// the unit tests at run time, so no private key is ever committed. It is the
// one CA builder of the project's Go tests (tests/ has its own, std only).
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CA is a certificate authority made for one test.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// File holds the CA certificate in PEM ("" when made without a dir).
	File string
	// Pool trusts just this CA.
	Pool *x509.CertPool
}

// NewCA makes a CA named cn, valid from two days ago to two days ahead,
// signed by parent (self-signed when parent is nil). With a dir, its
// certificate is written there as <cn>.pem.
func NewCA(t testing.TB, dir, cn string, parent *CA) *CA {
	t.Helper()
	return NewCAWithSubject(t, dir, pkix.Name{CommonName: cn, Organization: []string{"Test"}}, parent)
}

// NewCAWithSubject is NewCA with the whole subject given.
func NewCAWithSubject(t testing.TB, dir string, subject pkix.Name, parent *CA) *CA {
	t.Helper()
	cn := subject.CommonName
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               subject,
		NotBefore:             time.Now().Add(-48 * time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{Cert: c, Key: key, Pool: x509.NewCertPool()}
	ca.Pool.AddCert(c)
	if dir != "" {
		ca.File = filepath.Join(dir, strings.ReplaceAll(cn, " ", "_")+".pem")
		WritePEM(t, ca.File, "CERTIFICATE", der)
	}
	return ca
}

// Leaf describes a certificate to issue; zero fields take defaults: a new
// P-256 key, a serial from the clock, valid from an hour ago to an hour
// ahead, client-auth usage.
type Leaf struct {
	CN        string
	Subject   *pkix.Name
	DNS       []string
	IPs       []string
	URIs      []string
	Emails    []string
	NotBefore time.Time
	NotAfter  time.Time
	Serial    int64
	EKU       []x509.ExtKeyUsage
	Key       *ecdsa.PrivateKey
}

// Issue makes a leaf signed by ca, or self-signed when ca is nil.
func (ca *CA) Issue(t testing.TB, o Leaf) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := o.Key
	if key == nil {
		key = newKey(t)
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(o.Serial),
		Subject:        pkix.Name{CommonName: o.CN},
		DNSNames:       o.DNS,
		EmailAddresses: o.Emails,
		NotBefore:      o.NotBefore,
		NotAfter:       o.NotAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    o.EKU,
	}
	if o.Subject != nil {
		tmpl.Subject = *o.Subject
	}
	if o.Serial == 0 {
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	}
	if tmpl.ExtKeyUsage == nil {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	for _, ip := range o.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	for _, u := range o.URIs {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	parent, signKey := tmpl, key
	if ca != nil {
		parent, signKey = ca.Cert, ca.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// ServerLeaf issues a server certificate for names (DNS names, or IP
// addresses when they parse as one).
func (ca *CA) ServerLeaf(t testing.TB, from, to time.Time, names ...string) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	o := Leaf{NotBefore: from, NotAfter: to, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if len(names) > 0 {
		o.CN = names[0]
	}
	for _, n := range names {
		if net.ParseIP(n) != nil {
			o.IPs = append(o.IPs, n)
		} else {
			o.DNS = append(o.DNS, n)
		}
	}
	c, key := ca.Issue(t, o)
	return c, tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}
}

// WritePair writes a certificate and its key as PEM files <base>.pem and
// <base>.key in dir and returns their names.
func WritePair(t testing.TB, dir, base string, c *x509.Certificate, key *ecdsa.PrivateKey) (certFile, keyFile string) {
	t.Helper()
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, base+".pem"), filepath.Join(dir, base+".key")
	WritePEM(t, certFile, "CERTIFICATE", c.Raw)
	WritePEM(t, keyFile, "PRIVATE KEY", kder)
	return certFile, keyFile
}

// CRL writes a CRL by ca revoking serials (PEM or DER) and returns its name.
func (ca *CA) CRL(t testing.TB, dir, name string, nextUpdate time.Time, asPEM bool, serials ...*big.Int) string {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now().Add(-time.Minute).Truncate(time.Second)})
	}
	// A CRL made stale on purpose still needs its thisUpdate before its
	// nextUpdate.
	thisUpdate := time.Now().Add(-2 * time.Hour)
	if nextUpdate.Before(thisUpdate) {
		thisUpdate = nextUpdate.Add(-24 * time.Hour)
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(time.Now().UnixNano()),
		ThisUpdate:                thisUpdate,
		NextUpdate:                nextUpdate,
		RevokedCertificateEntries: entries,
	}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, name)
	if asPEM {
		WritePEM(t, f, "X509 CRL", der)
	} else if err := os.WriteFile(f, der, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// WritePEM writes one PEM block to name.
func WritePEM(t testing.TB, name, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(name, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}
