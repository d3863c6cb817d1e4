//go:build !linux

package main

import (
	"fmt"
	"io"
)

// runServe exists on Linux only: the server relies on socket activation,
// Linux socket options and rsync's inetd mode as Debian ships them. The
// client commands build everywhere rsync runs.
func runServe(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "rsync-ssl-shim serve: the server runs on Linux only; this build has the client commands (connect, rsync, check)")
	return exitFailure
}

// runRsyncExec exists on Linux only, for serve.
func runRsyncExec(args []string, stderr io.Writer) int {
	fmt.Fprintln(stderr, "rsync-ssl-shim rsync-exec: Linux only")
	return exitFailure
}
