package client

// Client dialer: resolve, TCP, TLS, each step its own hop so that "connect"
// can say which one broke and "check" can time them.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/batchconn"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/tlserr"
)

// FailKind classifies a client failure, for check's JSON and for tests.
type FailKind string

const (
	FailResolve          FailKind = "resolve"
	FailRefused          FailKind = "refused"
	FailTimeout          FailKind = "timeout"
	FailUnreachable      FailKind = "unreachable"
	FailUnknownAuthority FailKind = "unknown-authority"
	// FailExpiry: the certificate is valid but ends within check's
	// --warn-days.
	FailExpiry       FailKind = "expiry"
	FailNameMismatch FailKind = "name-mismatch"
	FailExpired      FailKind = "expired"
	FailNotYetValid  FailKind = "not-yet-valid"
	FailPinMismatch  FailKind = "pin-mismatch"
	FailPlainRsync   FailKind = "plain-rsync"
	FailNotTLS       FailKind = "not-tls"
	FailTLSAlert     FailKind = "tls-alert"
	FailNotRsync     FailKind = "not-rsync"
	FailTruncated    FailKind = "truncated"
	FailOther        FailKind = "other"
)

// HopError names the hop and the peer of a failure and the fix to try:
// "tls handshake with 127.0.0.1:874: ... (pass --ca FILE ...)".
type HopError struct {
	Hop  string // "resolve", "tcp connect to", "tls handshake with", ...
	Peer string
	Kind FailKind
	Err  error
	Hint string
}

func (e *HopError) Error() string {
	s := e.Hop + " " + e.Peer + ": " + e.Err.Error()
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

func (e *HopError) Unwrap() error { return e.Err }

// FailKindOf returns the class of a client error, FailOther if it has none.
func FailKindOf(err error) FailKind {
	var he *HopError
	if errors.As(err, &he) {
		return he.Kind
	}
	return FailOther
}

// Dialer opens TLS connections to one server with one policy.
type Dialer struct {
	Opts   Options
	Config *tls.Config
}

// NewDialer builds the TLS configuration for o.
func NewDialer(o Options) (*Dialer, error) {
	cfg, err := TLSConfig(o)
	if err != nil {
		return nil, err
	}
	return &Dialer{Opts: o, Config: cfg}, nil
}

// Target is HOST:PORT as the user wrote it, with IPv6 in brackets.
func (d *Dialer) Target() string { return net.JoinHostPort(d.Opts.Host, d.Opts.Port) }

// Peer names one address of the target: "127.0.0.1:874", or
// "localhost:874 (::1)" when the user gave a name.
func (d *Dialer) Peer(ip net.IP) string {
	if d.Opts.HostIsIP() || ip == nil {
		return d.Target()
	}
	return d.Target() + " (" + ip.String() + ")"
}

// Resolve turns the host into addresses; an IP literal needs no lookup.
func (d *Dialer) Resolve(ctx context.Context) ([]net.IP, error) {
	if ip := net.ParseIP(d.Opts.Host); ip != nil {
		return []net.IP{ip}, nil
	}
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, d.Opts.Host)
	if err == nil && len(addrs) == 0 {
		err = errors.New("no addresses")
	}
	if err != nil {
		he := &HopError{Hop: "resolve", Peer: d.Opts.Host, Kind: FailResolve, Err: err,
			Hint: "check the host name, or connect to an IP address"}
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			switch {
			case dnsErr.IsNotFound:
				he.Err = errors.New("no such host")
			case dnsErr.IsTimeout:
				he.Kind, he.Err, he.Hint = FailTimeout, errors.New("lookup timed out"), "check the DNS servers in /etc/resolv.conf"
			default:
				he.Err = errors.New(dnsErr.Err)
			}
		}
		return nil, he
	}
	ips := make([]net.IP, len(addrs))
	for i, a := range addrs {
		ips[i] = a.IP
	}
	return ips, nil
}

// DialTCP connects to the first address that answers and returns the
// connection and the address it reached.
func (d *Dialer) DialTCP(ctx context.Context, ips []net.IP) (net.Conn, net.IP, error) {
	var firstErr error
	var nd net.Dialer
	for _, ip := range ips {
		c, err := nd.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), d.Opts.Port))
		if err == nil {
			return c, ip, nil
		}
		if firstErr == nil {
			firstErr = d.tcpError(ctx, ip, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, nil, firstErr
}

func (d *Dialer) tcpError(ctx context.Context, ip net.IP, err error) error {
	he := &HopError{Hop: "tcp connect to", Peer: d.Peer(ip), Kind: FailOther, Err: err}
	var se syscall.Errno
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		he.Kind, he.Err = FailRefused, errors.New("connection refused")
		he.Hint = "nothing listens on port " + d.Opts.Port + ": check the port (--port, RSYNC_SSL_PORT) and that the TLS service runs"
	case ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded):
		he.Kind, he.Err = FailTimeout, fmt.Errorf("timed out after %v", d.Opts.ConnectTimeout)
		he.Hint = "a firewall may drop the connection; check host and port, or raise --connect-timeout"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EADDRNOTAVAIL):
		he.Kind = FailUnreachable
		if errors.As(err, &se) {
			he.Err = se
		}
		he.Hint = "no route to this address; for IPv6, check that this machine has IPv6"
	}
	return he
}

