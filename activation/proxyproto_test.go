package activation

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// v2Header builds a PROXY v2 header the way a balancer does, with optional
// TLV bytes after the addresses.
func v2Header(cmd byte, src, dst netip.AddrPort, tlv []byte) []byte {
	h := append([]byte(nil), v2Sig...)
	var block []byte
	fam := byte(0)
	if cmd == 1 && src.IsValid() {
		fam = 0x11
		if src.Addr().Is6() {
			fam = 0x21
		}
		block = append(block, src.Addr().AsSlice()...)
		block = append(block, dst.Addr().AsSlice()...)
		block = binary.BigEndian.AppendUint16(block, src.Port())
		block = binary.BigEndian.AppendUint16(block, dst.Port())
	}
	block = append(block, tlv...)
	h = append(h, 0x20|cmd, fam)
	h = binary.BigEndian.AppendUint16(h, uint16(len(block)))
	return append(h, block...)
}

func v1Header(src, dst netip.AddrPort) []byte {
	proto := "TCP4"
	if src.Addr().Is6() {
		proto = "TCP6"
	}
	return []byte(fmt.Sprintf("PROXY %s %s %s %d %d\r\n", proto, src.Addr(), dst.Addr(), src.Port(), dst.Port()))
}

var (
	client4 = netip.MustParseAddrPort("198.51.100.9:40000")
	server4 = netip.MustParseAddrPort("192.0.2.11:874")
	client6 = netip.MustParseAddrPort("[2001:db8::9]:40000")
	server6 = netip.MustParseAddrPort("[2001:db8::1]:874")
)

