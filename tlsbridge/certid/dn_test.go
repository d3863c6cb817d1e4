package certid

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/internal/testpki"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/rsyncd"
)

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
	ca := testpki.NewCA(t, dir, "Cross Check CA", nil)
	for i, n := range []pkix.Name{
		{Country: []string{"DE"}, Province: []string{"Berlin"}, Locality: []string{"Berlin"}, Organization: []string{"Example Corp"}, OrganizationalUnit: []string{"Backup"}, CommonName: "host-a.example.org"},
		{CommonName: "a,b+c;d", Organization: []string{" lead", "trail "}},
		{CommonName: "ünïcødé 日本", ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, Value: "ops@example.org"}, {Type: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, Value: "example"}}},
	} {
		c, _ := ca.Issue(t, testpki.Leaf{Subject: &n})
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
	// mod_ssl's day padding puts two spaces inside the value; the text
	// rule for dates and DNs takes them (the token rule would not).
	if !rsyncd.SafeEnvText(FormatCertTime(tm)) || !rsyncd.SafeEnvText(FormatCertTime(tm.AddDate(0, 0, 20))) {
		t.Error("a validity date does not pass rsyncd.SafeEnvText")
	}
}

// TestPinMatchesOpenSSL: an --allow-spki pin is what the documented
// openssl pipeline prints for the client's certificate.
func TestPinMatchesOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	ca := testpki.NewCA(t, dir, "CA", nil)
	c, _ := ca.Issue(t, testpki.Leaf{CN: "x"})
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

func TestLogText(t *testing.T) {
	for in, want := range map[string]string{
		"CN=host-a,O=Example": "CN=host-a,O=Example",
		"CN=$(id)":            "CN=$(id)",
		"CN=a\nb":             `"CN=a\nb"`,
		`CN=a"b`:              `"CN=a\"b"`,
		"CN=ü":                "CN=ü",
	} {
		if got := LogText(in); got != want {
			t.Errorf("LogText(%q) = %q, want %q", in, got, want)
		}
	}
	long := LogText("CN=" + strings.Repeat("x", 300))
	if !strings.HasSuffix(long, `"...(303 bytes)`) || len(long) > maxLogText+30 {
		t.Errorf("long: %q", long)
	}
}
