package tlsbridge

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/ktls"
	"golang.org/x/sys/unix"
)

// kernelPath hands the session to the kernel: the client's own socket,
// switched to kernel TLS, becomes rsync's stdin. No pair, no copy loop and
// no PROXY header: rsync's getpeername sees the real client. We stay only to
// reap rsync, send close_notify and write the summary.
type kernelPath struct {
	s   *Server
	tcp *net.TCPConn
	rc  syscall.RawConn
}

// switchToKernel switches the client's socket to kernel TLS. It returns the
// kernel path; or, with nothing done to the socket, why the bridge should
// serve the session instead; or an error when the switch failed half-way
// and the session cannot continue.
func (s *Server) switchToKernel(sess *session, st tls.ConnectionState, ko *kernelOffer) (dataPath, FallbackReason, error) {
	tcp := sess.raw.(*net.TCPConn)
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nil, FallbackReason(err.Error()), nil
	}
	cs, ss := ko.log.Secrets()
	if cs == nil || ss == nil {
		return nil, FallbackReason(errNoSecrets.Error()), nil
	}
	err = ktls.Enable(rc, st.CipherSuite, ss, cs)
	// The kernel has its copies now (or the session goes to the bridge,
	// where crypto/tls keeps its own): ours go at once, not when the
	// session ends.
	ko.log.Wipe()
	if err != nil {
		var ke *ktls.Error
		if !errors.As(err, &ke) || !ke.Fallback {
			return nil, "", fmt.Errorf("kernel tls with %s: %w (the session cannot continue)", sess.peer, err)
		}
		return nil, FallbackReason(explainKTLS(ke)), nil
	}
	// From here on the socket speaks TLS through the kernel only: the
	// tls.Conn must never write again, or its records would collide with
	// the kernel's sequence numbers.
	return kernelPath{s: s, tcp: tcp, rc: rc}, "", nil
}

func (k kernelPath) serve(sess *session) served {
	s := k.s
	out := served{path: "ktls", pair: "-", rsyncExit: -1}
	f, err := k.tcp.File() // a dup for rsync's stdin; raw stays ours
	if err != nil {
		out.err = fmt.Errorf("start rsync with %s: %w", sess.peer, err)
		return out
	}
	setUserTimeout(k.rc, s.Stall)
	rsync := s.Rsync.OwnSocket() // rsync reads the client itself
	proc, err := s.startRsync(rsync, f, "", sess.env)
	f.Close() // rsync holds its own copy now
	if err != nil {
		out.err = fmt.Errorf("start rsync with %s: %w", sess.peer, err)
		return out
	}
	sess.started(out.path, out.pair, proc.cmd.Process.Pid)
	// rsync carries the session itself: the data path ends when it exits,
	// or when the service stops.
	stop := proc.termOnCancel(sess.ctx)
	select {
	case <-proc.done:
	case <-sess.ctx.Done():
	}
	out.rsyncExit = proc.reap()
	stop()
	out.in, out.out, out.err = k.close(sess.peer, out.rsyncExit)
	return out
}

// close ends a kernel TLS session after rsync: close_notify, a moment to
// read what the client still sends, and the bytes on the wire. err names
// what the client sent that made rsync's read fail, if it did.
func (k kernelPath) close(peer string, rsyncExit int) (in, out int64, err error) {
	// What made rsync stop, if the client sent something the kernel does
	// not pass to read(2): an alert, a KeyUpdate.
	typ, body, pending := ktls.PendingRecord(k.rc)
	// A client that already hung up (rsync's own protocol told it the
	// transfer was complete) cannot take the close_notify; that is no
	// failure of the session.
	cerr := ktls.SendCloseNotify(k.rc, time.Now().Add(5*time.Second))
	if cerr != nil && rsyncExit == 0 && !errors.Is(cerr, unix.EPIPE) && !errors.Is(cerr, unix.ECONNRESET) {
		err = fmt.Errorf("kernel tls with %s: sending close_notify: %w", peer, cerr)
	}
	k.tcp.CloseWrite()
	drainKTLS(k.rc, time.Now().Add(k.s.Linger))
	in, out = wireBytes(k.rc)
	if pending && typ != ktls.RecordApplication && rsyncExit != 0 {
		err = fmt.Errorf("kernel tls with %s: %s; rsync's read failed and the session ended", peer, describeRecord(typ, body))
	}
	return in, out, err
}
