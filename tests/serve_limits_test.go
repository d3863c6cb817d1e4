package tests

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rsyncTLSClient is a TLS connection that has sent rsync's greeting, as a
// client that then says nothing more (or asks for the list) would have.
type rsyncTLSClient struct {
	*tls.Conn
	r *bufio.Reader
}

// dialRsyncTLS connects to s from source address src ("" for any), sends
// proxyLine first when given (a load balancer's PROXY header), completes
// the TLS handshake and sends the rsync greeting.
func dialRsyncTLS(t *testing.T, s *server, p *PKI, src, proxyLine string) *rsyncTLSClient {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	raw, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if proxyLine != "" {
		if _, err := raw.Write([]byte(proxyLine)); err != nil {
			t.Fatal(err)
		}
	}
	pem, err := os.ReadFile(p.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatalf("tls handshake: %v\nserver log:\n%s", err, s.Log)
	}
	if _, err := c.Write([]byte("@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n")); err != nil {
		t.Fatal(err)
	}
	return &rsyncTLSClient{Conn: c, r: bufio.NewReader(c)}
}

// holding waits for rsync's own greeting: the session has its slot (slots
// are taken once a handshake is complete, in the order the server finishes
// them), and a client dialled after it counts against it.
func (c *rsyncTLSClient) holding(t *testing.T) *rsyncTLSClient {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil || !strings.HasPrefix(l, "@RSYNCD: ") {
		t.Fatalf("no rsync greeting for a session that should hold a slot: %q, %v", l, err)
	}
	return c
}

// lines reads what the server says until it closes (or the deadline).
func (c *rsyncTLSClient) lines(t *testing.T, d time.Duration) []string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	var out []string
	for {
		l, err := c.r.ReadString('\n')
		if l != "" {
			out = append(out, strings.TrimRight(l, "\n"))
		}
		if err != nil {
			return out
		}
	}
}

// TestServeOverloadAnswer: past --max-conns and --max-conns-per-source a
// client is told in rsync's words, after the handshake; stock rsync-ssl
// prints the line; behind --trusted-proxy the address counted is the one in
// the PROXY header.
func TestServeOverloadAnswer(t *testing.T) {
	pki := newPKI(t)
	rd := newRsyncd(t)
	wrapper, starts := rsyncWrapper(t)

	t.Run("total", func(t *testing.T) {
		s := startMode(t, "acceptno", serveArgs(pki, rd, wrapper, "--proxy-protocol", "hosts", "--max-conns", "2", "--max-conns-wait", "300ms", "--module-timeout", "0"))
		// Two clients that greet and then say nothing hold both slots.
		dialRsyncTLS(t, s, pki, "", "").holding(t)
		dialRsyncTLS(t, s, pki, "", "").holding(t)
		out, code := rsyncSSL(t, s, pki, "openssl", "rsync://localhost/")
		if code != 5 || !strings.Contains(out, "@ERROR: max connections (2) reached -- try again later") {
			t.Fatalf("third client (exit %d), want rsync's max-connections line and exit 5:\n%s\nserver log:\n%s", code, out, s.Log)
		}
		if n := countStarts(t, starts); n != 2 {
			t.Errorf("rsync started %d times, want 2 (none for the refused client)", n)
		}
		waitLog(t, s, "refused 127.0.0.1:")
		if !strings.Contains(s.Log.String(), "max connections (2) reached") {
			t.Errorf("log does not say why:\n%s", s.Log)
		}
	})

	t.Run("per-source", func(t *testing.T) {
		slowTier(t, "load")
		s := startMode(t, "acceptno", serveArgs(pki, rd, rsyncPath(t), "--max-conns", "8", "--max-conns-per-source", "1",
			"--max-conns-wait", "200ms", "--module-timeout", "0"))
		dialRsyncTLS(t, s, pki, "127.0.0.1", "").holding(t)
		refused := dialRsyncTLS(t, s, pki, "127.0.0.1", "")
		got := refused.lines(t, 10*time.Second)
		if len(got) != 2 || !strings.HasPrefix(got[0], "@RSYNCD: 32.0 sha512") || got[1] != "@ERROR: max connections (1) reached -- try again later" {
			t.Fatalf("second client from 127.0.0.1 got %q, want a greeting in its protocol and the max-connections line", got)
		}
		other := dialRsyncTLS(t, s, pki, "127.0.0.2", "")
		other.Write([]byte("#list\n"))
		got = other.lines(t, 10*time.Second)
		if len(got) < 2 || !strings.Contains(strings.Join(got, "\n"), "data") {
			t.Fatalf("a client from 127.0.0.2 was not served: %q\n%s", got, s.Log)
		}
		waitLog(t, s, "(from 127.0.0.1)")
	})

	t.Run("per-source-behind-proxy", func(t *testing.T) {
		slowTier(t, "load")
		s := startMode(t, "acceptno", serveArgs(pki, rd, rsyncPath(t), "--max-conns", "8", "--max-conns-per-source", "1",
			"--max-conns-wait", "200ms", "--module-timeout", "0", "--trusted-proxy", "127.0.0.1"))
		hdr := func(ip string, port int) string {
			return fmt.Sprintf("PROXY TCP4 %s 127.0.0.1 %d %d\r\n", ip, port, s.Port)
		}
		dialRsyncTLS(t, s, pki, "", hdr("198.51.100.7", 40001)).holding(t)
		// Same balancer, another client: not counted against the first.
		b := dialRsyncTLS(t, s, pki, "", hdr("203.0.113.5", 40002))
		b.Write([]byte("#list\n"))
		if got := b.lines(t, 10*time.Second); !strings.Contains(strings.Join(got, "\n"), "data") {
			t.Fatalf("a second client behind the balancer was refused: %q\n%s", got, s.Log)
		}
		again := dialRsyncTLS(t, s, pki, "", hdr("198.51.100.7", 40003))
		if got := again.lines(t, 10*time.Second); len(got) != 2 || got[1] != "@ERROR: max connections (1) reached -- try again later" {
			t.Fatalf("198.51.100.7's second connection got %q, want the max-connections line", got)
		}
		waitLog(t, s, "refused 198.51.100.7:40003")
	})
}

