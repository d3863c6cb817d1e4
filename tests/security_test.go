package tests

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/internal/testpki"
)

// The findings of the security review (issue 15), one test each, named so
// that the finding is plain from a failing test's name. Each records its
// case for docs/robustness.md.

const securityArea = "Security findings (issue 15)"

var netDialer = net.Dialer{Timeout: 5 * time.Second}

func recordSecurity(t *testing.T, name, input, outcome string, start time.Time) {
	record(t, securityArea, name, input, outcome, 2*time.Minute, time.Since(start))
}

// selfSignedWithKey writes a self-signed client certificate for key: the
// holder of a pinned key can make as many as it likes, saying anything.
func selfSignedWithKey(t *testing.T, dir, name string, key *ecdsa.PrivateKey, cn string, dns []string) clientCert {
	t.Helper()
	x, _ := (*testpki.CA)(nil).Issue(t, testpki.Leaf{Subject: &pkix.Name{CommonName: cn, Organization: []string{cn + " org"}},
		DNS: dns, Key: key, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	c := clientCert{X509: x}
	c.Cert, c.Key = testpki.WritePair(t, dir, name, x, key)
	return c
}

// spkiPin is a certificate's key pin as --allow-spki takes it.
func spkiPin(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return "sha256:" + base64.StdEncoding.EncodeToString(sum[:])
}

func spkiHex(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// Finding 1: in pin-only mode the holder of a pinned key reissues its
// certificate as CN=host-b. Nothing it wrote about itself may be exported
// as verified: only the admin's name for the pin, the pin, and the hash of
// what it presented.
func TestSecurityPinOnlyIdentityNotFromCertificate(t *testing.T) {
	start := time.Now()
	p := newPKI(t)
	rsync := rsyncPath(t)
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostA := selfSignedWithKey(t, dir, "host-a", key, "host-a", []string{"host-a.example.org"})
	forged := selfSignedWithKey(t, dir, "forged", key, "host-b", []string{"host-b.example.org"})
	pin := spkiPin(hostA.X509)
	if spkiPin(forged.X509) != pin {
		t.Fatal("the reissued certificate does not carry the same key")
	}

	base := t.TempDir()
	for _, h := range []string{"host-a", "host-b"} {
		writeFile(t, filepath.Join(base, h, "whoami.txt"), h+"\n", 0o644)
	}
	data := t.TempDir()
	writeFile(t, filepath.Join(data, "hello.txt"), "hello\n", 0o644)
	hook, envFile := envDumper(t)
	rd := rsyncdConf(t, fmt.Sprintf("[backup]\npath = %s/%%SSL_CLIENT_S_DN_CN%%\nread only = yes\n\n[data]\npath = %s\nread only = yes\n%s\n", base, data, hook))

	pull := func(t *testing.T, flags []string, src string) (serveOneResult, string) {
		t.Helper()
		dst := t.TempDir()
		res := runInetd(t, serveArgs(p, rd, rsync, flags...), func(t *testing.T, addr string) string {
			out, code := sslClient(t, p, addr, forged, src, dst+"/")
			return fmt.Sprintf("exit %d\n%s", code, out)
		})
		got, _ := os.ReadFile(filepath.Join(dst, filepath.Base(src)))
		return res, string(got)
	}
	noClaims := func(t *testing.T, env map[string]string) {
		t.Helper()
		for _, k := range []string{"SSL_CLIENT_S_DN", "SSL_CLIENT_I_DN", "SSL_CLIENT_M_SERIAL", "SSL_CLIENT_V_START", "SSL_CLIENT_V_END", "SSL_CLIENT_SAN_DNS_0"} {
			if v, ok := env[k]; ok {
				t.Errorf("%s=%q exported in pin-only mode: the client wrote it", k, v)
			}
		}
		if env["SSL_CLIENT_VERIFY"] != "SUCCESS" || env["SSL_CLIENT_CERT_SHA256"] != sha256Hex(forged.X509.Raw) || env["SSL_CLIENT_SPKI_SHA256"] != spkiHex(forged.X509) {
			t.Errorf("pin-only variables:\n%s", sslVars(env))
		}
	}
	noHostB := func(t *testing.T, log string) {
		t.Helper()
		if strings.Contains(log, "host-b") {
			t.Errorf("the log repeats the client's own claim host-b:\n%s", log)
		}
	}

	var outcome []string
	t.Run("named-pin", func(t *testing.T) {
		flags := []string{"--allow-spki", "host-a=" + pin}
		res, got := pull(t, flags, "localhost::backup/whoami.txt")
		if got != "host-a\n" {
			t.Fatalf("per-host module as the reissued CN=host-b certificate: got %q, want host-a's file\nclient: %s\nlog:\n%s", got, res.client, res.log)
		}
		wantLog(t, res.log, `127\.0\.0\.1:\d+: served .* client=host-a module=backup `)
		noHostB(t, res.log)

		os.Remove(envFile)
		res, got = pull(t, flags, "localhost::data/hello.txt")
		if got != "hello\n" {
			t.Fatalf("data pull: %s\n%s", res.client, res.log)
		}
		env := readEnv(t, envFile)
		if env["SSL_CLIENT_S_DN_CN"] != "host-a" {
			t.Errorf("SSL_CLIENT_S_DN_CN=%q, want the admin's name host-a", env["SSL_CLIENT_S_DN_CN"])
		}
		noClaims(t, env)
		noHostB(t, res.log)
		outcome = append(outcome, "named pin: host-a's tree, client=host-a, SSL_CLIENT_S_DN_CN=host-a, no S_DN/I_DN/SAN/serial/dates")
	})
	t.Run("bare-pin", func(t *testing.T) {
		flags := []string{"--allow-spki", pin}
		res, got := pull(t, flags, "localhost::backup/whoami.txt")
		if got != "" {
			t.Errorf("bare pin: the per-host module handed out %q", got)
		}
		noHostB(t, res.log)
		os.Remove(envFile)
		res, got = pull(t, flags, "localhost::data/hello.txt")
		if got != "hello\n" {
			t.Fatalf("data pull: %s\n%s", res.client, res.log)
		}
		env := readEnv(t, envFile)
		if v, ok := env["SSL_CLIENT_S_DN_CN"]; ok {
			t.Errorf("SSL_CLIENT_S_DN_CN=%q exported for an unnamed pin", v)
		}
		noClaims(t, env)
		wantLog(t, res.log, `127\.0\.0\.1:\d+: served .* client=`+regexp.QuoteMeta(pin)+` module=data `)
		noHostB(t, res.log)
		outcome = append(outcome, "bare pin: per-host module refused, client=<pin>, no SSL_CLIENT_S_DN_CN")
	})
	recordSecurity(t, "1 pin-only identity (TestSecurityPinOnlyIdentityNotFromCertificate)",
		"key pinned from CN=host-a, certificate reissued for the same key as CN=host-b", strings.Join(outcome, "; "), start)
}

// Finding 2: a CA-signed CN of "." or with spaces must never reach a path
// or a command line in rsyncd.conf.
func TestSecurityEnvValueDotAndSpace(t *testing.T) {
	start := time.Now()
	p := newPKI(t)
	rsync := rsyncPath(t)
	base := t.TempDir()
	for _, h := range []string{"host-a", "host-b"} {
		writeFile(t, filepath.Join(base, h, "whoami.txt"), h+"\n", 0o644)
	}
	data := t.TempDir()
	writeFile(t, filepath.Join(data, "hello.txt"), "hello\n", 0o644)
	hookDir := t.TempDir()
	argsFile, envFile := filepath.Join(hookDir, "args"), filepath.Join(hookDir, "env")
	hook := filepath.Join(hookDir, "hook.sh")
	writeFile(t, hook, fmt.Sprintf("#!/bin/sh\nprintf '%%s\\n' \"$#\" \"$@\" > %s\nenv > %s\n", argsFile, envFile), 0o755)
	rd := rsyncdConf(t, fmt.Sprintf("[backup]\npath = %s/%%SSL_CLIENT_S_DN_CN%%\nread only = yes\n\n[hooked]\npath = %s\nread only = yes\npre-xfer exec = %s %%SSL_CLIENT_S_DN_CN%%\n", base, data, hook))
	args := serveArgs(p, rd, rsync, "--client-ca", p.CA)

	run := func(t *testing.T, cn string, rsyncArgs ...string) (serveOneResult, int) {
		t.Helper()
		c := p.IssueClient(t, "c", ClientOpts{CN: cn})
		code := -1
		res := runInetd(t, args, func(t *testing.T, addr string) string {
			var out string
			out, code = sslClient(t, p, addr, c, rsyncArgs...)
			return out
		})
		return res, code
	}
	hookArgs := func(t *testing.T) []string {
		t.Helper()
		b, err := os.ReadFile(argsFile)
		if err != nil {
			t.Fatalf("the hook never ran: %v", err)
		}
		return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}

	t.Run("control", func(t *testing.T) {
		os.Remove(argsFile)
		res, code := run(t, "host-a", "localhost::hooked/hello.txt", t.TempDir()+"/")
		if got := hookArgs(t); code != 0 || strings.Join(got, " ") != "1 host-a" {
			t.Fatalf("CN=host-a: exit %d, hook arguments %q, want [1 host-a]\n%s\n%s", code, got, res.client, res.log)
		}
	})
	t.Run("cn-dot", func(t *testing.T) {
		res, code := run(t, ".", "localhost::backup/")
		if code == 0 || strings.Contains(res.client, "host-a") || strings.Contains(res.client, "host-b") {
			t.Fatalf("CN=. listed the per-host module (exit %d): every host's tree\n%s\n%s", code, res.client, res.log)
		}
		wantLog(t, res.log, `127\.0\.0\.1:\d+: SSL_CLIENT_S_DN_CN left out of rsync's environment`)
		wantLog(t, res.log, `127\.0\.0\.1:\d+: served .* client=- module=backup `)
	})
	t.Run("cn-space-option", func(t *testing.T) {
		os.Remove(argsFile)
		res, code := run(t, "host-a --delete-everything", "localhost::hooked/hello.txt", t.TempDir()+"/")
		got := hookArgs(t)
		if len(got) != 2 || got[0] != "1" || strings.Contains(got[1], "host-a") {
			t.Fatalf("hook arguments %q (exit %d): want the one unexpanded %%SSL_CLIENT_S_DN_CN%%\n%s", got, code, res.log)
		}
		if code != 0 {
			t.Errorf("transfer failed (exit %d): %s", code, res.client)
		}
		env, _ := os.ReadFile(envFile)
		if bytes.Contains(env, []byte("delete-everything")) {
			t.Errorf("the hook's environment carries the CN:\n%s", env)
		}
		wantLog(t, res.log, `127\.0\.0\.1:\d+: SSL_CLIENT_S_DN_CN left out of rsync's environment`)
		wantLog(t, res.log, `127\.0\.0\.1:\d+: served .* client=- module=hooked `)
		for _, l := range logLines(res.log) {
			if strings.Contains(l, "delete-everything") {
				t.Errorf("log line carries the CN: %s", l)
			}
		}
	})
	recordSecurity(t, "2 env value filter (TestSecurityEnvValueDotAndSpace)",
		"CA-signed CN=. against path = /srv/%SSL_CLIENT_S_DN_CN%; CN=host-a --delete-everything against pre-xfer exec = hook %SSL_CLIENT_S_DN_CN%",
		"SSL_CLIENT_S_DN_CN left out and logged: the module's chdir fails, the hook gets one unexpanded argument, client=-", start)
}

// tlsProbe is a client that completes a TLS handshake with the given SNI
// and closes: enough for serve to start rsync and log its summary line.
func tlsProbe(sni string, send []byte) func(t *testing.T, addr string) string {
	return func(t *testing.T, addr string) string {
		c, err := tls.DialWithDialer(&netDialer, "tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err != nil {
			return "dial: " + err.Error()
		}
		defer c.Close()
		if len(send) > 0 {
			c.Write(send)
		}
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		b, _ := io.ReadAll(c)
		return string(b)
	}
}

// Finding 3: the client's SNI reaches the log only as a valid host name,
// and no log line carries a control byte or runs unbounded.
func TestSecuritySNILoggedSafely(t *testing.T) {
	start := time.Now()
	p := newPKI(t)
	rsync := rsyncPath(t)
	rd := newRsyncd(t)
	forge := "x client=host-b module=secret rsync_exit=0\r\x1b[2J"
	long := strings.Repeat("a", 60000)
	var outcome []string
	for _, tc := range []struct{ name, sni, want string }{
		{"valid", "localhost", `sni=localhost `},
		{"forged-fields", forge, fmt.Sprintf(`sni=\(invalid, %d bytes\) `, len(forge))},
		{"60000-bytes", long, `sni=\(invalid, 60000 bytes\) `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runInetd(t, serveArgs(p, rd, rsync), tlsProbe(tc.sni, []byte("@RSYNCD: 31.0\n\n")))
			wantLog(t, res.log, `127\.0\.0\.1:\d+: served `+tc.want)
			for _, l := range strings.Split(strings.TrimSuffix(res.log, "\n"), "\n") {
				if len(l) > 4200 {
					t.Errorf("log line of %d bytes", len(l))
				}
				if i := strings.IndexFunc(l, func(r rune) bool { return r < 0x20 || r == 0x7f }); i >= 0 {
					t.Errorf("control byte %q in log line %q", l[i], l)
				}
				if strings.Contains(l, "client=host-b") || strings.Contains(l, "module=secret") {
					t.Errorf("forged field in log line %q", l)
				}
			}
			if tc.name != "valid" {
				outcome = append(outcome, strings.TrimSuffix(strings.ReplaceAll(tc.want, `\`, ""), " "))
			}
		})
	}
	recordSecurity(t, "3 SNI in the log (TestSecuritySNILoggedSafely)",
		`SNI "x client=host-b module=secret rsync_exit=0\r\e[2J"; SNI of 60,000 bytes`, strings.Join(outcome, "; ")+"; no control byte, no forged field, every line bounded", start)
}

// Finding 5: with --proxy-protocol off, "proxy protocol = yes" in
// rsyncd.conf must not stay in force: a client's own PROXY header, sent
// inside TLS, must not become rsync's idea of the client.
func TestSecurityProxyProtocolOffExplicit(t *testing.T) {
	start := time.Now()
	p := newPKI(t)
	old := oldRsync(t)
	rd := newRsyncd(t, "proxy protocol = yes")
	forged := "PROXY TCP4 10.9.9.9 127.0.0.1 40000 874\r\n@RSYNCD: 31.0\n\n"
	res := runInetd(t, serveArgs(p, rd, old, "--proxy-protocol", "off"), func(t *testing.T, addr string) string {
		c, err := tls.DialWithDialer(&netDialer, "tcp", addr, &tls.Config{ServerName: "localhost", RootCAs: caPool(t, p)})
		if err != nil {
			return "dial: " + err.Error()
		}
		defer c.Close()
		c.Write([]byte(forged))
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		b, _ := io.ReadAll(c)
		return string(b)
	})
	rlog := rd.LogText(t)
	if !strings.Contains(rlog, "rsyncd") && !strings.Contains(rlog, "connect") {
		t.Fatalf("rsync logged nothing, so the test proves nothing:\nserve: %s\nclient: %q", res.log, res.client)
	}
	if strings.Contains(rlog, "10.9.9.9") {
		t.Errorf("rsync took the client's own PROXY header:\n%s", rlog)
	}
	recordSecurity(t, "5 --proxy-protocol off (TestSecurityProxyProtocolOffExplicit)",
		"rsync 3.2.7, rsyncd.conf proxy protocol = yes, serve --proxy-protocol off, client sends PROXY TCP4 10.9.9.9 inside TLS",
		"rsync runs with --dparam=proxyprotocol=no; its log never names 10.9.9.9", start)
}

func caPool(t *testing.T, p *PKI) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(p.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	return pool
}

// servedSerial is the serial number of the certificate a server presents.
func presentedSerial(t *testing.T, addr string) string {
	t.Helper()
	c, err := tls.DialWithDialer(&netDialer, "tcp", addr, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// waitLogLine waits up to d for a line of out to match re.
func waitLogLine(t *testing.T, out *lockedBuffer, re string, d time.Duration) {
	t.Helper()
	rx := regexp.MustCompile(re)
	if !waitFor(func() bool { return rx.MatchString(out.String()) }, d) {
		t.Fatalf("no log line matches %q within %v; log:\n%s", re, d, out)
	}
}

func replaceFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// Write and rename, as certbot and friends do.
	if err := os.WriteFile(dst+".new", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".new", dst); err != nil {
		t.Fatal(err)
	}
}

// Finding 6, reload: a renewal gone wrong (an expired or not yet valid
// certificate) must not replace the working one.
func TestSecurityReloadKeepsValidCert(t *testing.T) {
	start := time.Now()
	p := newPKI(t)
	rsync := rsyncPath(t)
	rd := newRsyncd(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	replaceFile(t, p.Cert, cert)
	replaceFile(t, p.Key, key)
	pk := *p
	pk.Cert, pk.Key = cert, key
	s := startServeListening(t, serveArgs(&pk, rd, rsync))
	good := presentedSerial(t, s.addr())

	now := time.Now()
	for _, tc := range []struct {
		name     string
		from, to time.Time
		why      string
	}{
		{"expired", now.Add(-48 * time.Hour), now.Add(-24 * time.Hour), `expired`},
		{"not-yet-valid", now.Add(24 * time.Hour), now.Add(48 * time.Hour), `not valid before`},
	} {
		c, k := p.Issue(t, tc.name, CertOpts{CN: "localhost", DNS: []string{"localhost"}, NotBefore: tc.from, NotAfter: tc.to})
		replaceFile(t, k, key)
		replaceFile(t, c, cert)
		syscall.Kill(s.Pid, syscall.SIGHUP)
		waitLogLine(t, s.Log, `reload certificates \((SIGHUP|changed files)\): --cert `+regexp.QuoteMeta(cert)+` (is )?`+tc.why+`[^\n]*; still using the previous ones`, 15*time.Second)
		if got := presentedSerial(t, s.addr()); got != good {
			t.Fatalf("%s: the server now presents serial %s, not the working certificate's %s\n%s", tc.name, got, good, s.Log)
		}
	}
	if strings.Contains(s.Log.String(), "reloaded certificates") {
		t.Errorf("a reload was reported done:\n%s", s.Log)
	}
	// A good renewal still goes in.
	c, k := p.Issue(t, "renewed", CertOpts{CN: "localhost", DNS: []string{"localhost"}})
	replaceFile(t, k, key)
	replaceFile(t, c, cert)
	syscall.Kill(s.Pid, syscall.SIGHUP)
	waitLogLine(t, s.Log, `reloaded certificates`, 15*time.Second)
	if got := presentedSerial(t, s.addr()); got == good {
		t.Errorf("the valid renewal was not swapped in\n%s", s.Log)
	}
	recordSecurity(t, "6 certificate reload (TestSecurityReloadKeepsValidCert)",
		"serve --listen; the certificate files replaced by an expired, then a not yet valid pair, SIGHUP",
		"reload refused and logged (still using the previous ones), the working certificate served; a valid renewal then goes in", start)
}

// Finding 6, environment: rsync and its hooks get an allow-list of the
// service's environment, never its credentials or activation variables.
func TestSecurityRsyncEnvAllowList(t *testing.T) {
	start := time.Now()
	p := newPKI(t)
	rsync := rsyncPath(t)
	hook, envFile := envDumper(t)
	rd := newRsyncd(t, hook)
	writeFile(t, filepath.Join(rd.Data, "hello.txt"), "hello\n", 0o644)
	secret := map[string]string{
		"CREDENTIALS_DIRECTORY": "/run/credentials/rsync-ssl@0.service",
		"NOTIFY_SOCKET":         "/run/systemd/notify-security-test",
		"JOURNAL_STREAM":        "8:12345",
		"RSYNC_SSL_SHIM_OPTS":   "--rsyncd-conf /etc/rsync-ssl/rsyncd.conf",
		"LISTEN_FDNAMES":        "rsync-ssl.socket",
		"SECURITY_TEST_SECRET":  "s3cret",
		"INVOCATION_ID":         "0123456789abcdef",
	}
	kept := map[string]string{"LANG": "C.UTF-8", "LC_TIME": "C", "TZ": "UTC"}
	for k, v := range secret {
		t.Setenv(k, v)
	}
	for k, v := range kept {
		t.Setenv(k, v)
	}
	dst := t.TempDir()
	res := runInetd(t, serveArgs(p, rd, rsync), sslPull(p, clientCert{}, dst))
	if !strings.HasPrefix(res.client, "exit 0\n") {
		t.Fatalf("pull: %s\n%s", res.client, res.log)
	}
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatalf("the hook left no environment: %v", err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	for k := range secret {
		if v, ok := env[k]; ok {
			t.Errorf("%s=%q reached rsync's hook", k, v)
		}
	}
	for k, v := range kept {
		if env[k] != v {
			t.Errorf("%s=%q in the hook, want %q", k, env[k], v)
		}
	}
	for _, k := range []string{"PATH", "SSL_PROTOCOL", "TCPREMOTEIP", "SSL_CLIENT_VERIFY"} {
		if env[k] == "" {
			t.Errorf("%s missing from the hook's environment", k)
		}
	}
	recordSecurity(t, "6 rsync's environment (TestSecurityRsyncEnvAllowList)",
		"serve started with CREDENTIALS_DIRECTORY, NOTIFY_SOCKET, JOURNAL_STREAM, RSYNC_SSL_SHIM_OPTS, LISTEN_FDNAMES, INVOCATION_ID and an unknown variable set",
		"a pre-xfer exec hook sees none of them; LANG, LC_TIME, TZ, PATH and our PROTO/TCP*/SSL_* pass", start)
}

// capsLine reads "CapPrm=... CapEff=... CapAmb=..." out of a hook's report.
var capRE = regexp.MustCompile(`(?m)^(Cap(?:Prm|Eff|Amb)):\s*([0-9a-f]+)$`)

// Finding 4, the shim's side: serve --rsync-user starts rsync (and so its
// hooks) as another user, with no capabilities and no credentials, so that
// nothing rsync runs can open the server's private key.
func TestSecurityRsyncUser(t *testing.T) {
	start := time.Now()
	if os.Geteuid() != 0 {
		t.Skip("needs root: serve must be able to switch users")
	}
	needTool(t, "setpriv")
	p := newPKI(t)
	rsync := rsyncPath(t)
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	daemon, err := user.Lookup("daemon")
	if err != nil {
		t.Skipf("no user daemon: %v", err)
	}

	// Directories everyone may traverse, so that the key's own mode is
	// what keeps the hook out; t.TempDir's are 0700.
	base, err := os.MkdirTemp("", "security-rsyncuser-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	creds := filepath.Join(base, "credentials")
	data := filepath.Join(base, "data")
	out := filepath.Join(base, "out")
	for _, d := range []string{creds, data, out} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(out, 0o777)
	cert, key := filepath.Join(creds, "cert.pem"), filepath.Join(creds, "key.pem")
	replaceFile(t, p.Cert, cert)
	replaceFile(t, p.Key, key)
	os.Chmod(cert, 0o644)
	writeFile(t, filepath.Join(data, "hello.txt"), "hello\n", 0o644)
	report := filepath.Join(out, "report")
	hook := filepath.Join(base, "hook.sh")
	writeFile(t, hook, fmt.Sprintf(`#!/bin/sh
{
echo "uid=$(id -u) gid=$(id -g)"
if cat %s >/dev/null 2>&1; then echo "key=read"; else echo "key=refused"; fi
echo "creds=${CREDENTIALS_DIRECTORY:-unset}"
grep -E '^Cap(Prm|Eff|Amb):' /proc/$$/status
echo parent
grep -E '^Cap(Prm|Eff|Amb):' /proc/$PPID/status
} > %s.tmp 2>&1
mv %s.tmp %s
`, key, report, report, report), 0o755)
	conf := filepath.Join(base, "rsyncd.conf")
	writeFile(t, conf, fmt.Sprintf("use chroot = no\n\n[data]\npath = %s\nread only = yes\npre-xfer exec = %s\n", data, hook), 0o644)
	rd := &Rsyncd{Conf: conf}
	pk := *p
	pk.Cert, pk.Key = cert, key
	t.Setenv("CREDENTIALS_DIRECTORY", creds)

	check := func(t *testing.T, res serveOneResult, dst string) string {
		t.Helper()
		if res.code != 0 || !strings.HasPrefix(res.client, "exit 0\n") {
			t.Fatalf("serve exit %d; client: %s\nlog:\n%s", res.code, res.client, res.log)
		}
		if b, err := os.ReadFile(filepath.Join(dst, "hello.txt")); err != nil || string(b) != "hello\n" {
			t.Fatalf("hello.txt not delivered: %v", err)
		}
		b, err := os.ReadFile(report)
		if err != nil {
			t.Fatalf("the hook left no report: %v\n%s", err, res.log)
		}
		r := string(b)
		if want := fmt.Sprintf("uid=%s gid=%s\n", nobody.Uid, nobody.Gid); !strings.HasPrefix(r, want) {
			t.Errorf("hook ran as %q, want %q", strings.SplitN(r, "\n", 2)[0], want)
		}
		if !strings.Contains(r, "key=refused\n") {
			t.Errorf("the hook could read the private key:\n%s", r)
		}
		if !strings.Contains(r, "creds=unset\n") {
			t.Errorf("CREDENTIALS_DIRECTORY reached the hook:\n%s", r)
		}
		caps := capRE.FindAllStringSubmatch(r, -1)
		if len(caps) != 6 {
			t.Errorf("want CapPrm/CapEff/CapAmb of the hook and of rsync, got:\n%s", r)
		}
		for _, c := range caps {
			if strings.Trim(c[2], "0") != "" {
				t.Errorf("%s=%s in rsync or its hook, want none:\n%s", c[1], c[2], r)
			}
		}
		return r
	}

	t.Run("root", func(t *testing.T) {
		os.Remove(report)
		dst := t.TempDir()
		res := runInetd(t, serveArgs(&pk, rd, rsync, "--rsync-user", "nobody"), sslPull(p, clientCert{}, dst))
		check(t, res, dst)
	})
	t.Run("ambient-caps", func(t *testing.T) {
		// As systemd would start it: User=daemon with
		// AmbientCapabilities=CAP_SETUID CAP_SETGID CAP_KILL; the key
		// belongs to that user.
		uid, _ := strconv.Atoi(daemon.Uid)
		gid, _ := strconv.Atoi(daemon.Gid)
		if err := os.Chown(key, uid, gid); err != nil {
			t.Fatal(err)
		}
		defer os.Chown(key, 0, 0)
		os.Remove(report)
		dst := t.TempDir()
		wrap := []string{"setpriv", "--reuid=" + daemon.Uid, "--regid=" + daemon.Gid, "--clear-groups",
			"--inh-caps=+setuid,+setgid,+kill", "--ambient-caps=+setuid,+setgid,+kill"}
		res := serveOneVia(t, "127.0.0.1", wrap, serveArgs(&pk, rd, rsync, "--rsync-user", "nobody"), sslPull(p, clientCert{}, dst))
		check(t, res, dst)
	})
	t.Run("refusals", func(t *testing.T) {
		out, code := runCmd(t, 30*time.Second, nil, shimBin, serveArgs(&pk, rd, rsync, "--rsync-user", "no-such-user-security")...)
		if code != 2 || !strings.Contains(out, `--rsync-user no-such-user-security: no such user`) {
			t.Errorf("unknown user: exit %d, output %.300q", code, out)
		}
		uid, _ := strconv.Atoi(daemon.Uid)
		gid, _ := strconv.Atoi(daemon.Gid)
		os.Chown(key, uid, gid)
		defer os.Chown(key, 0, 0)
		out, code = runCmd(t, 30*time.Second, nil, "setpriv", append([]string{"--reuid=" + daemon.Uid, "--regid=" + daemon.Gid, "--clear-groups", shimBin},
			serveArgs(&pk, rd, rsync, "--rsync-user", "nobody")...)...)
		if code != 1 || !strings.Contains(out, "CAP_SETUID") {
			t.Errorf("no capabilities: exit %d, output %.300q, want status 1 naming CAP_SETUID", code, out)
		}
	})
	recordSecurity(t, "4 rsync reads the key (TestSecurityRsyncUser)",
		"serve --rsync-user nobody, as root and as a user with ambient CAP_SETUID/CAP_SETGID/CAP_KILL; a pre-xfer exec hook reads the 0600 key",
		"hook runs as nobody, cannot open the key, no CREDENTIALS_DIRECTORY, CapPrm/CapEff/CapAmb zero in rsync and the hook; unknown user: exit 2; no capability: exit 1 naming CAP_SETUID", start)
}

// Finding 6, documentation: rsync is started with --address=0.0.0.1 so
// that, were it ever to fall back to its standalone daemon, it could not
// listen. With net.ipv4.ip_nonlocal_bind=1 it can bind that address after
// all; this shows what then happens, in a network namespace of our own.
func TestSecurityUnbindableAddressNonlocalBind(t *testing.T) {
	slowTier(t, "network namespace")
	start := time.Now()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	ipCmd := needTool(t, "ip")
	rsync := rsyncPath(t)
	ns := fmt.Sprintf("security-nlb-%d", os.Getpid())
	run := func(args ...string) string {
		t.Helper()
		out, code := runCmd(t, 20*time.Second, nil, ipCmd, append([]string{"netns", "exec", ns}, args...)...)
		if code != 0 {
			t.Fatalf("ip netns exec %s %v: exit %d\n%s", ns, args, code, out)
		}
		return out
	}
	if out, code := runCmd(t, 10*time.Second, nil, ipCmd, "netns", "add", ns); code != 0 {
		t.Fatalf("ip netns add: %s", out)
	}
	t.Cleanup(func() { exec.Command(ipCmd, "netns", "del", ns).Run() })
	run(ipCmd, "link", "set", "lo", "up")
	// A default route, as any real host has: 0.0.0.1 is not local, so a
	// connect to it is routed out, not looped back.
	run(ipCmd, "link", "add", "sec-v0", "type", "veth", "peer", "name", "sec-v1")
	run(ipCmd, "addr", "add", "192.0.2.1/24", "dev", "sec-v0")
	run(ipCmd, "link", "set", "sec-v0", "up")
	run(ipCmd, "link", "set", "sec-v1", "up")
	run(ipCmd, "route", "add", "default", "via", "192.0.2.254")
	rd := newRsyncd(t)
	port := "8873"
	daemon := func() (*exec.Cmd, *lockedBuffer) {
		cmd := exec.Command(ipCmd, "netns", "exec", ns, rsync, "--daemon", "--no-detach", "--address=0.0.0.1", "--port="+port, "--config="+rd.Conf)
		cmd.Stdin = nil // /dev/null: not a socket, so rsync takes its standalone path
		return cmd, nil
	}

	// Default: the bind fails, rsync exits 10.
	cmd, _ := daemon()
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 10 {
		t.Fatalf("ip_nonlocal_bind=0: rsync %v, want exit 10\n%s\n%s", err, out, rd.LogText(t))
	}
	if !strings.Contains(rd.LogText(t), "unable to bind any inbound sockets") {
		t.Errorf("rsync's log lacks the bind failure:\n%s", rd.LogText(t))
	}

	// With ip_nonlocal_bind=1 the standalone daemon listens on 0.0.0.1.
	run("sysctl", "-q", "-w", "net.ipv4.ip_nonlocal_bind=1")
	cmd, _ = daemon()
	startBg(t, cmd)
	if !waitFor(func() bool { return strings.Contains(run("ss", "-Htln"), "0.0.0.1:"+port) }, 5*time.Second) {
		t.Fatalf("ip_nonlocal_bind=1: rsync does not listen on 0.0.0.1:%s\n%s", port, rd.LogText(t))
	}
	// ... and nobody reaches it: not from the host itself.
	c, code := runCmd(t, 20*time.Second, nil, ipCmd, "netns", "exec", ns, "timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/0.0.0.1/"+port+" && echo connected")
	if code == 0 || strings.Contains(c, "connected") {
		t.Errorf("a local connect to 0.0.0.1:%s reached rsync: %s", port, c)
	}
	recordSecurity(t, "6 --address=0.0.0.1 guard (TestSecurityUnbindableAddressNonlocalBind)",
		"rsync --daemon --address=0.0.0.1 on its standalone path, in a namespace with a default route, ip_nonlocal_bind 0 then 1",
		"0: exit 10, unable to bind; 1: listens on 0.0.0.1 but a local connect is routed away and never reaches it", start)
}
