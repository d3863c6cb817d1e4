package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/client"
)

var rsyncHelp = commandHelp{
	synopsis: "rsync [HELPER FLAGS] [RSYNC ARGS...]",
	about: `
Runs rsync with --rsh set to "rsync-ssl-shim connect", so that every daemon
connection (HOST::MODULE, rsync://HOST[:PORT]/MODULE) goes over TLS. Like
rsync-ssl, it refuses targets that are not daemon-style.

It also takes rsyncs://[USER@]HOST[:PORT]/MODULE[/PATH]: the URL is handed to
rsync as rsync://[USER@]HOST/MODULE[/PATH] and the port goes to the helper
in RSYNC_SSL_PORT. IPv6 addresses go in brackets: rsyncs://[::1]:874/data/.

The flags below are the helper's (see "rsync-ssl-shim connect --help"); they
go before rsync's own arguments (anywhere before a "--" works) and are passed
to the helper on its command line. Each overrides the environment variable
named with it: RSYNC_SSL_CA_CERT, RSYNC_SSL_CERT, RSYNC_SSL_KEY,
RSYNC_SSL_PIN, RSYNC_SSL_SKIP_HOSTNAME_CHECK. The port is rsync's own --port
(or the URL's, or RSYNC_SSL_PORT), which rsync hands the helper in
RSYNC_PORT. rsync's own --rsh/-e cannot be combined with this command.`,
	after: `
Examples:
  rsync-ssl-shim rsync -av mirror.example.org::pub/ pub/
  rsync-ssl-shim rsync --ca ca.pem -av rsyncs://[2001:db8::5]:8740/data/ data/
  rsync-ssl-shim rsync --pin sha256:BASE64 -av 192.0.2.7::data/ data/

Exit status: rsync's; 2 on a usage error.`,
}

// newRsyncFlags is connect's flag set without --port: rsync has a --port of
// its own, and hands it to the helper in RSYNC_PORT.
func newRsyncFlags(out io.Writer) (*flag.FlagSet, *clientFlags) {
	all := flag.NewFlagSet("connect", flag.ContinueOnError)
	cf := &clientFlags{}
	cf.register(all)
	cf.registerDataPath(all)
	fs := newFlagSet("rsync", rsyncHelp, out)
	all.VisitAll(func(f *flag.Flag) {
		if f.Name != "port" {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	})
	return fs, cf
}

// rsyncHelperWords takes the helper's flags out of args, checks them as
// connect would, and returns them as the words to append to --rsh, with
// file names made absolute (rsync may start the helper elsewhere).
func rsyncHelperWords(args []string) (words, rest []string, err error) {
	fs, cf := newRsyncFlags(io.Discard)
	withValue, boolean := map[string]bool{}, map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			boolean[f.Name] = true
		} else {
			withValue[f.Name] = true
		}
	})
	flags, rest, err := client.SplitHelperFlags(args, withValue, boolean)
	if err != nil {
		return nil, nil, err
	}
	if err := fs.Parse(flags); err != nil {
		return nil, nil, err
	}
	noEnv := func(string) (string, bool) { return "", false }
	if _, _, err := cf.options(fs, "localhost", "", noEnv); err != nil {
		return nil, nil, err
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "ca", "cert", "key":
			abs, aerr := filepath.Abs(f.Value.String())
			if aerr != nil {
				err = fmt.Errorf("--%s: %w", f.Name, aerr)
			}
			words = append(words, "--"+f.Name, abs)
		case "pin":
			for _, p := range cf.pins {
				words = append(words, "--pin", p)
			}
		default:
			words = append(words, "--"+f.Name+"="+f.Value.String())
		}
	})
	return words, rest, err
}

// rsyncCommand builds rsync's argv and environment; it is apart from the
// exec so that tests can check it.
func rsyncCommand(self string, args, env []string) (argv, newEnv []string, err error) {
	helper, args, err := rsyncHelperWords(args)
	if err != nil {
		return nil, nil, err
	}
	rsh := rshQuote(self) + " connect"
	for _, w := range helper {
		rsh += " " + rshQuote(w)
	}
	daemon := false
	port := ""
	out := make([]string, 0, len(args)+1)
	out = append(out, "rsync", "--rsh="+rsh)
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
		fs, _ := newRsyncFlags(stderr)
		fs.Usage()
		return exitUsage
	}
	if args[0] == "--help" || args[0] == "-h" {
		fs, _ := newRsyncFlags(stdout)
		fs.Usage()
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
