package tlsbridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/netip"
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
	// DataPathMode says whether a session may go to kernel TLS (rsync
	// gets the client's socket) or always through the bridge.
	DataPathMode DataPathMode
	// KernelUnavailable, under DataPathAuto, says why no session can go
	// to the kernel (its TLS module is not loaded), found once at start
	// (KernelTLSUnavailable): every session is then bridged without
	// trying, and its summary says so in a few words. "" when it can.
	KernelUnavailable string
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
	// OnStart, when set, hears of each session whose rsync has started,
	// with the summary's known part (no exit status, bytes or duration
	// yet); it must be safe for concurrent use.
	OnStart func(Result)
}

// session is one connection whose handshake the policy admitted: what
// either data path needs to serve it.
type session struct {
	// ctx is cancelled when the service stops.
	ctx            context.Context
	raw            net.Conn
	tc             *tls.Conn
	peer, identity string
	remote, local  netip.AddrPort
	// env is rsync's environment.
	env []string
	// started is told by the data path that rsync runs.
	started func(path, pair string, pid int)
}

// ServeConn runs one connection to its end and closes it: sniff, TLS
// handshake, and only then the data path (rsync and the bridge, or rsync on
// the client's socket switched to kernel TLS). Nobody who fails the
// handshake ever reaches rsync. When ctx is cancelled (the service is
// stopping) rsync gets SIGTERM, so it can remove its temporary files, and
// the session winds down.
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
	if s.DataPathMode != DataPathBridge && s.KernelUnavailable == "" {
		ko = &kernelOffer{}
		defer ko.wipe()
	}
	sess, st, err := s.open(ctx, raw, start, ko, &res)
	if err != nil {
		res.Err = fmt.Errorf("tls handshake with %s: %w", res.Peer, err)
		return res
	}
	if why == nil && in.Admit != nil {
		release, err := in.Admit(ctx)
		if release != nil {
			defer release()
		}
		if err != nil {
			refuse, why, in.cutShort = refusalAnswer(err), err, release == nil
		}
	}
	if why != nil {
		answerRefusal(sess.tc, raw, refuse, in.cutShort)
		res.Err = &RefusedError{Peer: res.Peer, Why: why}
		return res
	}
	path, fallback, err := s.choosePath(sess, st, ko)
	if err != nil {
		res.Err = err
		return res
	}
	res.Fallback = fallback
	sess.started = func(path, pair string, pid int) { s.rsyncStarted(&res, path, pair, pid) }
	KeepAlive(raw, s.Stall)
	out := path.serve(sess)
	res.DataPath, res.Pair, res.RsyncExit = out.path, out.pair, out.rsyncExit
	res.In, res.Out, res.Module, res.Err = out.in, out.out, out.module, out.err
	return res
}

// open runs the handshake and the client-certificate policy, and fills
// the summary's TLS fields and the client's identity.
func (s *Server) open(ctx context.Context, raw net.Conn, start time.Time, ko *kernelOffer, res *Result) (*session, tls.ConnectionState, error) {
	tc, err := s.handshake(ctx, raw, start.Add(s.HandshakeTimeout), ko)
	if err != nil {
		return nil, tls.ConnectionState{}, err
	}
	st := tc.ConnectionState()
	res.SNI, res.Version, res.Cipher = st.ServerName, VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite)
	client, err := s.admit(st, res.Peer)
	if err != nil {
		return nil, st, err
	}
	sess := &session{ctx: ctx, raw: raw, tc: tc, peer: res.Peer,
		remote: addrPort(raw.RemoteAddr()), local: addrPort(raw.LocalAddr())}
	ci := ConnInfo{Remote: sess.remote, Local: sess.local, State: st, Client: client}
	res.Identity = ClientIdentity(client)
	if client != nil && s.Client.PinOnly() {
		// Nobody vouches for what is inside this certificate: only the
		// admin's name for its pin, or the pin, says who it is.
		ci.PinOnly, ci.PinName = true, s.Client.PinName(client)
		res.Identity = PinnedIdentity(client, ci.PinName)
	}
	sess.identity = res.Identity
	sess.env = s.rsyncEnv(ci, res.Peer)
	return sess, st, nil
}

// choosePath picks the session's data path, once: the kernel where the
// mode, the kernel and the session allow it and the socket switched, else
// the bridge, with the reason when the mode is auto. An error means the
// session cannot be served at all.
func (s *Server) choosePath(sess *session, st tls.ConnectionState, ko *kernelOffer) (dataPath, FallbackReason, error) {
	if s.DataPathMode == DataPathBridge {
		return bridgePath{s}, "", nil
	}
	why := fallbackReason(sess.raw, st, s.KernelUnavailable, ko)
	if why == "" {
		kp, fallback, err := s.switchToKernel(sess, st, ko)
		if err != nil || kp != nil {
			return kp, "", err
		}
		why = fallback
	}
	if s.DataPathMode == DataPathKTLS {
		return nil, "", fmt.Errorf("kernel tls with %s: %s; refused (--datapath ktls)", sess.peer, why)
	}
	// No line of its own: the session's summary carries why, so a server
	// that forks per connection still logs one line each.
	return bridgePath{s}, why, nil
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
			if ce, ok := AsClientCertError(err); ok {
				return nil, ce
			}
			return nil, err
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

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}
