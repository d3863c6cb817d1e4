//go:build unix

package main

import (
	"fmt"
	"io"
	"syscall"
)

// execRsync replaces this process with rsync, as rsync-ssl does: rsync's
// signals, exit status and terminal handling stay its own.
func execRsync(path string, argv, env []string, stderr io.Writer) int {
	err := syscall.Exec(path, argv, env)
	fmt.Fprintf(stderr, "rsync-ssl-shim rsync: exec %s: %v\n", path, err)
	return exitFailure
}
