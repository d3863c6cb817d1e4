//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/activation"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/rsyncd"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/runas"
	"golang.org/x/sys/unix"
)

// servePlan is the server plus what the accept loop needs to reload.
type servePlan struct {
	tlsbridge.Server
	store *tlsbridge.CertStore
	info  *rsyncd.Info
	// proxies are the load balancers trusted to send PROXY headers
	// (--trusted-proxy); nil when there are none.
	proxies *activation.ProxyPolicy
	// limits counts sessions in the accept loop, gate the connections
	// still before the end of their handshake; both nil for one
	// connection per process, where the socket unit or inetd limits.
	limits *activation.Limiter
	gate   *activation.Gate
	// firstByte bounds the time from accept to the first byte.
	firstByte time.Duration
	// status is what the accept loop tells systemd; nil for one
	// connection per process, or with no service manager listening.
	status *loopStatus
}

// buildServer checks the flags that need no connection, loads the
// certificates and reads the rsync binary, so that a mistake stops serve
// before any client is accepted.
func buildServer(o *serveOptions, log *logger) (*servePlan, error) {
	minV, err := checkServeFlags(o)
	if err != nil {
		return nil, err
	}
	store, client, err := loadTLS(o, log)
	if err != nil {
		return nil, err
	}
	info, err := rsyncd.Probe(o.rsyncPath)
	if err != nil {
		return nil, rsyncNotFound(o.rsyncPath, err)
	}
	rsync, env, err := rsyncStart(o, info)
	if err != nil {
		return nil, err
	}
	if o.rsyncConf != "" {
		if _, err := os.Stat(o.rsyncConf); err != nil {
			return nil, fmt.Errorf("--rsyncd-conf: %w", err)
		}
	}
	pair, err := pairKind(o.pairName, info)
	if err != nil {
		return nil, err
	}
	mode, err := dataPathMode(o)
	if err != nil {
		return nil, err
	}
	if rsync.Proxy, err = proxyMode(o.proxyName, info, log); err != nil {
		return nil, err
	}
	return &servePlan{
		Server: tlsbridge.Server{
			TLS:               tlsbridge.ServerTLSConfig(store, minV, client),
			Client:            client,
			HandshakeTimeout:  o.handshake,
			Rsync:             rsync,
			Pair:              pair,
			DataPathMode:      mode,
			KernelUnavailable: kernelUnavailable(mode),
			Linger:            o.linger,
			ModuleTimeout:     max(o.moduleTimeout, 0),
			Env:               env,
			Logf:              log.Logf,
		},
		store:     store,
		info:      info,
		firstByte: firstByteBound(o),
	}, nil
}

// checkServeFlags checks what needs nothing read from disk, and returns
// the lowest TLS version.
func checkServeFlags(o *serveOptions) (uint16, error) {
	if len(o.certs) == 0 {
		return 0, usage("--cert FILE and --key FILE are required")
	}
	if len(o.certs) != len(o.keys) {
		return 0, usage("%d --cert but %d --key: give each --cert its --key, in the same order", len(o.certs), len(o.keys))
	}
	minV, err := tlsbridge.ParseMinTLS(o.minTLS)
	if err != nil {
		return 0, usageError{fmt.Errorf("--min-tls %w", err)}
	}
	if o.handshake <= 0 {
		return 0, usage("--handshake-timeout must be positive")
	}
	if err := checkLimitFlags(o); err != nil {
		return 0, err
	}
	if err := tlsbridge.CheckClientAuth(o.client); err != nil {
		return 0, usageError{withFlags(err)}
	}
	for _, addr := range o.listen {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			if _, perr := strconv.ParseUint(addr, 10, 16); perr == nil {
				return 0, usage("--listen %s: give HOST:PORT, e.g. :%s (every address) or 127.0.0.1:%s", addr, addr, addr)
			}
			return 0, usageError{fmt.Errorf("--listen %s: give HOST:PORT or [V6]:PORT: %w", addr, err)}
		}
	}
	return minV, nil
}

// rsyncNotFound says that the rsync serve would start is not there, and
// what to do: install it, or fix the --rsync the admin gave.
func rsyncNotFound(path string, err error) error {
	fix := "install rsync, or pass --rsync PATH"
	if path != "rsync" {
		fix = "fix --rsync " + path
	}
	return fmt.Errorf("start rsync: %w (%s)", err, fix)
}

// loadTLS loads the server certificates and the client-certificate policy.
func loadTLS(o *serveOptions, log *logger) (*tlsbridge.CertStore, *tlsbridge.ClientPolicy, error) {
	var pairs []tlsbridge.CertPair
	for i := range o.certs {
		pairs = append(pairs, tlsbridge.CertPair{CertFile: o.certs[i], KeyFile: o.keys[i]})
	}
	store, warns, err := tlsbridge.LoadCerts(pairs)
	if err != nil {
		return nil, nil, withFlags(err)
	}
	for _, w := range warns {
		log.Logf("warning: %s", w)
	}
	client, err := tlsbridge.NewClientPolicy(o.client)
	if err != nil {
		return nil, nil, withFlags(err)
	}
	return store, client, nil
}

