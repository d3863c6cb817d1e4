package certid

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The formats below are mod_ssl's, so that an rsyncd.conf or hook written
// for Apache's variables reads ours the same way:
//   - SSL_CLIENT_S_DN / SSL_CLIENT_I_DN: RFC 2253, most specific first
//     ("CN=host-a,O=Example"), OpenSSL's short attribute names, UTF-8 kept
//     as is: what mod_ssl 2.4 prints without SSLOptions +LegacyDNStringFormat.
//   - SSL_CLIENT_M_SERIAL: upper-case hex, whole bytes (OpenSSL's BN_bn2hex).
//   - SSL_CLIENT_V_START / _V_END: "Jan  2 15:04:05 2026 GMT", day padded
//     with a space (OpenSSL's ASN1_TIME_print).
//   - SSL_CLIENT_CERT_SHA256 (no mod_ssl counterpart): lower-case hex
//     SHA-256 of the certificate's DER, what sha256sum prints for it.

// attrTypeValue and attrSET mirror RFC 5280's AttributeTypeAndValue and
// RelativeDistinguishedName with the value left raw: pkix.Name flattens
// multi-valued RDNs and loses the string type, and both shape the output.
type attrTypeValue struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

// attrSET is a SET OF (encoding/asn1 reads a slice type named *SET as one).
type attrSET []attrTypeValue

// shortNames are OpenSSL's short names for the attributes seen in
// certificate names; others print as a dotted OID.
var shortNames = map[string]string{
	"2.5.4.3":                    "CN",
	"2.5.4.4":                    "SN",
	"2.5.4.5":                    "serialNumber",
	"2.5.4.6":                    "C",
	"2.5.4.7":                    "L",
	"2.5.4.8":                    "ST",
	"2.5.4.9":                    "street",
	"2.5.4.10":                   "O",
	"2.5.4.11":                   "OU",
	"2.5.4.12":                   "title",
	"2.5.4.13":                   "description",
	"2.5.4.15":                   "businessCategory",
	"2.5.4.17":                   "postalCode",
	"2.5.4.41":                   "name",
	"2.5.4.42":                   "GN",
	"2.5.4.43":                   "initials",
	"2.5.4.44":                   "generationQualifier",
	"2.5.4.46":                   "dnQualifier",
	"2.5.4.65":                   "pseudonym",
	"2.5.4.97":                   "organizationIdentifier",
	"0.9.2342.19200300.100.1.1":  "UID",
	"0.9.2342.19200300.100.1.25": "DC",
	"1.2.840.113549.1.9.1":       "emailAddress",
}

var oidCN = asn1.ObjectIdentifier{2, 5, 4, 3}

func parseName(raw []byte) ([]attrSET, bool) {
	var seq []attrSET
	rest, err := asn1.Unmarshal(raw, &seq)
	if err != nil || len(rest) > 0 {
		return nil, false
	}
	return seq, true
}

// FormatDN formats a DER Name (a certificate's RawSubject or RawIssuer)
// as mod_ssl does by default. A name that does not parse formats as
// "#" and its hex.
func FormatDN(raw []byte) string {
	seq, ok := parseName(raw)
	if !ok {
		return "#" + hex.EncodeToString(raw)
	}
	// OpenSSL's XN_FLAG_DN_REV reverses the flat list of attributes, so
	// the values of a multi-valued RDN come out reversed too.
	var b strings.Builder
	for i := len(seq) - 1; i >= 0; i-- {
		if i != len(seq)-1 {
			b.WriteByte(',')
		}
		for j := len(seq[i]) - 1; j >= 0; j-- {
			atv := seq[i][j]
			if j != len(seq[i])-1 {
				b.WriteByte('+')
			}
			name, ok := shortNames[atv.Type.String()]
			if !ok {
				name = atv.Type.String()
			}
			b.WriteString(name)
			b.WriteByte('=')
			if s, ok := decodeString(atv.Value); ok {
				b.WriteString(escapeDNValue(s))
			} else {
				// RFC 2253: a value of a type without a string form is
				// "#" and the hex of its DER.
				b.WriteString("#" + strings.ToUpper(hex.EncodeToString(atv.Value.FullBytes)))
			}
		}
	}
	return b.String()
}

