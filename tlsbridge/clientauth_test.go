package tlsbridge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clientTestCA is a CA for the unit tests, made at run time.
type clientTestCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newClientTestCA(t *testing.T, dir, cn string, parent *clientTestCA) *clientTestCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Test"}},
		NotBefore:             time.Now().Add(-48 * time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	f := filepath.Join(dir, strings.ReplaceAll(cn, " ", "_")+".pem")
	os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	return &clientTestCA{cert: c, key: key, file: f}
}

type leafOpts struct {
	cn        string
	subject   *pkix.Name
	dns       []string
	uris      []string
	emails    []string
	notBefore time.Time
	notAfter  time.Time
	serial    int64
	eku       []x509.ExtKeyUsage
	key       *ecdsa.PrivateKey
}

// issue makes a leaf signed by ca (self-signed if ca is nil).
func (ca *clientTestCA) issue(t *testing.T, o leafOpts) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := o.key
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(o.serial),
		Subject:        pkix.Name{CommonName: o.cn},
		DNSNames:       o.dns,
		EmailAddresses: o.emails,
		NotBefore:      o.notBefore,
		NotAfter:       o.notAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    o.eku,
	}
	if o.subject != nil {
		tmpl.Subject = *o.subject
	}
	if o.serial == 0 {
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
	for _, u := range o.uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	parent, signKey := tmpl, key
	if ca != nil {
		parent, signKey = ca.cert, ca.key
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

// crl writes a CRL by ca revoking serials; pem selects the encoding.
func (ca *clientTestCA) crl(t *testing.T, dir, name string, nextUpdate time.Time, asPEM bool, serials ...*big.Int) string {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now().Add(-time.Minute).Truncate(time.Second)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(time.Now().UnixNano()),
		ThisUpdate:                time.Now().Add(-2 * time.Hour),
		NextUpdate:                nextUpdate,
		RevokedCertificateEntries: entries,
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, name)
	b := der
	if asPEM {
		b = pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	}
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestClientAuthUsage(t *testing.T) {
	pin := "sha256:" + strings.Repeat("A", 43) + "="
	tests := []struct {
		cfg  ClientAuthConfig
		want string // "" = accepted
	}{
		{ClientAuthConfig{}, ""},
		{ClientAuthConfig{Mode: "none"}, ""},
		{ClientAuthConfig{Mode: "require"}, "--client-auth require needs --client-ca FILE"},
		{ClientAuthConfig{Mode: "optional"}, "--client-auth optional needs --client-ca FILE"},
		{ClientAuthConfig{Mode: "sometimes", CAFile: "ca.pem"}, `--client-auth "sometimes": give none, optional or require`},
		{ClientAuthConfig{Mode: "none", CAFile: "ca.pem"}, "--client-auth none asks for no client certificate, so --client-ca would do nothing"},
		{ClientAuthConfig{AllowCN: []string{"a"}}, "--client-auth none asks for no client certificate, so --allow-cn would do nothing"},
		{ClientAuthConfig{CRLFiles: []string{"x.crl"}, CRLStrict: true}, "so --crl, --crl-strict would do nothing"},
		{ClientAuthConfig{AllowSPKI: []string{pin}, AllowCN: []string{"a"}}, "--allow-cn needs --client-ca FILE: without a CA anyone can put any name"},
		{ClientAuthConfig{AllowSPKI: []string{pin}, CRLFiles: []string{"x.crl"}}, "--crl needs --client-ca FILE"},
		{ClientAuthConfig{CAFile: "ca.pem", CRLStrict: true}, "--crl-strict needs --crl FILE"},
		{ClientAuthConfig{CAFile: "ca.pem", AllowCN: []string{""}}, `--allow-cn "": give a name`},
		{ClientAuthConfig{CAFile: "ca.pem", AllowSPKI: []string{"sha1:abc"}}, `--allow-spki: pin "sha1:abc": want sha256:BASE64`},
		{ClientAuthConfig{CAFile: "ca.pem", AllowSPKI: []string{"sha256:AAAA"}}, `--allow-spki: pin "sha256:AAAA": want sha256: followed by 44 base64 characters`},
		{ClientAuthConfig{CAFile: "ca.pem"}, ""},
		{ClientAuthConfig{AllowSPKI: []string{pin}}, ""},
		{ClientAuthConfig{Mode: "optional", AllowSPKI: []string{pin}}, ""},
	}
	for _, tc := range tests {
		err := CheckClientAuth(tc.cfg)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: got %v, want %q", tc.cfg, err, tc.want)
		case err != nil && !errors.Is(err, ErrClientAuthUsage):
			t.Errorf("%+v: %v does not wrap ErrClientAuthUsage", tc.cfg, err)
		}
	}
	// The default mode follows the flags.
	for _, tc := range []struct {
		cfg  ClientAuthConfig
		want ClientAuthMode
	}{
		{ClientAuthConfig{}, ClientAuthNone},
		{ClientAuthConfig{CAFile: "x"}, ClientAuthRequire},
		{ClientAuthConfig{AllowSPKI: []string{pin}}, ClientAuthRequire},
		{ClientAuthConfig{CAFile: "x", Mode: "optional"}, ClientAuthOptional},
	} {
		if m, _, _ := tc.cfg.resolve(); m != tc.want {
			t.Errorf("%+v: mode %v, want %v", tc.cfg, m, tc.want)
		}
	}
}

func TestClientPolicyCheck(t *testing.T) {
	dir := t.TempDir()
	root := newClientTestCA(t, dir, "Root CA", nil)
	inter := newClientTestCA(t, dir, "Issuing CA", root)
	other := newClientTestCA(t, dir, "Other CA", nil)
	// The bundle holds the root and the intermediate (which signs the
	// intermediate's CRL).
	bundle := filepath.Join(dir, "bundle.pem")
	a, _ := os.ReadFile(root.file)
	b, _ := os.ReadFile(inter.file)
	os.WriteFile(bundle, append(a, b...), 0o600)

	good, _ := inter.issue(t, leafOpts{cn: "host-a", dns: []string{"Host-A.example.org"}, uris: []string{"spiffe://example.org/host/a"}, emails: []string{"Backup@Example.ORG"}})
	byRoot, _ := root.issue(t, leafOpts{cn: "host-r"})
	revoked, _ := inter.issue(t, leafOpts{cn: "host-revoked", serial: 4242})
	foreign, _ := other.issue(t, leafOpts{cn: "host-a"})
	expired, _ := inter.issue(t, leafOpts{cn: "old", notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-24 * time.Hour)})
	future, _ := inter.issue(t, leafOpts{cn: "new", notBefore: time.Now().Add(24 * time.Hour), notAfter: time.Now().Add(48 * time.Hour)})
	serverOnly, _ := inter.issue(t, leafOpts{cn: "web", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	selfSigned, _ := (*clientTestCA)(nil).issue(t, leafOpts{cn: "laptop"})
	selfExpired, _ := (*clientTestCA)(nil).issue(t, leafOpts{cn: "laptop", notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-24 * time.Hour)})

	freshCRL := inter.crl(t, dir, "fresh.crl", time.Now().Add(24*time.Hour), true, big.NewInt(4242))
	staleCRL := inter.crl(t, dir, "stale.crl", time.Now().Add(-time.Hour), false)
	chain := func(c *x509.Certificate) []*x509.Certificate { return []*x509.Certificate{c, inter.cert} }

	tests := []struct {
		name  string
		cfg   ClientAuthConfig
		certs []*x509.Certificate
		want  string // "" admits; else a substring of the refusal
		warn  string
	}{
		{"good", ClientAuthConfig{CAFile: root.file}, chain(good), "", ""},
		{"good-by-root", ClientAuthConfig{CAFile: root.file}, []*x509.Certificate{byRoot}, "", ""},
		{"missing-intermediate", ClientAuthConfig{CAFile: root.file}, []*x509.Certificate{good}, "issued by CN=Issuing CA,O=Test, which is not in --client-ca", ""},
		{"other-ca", ClientAuthConfig{CAFile: root.file}, []*x509.Certificate{foreign}, "client certificate CN=host-a serial=", ""},
		{"other-ca-reason", ClientAuthConfig{CAFile: root.file}, []*x509.Certificate{foreign}, "refused: issued by CN=Other CA,O=Test, which is not in --client-ca", ""},
		{"expired", ClientAuthConfig{CAFile: root.file}, chain(expired), "refused: expired " + expired.NotAfter.UTC().Format(time.RFC3339), ""},
		{"not-yet-valid", ClientAuthConfig{CAFile: root.file}, chain(future), "refused: not valid before " + future.NotBefore.UTC().Format(time.RFC3339), ""},
		{"server-only-eku", ClientAuthConfig{CAFile: root.file}, chain(serverOnly), "not meant for client authentication", ""},
		{"revoked", ClientAuthConfig{CAFile: bundle, CRLFiles: []string{freshCRL}}, chain(revoked), "serial=1092 refused: revoked ", ""},
		{"not-revoked", ClientAuthConfig{CAFile: bundle, CRLFiles: []string{freshCRL}}, chain(good), "", ""},
		{"stale-warns", ClientAuthConfig{CAFile: bundle, CRLFiles: []string{staleCRL}}, chain(good), "", "--crl " + staleCRL + " is past its next update"},
		{"stale-strict", ClientAuthConfig{CAFile: bundle, CRLFiles: []string{staleCRL}, CRLStrict: true}, chain(good), "--crl " + staleCRL + " is past its next update", ""},
		{"stale-other-issuer", ClientAuthConfig{CAFile: bundle, CRLFiles: []string{staleCRL}, CRLStrict: true}, []*x509.Certificate{byRoot}, "", ""},
		{"allow-cn", ClientAuthConfig{CAFile: root.file, AllowCN: []string{"host-b", "host-a"}}, chain(good), "", ""},
		{"allow-cn-miss", ClientAuthConfig{CAFile: root.file, AllowCN: []string{"host-b"}}, chain(good), "client certificate CN=host-a serial=" + FormatSerial(good) + " refused: not in --allow-cn", ""},
		{"allow-cn-case", ClientAuthConfig{CAFile: root.file, AllowCN: []string{"HOST-A"}}, chain(good), "not in --allow-cn", ""},
		{"allow-dns", ClientAuthConfig{CAFile: root.file, AllowDNS: []string{"host-a.example.org."}}, chain(good), "", ""},
		{"allow-dns-miss", ClientAuthConfig{CAFile: root.file, AllowDNS: []string{"host-b.example.org"}, AllowCN: []string{"x"}}, chain(good), "not in --allow-cn or --allow-dns", ""},
		{"allow-uri", ClientAuthConfig{CAFile: root.file, AllowURI: []string{"spiffe://example.org/host/a"}}, chain(good), "", ""},
		{"allow-uri-miss", ClientAuthConfig{CAFile: root.file, AllowURI: []string{"spiffe://example.org/host/b"}}, chain(good), "not in --allow-uri", ""},
		{"allow-email", ClientAuthConfig{CAFile: root.file, AllowEmail: []string{"Backup@example.org"}}, chain(good), "", ""},
		{"allow-email-local-part", ClientAuthConfig{CAFile: root.file, AllowEmail: []string{"backup@example.org"}}, chain(good), "not in --allow-email", ""},
		{"allow-spki", ClientAuthConfig{CAFile: root.file, AllowSPKI: []string{PinOf(good).String()}}, chain(good), "", ""},
		{"allow-spki-miss", ClientAuthConfig{CAFile: root.file, AllowSPKI: []string{PinOf(byRoot).String()}}, chain(good), "not in --allow-spki (its key is " + PinOf(good).String() + ")", ""},
		{"allow-spki-needs-ca-too", ClientAuthConfig{CAFile: root.file, AllowSPKI: []string{PinOf(foreign).String()}}, []*x509.Certificate{foreign}, "which is not in --client-ca", ""},
		{"pin-only", ClientAuthConfig{AllowSPKI: []string{PinOf(selfSigned).String()}}, []*x509.Certificate{selfSigned}, "", ""},
		{"pin-only-ca-issued", ClientAuthConfig{AllowSPKI: []string{PinOf(good).String()}}, chain(good), "", ""},
		{"pin-only-miss", ClientAuthConfig{AllowSPKI: []string{PinOf(good).String()}}, []*x509.Certificate{selfSigned}, "client certificate CN=laptop serial=" + FormatSerial(selfSigned) + " refused: not in --allow-spki", ""},
		{"pin-only-expired", ClientAuthConfig{AllowSPKI: []string{PinOf(selfExpired).String()}}, []*x509.Certificate{selfExpired}, "refused: expired", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewClientPolicy(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = p.VerifyConnection(tls.ConnectionState{PeerCertificates: tc.certs})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("admitted, want %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("got %q, want %q", err, tc.want)
			}
			if err != nil {
				if msg, ok := ExplainClientCert(err); !ok || msg != err.Error() {
					t.Errorf("ExplainClientCert = %q, %v", msg, ok)
				}
				return
			}
			w := strings.Join(p.Warnings(tc.certs), "\n")
			if (tc.warn == "") != (w == "") || !strings.Contains(w, tc.warn) {
				t.Errorf("warnings %q, want %q", w, tc.warn)
			}
		})
	}
}

func TestClientPolicyNoCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := newClientTestCA(t, dir, "CA", nil)
	req, _ := NewClientPolicy(ClientAuthConfig{CAFile: ca.file})
	if err := req.VerifyConnection(tls.ConnectionState{}); err == nil || !strings.Contains(err.Error(), "client sent no certificate") {
		t.Errorf("require without a certificate: %v", err)
	}
	opt, _ := NewClientPolicy(ClientAuthConfig{CAFile: ca.file, Mode: "optional", AllowCN: []string{"a"}})
	if err := opt.VerifyConnection(tls.ConnectionState{}); err != nil {
		t.Errorf("optional without a certificate: %v", err)
	}
	none, err := NewClientPolicy(ClientAuthConfig{})
	if none != nil || err != nil {
		t.Errorf("no flags: %v %v, want nil policy", none, err)
	}
}

func TestClientPolicyFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newClientTestCA(t, dir, "CA", nil)
	other := newClientTestCA(t, dir, "Other", nil)
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("not a crl"), 0o600)
	empty := filepath.Join(dir, "empty.pem")
	os.WriteFile(empty, []byte("nothing\n"), 0o600)
	otherCRL := other.crl(t, dir, "other.crl", time.Now().Add(time.Hour), true)
	derCRL := ca.crl(t, dir, "ca.der", time.Now().Add(time.Hour), false, big.NewInt(7))
	pemCRL := ca.crl(t, dir, "ca.pem.crl", time.Now().Add(time.Hour), true, big.NewInt(7))

	for _, tc := range []struct {
		cfg  ClientAuthConfig
		want string
	}{
		{ClientAuthConfig{CAFile: filepath.Join(dir, "missing.pem")}, "--client-ca: open "},
		{ClientAuthConfig{CAFile: empty}, "--client-ca " + empty + ": no PEM certificate in it"},
		{ClientAuthConfig{CAFile: ca.file, CRLFiles: []string{junk}}, "--crl " + junk + ": not a CRL"},
		{ClientAuthConfig{CAFile: ca.file, CRLFiles: []string{otherCRL}}, "--crl " + otherCRL + ": issued by CN=Other,O=Test, which is not a certificate in --client-ca " + ca.file},
		{ClientAuthConfig{CAFile: ca.file, CRLFiles: []string{derCRL, pemCRL}}, ""},
	} {
		_, err := NewClientPolicy(tc.cfg)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.cfg, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.cfg, err, tc.want)
		}
		if errors.Is(err, ErrClientAuthUsage) {
			t.Errorf("%v: a file error is not a usage error", err)
		}
	}

	// A CRL that claims our CA's name but was signed by another key.
	impostor := &clientTestCA{cert: ca.cert, key: other.key}
	forged := filepath.Join(dir, "forged.crl")
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)}, impostor.cert, impostor.key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(forged, der, 0o600)
	if _, err := NewClientPolicy(ClientAuthConfig{CAFile: ca.file, CRLFiles: []string{forged}}); err == nil || !strings.Contains(err.Error(), "signature does not verify") {
		t.Errorf("forged CRL: %v", err)
	}
}

