//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/activation"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/rsyncd"
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
in modes 1 and 2 every connection reads them afresh.

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

Data path (--datapath): with the kernel's TLS module loaded ("tls" in
/proc/sys/net/ipv4/tcp_available_ulp), a TLS 1.3 AES-GCM session is handed
to the kernel after our handshake, and rsync gets the client's own socket:
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
	stdio := activation.ProtectStdio()
	log := newLogger(stderr)
	var rsyncStderr io.Writer = stderr
	if stdio.StderrWasConn {
		log = newSyslogLogger()
		rsyncStderr = nil
	}

	var o serveOptions
	fs := newFlagSet("serve", commandHelp{synopsis: "serve [flags]", about: serveAbout}, log)
	fs.Var(&o.certs, "cert", "server certificate chain `FILE` (PEM), leaf first; repeat --cert/--key pairs\nfor more names: chosen by SNI, the first pair is the default")
	fs.Var(&o.keys, "key", "private key `FILE` (PEM, unencrypted) of the --cert in the same position;\nunder systemd, pass it with LoadCredential= and read it from $CREDENTIALS_DIRECTORY")
	fs.StringVar(&o.minTLS, "min-tls", "1.2", "lowest TLS `VERSION` accepted: 1.2 or 1.3")
	fs.DurationVar(&o.handshake, "handshake-timeout", 10*time.Second, "give up on a client that has not finished the TLS handshake within `DURATION`")
	fs.StringVar(&o.rsyncPath, "rsync", "rsync", "rsync `PATH` (looked up in $PATH if it has no slash)")
	fs.StringVar(&o.rsyncConf, "rsyncd-conf", "", "rsyncd.conf `FILE`, passed to rsync as --config (default: rsync's own, /etc/rsyncd.conf)")
	fs.StringVar(&o.rsyncUser, "rsync-user", "", "run rsync and its hooks as `USER[:GROUP]` (a local user; its groups from\n/etc/group), with no capabilities and none of our environment, so that nothing\nrsync starts can open --key; needs root, or CAP_SETUID, CAP_SETGID and CAP_KILL")
	fs.Var(&o.rsyncArgs, "rsync-arg", "extra `ARG` for rsync --daemon (repeatable), e.g. --rsync-arg=--log-file=/var/log/rsync-ssl.log")
	fs.StringVar(&o.pairName, "pair", "auto", "`KIND` of socket pair to rsync: tcp (loopback TCP, works with every rsync and\nmeasured fastest), unix (AF_UNIX, rsync 3.5.0 and older only), or auto (tcp)")
	fs.StringVar(&o.proxyName, "proxy-protocol", "auto", "`MODE` by which rsync learns the client address: hosts (rsync >= 3.5.0),\nplain (rsync 3.2.7 to 3.4.x), off (rsync sees 127.0.0.1), or auto (from the binary)")
	fs.StringVar(&o.dataPath, "datapath", "auto", "`MODE` for the session's bytes after the handshake: ktls (kernel TLS on the\nclient's socket, handed to rsync), bridge (copied through this process), or\nauto (ktls where the kernel and the session allow, else bridge)")
	fs.Var(&o.listen, "listen", "listen on `ADDR` (host:port, [v6]:port; repeatable) when no socket was handed over")
	fs.Var(&o.trustedProxies, "trusted-proxy", "load balancer `CIDR` or address (repeatable) whose connections must start with a\nPROXY v1 or v2 header carrying the client's address; from anyone else a\nPROXY header is refused")
	fs.IntVar(&o.maxConns, "max-conns", 64, "with a listening socket: at most `N` connections served at once; one more\n"+
		"waits up to --max-conns-wait for a slot, then is told rsync's \"@ERROR: max\n"+
		"connections (N) reached -- try again later\" after its handshake (0: no cap)")
	fs.IntVar(&o.maxPerSource, "max-conns-per-source", 0, "with a listening socket: at most `N` of them from one client address (behind\n"+
		"--trusted-proxy, the address in the PROXY header), answered the same way (0: no cap)")
	fs.DurationVar(&o.maxWait, "max-conns-wait", 5*time.Second, "how long (`DURATION`) a connection over --max-conns or --max-conns-per-source\n"+
		"waits for a slot before it is told to try again later")
	fs.DurationVar(&o.moduleTimeout, "module-timeout", 30*time.Second, "end a client that has not named a module (or asked for the list) within\n"+
		"`DURATION` of its handshake, and stop its rsync (0: never; rsync's own\n"+
		"\"timeout\" still applies)")
	fs.DurationVar(&o.exitIdle, "exit-idle", 0, "with a listening socket: exit after `DURATION` with no connection (0: never)")
	fs.Var(&o.exitOnChange, "exit-on-change", "with a listening socket: once `FILE` changes (repeatable), exit at the first\n"+
		"moment no connection is in flight, so that systemd starts serve afresh (with\n"+
		"new LoadCredential= copies) at the next connection")
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
		if errors.Is(err, errUsage) {
			return exitUsage
		}
		return exitFailure
	}
	srv.RsyncStderr = rsyncStderr
	srv.Stall = max(o.stall, 0)
	if srv.proxies, err = trustedProxyPolicy(o.trustedProxies); err != nil {
		log.Logf("serve: %v", err)
		return exitUsage
	}

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
	return serveLoop(ctx, srv, src, &o, log)
}

