package tlsbridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"

	"strings"
	"syscall"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/rsyncd"
)

// Server bridges TLS connections to a fresh rsync each.
type Server struct {
	TLS *tls.Config
	// Client is the client-certificate policy TLS was built with
	// (ServerTLSConfig), nil for none.
	Client           *ClientPolicy
	HandshakeTimeout time.Duration
	Rsync            rsyncd.Command
	Pair             PairKind
	// DataPath says whether a session may go to kernel TLS (rsync gets
	// the client's socket) or always through the bridge.
	DataPath DataPath
	// KernelMissing, under DataPathAuto, says why no session can go to
	// the kernel (its TLS module is not loaded), found once at start:
	// every session is then bridged without trying, and its summary says
	// so in a few words.
	KernelMissing string
	// Linger bounds how long the client may keep its side open after
	// rsync is done.
	Linger time.Duration
	// Stall bounds a write to either side that makes no progress, and
	// (through TCP keepalive) how long a vanished client goes unnoticed;
	// 0 leaves both unbounded.
	Stall time.Duration
	// Env is the environment rsync starts from (os.Environ()).
	Env []string
	// RsyncStderr receives rsync's stderr; nil discards it.
	RsyncStderr io.Writer
	// ModuleTimeout bounds the time from the end of the handshake to the
	// client's module line; a client still silent then is ended and its
	// rsync stopped. 0: no bound (rsync's own "timeout" still applies).
	ModuleTimeout time.Duration
	// Logf writes one event line; it must be safe for concurrent use.
	Logf func(format string, args ...any)
}

// Result is the outcome of one connection, for its summary line.
type Result struct {
	Peer     string
	SNI      string
	Version  string
	Cipher   string
	Identity string
	// Module is what the client asked rsync for: a module name, or
	// "#list" for a module listing; "" if it never said.
	Module string
	// Pair is the kind of socket pair rsync got ("" before one was made,
	// "-" on the kernel data path, which has none).
	Pair string
	// DataPath is "ktls" or "bridge" once rsync was started.
	DataPath string
	// Fallback says why an auto session was bridged, "" otherwise.
	Fallback string
	// RsyncExit is rsync's exit status, or -1 if rsync was never started.
	RsyncExit int
	In, Out   int64
	Duration  time.Duration
	// Err is why the connection failed before or around rsync; nil when
	// it was served, whatever rsync's own status.
	Err error
}

// String is the one summary line for a served connection.
func (r Result) String() string {
	sni := sniField(r.SNI)
	id := r.Identity
	if id == "" {
		id = "-"
	}
	mod := r.Module
	if mod == "" {
		mod = "-"
	}
	s := fmt.Sprintf("%s: served sni=%s tls=%s cipher=%s client=%s module=%s pair=%s rsync_exit=%d in=%d out=%d duration=%s datapath=%s",
		r.Peer, sni, r.Version, r.Cipher, id, mod, r.Pair, r.RsyncExit, r.In, r.Out, r.Duration.Round(time.Millisecond), r.DataPath)
	if r.Fallback != "" {
		s += " fallback=\"" + r.Fallback + "\""
	}
	if r.Err != nil {
		s += " error=\"" + r.Err.Error() + "\""
	}
	return s
}

// ServeConn runs one connection to its end and closes it: sniff, TLS
// handshake, and only then the socket pair, rsync, the PROXY header and the
// copy. Nobody who fails the handshake ever reaches rsync. When ctx is
// cancelled (the service is stopping) rsync gets SIGTERM, so it can remove
// its temporary files, and the session winds down.
func (s *Server) ServeConn(ctx context.Context, raw net.Conn) Result {
	return s.serve(ctx, raw, "", nil, Intake{})
}

// RefuseConn turns a connection away in rsync's own words, the way rsyncd
// answers past its "max connections": the TLS handshake (the client could
// read nothing before it), then a server greeting in the client's protocol
// and "@ERROR: answer", then close_notify. rsync is never started. why is
// what the log line says.
func (s *Server) RefuseConn(ctx context.Context, raw net.Conn, answer string, why error) Result {
	return s.serve(ctx, raw, answer, why, Intake{})
}

