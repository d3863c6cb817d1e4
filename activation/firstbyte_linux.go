package activation

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// FirstByteError is a connection that sent nothing within the first-byte
// bound after its accept.
type FirstByteError struct {
	Peer  string
	After time.Duration
}

func (e *FirstByteError) Error() string {
	return fmt.Sprintf("tls handshake with %s: client sent nothing within %v", e.Peer, e.After)
}

// WaitFirstByte waits until c has something to read (or its peer closed or
// reset it), without reading it, until deadline. Bytes already read into a
// ProxiedConn count. It returns a *FirstByteError at the deadline, the close
// error if c was closed meanwhile (the gate shed it), and nil otherwise:
// what the bytes are, or why the peer went, is the handshake's to say.
func WaitFirstByte(c net.Conn, deadline time.Time, bound time.Duration) error {
	if pc, ok := c.(*ProxiedConn); ok && len(pc.buf) > 0 {
		return nil
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})
	// Read runs the function when the socket is readable (and first at
	// once); returning false waits for the next readiness, under the read
	// deadline, which the poller enforces.
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, e := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return e != unix.EAGAIN && e != unix.EINTR
	})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return &FirstByteError{Peer: c.RemoteAddr().String(), After: bound}
	}
	return err
}

// inputPending reports whether c has bytes the kernel received and nobody
// read yet.
func inputPending(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	pending := false
	rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, e := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		pending = e == nil && n > 0
	})
	return pending
}