var errUsage = errors.New("usage")

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }
func (e usageError) Is(t error) bool {
	return t == errUsage
}

// serveOptions holds serve's flags as given.
type serveOptions struct {
	certs, keys, listen, rsyncArgs, trustedProxies    listFlag
	exitOnChange                                      listFlag
	minTLS, rsyncPath, rsyncConf, pairName, proxyName string
	rsyncUser, dataPath                               string
	handshake, exitIdle, linger, stall                time.Duration
	maxConns, maxPerSource                            int
	maxWait, moduleTimeout                            time.Duration
	// client takes the client-certificate flags directly.
	client tlsbridge.ClientAuthConfig
}

// buildServer checks the flags that need no connection, loads the
// certificates and reads the rsync binary, so that a mistake stops serve
// before any client is accepted.
func buildServer(o *serveOptions, log *logger) (*servePlan, error) {
	if len(o.certs) == 0 {
		return nil, usageError{"--cert FILE and --key FILE are required"}
	}
	if len(o.certs) != len(o.keys) {
		return nil, usageError{fmt.Sprintf("%d --cert but %d --key: give each --cert its --key, in the same order", len(o.certs), len(o.keys))}
	}
	minV, err := tlsbridge.ParseMinTLS(o.minTLS)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	if o.handshake <= 0 {
		return nil, usageError{"--handshake-timeout must be positive"}
	}
	if o.maxConns < 0 || o.maxPerSource < 0 {
		return nil, usageError{"--max-conns and --max-conns-per-source must be 0 (no cap) or more"}
	}
	if err := tlsbridge.CheckClientAuth(o.client); err != nil {
		return nil, usageError{err.Error()}
	}
	var pairs []tlsbridge.CertPair
	for i := range o.certs {
		pairs = append(pairs, tlsbridge.CertPair{CertFile: o.certs[i], KeyFile: o.keys[i]})
	}
	store, warns, err := tlsbridge.LoadCerts(pairs)
	if err != nil {
		return nil, err
	}
	for _, w := range warns {
		log.Logf("warning: %s", w)
	}
	client, err := tlsbridge.NewClientPolicy(o.client)
	if err != nil {
		return nil, err
	}
	info, err := rsyncd.Probe(o.rsyncPath)
	if err != nil {
		return nil, fmt.Errorf("start rsync: %w (pass --rsync PATH)", err)
	}
	env := tlsbridge.BaseEnv(os.Environ())
	var runAs *runas.User
	var launch func(func() error) error
	if o.rsyncUser != "" {
		if runAs, err = runas.Lookup(o.rsyncUser); err != nil {
			if errors.Is(err, runas.ErrUsage) {
				return nil, usageError{err.Error()}
			}
			return nil, err
		}
		if err := runAs.Check(); err != nil {
			return nil, err
		}
		env = tlsbridge.WithUser(env, runAs.Name, runAs.Home)
		launch = runas.StartCleared
	}
	if o.rsyncConf != "" {
		if _, err := os.Stat(o.rsyncConf); err != nil {
			return nil, fmt.Errorf("--rsyncd-conf: %w", err)
		}
	}
	var pair tlsbridge.PairKind
	switch o.pairName {
	case "auto", "tcp":
		// The loopback TCP pair works with every rsync, and measured
		// faster than AF_UNIX here (tests/bench: 1 GiB 3.26 s against
		// 4.22 s, server CPU 2.71 against 3.61 s/GiB): rsync writes in
		// small pieces, and an AF_UNIX stream wakes the bridge for each
		// one where loopback TCP hands over larger segments.
	case "unix":
		if info.Version != "" && !info.AcceptsUnixPair() {
			return nil, usageError{fmt.Sprintf("--pair unix: rsync %s at %s does not take an AF_UNIX socket as its inetd stdin (only 3.5.0 and older do): use --pair tcp", info.Version, info.Path)}
		}
		pair = tlsbridge.PairUnix
	default:
		return nil, usageError{fmt.Sprintf("--pair %q: give tcp, unix or auto", o.pairName)}
	}
	dataPath, err := tlsbridge.ParseDataPath(o.dataPath)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	if dataPath == tlsbridge.DataPathKTLS {
		if len(o.trustedProxies) > 0 {
			return nil, usageError{"--datapath ktls cannot serve --trusted-proxy connections: rsync must learn the client's address from a PROXY header, which only the bridge sends (use --datapath auto)"}
		}
		if why := tlsbridge.KernelTLSMissing(); why != "" {
			return nil, fmt.Errorf("--datapath ktls: %s; or use --datapath auto", why)
		}
	}
	var proxy rsyncd.ProxyMode
	switch o.proxyName {
	case "auto":
		if proxy, err = info.AutoProxyMode(); err != nil {
			return nil, err
		}
	case "hosts":
		proxy = rsyncd.ProxyHosts
	case "plain":
		proxy = rsyncd.ProxyPlain
	case "off":
		proxy = rsyncd.ProxyOff
		if !info.Readable {
			// rsync is then started without proxyprotocol=no, which
			// an rsync without the parameter would refuse.
			log.Logf("warning: --proxy-protocol off: cannot tell whether %s knows \"proxy protocol\"; if its rsyncd.conf sets it, a client could name its own address", info.Path)
		}
	default:
		return nil, usageError{fmt.Sprintf("--proxy-protocol %q: give hosts, plain, off or auto", o.proxyName)}
	}
	return &servePlan{
		Server: tlsbridge.Server{
			TLS:              tlsbridge.ServerTLSConfig(store, minV, client),
			Client:           client,
			HandshakeTimeout: o.handshake,
			Rsync: rsyncd.Command{Path: info.Path, Conf: o.rsyncConf, Args: o.rsyncArgs, Proxy: proxy,
				KnowsProxyProtocol: info.HasProxyProtocol, User: rsyncCredential(runAs), Launch: launch},
			Pair:          pair,
			DataPath:      dataPath,
			KernelMissing: kernelMissing(dataPath),
			Linger:        o.linger,
			ModuleTimeout: max(o.moduleTimeout, 0),
			Env:           env,
			Logf:          log.Logf,
		},
		store: store,
		info:  info,
	}, nil
}

