package tlsbridge

import (
	"crypto/tls"
	"strings"
	"testing"
)

func TestServerCipherSuitesForwardSecretAEAD(t *testing.T) {
	cfg := ServerTLSConfig(nil, tls.VersionTLS12, nil)
	if len(cfg.CipherSuites) == 0 {
		t.Fatal("the server leaves TLS 1.2 suites to Go's defaults, which include CBC suites")
	}
	secure := map[uint16]bool{}
	for _, s := range tls.CipherSuites() {
		secure[s.ID] = true
	}
	for _, id := range cfg.CipherSuites {
		name := tls.CipherSuiteName(id)
		if !secure[id] || !strings.HasPrefix(name, "TLS_ECDHE_") ||
			!(strings.Contains(name, "_GCM_") || strings.Contains(name, "CHACHA20_POLY1305")) {
			t.Errorf("suite %s is not ECDHE with an AEAD cipher", name)
		}
	}
}