// watchConn remembers whether the peer's TCP stream ended, which is how a
// TLS close_notify is told apart from a bare FIN: crypto/tls reports both
// as io.EOF, but only the FIN makes it read the socket to its end.
type watchConn struct {
	net.Conn
	sawEOF atomic.Bool
	kernel atomic.Bool // the kernel seals the records now: crypto/tls must not write
}

// errKernelOwns is what crypto/tls gets if it tries to write (a
// close_notify from Close) after the session went to the kernel.
var errKernelOwns = errors.New("the session's records are the kernel's now")

func (w *watchConn) Write(p []byte) (int, error) {
	if w.kernel.Load() {
		return 0, errKernelOwns
	}
	return w.Conn.Write(p)
}

func (w *watchConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if err == io.EOF {
		w.sawEOF.Store(true)
	}
	return n, err
}

// Conn is an established client session.
type Conn struct {
	*tls.Conn
	raw  *watchConn
	bc   *batchconn.Conn // under Conn, over raw: Pump's syscall batching
	ko   *kernelOffer    // nil unless the session may go to kernel TLS
	Peer string
}

// Handshake runs TLS over an established TCP connection.
func (d *Dialer) Handshake(ctx context.Context, raw net.Conn, ip net.IP) (*Conn, error) {
	w := &watchConn{Conn: raw}
	bc := batchconn.New(w)
	ko := newKernelOffer(d.Opts.DataPath)
	cfg, under := ko.wrap(d.Config, bc)
	tc := tls.Client(under, cfg)
	peer := d.Peer(ip)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, d.tlsError(ctx, peer, err)
	}
	return &Conn{Conn: tc, raw: w, bc: bc, ko: ko, Peer: peer}, nil
}

func (d *Dialer) tlsError(ctx context.Context, peer string, err error) error {
	he := &HopError{Hop: "tls handshake with", Peer: peer, Kind: FailOther, Err: err}
	var ce *CertError
	var rh tls.RecordHeaderError
	switch {
	case errors.As(err, &ce):
		he.Kind, he.Err, he.Hint = ce.Kind, ce, ce.Hint
	case errors.As(err, &rh):
		// A plain rsync daemon speaks first, so its greeting is what
		// arrives where the ServerHello should be.
		if bytes.HasPrefix(rh.RecordHeader[:], []byte("@RSYN")) {
			he.Kind = FailPlainRsync
			he.Err = fmt.Errorf("%s speaks plain rsync, not TLS", d.Target())
			he.Hint = "this is an unencrypted rsync daemon port: find the TLS port (--port, RSYNC_SSL_PORT; the usual one is 874)"
		} else {
			he.Kind = FailNotTLS
			he.Err = fmt.Errorf("%s does not speak TLS: it sent %q", d.Target(), rh.RecordHeader[:])
			he.Hint = "check the port (--port, RSYNC_SSL_PORT)"
		}
	case alertHint(err) != "":
		he.Kind, he.Err, he.Hint = FailTLSAlert, fmt.Errorf("server refused: %w", err), alertHint(err)
	case ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded):
		he.Kind, he.Err = FailTimeout, fmt.Errorf("no answer within %v", d.Opts.ConnectTimeout)
		he.Hint = "the port accepts connections but does not answer TLS; check the port"
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		he.Err = errors.New("server closed the connection during the handshake")
		he.Hint = "it may refuse this client's address or want a client certificate (--cert/--key); its log says which"
	}
	return he
}

// alertHint says what to try about a TLS alert from the server.
func alertHint(err error) string {
	a, ok := tlserr.RemoteAlert(err)
	switch {
	case !ok:
		return ""
	case a.IsCertificate():
		return "the server wants a client certificate it trusts: pass --cert/--key or set RSYNC_SSL_CERT/RSYNC_SSL_KEY"
	case a.IsNegotiation():
		return "the server and this client share no TLS version or cipher (this client needs TLS 1.2 or newer)"
	}
	return "the server's log says why"
}

// Dial resolves, connects and handshakes, bounded by ConnectTimeout.
func (d *Dialer) Dial(ctx context.Context) (*Conn, error) {
	if d.Opts.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Opts.ConnectTimeout)
		defer cancel()
	}
	ips, err := d.Resolve(ctx)
	if err != nil {
		return nil, err
	}
	raw, ip, err := d.DialTCP(ctx, ips)
	if err != nil {
		return nil, err
	}
	c, err := d.Handshake(ctx, raw, ip)
	if err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// ParsePort accepts 1..65535.
func ParsePort(s string) (string, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != s {
		return "", fmt.Errorf("port %q: want a number from 1 to 65535", s)
	}
	return s, nil
}