// rsyncCredential is the user rsync runs as, nil for the one we are.
func rsyncCredential(u *runas.User) *rsyncd.Credential {
	c := u.Credential()
	if c == nil {
		return nil
	}
	return &rsyncd.Credential{Uid: c.Uid, Gid: c.Gid, Groups: c.Groups}
}

// kernelMissing says, for --datapath auto, why the kernel path is out for
// every session: looked up once, not tried per connection.
func kernelMissing(dp tlsbridge.DataPath) string {
	if dp != tlsbridge.DataPathAuto {
		return ""
	}
	return tlsbridge.KernelTLSMissing()
}

// servePlan is the server plus what the accept loop needs to reload.
type servePlan struct {
	tlsbridge.Server
	store *tlsbridge.CertStore
	info  *rsyncd.Info
	// proxies are the load balancers trusted to send PROXY headers
	// (--trusted-proxy); nil when there are none.
	proxies *activation.ProxyPolicy
	// limits counts connections in the accept loop; nil for one
	// connection per process, where the socket unit or inetd limits.
	limits *activation.Limiter
}

func trustedProxyPolicy(values []string) (*activation.ProxyPolicy, error) {
	if len(values) == 0 {
		return nil, nil
	}
	p := &activation.ProxyPolicy{}
	for _, v := range values {
		pfx, err := activation.ParseTrustedProxy(v)
		if err != nil {
			return nil, err
		}
		p.Trusted = append(p.Trusted, pfx)
	}
	return p, nil
}

