package tlsbridge

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// offeredVersions extracts the list from crypto/tls's "client offered only
// unsupported versions: [301 302]". Plain string work: a regexp compiled at
// start would cost every connection's process a third of a millisecond.
func offeredVersions(msg string) (string, bool) {
	const key = "client offered only unsupported versions: ["
	i := strings.Index(msg, key)
	if i < 0 {
		return "", false
	}
	rest := msg[i+len(key):]
	j := strings.IndexByte(rest, ']')
	if j < 0 {
		return "", false
	}
	return rest[:j], true
}

// explainHandshake turns crypto/tls's handshake error into what an admin
// needs to know about the client: which versions it offered, whether it
// hung up, timed out, or rejected our certificate.
//
// hello is the start of what the client sent, for what crypto/tls does not
// say: it reports a hello with no version it knows (SSL 3.0) as an empty
// list.
func explainHandshake(err error, timeout time.Duration, hello []byte) string {
	msg := err.Error()
	if list, ok := offeredVersions(msg); ok {
		var names []string
		if strings.TrimSpace(list) == "" {
			if v, ok := HelloVersion(hello); ok {
				names = append(names, versionHuman(v))
			} else {
				names = append(names, "versions older than TLS 1.2")
			}
		}
		for _, h := range strings.Fields(list) {
			v, perr := strconv.ParseUint(h, 16, 16)
			if perr != nil {
				continue
			}
			names = append(names, versionHuman(uint16(v)))
		}
		return "client offered only " + strings.Join(names, ", ") + "; TLS 1.2 or newer is required"
	}
	var ne net.Error
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return fmt.Sprintf("handshake not finished within %v", timeout)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "client closed the connection mid-handshake"
	case errors.Is(err, syscall.ECONNRESET):
		return "client reset the connection mid-handshake"
	case strings.Contains(msg, "no cipher suite supported by both"):
		return "no cipher suite in common with the client (we take AES-GCM or ChaCha20-Poly1305, with ECDHE under TLS 1.2)"
	case strings.Contains(msg, "remote error: tls: "):
		alert := msg[strings.Index(msg, "remote error: tls: ")+len("remote error: tls: "):]
		return "client rejected the handshake with alert \"" + alert + "\" (does it trust our certificate's CA and name?)"
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "not a TLS client hello"
	}
	return strings.TrimPrefix(msg, "tls: ")
}

// versionHuman spells a wire version as people say it.
func versionHuman(v uint16) string {
	switch v {
	case 0x0300:
		return "SSL 3.0"
	case 0x0301:
		return "TLS 1.0"
	case 0x0302:
		return "TLS 1.1"
	case 0x0303:
		return "TLS 1.2"
	case 0x0304:
		return "TLS 1.3"
	}
	return fmt.Sprintf("version 0x%04x", v)
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
	if strings.Contains(err.Error(), "unexpected handshake message of type *tls.clientHelloMsg") {
		return renegotiationError{err}
	}
	return err
}