func TestClientPolicyReload(t *testing.T) {
	dir := t.TempDir()
	ca := newClientTestCA(t, dir, "CA", nil)
	leaf, _ := ca.issue(t, leafOpts{cn: "a", serial: 99})
	crl := ca.crl(t, dir, "ca.crl", time.Now().Add(time.Hour), true)
	p, err := NewClientPolicy(ClientAuthConfig{CAFile: ca.file, CRLFiles: []string{crl}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Changed() {
		t.Fatal("Changed right after loading")
	}
	if err := p.Check([]*x509.Certificate{leaf}); err != nil {
		t.Fatal(err)
	}
	// The CA reissues its CRL with the leaf revoked.
	ca.crl(t, dir, "ca.crl", time.Now().Add(time.Hour), true, big.NewInt(99))
	os.Chtimes(crl, time.Now().Add(time.Minute), time.Now().Add(time.Minute))
	if !p.Changed() {
		t.Fatal("Changed missed the new CRL")
	}
	if err := p.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := p.Check([]*x509.Certificate{leaf}); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("after reload: %v", err)
	}
	// A broken CRL keeps the one in use.
	os.WriteFile(crl, []byte("truncated"), 0o600)
	if err := p.Reload(); err == nil {
		t.Fatal("reload of a broken CRL succeeded")
	}
	if err := p.Check([]*x509.Certificate{leaf}); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("after failed reload: %v", err)
	}
}

