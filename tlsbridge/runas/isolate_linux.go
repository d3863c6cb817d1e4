package runas

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Isolated mode (serve --rsync-user root): rsync starts as uid 0 so that
// rsyncd.conf's "uid =", "gid =" and "use chroot = yes" work, through this
// binary's hidden rsync-exec command, which puts it in a mount namespace of
// its own where the key's directory and the credentials are covered by an
// empty read-only tmpfs, and leaves it only the capabilities those settings
// need. rsync, and every hook it forks before its uid switch, then runs as
// root without the key in its view, without CAP_DAC_*, CAP_KILL,
// CAP_SYS_PTRACE or CAP_SYS_ADMIN, under no_new_privs (set by StartCleared):
// an execve never gains a capability back.

// IsolatedCaps are the only capabilities rsync keeps in the isolated mode:
// setgroups/setgid and setuid to the module's user, and chroot.
var IsolatedCaps = []int{unix.CAP_SETUID, unix.CAP_SETGID, unix.CAP_SYS_CHROOT}

// ServeIsolatedCaps are what serve itself needs for the isolated mode: the
// three rsync keeps (the kernel hands rsync at most what serve holds, under
// no_new_privs), CAP_SYS_ADMIN for rsync-exec's mount namespace, and
// CAP_KILL to stop an rsync that is not its own user's.
var ServeIsolatedCaps = append(slices.Clone(IsolatedCaps), unix.CAP_SYS_ADMIN, unix.CAP_KILL)

var capNames = map[int]string{unix.CAP_SETUID: "CAP_SETUID", unix.CAP_SETGID: "CAP_SETGID", unix.CAP_SYS_CHROOT: "CAP_SYS_CHROOT",
	unix.CAP_SYS_ADMIN: "CAP_SYS_ADMIN", unix.CAP_KILL: "CAP_KILL"}

// IsRoot says whether u is uid 0, the isolated mode.
func (u *User) IsRoot() bool { return u != nil && u.Uid == 0 }

// CheckIsolated reports whether this process holds what the isolated mode
// needs, so that a mistake stops serve before any client is accepted.
func CheckIsolated() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("--rsync-user root: reading our capabilities: %w", err)
	}
	var missing []string
	for _, c := range ServeIsolatedCaps {
		if data[c/32].Permitted&(1<<(c%32)) == 0 {
			missing = append(missing, capNames[c])
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("--rsync-user root: this process (uid %d) lacks %s: rsync as root in a mount namespace without the key needs "+
			"CAP_SETUID, CAP_SETGID, CAP_SYS_CHROOT, CAP_SYS_ADMIN and CAP_KILL; run as root, or under systemd give them in "+
			"AmbientCapabilities= and allow RestrictNamespaces=mnt", os.Geteuid(), strings.Join(missing, ", "))
	}
	return nil
}

// DefaultHidden are covered in rsync's view in the isolated mode whatever
// the flags say: the packaged key directory and every service's credentials.
var DefaultHidden = []string{"/etc/rsync-ssl/private", "/run/credentials"}

