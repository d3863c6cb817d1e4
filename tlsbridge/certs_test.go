package tlsbridge

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/internal/testpki"
)

// selfSigned writes a self-signed certificate for names and its key into dir.
func selfSigned(t *testing.T, dir, base string, notAfter time.Time, names ...string) CertPair {
	t.Helper()
	c, key := (*testpki.CA)(nil).Issue(t, testpki.Leaf{CN: names[0], DNS: names, NotAfter: notAfter,
		EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	cf, kf := testpki.WritePair(t, dir, base, c, key)
	return CertPair{CertFile: cf, KeyFile: kf}
}

func TestLoadCertsErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	day := time.Now().Add(24 * time.Hour)
	a := selfSigned(t, dir, "a", day, "a.example")
	b := selfSigned(t, dir, "b", day, "b.example")
	enc := filepath.Join(dir, "enc.key")
	os.WriteFile(enc, []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n"), 0o600)
	notPEM := filepath.Join(dir, "junk.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)

	tests := []struct {
		pair CertPair
		want string
	}{
		{CertPair{a.CertFile, b.KeyFile}, "--key " + b.KeyFile + " does not belong to --cert " + a.CertFile},
		{CertPair{a.CertFile, enc}, "--key " + enc + " is encrypted"},
		{CertPair{notPEM, a.KeyFile}, "--cert " + notPEM + ": no PEM certificate"},
		{CertPair{a.CertFile, notPEM}, "--key " + notPEM + ": no PEM private key"},
		{CertPair{filepath.Join(dir, "missing.pem"), a.KeyFile}, "--cert: open "},
	}
	for _, tc := range tests {
		_, _, err := LoadCerts([]CertPair{tc.pair})
		if err == nil || !strings.Contains(flagText(err), tc.want) {
			t.Errorf("LoadCerts(%v) = %v, want %q", tc.pair, err, tc.want)
		}
	}
	if _, _, err := LoadCerts(nil); err == nil {
		t.Error("no pairs accepted")
	}
}

func TestCertStoreSNIAndReload(t *testing.T) {
	dir := t.TempDir()
	day := time.Now().Add(24 * time.Hour)
	a := selfSigned(t, dir, "a", day, "a.example")
	b := selfSigned(t, dir, "b", day, "b.example", "*.b.example")
	old := selfSigned(t, dir, "old", time.Now().Add(-time.Minute), "old.example")
	s, warns, err := LoadCerts([]CertPair{a, b, old})
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "expired") {
		t.Errorf("warnings = %v, want one about the expired certificate", warns)
	}
	pick := func(name string) string {
		c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: name, SupportedVersions: []uint16{tls.VersionTLS13},
			SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256}})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.Subject.CommonName
	}
	for name, want := range map[string]string{"a.example": "a.example", "x.b.example": "b.example", "": "a.example", "other": "a.example"} {
		if got := pick(name); got != want {
			t.Errorf("SNI %q got %s want %s", name, got, want)
		}
	}
	if s.Changed() {
		t.Error("Changed before any change")
	}
	// Renew a in place: same names, new key.
	time.Sleep(10 * time.Millisecond)
	renewed := selfSigned(t, t.TempDir(), "a", day, "a.example")
	for _, f := range [][2]string{{renewed.CertFile, a.CertFile}, {renewed.KeyFile, a.KeyFile}} {
		data, _ := os.ReadFile(f[0])
		os.WriteFile(f[1], data, 0o600)
	}
	if !s.Changed() {
		t.Fatal("Changed missed a renewed file")
	}
	before := s.Default().Leaf.SerialNumber
	if _, err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if s.Default().Leaf.SerialNumber.Cmp(before) == 0 {
		t.Error("Reload kept the old certificate")
	}
	// A broken renewal keeps the working certificate.
	os.WriteFile(a.KeyFile, []byte("garbage"), 0o600)
	if _, err := s.Reload(); err == nil {
		t.Error("Reload accepted a broken key")
	}
	if s.Default().Leaf.SerialNumber.Cmp(before) == 0 {
		t.Error("failed Reload dropped the good certificate")
	}
}

// A renewal that swaps in an expired certificate keeps the valid one in
// use; an expired one may replace another expired one.
func TestReloadRefusesExpired(t *testing.T) {
	dir := t.TempDir()
	a := selfSigned(t, dir, "a", time.Now().Add(24*time.Hour), "a.example")
	s, _, err := LoadCerts([]CertPair{a})
	if err != nil {
		t.Fatal(err)
	}
	good := s.Default().Leaf.SerialNumber
	put := func(p CertPair) {
		for _, f := range [][2]string{{p.CertFile, a.CertFile}, {p.KeyFile, a.KeyFile}} {
			data, _ := os.ReadFile(f[0])
			os.WriteFile(f[1], data, 0o600)
		}
	}
	put(selfSigned(t, t.TempDir(), "a", time.Now().Add(-time.Hour), "a.example"))
	_, err = s.Reload()
	var ve *CertValidityError
	if !errors.As(err, &ve) || !strings.HasPrefix(flagText(err), "--cert "+a.CertFile+" expired ") {
		t.Fatalf("Reload of an expired certificate: %v", err)
	}
	if s.Default().Leaf.SerialNumber.Cmp(good) != 0 {
		t.Fatal("the expired certificate replaced the valid one")
	}
	// Start from an expired one: a renewal as bad is taken, with a warning.
	s2, warns, err := LoadCerts([]CertPair{a})
	if err != nil || len(warns) != 1 {
		t.Fatalf("LoadCerts: %v %v", warns, err)
	}
	put(selfSigned(t, t.TempDir(), "a", time.Now().Add(-time.Minute), "a.example"))
	if warns, err := s2.Reload(); err != nil || len(warns) != 1 {
		t.Errorf("expired over expired: %v %v", warns, err)
	}
}
