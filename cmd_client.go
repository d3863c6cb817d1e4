package main

import (
	"fmt"
	"io"
)

// The client commands are filled in by the client work; until then they say so.

func runConnect(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "rsync-ssl-shim connect: not built yet")
	return exitFailure
}

func runRsync(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "rsync-ssl-shim rsync: not built yet")
	return exitFailure
}

func runCheck(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "rsync-ssl-shim check: not built yet")
	return exitFailure
}
