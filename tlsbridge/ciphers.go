package tlsbridge

import "crypto/tls"

// serverCipherSuites is the TLS 1.2 policy: ECDHE key exchange (forward
// secrecy) with an AEAD cipher only. Go's defaults also accept the ECDHE
// AES-CBC-SHA1 suites, which are neither AEAD nor needed: every client that
// speaks TLS 1.2 (OpenSSL 1.0.1 and newer, GnuTLS 3, stunnel, socat, Go)
// offers AES-GCM. TLS 1.3 suites are not configurable and are all AEAD.
var serverCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}
