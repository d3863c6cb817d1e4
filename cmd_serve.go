//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/activation"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/runas"
)

const serveAbout = `
Terminates TLS on a connection handed over by systemd (rsync-ssl.socket) or
inetd/xinetd, and only after a successful handshake starts "rsync --daemon"
on a private socket pair and copies bytes both ways. rsync never listens on
any port. rsync learns the client's real address through a PROXY v2 header,
so its log and "hosts allow"/"hosts deny" see the client, not 127.0.0.1.

Where the connection comes from, in this order:
  1. a connected socket on fd 0 (systemd Accept=yes with StandardInput=socket,
     inetd, xinetd "wait = no");
  2. systemd LISTEN_FDS with a connected socket (Accept=yes);
  3. a listening socket on fd 0 or in LISTEN_FDS (systemd Accept=no, xinetd
     "wait = yes"): accepted here, one rsync per connection;
  4. --listen ADDR: our own listener, for containers and development.
In modes 3 and 4 certificates are re-read on SIGHUP and when the files change;
in modes 1 and 2 every connection reads them afresh. In modes 3 and 4 a new
binary put in place of this one (a package upgrade) takes over the listening
sockets within seconds, or at once on SIGHUP, while this process serves its
sessions to their end: see "Upgrades" in docs/server.md.

What each rsync gets (--proxy-protocol auto, the default, reads it off the
rsync binary without running it):
  rsync 3.5.0 and newer   real client address ("proxy protocol hosts" = the pair)
  rsync 3.2.7 to 3.4.x    real client address ("proxy protocol" alone)
  older rsync             refused unless --proxy-protocol off: rsync would see
                          every client as 127.0.0.1
Every version also gets TCPREMOTEIP, SSL_PROTOCOL and friends in its
environment (and so in its exec hooks).

Behind a TCP load balancer (HAProxy "send-proxy-v2", a cloud NLB), list it
with --trusted-proxy: its connections must then start with a PROXY v1 or v2
header, read before TLS, and the client address it carries is the one that
counts everywhere. A connection from it that closes without a header, or
right after a header naming no client (v2 LOCAL), is a health check: one log
line, exit 0, no rsync.
A PROXY header from any other peer is refused.

Data path (--datapath): with the kernel's tls module loaded (asked once at
start on a loopback socket; the shipped units load it), a TLS 1.3 AES-GCM
session is handed to the kernel after our handshake, and rsync gets the
client's own socket:
no copy through this process, no pair, no PROXY header (rsync sees the
client itself, on every rsync version). auto, the default, uses the bridge
for TLS 1.2, ChaCha20, --trusted-proxy, or a kernel without the module, and
logs why; ktls refuses such sessions; bridge never uses the kernel.

Exit status (one connection): 0 served, rsync's own status when rsync failed,
1 when the connection failed before or around rsync, 2 for bad usage.
`

func runServe(args []string, stdout, stderr io.Writer) int {
	// Before anything can be written: under inetd/xinetd fd 1 and 2 may be
	// the client's socket.
	fdErr := runas.CloseInheritedOnExec()
	if err := runas.Undumpable(); err != nil && fdErr == nil {
		// A hook that became our uid could otherwise read our memory
		// (the key) through /proc/PID/mem.
		fdErr = err
	}
	stdio := activation.ProtectStdio()
	log := newLogger(stderr)
	var rsyncStderr io.Writer = stderr
	if stdio.StderrWasConn {
		log = newSyslogLogger()
		rsyncStderr = nil
	}

	if fdErr != nil {
		// Nothing this process was handed may reach rsync; refuse
		// rather than serve with a descriptor leaking into it.
		log.Logf("serve: %v", fdErr)
		return exitFailure
	}
	var o serveOptions
	fs := serveFlags(&o, log)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		log.Logf("serve: unexpected argument %q (rsync's own arguments go in --rsync-arg)", fs.Arg(0))
		return exitUsage
	}
	srv, err := buildServer(&o, log)
	if err != nil {
		log.Logf("serve: %v", err)
		if isUsage(err) {
			return exitUsage
		}
		return exitFailure
	}
	srv.RsyncStderr = rsyncStderr
	srv.OnStart = func(res tlsbridge.Result) {
		logStart(log, res)
		srv.status.started()
	}
	srv.Stall = max(o.stall, 0)
	if srv.proxies, err = trustedProxyPolicy(o.trustedProxies); err != nil {
		log.Logf("serve: %v", err)
		return exitUsage
	}
	return serveSource(srv, &o, log)
}

