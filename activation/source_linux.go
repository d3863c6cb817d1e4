package activation

import (
	"errors"
	"fmt"
	"net"
	"os"

	sdactivation "github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// ErrNoConnection is returned when nothing was handed to us and no --listen
// address was given.
var ErrNoConnection = errors.New("no connection to serve: start me from rsync-ssl.socket, inetd/xinetd, or pass --listen ADDR")

// ErrPeerGone is returned (wrapped) when the connection handed over was
// closed by its peer before we could look at it. A load balancer's
// connect-only health check ends this way: HAProxy resets the connection as
// soon as the connect succeeds.
var ErrPeerGone = errors.New("the client is already gone")

// Source is what serve works on: exactly one of Conn or Listeners is set.
type Source struct {
	Conn      net.Conn
	Listeners []net.Listener
	// Mode says where the connection came from, for the log.
	Mode string
	// HandedOverBy is the PID of the accept loop that handed Listeners
	// over to this process (Inherit), 0 otherwise; ready is the pipe on
	// which this process tells it that it serves them.
	HandedOverBy int
	ready        *os.File
}

// Close releases whatever the source holds.
func (s *Source) Close() {
	if s.Conn != nil {
		s.Conn.Close()
	}
	for _, l := range s.Listeners {
		l.Close()
	}
}

// StdioState records what ProtectStdio found on fds 1 and 2.
type StdioState struct {
	// StderrWasConn is true when fd 2 was the client connection (xinetd does
	// this); it now points at /dev/null and logs must go elsewhere.
	StderrWasConn bool
	StdoutWasConn bool
}

// ProtectStdio must run before anything is written to stdout or stderr. inetd
// and xinetd put the client socket on fds 0, 1 and 2, and systemd does the same
// for fd 1 (and fd 2 unless StandardError= says otherwise) with
// StandardInput=socket. A stray log line there would be sent to the client in
// the clear, ahead of the TLS handshake, and rsync would inherit a second copy
// of the connection. Any of fds 1 and 2 that is the same socket as fd 0 is
// pointed at /dev/null; the connection itself stays on fd 0 for Detect.
func ProtectStdio() StdioState {
	var st StdioState
	var in unix.Stat_t
	if unix.Fstat(0, &in) != nil || in.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return st
	}
	null := -1
	for _, fd := range []int{1, 2} {
		var s unix.Stat_t
		if unix.Fstat(fd, &s) != nil || s.Dev != in.Dev || s.Ino != in.Ino {
			continue
		}
		if null < 0 {
			var err error
			if null, err = unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0); err != nil {
				// Without /dev/null, closing the fd is still better than
				// writing to the client.
				unix.Close(fd)
				markConn(&st, fd)
				continue
			}
		}
		unix.Dup2(null, fd)
		markConn(&st, fd)
	}
	if null >= 0 {
		unix.Close(null)
	}
	return st
}

func markConn(st *StdioState, fd int) {
	if fd == 1 {
		st.StdoutWasConn = true
	} else {
		st.StderrWasConn = true
	}
}

// Detect finds the connection or listeners to serve, in this order:
//  1. a connected TCP socket on fd 0 (inetd, systemd Accept=yes with StandardInput=socket);
//  2. a connected socket in LISTEN_FDS (systemd Accept=yes);
//  3. listening sockets on fd 0 or in LISTEN_FDS (systemd Accept=no, xinetd "wait = yes");
//  4. the --listen addresses.
//
// The LISTEN_* variables are read once and removed, so rsync never sees them.
// Handing a socket over and also passing --listen is refused: one of them is a
// mistake, and guessing which would leave a port open or a client hanging.
func Detect(listen []string) (*Source, error) {
	fd0, err0 := classify(0)
	files := sdactivation.Files(true)

	var inherited []*os.File
	var inheritedKinds []sockKind
	for _, f := range files {
		k, err := classify(int(f.Fd()))
		if err != nil {
			closeFiles(files)
			return nil, fmt.Errorf("systemd socket %s (fd %d): %w", f.Name(), f.Fd(), err)
		}
		inherited = append(inherited, f)
		inheritedKinds = append(inheritedKinds, k)
	}
	have := fd0 != sockNone || len(inherited) > 0
	if have && len(listen) > 0 {
		closeFiles(files)
		return nil, errors.New("--listen given, but the service manager also handed over a socket: drop --listen from the unit, or start me without socket activation")
	}

	switch {
	case fd0 == sockConnected:
		closeFiles(files)
		c, err := fileConn(0, "stdin")
		if err != nil {
			return nil, err
		}
		return &Source{Conn: c, Mode: "inetd (fd 0)"}, nil
	case fd0 == sockNone && err0 != nil:
		closeFiles(files)
		return nil, fmt.Errorf("fd 0: %w", err0)
	}

	for i, f := range inherited {
		if inheritedKinds[i] != sockConnected {
			continue
		}
		if len(inherited) != 1 {
			closeFiles(files)
			return nil, fmt.Errorf("systemd passed %d sockets with a connected one among them; Accept=yes passes exactly one", len(inherited))
		}
		c, err := net.FileConn(f)
		f.Close() // FileConn holds its own dup
		if err != nil {
			return nil, fmt.Errorf("systemd socket fd %d: %w", 3+i, err)
		}
		return &Source{Conn: c, Mode: "systemd Accept=yes (LISTEN_FDS)"}, nil
	}

	if src, err := listeners(fd0, inherited, files); src != nil || err != nil {
		return src, err
	}
	return listenOn(listen)
}

