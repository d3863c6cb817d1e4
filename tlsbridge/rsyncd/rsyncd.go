package rsyncd

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// ProxyMode is how the real client address reaches rsync.
type ProxyMode int

const (
	// ProxyHosts: "proxy protocol = yes" plus "proxy protocol hosts" set to
	// the pair's address. rsync 3.5.0 and newer reject every header unless
	// the sender is listed there.
	ProxyHosts ProxyMode = iota
	// ProxyPlain: "proxy protocol = yes" alone, for rsync 3.2.7 to 3.4.x,
	// which have no "proxy protocol hosts" and would refuse the unknown
	// parameter. Safe here because only the shim can reach that rsync.
	ProxyPlain
	// ProxyOff: no header. rsync sees every client as 127.0.0.1, so
	// "hosts allow" cannot tell clients apart; only by explicit choice.
	ProxyOff
)

func (m ProxyMode) String() string {
	return [...]string{"hosts", "plain", "off"}[m]
}

// Info is what we could read off the rsync binary without running it.
type Info struct {
	Path    string
	Version string // "3.5.0", or "" when not found (a wrapper script)
	// HasProxyProtocol and HasProxyHosts say whether the binary knows the
	// "proxy protocol" and "proxy protocol hosts" daemon parameters.
	HasProxyProtocol, HasProxyHosts bool
	// Readable is false when the file could not be scanned (a script,
	// or not readable): nothing above is known then.
	Readable bool
}