func TestFormatDN(t *testing.T) {
	bmp := asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagBMPString, Bytes: []byte{0, 'B', 0, 0xe9}}
	tests := []struct {
		name pkix.Name
		want string
	}{
		{pkix.Name{CommonName: "host-a"}, "CN=host-a"},
		{pkix.Name{Country: []string{"DE"}, Organization: []string{"Example Corp"}, OrganizationalUnit: []string{"Backup"}, CommonName: "host-a"}, "CN=host-a,OU=Backup,O=Example Corp,C=DE"},
		{pkix.Name{CommonName: "a,b+c"}, `CN=a\,b\+c`},
		{pkix.Name{CommonName: " #lead"}, `CN=\ #lead`},
		{pkix.Name{CommonName: "#x"}, `CN=\#x`},
		{pkix.Name{CommonName: "trail "}, `CN=trail\ `},
		{pkix.Name{CommonName: "new\nline"}, `CN=new\0Aline`},
		{pkix.Name{CommonName: "ünï"}, "CN=ünï"},
		{pkix.Name{CommonName: `q"<>;\`}, `CN=q\"\<\>\;\\`},
		{pkix.Name{CommonName: "x", ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, Value: "a@b.example"}}}, "emailAddress=a@b.example,CN=x"},
		{pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{1, 2, 3, 4}, Value: 5}}}, "1.2.3.4=#020105"},
		{pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidCN, Value: bmp}}}, "CN=Bé"},
	}
	for _, tc := range tests {
		raw, err := asn1.Marshal(tc.name.ToRDNSequence())
		if err != nil {
			t.Fatal(err)
		}
		if got := FormatDN(raw); got != tc.want {
			t.Errorf("FormatDN(%v) = %q, want %q", tc.name, got, tc.want)
		}
	}
	// A multi-valued RDN joins with "+", its values reversed as OpenSSL
	// prints them (DER sorts a SET: CN's shorter encoding comes first).
	seq := pkix.RDNSequence{
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 10}, Value: "Org"}},
		{{Type: oidCN, Value: "a"}, {Type: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}, Value: "u1"}},
	}
	raw, _ := asn1.Marshal(seq)
	if got := FormatDN(raw); got != "UID=u1+CN=a,O=Org" {
		t.Errorf("multi-valued RDN: %q", got)
	}
	if cn, ok := FirstCN(raw); !ok || cn != "a" {
		t.Errorf("FirstCN = %q, %v", cn, ok)
	}
	if got := FormatDN([]byte{1, 2}); got != "#0102" {
		t.Errorf("unparsable name: %q", got)
	}
}

