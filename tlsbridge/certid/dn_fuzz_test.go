package certid

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/rsyncd"
)

// unescapeDNValue undoes escapeDNValue, for the round-trip property.
func unescapeDNValue(s string) (string, bool) {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b = append(b, s[i])
			continue
		}
		if i+1 >= len(s) {
			return "", false
		}
		if strings.IndexByte(",+\"\\<>;# ", s[i+1]) >= 0 {
			b = append(b, s[i+1])
			i++
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", false
		}
		b = append(b, byte(v))
		i += 2
	}
	return string(b), true
}

// FuzzFormatDN feeds names built from arbitrary values, and arbitrary DER,
// to the formatter: it must not panic, must never emit a control byte (the
// value goes into a log line and rsync's environment), and must escape so
// that each value reads back exactly.
func FuzzFormatDN(f *testing.F) {
	f.Add("host-a", "Example Corp", []byte{0x30, 0x00})
	f.Add("a,b+c", " lead", []byte("junk"))
	f.Add("new\nline", "trail ", []byte{0x30, 0x03, 0x31, 0x01, 0x00})
	f.Add("\xff\xfe", "#x", []byte{})
	f.Fuzz(func(t *testing.T, cn, org string, der []byte) {
		FirstCN(der)
		if s := FormatDN(der); strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("control byte in %q", s)
		}
		if !utf8.ValidString(cn) || !utf8.ValidString(org) {
			return
		}
		name := pkix.Name{CommonName: cn, Organization: []string{org}}
		raw, err := asn1.Marshal(name.ToRDNSequence())
		if err != nil {
			return
		}
		got := FormatDN(raw)
		if strings.ContainsFunc(got, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("control byte in %q", got)
		}
		if v, ok := FirstCN(raw); cn != "" && (!ok || v != cn) {
			t.Fatalf("FirstCN = %q, %v; want %q", v, ok, cn)
		}
		wantPrefix := ""
		if cn != "" {
			wantPrefix = "CN=" + escapeDNValue(cn) + ","
		}
		if !strings.HasPrefix(got, wantPrefix+"O=") {
			t.Fatalf("FormatDN = %q, want prefix %q", got, wantPrefix+"O=")
		}
		for _, v := range []string{cn, org} {
			back, ok := unescapeDNValue(escapeDNValue(v))
			if !ok || back != v {
				t.Fatalf("escape(%q) = %q reads back as %q", v, escapeDNValue(v), back)
			}
		}
		// A value the sanitizer takes needed no escaping: what rsync
		// sees is the certificate's own text.
		if rsyncd.SafeEnvValue(got) && strings.Contains(got, `\`) {
			t.Fatalf("escaped DN %q passed the sanitizer", got)
		}
	})
}

// FuzzParsePin: the pin parser --allow-spki shares with the client's
// --pin accepts only what reads back to the same 32 bytes.
func FuzzParsePin(f *testing.F) {
	f.Add("sha256:" + base64.StdEncoding.EncodeToString(make([]byte, 32)))
	f.Add("sha256//" + base64.StdEncoding.EncodeToString(make([]byte, 32)))
	f.Add("sha256:AAAA")
	f.Add("sha1:xyz")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePin(s)
		if err != nil {
			return
		}
		b64 := base64.StdEncoding.EncodeToString(p[:])
		if s != p.String() && s != "sha256//"+b64 {
			t.Fatalf("%q accepted as %s", s, p)
		}
	})
}

func FuzzLogText(f *testing.F) {
	f.Add("CN=host-a")
	f.Add("CN=a\nb")
	f.Add(strings.Repeat("\xff", 400))
	f.Fuzz(func(t *testing.T, s string) {
		out := LogText(s)
		if strings.ContainsFunc(out, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("control byte in %q", out)
		}
		if len(out) > 4*maxLogText+40 {
			t.Fatalf("%d bytes out", len(out))
		}
	})
}
