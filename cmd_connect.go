package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/certid"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/client"
)

const connectUsage = `Usage: rsync-ssl-shim connect [flags] [-l USER] HOST [rsync --server --daemon .]

The --rsh helper for rsync daemon connections over TLS, a drop-in for
"rsync-ssl --HELPER". rsync runs it; "rsync-ssl-shim rsync" sets that up:

  rsync --rsh='/usr/bin/rsync-ssl-shim connect' -av HOST::MODULE/ DEST/

It connects to HOST with TLS, checks the server, copies stdin to the server
and the server to stdout. HOST is a name, an IPv4 address, or an IPv6 address
bare or in brackets. Names are sent as SNI and must be in the certificate;
an IP address must be one of its IP names. -l USER (from USER@HOST) is
accepted and ignored: the daemon asks for the user itself.

Flags (each overrides the environment variable named with it):
  --port PORT            TLS port. Default: $RSYNC_PORT if set and not 0 (rsync
                         sets it from rsync://HOST:PORT/), else $RSYNC_SSL_PORT,
                         else 874
  --ca FILE              trust only the CA certificates in FILE (PEM).
                         $RSYNC_SSL_CA_CERT: unset = the system roots; set but
                         empty = no verification at all (a warning is printed);
                         a file = that CA
  --cert FILE            client certificate (PEM), for servers that ask for one.
                         $RSYNC_SSL_CERT
  --key FILE             its private key (PEM); default: the --cert file.
                         $RSYNC_SSL_KEY
  --servername NAME      name to send as SNI and to find in the certificate,
                         instead of HOST (for a host reached by address)
  --pin sha256:BASE64    accept exactly this server key (SHA-256 of its
                         SubjectPublicKeyInfo; "check" prints it). Repeat for
                         key rollover. Alone, the pin is the whole check (self-
                         signed servers); with --ca or RSYNC_SSL_CA_CERT both
                         must pass
  --skip-hostname-check  verify the chain but not the name.
                         $RSYNC_SSL_SKIP_HOSTNAME_CHECK=1
  --insecure-skip-verify do not verify the server at all (like an empty
                         RSYNC_SSL_CA_CERT): anyone on the path can read and
                         change the transfer
  --connect-timeout D    bound for name lookup, TCP connect, TLS handshake and
                         the rsync greeting (default 30s)
  -l USER                passed by rsync for USER@HOST; ignored

Exit status: 0 when the server ended the session cleanly (TLS close_notify),
1 on any failure, with one line on stderr naming the hop (resolve, tcp
connect, tls handshake, rsync greeting, tls session), the peer and what to
try; 2 on a usage error.
`

// clientFlags are the flags "connect" and "check" share.
type clientFlags struct {
	port, ca, cert, key, servername string
	pins                            []string
	skipHostname, insecure          bool
	timeout                         time.Duration
}

type pinFlag struct{ f *clientFlags }

func (p pinFlag) String() string { return strings.Join(p.f.pins, ",") }
func (p pinFlag) Set(s string) error {
	if _, err := certid.ParsePin(s); err != nil {
		return err
	}
	p.f.pins = append(p.f.pins, s)
	return nil
}

func (f *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.port, "port", "", "TLS port")
	fs.StringVar(&f.ca, "ca", "", "CA certificates (PEM)")
	fs.StringVar(&f.cert, "cert", "", "client certificate (PEM)")
	fs.StringVar(&f.key, "key", "", "client key (PEM)")
	fs.StringVar(&f.servername, "servername", "", "name for SNI and the certificate check")
	fs.Var(pinFlag{f}, "pin", "sha256:BASE64 key pin")
	fs.BoolVar(&f.skipHostname, "skip-hostname-check", false, "verify the chain, not the name")
	fs.BoolVar(&f.insecure, "insecure-skip-verify", false, "do not verify the server")
	fs.DurationVar(&f.timeout, "connect-timeout", 30*time.Second, "connect bound")
}

