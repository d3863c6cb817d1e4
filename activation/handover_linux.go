package activation

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// HandoverEnv is how an accept loop tells the process it starts from a new
// binary that it takes over the listening sockets: "PID:N", the old
// process's PID and the number of sockets, which are fds 3 to 3+N-1; fd 3+N
// is the write end of a pipe on which the new process says it serves.
// LISTEN_FDS cannot carry them: its LISTEN_PID must be the new process's
// PID, unknown until after the fork, and a variable set before the exec
// with the wrong PID would be ignored.
const HandoverEnv = "RSYNC_SSL_SHIM_HANDOVER"

// firstHandoverFd is where exec.Cmd.ExtraFiles start.
const firstHandoverFd = 3

// HandoverFiles returns a duplicate of each listener's socket, to pass to
// the new process as exec.Cmd.ExtraFiles (the ready pipe after them), and
// the HandoverEnv value (without the name) that describes them. The caller
// closes the files once the process has started: its own listeners stay
// open and usable until it closes them.
func HandoverFiles(ls []net.Listener) ([]*os.File, string, error) {
	var fs []*os.File
	for _, l := range ls {
		fl, ok := l.(interface{ File() (*os.File, error) })
		if !ok {
			closeFiles(fs)
			return nil, "", fmt.Errorf("listener on %s: %T cannot be handed over", l.Addr(), l)
		}
		f, err := fl.File()
		if err != nil {
			closeFiles(fs)
			return nil, "", fmt.Errorf("listener on %s: %w", l.Addr(), err)
		}
		fs = append(fs, f)
	}
	return fs, fmt.Sprintf("%d:%d", os.Getpid(), len(fs)), nil
}

// Inherit takes over the listening sockets of a hand-over (HandoverEnv),
// reading the variable once and removing it. It returns nil, nil when this
// process was not started by one.
func Inherit() (*Source, error) {
	v, ok := os.LookupEnv(HandoverEnv)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(HandoverEnv)
	pidText, nText, _ := strings.Cut(v, ":")
	pid, err1 := strconv.Atoi(pidText)
	n, err2 := strconv.Atoi(nText)
	if err1 != nil || err2 != nil || pid <= 0 || n <= 0 || n > 64 {
		return nil, fmt.Errorf("%s=%q: want PID:N", HandoverEnv, v)
	}
	// Inherited without close-on-exec: rsync must not get a copy.
	for fd := firstHandoverFd; fd <= firstHandoverFd+n; fd++ {
		unix.CloseOnExec(fd)
	}
	ready := os.NewFile(uintptr(firstHandoverFd+n), "hand-over ready pipe")
	var st unix.Stat_t
	if err := unix.Fstat(int(ready.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		ready.Close()
		closeRange(firstHandoverFd, firstHandoverFd+n-1)
		return nil, fmt.Errorf("hand-over from PID %d: fd %d is not its ready pipe", pid, firstHandoverFd+n)
	}
	var ls []net.Listener
	for fd := firstHandoverFd; fd < firstHandoverFd+n; fd++ {
		k, err := classify(fd)
		if err == nil && k != sockListening {
			err = errors.New("not a listening socket")
		}
		if err != nil {
			closeListeners(ls)
			ready.Close()
			closeRange(fd, firstHandoverFd+n-1)
			return nil, fmt.Errorf("hand-over from PID %d: fd %d: %w", pid, fd, err)
		}
		f := os.NewFile(uintptr(fd), "handed-over socket")
		l, err := net.FileListener(f)
		f.Close() // FileListener holds its own dup
		if err != nil {
			closeListeners(ls)
			ready.Close()
			closeRange(fd+1, firstHandoverFd+n-1)
			return nil, fmt.Errorf("hand-over from PID %d: fd %d: %w", pid, fd, err)
		}
		ls = append(ls, l)
	}
	return &Source{Listeners: ls, Mode: fmt.Sprintf("a hand-over (took over from PID %d)", pid), HandedOverBy: pid, ready: ready}, nil
}

func closeRange(from, to int) {
	for fd := from; fd <= to; fd++ {
		unix.Close(fd)
	}
}

// Serving tells the process that handed the sockets over that this one
// accepts on them now, and with which version; it then stops accepting and
// drains. A no-op for a source that was not handed over, and after the
// first call. Exiting before it (a bad flag, a certificate that does not
// load) closes the pipe unwritten, and the old process keeps serving.
func (s *Source) Serving(version string) error {
	if s.ready == nil {
		return nil
	}
	_, err := fmt.Fprintf(s.ready, "serving %s\n", version)
	s.ready.Close()
	s.ready = nil
	if err != nil {
		return fmt.Errorf("tell PID %d that we serve: %w", s.HandedOverBy, err)
	}
	return nil
}
