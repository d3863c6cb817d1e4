// Package tlserr classifies network and crypto/tls errors for both sides,
// by type wherever Go gives one. Where crypto/tls returns only an
// errors.New or fmt.Errorf (a client offering only old versions, no shared
// cipher suite, no client certificate, a renegotiation attempt), the match
// on its text lives here alone, and tlserr_test.go provokes each of those
// errors from a real handshake, so a Go release that rewords one fails the
// tests instead of silently changing what the logs say.
package tlserr

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"
)

// IsTimeout reports a deadline or timeout anywhere in err's chain.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// IsClosed reports a peer that went away: EOF, an unexpected EOF, or a
// reset.
func IsClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// Alert is a TLS alert description (RFC 8446 section 6).
type Alert uint8

// The alerts the shim says something specific about.
const (
	AlertHandshakeFailure      Alert = 40
	AlertBadCertificate        Alert = 42
	AlertUnsupportedCert       Alert = 43
	AlertCertificateRevoked    Alert = 44
	AlertCertificateExpired    Alert = 45
	AlertCertificateUnknown    Alert = 46
	AlertUnknownCA             Alert = 48
	AlertAccessDenied          Alert = 49
	AlertProtocolVersion       Alert = 70
	AlertInsufficientSecurity  Alert = 71
	AlertUnrecognizedName      Alert = 112
	AlertCertificateRequired   Alert = 116
	AlertNoApplicationProtocol Alert = 120
)

var alertNames = map[Alert]string{
	0: "close notify", 10: "unexpected message", 20: "bad record MAC", 22: "record overflow",
	40: "handshake failure", 42: "bad certificate", 43: "unsupported certificate",
	44: "revoked certificate", 45: "expired certificate", 46: "unknown certificate",
	47: "illegal parameter", 48: "unknown certificate authority", 49: "access denied",
	50: "error decoding message", 51: "error decrypting message", 70: "protocol version not supported",
	71: "insufficient security level", 80: "internal error", 86: "inappropriate fallback",
	90: "user canceled", 109: "missing extension", 110: "unsupported extension",
	112: "unrecognized name", 116: "certificate required", 120: "no application protocol",
}

func (a Alert) String() string {
	if s, ok := alertNames[a]; ok {
		return s
	}
	return "alert(" + strconv.Itoa(int(a)) + ")"
}

// IsCertificate reports an alert about a certificate: the peer wants one
// it trusts.
func (a Alert) IsCertificate() bool {
	switch a {
	case AlertBadCertificate, AlertUnsupportedCert, AlertCertificateRevoked, AlertCertificateExpired,
		AlertCertificateUnknown, AlertUnknownCA, AlertAccessDenied, AlertCertificateRequired:
		return true
	}
	return false
}

// IsNegotiation reports an alert about versions or ciphers in common.
func (a Alert) IsNegotiation() bool {
	return a == AlertHandshakeFailure || a == AlertProtocolVersion || a == AlertInsufficientSecurity
}

// RemoteAlert returns the alert the peer sent, if err is one. crypto/tls
// reports a received alert as a *net.OpError with Op "remote error" around
// an unexported uint8 type; the number is read from that type, not from
// the error's text.
func RemoteAlert(err error) (Alert, bool) {
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "remote error" || oe.Err == nil {
		return 0, false
	}
	v := reflect.ValueOf(oe.Err)
	if v.Kind() != reflect.Uint8 {
		return 0, false
	}
	return Alert(v.Uint()), true
}

// The texts of crypto/tls errors that have no type of their own.
const (
	textOnlyVersions  = "client offered only unsupported versions: ["
	textNoCipher      = "no cipher suite supported by both"
	textNoClientCert  = "client didn't provide a certificate"
	textRenegotiation = "unexpected handshake message of type *tls.clientHelloMsg"
)

// OfferedVersions returns the wire versions a client offered when that was
// all it offered and none is acceptable; an empty list means crypto/tls
// found none it knows (an SSL 3.0 hello).
func OfferedVersions(err error) ([]uint16, bool) {
	if err == nil {
		return nil, false
	}
	msg := err.Error()
	i := strings.Index(msg, textOnlyVersions)
	if i < 0 {
		return nil, false
	}
	rest := msg[i+len(textOnlyVersions):]
	j := strings.IndexByte(rest, ']')
	if j < 0 {
		return nil, false
	}
	var vs []uint16
	for _, h := range strings.Fields(rest[:j]) {
		if v, err := strconv.ParseUint(h, 16, 16); err == nil {
			vs = append(vs, uint16(v))
		}
	}
	return vs, true
}

// NoSharedCipher reports a handshake that failed for want of a cipher
// suite both sides take.
func NoSharedCipher(err error) bool {
	return err != nil && strings.Contains(err.Error(), textNoCipher)
}

// NoClientCertificate reports a server handshake that failed because the
// client sent no certificate where one is required.
func NoClientCertificate(err error) bool {
	return err != nil && strings.Contains(err.Error(), textNoClientCert)
}

// Renegotiation reports a client's attempt to renegotiate after the
// handshake, which crypto/tls refuses as a server.
func Renegotiation(err error) bool {
	return err != nil && strings.Contains(err.Error(), textRenegotiation)
}

// VersionHuman spells a wire version as people say it ("TLS 1.0").
func VersionHuman(v uint16) string {
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
