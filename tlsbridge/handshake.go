package tlsbridge

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/tlserr"
)

// explainHandshake turns crypto/tls's handshake error into what an admin
// needs to know about the client: which versions it offered, whether it
// hung up, timed out, or rejected our certificate.
//
// hello is the start of what the client sent, for what crypto/tls does not
// say: it reports a hello with no version it knows (SSL 3.0) as an empty
// list.
func explainHandshake(err error, timeout time.Duration, hello []byte) string {
	if vs, ok := tlserr.OfferedVersions(err); ok {
		var names []string
		if len(vs) == 0 {
			if v, ok := HelloVersion(hello); ok {
				names = append(names, tlserr.VersionHuman(v))
			} else {
				names = append(names, "versions older than TLS 1.2")
			}
		}
		for _, v := range vs {
			names = append(names, tlserr.VersionHuman(v))
		}
		return "client offered only " + strings.Join(names, ", ") + "; TLS 1.2 or newer is required"
	}
	var rh tls.RecordHeaderError
	switch alert, isAlert := tlserr.RemoteAlert(err); {
	case tlserr.IsTimeout(err):
		return fmt.Sprintf("handshake not finished within %v", timeout)
	case errors.Is(err, syscall.ECONNRESET):
		return "client reset the connection mid-handshake"
	case tlserr.IsClosed(err):
		return "client closed the connection mid-handshake"
	case tlserr.NoSharedCipher(err):
		return "no cipher suite in common with the client (we take AES-GCM or ChaCha20-Poly1305, with ECDHE under TLS 1.2)"
	case isAlert:
		return "client rejected the handshake with alert \"" + alert.String() + "\" (does it trust our certificate's CA and name?)"
	case errors.As(err, &rh) && rh.RecordHeader[0] != 0x16:
		// Not even a handshake record; an oversized handshake record
		// keeps crypto/tls's own words below.
		return "not a TLS client hello"
	}
	return strings.TrimPrefix(err.Error(), "tls: ")
}

// HelloVersion reads the legacy client_version of a ClientHello at the
// start of b (TLS record header, then the handshake header).
func HelloVersion(b []byte) (uint16, bool) {
	if len(b) < 11 || b[0] != 0x16 || b[5] != 0x01 {
		return 0, false
	}
	return uint16(b[9])<<8 | uint16(b[10]), true
}

// renegotiationError is a client's attempt to renegotiate, which crypto/tls
// refuses as a server (so no renegotiation attack can splice data).
type renegotiationError struct{ err error }

func (e renegotiationError) Error() string {
	return "client tried to renegotiate TLS (refused, the session ends): " + e.err.Error()
}
func (e renegotiationError) Unwrap() error { return e.err }

// explainBridge names what crypto/tls reports in its own terms.
func explainBridge(err error) error {
	if tlserr.Renegotiation(err) {
		return renegotiationError{err}
	}
	return err
}
