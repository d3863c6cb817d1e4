package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// badInput is one thing that does not belong on the TLS port, or a
// legitimate but unusual client, with what serve must do about it.
type badInput struct {
	name   string
	input  string // what the client sends, for the table
	v6     bool   // connect over ::1
	args   []string
	client func(t *testing.T, addr string) string
	// want matches the whole log line after the "rsync-ssl-shim[PID]: "
	// prefix; PEER stands for the client's address. refused() builds the
	// usual handshake refusal.
	want  string
	exit  int // serve's exit status: 0 means 1 (refused), exitZero 0, exitNonZero any but 0
	start bool
	lines int           // log lines expected (0 means 1)
	bound time.Duration // serve must have exited this long after the connection (0: 5s)
	check func(t *testing.T, clientOut string)
	// slow: the case takes seconds by design (a timeout, or openssl
	// s_client's two seconds); go test -short skips it.
	slow bool
}

// refused is the log line of a connection turned away before rsync.
func refused(msg string) string { return `tls handshake with PEER: ` + msg }

// served is the summary line of a connection that reached rsync.
func served(rest string) string { return `PEER: served ` + rest }

const (
	handshakeTimeout = "1s"
	exitZero         = -100
	exitNonZero      = -1
)

func badInputs(t *testing.T) []badInput {
	random := []byte("B\x8f\x13\x00\xfe\x77\x01\x02garbage that is no protocol at all \x00\xff\x10")
	truncated := helloRecord(0x0303)[:30]
	garbageRecord := append([]byte{0x16, 0x03, 0x01, 0xff, 0xff}, randBytes(65535)...)
	hugeHandshake := []byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff}
	var emptyRecords []byte
	for range 40 {
		emptyRecords = append(emptyRecords, 0x16, 0x03, 0x03, 0x00, 0x00)
	}
	return []badInput{
		{
			name:  "plain-rsync",
			input: "rsync rsync://HOST:PORT/ (a real plain rsync client)",
			client: func(t *testing.T, addr string) string {
				rsync := rsyncPath(t)
				host, port, _ := net.SplitHostPort(addr)
				out, _ := runCmd(t, 30*time.Second, nil, rsync, "--contimeout=10", "rsync://"+host+":"+port+"/")
				return out
			},
			want:  refused(`plain rsync client \("@RSYNCD: 3\d\.\d[^"]*"\) on the TLS port; answered with @ERROR`),
			check: clientSaw("@ERROR: this port speaks rsync over TLS; use rsync-ssl or port 873"),
		},
		{
			name:   "plain-rsync-metachars",
			input:  `@RSYNCD: 31.0 $(reboot) ;id` + "\\n",
			client: rawClient([]byte("@RSYNCD: 31.0 $(reboot) ;id\n"), 0, false),
			want:   refused(`plain rsync client \("@RSYNCD: 31\.0 \$\(reboot\) ;id"\) on the TLS port; answered with @ERROR`),
			check: func(t *testing.T, out string) {
				if !strings.HasPrefix(out, "@RSYNCD: 32.0 md5 md4\n@ERROR: ") || strings.Contains(out, "reboot") {
					t.Errorf("answer echoes the client's junk or lacks @ERROR: %q", out)
				}
			},
		},
		{
			name:   "plain-rsync-64k-line",
			input:  "@RSYNCD: followed by 64 KiB without a newline",
			client: rawClient(append([]byte("@RSYNCD: "), bytes.Repeat([]byte("9"), 64<<10)...), 0, false),
			want:   refused(`plain rsync client \("@RSYNCD: 9{31}"\) on the TLS port; answered with @ERROR`),
			check:  clientSaw("@ERROR: "),
		},
		{
			name:   "http",
			input:  "GET / HTTP/1.1",
			client: rawClient([]byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"), 0, false),
			want:   refused(`HTTP request \("GET / HTTP/1\.1"\) on the TLS port; answered 400`),
			check: func(t *testing.T, out string) {
				if !strings.HasPrefix(out, "HTTP/1.1 400 Bad Request\r\n") {
					t.Errorf("HTTP client got %q", out)
				}
			},
		},
		{
			name:   "http2-preface",
			input:  "PRI * HTTP/2.0 (h2c preface)",
			client: rawClient([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, false),
			want:   refused(`HTTP request \("PRI \* HTTP/2\.0"\) on the TLS port; answered 400`),
			check:  clientSaw("HTTP/1.1 400 Bad Request"),
		},
		{
			name:   "proxy-v1-untrusted",
			input:  "PROXY TCP4 203.0.113.9 192.0.2.1 40000 874 from a peer not in --trusted-proxy",
			client: rawClient([]byte("PROXY TCP4 203.0.113.9 192.0.2.1 40000 874\r\n"), 0, false),
			want:   refused(`PROXY protocol header from a peer not in --trusted-proxy`),
		},
		{
			name:   "proxy-v2-untrusted",
			input:  "PROXY v2 signature and a TCP4 header, no --trusted-proxy",
			client: rawClient(append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x21, 0x11, 0, 12, 203, 0, 113, 9, 192, 0, 2, 1, 0x9c, 0x40, 0x03, 0x6a), 0, false),
			want:   refused(`PROXY protocol header from a peer not in --trusted-proxy`),
		},
		{
			name:   "ssh-banner",
			input:  "SSH-2.0-OpenSSH_9.2p1 Debian-2",
			client: rawClient([]byte("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"), 0, false),
			want:   refused(`SSH client \("SSH-2\.0-OpenSSH_9\.2p1 Debian-2"\) on the TLS port`),
		},
		{
			name:  "ssh-client",
			input: "ssh -p PORT 127.0.0.1 (a real OpenSSH client)",
			client: func(t *testing.T, addr string) string {
				ssh := needTool(t, "ssh")
				host, port, _ := net.SplitHostPort(addr)
				out, _ := runCmd(t, 30*time.Second, nil, ssh, "-p", port, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
					"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", host, "true")
				return out
			},
			want: refused(`SSH client \("SSH-2\.0-OpenSSH[^"]*"\) on the TLS port`),
		},
		{
			name:   "random-bytes",
			input:  "48 bytes of binary junk",
			client: rawClient(random, 0, false),
			want:   refused(`not a TLS client hello \(first bytes: 42 8f 13 00 fe 77 01 02\)`),
		},
		{
			name:   "alert-record-first",
			input:  "a TLS alert record instead of a hello",
			client: rawClient([]byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28}, 0, false),
			want:   refused(`not a TLS client hello \(first bytes: 15 03 03 00 02 02 28\)`),
		},
		{
			name:   "heartbeat-first",
			input:  "a heartbeat request record (Heartbleed probe)",
			client: rawClient([]byte{0x18, 0x03, 0x02, 0x00, 0x03, 0x01, 0x40, 0x00}, 0, false),
			want:   refused(`not a TLS client hello \(first bytes: 18 03 02 00 03 01 40 00\)`),
		},
		{
			name:   "nul-bytes",
			input:  "4 KiB of zero bytes",
			client: rawClient(make([]byte, 4096), 0, false),
			want:   refused(`not a TLS client hello \(first bytes: 00 00 00 00 00 00 00 00\)`),
		},
		{
			name:   "garbage-64k-plain",
			input:  "64 KiB of random bytes (no record header)",
			client: rawClient(append([]byte{0x42}, randBytes(64<<10)...), 0, false),
			want:   refused(`not a TLS client hello \(first bytes: 42( [0-9a-f]{2}){7}\)`),
		},
		{
			name:   "garbage-64k-record",
			input:  "a handshake record header claiming 65535 bytes, then 64 KiB of random bytes",
			client: rawClient(garbageRecord, 0, false),
			want:   refused(`oversized record received with length 65535`),
		},
		{
			name:   "huge-handshake-message",
			input:  "a ClientHello header claiming 16 MiB",
			client: rawClient(hugeHandshake, 0, false),
			want:   refused(`handshake message of length 16777215 bytes exceeds maximum of 65536 bytes`),
		},
		{
			name:   "empty-records",
			input:  "40 empty handshake records",
			client: rawClient(emptyRecords, 0, false),
			want:   refused(`local error: tls: unexpected message`),
		},
		{
			name:   "sslv2-hello",
			input:  "an SSLv2 CLIENT-HELLO",
			client: rawClient(sslv2Hello(0x0002), 0, false),
			want:   refused(`client sent an SSLv2-format hello \(an SSLv2/SSLv3-era client\); TLS 1\.2 or newer is required`),
		},
		{
			name:   "sslv2-compat-tls10",
			input:  "an SSLv2-format hello offering TLS 1.0 (old OpenSSL's default)",
			client: rawClient(sslv2Hello(0x0301), 0, false),
			want:   refused(`client sent an SSLv2-format hello \(an SSLv2/SSLv3-era client\); TLS 1\.2 or newer is required`),
		},
		{
			name:   "sslv3-hello",
			input:  "ClientHello, SSL 3.0 only",
			client: rawClient(helloRecord(0x0300), 0, false),
			want:   refused(`client offered only SSL 3\.0; TLS 1\.2 or newer is required`),
		},
		{
			name:   "tls10-hello",
			input:  "ClientHello, TLS 1.0 only",
			client: rawClient(helloRecord(0x0301), 0, false),
			want:   refused(`client offered only TLS 1\.0; TLS 1\.2 or newer is required`),
		},
		{
			name:   "tls11-hello",
			input:  "ClientHello, TLS 1.1 only",
			client: rawClient(helloRecord(0x0302), 0, false),
			want:   refused(`client offered only TLS 1\.1(, TLS 1\.0)?; TLS 1\.2 or newer is required`),
		},
		{
			name:   "openssl-tls1.0",
			slow:   true,
			input:  "openssl s_client -tls1",
			client: opensslClient("-tls1 -cipher DEFAULT@SECLEVEL=0", ""),
			want:   refused(`client offered only TLS 1\.0; TLS 1\.2 or newer is required`),
		},
		{
			name:   "openssl-tls1.1",
			slow:   true,
			input:  "openssl s_client -tls1_1",
			client: opensslClient("-tls1_1 -cipher DEFAULT@SECLEVEL=0", ""),
			want:   refused(`client offered only TLS 1\.1(, TLS 1\.0)?; TLS 1\.2 or newer is required`),
		},
		{
			name:   "no-shared-cipher-rsa-kex",
			input:  "openssl s_client -tls1_2 -cipher AES128-SHA:AES256-GCM-SHA384 (RSA key exchange only)",
			client: opensslClient("-tls1_2 -cipher AES128-SHA:AES256-GCM-SHA384", ""),
			want:   refused(`no cipher suite in common with the client \(we take AES-GCM or ChaCha20-Poly1305, with ECDHE under TLS 1\.2\)`),
		},
		{
			name:   "no-shared-cipher-ecdhe-cbc",
			slow:   true,
			input:  "openssl s_client -tls1_2 -cipher ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384 (CBC only)",
			client: opensslClient("-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384", ""),
			want:   refused(`no cipher suite in common with the client \(we take AES-GCM or ChaCha20-Poly1305, with ECDHE under TLS 1\.2\)`),
		},
		{
			name:   "no-shared-cipher-tls13-ccm",
			slow:   true,
			input:  "openssl s_client -tls1_3 -ciphersuites TLS_AES_128_CCM_SHA256",
			client: opensslClient("-tls1_3 -ciphersuites TLS_AES_128_CCM_SHA256", ""),
			want:   refused(`no cipher suite in common with the client \(we take AES-GCM or ChaCha20-Poly1305, with ECDHE under TLS 1\.2\)`),
		},
		{
			name:   "no-shared-group",
			slow:   true,
			input:  "openssl s_client -groups ffdhe2048 (finite-field DH only)",
			client: opensslClient("-groups ffdhe2048", ""),
			want:   refused(`no key exchanges supported by both client and server`),
		},
		{
			name:   "silent",
			slow:   true,
			input:  "connect, send nothing",
			client: rawClient(nil, 3*time.Second, false),
			want:   refused(`client sent nothing within 1s`),
			bound:  3 * time.Second,
		},
		{
			name:   "empty",
			input:  "connect, close at once",
			client: rawClient(nil, 0, true),
			want:   refused(`client closed the connection without sending anything`),
		},
		{
			name:   "closed-mid-handshake",
			input:  "30 bytes of a ClientHello, then FIN",
			client: rawClient(truncated, 0, true),
			want:   refused(`client closed the connection mid-handshake`),
		},
		{
			name:   "reset-mid-handshake",
			input:  "30 bytes of a ClientHello, then RST",
			client: resetClient(truncated),
			want:   refused(`client (reset the connection|closed the connection) mid-handshake`),
		},
		{
			name:   "truncated-then-silent",
			slow:   true,
			input:  "30 bytes of a ClientHello, then nothing",
			client: rawClient(truncated, 3*time.Second, false),
			want:   refused(`handshake not finished within 1s`),
			bound:  3 * time.Second,
		},
		{
			name:   "slowloris-hello",
			slow:   true,
			input:  "a ClientHello at one byte a second",
			args:   []string{"--handshake-timeout", "3s"},
			client: slowClient(helloRecord(0x0303), time.Second, 6*time.Second),
			want:   refused(`handshake not finished within 3s`),
			bound:  3*time.Second + 2*time.Second,
		},
		{
			name:   "slowloris-prefix",
			slow:   true,
			input:  "@RSY at one byte a second (never decidable)",
			args:   []string{"--handshake-timeout", "3s"},
			client: slowClient([]byte("@RSY"), time.Second, 6*time.Second),
			want:   refused(`not a TLS client hello \(first bytes: 40 52 53( 59)?\)`),
			bound:  3*time.Second + 2*time.Second,
		},
		{
			name:   "renegotiation",
			slow:   true,
			input:  "openssl s_client -tls1_2, then R (renegotiate) after the handshake",
			client: opensslClient("-tls1_2", "R\n"),
			want:   served(`.* error="bridge with PEER: client tried to renegotiate TLS \(refused, the session ends\): client to rsync: tls: .*"`),
			exit:   exitNonZero,
			start:  true,
		},
		{
			name:   "renegotiation-legacy",
			slow:   true,
			input:  "openssl s_client -tls1_2 -legacy_renegotiation, then R",
			client: opensslClient("-tls1_2 -legacy_renegotiation", "R\n"),
			want:   served(`.* error="bridge with PEER: client tried to renegotiate TLS \(refused, the session ends\): client to rsync: tls: .*"`),
			exit:   exitNonZero,
			start:  true,
		},
		{
			name:   "data-after-close-notify",
			input:  "module listing request, close_notify, then 64 KiB more on the raw socket",
			client: afterCloseNotify,
			check:  clientSaw("data"),
			want:   served(`sni=localhost tls=TLSv1\.3 .*module=#list .*rsync_exit=255 .*`),
			exit:   exitZero,
			start:  true,
		},
		{
			name:   "sni-shell-metachars",
			input:  `TLS with SNI "$(id);x" then a listing`,
			client: goClient("$(id);x", listingRequest),
			want:   `PEER: SSL_TLS_SNI left out of rsync's environment: .*`,
			lines:  2,
			exit:   exitZero,
			start:  true,
		},
		{
			name:   "ipv6-random-bytes",
			input:  "48 bytes of binary junk from ::1",
			v6:     true,
			client: rawClient(random, 0, false),
			want:   refused(`not a TLS client hello \(first bytes: 42 8f 13 00 fe 77 01 02\)`),
		},
		{
			name:   "ipv6-tls10-hello",
			input:  "ClientHello, TLS 1.0 only, from ::1",
			v6:     true,
			client: rawClient(helloRecord(0x0301), 0, false),
			want:   refused(`client offered only TLS 1\.0; TLS 1\.2 or newer is required`),
		},
		{
			name:   "ipv6-listing",
			input:  "a good module listing from ::1 (control)",
			v6:     true,
			client: goClient("localhost", listingRequest),
			check:  clientSaw("data"),
			want:   served(`sni=localhost tls=TLSv1\.3 .*module=#list .*rsync_exit=255 .*`),
			exit:   exitZero,
			start:  true,
		},
	}
}