// FirstCN returns the first commonName in encoding order, as mod_ssl's
// SSL_CLIENT_S_DN_CN does; ok is false if there is none or it is not a
// string.
func FirstCN(raw []byte) (string, bool) {
	seq, ok := parseName(raw)
	if !ok {
		return "", false
	}
	for _, rdn := range seq {
		for _, atv := range rdn {
			if atv.Type.Equal(oidCN) {
				return decodeString(atv.Value)
			}
		}
	}
	return "", false
}

// decodeString reads the string types X.520 names use. Invalid UTF-8 is
// kept byte for byte; escapeDNValue escapes it.
func decodeString(v asn1.RawValue) (string, bool) {
	if v.Class != asn1.ClassUniversal || v.IsCompound {
		return "", false
	}
	switch v.Tag {
	case asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String, asn1.TagNumericString, 26: // 26: VisibleString
		return string(v.Bytes), true
	case asn1.TagT61String:
		// Read as Latin-1, as everyone does in practice.
		r := make([]rune, len(v.Bytes))
		for i, c := range v.Bytes {
			r[i] = rune(c)
		}
		return string(r), true
	case asn1.TagBMPString:
		if len(v.Bytes)%2 != 0 {
			return "", false
		}
		var b strings.Builder
		for i := 0; i < len(v.Bytes); i += 2 {
			b.WriteRune(rune(binary.BigEndian.Uint16(v.Bytes[i:])))
		}
		return b.String(), true
	case 28: // UniversalString
		if len(v.Bytes)%4 != 0 {
			return "", false
		}
		var b strings.Builder
		for i := 0; i < len(v.Bytes); i += 4 {
			b.WriteRune(rune(binary.BigEndian.Uint32(v.Bytes[i:])))
		}
		return b.String(), true
	}
	return "", false
}

// escapeDNValue escapes as RFC 2253 and OpenSSL's ASN1_STRFLGS_ESC_2253 |
// ESC_CTRL do: the specials with a backslash, a leading "#" or space and a
// trailing space likewise, control bytes and invalid UTF-8 as \XX.
// Anything escaped contains a backslash and so never passes SafeEnvValue.
func escapeDNValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, "\\%02X", s[i])
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\%02X", r)
		case strings.ContainsRune(",+\"\\<>;", r),
			i == 0 && (r == '#' || r == ' '),
			i+size == len(s) && r == ' ':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// FormatSerial spells a serial number as mod_ssl's SSL_CLIENT_M_SERIAL:
// upper-case hex in whole bytes ("0A" for 10), "-" for a negative one.
func FormatSerial(c *x509.Certificate) string {
	n := c.SerialNumber
	if n == nil {
		return "0"
	}
	sign := ""
	if n.Sign() < 0 {
		sign = "-"
	}
	b := n.Bytes()
	if len(b) == 0 {
		return "0"
	}
	return sign + strings.ToUpper(hex.EncodeToString(b))
}

// FormatCertTime spells a validity date as OpenSSL's ASN1_TIME_print, which
// mod_ssl uses for SSL_CLIENT_V_START and SSL_CLIENT_V_END.
func FormatCertTime(t time.Time) string {
	return t.UTC().Format("Jan _2 15:04:05 2006 GMT")
}

// maxLogText bounds a peer-supplied name in a log line.
const maxLogText = 160

// LogText makes a peer-supplied string fit for one log line: printable
// text as is, anything else quoted (control bytes escaped), and long text
// cut with its length noted.
func LogText(s string) string {
	long := len(s) > maxLogText
	cut := s
	if long {
		cut = s[:maxLogText]
		for len(cut) > 0 && !utf8.ValidString(cut) {
			cut = cut[:len(cut)-1]
		}
	}
	plain := utf8.ValidString(cut) && !strings.ContainsFunc(cut, func(r rune) bool {
		return r < 0x20 || r == 0x7f || r == '"' || (r >= 0x80 && r < 0xa0)
	})
	out := cut
	if !plain || long {
		out = strconv.QuoteToASCII(cut)
	}
	if long {
		out += fmt.Sprintf("...(%d bytes)", len(s))
	}
	return out
}
