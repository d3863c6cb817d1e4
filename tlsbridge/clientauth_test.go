package tlsbridge

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/internal/testpki"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/certid"
)

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
		{ClientAuthConfig{AllowSPKI: []string{"host-a=" + pin}}, ""},
		{ClientAuthConfig{AllowSPKI: []string{"host-a=sha256:AAAA"}}, `--allow-spki: pin "sha256:AAAA": want sha256: followed by 44 base64`},
		{ClientAuthConfig{AllowSPKI: []string{".=" + pin}}, `the name "." is exported as SSL_CLIENT_S_DN_CN, so it must be one token`},
		{ClientAuthConfig{AllowSPKI: []string{"a b=" + pin}}, `the name "a b" is exported`},
		{ClientAuthConfig{AllowSPKI: []string{"=" + pin}}, `the name "" is exported`},
		{ClientAuthConfig{AllowSPKI: []string{"a=" + pin, "b=" + pin}}, `is given twice, as "a" and "b"`},
		{ClientAuthConfig{CAFile: "ca.pem", AllowSPKI: []string{"host-a=" + pin}}, `a name for a pin is for pin-only mode`},
	}
	for _, tc := range tests {
		err := CheckClientAuth(tc.cfg)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(flagText(err), tc.want)):
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
	root := testpki.NewCA(t, dir, "Root CA", nil)
	inter := testpki.NewCA(t, dir, "Issuing CA", root)
	other := testpki.NewCA(t, dir, "Other CA", nil)
	// The bundle holds the root and the intermediate (which signs the
	// intermediate's CRL).
	bundle := filepath.Join(dir, "bundle.pem")
	a, _ := os.ReadFile(root.File)
	b, _ := os.ReadFile(inter.File)
	os.WriteFile(bundle, append(a, b...), 0o600)

	good, _ := inter.Issue(t, testpki.Leaf{CN: "host-a", DNS: []string{"Host-A.example.org"}, URIs: []string{"spiffe://example.org/host/a"}, Emails: []string{"Backup@Example.ORG"}})
	byRoot, _ := root.Issue(t, testpki.Leaf{CN: "host-r"})
	revoked, _ := inter.Issue(t, testpki.Leaf{CN: "host-revoked", Serial: 4242})
	foreign, _ := other.Issue(t, testpki.Leaf{CN: "host-a"})
	expired, _ := inter.Issue(t, testpki.Leaf{CN: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	future, _ := inter.Issue(t, testpki.Leaf{CN: "new", NotBefore: time.Now().Add(24 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour)})
	serverOnly, _ := inter.Issue(t, testpki.Leaf{CN: "web", EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	selfSigned, _ := (*testpki.CA)(nil).Issue(t, testpki.Leaf{CN: "laptop"})
	selfExpired, _ := (*testpki.CA)(nil).Issue(t, testpki.Leaf{CN: "laptop", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})

	freshCRL := inter.CRL(t, dir, "fresh.crl", time.Now().Add(24*time.Hour), true, big.NewInt(4242))
	staleCRL := inter.CRL(t, dir, "stale.crl", time.Now().Add(-time.Hour), false)
	chain := func(c *x509.Certificate) []*x509.Certificate { return []*x509.Certificate{c, inter.Cert} }

	tests := []struct {
		name  string
		cfg   ClientAuthConfig
		certs []*x509.Certificate
		want  string // "" admits; else a substring of the refusal
		warn  string
	}{
		{"good", ClientAuthConfig{CAFile: root.File}, chain(good), "", ""},
		{"good-by-root", ClientAuthConfig{CAFile: root.File}, []*x509.Certificate{byRoot}, "", ""},
		{"missing-intermediate", ClientAuthConfig{CAFile: root.File}, []*x509.Certificate{good}, "issued by CN=Issuing CA,O=Test, which is not in --client-ca", ""},
		{"other-ca", ClientAuthConfig{CAFile: root.File}, []*x509.Certificate{foreign}, "client certificate CN=host-a serial=", ""},
		{"other-ca-reason", ClientAuthConfig{CAFile: root.File}, []*x509.Certificate{foreign}, "refused: issued by CN=Other CA,O=Test, which is not in --client-ca", ""},
		{"expired", ClientAuthConfig{CAFile: root.File}, chain(expired), "refused: expired " + expired.NotAfter.UTC().Format(time.RFC3339), ""},
		{"not-yet-valid", ClientAuthConfig{CAFile: root.File}, chain(future), "refused: not valid before " + future.NotBefore.UTC().Format(time.RFC3339), ""},
		{"server-only-eku", ClientAuthConfig{CAFile: root.File}, chain(serverOnly), "not meant for client authentication", ""},
		{"revoked", ClientAuthConfig{CAFile: bundle, CRLFiles: []string{freshCRL}}, chain(revoked), "serial=1092 refused: revoked ", ""},
		{"not-revoked", ClientAuthConfig{CAFile: bundle, CRLFiles: []string{freshCRL}}, chain(good), "", ""},
		{"stale-warns", ClientAuthConfig{CAFile: bundle, CRLFiles: []string{staleCRL}}, chain(good), "", "--crl " + staleCRL + " is past its next update"},
		{"stale-strict", ClientAuthConfig{CAFile: bundle, CRLFiles: []string{staleCRL}, CRLStrict: true}, chain(good), "--crl " + staleCRL + " is past its next update", ""},
		{"stale-other-issuer", ClientAuthConfig{CAFile: bundle, CRLFiles: []string{staleCRL}, CRLStrict: true}, []*x509.Certificate{byRoot}, "", ""},
		{"allow-cn", ClientAuthConfig{CAFile: root.File, AllowCN: []string{"host-b", "host-a"}}, chain(good), "", ""},
		{"allow-cn-miss", ClientAuthConfig{CAFile: root.File, AllowCN: []string{"host-b"}}, chain(good), "client certificate CN=host-a serial=" + certid.FormatSerial(good) + " refused: not in --allow-cn", ""},
		{"allow-cn-case", ClientAuthConfig{CAFile: root.File, AllowCN: []string{"HOST-A"}}, chain(good), "not in --allow-cn", ""},
		{"allow-dns", ClientAuthConfig{CAFile: root.File, AllowDNS: []string{"host-a.example.org."}}, chain(good), "", ""},
		{"allow-dns-miss", ClientAuthConfig{CAFile: root.File, AllowDNS: []string{"host-b.example.org"}, AllowCN: []string{"x"}}, chain(good), "not in --allow-cn or --allow-dns", ""},
		{"allow-uri", ClientAuthConfig{CAFile: root.File, AllowURI: []string{"spiffe://example.org/host/a"}}, chain(good), "", ""},
		{"allow-uri-miss", ClientAuthConfig{CAFile: root.File, AllowURI: []string{"spiffe://example.org/host/b"}}, chain(good), "not in --allow-uri", ""},
		{"allow-email", ClientAuthConfig{CAFile: root.File, AllowEmail: []string{"Backup@example.org"}}, chain(good), "", ""},
		{"allow-email-local-part", ClientAuthConfig{CAFile: root.File, AllowEmail: []string{"backup@example.org"}}, chain(good), "not in --allow-email", ""},
		{"allow-spki", ClientAuthConfig{CAFile: root.File, AllowSPKI: []string{certid.PinOf(good).String()}}, chain(good), "", ""},
		{"allow-spki-miss", ClientAuthConfig{CAFile: root.File, AllowSPKI: []string{certid.PinOf(byRoot).String()}}, chain(good), "not in --allow-spki (its key is " + certid.PinOf(good).String() + ")", ""},
		{"allow-spki-needs-ca-too", ClientAuthConfig{CAFile: root.File, AllowSPKI: []string{certid.PinOf(foreign).String()}}, []*x509.Certificate{foreign}, "which is not in --client-ca", ""},
		{"pin-only", ClientAuthConfig{AllowSPKI: []string{certid.PinOf(selfSigned).String()}}, []*x509.Certificate{selfSigned}, "", ""},
		{"pin-only-ca-issued", ClientAuthConfig{AllowSPKI: []string{certid.PinOf(good).String()}}, chain(good), "", ""},
		{"pin-only-miss", ClientAuthConfig{AllowSPKI: []string{certid.PinOf(good).String()}}, []*x509.Certificate{selfSigned}, "client certificate CN=laptop serial=" + certid.FormatSerial(selfSigned) + " refused: not in --allow-spki", ""},
		{"pin-only-expired", ClientAuthConfig{AllowSPKI: []string{certid.PinOf(selfExpired).String()}}, []*x509.Certificate{selfExpired}, "refused: expired", ""},
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
	ca := testpki.NewCA(t, dir, "CA", nil)
	req, _ := NewClientPolicy(ClientAuthConfig{CAFile: ca.File})
	if err := req.VerifyConnection(tls.ConnectionState{}); err == nil || !strings.Contains(err.Error(), "client sent no certificate") {
		t.Errorf("require without a certificate: %v", err)
	}
	opt, _ := NewClientPolicy(ClientAuthConfig{CAFile: ca.File, Mode: "optional", AllowCN: []string{"a"}})
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
	ca := testpki.NewCA(t, dir, "CA", nil)
	other := testpki.NewCA(t, dir, "Other", nil)
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("not a crl"), 0o600)
	empty := filepath.Join(dir, "empty.pem")
	os.WriteFile(empty, []byte("nothing\n"), 0o600)
	otherCRL := other.CRL(t, dir, "other.crl", time.Now().Add(time.Hour), true)
	derCRL := ca.CRL(t, dir, "ca.der", time.Now().Add(time.Hour), false, big.NewInt(7))
	pemCRL := ca.CRL(t, dir, "ca.pem.crl", time.Now().Add(time.Hour), true, big.NewInt(7))

	for _, tc := range []struct {
		cfg  ClientAuthConfig
		want string
	}{
		{ClientAuthConfig{CAFile: filepath.Join(dir, "missing.pem")}, "--client-ca: open "},
		{ClientAuthConfig{CAFile: empty}, "--client-ca " + empty + ": no PEM certificate in it"},
		{ClientAuthConfig{CAFile: ca.File, CRLFiles: []string{junk}}, "--crl " + junk + ": not a CRL"},
		{ClientAuthConfig{CAFile: ca.File, CRLFiles: []string{otherCRL}}, "--crl " + otherCRL + ": issued by CN=Other,O=Test, which is not a certificate in --client-ca " + ca.File},
		{ClientAuthConfig{CAFile: ca.File, CRLFiles: []string{derCRL, pemCRL}}, ""},
	} {
		_, err := NewClientPolicy(tc.cfg)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.cfg, err)
			}
			continue
		}
		if err == nil || !strings.Contains(flagText(err), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.cfg, err, tc.want)
		}
		if errors.Is(err, ErrClientAuthUsage) {
			t.Errorf("%v: a file error is not a usage error", err)
		}
	}

	// A CRL that claims our CA's name but was signed by another key.
	impostor := &testpki.CA{Cert: ca.Cert, Key: other.Key}
	forged := filepath.Join(dir, "forged.crl")
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)}, impostor.Cert, impostor.Key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(forged, der, 0o600)
	if _, err := NewClientPolicy(ClientAuthConfig{CAFile: ca.File, CRLFiles: []string{forged}}); err == nil || !strings.Contains(err.Error(), "signature does not verify") {
		t.Errorf("forged CRL: %v", err)
	}
}

