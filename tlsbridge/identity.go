package tlsbridge

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"strconv"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/certid"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/rsyncd"
)

// ClientVar is one exported variable.
type ClientVar struct{ Name, Value string }

// ClientVars returns the SSL_CLIENT_* variables for an admitted client
// certificate (nil: none was presented). Values are not yet checked:
// RsyncEnv leaves out the unsafe ones. SAN indexes stay the certificate's
// own, so SSL_CLIENT_SAN_DNS_1 is the second DNS name even when the first
// was left out: renumbering would hand a hook the wrong name.
func ClientVars(c *x509.Certificate) []ClientVar {
	if c == nil {
		return []ClientVar{{"SSL_CLIENT_VERIFY", "NONE"}}
	}
	cn, _ := certid.FirstCN(c.RawSubject)
	sum := sha256.Sum256(c.Raw)
	v := []ClientVar{
		{"SSL_CLIENT_VERIFY", "SUCCESS"},
		{"SSL_CLIENT_S_DN", certid.FormatDN(c.RawSubject)},
		{"SSL_CLIENT_S_DN_CN", cn},
		{"SSL_CLIENT_I_DN", certid.FormatDN(c.RawIssuer)},
		{"SSL_CLIENT_M_SERIAL", certid.FormatSerial(c)},
		{"SSL_CLIENT_V_START", certid.FormatCertTime(c.NotBefore)},
		{"SSL_CLIENT_V_END", certid.FormatCertTime(c.NotAfter)},
	}
	for i, d := range c.DNSNames {
		v = append(v, ClientVar{"SSL_CLIENT_SAN_DNS_" + strconv.Itoa(i), d})
	}
	for i, u := range c.URIs {
		v = append(v, ClientVar{"SSL_CLIENT_SAN_URI_" + strconv.Itoa(i), u.String()})
	}
	return append(v, ClientVar{"SSL_CLIENT_SPKI_SHA256", spkiHex(c)}, ClientVar{"SSL_CLIENT_CERT_SHA256", hex.EncodeToString(sum[:])})
}

// PinnedVars are the variables for a certificate admitted by its key's pin
// alone (pin-only mode). Everything inside such a certificate (subject,
// issuer, alternative names, serial, dates) is the client's own say-so:
// it signed the certificate itself, and can sign another for the same key
// naming anyone. So only what the admin vouched for is exported: the name
// given to the pin (--allow-spki NAME=PIN) as SSL_CLIENT_S_DN_CN, which the
// per-host recipes use, the key's pin as SSL_CLIENT_SPKI_SHA256, and the
// hash of what was presented as SSL_CLIENT_CERT_SHA256.
func PinnedVars(c *x509.Certificate, name string) []ClientVar {
	sum := sha256.Sum256(c.Raw)
	v := []ClientVar{{"SSL_CLIENT_VERIFY", "SUCCESS"}}
	if name != "" {
		v = append(v, ClientVar{"SSL_CLIENT_S_DN_CN", name})
	}
	return append(v, ClientVar{"SSL_CLIENT_SPKI_SHA256", spkiHex(c)}, ClientVar{"SSL_CLIENT_CERT_SHA256", hex.EncodeToString(sum[:])})
}

// spkiHex is the key's pin in lower-case hex, like SSL_CLIENT_CERT_SHA256
// (the --allow-spki form, base64, has "/" and "+" in it).
func spkiHex(c *x509.Certificate) string {
	pin := certid.PinOf(c)
	return hex.EncodeToString(pin[:])
}

// PinnedIdentity is the client= field for a certificate admitted by its
// pin alone: the admin's name for the pin, else the pin itself, never a
// name from inside the certificate.
func PinnedIdentity(c *x509.Certificate, name string) string {
	if name != "" {
		return name
	}
	return certid.PinOf(c).String()
}

// ClientIdentity is the client= field of the summary line: the
// certificate's CN when it is safe to show as is, else "-" (the log line
// about the left-out SSL_CLIENT_S_DN_CN says why).
func ClientIdentity(c *x509.Certificate) string {
	if c == nil {
		return "-"
	}
	if cn, ok := certid.FirstCN(c.RawSubject); ok && rsyncd.SafeEnvValue(cn) {
		return cn
	}
	return "-"
}