func (s *Server) serve(ctx context.Context, raw net.Conn, refuse string, why error, in Intake) (res Result) {
	start := time.Now()
	// A connection whose PROXY header was read first (activation's
	// ProxiedConn) started earlier: the handshake deadline counts from
	// its accept, so the header cannot stretch it.
	if a, ok := raw.(interface{ AcceptedAt() time.Time }); ok {
		start = a.AcceptedAt()
	}
	if !in.AcceptedAt.IsZero() {
		start = in.AcceptedAt
	}
	res.RsyncExit = -1
	res.Peer = raw.RemoteAddr().String()
	defer func() { res.Duration = time.Since(start) }()
	defer raw.Close()

	var ko *kernelOffer
	if s.DataPath != DataPathBridge && s.KernelMissing == "" {
		ko = &kernelOffer{}
		defer ko.wipe()
	}
	tc, err := s.handshake(ctx, raw, start.Add(s.HandshakeTimeout), ko)
	if err != nil {
		res.Err = fmt.Errorf("tls handshake with %s: %w", res.Peer, err)
		return res
	}
	st := tc.ConnectionState()
	res.SNI, res.Version, res.Cipher = st.ServerName, VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite)
	client, err := s.admit(st, res.Peer)
	if err != nil {
		res.Err = fmt.Errorf("tls handshake with %s: %w", res.Peer, err)
		return res
	}
	remote, local := addrPort(raw.RemoteAddr()), addrPort(raw.LocalAddr())
	ci := ConnInfo{Remote: remote, Local: local, State: st, Client: client}
	res.Identity = ClientIdentity(client)
	if client != nil && s.Client.PinOnly() {
		// Nobody vouches for what is inside this certificate: only the
		// admin's name for its pin, or the pin, says who it is.
		ci.PinOnly, ci.PinName = true, s.Client.PinName(client)
		res.Identity = PinnedIdentity(client, ci.PinName)
	}
	if why == nil && in.Admit != nil {
		release, err := in.Admit(ctx)
		if release != nil {
			defer release()
		}
		if err != nil {
			refuse, why = refusalAnswer(err), err
			in.cutShort = release == nil
		}
	}
	if why != nil {
		answerRefusal(tc, raw, refuse, in.cutShort)
		res.Err = &RefusedError{Peer: res.Peer, Why: why}
		return res
	}
	env := s.rsyncEnv(ci, res.Peer)
	if ko != nil && s.serveKernel(ctx, raw, ko, st, env, &res) {
		return res
	}
	res.DataPath = "bridge"
	if s.DataPath == DataPathAuto && res.Fallback == "" {
		res.Fallback = bridgeReason(raw, st, s.KernelMissing)
	}
	child, err := s.startRsync(remote, local, env)
	if err != nil {
		res.Err = fmt.Errorf("start rsync with %s: %w", res.Peer, err)
		return res
	}
	res.Pair = s.Pair.String()
	defer child.ours.Close()

	bs, idle := s.bridge(ctx, tc, raw, child)
	res.In, res.Out = bs.In, bs.Out
	res.RsyncExit = child.reap()
	res.Module = rsyncd.ModuleRequested(bs.Head)
	res.Err = s.explainEnd(bs, res)
	if idle {
		res.Err = &ModuleTimeoutError{Peer: res.Peer, Identity: res.Identity, After: s.ModuleTimeout}
	}
	return res
}