// TestServeModuleTimeout holds --max-conns idle sessions (handshake done,
// greeting sent, no module line): each is ended at --module-timeout with a
// line naming it and its rsync stopped, and an honest client that arrived
// meanwhile, waiting for its slot, is served.
func TestServeModuleTimeout(t *testing.T) {
	slowTier(t, "timeout")
	pki := newPKI(t)
	rd := newRsyncd(t)
	makeTree(t, rd.Data, 0, 5)
	const n = 3
	s := startMode(t, "acceptno", serveArgs(pki, rd, rsyncPath(t), "--max-conns", strconv.Itoa(n),
		"--max-conns-wait", "10s", "--module-timeout", "1500ms"))
	var idle []*rsyncTLSClient
	for i := 0; i < n; i++ {
		idle = append(idle, dialRsyncTLS(t, s, pki, "", ""))
	}
	start := time.Now()
	out, code := rsyncSSL(t, s, pki, "openssl", "rsync://localhost/")
	took := time.Since(start)
	if code != 0 || !strings.Contains(out, "data") {
		t.Fatalf("honest client behind %d idle sessions (exit %d after %v):\n%s\nserver log:\n%s", n, code, took, out, s.Log)
	}
	if took > 8*time.Second {
		t.Errorf("honest client took %v; the idle ones should have been ended at 1.5s", took)
	}
	for i, c := range idle {
		got := c.lines(t, 5*time.Second)
		// rsync's greeting came before the bound; then the connection ends.
		if len(got) != 1 || !strings.HasPrefix(got[0], "@RSYNCD:") {
			t.Errorf("idle session %d read %q before the end, want only rsync's greeting", i, got)
		}
	}
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if strings.Count(s.Log.String(), "none within 1.5s of the handshake") >= n {
			break
		}
	}
	if c := strings.Count(s.Log.String(), "none within 1.5s of the handshake"); c != n {
		t.Errorf("%d module-timeout lines, want %d:\n%s", c, n, s.Log)
	}
	// No rsync outlives its session: the only rsync processes below the
	// server would be the idle ones'.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", s.Pid, s.Pid)); strings.TrimSpace(string(b)) == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("rsync processes still running below serve after the idle sessions were ended")
}

// waitLog waits (bounded) for text in the server's log.
func waitLog(t *testing.T, s *server, text string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(s.Log.String(), text) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("server log never said %q:\n%s", text, s.Log)
}