// serveOne runs one connection: the PROXY header first when the peer is a
// trusted load balancer, then TLS and rsync. It logs the outcome and
// returns the exit status for per-connection mode.
func (srv *servePlan) serveOne(ctx context.Context, c net.Conn, log *logger) int {
	pc, err := srv.proxies.Intake(c, time.Now().Add(srv.HandshakeTimeout))
	if err != nil {
		c.Close()
		log.Logf("%v", err)
		if errors.Is(err, activation.ErrHealthCheck) {
			return exitOK
		}
		return exitFailure
	}
	if srv.limits != nil {
		addr := activation.ConnAddr(pc)
		release, err := srv.limits.Acquire(ctx, addr)
		if err != nil {
			why := err
			var le *activation.LimitError
			if errors.As(err, &le) && le.PerSource {
				why = fmt.Errorf("%w (from %s)", err, addr)
			}
			res := srv.RefuseConn(ctx, pc, err.Error(), why)
			logResult(log, res)
			return exitFailure
		}
		defer release()
	}
	res := srv.ServeConn(ctx, pc)
	logResult(log, res)
	return connExit(res)
}

// reload reads the server certificates, and the client CA bundle and CRLs
// if any, again; each set is swapped in only if all of its files load.
func (p *servePlan) reload() (warns []string, err error) {
	warns, err = p.store.Reload()
	if err != nil {
		return nil, err
	}
	if err := p.Client.Reload(); err != nil {
		return warns, err
	}
	return warns, nil
}

func logResult(log *logger, res tlsbridge.Result) {
	f := resultFields(res)
	if res.RsyncExit < 0 {
		log.Event(true, f, "%v", res.Err)
		return
	}
	log.Event(res.Err != nil, f, "%s", res)
}

// resultFields are the journal fields of one connection's summary.
func resultFields(res tlsbridge.Result) map[string]string {
	f := map[string]string{
		"RSYNC_SSL_EXIT":        strconv.Itoa(res.RsyncExit),
		"RSYNC_SSL_BYTES_IN":    strconv.FormatInt(res.In, 10),
		"RSYNC_SSL_BYTES_OUT":   strconv.FormatInt(res.Out, 10),
		"RSYNC_SSL_DURATION_MS": strconv.FormatInt(res.Duration.Milliseconds(), 10),
	}
	if ap, err := netip.ParseAddrPort(res.Peer); err == nil {
		f["RSYNC_SSL_CLIENT"] = ap.Addr().Unmap().String()
		f["RSYNC_SSL_CLIENT_PORT"] = strconv.Itoa(int(ap.Port()))
	} else {
		f["RSYNC_SSL_CLIENT"] = res.Peer
	}
	for k, v := range map[string]string{"RSYNC_SSL_MODULE": res.Module, "RSYNC_SSL_IDENTITY": res.Identity,
		"RSYNC_SSL_SNI": res.SNI, "RSYNC_SSL_TLS": res.Version, "RSYNC_SSL_DATAPATH": res.Pair} {
		if v != "" {
			f[k] = v
		}
	}
	if res.Err != nil {
		f["RSYNC_SSL_ERROR"] = res.Err.Error()
	}
	return f
}

// connExit maps one connection's outcome to the process exit status.
func connExit(res tlsbridge.Result) int {
	// On the kernel data path the shim never sees the stream, so a module
	// listing (which rsync ends with 255) cannot be told from the daemon
	// refusing a module (also 255, also a client's error, not ours).
	daemonEnd := res.Listing() || res.DataPath == "ktls"
	switch {
	case res.RsyncExit > 0 && !(daemonEnd && res.RsyncExit == 255 && res.Err == nil):
		return res.RsyncExit
	case res.Err != nil:
		return exitFailure
	}
	return exitOK
}

// certPoll is how often the accept loop looks for renewed certificates.
const certPoll = 5 * time.Second

