// Command rsync-inet-only stands in for upstream rsync after 3.5.0 (PR
// #1075), of which no release can be installed here: such an rsync enters
// inetd mode only when its stdin is a connected AF_INET/AF_INET6 stream
// socket. Handed anything else it does not fail; it starts its standalone
// daemon. This program applies that same test to its stdin and then runs
// the real rsync either way: with stdin untouched (inetd mode), or with
// stdin moved to /dev/null, which makes the real rsync take its standalone
// path with the arguments it was given, exactly as the newer rsync would.
// Each start is recorded with the mode taken.
package main

import (
	"fmt"
	"os"
	"syscall"
)

// Set at build time with -ldflags "-X main.realRsync=... -X main.record=...".
var realRsync, record string

func main() {
	mode := "standalone"
	if inetSocket(0) {
		mode = "inetd"
	}
	if f, err := os.OpenFile(record, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
		fmt.Fprintf(f, "%d %s\n", os.Getpid(), mode)
		f.Close()
	}
	if mode == "standalone" {
		null, err := syscall.Open("/dev/null", syscall.O_RDONLY, 0)
		if err == nil {
			syscall.Dup2(null, 0)
		}
	}
	args := append([]string{realRsync}, os.Args[1:]...)
	err := syscall.Exec(realRsync, args, os.Environ())
	fmt.Fprintln(os.Stderr, "exec rsync:", err)
	os.Exit(127)
}

func inetSocket(fd int) bool {
	domain, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_DOMAIN)
	if err != nil || (domain != syscall.AF_INET && domain != syscall.AF_INET6) {
		return false
	}
	typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err != nil || typ != syscall.SOCK_STREAM {
		return false
	}
	_, err = syscall.Getpeername(fd)
	return err == nil
}
