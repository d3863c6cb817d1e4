package tlsbridge

import (
	"crypto/tls"
	"fmt"
)

// ParseMinTLS maps a lowest TLS version, "1.2" or "1.3", to crypto/tls's; only 1.2 and 1.3
// are offered, since older versions lack forward-secret AEAD suites.
func ParseMinTLS(s string) (uint16, error) {
	switch s {
	case "1.2", "":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("%q: give 1.2 or 1.3", s)
}

// ServerTLSConfig is the server's whole TLS policy: TLS 1.2 or newer,
// forward-secret AEAD suites only (serverCipherSuites), certificates from
// store, and the client-certificate policy (nil: none asked for).
//
// crypto/tls only collects the client's certificate (RequestClientCert,
// RequireAnyClientCert); client.VerifyConnection makes every decision, so
// the CA bundle, CRLs and allow-lists are checked in one place, with a log
// line that names the rule. It runs inside the handshake: a refused client
// gets a TLS alert, and rsync is never started for it.
func ServerTLSConfig(store *CertStore, minVersion uint16, client *ClientPolicy) *tls.Config {
	if minVersion < tls.VersionTLS12 {
		minVersion = tls.VersionTLS12
	}
	cfg := &tls.Config{
		MinVersion:     minVersion,
		CipherSuites:   serverCipherSuites,
		GetCertificate: store.GetCertificate,
		// rsync needs no session resumption across processes, and a
		// per-process ticket key would only make tickets useless. It
		// also keeps every connection's client certificate checked
		// afresh: a resumed session would skip the certificate.
		SessionTicketsDisabled: true,
	}
	if client == nil || client.Mode() == ClientAuthNone {
		return cfg
	}
	cfg.ClientAuth = tls.RequestClientCert
	if client.Mode() == ClientAuthRequire {
		// crypto/tls then refuses a client without a certificate itself,
		// with TLS 1.3's certificate_required alert.
		cfg.ClientAuth = tls.RequireAnyClientCert
	}
	// The CertificateRequest names our CAs, so a client holding several
	// certificates offers one we can verify. Only a hint: the decision
	// reads the CA bundle as last (re)loaded.
	cfg.ClientCAs = client.hint
	cfg.VerifyConnection = client.VerifyConnection
	return cfg
}

// VersionName spells a TLS version the way mod_ssl's SSL_PROTOCOL does.
func VersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	case 0x0300:
		return "SSLv3"
	}
	return fmt.Sprintf("0x%04x", v)
}
