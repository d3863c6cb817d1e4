package runas

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// User is whom rsync runs as.
type User struct {
	Name     string
	Uid, Gid uint32
	// Groups are the supplementary groups, as initgroups(3) would set
	// them: the user's groups in /etc/group and its primary group.
	Groups []uint32
	Home   string
}

// ErrUsage marks a --rsync-user value that names no user or group.
var ErrUsage = errors.New("--rsync-user")

type usageError struct{ msg string }

func (e usageError) Error() string   { return e.msg }
func (e usageError) Is(t error) bool { return t == ErrUsage }

// Lookup reads "USER" or "USER:GROUP" (names or numbers). The binary is
// built without cgo, so this reads /etc/passwd and /etc/group and not NSS
// (LDAP, sssd): the user must be a local one, which a service user is.
func Lookup(spec string) (*User, error) {
	name, group, withGroup := strings.Cut(spec, ":")
	if name == "" || (withGroup && group == "") {
		return nil, usageError{fmt.Sprintf("--rsync-user %q: give USER or USER:GROUP", spec)}
	}
	var u *user.User
	var err error
	if isNumber(name) {
		u, err = user.LookupId(name)
	} else {
		u, err = user.Lookup(name)
	}
	if err != nil {
		return nil, usageError{fmt.Sprintf("--rsync-user %s: no such user in /etc/passwd (%v)", spec, err)}
	}
	r := &User{Name: u.Username, Home: u.HomeDir}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, usageError{fmt.Sprintf("--rsync-user %s: uid %q gid %q are not numbers", spec, u.Uid, u.Gid)}
	}
	r.Uid, r.Gid = uint32(uid), uint32(gid)
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("--rsync-user %s: reading its groups: %w", spec, err)
	}
	for _, s := range append(ids, u.Gid) {
		if g, err := strconv.ParseUint(s, 10, 32); err == nil && !slices.Contains(r.Groups, uint32(g)) {
			r.Groups = append(r.Groups, uint32(g))
		}
	}
	if withGroup {
		var g *user.Group
		if isNumber(group) {
			g, err = user.LookupGroupId(group)
		} else {
			g, err = user.LookupGroup(group)
		}
		if err != nil {
			return nil, usageError{fmt.Sprintf("--rsync-user %s: no such group in /etc/group (%v)", spec, err)}
		}
		n, err := strconv.ParseUint(g.Gid, 10, 32)
		if err != nil {
			return nil, usageError{fmt.Sprintf("--rsync-user %s: gid %q is not a number", spec, g.Gid)}
		}
		r.Gid = uint32(n)
		if !slices.Contains(r.Groups, r.Gid) {
			r.Groups = append(r.Groups, r.Gid)
		}
	}
	return r, nil
}

func isNumber(s string) bool {
	_, err := strconv.ParseUint(s, 10, 32)
	return err == nil
}

func (u *User) String() string {
	return fmt.Sprintf("%s (uid %d, gid %d)", u.Name, u.Uid, u.Gid)
}

// Credential is what exec needs to start rsync as u; nil when u is who we
// already are, when there is nothing to switch.
func (u *User) Credential() *syscall.Credential {
	if u == nil || (u.Uid == uint32(os.Geteuid()) && u.Gid == uint32(os.Getegid())) {
		return nil
	}
	return &syscall.Credential{Uid: u.Uid, Gid: u.Gid, Groups: u.Groups}
}

// MissingCapError says which capabilities this process lacks to switch.
type MissingCapError struct {
	User    *User
	Missing []string
}

func (e *MissingCapError) Error() string {
	return fmt.Sprintf("--rsync-user %s: this process (uid %d) lacks %s: starting rsync as another user needs CAP_SETUID, CAP_SETGID (its groups) "+
		"and CAP_KILL (to stop it); run as root, or under systemd give AmbientCapabilities=CAP_SETUID CAP_SETGID CAP_KILL",
		e.User, os.Geteuid(), strings.Join(e.Missing, ", "))
}

// Check reports whether this process can start rsync as u, so that a
// mistake stops serve before any client is accepted rather than failing
// every connection with EPERM.
func (u *User) Check() error {
	if u.Credential() == nil {
		return nil
	}
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("--rsync-user %s: reading our capabilities: %w", u, err)
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	var missing []string
	for _, c := range []struct {
		n    int
		name string
	}{{unix.CAP_SETUID, "CAP_SETUID"}, {unix.CAP_SETGID, "CAP_SETGID"}, {unix.CAP_KILL, "CAP_KILL"}} {
		if !has(c.n) {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		return &MissingCapError{User: u, Missing: missing}
	}
	return nil
}

// StartCleared runs start (an exec.Cmd's Start) on a thread whose ambient
// and inheritable capability sets are empty and which has no_new_privs set,
// so that rsync, and everything it execs, can never gain a privilege
// through a set-user-ID or file-capability binary. A server running as a
// service user with AmbientCapabilities=CAP_SETUID... holds those
// capabilities as ambient ones, and the kernel keeps ambient capabilities
// across a switch between two non-root users and across execve: rsync would
// start with CAP_SETUID and could become the service user again, key and
// all. Capabilities belong to a thread, not to the process, and the child is
// forked from the calling thread, so the sets are cleared on that thread,
// pinned for the call, and the permitted set is made effective for the
// switch itself (LowerEffective keeps it off elsewhere). Afterwards the
// thread gets its inheritable and ambient sets back, so that whatever else
// the runtime runs on it later (a fresh serve taking over the listening
// socket) starts as the service manager meant; no_new_privs stays, which
// costs nothing: the server execs nothing set-user-ID.
func StartCleared(start func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	restore, err := clearInherited()
	if err != nil {
		return err
	}
	defer restore()
	// no_new_privs belongs to the thread, is inherited by the child and
	// survives execve; it cannot be unset.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	// Nested locks count: withRaised's unlock leaves this one in place.
	return withRaised(start)
}

// clearInherited empties the calling thread's ambient and inheritable sets
// and returns what puts them back.
func clearInherited() (restore func(), err error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("read our capabilities: %w", err)
	}
	var ambient []int
	for c := 0; c <= unix.CAP_LAST_CAP; c++ {
		// EINVAL: a kernel before 4.3 (no ambient set) or a number past
		// the kernel's last capability.
		if on, err := unix.PrctlRetInt(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_IS_SET, uintptr(c), 0, 0); err == nil && on == 1 {
			ambient = append(ambient, c)
		}
	}
	restore = func() {
		// Inheritable first: the kernel raises an ambient capability only
		// while it is permitted and inheritable.
		cur := data
		if err := unix.Capget(&hdr, &cur[0]); err != nil {
			return
		}
		cur[0].Inheritable, cur[1].Inheritable = data[0].Inheritable, data[1].Inheritable
		if unix.Capset(&hdr, &cur[0]) != nil {
			return
		}
		for _, c := range ambient {
			unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c), 0, 0)
		}
	}
	if len(ambient) > 0 {
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("clear the ambient capabilities: %w", err)
		}
	}
	if data[0].Inheritable == 0 && data[1].Inheritable == 0 {
		return restore, nil
	}
	cleared := data
	cleared[0].Inheritable, cleared[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &cleared[0]); err != nil {
		restore()
		return nil, fmt.Errorf("clear the inheritable capabilities: %w", err)
	}
	return restore, nil
}