func TestClientPolicyReload(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, dir, "CA", nil)
	leaf, _ := ca.Issue(t, testpki.Leaf{CN: "a", Serial: 99})
	crl := ca.CRL(t, dir, "ca.crl", time.Now().Add(time.Hour), true)
	p, err := NewClientPolicy(ClientAuthConfig{CAFile: ca.File, CRLFiles: []string{crl}})
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
	ca.CRL(t, dir, "ca.crl", time.Now().Add(time.Hour), true, big.NewInt(99))
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

func TestRsyncEnvClient(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, dir, "Env CA", nil)
	c, _ := ca.Issue(t, testpki.Leaf{Subject: &pkix.Name{CommonName: "host-a", Organization: []string{"Example"}}, Serial: 0x1a2b,
		DNS: []string{"host-a.example.org", "bad/name.example", "host-a"}, URIs: []string{"urn:example:host-a", "spiffe://example.org/host/a"},
		NotBefore: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC), NotAfter: time.Date(2027, 3, 14, 5, 6, 7, 0, time.UTC)})
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
		c, _ := ca.Issue(t, testpki.Leaf{CN: cn})
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

// In pin-only mode nothing the client wrote into its certificate is
// exported: only the admin's name for the pin, the pin and the hash.
func TestPinnedVars(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, dir, "Self", nil)
	c, _ := ca.Issue(t, testpki.Leaf{Subject: &pkix.Name{CommonName: "host-b", Organization: []string{"Forged"}}, DNS: []string{"host-b"}})
	p, err := NewClientPolicy(ClientAuthConfig{AllowSPKI: []string{"host-a=" + certid.PinOf(c).String()}})
	if err != nil {
		t.Fatal(err)
	}
	if !p.PinOnly() || p.PinName(c) != "host-a" {
		t.Fatalf("PinOnly %v, PinName %q", p.PinOnly(), p.PinName(c))
	}
	pin := certid.PinOf(c)
	for name, want := range map[string]string{"host-a": "SSL_CLIENT_S_DN_CN=host-a ", "": ""} {
		env, dropped := RsyncEnv(nil, ConnInfo{Client: c, PinOnly: true, PinName: name})
		got := strings.Join(env, " ") + " "
		got = got[strings.Index(got, "SSL_CLIENT_"):]
		want = "SSL_CLIENT_VERIFY=SUCCESS " + want + "SSL_CLIENT_SPKI_SHA256=" + hex.EncodeToString(pin[:]) + " SSL_CLIENT_CERT_SHA256="
		if !strings.HasPrefix(got, want) || strings.Contains(got, "host-b") || strings.Contains(got, "Forged") || len(dropped) > 0 {
			t.Errorf("name %q: env %s, dropped %v", name, got, dropped)
		}
	}
	if id := PinnedIdentity(c, ""); id != pin.String() {
		t.Errorf("PinnedIdentity = %q", id)
	}
	ca2, err := NewClientPolicy(ClientAuthConfig{CAFile: ca.File, AllowSPKI: []string{pin.String()}})
	if err != nil || ca2.PinOnly() {
		t.Errorf("with --client-ca: PinOnly %v, %v", ca2.PinOnly(), err)
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
	ca := testpki.NewCA(t, dir, "Client CA", nil)
	good, goodKey := ca.Issue(t, testpki.Leaf{CN: "host-a"})
	other, otherKey := ca.Issue(t, testpki.Leaf{CN: "host-b"})
	policy, err := NewClientPolicy(ClientAuthConfig{CAFile: ca.File, AllowCN: []string{"host-a"}})
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
			{"not-allowed", other, otherKey, "client certificate CN=host-b serial=" + certid.FormatSerial(other) + " refused: not in --allow-cn", "bad certificate"},
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
