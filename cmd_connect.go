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

var connectHelp = commandHelp{
	synopsis: "connect [flags] [-l USER] HOST [rsync --server --daemon .]",
	about: `
The --rsh helper for rsync daemon connections over TLS, a drop-in for
"rsync-ssl --HELPER". rsync runs it; "rsync-ssl-shim rsync" sets that up:

  rsync --rsh='/usr/bin/rsync-ssl-shim connect' -av HOST::MODULE/ DEST/

It connects to HOST with TLS, checks the server, copies stdin to the server
and the server to stdout. HOST is a name, an IPv4 address, or an IPv6 address
bare or in brackets. Names are sent as SNI and must be in the certificate;
an IP address must be one of its IP names. Each flag overrides the
environment variable named with it.`,
	after: `
Exit status: 0 when the server ended the session cleanly (TLS close_notify),
1 on any failure, with one line on stderr naming the hop (resolve, tcp
connect, tls handshake, rsync greeting, tls session), the peer and what to
try; 2 on a usage error.`,
}

// clientFlags are the flags "connect" and "check" share.
type clientFlags struct {
	port, ca, cert, key, servername string
	datapath                        string
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

// registerDataPath adds --datapath, which only a helper that carries a
// session has (connect, and rsync for its helper), not check.
func (f *clientFlags) registerDataPath(fs *flag.FlagSet) {
	fs.StringVar(&f.datapath, "datapath", "auto", "who seals and opens the records after the handshake: `MODE` auto (the kernel,\nwhere its tls module is loaded and the session is TLS 1.3 with AES-GCM; else\nthis program), ktls (the kernel or fail, saying why) or user (always this\nprogram). Linux only; elsewhere auto means user")
}

func (f *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.port, "port", "", "TLS `PORT`. Default: $RSYNC_PORT if set and not 0 (rsync sets it from\nrsync://HOST:PORT/), else $RSYNC_SSL_PORT, else 874")
	fs.StringVar(&f.ca, "ca", "", "trust only the CA certificates in `FILE` (PEM). $RSYNC_SSL_CA_CERT: unset = the\nsystem roots; set but empty = no verification at all (a warning is printed);\na file = that CA")
	fs.StringVar(&f.cert, "cert", "", "client certificate `FILE` (PEM), for servers that ask for one. $RSYNC_SSL_CERT")
	fs.StringVar(&f.key, "key", "", "its private key `FILE` (PEM); default: the --cert file. $RSYNC_SSL_KEY")
	fs.StringVar(&f.servername, "servername", "", "`NAME` to send as SNI and to find in the certificate, instead of HOST (for a\nhost reached by address)")
	fs.Var(pinFlag{f}, "pin", "accept exactly this server key, `sha256:BASE64` (SHA-256 of its\nSubjectPublicKeyInfo; \"check\" prints it). Repeat for key rollover. Alone, the\npin is the whole check (self-signed servers); with --ca or RSYNC_SSL_CA_CERT\nboth must pass. $RSYNC_SSL_PIN (several separated by commas)")
	fs.BoolVar(&f.skipHostname, "skip-hostname-check", false, "verify the chain but not the name. $RSYNC_SSL_SKIP_HOSTNAME_CHECK=1")
	fs.BoolVar(&f.insecure, "insecure-skip-verify", false, "do not verify the server at all (like an empty RSYNC_SSL_CA_CERT): anyone on\nthe path can read and change the transfer")
	fs.DurationVar(&f.timeout, "connect-timeout", 30*time.Second, "bound (`DURATION`) for name lookup, TCP connect, TLS handshake and the rsync\ngreeting; for check, for each hop")
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
	if f.datapath != "" {
		if o.DataPath, err = client.ParseDataPath(f.datapath); err != nil {
			return o, "", fmt.Errorf("--datapath: %w", err)
		}
	}

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

	if o.Pins, err = f.pinList(set["pin"], env); err != nil {
		return o, "", err
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

// pinList is --pin, or else RSYNC_SSL_PIN: several pins (a key rollover)
// separated by commas or spaces.
func (f *clientFlags) pinList(flagSet bool, env func(string) (string, bool)) ([]certid.Pin, error) {
	var pins []certid.Pin
	for _, s := range f.pins {
		p, _ := certid.ParsePin(s) // checked by Set
		pins = append(pins, p)
	}
	if v, ok := env("RSYNC_SSL_PIN"); ok && !flagSet {
		for _, s := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
			p, err := certid.ParsePin(s)
			if err != nil {
				return nil, fmt.Errorf("RSYNC_SSL_PIN: %w", err)
			}
			pins = append(pins, p)
		}
	}
	return pins, nil
}

func runConnect(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("connect", connectHelp, stderr)
	var cf clientFlags
	cf.register(fs)
	cf.registerDataPath(fs)
	fs.String("l", "", "`USER`, passed by rsync for USER@HOST; ignored (the daemon asks for the user itself)")
	if code := parseFlags(fs, args, stdout); code >= 0 {
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
