package tests

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeUsage checks what an admin sees for a wrong command line: the
// flag at fault and the fix, exit status 2 for usage and 1 for a bad file.
func TestServeUsage(t *testing.T) {
	rsync := rsyncPath(t)
	p := newPKI(t)
	otherCert, otherKey := p.Issue(t, "other", CertOpts{CN: "other"})
	enc := p.Dir + "/encrypted.key"
	if err := os.WriteFile(enc, []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = otherKey
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no certificate", []string{"serve"}, 2, "--cert FILE and --key FILE are required"},
		{"cert without key", []string{"serve", "--cert", p.Cert}, 2, "1 --cert but 0 --key"},
		{"key of another cert", []string{"serve", "--cert", otherCert, "--key", p.Key}, 1,
			"--key " + p.Key + " does not belong to --cert " + otherCert},
		{"encrypted key", []string{"serve", "--cert", p.Cert, "--key", enc}, 1, "--key " + enc + " is encrypted"},
		{"bad min-tls", []string{"serve", "--cert", p.Cert, "--key", p.Key, "--min-tls", "1.1"}, 2, `--min-tls "1.1": give 1.2 or 1.3`},
		{"bad pair", []string{"serve", "--cert", p.Cert, "--key", p.Key, "--pair", "pipe"}, 2, `--pair "pipe": give tcp, unix or auto`},
		{"missing rsync", []string{"serve", "--cert", p.Cert, "--key", p.Key, "--rsync", "/nonexistent/rsync"}, 1, "start rsync: rsync: "},
		// It was passed: the fix is to correct it, not to pass it.
		{"wrong --rsync", []string{"serve", "--cert", p.Cert, "--key", p.Key, "--rsync", "/opt/nope/rsync"}, 1, "(fix --rsync /opt/nope/rsync)"},
		{"bare port", []string{"serve", "--cert", p.Cert, "--key", p.Key, "--rsync", rsync, "--listen", "18876"}, 2,
			"--listen 18876: give HOST:PORT, e.g. :18876 (every address) or 127.0.0.1:18876"},
		{"stray argument", []string{"serve", "--cert", p.Cert, "--key", p.Key, "extra"}, 2, `unexpected argument "extra"`},
		{"no connection", []string{"serve", "--cert", p.Cert, "--key", p.Key, "--rsync", rsync}, 2,
			"no connection to serve: start me from rsync-ssl.socket, inetd/xinetd, or pass --listen ADDR"},
		{"bad listen", []string{"serve", "--cert", p.Cert, "--key", p.Key, "--rsync", rsync, "--listen", "256.0.0.1:99999"}, 1, "--listen 256.0.0.1:99999: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runCmd(t, 20*time.Second, nil, shimBin, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d (want %d), output:\n%s\nwant it to contain %q", code, tc.code, out, tc.want)
			}
			if strings.Count(strings.TrimSpace(out), "\n") > 0 {
				t.Errorf("want one line, got:\n%s", out)
			}
		})
	}
	out, code := runCmd(t, 20*time.Second, nil, shimBin, "serve", "--help")
	if code != 0 || !strings.Contains(out, "--handshake-timeout DURATION") {
		t.Errorf("serve --help: exit %d\n%s", code, out)
	}
	// "help serve" is "serve --help", as with git and go.
	if out2, code := runCmd(t, 20*time.Second, nil, shimBin, "help", "serve"); code != 0 || out2 != out {
		t.Errorf("help serve: exit %d, and not what serve --help says:\n%s", code, out2)
	}
}

// served returns the serial of the certificate the server presents.
func servedSerial(t *testing.T, addr string, p *PKI) string {
	t.Helper()
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(p.CA)
	pool.AppendCertsFromPEM(b)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("tls dial %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestServeReloadAndExitIdle runs the accept loop (--listen): a renewed
// certificate is served after SIGHUP, and again after the files change with
// no signal at all; with --exit-idle the process ends by itself.
func TestServeReloadAndExitIdle(t *testing.T) {
	slowTier(t, "reload and idle timing")
	rsync := rsyncPath(t)
	p := newPKI(t)
	rd := newRsyncd(t)
	port := freePort(t, "127.0.0.1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(shimBin, append(serveArgs(p, rd, rsync), "--listen", addr, "--exit-idle", "12s")...)
	log := startBg(t, cmd)
	waitPortOr(t, addr, 10*time.Second, log)
	first := servedSerial(t, addr, p)

	renew := func(name string) {
		c, k := p.Issue(t, name, CertOpts{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}})
		for _, f := range [][2]string{{c, p.Cert}, {k, p.Key}} {
			b, err := os.ReadFile(f[0])
			if err != nil {
				t.Fatal(err)
			}
			// Write and rename, as certbot and friends do.
			tmp := f[1] + ".new"
			if err := os.WriteFile(tmp, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, f[1]); err != nil {
				t.Fatal(err)
			}
		}
	}

	renew("renewed-1")
	cmd.Process.Signal(syscall.SIGHUP)
	if !waitFor(func() bool { return strings.Contains(log.String(), "reloaded certificates (SIGHUP)") }, 5*time.Second) {
		t.Fatalf("no reload after SIGHUP:\n%s", log)
	}
	second := servedSerial(t, addr, p)
	if second == first {
		t.Fatal("still serving the old certificate after SIGHUP")
	}

	renew("renewed-2")
	if !waitFor(func() bool { return strings.Contains(log.String(), "reloaded certificates (changed files)") }, 10*time.Second) {
		t.Fatalf("no reload after the files changed:\n%s", log)
	}
	if third := servedSerial(t, addr, p); third == second {
		t.Fatal("still serving the old certificate after the files changed")
	}

	// A broken renewal keeps the working certificate.
	if err := os.WriteFile(p.Key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	if !waitFor(func() bool { return strings.Contains(log.String(), "still using the previous ones") }, 5*time.Second) {
		t.Fatalf("broken key not reported:\n%s", log)
	}
	servedSerial(t, addr, p)

	// Idle: the process exits by itself, with a log line saying why.
	// (startBg's goroutine reaps it; the PID then no longer exists.)
	if !waitFor(func() bool { return strings.Contains(log.String(), "exiting: idle for 12s") }, 30*time.Second) {
		t.Fatalf("--exit-idle 12s: no idle exit after 30s\n%s", log)
	}
	if !waitFor(func() bool { return syscall.Kill(cmd.Process.Pid, 0) != nil }, 5*time.Second) {
		t.Fatal("logged the idle exit but is still running")
	}
}
