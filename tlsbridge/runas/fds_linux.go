package runas

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// CloseInheritedOnExec marks every descriptor from 3 up close-on-exec. Go
// opens its own descriptors close-on-exec, but one this process inherited
// (a launcher's leak, a shell's "9<key") stays open across exec, and would
// reach rsync and its hooks, whatever user they run as: with it a hook could
// read a key the file system keeps from it. Descriptors this process still
// hands on (fd 0 under inetd, LISTEN_FDS) are unaffected where it matters:
// 0 to 2 are left alone, and os/exec clears the flag on what it passes as
// Stdin or ExtraFiles.
func CloseInheritedOnExec() error {
	// close_range(2) with CLOSE_RANGE_CLOEXEC (Linux 5.11) marks them all
	// in one call; older kernels say EINVAL or ENOSYS.
	err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("mark inherited descriptors close-on-exec: %w", err)
	}
	ents, rerr := os.ReadDir("/proc/self/fd")
	if rerr != nil {
		return fmt.Errorf("mark inherited descriptors close-on-exec: close_range: %v; /proc/self/fd: %w", err, rerr)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		// The directory's own descriptor is gone by now: EBADF.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && !errors.Is(err, unix.EBADF) {
			return fmt.Errorf("mark inherited descriptor %d close-on-exec: %w", fd, err)
		}
	}
	return nil
}