// options merges flags over the rsync-ssl environment. urlPort is a port
// the user wrote into the target (check's HOST:PORT), between --port and the
// environment. warn is set when nothing will verify the server.
func (f *clientFlags) options(fs *flag.FlagSet, host, urlPort string, env func(string) (string, bool)) (o client.Options, warn string, err error) {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	o.Host = host
	o.ServerName = f.servername
	o.ConnectTimeout = f.timeout

	switch {
	case set["port"]:
		if o.Port, err = client.ParsePort(f.port); err != nil {
			return o, "", fmt.Errorf("--port: %w", err)
		}
	case urlPort != "":
		o.Port = urlPort
	default:
		// rsync always exports RSYNC_PORT to its helper, 0 meaning "no
		// port in the URL", exactly as rsync-ssl reads it.
		o.Port = "874"
		if p, ok := env("RSYNC_PORT"); ok && p != "" && p != "0" {
			if o.Port, err = client.ParsePort(p); err != nil {
				return o, "", fmt.Errorf("RSYNC_PORT: %w", err)
			}
		} else if p, ok := env("RSYNC_SSL_PORT"); ok && p != "" {
			if o.Port, err = client.ParsePort(p); err != nil {
				return o, "", fmt.Errorf("RSYNC_SSL_PORT: %w", err)
			}
		}
	}

	for _, s := range f.pins {
		p, _ := certid.ParsePin(s) // checked by Set
		o.Pins = append(o.Pins, p)
	}
	caEnv, caSet := env("RSYNC_SSL_CA_CERT")
	switch {
	case f.insecure:
		o.Trust = client.TrustNone
		warn = "--insecure-skip-verify"
	case set["ca"]:
		if f.ca == "" {
			return o, "", errors.New("--ca needs a file name (for no verification, --insecure-skip-verify)")
		}
		o.Trust, o.CAFile = client.TrustCAFile, f.ca
	case caSet && caEnv == "":
		o.Trust = client.TrustNone
		warn = "RSYNC_SSL_CA_CERT is set but empty"
	case caSet:
		o.Trust, o.CAFile = client.TrustCAFile, caEnv
	case len(o.Pins) > 0:
		// A pin names the one key to accept; demanding a public CA as
		// well would rule out the self-signed servers pins are for.
		o.Trust = client.TrustNone
	default:
		o.Trust = client.TrustSystem
	}
	if len(o.Pins) > 0 {
		warn = ""
	}

	o.CertFile, o.KeyFile = f.cert, f.key
	if !set["cert"] {
		o.CertFile, _ = env("RSYNC_SSL_CERT")
	}
	if !set["key"] {
		o.KeyFile, _ = env("RSYNC_SSL_KEY")
	}
	skip, _ := env("RSYNC_SSL_SKIP_HOSTNAME_CHECK")
	o.SkipHostnameCheck = f.skipHostname || skip == "1"
	if f.timeout <= 0 {
		return o, "", errors.New("--connect-timeout must be positive, e.g. 30s")
	}
	return o, warn, nil
}

func clientFlagSet(name string) *flag.FlagSet { return flag.NewFlagSet(name, flag.ContinueOnError) }

// parseFlags runs fs and handles --help; done means return code.
func parseClientFlags(fs *flag.FlagSet, usage string, args []string, stdout, stderr io.Writer) (code int, done bool) {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return exitOK, true
	case err != nil:
		fmt.Fprintf(stderr, "rsync-ssl-shim %s: %v\n\n%s", fs.Name(), err, usage)
		return exitUsage, true
	}
	return 0, false
}

func runConnect(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := clientFlagSet("connect")
	var cf clientFlags
	cf.register(fs)
	var user string
	fs.StringVar(&user, "l", "", "user (ignored)")
	if code, done := parseClientFlags(fs, connectUsage, args, stdout, stderr); done {
		return code
	}
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "rsync-ssl-shim connect: %v\n", err)
		return code
	}
	tail, err := client.ParseHelperTail(fs.Args())
	if err != nil {
		return fail(exitUsage, err)
	}
	o, warn, err := cf.options(fs, tail.Host, "", os.LookupEnv)
	if err != nil {
		return fail(exitUsage, err)
	}
	if warn != "" {
		fmt.Fprintf(stderr, "rsync-ssl-shim connect: warning: %s: the server at %s is not verified; anyone on the path can read and change this transfer\n", warn, o.Host)
	}
	d, err := client.NewDialer(o)
	if err != nil {
		return fail(exitUsage, err)
	}
	c, err := d.Dial(context.Background())
	if err != nil {
		return fail(exitFailure, err)
	}
	defer c.Close()
	if err := client.Pump(c, stdin, stdout, o.ConnectTimeout); err != nil {
		return fail(exitFailure, err)
	}
	return exitOK
}

// rshQuote quotes a word the way rsync splits --rsh: single quotes group,
// and a doubled quote inside them stands for one quote. Backslashes mean
// nothing to rsync there.
func rshQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