// TestServeBadInput feeds serve, started exactly as inetd starts it (the
// accepted socket on fd 0), what does not belong on a TLS port, and a few
// legitimate oddities. Each case must end within its bound with the log
// line and exit status it names, rsync started only after a completed
// handshake, and nothing of serve's left running.
func TestServeBadInput(t *testing.T) {
	p := newPKI(t)
	rd := newRsyncd(t)
	wrapper, starts := rsyncWrapper(t)
	args := serveArgs(p, rd, wrapper, "--proxy-protocol", "hosts", "--handshake-timeout", handshakeTimeout)
	cases := badInputs(t)
	if len(cases) < 30 {
		t.Errorf("only %d bad-input cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.slow {
				slowTier(t, "bad input timing")
			}
			before := countStarts(t, starts)
			host := "127.0.0.1"
			if tc.v6 {
				host = "::1"
			}
			bound := tc.bound
			if bound == 0 {
				bound = 5 * time.Second
			}
			res := serveOne(t, host, append(append([]string{}, args...), tc.args...), tc.client)
			switch tc.exit {
			case exitNonZero:
				if res.code == 0 {
					t.Errorf("exit 0, want non-zero; log:\n%s", res.log)
				}
			case exitZero, 0:
				want := map[int]int{exitZero: 0, 0: 1}[tc.exit]
				if res.code != want {
					t.Errorf("exit %d, want %d; log:\n%s", res.code, want, res.log)
				}
			default:
				if res.code != tc.exit {
					t.Errorf("exit %d, want %d; log:\n%s", res.code, tc.exit, res.log)
				}
			}
			// The session's start line (its own test: TestServeSession-
			// StartAndStatus) is there exactly when rsync started.
			var lines []string
			startLines := 0
			for _, l := range strings.Split(strings.TrimSpace(res.log), "\n") {
				if strings.Contains(l, ": started sni=") {
					startLines++
					continue
				}
				lines = append(lines, l)
			}
			if tc.start != (startLines == 1) || startLines > 1 {
				t.Errorf("%d start lines, rsync started: %v; log:\n%s", startLines, tc.start, res.log)
			}
			wantLines := max(tc.lines, 1)
			if len(lines) != wantLines {
				t.Errorf("want %d log lines, got %d:\n%s", wantLines, len(lines), res.log)
			}
			peer := `127\.0\.0\.1:\d+`
			if tc.v6 {
				peer = `\[::1\]:\d+`
			}
			re := regexp.MustCompile(`^(\S+ )?rsync-ssl-shim\[\d+\]: ` + strings.ReplaceAll(tc.want, "PEER", peer) + `$`)
			if !re.MatchString(lines[0]) {
				t.Errorf("log line does not match %q:\n%s", re, res.log)
			}
			if tc.check != nil {
				tc.check(t, res.client)
			}
			n := countStarts(t, starts) - before
			if tc.start && n != 1 || !tc.start && n != 0 {
				t.Errorf("rsync started %d times, want %v", n, tc.start)
			}
			if res.took > bound {
				t.Errorf("serve took %v, bound %v", res.took, bound)
			}
			if len(res.left) > 0 {
				t.Errorf("left running after serve exited:\n%s", strings.Join(res.left, "\n"))
			}
			outcome := fmt.Sprintf("exit %d, rsync started %d; %s", res.code, n, normalize(lines[0]))
			record(t, "Bad input (inetd mode, --handshake-timeout "+handshakeTimeout+")", tc.name, tc.input, outcome, bound, res.took)
		})
	}

	// The wrapper does record starts: a good connection starts rsync once.
	t.Run("control", func(t *testing.T) {
		before := countStarts(t, starts)
		res := serveOne(t, "127.0.0.1", args, func(t *testing.T, addr string) string {
			return goodListing(t, p, addr)
		})
		if res.code != 0 || countStarts(t, starts) != before+1 {
			t.Fatalf("good listing: exit %d, starts %d→%d\n%s", res.code, before, countStarts(t, starts), res.log)
		}
		if !strings.Contains(res.client, "data") {
			t.Fatalf("listing lacks module data: %q", res.client)
		}
	})
}