func serveLoop(ctx context.Context, srv *servePlan, src *activation.Source, o *serveOptions, log *logger) int {
	exitIdle := o.exitIdle
	ho := newHandover(src, log)
	addrs := ""
	for i, l := range src.Listeners {
		if i > 0 {
			addrs += " "
		}
		addrs += l.Addr().String()
	}
	ver := srv.info.Version
	if ver == "" {
		ver = "unknown"
	}
	datapath := srv.DataPath.String()
	if srv.KernelMissing != "" {
		datapath += " (every session bridged: " + srv.KernelMissing + ")"
	}
	log.Logf("serving %s from %s, version %s; rsync %s (%s), pair %s, proxy protocol %s, datapath %s", addrs, src.Mode, version, srv.info.Path, ver, srv.Pair, srv.Rsync.Proxy, datapath)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reloadCtx, cancelReload := context.WithCancel(ctx)
	defer cancelReload()
	go func() {
		lastErr := ""
		tick := time.NewTicker(certPoll)
		defer tick.Stop()
		for {
			why := ""
			select {
			case <-reloadCtx.Done():
				return
			case <-hup:
				why = "SIGHUP"
			case <-tick.C:
				if !srv.store.Changed() && !srv.Client.Changed() {
					continue
				}
				why = "changed files"
			}
			warns, err := srv.reload()
			if err != nil {
				// The files stay changed, so the poll retries
				// every few seconds (a certificate not yet valid
				// goes in once it is): say so once, not each time.
				if msg := err.Error(); msg != lastErr || why == "SIGHUP" {
					log.Logf("reload certificates (%s): %v; still using the previous ones", why, err)
					lastErr = msg
				}
				continue
			}
			lastErr = ""
			for _, w := range warns {
				log.Logf("warning: %s", w)
			}
			log.Logf("reloaded certificates (%s)", why)
		}
	}()

	drain := watchChanged(reloadCtx, o.exitOnChange, certPoll, log)
	drain = ho.watch(reloadCtx, drain)
	srv.limits = &activation.Limiter{Total: o.maxConns, PerSource: o.maxPerSource, Wait: o.maxWait}
	// The loop accepts up to twice --max-conns: the second half are
	// connections waiting for a slot or being told to try again later.
	// Past that the kernel's backlog holds them (4096 under systemd):
	// they wait, and none is accepted only to be dropped.
	activation.Serve(ctx, src.Listeners, activation.LoopConfig{MaxConns: 2 * o.maxConns, ExitIdle: exitIdle, Drain: drain, Logf: log.Logf, Hold: ho.held},
		func(ctx context.Context, c net.Conn) {
			defer ho.session()()
			srv.serveOne(ctx, c, log)
		})
	ho.waitPredecessor(ctx)
	drained := false
	select {
	case <-drain:
		drained = true
	default:
	}
	switch {
	case ctx.Err() != nil:
		log.Logf("stopping: signal received")
	case ho.handedOver():
		log.Logf("exiting: every session has ended; PID %d (version %s) serves", ho.successor, ho.version)
	case drained:
		log.Logf("exiting: %s changed and no connection is in flight; the next connection starts serve afresh", strings.Join(o.exitOnChange, ", "))
	default:
		log.Logf("exiting: idle for %v", exitIdle)
	}
	return exitOK
}

// watchChanged returns a channel closed once any of files differs from what
// it was at the start (size, modification time, inode: a renewal that
// replaces the file by a rename counts), checked every poll. Under systemd
// the certificate and key reach serve as LoadCredential= copies made when
// the service starts, so a renewal of the originals only takes effect in a
// fresh service; serve cannot read the key's original itself. Nil files: a
// nil channel, which never closes.
func watchChanged(ctx context.Context, files []string, poll time.Duration, log *logger) <-chan struct{} {
	if len(files) == 0 {
		return nil
	}
	stamp := func(p string) string {
		fi, err := os.Stat(p)
		if err != nil {
			return "missing"
		}
		ino := uint64(0)
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		return fmt.Sprintf("%d %d %d", fi.Size(), fi.ModTime().UnixNano(), ino)
	}
	was := make([]string, len(files))
	for i, f := range files {
		was[i] = stamp(f)
	}
	ch := make(chan struct{})
	go func() {
		tick := time.NewTicker(poll)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for i, f := range files {
				if stamp(f) != was[i] {
					log.Logf("%s changed: exiting once no connection is in flight", f)
					close(ch)
					return
				}
			}
		}
	}()
	return ch
}
