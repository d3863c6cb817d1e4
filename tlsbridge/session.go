package tlsbridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/netip"

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
	// Pair is the kind of socket pair rsync got ("" before one was made).
	Pair string
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
	sni := r.SNI
	if sni == "" {
		sni = "-"
	}
	id := r.Identity
	if id == "" {
		id = "-"
	}
	mod := r.Module
	if mod == "" {
		mod = "-"
	}
	s := fmt.Sprintf("%s: served sni=%s tls=%s cipher=%s client=%s module=%s pair=%s rsync_exit=%d in=%d out=%d duration=%s",
		r.Peer, sni, r.Version, r.Cipher, id, mod, r.Pair, r.RsyncExit, r.In, r.Out, r.Duration.Round(time.Millisecond))
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
	return s.serve(ctx, raw, "", nil)
}

// RefuseConn turns a connection away in rsync's own words, the way rsyncd
// answers past its "max connections": the TLS handshake (the client could
// read nothing before it), then a server greeting in the client's protocol
// and "@ERROR: answer", then close_notify. rsync is never started. why is
// what the log line says.
func (s *Server) RefuseConn(ctx context.Context, raw net.Conn, answer string, why error) Result {
	return s.serve(ctx, raw, answer, why)
}

func (s *Server) serve(ctx context.Context, raw net.Conn, refuse string, why error) (res Result) {
	start := time.Now()
	// A connection whose PROXY header was read first (activation's
	// ProxiedConn) started earlier: the handshake deadline counts from
	// its accept, so the header cannot stretch it.
	if a, ok := raw.(interface{ AcceptedAt() time.Time }); ok {
		start = a.AcceptedAt()
	}
	res.RsyncExit = -1
	res.Peer = raw.RemoteAddr().String()
	defer func() { res.Duration = time.Since(start) }()
	defer raw.Close()

	fail := func(hop, format string, args ...any) Result {
		res.Err = fmt.Errorf("%s with %s: %s", hop, res.Peer, fmt.Sprintf(format, args...))
		return res
	}

	deadline := start.Add(s.HandshakeTimeout)
	pc, kind, err := sniff(newQuickAckConn(raw), deadline)
	if err != nil {
		return fail("tls handshake", "reading the client hello: %v", err)
	}
	switch kind {
	case KindTLS:
	case KindEmpty:
		return fail("tls handshake", "client closed the connection without sending anything")
	case KindSilent:
		return fail("tls handshake", "client sent nothing within %v", s.HandshakeTimeout)
	case KindPlainRsync:
		raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
		raw.Write(rsyncd.PlainClientAnswer(pc.buf))
		lingerClose(raw)
		return fail("tls handshake", "plain rsync client (%q) on the TLS port; answered with @ERROR", firstLine(pc.buf))
	case KindHTTP:
		raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(raw, httpAnswer)
		lingerClose(raw)
		return fail("tls handshake", "HTTP request (%q) on the TLS port; answered 400", firstLine(pc.buf))
	case KindSSH:
		return fail("tls handshake", "SSH client (%q) on the TLS port", firstLine(pc.buf))
	case KindProxy:
		return fail("tls handshake", "PROXY protocol header from a peer not in --trusted-proxy")
	case KindSSLv2:
		return fail("tls handshake", "client sent an SSLv2-format hello (an SSLv2/SSLv3-era client); TLS 1.2 or newer is required")
	default:
		return fail("tls handshake", "not a TLS client hello (first bytes: %s)", describeFirstBytes(pc.buf))
	}

	hello := append([]byte(nil), pc.buf...)
	tc := tls.Server(pc, s.TLS)
	hctx, cancel := context.WithDeadline(ctx, deadline)
	err = tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		if msg, ok := ExplainClientCert(err); ok {
			// The alert is on its way; closing with the client's
			// last flight unread would send a reset that can
			// overtake it, and the client would see a reset instead.
			lingerClose(raw)
			return fail("tls handshake", "%s", msg)
		}
		return fail("tls handshake", "%s", explainHandshake(err, s.HandshakeTimeout, hello))
	}
	raw.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	res.SNI, res.Version, res.Cipher = st.ServerName, VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite)

	// The handshake succeeded, so s.Client's VerifyConnection admitted
	// this certificate (TLS carries the same policy). A TLS config not
	// built by ServerTLSConfig with it is checked here: late, with no
	// alert, but still before rsync exists.
	if s.Client != nil && s.TLS.VerifyConnection == nil {
		if err := s.Client.VerifyConnection(st); err != nil {
			msg, _ := ExplainClientCert(err)
			return fail("tls handshake", "%s", msg)
		}
	}
	var client *x509.Certificate
	if s.Client != nil && len(st.PeerCertificates) > 0 {
		client = st.PeerCertificates[0]
		for _, w := range s.Client.Warnings(st.PeerCertificates) {
			s.Logf("%s: warning: %s", res.Peer, w)
		}
	}
	res.Identity = ClientIdentity(client)
	if why != nil {
		answerRefusal(tc, raw, refuse)
		res.Err = &RefusedError{Peer: res.Peer, Why: why}
		return res
	}

	remote, local := addrPort(raw.RemoteAddr()), addrPort(raw.LocalAddr())
	env, dropped := RsyncEnv(s.Env, ConnInfo{Remote: remote, Local: local, State: st, Client: client})
	for _, k := range dropped {
		s.Logf("%s: %s left out of rsync's environment: its value has characters rsyncd.conf and hooks cannot take safely", res.Peer, k)
	}

	pair, err := NewPair(s.Pair)
	if err != nil {
		return fail("start rsync", "%v", err)
	}
	res.Pair = s.Pair.String()
	defer pair.Ours.Close()
	// The PROXY header goes into the pair before rsync runs; the kernel
	// buffers it, and rsync reads it first thing.
	pair.Ours.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if s.Rsync.Proxy != rsyncd.ProxyOff {
		if _, err := pair.Ours.Write(ProxyV2Header(remote, local)); err != nil {
			pair.Theirs.Close()
			return fail("start rsync", "writing the PROXY header: %v", err)
		}
	}
	pair.Ours.SetWriteDeadline(time.Time{})

	cmd, err := s.Rsync.Start(pair.Theirs, pair.TrustAs, env, s.RsyncStderr)
	// rsync holds its own copy now; ours must go, or rsync's exit would
	// never look like EOF to the bridge.
	pair.Theirs.Close()
	if err != nil {
		return fail("start rsync", "%v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGTERM)
		case <-stopped:
		}
	}()

	KeepAlive(raw, s.Stall)
	var clientSide halfCloser = tc
	var mw *moduleWatch
	if s.ModuleTimeout > 0 {
		mw = watchModule(tc, raw, s.ModuleTimeout)
		clientSide = mw
	}
	bs := Bridge(clientSide, raw, pair.Ours.(halfCloser), s.Linger, s.Stall)
	mw.stop()
	close(stopped)
	res.In, res.Out = bs.In, bs.Out

	// The pair is closed on both sides by now, so rsync is on its way
	// out; one that still lingers (blocked on a disk, say) is asked to
	// stop, then made to.
	var werr error
	select {
	case werr = <-waited:
	case <-time.After(10 * time.Second):
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case werr = <-waited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			werr = <-waited
		}
	}
	res.RsyncExit = rsyncd.ExitStatus(werr)
	res.Module = rsyncd.ModuleRequested(bs.Head)
	switch {
	case mw.expired():
		res.Err = &ModuleTimeoutError{Peer: res.Peer, Identity: res.Identity, After: s.ModuleTimeout}
	case bs.Err != nil:
		res.Err = fmt.Errorf("bridge with %s: %w", res.Peer, explainBridge(bs.Err))
	case res.Out == 0 && res.RsyncExit != 0:
		hint := ""
		if s.Pair == PairUnix {
			hint = "; an rsync newer than 3.5.0 does not take an AF_UNIX socket as its inetd stdin: use --pair tcp"
		}
		res.Err = fmt.Errorf("start rsync for %s: rsync exited with status %d before its greeting (see rsync's log%s)", res.Peer, res.RsyncExit, hint)
	}
	return res
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