// serveOneResult is one connection served by serve as inetd runs it.
type serveOneResult struct {
	code   int
	log    string
	client string
	took   time.Duration // from handing over the connection to serve's exit
	left   []string      // processes of serve's group alive after it exited
}

// serveOne accepts one connection on host (127.0.0.1 or ::1) and hands it
// to serve on fd 0, like inetd; after serve exits it lists whatever of its
// process group is still alive.
func serveOne(t *testing.T, host string, args []string, client func(t *testing.T, addr string) string) serveOneResult {
	t.Helper()
	return serveOneVia(t, host, nil, args, client)
}

// serveOneVia is serveOne with serve started through a wrapper command
// (setpriv, to run it as another user with chosen capabilities).
func serveOneVia(t *testing.T, host string, wrapper, args []string, client func(t *testing.T, addr string) string) serveOneResult {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	clientOut := make(chan string, 1)
	go func() { clientOut <- client(t, addr) }()

	l.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	f, err := c.(*net.TCPConn).File()
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	argv := append(append(append([]string{}, wrapper...), shimBin), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	start := time.Now()
	err = cmd.Start()
	f.Close() // serve holds the only copy now
	if err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	res := serveOneResult{took: time.Since(start), log: stderr.String()}
	if ctx.Err() != nil {
		t.Fatalf("serve did not finish within 60s; log:\n%s", stderr.String())
	}
	// rsync is reaped before serve exits; give a forked rsync child a
	// moment, then everything in the group must be gone.
	for i := 0; i < 50; i++ {
		if res.left = procGroup(cmd.Process.Pid); len(res.left) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	select {
	case res.client = <-clientOut:
	case <-time.After(30 * time.Second):
		t.Fatal("client did not finish within 30s after serve exited")
	}
	return res
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func clientSaw(s string) func(t *testing.T, out string) {
	return func(t *testing.T, out string) {
		if !strings.Contains(out, s) {
			t.Errorf("client did not see %q:\n%.400s", s, out)
		}
	}
}

// sslv2Hello is an SSLv2-format CLIENT-HELLO offering version v.
func sslv2Hello(v uint16) []byte {
	challenge := randBytes(16)
	specs := []byte{0x01, 0x00, 0x80, 0x00, 0x00, 0x2f}
	msg := []byte{0x01, byte(v >> 8), byte(v), 0, byte(len(specs)), 0, 0, 0, byte(len(challenge))}
	msg = append(msg, specs...)
	msg = append(msg, challenge...)
	return append([]byte{0x80 | byte(len(msg)>>8), byte(len(msg))}, msg...)
}

// resetClient sends data, then closes with a reset instead of a FIN.
func resetClient(data []byte) func(t *testing.T, addr string) string {
	return func(t *testing.T, addr string) string {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return "dial: " + err.Error()
		}
		c.Write(data)
		time.Sleep(200 * time.Millisecond)
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		return ""
	}
}

// slowClient sends data one byte per gap, stopping when the server closes
// or after total.
func slowClient(data []byte, gap, total time.Duration) func(t *testing.T, addr string) string {
	return func(t *testing.T, addr string) string {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return "dial: " + err.Error()
		}
		defer c.Close()
		closed := make(chan struct{})
		go func() { io.Copy(io.Discard, c); close(closed) }()
		end := time.Now().Add(total)
		for i := 0; time.Now().Before(end); i++ {
			if i < len(data) {
				if _, err := c.Write(data[i : i+1]); err != nil {
					return "write: " + err.Error()
				}
			}
			select {
			case <-closed:
				return fmt.Sprintf("server closed after %d bytes", i+1)
			case <-time.After(gap):
			}
		}
		return "server kept the connection open"
	}
}

// opensslClient runs openssl s_client with extra flags, feeding it stdin
// after the handshake (then two seconds for the server's answer).
func opensslClient(flags, stdin string) func(t *testing.T, addr string) string {
	return func(t *testing.T, addr string) string {
		openssl := needTool(t, "openssl")
		script := fmt.Sprintf("(printf '%s'; sleep 2) | %s s_client -connect %s -servername localhost %s", strings.ReplaceAll(stdin, "\n", `\n`), openssl, addr, flags)
		out, _ := runCmd(t, 30*time.Second, nil, "sh", "-c", script)
		return out
	}
}

// listingRequest asks rsync for its module list, as an rsync 3 client does.
const listingRequest = "@RSYNCD: 32.0 md5 md4\n#list\n"

// goClient completes a TLS handshake with the given SNI (no verification:
// the point is the server's handling of the name), sends req, closes its
// sending side and reads the answer.
func goClient(sni, req string) func(t *testing.T, addr string) string {
	return func(t *testing.T, addr string) string {
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err != nil {
			return "handshake: " + err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(15 * time.Second))
		io.WriteString(c, req)
		c.CloseWrite()
		b, err := io.ReadAll(c)
		if err != nil {
			return string(b) + "\nread: " + err.Error()
		}
		return string(b)
	}
}

// afterCloseNotify asks for a listing, sends close_notify, then keeps
// writing on the raw socket: the server must treat the stream as ended at
// close_notify, serve the listing and not pass the rest to rsync.
func afterCloseNotify(t *testing.T, addr string) string {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer raw.Close()
	c := tls.Client(raw, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true, VerifyConnection: func(tls.ConnectionState) error { return nil }, RootCAs: x509.NewCertPool()})
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if err := c.Handshake(); err != nil {
		return "handshake: " + err.Error()
	}
	io.WriteString(c, listingRequest)
	c.CloseWrite()
	raw.Write(append([]byte{0x17, 0x03, 0x03, 0x40, 0x00}, randBytes(16<<10)...))
	raw.Write(randBytes(48 << 10))
	b, err := io.ReadAll(c)
	if err != nil {
		return string(b) + "\nread: " + err.Error()
	}
	return string(b)
}
