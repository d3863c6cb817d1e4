//go:build linux

package rsyncd

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
)

// Start runs rsync with stdin as its only socket. stdout is /dev/null (rsync
// closes it in inetd mode anyway); stderr is ours, unless ours is the
// connection, which the caller signals by passing nil.
func (r *Command) Start(stdin *os.File, trust string, env []string, stderr io.Writer) (*exec.Cmd, error) {
	argv := r.Argv(trust)
	cmd := &exec.Cmd{Path: r.Path, Args: argv, Env: env, Stdin: stdin, Stderr: stderr}
	if r.Isolate != nil {
		cmd.Path, cmd.Args = r.Isolate.Helper, r.Isolate.wrap(argv)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// If we die, rsync must not live on as an orphan holding a
		// half-written transfer; SIGTERM lets it remove its temp file.
		Pdeathsig: syscall.SIGTERM,
	}
	if u := r.User; u != nil {
		// Go sets the groups, then the gid, then the uid, in the child
		// before exec; Pdeathsig is set after them, since the kernel
		// clears it on a change of credentials.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: u.Uid, Gid: u.Gid, Groups: u.Groups}
	}
	launch := r.Launch
	if launch == nil {
		launch = func(start func() error) error { return start() }
	}
	if err := launch(cmd.Start); err != nil {
		return nil, fmt.Errorf("start rsync: %w", err)
	}
	return cmd, nil
}