func TestParseProxyHeader(t *testing.T) {
	longest := "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
	// The specification's worst case is UNKNOWN followed by the longest
	// addresses: 107 bytes.
	if worst := strings.Replace(longest, "TCP6", "UNKNOWN", 1); len(worst) != maxV1 {
		t.Fatalf("the longest v1 line is %d bytes, maxV1 is %d", len(worst), maxV1)
	}
	tlv := []byte{0x04, 0x00, 0x03, 'a', 'b', 'c'} // PP2_TYPE_NOOP
	cases := []struct {
		name     string
		in       string
		src, dst string // "" = no addresses
		local    bool
		n        int    // header length; 0 = len(in)
		err      string // substring; "more" = errNeedMore
	}{
		{name: "v1 tcp4", in: string(v1Header(client4, server4)), src: "198.51.100.9:40000", dst: "192.0.2.11:874"},
		{name: "v1 tcp6", in: string(v1Header(client6, server6)), src: "[2001:db8::9]:40000", dst: "[2001:db8::1]:874"},
		{name: "v1 longest", in: longest, src: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", dst: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
		{name: "v1 unknown", in: "PROXY UNKNOWN\r\n"},
		{name: "v1 longest unknown", in: strings.Replace(longest, "TCP6", "UNKNOWN", 1)},
		{name: "v1 unknown with junk", in: "PROXY UNKNOWN ffff:: 1.2.3.4 1 2\r\n"},
		{name: "v1 then data", in: string(v1Header(client4, server4)) + "\x16\x03\x01", src: "198.51.100.9:40000", dst: "192.0.2.11:874", n: len(v1Header(client4, server4))},
		{name: "v1 partial", in: "PROXY TCP4 198.51", err: "more"},
		{name: "v1 prefix", in: "PROX", err: "more"},
		{name: "v1 no CR", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", err: "must end in CRLF"},
		{name: "v1 too long", in: "PROXY TCP4 " + strings.Repeat("1", 120), err: "no line end within 107 bytes"},
		{name: "v1 family mismatch", in: "PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n", err: "addresses do not match TCP4"},
		{name: "v1 mapped in TCP6", in: "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 1 2\r\n", src: "[::ffff:192.0.2.1]:1", dst: "[2001:db8::1]:2"},
		{name: "v1 zone", in: "PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n", err: "addresses do not match"},
		{name: "v1 leading zero ip", in: "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", err: "addresses"},
		{name: "v1 port range", in: "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", err: "ports must be"},
		{name: "v1 port leading zero", in: "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", err: "ports must be"},
		{name: "v1 port sign", in: "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", err: "ports must be"},
		{name: "v1 double space", in: "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", err: "single spaces"},
		{name: "v1 extra field", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", err: "single spaces"},
		{name: "v1 udp", in: "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", err: "protocol must be"},
		{name: "v1 lowercase", in: "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", err: "protocol must be"},

		{name: "v2 tcp4", in: string(v2Header(1, client4, server4, nil)), src: "198.51.100.9:40000", dst: "192.0.2.11:874"},
		{name: "v2 tcp6", in: string(v2Header(1, client6, server6, nil)), src: "[2001:db8::9]:40000", dst: "[2001:db8::1]:874"},
		{name: "v2 tlv skipped", in: string(v2Header(1, client4, server4, tlv)) + "\x16", src: "198.51.100.9:40000", dst: "192.0.2.11:874", n: len(v2Header(1, client4, server4, tlv))},
		{name: "v2 local", in: string(v2Header(0, netip.AddrPort{}, netip.AddrPort{}, nil)), local: true},
		{name: "v2 local with block", in: string(v2Header(0, netip.AddrPort{}, netip.AddrPort{}, make([]byte, 12))), local: true},
		{name: "v2 unspec", in: string(v2Header(1, netip.AddrPort{}, netip.AddrPort{}, nil))},
		{name: "v2 sig only", in: string(v2Sig), err: "more"},
		{name: "v2 partial block", in: string(v2Header(1, client4, server4, nil)[:20]), err: "more"},
		{name: "v2 version 1", in: string(v2Sig) + "\x11\x11\x00\x0c", err: "version 1"},
		{name: "v2 command 2", in: string(v2Sig) + "\x22\x11\x00\x0c", err: "command 2"},
		{name: "v2 udp", in: string(v2Sig) + "\x21\x12\x00\x0c" + strings.Repeat("\x00", 12), err: "not TCP"},
		{name: "v2 unix", in: string(v2Sig) + "\x21\x31\x00\x00", err: "not TCP"},
		{name: "v2 short block", in: string(v2Sig) + "\x21\x11\x00\x04abcd", err: "too short for TCP over IPv4"},
		{name: "v2 short block6", in: string(v2Sig) + "\x21\x21\x00\x0c" + strings.Repeat("\x00", 12), err: "too short for TCP over IPv6"},
		{name: "v2 too long", in: string(v2Sig) + "\x21\x11\xff\xff", err: "over the limit of 4096"},

		{name: "tls", in: "\x16\x03\x01\x02\x00", err: "TLS handshake"},
		{name: "http", in: "GET / HTTP/1.1\r\n", err: "starts with 47 45 54"},
		{name: "empty", in: "", err: "more"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := ParseProxyHeader([]byte(tc.in))
			if tc.err != "" {
				if tc.err == "more" {
					if !errors.Is(err, errNeedMore) {
						t.Fatalf("got %+v, %d, %v; want errNeedMore", h, n, err)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %+v, %d, %v; want an error with %q", h, n, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tc.n
			if want == 0 {
				want = len(tc.in)
			}
			if n != want {
				t.Errorf("length %d, want %d", n, want)
			}
			if h.Local != tc.local {
				t.Errorf("Local %v, want %v", h.Local, tc.local)
			}
			got := ""
			if h.Src.IsValid() {
				got = h.Src.String()
			}
			if got != tc.src {
				t.Errorf("Src %q, want %q", got, tc.src)
			}
			got = ""
			if h.Dst.IsValid() {
				got = h.Dst.String()
			}
			if got != tc.dst {
				t.Errorf("Dst %q, want %q", got, tc.dst)
			}
		})
	}
}

// TestParseProxyHeaderPrefixes feeds every proper prefix of good headers:
// each must ask for more, never fail or succeed early, as bytes arrive one
// at a time from a slow balancer.
func TestParseProxyHeaderPrefixes(t *testing.T) {
	for _, full := range [][]byte{
		v1Header(client4, server4), v1Header(client6, server6), []byte("PROXY UNKNOWN\r\n"),
		v2Header(1, client4, server4, []byte{4, 0, 1, 0}), v2Header(1, client6, server6, nil), v2Header(0, netip.AddrPort{}, netip.AddrPort{}, nil),
	} {
		for i := 0; i < len(full); i++ {
			if _, _, err := ParseProxyHeader(full[:i]); !errors.Is(err, errNeedMore) {
				t.Fatalf("%q: prefix of %d bytes: %v, want errNeedMore", full, i, err)
			}
		}
		if _, n, err := ParseProxyHeader(full); err != nil || n != len(full) {
			t.Fatalf("%q: %d, %v", full, n, err)
		}
	}
}

func TestParseTrustedProxy(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":            "192.0.2.1/32",
		"192.0.2.0/24":         "192.0.2.0/24",
		"192.0.2.77/24":        "192.0.2.0/24",
		"2001:db8::/32":        "2001:db8::/32",
		"2001:db8::5":          "2001:db8::5/128",
		"::ffff:192.0.2.1":     "192.0.2.1/32",
		"::ffff:192.0.2.0/120": "192.0.2.0/24",
	} {
		p, err := ParseTrustedProxy(in)
		if err != nil || p.String() != want {
			t.Errorf("ParseTrustedProxy(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, in := range []string{"", "lb.example", "192.0.2.0/33", "fe80::1%eth0", "192.0.2.1:80"} {
		if _, err := ParseTrustedProxy(in); err == nil || !strings.Contains(err.Error(), "--trusted-proxy") {
			t.Errorf("ParseTrustedProxy(%q): %v, want an error naming the flag", in, err)
		}
	}
	pol := ProxyPolicy{Trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	if !pol.Trusts(netip.MustParseAddr("::ffff:192.0.2.9")) || pol.Trusts(netip.MustParseAddr("198.51.100.1")) {
		t.Error("Trusts: wrong answer for a mapped or an outside address")
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

var loopback = &ProxyPolicy{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}

func TestIntake(t *testing.T) {
	t.Run("v2 addresses and replay", func(t *testing.T) {
		c, s := tcpPair(t)
		c.Write(append(v2Header(1, client4, server4, []byte{4, 0, 2, 'x', 'y'}), "\x16\x03\x01hello"...))
		pc, err := loopback.Intake(s, time.Now().Add(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if pc.RemoteAddr().String() != "198.51.100.9:40000" || pc.LocalAddr().String() != "192.0.2.11:874" {
			t.Errorf("addresses %v -> %v", pc.RemoteAddr(), pc.LocalAddr())
		}
		if _, ok := pc.RemoteAddr().(*net.TCPAddr); !ok {
			t.Errorf("RemoteAddr is a %T, want *net.TCPAddr", pc.RemoteAddr())
		}
		p := pc.(*ProxiedConn)
		if p.Via().String() != s.RemoteAddr().String() || time.Since(p.AcceptedAt()) > 5*time.Second {
			t.Errorf("Via %v, AcceptedAt %v", p.Via(), p.AcceptedAt())
		}
		// What the TLS bridge relies on: half-close and socket options.
		if _, ok := pc.(interface{ CloseWrite() error }); !ok {
			t.Fatal("no CloseWrite")
		}
		if _, ok := pc.(syscall.Conn); !ok {
			t.Fatal("no SyscallConn")
		}
		kc, ok := pc.(interface {
			SetKeepAliveConfig(net.KeepAliveConfig) error
		})
		if !ok {
			t.Fatal("no SetKeepAliveConfig")
		}
		if err := kc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: time.Minute, Interval: 10 * time.Second, Count: 4}); err != nil {
			t.Errorf("SetKeepAliveConfig: %v", err)
		}
		got := make([]byte, 8)
		if _, err := io.ReadFull(pc, got); err != nil || string(got) != "\x16\x03\x01hello" {
			t.Fatalf("replayed %q, %v", got, err)
		}
		c.Write([]byte("more"))
		c.CloseWrite()
		rest, _ := io.ReadAll(pc)
		if string(rest) != "more" {
			t.Errorf("then read %q", rest)
		}
		if err := pc.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Errorf("CloseWrite: %v", err)
		}
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("client read after CloseWrite: %d, %v", n, err)
		}
	})
	t.Run("v1 dribbled", func(t *testing.T) {
		c, s := tcpPair(t)
		go func() {
			for _, b := range append(v1Header(client6, server6), 0x16) {
				c.Write([]byte{b})
				time.Sleep(time.Millisecond)
			}
		}()
		pc, err := loopback.Intake(s, time.Now().Add(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if pc.RemoteAddr().String() != "[2001:db8::9]:40000" {
			t.Errorf("RemoteAddr %v", pc.RemoteAddr())
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(pc, b); err != nil || b[0] != 0x16 {
			t.Errorf("next byte %q, %v", b, err)
		}
	})
	t.Run("untrusted passes through", func(t *testing.T) {
		_, s := tcpPair(t)
		pol := &ProxyPolicy{Trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
		pc, err := pol.Intake(s, time.Now().Add(time.Second))
		if err != nil || pc != net.Conn(s) {
			t.Fatalf("got %v, %v; want the connection untouched", pc, err)
		}
		var none *ProxyPolicy
		if pc, err := none.Intake(s, time.Now()); err != nil || pc != net.Conn(s) {
			t.Fatalf("nil policy: %v, %v", pc, err)
		}
	})
	t.Run("local then data keeps own addresses", func(t *testing.T) {
		c, s := tcpPair(t)
		c.Write(v2Header(0, netip.AddrPort{}, netip.AddrPort{}, nil))
		go func() { time.Sleep(50 * time.Millisecond); c.Write([]byte{0x16}) }()
		pc, err := loopback.Intake(s, time.Now().Add(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if pc.RemoteAddr().String() != s.RemoteAddr().String() {
			t.Errorf("RemoteAddr %v, want the balancer's own %v", pc.RemoteAddr(), s.RemoteAddr())
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(pc, b); err != nil || b[0] != 0x16 {
			t.Errorf("next byte %q, %v", b, err)
		}
	})

	failures := []struct {
		name   string
		send   []byte
		close  bool
		health bool
		want   string
	}{
		{name: "connect only", close: true, health: true, want: `^health check from 127\.0\.0\.1:\d+: connected and closed without sending anything$`},
		{name: "local then close", send: v2Header(0, netip.AddrPort{}, netip.AddrPort{}, nil), close: true, health: true, want: `^health check from 127\.0\.0\.1:\d+: PROXY v2 LOCAL, then closed$`},
		{name: "no addresses then close", send: []byte("PROXY UNKNOWN\r\n"), close: true, health: true, want: `^health check from 127\.0\.0\.1:\d+: PROXY v1 without addresses, then closed$`},
		{name: "tls without header", send: []byte("\x16\x03\x01\x00\x10"), want: `^proxy header from 127\.0\.0\.1:\d+: missing: the stream starts with a TLS handshake; a peer in --trusted-proxy must send PROXY v1 or v2 first$`},
		{name: "malformed v1", send: []byte("PROXY TCP4 1.2.3.4 nope 1 2\r\n"), want: `^proxy header from 127\.0\.0\.1:\d+: malformed PROXY v1 header "PROXY TCP4 1\.2\.3\.4 nope 1 2\\r\\n": addresses do not match TCP4$`},
		{name: "truncated", send: []byte("PROXY TCP4 1.2."), close: true, want: `^proxy header from 127\.0\.0\.1:\d+: closed after 15 bytes, before the PROXY header was complete$`},
		{name: "slow", send: []byte("PROXY TCP4 "), want: `^proxy header from 127\.0\.0\.1:\d+: no complete PROXY header within the handshake timeout \(11 bytes received\)$`},
		{name: "oversized v2", send: append(append([]byte(nil), v2Sig...), 0x21, 0x11, 0x20, 0x00), want: `over the limit of 4096$`},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			c, s := tcpPair(t)
			c.Write(tc.send)
			if tc.close {
				c.Close()
			}
			start := time.Now()
			pc, err := loopback.Intake(s, time.Now().Add(300*time.Millisecond))
			if err == nil {
				t.Fatalf("accepted: %v", pc.RemoteAddr())
			}
			if time.Since(start) > 2*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
			if errors.Is(err, ErrHealthCheck) != tc.health {
				t.Errorf("health check %v, want %v", errors.Is(err, ErrHealthCheck), tc.health)
			}
			if !matches(tc.want, err.Error()) {
				t.Errorf("error %q does not match %s", err, tc.want)
			}
		})
	}
}

// FuzzParseProxyV1 and FuzzParseProxyV2 check the parser's invariants on
// anything after the respective prefix: no panic, a consumed length within
// the bounds, exactly the header consumed (the same result from the header
// alone), and for v1 a round trip through the line's canonical form.
func FuzzParseProxyV1(f *testing.F) {
	for _, s := range []string{"TCP4 192.0.2.1 192.0.2.2 1 2\r\n", "TCP6 2001:db8::1 ::1 65535 0\r\n", "UNKNOWN\r\n", "TCP4 1.2.3.4\r\n", "TCP4 1.2.3.4 5.6.7.8 1 2\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, rest []byte) {
		b := append([]byte("PROXY "), rest...)
		h, n := checkParse(t, b)
		if n == 0 {
			return
		}
		if n > maxV1 || h.Version != 1 || h.Local {
			t.Fatalf("%q: n=%d %+v", b, n, h)
		}
		if h.Src.IsValid() {
			again, _, err := ParseProxyHeader(v1Header(h.Src, h.Dst))
			if err != nil || again != h {
				t.Fatalf("%q: canonical form parses as %+v, %v", b[:n], again, err)
			}
		}
	})
}

func FuzzParseProxyV2(f *testing.F) {
	for _, s := range [][]byte{
		v2Header(1, client4, server4, nil)[12:], v2Header(1, client6, server6, []byte{4, 0, 0})[12:],
		v2Header(0, netip.AddrPort{}, netip.AddrPort{}, nil)[12:], []byte("\x21\x12\x00\x0c"), []byte("\x21\x11\xff\xff"),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rest []byte) {
		b := append(append([]byte(nil), v2Sig...), rest...)
		h, n := checkParse(t, b)
		if n == 0 {
			return
		}
		if n > maxV2 || h.Version != 2 || (h.Local && h.Src.IsValid()) {
			t.Fatalf("n=%d %+v", n, h)
		}
		if h.Src.IsValid() {
			again, _, err := ParseProxyHeader(v2Header(1, h.Src, h.Dst, nil))
			if err != nil || again != h {
				t.Fatalf("re-encoded header parses as %+v, %v; want %+v", again, err, h)
			}
		}
	})
}

// checkParse parses b and checks what holds for every input; it returns
// the header and its length, or 0 when b holds none.
func checkParse(t *testing.T, b []byte) (ProxyHeader, int) {
	h, n, err := ParseProxyHeader(b)
	if err != nil {
		if n != 0 || h != (ProxyHeader{}) {
			t.Fatalf("%q: error %v with n=%d %+v", b, err, n, h)
		}
		if errors.Is(err, errNeedMore) && len(b) >= maxV2 {
			t.Fatalf("%q: still asking for more after %d bytes", b, len(b))
		}
		if strings.ContainsAny(err.Error(), "\n\x00") {
			t.Fatalf("error %q has raw control bytes", err)
		}
		return ProxyHeader{}, 0
	}
	if n <= 0 || n > len(b) {
		t.Fatalf("%q: n=%d", b, n)
	}
	h2, n2, err := ParseProxyHeader(b[:n])
	if err != nil || n2 != n || h2 != h {
		t.Fatalf("%q: the header alone parses as %+v, %d, %v", b[:n], h2, n2, err)
	}
	return h, n
}

func matches(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
