package tlsbridge

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// availableULPs is where the kernel lists the TCP upper-layer protocols it
// has loaded. A sandbox may hide it (systemd's ProcSubset=pid hides all of
// /proc/sys), so it is only the fallback for when the kernel cannot be
// asked directly.
const availableULPs = "/proc/sys/net/ipv4/tcp_available_ulp"

// noTLSModule is what a missing module means for the admin, in the start
// line and in a session's fallback alike.
const noTLSModule = "the kernel has no tls module (setsockopt TCP_ULP \"tls\": ENOENT; load it with \"modprobe tls\"; the shipped units have systemd do so as they start)"

// KernelTLSUnavailable says why this kernel cannot take a TLS socket, or ""
// when it can. It asks the kernel itself: a throwaway loopback connection
// is switched to the "tls" ULP, the very call the kernel path makes, so the
// answer is the same inside any sandbox that lets us make the connection
// (PrivateNetwork= still gives a loopback). ENOENT means the module is not
// loaded; the kernel loads it on demand only for a caller with
// CAP_NET_ADMIN, which a sandboxed service lacks.
func KernelTLSUnavailable() string {
	ran, err := probeTLSULP()
	switch {
	case ran && err == nil:
		return ""
	case ran && errors.Is(err, unix.ENOENT):
		return noTLSModule
	case ran:
		return fmt.Sprintf("the kernel refused the tls ULP on a loopback socket (setsockopt TCP_ULP \"tls\": %v)", err)
	}
	b, ferr := os.ReadFile(availableULPs)
	if ferr != nil {
		return fmt.Sprintf("cannot ask the kernel (%v) nor read %s: %v", err, availableULPs, ferr)
	}
	for _, u := range strings.Fields(string(b)) {
		if u == "tls" {
			return ""
		}
	}
	return fmt.Sprintf("the kernel has no tls module (%s: %q; load it with \"modprobe tls\"; the shipped units have systemd do so as they start)", availableULPs, strings.TrimSpace(string(b)))
}

// probeTLSULP attaches the "tls" ULP to a connected loopback TCP socket
// (the kernel takes it only on an established connection) and closes it
// again. ran is false when no such socket could be made, err then says why.
func probeTLSULP() (ran bool, err error) {
	var ln net.Listener
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
	}
	if err != nil {
		return false, fmt.Errorf("listen on loopback: %w", err)
	}
	defer ln.Close()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", ln.Addr(), err)
	}
	defer c.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return false, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_ULP, "tls")
	}); err != nil {
		return false, err
	}
	return true, serr
}
