package ktls

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// ReadRecord reads from a kernel TLS socket with recvmsg, waiting on the
// runtime's poller, and says which record type the bytes are: a plain
// read(2) or splice(2) fails on anything but application data (EIO,
// EINVAL), which is how an alert, a session ticket or a KeyUpdate shows up.
// n == 0 with RecordApplication and a nil error is the end of the TCP
// stream.
func ReadRecord(rc syscall.RawConn, p []byte) (n int, typ byte, err error) {
	oob := make([]byte, unix.CmsgSpace(1))
	var rerr error
	var oobn int
	cerr := rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), p, oob, unix.MSG_DONTWAIT)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if cerr != nil {
		return 0, 0, cerr
	}
	if rerr != nil {
		return 0, 0, rerr
	}
	if typ, err = recordType(oob[:oobn]); err != nil {
		return n, 0, err
	}
	return max(n, 0), typ, nil
}