// TestFormatDNMatchesOpenSSL checks FormatDN against what mod_ssl prints:
// OpenSSL's X509_NAME_print_ex with XN_FLAG_RFC2253 minus ESC_MSB.
func TestFormatDNMatchesOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	ca := newClientTestCA(t, dir, "Cross Check CA", nil)
	for i, n := range []pkix.Name{
		{Country: []string{"DE"}, Province: []string{"Berlin"}, Locality: []string{"Berlin"}, Organization: []string{"Example Corp"}, OrganizationalUnit: []string{"Backup"}, CommonName: "host-a.example.org"},
		{CommonName: "a,b+c;d", Organization: []string{" lead", "trail "}},
		{CommonName: "ünïcødé 日本", ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, Value: "ops@example.org"}, {Type: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, Value: "example"}}},
	} {
		c, _ := ca.issue(t, leafOpts{subject: &n})
		f := filepath.Join(dir, "c.pem")
		os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o600)
		out, err := exec.Command(openssl, "x509", "-in", f, "-noout", "-subject", "-nameopt", "RFC2253,-esc_msb").Output()
		if err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSuffix(strings.TrimPrefix(string(out), "subject="), "\n")
		if got := FormatDN(c.RawSubject); got != want {
			t.Errorf("%d: FormatDN = %q, openssl = %q", i, got, want)
		}
	}
}