// rsyncStart is how rsync is started, and the environment it starts
// from: as --rsync-user when given.
func rsyncStart(o *serveOptions, info *rsyncd.Info) (rsyncd.Command, []string, error) {
	// Every rsync starts with no_new_privs and no inheritable or ambient
	// capabilities, whoever it runs as; signals reach it through runas.
	cmd := rsyncd.Command{Path: info.Path, Conf: o.rsyncConf, Args: o.rsyncArgs, KnowsProxyProtocol: info.HasProxyProtocol,
		Launch: runas.StartCleared, Kill: runas.Signal}
	env := tlsbridge.BaseEnv(os.Environ())
	if o.rsyncUser == "" {
		return cmd, env, nil
	}
	runAs, err := runas.Lookup(o.rsyncUser)
	if err != nil {
		return cmd, nil, err
	}
	if err := runAs.Check(); err != nil {
		return cmd, nil, err
	}
	cmd.User = rsyncCredential(runAs)
	if runAs.IsRoot() {
		if cmd.Isolate, err = isolation(o, info); err != nil {
			return cmd, nil, err
		}
	} else if err := runas.DropCaps(unix.CAP_SYS_ADMIN, unix.CAP_SYS_CHROOT); err != nil && !errors.Is(err, runas.ErrThreadsUnsupported) {
		return cmd, nil, err
	}
	return cmd, tlsbridge.WithUser(env, runAs.Name, runAs.Home), nil
}

// isolation is --rsync-user root: rsync as uid 0, so that rsyncd.conf's
// "uid =" and "use chroot = yes" work, started through our own rsync-exec
// in a mount namespace where the key's directory and the credentials are
// covered, with only CAP_SETUID, CAP_SETGID and CAP_SYS_CHROOT.
func isolation(o *serveOptions, info *rsyncd.Info) (*rsyncd.Isolation, error) {
	if err := runas.CheckIsolated(); err != nil {
		return nil, err
	}
	hide, err := runas.HiddenPaths(o.keys, os.Getenv("CREDENTIALS_DIRECTORY"), o.rsyncConf, info.Path)
	if err != nil {
		return nil, err
	}
	// /proc/self/exe is this binary even once a package upgrade has
	// replaced the file.
	return &rsyncd.Isolation{Helper: "/proc/self/exe", Hide: hide}, nil
}

// pairKind maps --pair.
func pairKind(name string, info *rsyncd.Info) (tlsbridge.PairKind, error) {
	switch name {
	case "auto", "tcp":
		// The loopback TCP pair works with every rsync, and measured
		// faster than AF_UNIX here (tests/bench: 1 GiB 3.26 s against
		// 4.22 s, server CPU 2.71 against 3.61 s/GiB): rsync writes in
		// small pieces, and an AF_UNIX stream wakes the bridge for each
		// one where loopback TCP hands over larger segments.
		return tlsbridge.PairTCP, nil
	case "unix":
		if info.Version != "" && !info.AcceptsUnixPair() {
			return 0, usage("--pair unix: rsync %s at %s does not take an AF_UNIX socket as its inetd stdin (only 3.5.0 and older do): use --pair tcp", info.Version, info.Path)
		}
		return tlsbridge.PairUnix, nil
	}
	return 0, usage("--pair %q: give tcp, unix or auto", name)
}

// dataPathMode maps --datapath; ktls must be possible at all.
func dataPathMode(o *serveOptions) (tlsbridge.DataPathMode, error) {
	mode, err := tlsbridge.ParseDataPathMode(o.dataPath)
	if err != nil {
		return 0, usageError{fmt.Errorf("--datapath %w", err)}
	}
	if mode == tlsbridge.DataPathKTLS {
		if len(o.trustedProxies) > 0 {
			return 0, usage("--datapath ktls cannot serve --trusted-proxy connections: rsync must learn the client's address from a PROXY header, which only the bridge sends (use --datapath auto)")
		}
		if why := tlsbridge.KernelTLSUnavailable(); why != "" {
			return 0, fmt.Errorf("--datapath ktls: %s; or use --datapath auto", why)
		}
	}
	return mode, nil
}

// proxyMode maps --proxy-protocol.
func proxyMode(name string, info *rsyncd.Info, log *logger) (rsyncd.ProxyMode, error) {
	switch name {
	case "auto":
		return info.AutoProxyMode()
	case "hosts":
		return rsyncd.ProxyHosts, nil
	case "plain":
		return rsyncd.ProxyPlain, nil
	case "off":
		if !info.Readable {
			// rsync is then started without proxyprotocol=no, which
			// an rsync without the parameter would refuse.
			log.Logf("warning: --proxy-protocol off: cannot tell whether %s knows \"proxy protocol\"; if its rsyncd.conf sets it, a client could name its own address", info.Path)
		}
		return rsyncd.ProxyOff, nil
	}
	return 0, usage("--proxy-protocol %q: give hosts, plain, off or auto", name)
}

// rsyncCredential is the user rsync runs as, nil for the one we are.
func rsyncCredential(u *runas.User) *rsyncd.Credential {
	c := u.Credential()
	if c == nil {
		return nil
	}
	return &rsyncd.Credential{Uid: c.Uid, Gid: c.Gid, Groups: c.Groups}
}

// kernelUnavailable says, for --datapath auto, why the kernel path is out
// for every session: looked up once, not tried per connection.
func kernelUnavailable(mode tlsbridge.DataPathMode) string {
	if mode != tlsbridge.DataPathAuto {
		return ""
	}
	return tlsbridge.KernelTLSUnavailable()
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
