package tlsbridge

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/rsyncd"
)

// bridgePath copies the session through our process: rsync gets one end
// of a socket pair, behind a PROXY v2 header naming the client.
type bridgePath struct{ s *Server }

func (b bridgePath) serve(sess *session) served {
	s := b.s
	out := served{path: "bridge", rsyncExit: -1}
	pair, err := s.newPair(sess)
	if err != nil {
		out.err = fmt.Errorf("start rsync with %s: %w", sess.peer, err)
		return out
	}
	proc, err := s.startRsync(s.Rsync, pair.Theirs, pair.TrustAs, sess.env)
	// rsync holds its own copy now; ours must go, or rsync's exit would
	// never look like EOF to the bridge.
	pair.Theirs.Close()
	if err != nil {
		pair.Ours.Close()
		out.err = fmt.Errorf("start rsync with %s: %w", sess.peer, err)
		return out
	}
	out.pair = s.Pair.String()
	defer pair.Ours.Close()
	sess.started(out.path, out.pair, proc.cmd.Process.Pid)

	stop := proc.termOnCancel(sess.ctx)
	bs, idle := s.copyBoth(sess, pair.Ours)
	stop()
	out.in, out.out = bs.In, bs.Out
	out.rsyncExit = proc.reap()
	out.module = rsyncd.ModuleRequested(bs.Head)
	out.err = s.explainEnd(bs, out, sess.peer)
	if idle {
		out.err = &ModuleTimeoutError{Peer: sess.peer, Identity: sess.identity, After: s.ModuleTimeout}
	}
	return out
}

// newPair makes the socket pair and writes the PROXY header into it: the
// kernel buffers it before rsync runs, and rsync reads it first thing.
func (s *Server) newPair(sess *session) (*Pair, error) {
	pair, err := NewPair(s.Pair)
	if err != nil {
		return nil, err
	}
	if s.Rsync.Proxy != rsyncd.ProxyOff {
		pair.Ours.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := pair.Ours.Write(ProxyV2Header(sess.remote, sess.local))
		pair.Ours.SetWriteDeadline(time.Time{})
		if err != nil {
			pair.Theirs.Close()
			pair.Ours.Close()
			return nil, fmt.Errorf("writing the PROXY header: %w", err)
		}
	}
	return pair, nil
}

// copyBoth copies both ways until both are done. idle reports that the
// client was ended for not naming a module within s.ModuleTimeout.
func (s *Server) copyBoth(sess *session, ours net.Conn) (bs Stats, idle bool) {
	if s.ModuleTimeout <= 0 {
		return Bridge(sess.tc, sess.raw, ours.(halfCloser), s.Linger, s.Stall), false
	}
	mw := watchModule(sess.tc, sess.raw, s.ModuleTimeout)
	bs = Bridge(mw, sess.raw, ours.(halfCloser), s.Linger, s.Stall)
	mw.stop()
	return bs, mw.expired()
}

// explainEnd says why a bridged session failed, nil when it did not:
// rsync's own status is reported as is, but an rsync that exited before
// saying anything is named as the hop that failed.
func (s *Server) explainEnd(bs Stats, out served, peer string) error {
	switch {
	case out.out == 0 && out.rsyncExit != 0 && (bs.Err == nil || errors.Is(bs.Err, ErrRsyncClosed)):
		// rsync died before saying anything: that is the hop that
		// failed, also when the bridge then met its closed end (the
		// client's bytes arrived after rsync's exit).
		hint := ""
		if s.Pair == PairUnix {
			hint = "; an rsync newer than 3.5.0 does not take an AF_UNIX socket as its inetd stdin: use --pair tcp"
		}
		if cerr := s.CheckRsyncdConf(); IsConfError(cerr) {
			// Rare, and rsync's reason went to its log or syslog:
			// have it read its configuration again, to say why.
			return fmt.Errorf("start rsync for %s: rsync exited with status %d before its greeting: %w", peer, out.rsyncExit, cerr)
		}
		return fmt.Errorf("start rsync for %s: rsync exited with status %d before its greeting (see rsync's log%s)", peer, out.rsyncExit, hint)
	case bs.Err != nil:
		return fmt.Errorf("bridge with %s: %w", peer, explainBridge(bs.Err))
	}
	return nil
}