func TestFormatSerialAndTime(t *testing.T) {
	for _, tc := range []struct {
		n    *big.Int
		want string
	}{
		{big.NewInt(10), "0A"}, {big.NewInt(0), "0"}, {big.NewInt(0x1234), "1234"}, {big.NewInt(-5), "-05"},
		{new(big.Int).Lsh(big.NewInt(1), 64), "010000000000000000"},
	} {
		if got := FormatSerial(&x509.Certificate{SerialNumber: tc.n}); got != tc.want {
			t.Errorf("FormatSerial(%v) = %q, want %q", tc.n, got, tc.want)
		}
	}
	tm := time.Date(2026, 1, 2, 15, 4, 5, 0, time.FixedZone("X", 3600))
	if got := FormatCertTime(tm); got != "Jan  2 14:04:05 2026 GMT" {
		t.Errorf("FormatCertTime = %q", got)
	}
	// mod_ssl's day padding puts two spaces inside the value; the
	// sanitizer takes them (only leading and trailing ones are refused).
	if !SafeEnvValue(FormatCertTime(tm)) || !SafeEnvValue(FormatCertTime(tm.AddDate(0, 0, 20))) {
		t.Error("a validity date does not pass SafeEnvValue")
	}
}

// TestPinMatchesOpenSSL: an --allow-spki pin is what the documented
// openssl pipeline prints for the client's certificate.
func TestPinMatchesOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	ca := newClientTestCA(t, dir, "CA", nil)
	c, _ := ca.issue(t, leafOpts{cn: "x"})
	f := filepath.Join(dir, "c.pem")
	os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o600)
	out, err := exec.Command("sh", "-c", "openssl x509 -in "+f+" -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | base64").Output()
	if err != nil {
		t.Fatal(err)
	}
	pin := "sha256:" + strings.TrimSpace(string(out))
	if got := PinOf(c).String(); got != pin {
		t.Errorf("openssl pipeline gives %s, PinOf %s", pin, got)
	}
	if p, err := ParsePin(pin); err != nil || p != PinOf(c) {
		t.Errorf("ParsePin(%s) = %v, %v", pin, p, err)
	}
}