// listeners takes the listening sockets handed over (fd 0, LISTEN_FDS);
// nil when there are none.
func listeners(fd0 sockKind, inherited, files []*os.File) (*Source, error) {
	var ls []net.Listener
	mode := ""
	if fd0 == sockListening {
		l, err := fileListener(0, "stdin")
		if err != nil {
			closeFiles(files)
			return nil, err
		}
		ls = append(ls, l)
		mode = "listening socket on fd 0"
	}
	for i, f := range inherited {
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			closeListeners(ls)
			return nil, fmt.Errorf("systemd socket fd %d: %w", 3+i, err)
		}
		ls = append(ls, l)
		mode = "systemd Accept=no (LISTEN_FDS)"
	}
	if len(ls) > 0 {
		return &Source{Listeners: ls, Mode: mode}, nil
	}
	return nil, nil
}

// listenOn opens our own listeners on the --listen addresses.
func listenOn(listen []string) (*Source, error) {
	var ls []net.Listener
	for _, addr := range listen {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			closeListeners(ls)
			return nil, fmt.Errorf("--listen %s: %w", addr, err)
		}
		ls = append(ls, l)
	}
	if len(ls) > 0 {
		return &Source{Listeners: ls, Mode: "--listen"}, nil
	}
	return nil, ErrNoConnection
}

type sockKind int

const (
	sockNone sockKind = iota
	sockConnected
	sockListening
)

// classify says whether fd is a TCP socket and whether it is listening or
// connected. A non-socket fd 0 (a terminal, a pipe, /dev/null) is simply not
// a connection; a socket of the wrong kind is an error worth reporting.
func classify(fd int) (sockKind, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return sockNone, nil
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return sockNone, fmt.Errorf("getsockopt SO_DOMAIN: %w", err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return sockNone, fmt.Errorf("getsockopt SO_TYPE: %w", err)
	}
	if (domain != unix.AF_INET && domain != unix.AF_INET6) || typ != unix.SOCK_STREAM {
		return sockNone, fmt.Errorf("is a socket but not a TCP one (domain %d, type %d): serve takes TCP connections", domain, typ)
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return sockNone, fmt.Errorf("getsockopt SO_ACCEPTCONN: %w", err)
	}
	if acc != 0 {
		return sockListening, nil
	}
	if _, err := unix.Getpeername(fd); err != nil {
		return sockNone, fmt.Errorf("TCP socket with no peer (%w): %w", err, ErrPeerGone)
	}
	return sockConnected, nil
}

// fileConn wraps fd in a net.Conn. net.FileConn dups the descriptor, so the
// original is closed afterwards: fd 0 must not stay a second reference to the
// connection, or the client would not see our close until rsync also exited.
// fd 0 is then pointed at /dev/null so that nothing reuses the number by
// accident.
func fileConn(fd int, name string) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), name)
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	f.Close()
	reopenNull(fd)
	return c, nil
}

func fileListener(fd int, name string) (net.Listener, error) {
	f := os.NewFile(uintptr(fd), name)
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	f.Close()
	reopenNull(fd)
	return l, nil
}

func reopenNull(fd int) {
	null, err := unix.Open("/dev/null", unix.O_RDWR, 0)
	if err != nil {
		return
	}
	if null != fd {
		unix.Dup2(null, fd)
		unix.Close(null)
	}
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

func closeListeners(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}
