package tlsbridge

import (
	"errors"
	"fmt"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kernel TLS constants from linux/tls.h; golang.org/x/sys has SOL_TLS and
// TCP_ULP but neither these nor the crypto-info structs.
const (
	tlsTX             = 1
	tlsRX             = 2
	tlsSetRecordType  = 1 // cmsg type on sendmsg
	tlsGetRecordType  = 2 // cmsg type on recvmsg
	tls13Version      = 0x0304
	tlsCipherAESGCM   = 51 // TLS_CIPHER_AES_GCM_128
	tlsCipherAESGCM25 = 52 // TLS_CIPHER_AES_GCM_256

	recordAlert       = 21
	recordHandshake   = 22
	recordApplication = 23
)

// ktlsError is a failure to switch a socket to kernel TLS. fallback says
// whether the socket is still a plain TCP socket, so the bridge can take
// the session over.
type ktlsError struct {
	step     string
	err      error
	fallback bool
}

func (e *ktlsError) Error() string { return e.step + ": " + e.err.Error() }
func (e *ktlsError) Unwrap() error { return e.err }

// explain says what a failed switch means for the admin.
func (e *ktlsError) explain() string {
	switch {
	case e.step == "TCP_ULP" && errors.Is(e.err, unix.ENOENT):
		return noTLSModule
	case e.step == "TLS_TX" && errors.Is(e.err, unix.ENOENT):
		return "the kernel lacks the AES-GCM cipher for TLS (setsockopt TLS_TX: ENOENT; load the gcm module)"
	}
	return "switching the socket to kernel TLS failed: " + e.Error()
}

// enableKTLS attaches the TLS ULP to the socket and hands the kernel both
// directions' keys. Until TLS_RX is set the socket still passes bytes
// through unchanged, so every failure before it can fall back.
func enableKTLS(rc syscall.RawConn, suite uint16, clientSecret, serverSecret []byte) error {
	tx, err := cryptoInfo(suite, serverSecret)
	if err != nil {
		return &ktlsError{"keys", err, true}
	}
	defer clear(tx)
	rx, err := cryptoInfo(suite, clientSecret)
	if err != nil {
		return &ktlsError{"keys", err, true}
	}
	defer clear(rx)
	var kerr error
	cerr := rc.Control(func(fd uintptr) {
		if err := unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_ULP, "tls"); err != nil {
			kerr = &ktlsError{"TCP_ULP", err, true}
			return
		}
		// The structs go to the kernel without a string copy
		// (unsafe.String shares their bytes), so that clearing tx and
		// rx leaves no key behind.
		if err := unix.SetsockoptString(int(fd), unix.SOL_TLS, tlsTX, unsafe.String(&tx[0], len(tx))); err != nil {
			kerr = &ktlsError{"TLS_TX", err, true}
			return
		}
		if err := unix.SetsockoptString(int(fd), unix.SOL_TLS, tlsRX, unsafe.String(&rx[0], len(rx))); err != nil {
			kerr = &ktlsError{"TLS_RX", err, false}
		}
	})
	if cerr != nil {
		return &ktlsError{"socket", cerr, true}
	}
	return kerr
}

// recordTypeCmsg is a control message naming the TLS record type of what
// sendmsg sends on a kernel TLS socket.
func recordTypeCmsg(typ byte) []byte {
	b := make([]byte, unix.CmsgSpace(1))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_TLS
	h.Type = tlsSetRecordType
	h.SetLen(unix.CmsgLen(1))
	b[unix.CmsgLen(0)] = typ
	return b
}

// sendCloseNotify sends TLS close_notify through the kernel: an alert
// record (warning, close_notify) sealed under the session's next sequence
// number. Strict clients (ours, OpenSSL) treat an end without it as a
// truncation attack.
func sendCloseNotify(rc syscall.RawConn, deadline time.Time) error {
	oob := recordTypeCmsg(recordAlert)
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

// pendingRecord peeks at the next record the kernel holds for the socket
// without consuming it: its type and first bytes. ok is false when nothing
// is waiting. rsync reads with plain read(2), which the kernel answers with
// EIO for a record that is not application data; this says which it was.
func pendingRecord(rc syscall.RawConn) (typ byte, body []byte, ok bool) {
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(1))
	rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, err := unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT|unix.MSG_PEEK)
		if err != nil || n < 0 {
			return true
		}
		msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if perr != nil {
			return true
		}
		typ = recordApplication
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_TLS && m.Header.Type == tlsGetRecordType && len(m.Data) > 0 {
				typ = m.Data[0]
			}
		}
		body, ok = buf[:n], n > 0 || typ != recordApplication
		return true
	})
	return typ, body, ok
}

// describeRecord names a record that ended a kernel TLS session.
func describeRecord(typ byte, body []byte) string {
	switch typ {
	case recordAlert:
		if len(body) >= 2 && body[1] == 0 {
			return "the client sent close_notify"
		}
		if len(body) >= 2 {
			return fmt.Sprintf("the client sent TLS alert %d", body[1])
		}
		return "the client sent a TLS alert"
	case recordHandshake:
		if len(body) >= 1 && body[0] == 24 {
			return "the client sent a TLS KeyUpdate, which the kernel path cannot follow"
		}
		return "the client sent a post-handshake TLS message the kernel path cannot follow"
	}
	return fmt.Sprintf("the client sent a TLS record of type %d", typ)
}

// wireBytes reads how many bytes the kernel has received on the socket and
// how many of ours the client has acknowledged, TLS framing included.
func wireBytes(rc syscall.RawConn) (in, out int64) {
	rc.Control(func(fd uintptr) {
		ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			in, out = int64(ti.Bytes_received), int64(ti.Bytes_acked)
		}
	})
	return in, out
}

// setUserTimeout bounds how long data we sent may stay unacknowledged
// before the kernel gives up on the connection: with rsync writing to the
// socket itself, this is what still bounds a stalled client.
func setUserTimeout(rc syscall.RawConn, d time.Duration) {
	if d <= 0 {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	})
}

// drainKTLS reads what the client still sends after our close_notify, up
// to deadline, so that closing with unread input does not send a reset that
// could overtake the close_notify. It reads with recvmsg and a control
// buffer, because a plain read fails on the client's own alert.
func drainKTLS(rc syscall.RawConn, deadline time.Time) {
	buf := make([]byte, 16<<10)
	oob := make([]byte, unix.CmsgSpace(1))
	for total := 0; total < 1<<20 && time.Now().Before(deadline); {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil || rerr != nil || n == 0 {
			return
		}
		total += n
	}
}
