package activation

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"
)

// ParseTrustedProxy reads one --trusted-proxy value: a CIDR range or a bare
// IP address (a range of one).
func ParseTrustedProxy(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		p = p.Masked()
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("--trusted-proxy %q: give an address range (192.0.2.0/24, 2001:db8::/32) or an address", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ProxyPolicy decides whose PROXY headers count: those of the load
// balancers in Trusted, and nobody else's. A trusted peer must send one; a
// peer that is not trusted and sends one anyway is refused by the TLS
// sniffer as bad input, so a client cannot pick its own address.
type ProxyPolicy struct {
	Trusted []netip.Prefix
}

// Trusts reports whether a connection from a comes through a trusted
// load balancer.
func (p *ProxyPolicy) Trusts(a netip.Addr) bool {
	a = a.Unmap()
	for _, t := range p.Trusted {
		if t.Contains(a) {
			return true
		}
	}
	return false
}

// ErrHealthCheck marks a connection from a trusted load balancer that
// closed without a client behind it: a connect-only health check, or a
// PROXY v2 LOCAL header followed by the close. It is not a failure.
var ErrHealthCheck = errors.New("health check")

// healthCheck is the one log line for a health check.
type healthCheck struct{ peer, how string }

func (h healthCheck) Error() string        { return "health check from " + h.peer + ": " + h.how }
func (h healthCheck) Is(target error) bool { return target == ErrHealthCheck }

// Intake reads the PROXY header from c if its peer is a trusted load
// balancer, bounded by deadline (the handshake deadline: the header is part
// of the opening exchange). A connection from anyone else is returned as is.
// On success the returned connection reports the addresses the header
// carries and replays any client bytes read along with the header. On error
// c is left open for the caller to close; the error names the peer and the
// problem, and matches ErrHealthCheck for a health check.
func (p *ProxyPolicy) Intake(c net.Conn, deadline time.Time) (net.Conn, error) {
	accepted := time.Now()
	peer := addrPortOf(c.RemoteAddr())
	if p == nil || len(p.Trusted) == 0 || !p.Trusts(peer.Addr()) {
		return c, nil
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("proxy header from %s: %s", c.RemoteAddr(), fmt.Sprintf(format, args...))
	}
	c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})

	buf := make([]byte, 0, 512)
	var (
		h   ProxyHeader
		n   int
		err error
	)
	for {
		if len(buf) == cap(buf) {
			// Cannot happen with well-behaved parsing (v1 decides
			// within maxV1 bytes, v2 is bounded by maxV2), but the
			// loop must not spin on a full buffer.
			if cap(buf) >= maxV2 {
				return nil, fail("no complete PROXY header within %d bytes", maxV2)
			}
			nb := make([]byte, len(buf), min(maxV2, 2*cap(buf)))
			copy(nb, buf)
			buf = nb
		}
		r, rerr := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+r]
		h, n, err = ParseProxyHeader(buf)
		if err == nil {
			break
		}
		if !errors.Is(err, errNeedMore) {
			if errors.Is(err, errNoHeader) {
				return nil, fail("missing: %s; a peer in --trusted-proxy must send PROXY v1 or v2 first", strings.TrimPrefix(err.Error(), errNoHeader.Error()+": "))
			}
			return nil, fail("%v", err)
		}
		if rerr != nil {
			switch {
			case len(buf) == 0 && closedByPeer(rerr):
				return nil, healthCheck{c.RemoteAddr().String(), "connected and closed without sending anything"}
			case errors.Is(rerr, os.ErrDeadlineExceeded):
				return nil, fail("no complete PROXY header within the handshake timeout (%d bytes received)", len(buf))
			case closedByPeer(rerr):
				return nil, fail("closed after %d bytes, before the PROXY header was complete", len(buf))
			}
			return nil, fail("reading: %v", rerr)
		}
	}

	rest := buf[n:]
	if !h.Src.IsValid() && len(rest) == 0 {
		// Health checks send a header without a client in it (HAProxy:
		// v2 LOCAL; AWS NLB likewise) and close. Wait for the first
		// byte after the header, under the same deadline, to tell a
		// check from a connection that goes on.
		one := make([]byte, 512)
		r, rerr := c.Read(one)
		rest = one[:r]
		if r == 0 && closedByPeer(rerr) {
			return nil, healthCheck{c.RemoteAddr().String(), h.Command() + ", then closed"}
		}
	}
	pc := &ProxiedConn{Conn: c, buf: rest, accepted: accepted, remote: c.RemoteAddr(), local: c.LocalAddr(), via: c.RemoteAddr()}
	if h.Src.IsValid() {
		pc.remote = net.TCPAddrFromAddrPort(unmapPort(h.Src))
		pc.local = net.TCPAddrFromAddrPort(unmapPort(h.Dst))
	}
	return pc, nil
}

func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

func unmapPort(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}

// ProxiedConn is a connection from a trusted load balancer, after its PROXY
// header: RemoteAddr and LocalAddr are the client's and the address the
// client connected to, as the header says, so everything downstream (logs,
// the PROXY header to rsync, TCPREMOTEIP) sees the client. It forwards
// CloseWrite, SetKeepAliveConfig and SyscallConn to the socket, which the
// TLS bridge uses for half-closes, keepalive probes and TCP_QUICKACK.
type ProxiedConn struct {
	net.Conn
	buf           []byte // client bytes read along with the header
	remote, local net.Addr
	via           net.Addr
	accepted      time.Time
}

func (c *ProxiedConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// RemoteAddr is the client's address from the PROXY header.
func (c *ProxiedConn) RemoteAddr() net.Addr { return c.remote }

// LocalAddr is the address the client connected to, from the PROXY header.
func (c *ProxiedConn) LocalAddr() net.Addr { return c.local }

// Via is the load balancer's own address.
func (c *ProxiedConn) Via() net.Addr { return c.via }

// AcceptedAt is when the connection was taken in, before the header was
// read: the handshake deadline counts from here.
func (c *ProxiedConn) AcceptedAt() time.Time { return c.accepted }

// CloseWrite half-closes the socket.
func (c *ProxiedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("connection cannot half-close")
}

// SetKeepAliveConfig sets TCP keepalive on the socket (towards the load
// balancer, which is the TCP peer).
func (c *ProxiedConn) SetKeepAliveConfig(cfg net.KeepAliveConfig) error {
	if kc, ok := c.Conn.(interface {
		SetKeepAliveConfig(net.KeepAliveConfig) error
	}); ok {
		return kc.SetKeepAliveConfig(cfg)
	}
	return errors.New("connection has no TCP keepalive")
}

// SyscallConn gives access to the socket, for socket options.
func (c *ProxiedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("not a socket")
}
