//go:build linux

package main

import (
	"io"
	"os"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/runas"
)

// runRsyncExec is the hidden "rsync-exec --hide DIR ... -- RSYNC ARGS...":
// what serve --rsync-user root starts as uid 0 in rsync's place. It covers
// each DIR in a mount namespace of its own, keeps only the capabilities
// rsyncd.conf's "uid =" and "use chroot" need, and execs rsync. Not in the
// command list: nobody but serve has a use for it.
func runRsyncExec(args []string, stderr io.Writer) int {
	log := newLogger(stderr)
	var hide []string
	for len(args) >= 2 && args[0] == "--hide" {
		hide = append(hide, args[1])
		args = args[2:]
	}
	if len(args) < 2 || args[0] != "--" {
		log.Logf("rsync-exec: usage: rsync-exec [--hide DIR]... -- RSYNC ARGS...")
		return exitUsage
	}
	err := runas.ExecIsolated(hide, args[1:], os.Environ())
	log.Logf("%v", err)
	return exitFailure
}
