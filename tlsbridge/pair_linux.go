package tlsbridge

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// PairKind is the kind of connected socket pair rsync gets as its stdin.
type PairKind int

const (
	// PairTCP is a loopback TCP connection: the only kind an rsync newer
	// than 3.5.0 accepts in inetd mode, and what rsync's own sock_exec uses.
	PairTCP PairKind = iota
	// PairUnix is an AF_UNIX socketpair(2): cheaper to copy through, but
	// only rsync 3.5.0 and older treat it as an inetd connection.
	PairUnix
)

func (k PairKind) String() string {
	if k == PairUnix {
		return "unix"
	}
	return "tcp"
}

// Pair is a connected socket pair: Ours stays with the bridge, Theirs
// becomes rsync's fd 0 and must be closed by us once rsync has started.
type Pair struct {
	Ours   net.Conn
	Theirs *os.File
	// TrustAs is what rsync's "proxy protocol hosts" must list so that
	// rsync accepts our PROXY header over this pair, and nothing else.
	TrustAs string
}

// NewPair makes a pair of the given kind.
func NewPair(kind PairKind) (*Pair, error) {
	if kind == PairUnix {
		return unixPair()
	}
	return tcpPair()
}

func unixPair() (*Pair, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "bridge")
	c, err := net.FileConn(ours)
	ours.Close() // FileConn holds its own dup
	if err != nil {
		unix.Close(fds[1])
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	// An AF_UNIX peer has no address; rsync 3.5.0 names it by the host
	// name sentinel "UNDETERMINED" when it checks "proxy protocol hosts"
	// (measured: the log says "untrusted peer UNDETERMINED (localhost)"),
	// so that name is the one to trust. No TCP client can reach this rsync.
	return &Pair{Ours: c, Theirs: os.NewFile(uintptr(fds[1]), "rsync"), TrustAs: "UNDETERMINED"}, nil
}

// tcpPair listens on an ephemeral loopback port, dials it, and accepts.
// The listener lives for a few microseconds, but another local process
// could still race us to it, so the accepted peer must be our own dialer;
// anyone else is dropped. The listener is closed before rsync starts, so
// nothing ever listens for rsync.
func tcpPair() (*Pair, error) {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("socket pair: listen on loopback: %w", err)
	}
	defer ln.Close()
	ln.SetDeadline(time.Now().Add(5 * time.Second))

	type dialed struct {
		c   *net.TCPConn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
		ch <- dialed{c, err}
	}()
	d := <-ch
	if d.err != nil {
		return nil, fmt.Errorf("socket pair: dial loopback: %w", d.err)
	}
	want := d.c.LocalAddr().String()
	for tries := 0; tries < 8; tries++ {
		acc, err := ln.AcceptTCP()
		if err != nil {
			d.c.Close()
			return nil, fmt.Errorf("socket pair: accept: %w", err)
		}
		if acc.RemoteAddr().String() != want {
			acc.Close() // a stranger raced us to the port
			continue
		}
		f, err := acc.File() // a blocking dup for rsync's stdin
		acc.Close()
		if err != nil {
			d.c.Close()
			return nil, fmt.Errorf("socket pair: %w", err)
		}
		d.c.SetNoDelay(true)
		return &Pair{Ours: d.c, Theirs: f, TrustAs: "127.0.0.1"}, nil
	}
	d.c.Close()
	return nil, errors.New("socket pair: other processes keep connecting to our loopback port")
}
