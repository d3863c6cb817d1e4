package runas

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrThreadsUnsupported: this build cannot change a capability set on every
// thread at once (a cgo build; the shipped binary is static), so the
// effective set stays as it was.
var ErrThreadsUnsupported = errors.New("capability sets can be changed on every thread only in a build without cgo")

// LowerEffective empties the effective capability set of every thread of
// this process and keeps the permitted set. serve holds CAP_SETUID,
// CAP_SETGID and CAP_KILL only to start and stop rsync as another user:
// with them effective all its life, a logic error anywhere in the server
// could setuid(2) to any user. After this call they are raised only on the
// one locked thread that starts or signals rsync, for that call
// (StartCleared, Signal). Capabilities belong to threads; the runtime makes
// new threads from ones already lowered (from a template thread while one
// is locked and raised), so none starts with them effective.
func LowerEffective() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read our capabilities: %w", err)
	}
	if data[0].Effective == 0 && data[1].Effective == 0 {
		return nil
	}
	data[0].Effective, data[1].Effective = 0, 0
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	switch {
	case errno == syscall.ENOTSUP:
		return ErrThreadsUnsupported
	case errno != 0:
		return fmt.Errorf("lower our effective capabilities: %w", errno)
	}
	return nil
}

// raiseEffective makes the calling thread's permitted set effective; the
// caller holds the thread locked and lowers it again with lowerEffective.
func raiseEffective() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read our capabilities: %w", err)
	}
	if data[0].Effective == data[0].Permitted && data[1].Effective == data[1].Permitted {
		return nil
	}
	data[0].Effective, data[1].Effective = data[0].Permitted, data[1].Permitted
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("raise our capabilities: %w", err)
	}
	return nil
}

// lowerEffective empties the calling thread's effective set again; a
// failure leaves the thread with them raised, so it is never returned to
// the pool: the goroutine keeps it locked, and the runtime ends such a
// thread when the goroutine exits.
func lowerEffective() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	data[0].Effective, data[1].Effective = 0, 0
	return unix.Capset(&hdr, &data[0]) == nil
}

// withRaised runs f on a locked thread with the permitted capabilities
// effective, when LowerEffective took them away.
func withRaised(f func() error) error {
	runtime.LockOSThread()
	if err := raiseEffective(); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	err := f()
	if lowerEffective() {
		runtime.UnlockOSThread()
	}
	return err
}

// Signal sends sig to p, an rsync that may run as another user: CAP_KILL
// is raised for the call only.
func Signal(p *os.Process, sig os.Signal) error {
	return withRaised(func() error { return p.Signal(sig) })
}