// isRsyncVersion matches "3.x.y" with an optional suffix such as "dev" or
// "pre1": 3, then one or two digits, a dot, one or two digits, then letters
// and digits.
func isRsyncVersion(s []byte) bool {
	if len(s) < 5 || s[0] != '3' || s[1] != '.' {
		return false
	}
	i := 2
	digits := func(max int) bool {
		n := 0
		for i < len(s) && n < max && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n > 0
	}
	if !digits(2) || i >= len(s) || s[i] != '.' {
		return false
	}
	i++
	if !digits(2) {
		return false
	}
	letters := 0
	for i < len(s) && s[i] >= 'a' && s[i] <= 'z' {
		i++
		letters++
	}
	if letters > 0 {
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	return i == len(s)
}

// Probe finds rsync on PATH (or at path) and reads its version and
// daemon parameters out of the strings in the binary's .rodata section.
// That costs tens of microseconds per connection, against several
// milliseconds for running "rsync --version", more than the whole TLS
// handshake.
func Probe(path string) (*Info, error) {
	full, err := lookPath(path)
	if err != nil {
		return nil, fmt.Errorf("rsync: %w", err)
	}
	info := &Info{Path: full}
	f, err := os.Open(full)
	if err != nil {
		return nil, fmt.Errorf("rsync %s: %w", full, err)
	}
	defer f.Close()
	ef, err := elf.NewFile(f)
	if err != nil {
		return info, nil // a wrapper script: nothing can be read off it
	}
	var data []byte
	if sec := ef.Section(".rodata"); sec != nil {
		data, err = sec.Data()
	}
	if data == nil || err != nil {
		// No usable .rodata: scan the whole file, bounded.
		if data, err = io.ReadAll(io.LimitReader(f, 64<<20)); err != nil {
			return info, nil
		}
	}
	ScanBinary(data, info)
	return info, nil
}

// ScanBinary fills info from the NUL-terminated strings of an rsync
// executable: the version is the one string shaped like "3.x.y" (the zlib
// version that may sit beside it starts with 1), the parameters are their
// names in the daemon parameter table.
func ScanBinary(data []byte, info *Info) {
	info.Readable = true
	info.HasProxyProtocol = hasCString(data, "proxy protocol")
	info.HasProxyHosts = hasCString(data, "proxy protocol hosts")
	var version string
	found := 0
	for rest := data; ; {
		i := bytes.Index(rest, []byte("\x003."))
		if i < 0 {
			break
		}
		rest = rest[i+1:]
		end := bytes.IndexByte(rest[:min(len(rest), 25)], 0)
		if end < 0 {
			continue
		}
		if s := rest[:end]; isRsyncVersion(s) && string(s) != version {
			version = string(s)
			found++
		}
	}
	if found == 1 {
		info.Version = version
	}
}

// hasCString reports whether s appears in data as a whole NUL-terminated
// string, not as the tail of a longer one.
func hasCString(data []byte, s string) bool {
	pat := []byte(s + "\x00")
	for off := 0; ; {
		i := bytes.Index(data[off:], pat)
		if i < 0 {
			return false
		}
		at := off + i
		if at == 0 || data[at-1] == 0 {
			return true
		}
		off = at + 1
	}
}

// DefaultPath is searched when the environment has no PATH: xinetd and
// inetd start servers with an empty environment unless told otherwise.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func lookPath(name string) (string, error) {
	if strings.Contains(name, "/") || os.Getenv("PATH") != "" {
		return exec.LookPath(name)
	}
	for _, dir := range strings.Split(DefaultPath, ":") {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: not found in %s (PATH is empty)", name, DefaultPath)
}

// AcceptsUnixPair says whether this rsync is known to enter inetd mode on
// an AF_UNIX stdin: 3.5.0 and older releases do; upstream after 3.5.0 (PR
// #1075) wants AF_INET/AF_INET6, and a development build ("3.5.1dev") or an
// unknown version may already have that change.
func (i *Info) AcceptsUnixPair() bool {
	if i.Version == "" {
		return false
	}
	parts := strings.SplitN(i.Version, ".", 3)
	if len(parts) != 3 {
		return false
	}
	minor, _ := strconv.Atoi(parts[1])
	patch, err := strconv.Atoi(parts[2])
	if err != nil { // a suffix such as "dev" or "pre1"
		return false
	}
	return minor < 5 || (minor == 5 && patch == 0)
}

// AutoProxyMode picks what this rsync can take.
func (i *Info) AutoProxyMode() (ProxyMode, error) {
	switch {
	case !i.Readable:
		return 0, fmt.Errorf("cannot read the daemon parameters of %s (a wrapper script?): pass --proxy-protocol hosts (rsync 3.5.0 or newer) or plain (rsync 3.2.7 to 3.4.x)", i.Path)
	case i.HasProxyHosts:
		return ProxyHosts, nil
	case i.HasProxyProtocol:
		return ProxyPlain, nil
	}
	v := i.Version
	if v == "" {
		v = "of unknown version"
	}
	return 0, fmt.Errorf("rsync %s at %s has no \"proxy protocol\" support, so it would see every client as 127.0.0.1 and \"hosts allow\" could not tell them apart: install rsync 3.2.7 or newer, or pass --proxy-protocol off to accept that", v, i.Path)
}

// Command is how rsync is started for each connection.
type Command struct {
	Path  string
	Conf  string   // passed as --config when set
	Args  []string // extra arguments from --rsync-arg
	Proxy ProxyMode
	// KnowsProxyProtocol: the binary has the "proxy protocol" parameter
	// (Info.HasProxyProtocol). With ProxyOff it is then set to "no" on the
	// command line: "proxy protocol = yes" left in rsyncd.conf would let a
	// client send its own PROXY header inside TLS and be believed.
	KnowsProxyProtocol bool
	// User, when set, is whom rsync runs as (--rsync-user).
	User *Credential
	// Isolate, when set, starts rsync through a helper that covers
	// directories in a mount namespace of rsync's own (--rsync-user root).
	Isolate *Isolation
	// Launch, when set, runs the exec.Cmd's Start for Start: the caller
	// uses it to start rsync from a thread without ambient capabilities.
	Launch func(start func() error) error
	// Kill, when set, sends a signal to a started rsync: the caller uses
	// it to hold CAP_KILL only for the call when rsync runs as another
	// user.
	Kill func(p *os.Process, sig os.Signal) error
}

// Signal sends sig to p, a started rsync, through Kill when set.
func (r *Command) Signal(p *os.Process, sig os.Signal) error {
	if r.Kill != nil {
		return r.Kill(p, sig)
	}
	return p.Signal(sig)
}

// OwnSocket is the command for an rsync handed the client's own socket
// (the kernel TLS path): it reads no PROXY header, so "proxy protocol" is
// set to no wherever this rsync knows the parameter. A mode that names the
// parameter (hosts, plain) says it does, also for a binary that could not be
// read, such as a wrapper script: "proxy protocol = yes" left in its
// rsyncd.conf would otherwise believe a PROXY line the client itself sent
// inside TLS, and "hosts allow" would take the address it names.
func (r Command) OwnSocket() Command {
	r.KnowsProxyProtocol = r.KnowsProxyProtocol || r.Proxy != ProxyOff
	r.Proxy = ProxyOff
	return r
}

// Isolation is how rsync is started in a mount namespace of its own: Helper
// (this binary) runs "rsync-exec --hide DIR ... -- RSYNC ARGS...", covers each
// directory and execs rsync.
type Isolation struct {
	Helper string
	Hide   []string
}

// wrap is the helper's command line around rsync's argv.
func (i *Isolation) wrap(argv []string) []string {
	w := []string{i.Helper, "rsync-exec"}
	for _, d := range i.Hide {
		w = append(w, "--hide", d)
	}
	return append(append(w, "--"), argv...)
}

// Credential is a user rsync runs as: uid, gid and supplementary groups.
type Credential struct {
	Uid, Gid uint32
	Groups   []uint32
}

// unbindableAddress makes rsync's standalone mode fail instead of listen.
// rsync decides between inetd mode and standalone mode by looking at its
// stdin; if a future rsync ever disagrees with us about our socket, it must
// not start a daemon on port 873 in the clear. --address is only used to
// bind the standalone listener, and 0.0.0.1 is no address of this host, so
// that path ends in "unable to bind any inbound sockets" (exit 10).
// With net.ipv4.ip_nonlocal_bind=1 the bind succeeds after all, and such an
// rsync listens on 0.0.0.1; but nothing reaches it: the kernel drops a packet
// arriving for 0.0.0.0/8 as a martian, and a local connect to 0.0.0.1 is
// routed out of the host, not looped back (TestSecurityUnbindableAddress-
// NonlocalBind). The session then hangs until the client or --stall-timeout
// ends it, and rsync is stopped like any other. --no-detach keeps such an
// rsync our child instead of a daemon we would lose track of.
const unbindableAddress = "0.0.0.1"

// Argv is rsync's command line for one connection; trust is the pair's
// TrustAs.
func (r *Command) Argv(trust string) []string {
	argv := []string{r.Path, "--daemon", "--no-detach", "--address=" + unbindableAddress}
	if r.Conf != "" {
		argv = append(argv, "--config="+r.Conf)
	}
	switch r.Proxy {
	case ProxyHosts:
		argv = append(argv, "--dparam=proxyprotocol=yes", "--dparam=proxyprotocolhosts="+trust)
	case ProxyPlain:
		argv = append(argv, "--dparam=proxyprotocol=yes")
	case ProxyOff:
		if r.KnowsProxyProtocol {
			argv = append(argv, "--dparam=proxyprotocol=no")
		}
	}
	return append(argv, r.Args...)
}

// ExitStatus is rsync's exit code, 128+signal when killed, or -1.
func ExitStatus(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return -1
}