func TestRsyncEnvClient(t *testing.T) {
	dir := t.TempDir()
	ca := newClientTestCA(t, dir, "Env CA", nil)
	c, _ := ca.issue(t, leafOpts{subject: &pkix.Name{CommonName: "host-a", Organization: []string{"Example"}}, serial: 0x1a2b,
		dns: []string{"host-a.example.org", "bad/name.example", "host-a"}, uris: []string{"urn:example:host-a", "spiffe://example.org/host/a"},
		notBefore: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC), notAfter: time.Date(2027, 3, 14, 5, 6, 7, 0, time.UTC)})
	base := []string{"PATH=/usr/bin", "SSL_CLIENT_VERIFY=SUCCESS", "SSL_CLIENT_S_DN_CN=forged"}
	ci := ConnInfo{Remote: netip.MustParseAddrPort("203.0.113.7:51234"), Local: netip.MustParseAddrPort("192.0.2.1:874"), Client: c}
	env, dropped := RsyncEnv(base, ci)
	joined := "\n" + strings.Join(env, "\n") + "\n"
	for _, want := range []string{
		"SSL_CLIENT_VERIFY=SUCCESS", "SSL_CLIENT_S_DN=CN=host-a,O=Example", "SSL_CLIENT_S_DN_CN=host-a", "SSL_CLIENT_I_DN=CN=Env CA,O=Test",
		"SSL_CLIENT_M_SERIAL=1A2B", "SSL_CLIENT_V_START=Mar  4 05:06:07 2026 GMT", "SSL_CLIENT_V_END=Mar 14 05:06:07 2027 GMT",
		"SSL_CLIENT_SAN_DNS_0=host-a.example.org", "SSL_CLIENT_SAN_DNS_2=host-a", "SSL_CLIENT_SAN_URI_0=urn:example:host-a",
		"SSL_CLIENT_CERT_SHA256=" + ClientVars(c)[len(ClientVars(c))-1].Value,
	} {
		if !strings.Contains(joined, "\n"+want+"\n") {
			t.Errorf("env lacks %s:%s", want, joined)
		}
	}
	if strings.Contains(joined, "forged") || strings.Contains(joined, "SAN_DNS_1") || strings.Contains(joined, "SAN_URI_1") {
		t.Errorf("env has a forged or unsafe value:%s", joined)
	}
	if strings.Join(dropped, " ") != "SSL_CLIENT_SAN_DNS_1 SSL_CLIENT_SAN_URI_1" {
		t.Errorf("dropped = %v", dropped)
	}
	if len(ClientVars(c)[len(ClientVars(c))-1].Value) != 64 {
		t.Error("SSL_CLIENT_CERT_SHA256 is not 64 hex digits")
	}

	// Unsafe CNs: the CN and the DN are left out, the rest stays.
	for _, cn := range []string{"../../etc", "$(id)", "new\nline", strings.Repeat("x", 300)} {
		c, _ := ca.issue(t, leafOpts{cn: cn})
		env, dropped := RsyncEnv(nil, ConnInfo{Client: c})
		joined := strings.Join(env, "\n")
		if strings.Contains(joined, "SSL_CLIENT_S_DN") || !strings.Contains(joined, "SSL_CLIENT_VERIFY=SUCCESS") || !strings.Contains(joined, "SSL_CLIENT_M_SERIAL=") {
			t.Errorf("CN %q: env %s", cn, joined)
		}
		if strings.Join(dropped, " ") != "SSL_CLIENT_S_DN SSL_CLIENT_S_DN_CN" {
			t.Errorf("CN %q: dropped %v", cn, dropped)
		}
		if id := ClientIdentity(c); id != "-" {
			t.Errorf("CN %q: identity %q", cn, id)
		}
	}
	// No certificate: NONE and nothing else of the client.
	env, _ = RsyncEnv(nil, ConnInfo{})
	if j := strings.Join(env, "\n"); !strings.Contains(j, "SSL_CLIENT_VERIFY=NONE") || strings.Contains(j, "SSL_CLIENT_S_DN") {
		t.Errorf("no client: %s", j)
	}
}