// handshake reads the client's first bytes, answers whatever is not TLS in
// its own protocol, and runs the TLS handshake (with the client-certificate
// policy inside it) by deadline. ko, when not nil, readies the session for
// the kernel data path.
func (s *Server) handshake(ctx context.Context, raw net.Conn, deadline time.Time, ko *kernelOffer) (*tls.Conn, error) {
	pc, kind, err := sniff(newQuickAckConn(raw), deadline)
	if err != nil {
		return nil, fmt.Errorf("reading the client hello: %w", err)
	}
	answer := func(reply []byte) {
		raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
		raw.Write(reply)
		lingerClose(raw)
	}
	switch kind {
	case KindTLS:
	case KindEmpty:
		return nil, errors.New("client closed the connection without sending anything")
	case KindSilent:
		return nil, fmt.Errorf("client sent nothing within %v", s.HandshakeTimeout)
	case KindPlainRsync:
		answer(rsyncd.PlainClientAnswer(pc.buf))
		return nil, fmt.Errorf("plain rsync client (%q) on the TLS port; answered with @ERROR", firstLine(pc.buf))
	case KindHTTP:
		answer([]byte(httpAnswer))
		return nil, fmt.Errorf("HTTP request (%q) on the TLS port; answered 400", firstLine(pc.buf))
	case KindSSH:
		return nil, fmt.Errorf("SSH client (%q) on the TLS port", firstLine(pc.buf))
	case KindProxy:
		return nil, errors.New("PROXY protocol header from a peer not in --trusted-proxy")
	case KindSSLv2:
		return nil, errors.New("client sent an SSLv2-format hello (an SSLv2/SSLv3-era client); TLS 1.2 or newer is required")
	default:
		return nil, fmt.Errorf("not a TLS client hello (first bytes: %s)", describeFirstBytes(pc.buf))
	}

	hello := append([]byte(nil), pc.buf...)
	tc := tls.Server(ko.input(pc), ko.config(s.TLS))
	hctx, cancel := context.WithDeadline(ctx, deadline)
	err = tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		if msg, ok := ExplainClientCert(err); ok {
			// The alert is on its way; closing with the client's
			// last flight unread would send a reset that can
			// overtake it, and the client would see a reset instead.
			lingerClose(raw)
			return nil, errors.New(msg)
		}
		return nil, errors.New(explainHandshake(err, s.HandshakeTimeout, hello))
	}
	raw.SetDeadline(time.Time{})
	return tc, nil
}

// admit returns the client certificate the policy admitted (nil for none)
// and logs its warnings.
func (s *Server) admit(st tls.ConnectionState, peer string) (*x509.Certificate, error) {
	if s.Client == nil {
		return nil, nil
	}
	// The handshake succeeded, so s.Client's VerifyConnection admitted
	// this certificate (TLS carries the same policy). A TLS config not
	// built by ServerTLSConfig with it is checked here: late, with no
	// alert, but still before rsync exists.
	if s.TLS.VerifyConnection == nil {
		if err := s.Client.VerifyConnection(st); err != nil {
			msg, _ := ExplainClientCert(err)
			return nil, errors.New(msg)
		}
	}
	if len(st.PeerCertificates) == 0 {
		return nil, nil
	}
	for _, w := range s.Client.Warnings(st.PeerCertificates) {
		s.Logf("%s: warning: %s", peer, w)
	}
	return st.PeerCertificates[0], nil
}

// rsyncEnv is the environment rsync starts with; what it leaves out is
// logged.
func (s *Server) rsyncEnv(ci ConnInfo, peer string) []string {
	env, dropped := RsyncEnv(s.Env, ci)
	for _, k := range dropped {
		s.Logf("%s: %s left out of rsync's environment: its value has characters rsyncd.conf and hooks cannot take safely", peer, k)
	}
	return env
}

// rsyncChild is a started rsync and our end of its socket pair.
type rsyncChild struct {
	cmd    *exec.Cmd
	ours   net.Conn
	waited chan error
}