// serveSource finds the connection or the listeners serve was handed and
// serves them until done, or until SIGTERM or SIGINT.
func serveSource(srv *servePlan, o *serveOptions, log *logger) int {
	src, err := activation.Inherit()
	if src == nil && err == nil {
		src, err = activation.Detect(o.listen)
	}
	if err != nil && errors.Is(err, activation.ErrPeerGone) && srv.proxies != nil {
		// Behind a load balancer this is its health check, every few
		// seconds: one short line, and not a failed service instance.
		log.Logf("health check: connection closed by its peer before it could be served")
		return exitOK
	}
	if err != nil {
		log.Logf("serve: %v", err)
		if errors.Is(err, activation.ErrNoConnection) {
			return exitUsage
		}
		return exitFailure
	}
	defer src.Close()
	if srv.Rsync.User != nil {
		// From here on the capabilities to switch users and to signal
		// rsync are effective only around those calls (nothing else
		// needs them: the listening socket is bound by now).
		if err := runas.LowerEffective(); err != nil && !errors.Is(err, runas.ErrThreadsUnsupported) {
			log.Logf("serve: %v", err)
			return exitFailure
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if src.Conn != nil {
		// One connection per process: the summary is our last word before
		// exit, and journald reads a native entry's unit from /proc after
		// it arrives, so it would often come without _SYSTEMD_UNIT, lost to
		// "journalctl -u". The stderr stream keeps the unit; the fields
		// are for the accept loop, which outlives its entries.
		log.journal = false
		return srv.serveOne(ctx, src.Conn, log)
	}
	return serveLoop(ctx, srv, src, o, log)
}

// errUsage marks a mistake in serve's command line: exit status 2.
var errUsage = errors.New("usage")

// usageError is a command-line mistake; the error it carries says which
// flag and the fix, and keeps its chain.
type usageError struct{ err error }

func (e usageError) Error() string   { return e.err.Error() }
func (e usageError) Unwrap() error   { return e.err }
func (e usageError) Is(t error) bool { return t == errUsage }

func usage(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// isUsage reports a command-line mistake, ours or one a package found in
// a flag's value (each marks its own with a sentinel).
func isUsage(err error) bool {
	return errors.Is(err, errUsage) || errors.Is(err, runas.ErrUsage) || errors.Is(err, tlsbridge.ErrClientAuthUsage)
}

// serveOptions holds serve's flags as given.
type serveOptions struct {
	certs, keys, listen, rsyncArgs, trustedProxies    listFlag
	exitOnChange                                      listFlag
	minTLS, rsyncPath, rsyncConf, pairName, proxyName string
	rsyncUser, dataPath                               string
	handshake, exitIdle, linger, stall, firstByte     time.Duration
	maxConns, maxPerSource                            int
	maxHandshakes, maxHandshakesPerSource             int
	prefixV4, prefixV6                                int
	maxWait, moduleTimeout                            time.Duration
	// client takes the client-certificate flags directly.
	client tlsbridge.ClientAuthConfig
}

// serveFlags declares serve's flags into o: the one declaration --help and
// the man page are made from.
func serveFlags(o *serveOptions, log *logger) *flag.FlagSet {
	fs := newFlagSet("serve", commandHelp{synopsis: "serve [flags]", about: serveAbout}, log)
	fs.Var(&o.certs, "cert", "server certificate chain `FILE` (PEM), leaf first; repeat --cert/--key pairs\nfor more names: chosen by SNI, the first pair is the default")
	fs.Var(&o.keys, "key", "private key `FILE` (PEM, unencrypted) of the --cert in the same position;\nthe shipped units read it through the group _rsync-ssl-key, which rsync's\nuser (--rsync-user) is not in")
	fs.StringVar(&o.minTLS, "min-tls", "1.2", "lowest TLS `VERSION` accepted: 1.2 or 1.3")
	fs.DurationVar(&o.handshake, "handshake-timeout", 10*time.Second, "give up on a client that has not finished the TLS handshake within `DURATION`")
	fs.StringVar(&o.rsyncPath, "rsync", "rsync", "rsync `PATH` (looked up in $PATH if it has no slash)")
	fs.StringVar(&o.rsyncConf, "rsyncd-conf", "", "rsyncd.conf `FILE`, passed to rsync as --config (default: rsync's own, /etc/rsyncd.conf)")
	fs.StringVar(&o.rsyncUser, "rsync-user", "", "run rsync and its hooks as `USER[:GROUP]` (a local user; its groups from\n/etc/group), with no capabilities and none of our environment, so that nothing\nrsync starts can open --key; needs root, or CAP_SETUID, CAP_SETGID and CAP_KILL.\nroot: for rsyncd.conf's uid/gid/use chroot, rsync as root in a mount namespace\nwithout --key's directory or the credentials, with only CAP_SETUID, CAP_SETGID\nand CAP_SYS_CHROOT; serve also needs CAP_SYS_CHROOT and CAP_SYS_ADMIN")
	fs.Var(&o.rsyncArgs, "rsync-arg", "extra `ARG` for rsync --daemon (repeatable), e.g. --rsync-arg=--log-file=/var/log/rsync-ssl.log")
	fs.StringVar(&o.pairName, "pair", "auto", "`KIND` of socket pair to rsync: tcp (loopback TCP, works with every rsync and\nmeasured fastest), unix (AF_UNIX, rsync 3.5.0 and older only), or auto (tcp)")
	fs.StringVar(&o.proxyName, "proxy-protocol", "auto", "`MODE` by which rsync learns the client address: hosts (rsync >= 3.5.0),\nplain (rsync 3.2.7 to 3.4.x), off (rsync sees 127.0.0.1), or auto (from the binary)")
	fs.StringVar(&o.dataPath, "datapath", "auto", "`MODE` for the session's bytes after the handshake: ktls (kernel TLS on the\nclient's socket, handed to rsync), bridge (copied through this process), or\nauto (ktls where the kernel and the session allow, else bridge)")
	fs.Var(&o.listen, "listen", "listen on `ADDR` (host:port, [v6]:port; repeatable) when no socket was handed over")
	fs.Var(&o.trustedProxies, "trusted-proxy", "load balancer `CIDR` or address (repeatable) whose connections must start with a\nPROXY v1 or v2 header carrying the client's address; from anyone else a\nPROXY header is refused")
	limitFlags(fs, o)
	fs.DurationVar(&o.moduleTimeout, "module-timeout", 30*time.Second, "end a client that has not named a module (or asked for the list) within\n"+
		"`DURATION` of its handshake, and stop its rsync (0: never; rsync's own\n"+
		"\"timeout\" still applies)")
	fs.DurationVar(&o.exitIdle, "exit-idle", 0, "with a listening socket: exit after `DURATION` with no connection (0: never)")
	fs.Var(&o.exitOnChange, "exit-on-change", "with a listening socket: once `FILE` changes (repeatable), stop accepting and\n"+
		"exit when the connections already accepted are done (transfers run to their\n"+
		"end; one not past its module line is ended by --handshake-timeout and\n"+
		"--module-timeout), so that systemd starts serve afresh for the clients waiting\n"+
		"in the backlog. Only for --cert/--key passed as LoadCredential= copies: files\n"+
		"serve reads itself are reloaded in place (SIGHUP, or a change seen within 5s)")
	fs.DurationVar(&o.linger, "linger", 5*time.Second, "once rsync is done, how long (`DURATION`) the client may take to close its side")
	fs.DurationVar(&o.stall, "stall-timeout", 5*time.Minute, "end a session when a write to the client or to rsync makes no progress for\n`DURATION`, or the client's host stops answering TCP keepalives (0: never)")
	fs.StringVar(&o.client.CAFile, "client-ca", "", "ask clients for a certificate issued by a CA in `FILE` (PEM bundle); rsync\nlearns who connected through SSL_CLIENT_S_DN_CN and friends")
	fs.StringVar(&o.client.Mode, "client-auth", "", "`MODE`: require (refuse clients without a certificate that passes), optional\n(check one if given; without, rsync sees SSL_CLIENT_VERIFY=NONE) or none\n(default: require with --client-ca or --allow-spki, else none)")
	fs.Var((*listFlag)(&o.client.AllowCN), "allow-cn", "admit only client certificates whose subject CN is `NAME` (repeatable; one match\nin any of the allow lists admits; with none, any certificate --client-ca verifies)")
	fs.Var((*listFlag)(&o.client.AllowDNS), "allow-dns", "admit client certificates with DNS `NAME` among their subject alternative names")
	fs.Var((*listFlag)(&o.client.AllowURI), "allow-uri", "admit client certificates with `URI` among their subject alternative names")
	fs.Var((*listFlag)(&o.client.AllowEmail), "allow-email", "admit client certificates with `ADDRESS` among their subject alternative names")
	fs.Var((*listFlag)(&o.client.AllowSPKI), "allow-spki", "admit the client key with `[NAME=]PIN`, PIN being sha256:BASE64 (SHA-256 of its\nSubjectPublicKeyInfo; a refused client's pin is in the log). Without --client-ca the\npins alone decide, self-signed client certificates work, and nothing the certificate\nsays is exported: rsync gets NAME as SSL_CLIENT_S_DN_CN and the pin as\nSSL_CLIENT_SPKI_SHA256; the log's client= is NAME, or the pin")
	fs.Var((*listFlag)(&o.client.CRLFiles), "crl", "refuse client certificates revoked in CRL `FILE` (PEM or DER, signed by a CA in\nthe --client-ca bundle; repeatable). A CRL past its next update is a warning")
	fs.BoolVar(&o.client.CRLStrict, "crl-strict", false, "refuse clients when a CRL that covers them is past its next update")
	return fs
}
