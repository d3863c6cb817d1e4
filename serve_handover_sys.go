//go:build linux

package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// ambientCaps returns the capabilities in this thread's ambient set. Read
// before any rsync starts, every thread still has the set the process
// started with.
func ambientCaps() []uintptr {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var caps []uintptr
	for c := uintptr(0); c < 64; c++ {
		on, err := unix.PrctlRetInt(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_IS_SET, c, 0, 0)
		if err != nil {
			break // EINVAL: past the kernel's last capability, or no ambient set
		}
		if on == 1 {
			caps = append(caps, c)
		}
	}
	return caps
}

// raiseAmbient puts caps into the calling thread's inheritable and ambient
// sets, which the kernel requires of an ambient capability; each must still
// be in the permitted set. The caller has locked the thread.
func raiseAmbient(caps []uintptr) error {
	if len(caps) == 0 {
		return nil
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read our capabilities: %w", err)
	}
	for _, c := range caps {
		data[c/32].Inheritable |= 1 << (c % 32)
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("raise the inheritable capabilities: %w", err)
	}
	for _, c := range caps {
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, c, 0, 0); err != nil {
			return fmt.Errorf("raise ambient capability %d: %w", c, err)
		}
	}
	return nil
}

// notifyBarrier sends systemd's BARRIER=1 with a pipe's write end and waits
// until systemd closes it: it then has read every notification we sent
// before, in order (sd_notify_barrier(3)).
func notifyBarrier(timeout time.Duration) error {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return errors.New("NOTIFY_SOCKET is not set")
	}
	// An abstract address ("@name") is spelled the same way for Go.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify socket: %w", err)
	}
	defer conn.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	_, _, err = conn.WriteMsgUnix([]byte("BARRIER=1"), unix.UnixRights(int(w.Fd())), nil)
	w.Close()
	if err != nil {
		return fmt.Errorf("send BARRIER=1: %w", err)
	}
	r.SetReadDeadline(time.Now().Add(timeout))
	var b [1]byte
	_, err = r.Read(b[:])
	switch {
	case errors.Is(err, io.EOF):
		return nil // systemd closed its copy
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("no barrier reply from systemd within %v", timeout)
	case err != nil:
		return fmt.Errorf("barrier pipe: %w", err)
	}
	return errors.New("unexpected data on the barrier pipe")
}