// startRsync makes the socket pair, writes the PROXY header into it and
// starts rsync on the other end.
func (s *Server) startRsync(remote, local netip.AddrPort, env []string) (*rsyncChild, error) {
	pair, err := NewPair(s.Pair)
	if err != nil {
		return nil, err
	}
	// The PROXY header goes into the pair before rsync runs; the kernel
	// buffers it, and rsync reads it first thing.
	if s.Rsync.Proxy != rsyncd.ProxyOff {
		pair.Ours.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := pair.Ours.Write(ProxyV2Header(remote, local))
		pair.Ours.SetWriteDeadline(time.Time{})
		if err != nil {
			pair.Theirs.Close()
			pair.Ours.Close()
			return nil, fmt.Errorf("writing the PROXY header: %w", err)
		}
	}
	cmd, err := s.Rsync.Start(pair.Theirs, pair.TrustAs, env, s.RsyncStderr)
	// rsync holds its own copy now; ours must go, or rsync's exit would
	// never look like EOF to the bridge.
	pair.Theirs.Close()
	if err != nil {
		pair.Ours.Close()
		return nil, err
	}
	child := &rsyncChild{cmd: cmd, ours: pair.Ours, waited: make(chan error, 1)}
	go func() { child.waited <- cmd.Wait() }()
	return child, nil
}

// bridge copies both ways until both are done; a cancelled ctx (the
// service stopping) sends rsync SIGTERM meanwhile. idle reports that the
// client was ended for not naming a module within s.ModuleTimeout.
func (s *Server) bridge(ctx context.Context, tc *tls.Conn, raw net.Conn, child *rsyncChild) (bs Stats, idle bool) {
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			child.cmd.Process.Signal(syscall.SIGTERM)
		case <-stopped:
		}
	}()
	KeepAlive(raw, s.Stall)
	if s.ModuleTimeout <= 0 {
		return Bridge(tc, raw, child.ours.(halfCloser), s.Linger, s.Stall), false
	}
	mw := watchModule(tc, raw, s.ModuleTimeout)
	bs = Bridge(mw, raw, child.ours.(halfCloser), s.Linger, s.Stall)
	mw.stop()
	return bs, mw.expired()
}

// reap waits for rsync and returns its exit status. The pair is closed on
// both sides by now, so rsync is on its way out; one that still lingers
// (blocked on a disk, say) is asked to stop, then made to.
func (c *rsyncChild) reap() int {
	var werr error
	select {
	case werr = <-c.waited:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case werr = <-c.waited:
		case <-time.After(5 * time.Second):
			c.cmd.Process.Kill()
			werr = <-c.waited
		}
	}
	return rsyncd.ExitStatus(werr)
}

// explainEnd says why a served connection failed, nil when it did not:
// rsync's own status is reported as is, but an rsync that exited before
// saying anything is named as the hop that failed.
func (s *Server) explainEnd(bs Stats, res Result) error {
	switch {
	case res.Out == 0 && res.RsyncExit != 0 && (bs.Err == nil || errors.Is(bs.Err, ErrRsyncClosed)):
		// rsync died before saying anything: that is the hop that
		// failed, also when the bridge then met its closed end (the
		// client's bytes arrived after rsync's exit).
		hint := ""
		if s.Pair == PairUnix {
			hint = "; an rsync newer than 3.5.0 does not take an AF_UNIX socket as its inetd stdin: use --pair tcp"
		}
		return fmt.Errorf("start rsync for %s: rsync exited with status %d before its greeting (see rsync's log%s)", res.Peer, res.RsyncExit, hint)
	case bs.Err != nil:
		return fmt.Errorf("bridge with %s: %w", res.Peer, explainBridge(bs.Err))
	}
	return nil
}

// lingerClose gives an answer we wrote a moment to reach the client before
// the close: closing with unread input pending would send a reset, and the
// client could lose the answer.
func lingerClose(c net.Conn) {
	if tc, ok := c.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

// Listing reports whether the client only asked for the module list. rsync
// ends a listing with exit status 255 (its start_daemon returns -1), which
// must not count as a failure.
func (r Result) Listing() bool { return r.Module == "#list" }

func firstLine(b []byte) string {
	s := string(b)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}