func TestLogText(t *testing.T) {
	for in, want := range map[string]string{
		"CN=host-a,O=Example": "CN=host-a,O=Example",
		"CN=$(id)":            "CN=$(id)",
		"CN=a\nb":             `"CN=a\nb"`,
		`CN=a"b`:              `"CN=a\"b"`,
		"CN=ü":                "CN=ü",
	} {
		if got := logText(in); got != want {
			t.Errorf("logText(%q) = %q, want %q", in, got, want)
		}
	}
	long := logText("CN=" + strings.Repeat("x", 300))
	if !strings.HasSuffix(long, `"...(303 bytes)`) || len(long) > maxLogText+30 {
		t.Errorf("long: %q", long)
	}
}

// TestHandshakeRefusal runs real handshakes through ServerTLSConfig: a
// refused client gets an alert and the server error explains the rule.
func TestHandshakeRefusal(t *testing.T) {
	dir := t.TempDir()
	srvPair := selfSigned(t, dir, "srv", time.Now().Add(time.Hour), "localhost")
	store, _, err := LoadCerts([]CertPair{srvPair})
	if err != nil {
		t.Fatal(err)
	}
	ca := newClientTestCA(t, dir, "Client CA", nil)
	good, goodKey := ca.issue(t, leafOpts{cn: "host-a"})
	other, otherKey := ca.issue(t, leafOpts{cn: "host-b"})
	policy, err := NewClientPolicy(ClientAuthConfig{CAFile: ca.file, AllowCN: []string{"host-a"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ver := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, tc := range []struct {
			name      string
			cert      *x509.Certificate
			key       *ecdsa.PrivateKey
			srvWant   string
			alertWant string
		}{
			{"good", good, goodKey, "", ""},
			{"not-allowed", other, otherKey, "client certificate CN=host-b serial=" + FormatSerial(other) + " refused: not in --allow-cn", "bad certificate"},
			{"no-cert", nil, nil, "client sent no certificate; --client-auth require needs one", map[uint16]string{tls.VersionTLS12: "handshake failure", tls.VersionTLS13: "certificate required"}[ver]},
		} {
			t.Run(VersionName(ver)+"/"+tc.name, func(t *testing.T) {
				cfg := ServerTLSConfig(store, ver, policy)
				cfg.MaxVersion = ver
				cc := &tls.Config{InsecureSkipVerify: true, MaxVersion: ver}
				if tc.cert != nil {
					cc.Certificates = []tls.Certificate{{Certificate: [][]byte{tc.cert.Raw}, PrivateKey: tc.key}}
				}
				c1, c2 := net.Pipe()
				srvErr := make(chan error, 1)
				go func() {
					s := tls.Server(c1, cfg)
					err := s.HandshakeContext(context.Background())
					if err == nil {
						s.Write([]byte("ok"))
					}
					c1.Close()
					srvErr <- err
				}()
				cl := tls.Client(c2, cc)
				c2.SetDeadline(time.Now().Add(10 * time.Second))
				err := cl.Handshake()
				if err == nil {
					// TLS 1.3: the client is done before the server
					// has seen its certificate; the alert comes on
					// the first read.
					buf := make([]byte, 2)
					_, err = cl.Read(buf)
				}
				c2.Close()
				serr := <-srvErr
				if tc.srvWant == "" {
					if serr != nil || err != nil {
						t.Fatalf("server %v, client %v", serr, err)
					}
					return
				}
				msg, ok := ExplainClientCert(serr)
				if !ok || msg != tc.srvWant {
					t.Errorf("server: %q (%v), want %q", msg, serr, tc.srvWant)
				}
				if err == nil || !strings.Contains(err.Error(), tc.alertWant) {
					t.Errorf("client: %v, want alert %q", err, tc.alertWant)
				}
			})
		}
	}
}
