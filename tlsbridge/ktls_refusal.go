package tlsbridge

import (
	"crypto/tls"
	"fmt"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/ktls"
)

// KTLSRefusal says why a session with this TLS state cannot go to the
// kernel, or "" when it can.
func KTLSRefusal(st tls.ConnectionState) string {
	if st.Version != tls.VersionTLS13 {
		return fmt.Sprintf("the client negotiated %s; the kernel path takes TLS 1.3 only", VersionName(st.Version))
	}
	if !ktls.Covers(st.CipherSuite) {
		return fmt.Sprintf("cipher %s is not one the kernel path covers (AES-128-GCM, AES-256-GCM)", tls.CipherSuiteName(st.CipherSuite))
	}
	return ""
}
