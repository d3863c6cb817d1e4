package tests

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// soProxyV2 builds a PROXY v2 header for TCP over IPv4 or IPv6, or a LOCAL
// header when src is invalid.
func soProxyV2(src, dst netip.AddrPort) []byte {
	h := []byte("\r\n\r\n\x00\r\nQUIT\n")
	if !src.IsValid() {
		return append(h, 0x20, 0x00, 0, 0)
	}
	fam, n := byte(0x11), 12
	if src.Addr().Is6() {
		fam, n = 0x21, 36
	}
	h = append(h, 0x21, fam, 0, byte(n))
	h = append(h, src.Addr().AsSlice()...)
	h = append(h, dst.Addr().AsSlice()...)
	h = binary.BigEndian.AppendUint16(h, src.Port())
	return binary.BigEndian.AppendUint16(h, dst.Port())
}

// soListing sends header (if any), then lists the modules over TLS by
// speaking rsync's daemon greeting itself, and returns what the server said.
func soListing(p *PKI, addr string, header []byte) string {
	return soModule(p, addr, header, "")
}

// soModule is soListing asking for a module: enough for rsync to apply
// "hosts allow" and "hosts deny", which do not hide modules from a listing.
func soModule(p *PKI, addr string, header []byte, module string) string {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if len(header) > 0 {
		if _, err := c.Write(header); err != nil {
			return "write header: " + err.Error()
		}
	}
	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(p.CA)
	pool.AppendCertsFromPEM(ca)
	tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		return "handshake: " + err.Error()
	}
	r := bufio.NewReader(tc)
	greeting, err := r.ReadString('\n')
	if err != nil {
		return "greeting: " + err.Error()
	}
	// An empty module name asks for the list.
	fmt.Fprintf(tc, "@RSYNCD: 31.0\n%s\n", module)
	rest, _ := io.ReadAll(r)
	return greeting + string(rest)
}

// soEnvWrapper is an rsync wrapper that records each start and the client
// address variables rsync was given, then runs the real rsync.
func soEnvWrapper(t *testing.T) (wrapper, record string) {
	t.Helper()
	real := rsyncPath(t)
	dir := t.TempDir()
	wrapper = filepath.Join(dir, "rsync-wrapper")
	record = filepath.Join(dir, "record")
	script := fmt.Sprintf("#!/bin/sh\necho \"start $TCPREMOTEIP $TCPREMOTEPORT $TCPLOCALIP $TCPLOCALPORT\" >> %s\nexec %s \"$@\"\n", record, real)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper, record
}

func soReadFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// TestScaleOutProxyHeader drives serve, as inetd runs it, with PROXY headers
// from trusted and untrusted peers: the address a trusted header carries
// reaches our log, rsync's log, "hosts deny" and rsync's environment; a
// missing or malformed header from a trusted peer, or any header from
// another peer, is refused before rsync starts; a health check is one line
// and exit status 0.
func TestScaleOutProxyHeader(t *testing.T) {
	p := newPKI(t)
	client := netip.MustParseAddrPort("198.51.100.9:40000")
	front := netip.MustParseAddrPort("203.0.113.80:874")

	cases := []struct {
		name    string
		trusted []string
		deny    string // "hosts deny" line for rsyncd.conf
		client  func(t *testing.T, addr string) string
		code    int
		log     string // regexp the log must match
		started bool   // rsync must (or must not) have started
		record  string // the wrapper's record of rsync's environment
		rsyncd  string // substring of rsync's log
		out     string // substring of the client's output
	}{
		{
			name:    "trusted v2",
			trusted: []string{"127.0.0.1"},
			client:  func(t *testing.T, a string) string { return soListing(p, a, soProxyV2(client, front)) },
			log:     `: 198\.51\.100\.9:40000: served sni=localhost tls=TLSv1\.3 .* module=#list `,
			started: true,
			record:  "start 198.51.100.9 40000 203.0.113.80 874\n",
			rsyncd:  "(198.51.100.9)",
			out:     "data",
		},
		{
			name:    "trusted v1 over a range",
			trusted: []string{"192.0.2.0/24", "127.0.0.0/8"},
			client: func(t *testing.T, a string) string {
				return soListing(p, a, []byte("PROXY TCP6 2001:db8::9 2001:db8::1 40001 874\r\n"))
			},
			log:     `: \[2001:db8::9\]:40001: served `,
			started: true,
			record:  "start 2001:db8::9 40001 2001:db8::1 874\n",
			rsyncd:  "(2001:db8::9)",
			out:     "data",
		},
		{
			name:    "trusted v2 hosts deny",
			trusted: []string{"127.0.0.1/32"},
			deny:    "hosts deny = 198.51.100.9",
			client:  func(t *testing.T, a string) string { return soModule(p, a, soProxyV2(client, front), "data") },
			code:    255, // rsync's own status for the refusal, passed through
			log:     `: 198\.51\.100\.9:40000: served .* module=data `,
			started: true,
			rsyncd:  "rsync denied on module data from UNKNOWN (198.51.100.9)",
			out:     "@ERROR: access denied",
		},
		{
			name:    "trusted without header",
			trusted: []string{"127.0.0.1"},
			client:  func(t *testing.T, a string) string { return soListing(p, a, nil) },
			code:    1,
			log:     `: proxy header from 127\.0\.0\.1:\d+: missing: the stream starts with a TLS handshake; a peer in --trusted-proxy must send PROXY v1 or v2 first\n$`,
		},
		{
			name:    "trusted malformed",
			trusted: []string{"127.0.0.1"},
			client:  rawClient([]byte("PROXY TCP4 198.51.100.9 nowhere 1 2\r\n"), 0, false),
			code:    1,
			log:     `: proxy header from 127\.0\.0\.1:\d+: malformed PROXY v1 header "PROXY TCP4 198\.51\.100\.9 nowhere 1 2\\r\\n": addresses do not match TCP4\n$`,
		},
		{
			name:    "health check connect only",
			trusted: []string{"127.0.0.1"},
			client:  rawClient(nil, 0, true),
			log:     `: health check from 127\.0\.0\.1:\d+: connected and closed without sending anything\n$`,
		},
		{
			// HAProxy ends a connect-only check with a reset, often
			// before serve has even looked at the socket.
			name:    "health check reset",
			trusted: []string{"127.0.0.1"},
			client: func(t *testing.T, a string) string {
				c, err := net.Dial("tcp", a)
				if err != nil {
					return err.Error()
				}
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
				return ""
			},
			log: `: health check(: connection closed by its peer before it could be served| from 127\.0\.0\.1:\d+: connected and closed without sending anything)\n$`,
		},
		{
			name:    "health check local",
			trusted: []string{"127.0.0.1"},
			client:  rawClient(soProxyV2(netip.AddrPort{}, netip.AddrPort{}), 0, true),
			log:     `: health check from 127\.0\.0\.1:\d+: PROXY v2 LOCAL, then closed\n$`,
		},
		{
			name:    "local then tls keeps the balancer's address",
			trusted: []string{"127.0.0.1"},
			client: func(t *testing.T, a string) string {
				return soListing(p, a, soProxyV2(netip.AddrPort{}, netip.AddrPort{}))
			},
			log:     `: 127\.0\.0\.1:\d+: served `,
			started: true,
			record:  "start 127.0.0.1 ",
			out:     "data",
		},
		{
			// A balancer passes on whatever the client sends, a PROXY
			// header of its own included: after the balancer's header
			// it is the client's bytes, and refused like any.
			name:    "client header behind a trusted one",
			trusted: []string{"127.0.0.1"},
			client: func(t *testing.T, a string) string {
				return soListing(p, a, append(soProxyV2(client, front), "PROXY TCP4 203.0.113.66 203.0.113.80 1 874\r\n"...))
			},
			code: 1,
			log:  `: tls handshake with 198\.51\.100\.9:40000: PROXY protocol header from a peer not in --trusted-proxy\n$`,
		},
		{
			name:   "untrusted v2",
			client: func(t *testing.T, a string) string { return soListing(p, a, soProxyV2(client, front)) },
			code:   1,
			log:    `: tls handshake with 127\.0\.0\.1:\d+: PROXY protocol header from a peer not in --trusted-proxy\n$`,
		},
		{
			name:    "untrusted v1 with other proxies trusted",
			trusted: []string{"192.0.2.1"},
			client:  rawClient([]byte("PROXY TCP4 198.51.100.9 192.0.2.11 40000 874\r\n"), 0, false),
			code:    1,
			log:     `: tls handshake with 127\.0\.0\.1:\d+: PROXY protocol header from a peer not in --trusted-proxy\n$`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var extra []string
			if tc.deny != "" {
				extra = append(extra, tc.deny)
			}
			rd := newRsyncd(t, extra...)
			if err := os.WriteFile(filepath.Join(rd.Data, "file"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			wrapper, record := soEnvWrapper(t)
			args := serveArgs(p, rd, wrapper, "--proxy-protocol", "hosts", "--handshake-timeout", "3s")
			for _, tp := range tc.trusted {
				args = append(args, "--trusted-proxy", tp)
			}
			res := runInetd(t, args, tc.client)
			if res.code != tc.code {
				t.Errorf("exit %d, want %d", res.code, tc.code)
			}
			if !regexp.MustCompile(tc.log).MatchString(res.log) {
				t.Errorf("log does not match %s:\n%s", tc.log, res.log)
			}
			rec := soReadFile(t, record)
			if started := rec != ""; started != tc.started {
				t.Errorf("rsync started: %v, want %v (%q)", started, tc.started, rec)
			}
			if tc.record != "" && !strings.HasPrefix(rec, tc.record) {
				t.Errorf("rsync's environment: %q, want it to start with %q", rec, tc.record)
			}
			if tc.rsyncd != "" && !strings.Contains(rd.LogText(t), tc.rsyncd) {
				t.Errorf("rsync's log lacks %q:\n%s", tc.rsyncd, rd.LogText(t))
			}
			if strings.Contains(rd.LogText(t), "127.0.0.1") && tc.record != "start 127.0.0.1 " {
				t.Errorf("rsync's log shows the balancer's address:\n%s", rd.LogText(t))
			}
			if !strings.Contains(res.client, tc.out) {
				t.Errorf("client got %q, want %q in it", res.client, tc.out)
			}
		})
	}
}

// TestScaleOutTrustedProxyFlag checks that a bad --trusted-proxy value is a
// usage error naming the flag.
func TestScaleOutTrustedProxyFlag(t *testing.T) {
	p := newPKI(t)
	rd := newRsyncd(t)
	out, code := runCmd(t, 30*time.Second, nil, shimBin, serveArgs(p, rd, rsyncPath(t), "--trusted-proxy", "lb.example", "--listen", "127.0.0.1:0")...)
	if code != 2 || !strings.Contains(out, `--trusted-proxy "lb.example": give an address range`) {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}
