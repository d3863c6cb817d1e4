package tlsbridge

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/ktls"
	"golang.org/x/sys/unix"
)

// explainKTLS says what a failed switch means for the admin.
func explainKTLS(e *ktls.Error) string {
	switch {
	case e.NoModule():
		return noTLSModule
	case e.NoCipher():
		return "the kernel lacks the AES-GCM cipher for TLS (setsockopt TLS_TX: ENOENT; load the gcm module)"
	}
	return "switching the socket to kernel TLS failed: " + e.Error()
}

// describeRecord names a record that ended a kernel TLS session.
func describeRecord(typ byte, body []byte) string {
	switch typ {
	case ktls.RecordAlert:
		if len(body) >= 2 && body[1] == 0 {
			return "the client sent close_notify"
		}
		if len(body) >= 2 {
			return fmt.Sprintf("the client sent TLS alert %d", body[1])
		}
		return "the client sent a TLS alert"
	case ktls.RecordHandshake:
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
