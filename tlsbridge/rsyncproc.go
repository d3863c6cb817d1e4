package tlsbridge

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/rsyncd"
)

// How long reap gives an rsync whose data path has ended to exit by itself,
// then after SIGTERM, before it is killed.
const (
	reapWait = 10 * time.Second
	termWait = 5 * time.Second
)

// rsyncProc is one started rsync, on either data path. One stop policy for
// both: SIGTERM when the service stops (so rsync can remove its temporary
// files), and reap once the data path has ended.
type rsyncProc struct {
	// signal reaches rsync also when it runs as another user
	// (rsyncd.Command.Signal).
	signal func(p *os.Process, sig os.Signal) error
	cmd    *exec.Cmd
	done   chan struct{} // closed once cmd.Wait returned
	err    error         // cmd.Wait's result, read after done
}

// startRsync starts rsync with stdin as its connection (a pair's end, or
// the client's own socket); trust is the pair's loopback address for the
// PROXY header, "" for none. The caller closes its stdin afterwards: rsync
// holds its own copy.
func (s *Server) startRsync(rsync rsyncd.Command, stdin *os.File, trust string, env []string) (*rsyncProc, error) {
	cmd, err := rsync.Start(stdin, trust, env, s.RsyncStderr)
	if err != nil {
		return nil, err
	}
	p := &rsyncProc{cmd: cmd, done: make(chan struct{}), signal: rsync.Signal}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// termOnCancel sends rsync SIGTERM if ctx is cancelled (the service is
// stopping) before the returned stop is called.
func (p *rsyncProc) termOnCancel(ctx context.Context) (stop func()) {
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			p.signal(p.cmd.Process, syscall.SIGTERM)
		case <-stopped:
		case <-p.done:
		}
	}()
	return func() { close(stopped) }
}

// reap waits for rsync and returns its exit status. Its data path has ended,
// so rsync is on its way out; one that still lingers (blocked on a disk,
// say) is asked to stop, then made to.
func (p *rsyncProc) reap() int {
	select {
	case <-p.done:
	case <-time.After(reapWait):
		p.signal(p.cmd.Process, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(termWait):
			p.signal(p.cmd.Process, syscall.SIGKILL)
			<-p.done
		}
	}
	return rsyncd.ExitStatus(p.err)
}