// HiddenPaths are the directories covered in rsync's view: those of every
// key file, $CREDENTIALS_DIRECTORY, and DefaultHidden. What rsync reads
// after the cover is in place (its rsyncd.conf, its binary, /etc/passwd and
// /etc/group for "uid =") must stay visible: a key beside one of them is a
// usage error naming the fix.
func HiddenPaths(keys []string, credentials string, mustSee ...string) ([]string, error) {
	var dirs []string
	add := func(p string) {
		if p == "" {
			return
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		if !slices.Contains(dirs, p) {
			dirs = append(dirs, p)
		}
	}
	for _, k := range keys {
		add(filepath.Dir(k))
	}
	add(credentials)
	for _, d := range DefaultHidden {
		add(d)
	}
	for _, f := range append(mustSee, "/etc/passwd", "/etc/group") {
		if f == "" {
			continue
		}
		abs, _ := filepath.Abs(f)
		for _, d := range dirs {
			if abs == d || d == "/" || strings.HasPrefix(abs, d+"/") {
				return nil, usageError{fmt.Sprintf("--rsync-user root: %s is in %s, which rsync must not see "+
					"(a --key is there): keep the key in a directory of its own", f, d)}
			}
		}
	}
	return dirs, nil
}

// ExecIsolated is rsync-exec: on this thread, a mount namespace of its own
// with every hidden directory covered, the capabilities cut to
// IsolatedCaps, then execve(argv). It returns only on failure. The caller
// is uid 0 (serve started it with that credential) and holds CAP_SYS_ADMIN.
func ExecIsolated(hide []string, argv, env []string) error {
	// The namespace, the capabilities and execve all belong to this
	// thread: execve keeps the calling thread and ends the others.
	runtime.LockOSThread()
	if len(argv) == 0 || !filepath.IsAbs(argv[0]) {
		return fmt.Errorf("rsync-exec: give the absolute path of rsync after --")
	}
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("rsync-exec: a mount namespace of its own: %w", err)
	}
	// Nothing mounted here may reach the service's namespace.
	if err := unix.Mount("none", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("rsync-exec: make / private: %w", err)
	}
	for _, d := range hide {
		err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=4k,nr_inodes=1,mode=0555")
		// A directory that is not there has nothing to hide.
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("rsync-exec: cover %s: %w", d, err)
		}
	}
	if err := keepOnly(IsolatedCaps); err != nil {
		return fmt.Errorf("rsync-exec: %w", err)
	}
	// Serve marked the descriptors it inherited close-on-exec; ours are
	// too. stdin is the connection, 2 the log.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("rsync-exec: set no_new_privs: %w", err)
	}
	if err := syscall.Exec(argv[0], argv, env); err != nil {
		return fmt.Errorf("rsync-exec: exec %s: %w", argv[0], err)
	}
	return nil
}

// keepOnly cuts the calling thread's bounding set (where CAP_SETPCAP allows:
// as plain root; under the shipped unit no_new_privs already makes the
// permitted set the ceiling), then its permitted, effective and inheritable
// sets, and so the ambient set, to caps.
func keepOnly(caps []int) error {
	var mask [2]uint32
	for _, c := range caps {
		mask[c/32] |= 1 << (c % 32)
	}
	for c := 0; c <= unix.CAP_LAST_CAP; c++ {
		if !slices.Contains(caps, c) {
			// EPERM without CAP_SETPCAP, EINVAL past the kernel's last.
			unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read our capabilities: %w", err)
	}
	for i := range data {
		data[i].Permitted &= mask[i]
		data[i].Effective = data[i].Permitted
		data[i].Inheritable = 0
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("cut our capabilities: %w", err)
	}
	return nil
}

// Undumpable makes this process non-dumpable: without CAP_SYS_PTRACE nobody,
// not even a process of the same uid (a hook that setuid(2) to it), can
// open its /proc/PID/mem, environ, fd or root. The kernel resets the flag
// on execve and on a change of credentials; serve makes neither.
func Undumpable() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("make this process non-dumpable: %w", err)
	}
	return nil
}

// DropCaps removes caps from the permitted, effective and inheritable sets
// of every thread (and so from the ambient set): the shipped units grant
// CAP_SYS_ADMIN and CAP_SYS_CHROOT for --rsync-user root, and serve in any
// other mode gives them up before it accepts a client.
func DropCaps(caps ...int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read our capabilities: %w", err)
	}
	held := false
	for _, c := range caps {
		bit := uint32(1) << (c % 32)
		held = held || data[c/32].Permitted&bit != 0 || data[c/32].Inheritable&bit != 0
		data[c/32].Permitted &^= bit
		data[c/32].Effective &^= bit
		data[c/32].Inheritable &^= bit
	}
	if !held {
		return nil
	}
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	switch {
	case errno == syscall.ENOTSUP:
		return ErrThreadsUnsupported
	case errno != 0:
		return fmt.Errorf("drop capabilities we do not use: %w", errno)
	}
	return nil
}
