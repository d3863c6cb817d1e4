// Command rsync-ssl-shim runs rsync's daemon protocol over TLS without a
// persistent daemon: "serve" terminates TLS on a connection handed over by
// systemd or inetd and bridges it to a fresh "rsync --daemon"; "connect" is
// the matching --rsh helper for the client; "rsync" wraps rsync with it;
// "check" walks every hop to a server.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
)

// version and commit are set at build time with -ldflags "-X main.version=...
// -X main.commit=..." (the Makefile and the Debian package do): the version
// is the release in the file VERSION or a development build after it
// (packaging/version.sh). A plain "go build" leaves "dev" and the commit Go
// stamped into the build info, if any.
var (
	version = "dev"
	commit  = ""
)

// licence is the project's SPDX identifier, printed beside the version so
// that whoever finds the binary alone knows the terms it comes under.
const licence = "Apache-2.0"

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

// Exit codes shared by every command. rsync's own status is passed through
// unchanged when rsync itself failed.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const topUsage = `rsync-ssl-shim: rsync's daemon protocol over TLS, with no daemon to babysit.

Usage:
  rsync-ssl-shim serve   [flags]          TLS on a connection from systemd/inetd, bridged to rsync --daemon
  rsync-ssl-shim connect [flags] HOST ... --rsh helper: TLS to HOST:874 on behalf of rsync
  rsync-ssl-shim rsync   [RSYNC ARGS...]  run rsync with "connect" as its --rsh (like rsync-ssl)
  rsync-ssl-shim check   [flags] HOST[:PORT] [MODULE]
                                          walk every hop to a server and say which works
  rsync-ssl-shim version                  print the version, the commit, the Go version and the licence

Run "rsync-ssl-shim COMMAND --help" for the flags of a command.
`

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return runServe(args[1:], stdout, stderr)
	case "connect":
		return runConnect(args[1:], stdin, stdout, stderr)
	case "rsync":
		return runRsync(args[1:], stdout, stderr)
	case "check":
		return runCheck(args[1:], stdout, stderr)
	case "rsync-exec":
		// serve's own helper for --rsync-user root; not in the list above.
		return runRsyncExec(args[1:], stderr)
	case "version", "--version", "-V":
		fmt.Fprint(stdout, versionText())
		return exitOK
	case "help", "--help", "-h":
		if len(args) > 1 && args[1] != "help" && !strings.HasPrefix(args[1], "-") {
			// "help serve" is "serve --help".
			return run([]string{args[1], "--help"}, stdin, stdout, stderr)
		}
		fmt.Fprint(stdout, topUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "rsync-ssl-shim: unknown command %q\n\n%s", args[0], topUsage)
		return exitUsage
	}
}

// versionText is what "version" prints: what a bug report needs to name
// the build, and the terms it comes under.
func versionText() string {
	c := commit
	if c == "" {
		c = "unknown"
		if bi, ok := debug.ReadBuildInfo(); ok {
			var rev, modified string
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					modified = s.Value
				}
			}
			if rev != "" {
				c = rev
				if modified == "true" {
					c += " (modified)"
				}
			}
		}
	}
	return fmt.Sprintf("rsync-ssl-shim %s\ncommit:  %s\ngo:      %s %s/%s\nlicence: %s\n",
		version, c, runtime.Version(), runtime.GOOS, runtime.GOARCH, licence)
}
