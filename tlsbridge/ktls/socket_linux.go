package ktls

import (
	"errors"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kernel TLS constants from linux/tls.h; golang.org/x/sys has SOL_TLS and
// TCP_ULP but neither these nor the crypto-info structs.
const (
	tlsTX            = 1
	tlsRX            = 2
	tlsSetRecordType = 1 // cmsg type on sendmsg
	tlsGetRecordType = 2 // cmsg type on recvmsg
	tlsRXNoPad       = 4 // TLS_RX_EXPECT_NO_PAD
)

// TLS record content types (RFC 8446 section 5.1).
const (
	RecordAlert       = 21
	RecordHandshake   = 22
	RecordApplication = 23
)

// Error is a failure to switch a socket to kernel TLS: Step names the
// setsockopt (or "keys", "socket"). Fallback says whether the socket is
// still a plain TCP socket, so that user-space TLS can carry on.
type Error struct {
	Step     string
	Err      error
	Fallback bool
}

func (e *Error) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// NoModule reports that the kernel has no tls module loaded (and this
// process may not load it).
func (e *Error) NoModule() bool { return e.Step == "TCP_ULP" && errors.Is(e.Err, unix.ENOENT) }

// NoCipher reports that the kernel lacks the cipher (the gcm module).
func (e *Error) NoCipher() bool { return e.Step == "TLS_TX" && errors.Is(e.Err, unix.ENOENT) }

// Enable attaches the TLS ULP to the socket and hands the kernel both
// directions' keys: txSecret is the traffic secret of what this end sends
// (the server's on a server), rxSecret that of what it receives. Until
// TLS_RX is set the socket still passes bytes through unchanged, so every
// failure before it can fall back.
func Enable(rc syscall.RawConn, suite uint16, txSecret, rxSecret []byte) error {
	tx, err := CryptoInfo(suite, txSecret)
	if err != nil {
		return &Error{"keys", err, true}
	}
	defer clear(tx)
	rx, err := CryptoInfo(suite, rxSecret)
	if err != nil {
		return &Error{"keys", err, true}
	}
	defer clear(rx)
	var kerr error
	cerr := rc.Control(func(fd uintptr) {
		if err := unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_ULP, "tls"); err != nil {
			kerr = &Error{"TCP_ULP", err, true}
			return
		}
		// The structs go to the kernel without a string copy
		// (unsafe.String shares their bytes), so that clearing tx and
		// rx leaves no key behind.
		if err := unix.SetsockoptString(int(fd), unix.SOL_TLS, tlsTX, unsafe.String(&tx[0], len(tx))); err != nil {
			kerr = &Error{"TLS_TX", err, true}
			return
		}
		if err := unix.SetsockoptString(int(fd), unix.SOL_TLS, tlsRX, unsafe.String(&rx[0], len(rx))); err != nil {
			kerr = &Error{"TLS_RX", err, false}
		}
	})
	if cerr != nil {
		return &Error{"socket", cerr, true}
	}
	return kerr
}

// RecordTypeCmsg is a control message naming the TLS record type of what
// sendmsg sends on a kernel TLS socket.
func RecordTypeCmsg(typ byte) []byte {
	b := make([]byte, unix.CmsgSpace(1))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_TLS
	h.Type = tlsSetRecordType
	h.SetLen(unix.CmsgLen(1))
	b[unix.CmsgLen(0)] = typ
	return b
}

// SendCloseNotify sends TLS close_notify through the kernel: an alert
// record (warning, close_notify) sealed under the session's next sequence
// number. Strict peers (ours, OpenSSL) treat an end without it as a
// truncation attack.
func SendCloseNotify(rc syscall.RawConn, deadline time.Time) error {
	oob := RecordTypeCmsg(RecordAlert)
	var serr error
	err := rc.Write(func(fd uintptr) bool {
		_, serr = unix.SendmsgN(int(fd), []byte{1, 0}, oob, nil, unix.MSG_DONTWAIT)
		return !(errors.Is(serr, unix.EAGAIN) && time.Now().Before(deadline))
	})
	if err != nil {
		return err
	}
	return serr
}

// PendingRecord peeks at the next record the kernel holds for the socket
// without consuming it: its type and first bytes. ok is false when nothing
// is waiting. A plain read(2) (rsync's) gets EIO for a record that is not
// application data; this says which it was.
func PendingRecord(rc syscall.RawConn) (typ byte, body []byte, ok bool) {
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(1))
	rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, err := unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT|unix.MSG_PEEK)
		if err != nil || n < 0 {
			return true
		}
		var perr error
		if typ, perr = recordType(oob[:oobn]); perr != nil {
			return true
		}
		body, ok = buf[:n], n > 0 || typ != RecordApplication
		return true
	})
	return typ, body, ok
}

// recordType reads the record type from recvmsg's control messages: the
// kernel adds one for every record that is not application data.
func recordType(oob []byte) (byte, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_TLS && m.Header.Type == tlsGetRecordType && len(m.Data) > 0 {
			return m.Data[0], nil
		}
	}
	return RecordApplication, nil
}

// ExpectNoPadding tells the kernel that the peer does not pad its TLS 1.3
// records, so that it can decrypt straight into the reader's buffer; a
// padded record is still read correctly, decrypted a second time. Kernels
// before 6.0 lack the option, which changes nothing but speed.
func ExpectNoPadding(rc syscall.RawConn) {
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_TLS, tlsRXNoPad, 1) })
}
