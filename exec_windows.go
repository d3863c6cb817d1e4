//go:build windows

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// execRsync runs rsync as a child (Windows has no exec that keeps the
// process) with this process's standard streams, and passes its exit
// status through.
func execRsync(path string, argv, env []string, stderr io.Writer) int {
	cmd := exec.Command(path, argv[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	fmt.Fprintf(stderr, "rsync-ssl-shim rsync: start %s: %v\n", path, err)
	return exitFailure
}
