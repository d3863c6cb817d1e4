package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/client"
)

const rsyncUsage = `Usage: rsync-ssl-shim rsync [RSYNC ARGS...]

Runs rsync with --rsh set to "rsync-ssl-shim connect", so that every daemon
connection (HOST::MODULE, rsync://HOST[:PORT]/MODULE) goes over TLS. Like
rsync-ssl, it refuses targets that are not daemon-style.

It also takes rsyncs://[USER@]HOST[:PORT]/MODULE[/PATH]: the URL is handed to
rsync as rsync://[USER@]HOST/MODULE[/PATH] and the port goes to the helper
in RSYNC_SSL_PORT. IPv6 addresses go in brackets: rsyncs://[::1]:874/data/.

The helper's settings come from the environment (see
"rsync-ssl-shim connect --help"): RSYNC_SSL_PORT, RSYNC_SSL_CA_CERT,
RSYNC_SSL_CERT, RSYNC_SSL_KEY, RSYNC_SSL_SKIP_HOSTNAME_CHECK. rsync's own
--rsh/-e cannot be combined with this command; call rsync with
--rsh='rsync-ssl-shim connect --pin ...' yourself for helper flags.

Examples:
  rsync-ssl-shim rsync -av mirror.example.org::pub/ pub/
  RSYNC_SSL_CA_CERT=ca.pem rsync-ssl-shim rsync -av rsyncs://[2001:db8::5]:8740/data/ data/

Exit status: rsync's.
`

// rsyncCommand builds rsync's argv and environment; it is apart from the
// exec so that tests can check it.
func rsyncCommand(self string, args, env []string) (argv, newEnv []string, err error) {
	daemon := false
	port := ""
	out := make([]string, 0, len(args)+1)
	out = append(out, "rsync", "--rsh="+rshQuote(self)+" connect")
	for i, a := range args {
		switch {
		case a == "--":
			// Everything after is a path; rsync's own syntax rules still
			// apply to them, so they are checked as targets too.
		case a == "-e" || strings.HasPrefix(a, "--rsh") || (strings.HasPrefix(a, "-e") && !strings.HasPrefix(a, "--")):
			return nil, nil, fmt.Errorf("argument %d (%q): --rsh/-e cannot be combined with this command, which sets --rsh itself", i+1, a)
		case client.IsRsyncsURL(a):
			u, err := client.ParseRsyncsURL(a)
			if err != nil {
				return nil, nil, err
			}
			if u.Port != "" {
				if port != "" && port != u.Port {
					return nil, nil, fmt.Errorf("rsyncs:// URLs with different ports (%s and %s): rsync makes one connection", port, u.Port)
				}
				port = u.Port
			}
			a = u.DaemonURL()
			daemon = true
		case strings.Contains(a, "rsync://") || strings.Contains(a, "::"):
			daemon = true
		}
		out = append(out, a)
	}
	if !daemon {
		return nil, nil, errors.New("you must use rsync-ssl-shim rsync with a daemon-style hostname (HOST::MODULE, rsync://HOST/MODULE or rsyncs://HOST[:PORT]/MODULE)")
	}
	newEnv = env
	if port != "" {
		newEnv = append(withoutEnv(env, "RSYNC_SSL_PORT"), "RSYNC_SSL_PORT="+port)
	}
	return out, newEnv, nil
}

func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

func runRsync(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, rsyncUsage)
		return exitUsage
	}
	if args[0] == "--help" || args[0] == "-h" {
		fmt.Fprint(stdout, rsyncUsage)
		return exitOK
	}
	// rsync starts the helper from its own working directory and PATH, so
	// it gets the absolute path of this very binary.
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "rsync-ssl-shim rsync: find own path for --rsh: %v\n", err)
		return exitFailure
	}
	argv, env, err := rsyncCommand(self, args, os.Environ())
	if err != nil {
		fmt.Fprintf(stderr, "rsync-ssl-shim rsync: %v\n", err)
		return exitUsage
	}
	path, err := exec.LookPath("rsync")
	if err != nil {
		fmt.Fprintf(stderr, "rsync-ssl-shim rsync: start rsync: %v (install rsync)\n", err)
		return exitFailure
	}
	return execRsync(path, argv, env, stderr)
}
