package tests

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Every failure class of "connect" is one line that names the hop, the
// peer and the fix; these tests pin the wording users and scripts see.

func helperArgs(host string) []string {
	return []string{"connect", host, "rsync", "--server", "--daemon", "."}
}

// expectFail runs connect and checks exit status 1 and every wanted piece
// of its one-line message.
func expectFail(t *testing.T, env []string, args []string, want ...string) string {
	t.Helper()
	out, code := runCmd(t, 30*time.Second, env, shimBin, args...)
	if code != 1 {
		t.Fatalf("exit %d, want 1; output:\n%s", code, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if lines := strings.Count(strings.TrimSpace(out), "\n") + 1; lines != 1 {
		t.Errorf("want one line, got %d:\n%s", lines, out)
	}
	return out
}

func pinOfFile(t *testing.T, certFile string) string {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return "sha256:" + base64.StdEncoding.EncodeToString(sum[:])
}

func TestClientCertificateErrors(t *testing.T) {
	pki := newPKI(t)
	other := newPKI(t)
	now := time.Now()
	wrongCert, wrongKey := pki.Issue(t, "wrong", CertOpts{CN: "other.example", DNS: []string{"other.example"}})
	oldCert, oldKey := pki.Issue(t, "old", CertOpts{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"},
		NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	newCert, newKey := pki.Issue(t, "new", CertOpts{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"},
		NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(72 * time.Hour)})
	v4Cert, v4Key := pki.Issue(t, "v4only", CertOpts{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}})

	badPin := "sha256:" + base64.StdEncoding.EncodeToString(make([]byte, 32))
	cases := []struct {
		name       string
		cert, key  string
		listen     string
		env        []string
		host       string
		extraFlags []string
		want       []string
	}{
		{name: "unknown CA", cert: pki.Cert, key: pki.Key, listen: "127.0.0.1", host: "127.0.0.1",
			env:  []string{"RSYNC_SSL_CA_CERT=" + other.CA},
			want: []string{"rsync-ssl-shim connect: tls handshake with 127.0.0.1:", "certificate signed by unknown authority", other.CA + " did not sign it"}},
		{name: "unknown CA system roots", cert: pki.Cert, key: pki.Key, listen: "127.0.0.1", host: "127.0.0.1",
			want: []string{"tls handshake with 127.0.0.1:", "certificate signed by unknown authority", "pass --ca FILE or set RSYNC_SSL_CA_CERT"}},
		{name: "wrong name", cert: wrongCert, key: wrongKey, listen: "127.0.0.1", host: "127.0.0.1",
			env:  []string{"RSYNC_SSL_CA_CERT=" + pki.CA},
			want: []string{"tls handshake with 127.0.0.1:", "certificate is for other.example, not 127.0.0.1", "--servername NAME", "RSYNC_SSL_SKIP_HOSTNAME_CHECK=1"}},
		{name: "wrong name via localhost", cert: wrongCert, key: wrongKey, listen: "127.0.0.1", host: "localhost",
			env:  []string{"RSYNC_SSL_CA_CERT=" + pki.CA},
			want: []string{"tls handshake with localhost:", "(127.0.0.1)", "certificate is for other.example, not localhost"}},
		{name: "expired", cert: oldCert, key: oldKey, listen: "127.0.0.1", host: "127.0.0.1",
			env: []string{"RSYNC_SSL_CA_CERT=" + pki.CA},
			want: []string{"tls handshake with 127.0.0.1:", "certificate expired " + now.Add(-24*time.Hour).UTC().Format("2006-01-02"),
				"valid " + now.Add(-72*time.Hour).UTC().Format("2006-01-02"), "renew"}},
		{name: "not yet valid", cert: newCert, key: newKey, listen: "127.0.0.1", host: "127.0.0.1",
			env:  []string{"RSYNC_SSL_CA_CERT=" + pki.CA},
			want: []string{"tls handshake with 127.0.0.1:", "certificate not valid until " + now.Add(24*time.Hour).UTC().Format("2006-01-02"), "clock"}},
		{name: "pin mismatch", cert: pki.Cert, key: pki.Key, listen: "127.0.0.1", host: "127.0.0.1",
			extraFlags: []string{"--pin", badPin},
			want:       []string{"tls handshake with 127.0.0.1:", "server key " + pinOfFile(t, pki.Cert) + " does not match the pin " + badPin}},
		{name: "IPv6 literal not in certificate", cert: v4Cert, key: v4Key, listen: "::1", host: "::1",
			env:  []string{"RSYNC_SSL_CA_CERT=" + pki.CA},
			want: []string{"tls handshake with [::1]:", "certificate is for localhost, 127.0.0.1, not ::1"}},
		{name: "IPv6 bracketed unknown CA", cert: pki.Cert, key: pki.Key, listen: "::1", host: "[::1]",
			env:  []string{"RSYNC_SSL_CA_CERT=" + other.CA},
			want: []string{"tls handshake with [::1]:", "certificate signed by unknown authority"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rd := newClientRsyncd(t)
			port := startStunnelRsync(t, tc.cert, tc.key, rd, tc.listen)
			args := append([]string{"connect", "--port", strconv.Itoa(port)}, tc.extraFlags...)
			args = append(args, tc.host, "rsync", "--server", "--daemon", ".")
			expectFail(t, tc.env, args, tc.want...)
			if log := rd.LogText(t); strings.Contains(log, "rsync on") || strings.Contains(log, "building file list") {
				t.Errorf("a refused server still served rsync:\n%s", log)
			}
		})
	}
}

// The policy switches that make a refused certificate acceptable, each
// through a real transfer (a module listing).
func TestClientVerificationOptions(t *testing.T) {
	pki := newPKI(t)
	wrongCert, wrongKey := pki.Issue(t, "wrong", CertOpts{CN: "other.example", DNS: []string{"other.example"}})
	rd := newClientRsyncd(t)
	port := startStunnelRsync(t, pki.Cert, pki.Key, rd, "127.0.0.1")
	wrongPort := startStunnelRsync(t, wrongCert, wrongKey, newClientRsyncd(t), "127.0.0.1")
	pin := pinOfFile(t, pki.Cert)
	list := func(port int) []string {
		return []string{"rsync", fmt.Sprintf("rsync://127.0.0.1:%d/", port)}
	}
	cases := []struct {
		name     string
		env      []string
		args     []string
		wantWarn bool
	}{
		{"CA file", []string{"RSYNC_SSL_CA_CERT=" + pki.CA}, list(port), false},
		{"empty CA means no verification", []string{"RSYNC_SSL_CA_CERT="}, list(port), true},
		{"skip hostname check", []string{"RSYNC_SSL_CA_CERT=" + pki.CA, "RSYNC_SSL_SKIP_HOSTNAME_CHECK=1"}, list(wrongPort), false},
		{"servername", nil, []string{"rsync", "--rsh=" + shimBin + " connect --ca " + pki.CA + " --servername other.example",
			fmt.Sprintf("rsync://127.0.0.1:%d/", wrongPort)}, false},
		{"pin alone", nil, []string{"rsync", "--rsh=" + shimBin + " connect --pin " + pin, fmt.Sprintf("rsync://127.0.0.1:%d/", port)}, false},
		{"pin and CA", []string{"RSYNC_SSL_CA_CERT=" + pki.CA}, []string{"rsync", "--rsh=" + shimBin + " connect --pin " + pin,
			fmt.Sprintf("rsync://127.0.0.1:%d/", port)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out string
			var code int
			if tc.args[0] == "rsync" && strings.HasPrefix(tc.args[1], "--rsh=") {
				out, code = runCmd(t, 30*time.Second, tc.env, needTool(t, "rsync"), tc.args[1:]...)
			} else {
				out, code = runCmd(t, 30*time.Second, tc.env, shimBin, tc.args...)
			}
			if code != 0 || !strings.Contains(out, "data") || !strings.Contains(out, "up") {
				t.Fatalf("listing failed (exit %d):\n%s", code, out)
			}
			if got := strings.Contains(out, "warning: RSYNC_SSL_CA_CERT is set but empty: the server at 127.0.0.1 is not verified"); got != tc.wantWarn {
				t.Errorf("warning shown: %v, want %v:\n%s", got, tc.wantWarn, out)
			}
		})
	}
}

func TestClientConnectionErrors(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		port := freePort(t, "127.0.0.1")
		expectFail(t, nil, append([]string{"connect", "--port", strconv.Itoa(port)}, helperArgs("127.0.0.1")[1:]...),
			fmt.Sprintf("rsync-ssl-shim connect: tcp connect to 127.0.0.1:%d: connection refused (nothing listens on port %d", port, port))
	})
	t.Run("refused IPv6", func(t *testing.T) {
		port := freePort(t, "::1")
		expectFail(t, []string{fmt.Sprintf("RSYNC_SSL_PORT=%d", port)}, helperArgs("::1"),
			fmt.Sprintf("tcp connect to [::1]:%d: connection refused", port))
	})
	t.Run("unresolvable", func(t *testing.T) {
		expectFail(t, nil, helperArgs("no-such-host.invalid"),
			"rsync-ssl-shim connect: resolve no-such-host.invalid: no such host (check the host name")
	})
	t.Run("plain rsync daemon", func(t *testing.T) {
		port := startPlainRsyncd(t, newClientRsyncd(t))
		expectFail(t, []string{fmt.Sprintf("RSYNC_PORT=%d", port)}, helperArgs("127.0.0.1"),
			fmt.Sprintf("tls handshake with 127.0.0.1:%d: 127.0.0.1:%d speaks plain rsync, not TLS", port, port))
	})
	t.Run("TLS peer that is not rsync", func(t *testing.T) {
		socat := needTool(t, "socat")
		pki := newPKI(t)
		port := freePort(t, "127.0.0.1")
		out := startBg(t, exec.Command(socat, fmt.Sprintf("OPENSSL-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork,cert=%s,key=%s,verify=0", port, pki.Cert, pki.Key),
			"SYSTEM:echo HTTP/1.0 200 hello"))
		waitPortOr(t, fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second, out)
		expectFail(t, []string{"RSYNC_SSL_CA_CERT=" + pki.CA, fmt.Sprintf("RSYNC_SSL_PORT=%d", port)}, helperArgs("127.0.0.1"),
			fmt.Sprintf(`rsync greeting from 127.0.0.1:%d: the TLS server is not an rsync daemon: it sent "HTTP/1.`, port))
	})
	t.Run("TLS peer that never greets", func(t *testing.T) {
		slowTier(t, "timeout")
		openssl := needTool(t, "openssl")
		pki := newPKI(t)
		port := freePort(t, "127.0.0.1")
		out := startBg(t, exec.Command(openssl, "s_server", "-quiet", "-www", "-accept", fmt.Sprintf("127.0.0.1:%d", port), "-cert", pki.Cert, "-key", pki.Key))
		waitPortOr(t, fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second, out)
		// s_server -www waits for an HTTP request and rsync waits for the
		// daemon to greet first, so nothing comes; --connect-timeout bounds
		// the wait. Through rsync, because stdin must stay open.
		rsh := shimBin + " connect --connect-timeout 2s --port " + strconv.Itoa(port)
		got, code := runCmd(t, 30*time.Second, []string{"RSYNC_SSL_CA_CERT=" + pki.CA}, needTool(t, "rsync"),
			"--rsh="+rsh, "rsync://127.0.0.1/")
		want := fmt.Sprintf("rsync-ssl-shim connect: rsync greeting from 127.0.0.1:%d: no rsync greeting within 2s", port)
		if code == 0 || !strings.Contains(got, want) {
			t.Fatalf("exit %d, want the line %q:\n%s", code, want, got)
		}
	})
}

// The helper's message reaches the user through rsync.
func TestClientErrorThroughRsync(t *testing.T) {
	port := startPlainRsyncd(t, newClientRsyncd(t))
	out, code := shim(t, nil, "rsync", fmt.Sprintf("rsyncs://127.0.0.1:%d/data/", port))
	if code == 0 || !strings.Contains(out, fmt.Sprintf("127.0.0.1:%d speaks plain rsync, not TLS", port)) {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestClientRsyncRefusesNonDaemonTarget(t *testing.T) {
	src := t.TempDir()
	out, code := shim(t, nil, "rsync", "-a", src+"/", "otherhost:/tmp/x/")
	if code != 2 || !strings.Contains(out, "you must use rsync-ssl-shim rsync with a daemon-style hostname") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	out, code = shim(t, nil, "rsync", "-e", "ssh", "host::mod")
	if code != 2 || !strings.Contains(out, "--rsh/-e cannot be combined") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// A server that demands a client certificate: RSYNC_SSL_CERT/RSYNC_SSL_KEY
// satisfy it, and without them the message says what is missing.
func TestClientCertificateAuth(t *testing.T) {
	pki := newPKI(t)
	clientCert, clientKey := pki.Issue(t, "client", CertOpts{CN: "backup-client", Client: true})
	rd := newClientRsyncd(t)
	port := startStunnelRsync(t, pki.Cert, pki.Key, rd, "127.0.0.1", "verifyChain = yes", "CAfile = "+pki.CA, "requireCert = yes")
	url := fmt.Sprintf("rsync://127.0.0.1:%d/", port)
	out, code := shim(t, []string{"RSYNC_SSL_CA_CERT=" + pki.CA, "RSYNC_SSL_CERT=" + clientCert, "RSYNC_SSL_KEY=" + clientKey}, "rsync", url)
	if code != 0 || !strings.Contains(out, "data") {
		t.Fatalf("with a client certificate: exit %d:\n%s", code, out)
	}
	out, code = shim(t, []string{"RSYNC_SSL_CA_CERT=" + pki.CA}, "rsync", url)
	if code == 0 || !strings.Contains(out, "rsync-ssl-shim connect: ") || !strings.Contains(out, "RSYNC_SSL_CERT/RSYNC_SSL_KEY") {
		t.Fatalf("without a client certificate: exit %d:\n%s", code, out)
	}
}
