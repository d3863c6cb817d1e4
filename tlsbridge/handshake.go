package tlsbridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/ktls"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/rsyncd"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/tlserr"
)

// explainHandshake turns crypto/tls's handshake error into what an admin
// needs to know about the client: which versions it offered, whether it
// hung up, timed out, or rejected our certificate.
//
// hello is the start of what the client sent, for what crypto/tls does not
// say: it reports a hello with no version it knows (SSL 3.0) as an empty
// list. tap, when not nil, saw the records crypto/tls read: the last one
// is the record that failed.
func explainHandshake(err error, timeout time.Duration, hello []byte, tap *recordTap) string {
	if alert, ok := tap.plainAlert(); ok {
		// Whatever crypto/tls made of it (bad record MAC under TLS 1.3,
		// a record header error for a legacy version), the client said
		// why it stopped.
		return rejectedWith(alert)
	}
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
		return rejectedWith(alert)
	case errors.As(err, &rh) && rh.RecordHeader[0] != 0x16 && tap.firstRecord():
		// Not even a handshake record; an oversized handshake record
		// keeps crypto/tls's own words below.
		return "not a TLS client hello"
	}
	return strings.TrimPrefix(err.Error(), "tls: ")
}

// rejectedWith names the alert a client ended the handshake with.
func rejectedWith(alert tlserr.Alert) string {
	s := "client rejected the handshake with alert \"" + alert.String() + "\""
	if alert.IsCertificate() {
		s += " (does it trust our certificate's CA and name?)"
	}
	return s
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

// handshake reads the client's first bytes, answers whatever is not TLS in
// its own protocol, and runs the TLS handshake (with the client-certificate
// policy inside it) by deadline. ko, when not nil, readies the session for
// the kernel data path.
func (s *Server) handshake(ctx context.Context, raw net.Conn, deadline time.Time, ko *kernelOffer) (*tls.Conn, error) {
	pc, kind, err := sniff(newQuickAckConn(raw), deadline)
	if err != nil {
		return nil, fmt.Errorf("reading the client hello: %w", err)
	}
	answer := func(reply []byte) {
		raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
		raw.Write(reply)
		lingerClose(raw)
	}
	switch kind {
	case KindTLS:
	case KindEmpty:
		return nil, errors.New("client closed the connection without sending anything")
	case KindSilent:
		return nil, fmt.Errorf("client sent nothing within %v", s.HandshakeTimeout)
	case KindPlainRsync:
		answer(rsyncd.PlainClientAnswer(pc.buf))
		return nil, fmt.Errorf("plain rsync client (%q) on the TLS port; answered with @ERROR", firstLine(pc.buf))
	case KindHTTP:
		answer([]byte(httpAnswer))
		return nil, fmt.Errorf("HTTP request (%q) on the TLS port; answered 400", firstLine(pc.buf))
	case KindSSH:
		return nil, fmt.Errorf("SSH client (%q) on the TLS port", firstLine(pc.buf))
	case KindProxy:
		return nil, errors.New("PROXY protocol header from a peer not in --trusted-proxy")
	case KindSSLv2:
		return nil, errors.New("client sent an SSLv2-format hello (an SSLv2/SSLv3-era client); TLS 1.2 or newer is required")
	default:
		return nil, fmt.Errorf("not a TLS client hello (first bytes: %s)", describeFirstBytes(pc.buf))
	}

	hello := append([]byte(nil), pc.buf...)
	in := ko.input(pc)
	tap := &recordTap{r: in}
	tc := tls.Server(ktls.ReaderConn{Conn: in, R: tap}, ko.config(s.TLS))
	hctx, cancel := context.WithDeadline(ctx, deadline)
	err = tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		if ce, ok := AsClientCertError(err); ok {
			// The alert is on its way; closing with the client's
			// last flight unread would send a reset that can
			// overtake it, and the client would see a reset instead.
			lingerClose(raw)
			return nil, ce
		}
		tap.finishAlert(raw)
		return nil, errors.New(explainHandshake(err, s.HandshakeTimeout, hello, tap))
	}
	raw.SetDeadline(time.Time{})
	return tc, nil
}

func firstLine(b []byte) string {
	s := string(b)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}
