package tests

import (
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const peerRe = `tls handshake with 127\.0\.0\.1:\d+: `

// TestClientCertRefusals hands each bad client to serve exactly as inetd
// does and checks the three things a refusal must do: one log line naming
// the peer, the certificate and the rule; exit status 1; a TLS alert at the
// client. rsync (behind a wrapper that records every start) is never
// started.
func TestClientCertRefusals(t *testing.T) {
	p := newPKI(t)
	other := newNamedPKI(t, "Other Test CA")
	rd := newRsyncd(t)
	if err := os.WriteFile(filepath.Join(rd.Data, "secret.txt"), []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wrapper, starts := rsyncWrapper(t)

	good := p.IssueClient(t, "host-a", ClientOpts{CN: "host-a"})
	foreign := other.IssueClient(t, "foreign", ClientOpts{CN: "host-a"})
	expired := p.IssueClient(t, "expired", ClientOpts{CN: "old-host", NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	future := p.IssueClient(t, "future", ClientOpts{CN: "new-host", NotBefore: time.Now().Add(24 * time.Hour), NotAfter: time.Now().Add(72 * time.Hour)})
	revoked := p.IssueClient(t, "revoked", ClientOpts{CN: "lost-laptop", Serial: 0x5eed})
	crl := p.WriteCRL(t, "revoked.crl", time.Now().Add(24*time.Hour), big.NewInt(0x5eed))
	staleCRL := p.WriteCRL(t, "stale.crl", time.Now().Add(-time.Hour))
	long := strings.Repeat("x", 300)
	odd := map[string]clientCert{
		"dotdot":  p.IssueClient(t, "dotdot", ClientOpts{CN: "../../etc"}),
		"subst":   p.IssueClient(t, "subst", ClientOpts{CN: "$(id)"}),
		"newline": p.IssueClient(t, "newline", ClientOpts{CN: "host-a\nrsync-ssl-shim[1]: forged"}),
		"long":    p.IssueClient(t, "long", ClientOpts{CN: long}),
	}
	var none clientCert
	ca := []string{"--client-ca", p.CA}

	tests := []struct {
		name   string
		flags  []string
		cert   clientCert
		log    string // after "tls handshake with PEER: "
		client string // in the client's output: the alert it got
	}{
		{"no-certificate", ca, none,
			`client sent no certificate; --client-auth require needs one$`, "alert certificate required"},
		{"other-ca", ca, foreign,
			`client certificate CN=host-a serial=` + serialHex(foreign.X509) + ` refused: issued by CN=Other Test CA, which is not in --client-ca$`, "alert bad certificate"},
		// optional admits a client without a certificate, not one
		// whose certificate fails.
		{"optional-other-ca", append([]string{"--client-auth", "optional"}, ca...), foreign,
			`client certificate CN=host-a serial=` + serialHex(foreign.X509) + ` refused: issued by CN=Other Test CA, which is not in --client-ca$`, "alert bad certificate"},
		{"expired", ca, expired,
			`client certificate CN=old-host serial=` + serialHex(expired.X509) + ` refused: expired ` + regexp.QuoteMeta(expired.X509.NotAfter.UTC().Format(time.RFC3339)) + `$`, "alert bad certificate"},
		{"not-yet-valid", ca, future,
			`client certificate CN=new-host serial=` + serialHex(future.X509) + ` refused: not valid before ` + regexp.QuoteMeta(future.X509.NotBefore.UTC().Format(time.RFC3339)) + `$`, "alert bad certificate"},
		{"revoked", append([]string{"--crl", crl}, ca...), revoked,
			`client certificate CN=lost-laptop serial=5EED refused: revoked \S+ \(--crl ` + regexp.QuoteMeta(crl) + `\)$`, "alert bad certificate"},
		{"stale-crl-strict", append([]string{"--crl", staleCRL, "--crl-strict"}, ca...), good,
			`client certificate CN=host-a serial=` + serialHex(good.X509) + ` refused: --crl ` + regexp.QuoteMeta(staleCRL) + ` is past its next update \S+ and --crl-strict is set$`, "alert bad certificate"},
		{"wrong-cn", append([]string{"--allow-cn", "host-b", "--allow-cn", "host-c"}, ca...), good,
			`client certificate CN=host-a serial=` + serialHex(good.X509) + ` refused: not in --allow-cn$`, "alert bad certificate"},
		{"cn-dotdot", append([]string{"--allow-cn", "host-a"}, ca...), odd["dotdot"],
			`client certificate CN=\.\./\.\./etc serial=\S+ refused: not in --allow-cn$`, "alert bad certificate"},
		{"cn-subst", append([]string{"--allow-cn", "host-a"}, ca...), odd["subst"],
			`client certificate CN=\$\(id\) serial=\S+ refused: not in --allow-cn$`, "alert bad certificate"},
		// The newline is escaped in the DN (RFC 2253's \0A): the CN
		// cannot forge a second log line.
		{"cn-newline", append([]string{"--allow-cn", "host-a"}, ca...), odd["newline"],
			`client certificate CN=host-a\\0Arsync-ssl-shim\[1\]: forged serial=\S+ refused: not in --allow-cn$`, "alert bad certificate"},
		{"cn-300-bytes", append([]string{"--allow-cn", "host-a"}, ca...), odd["long"],
			`client certificate "CN=x{157}"\.\.\.\(303 bytes\) serial=\S+ refused: not in --allow-cn$`, "alert bad certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := serveArgs(p, rd, wrapper, append([]string{"--proxy-protocol", "hosts"}, tc.flags...)...)
			dst := t.TempDir()
			res := runInetd(t, args, sslPull(p, tc.cert, dst))
			t.Logf("serve exit %d; log: %s\nclient: %s", res.code, strings.TrimSpace(res.log), strings.TrimSpace(res.client))
			if res.code != 1 {
				t.Errorf("serve exit %d, want 1", res.code)
			}
			if lines := logLines(res.log); len(lines) != 1 {
				t.Errorf("want one log line, got %d:\n%s", len(lines), res.log)
			}
			wantLog(t, res.log, peerRe+tc.log)
			if !strings.Contains(res.client, tc.client) {
				t.Errorf("client output lacks %q:\n%s", tc.client, res.client)
			}
			if strings.HasPrefix(res.client, "exit 0\n") {
				t.Errorf("client succeeded:\n%s", res.client)
			}
			if _, err := os.Stat(filepath.Join(dst, "secret.txt")); err == nil {
				t.Error("a refused client received a file")
			}
			if n := countStarts(t, starts); n != 0 {
				t.Fatalf("rsync was started %d times for a refused client", n)
			}
		})
	}
}

// TestClientCertAdmitted covers clients that get through: a good
// certificate with stock rsync-ssl, optional without a certificate, a stale
// CRL without --crl-strict, and the odd CNs with no allow-list (admitted,
// their values left out of rsync's environment). A pre-xfer exec hook
// writes the environment rsync's hooks see to a file.
func TestClientCertAdmitted(t *testing.T) {
	p := newPKI(t)
	rsync := rsyncPath(t)
	hook, envFile := envDumper(t)
	rd := newRsyncd(t, hook)
	if err := os.WriteFile(filepath.Join(rd.Data, "hello.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := p.IssueClient(t, "host-a", ClientOpts{CN: "host-a", DNS: []string{"host-a.example.org", "host-a"},
		URIs: []string{"urn:example:host-a", "spiffe://example.org/host/a"}})
	staleCRL := p.WriteCRL(t, "stale.crl", time.Now().Add(-time.Hour))
	var none clientCert

	pull := func(t *testing.T, flags []string, cert clientCert) serveOneResult {
		t.Helper()
		os.Remove(envFile)
		dst := t.TempDir()
		res := runInetd(t, serveArgs(p, rd, rsync, flags...), sslPull(p, cert, dst))
		if res.code != 0 || !strings.HasPrefix(res.client, "exit 0\n") {
			t.Fatalf("serve exit %d, client:\n%s\nlog:\n%s", res.code, res.client, res.log)
		}
		if b, err := os.ReadFile(filepath.Join(dst, "hello.txt")); err != nil || string(b) != "hello\n" {
			t.Fatalf("hello.txt not delivered: %v", err)
		}
		return res
	}

	t.Run("good-certificate", func(t *testing.T) {
		res := pull(t, []string{"--client-ca", p.CA, "--allow-cn", "host-a"}, good)
		env := readEnv(t, envFile)
		c := good.X509
		want := map[string]string{
			"SSL_CLIENT_VERIFY":      "SUCCESS",
			"SSL_CLIENT_S_DN":        "CN=host-a",
			"SSL_CLIENT_S_DN_CN":     "host-a",
			"SSL_CLIENT_I_DN":        "CN=rsync-ssl-shim test CA",
			"SSL_CLIENT_M_SERIAL":    serialHex(c),
			"SSL_CLIENT_V_START":     c.NotBefore.UTC().Format("Jan _2 15:04:05 2006 GMT"),
			"SSL_CLIENT_V_END":       c.NotAfter.UTC().Format("Jan _2 15:04:05 2006 GMT"),
			"SSL_CLIENT_SAN_DNS_0":   "host-a.example.org",
			"SSL_CLIENT_SAN_DNS_1":   "host-a",
			"SSL_CLIENT_SAN_URI_0":   "urn:example:host-a",
			"SSL_CLIENT_CERT_SHA256": sha256Hex(c.Raw),
			"SSL_PROTOCOL":           "TLSv1.3",
			"TCPREMOTEIP":            "127.0.0.1",
		}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("%s=%q, want %q", k, env[k], v)
			}
		}
		if v, ok := env["SSL_CLIENT_SAN_URI_1"]; ok {
			t.Errorf("SSL_CLIENT_SAN_URI_1=%q: a URI with / must be left out", v)
		}
		wantLog(t, res.log, `127\.0\.0\.1:\d+: SSL_CLIENT_SAN_URI_1 left out of rsync's environment`)
		wantLog(t, res.log, `127\.0\.0\.1:\d+: served sni=localhost tls=TLSv1\.3 cipher=\S+ client=host-a module=data (?:\S+ )*rsync_exit=0 `)
		if n := len(logLines(res.log)); n != 2 {
			t.Errorf("want 2 log lines (the left-out URI, the summary), got %d:\n%s", n, res.log)
		}
	})

	t.Run("optional-without-certificate", func(t *testing.T) {
		res := pull(t, []string{"--client-ca", p.CA, "--client-auth", "optional", "--allow-cn", "host-a"}, none)
		env := readEnv(t, envFile)
		if env["SSL_CLIENT_VERIFY"] != "NONE" {
			t.Errorf("SSL_CLIENT_VERIFY=%q, want NONE", env["SSL_CLIENT_VERIFY"])
		}
		if s := sslVars(env); s != "SSL_CLIENT_VERIFY=NONE" {
			t.Errorf("client variables beyond SSL_CLIENT_VERIFY:\n%s", s)
		}
		wantLog(t, res.log, `127\.0\.0\.1:\d+: served .* client=- module=data (?:\S+ )*rsync_exit=0 `)
	})

	t.Run("optional-with-certificate", func(t *testing.T) {
		pull(t, []string{"--client-ca", p.CA, "--client-auth", "optional"}, good)
		if v := readEnv(t, envFile)["SSL_CLIENT_VERIFY"]; v != "SUCCESS" {
			t.Errorf("SSL_CLIENT_VERIFY=%q, want SUCCESS", v)
		}
	})

	t.Run("stale-crl-warns", func(t *testing.T) {
		res := pull(t, []string{"--client-ca", p.CA, "--crl", staleCRL}, good)
		wantLog(t, res.log, `127\.0\.0\.1:\d+: warning: --crl `+regexp.QuoteMeta(staleCRL)+` is past its next update \S+; revocations since then are unknown`)
		wantLog(t, res.log, `127\.0\.0\.1:\d+: served .* client=host-a `)
	})

	// With no allow-list any certificate the CA signed is admitted; a CN
	// outside the safe set is left out (and logged), never mangled, and
	// the summary says client=-.
	for name, cn := range map[string]string{
		"cn-dotdot":    "../../etc",
		"cn-subst":     "$(id)",
		"cn-newline":   "host-a\nforged",
		"cn-300-bytes": strings.Repeat("y", 300),
	} {
		t.Run(name, func(t *testing.T) {
			c := p.IssueClient(t, name, ClientOpts{CN: cn})
			res := pull(t, []string{"--client-ca", p.CA}, c)
			env := readEnv(t, envFile)
			if env["SSL_CLIENT_VERIFY"] != "SUCCESS" || env["SSL_CLIENT_M_SERIAL"] != serialHex(c.X509) {
				t.Errorf("client variables:\n%s", sslVars(env))
			}
			for _, k := range []string{"SSL_CLIENT_S_DN", "SSL_CLIENT_S_DN_CN"} {
				if v, ok := env[k]; ok {
					t.Errorf("%s=%q exported", k, v)
				}
				wantLog(t, res.log, `127\.0\.0\.1:\d+: `+k+` left out of rsync's environment`)
			}
			wantLog(t, res.log, `127\.0\.0\.1:\d+: served .* client=- module=data (?:\S+ )*rsync_exit=0 `)
			if n := len(logLines(res.log)); n != 3 {
				t.Errorf("want 3 log lines, got %d:\n%s", n, res.log)
			}
		})
	}
}

// TestClientCertUsage checks that flags which cannot work together stop
// serve with status 2 and a message naming the fix, before any connection.
func TestClientCertUsage(t *testing.T) {
	p := newPKI(t)
	rd := newRsyncd(t)
	rsync := rsyncPath(t)
	for _, tc := range []struct {
		flags []string
		want  string
		code  int
	}{
		{[]string{"--client-auth", "require"}, "--client-auth require needs --client-ca FILE", 2},
		{[]string{"--client-auth", "optional"}, "--client-auth optional needs --client-ca FILE", 2},
		{[]string{"--client-auth", "maybe", "--client-ca", p.CA}, `--client-auth "maybe": give none, optional or require`, 2},
		{[]string{"--allow-cn", "host-a"}, "--client-auth none asks for no client certificate, so --allow-cn would do nothing", 2},
		{[]string{"--allow-spki", "sha256:abc"}, `--allow-spki: pin "sha256:abc": want sha256: followed by 44 base64 characters`, 2},
		{[]string{"--client-ca", p.CA, "--crl-strict"}, "--crl-strict needs --crl FILE", 2},
		{[]string{"--client-ca", filepath.Join(p.Dir, "missing.pem")}, "--client-ca: open ", 1},
		{[]string{"--client-ca", p.CA, "--crl", p.CA}, "--crl " + p.CA + ": not a CRL", 1},
	} {
		out, code := runCmd(t, 30*time.Second, nil, shimBin, serveArgs(p, rd, rsync, tc.flags...)...)
		if code != tc.code || !strings.Contains(out, "serve: "+tc.want) {
			t.Errorf("%v: exit %d, want %d with %q:\n%s", tc.flags, code, tc.code, tc.want, out)
		}
	}
}

// TestClientCertConnect: our own connect command with a good certificate.
func TestClientCertConnect(t *testing.T) {
	shimConnects(t)
	p := newPKI(t)
	rsync := rsyncPath(t)
	rd := newRsyncd(t)
	if err := os.WriteFile(filepath.Join(rd.Data, "hello.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := p.IssueClient(t, "host-a", ClientOpts{CN: "host-a"})
	dst := t.TempDir()
	res := runInetd(t, serveArgs(p, rd, rsync, "--client-ca", p.CA, "--allow-cn", "host-a"), func(t *testing.T, addr string) string {
		_, port, _ := strings.Cut(addr, ":")
		env := []string{"RSYNC_SSL_CA_CERT=" + p.CA, "RSYNC_SSL_PORT=" + port, "RSYNC_PORT=0",
			"RSYNC_SSL_CERT=" + good.Cert, "RSYNC_SSL_KEY=" + good.Key}
		out, code := runCmd(t, time.Minute, env, rsync, "--rsh="+shimBin+" connect", "-a", "localhost::data/", dst+"/")
		return "exit " + strconv.Itoa(code) + "\n" + out
	})
	if res.code != 0 || !strings.HasPrefix(res.client, "exit 0\n") {
		t.Fatalf("serve exit %d, client:\n%s\nlog:\n%s", res.code, res.client, res.log)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "hello.txt")); err != nil || string(b) != "hello\n" {
		t.Fatalf("hello.txt not delivered: %v", err)
	}
	wantLog(t, res.log, `127\.0\.0\.1:\d+: served .* client=host-a module=data (?:\S+ )*rsync_exit=0 `)
}

// TestClientCertTLS12 repeats two refusals with openssl s_client held to
// TLS 1.2, where the client certificate is checked before the client's
// Finished: the alert arrives during the handshake, not on the first read.
func TestClientCertTLS12(t *testing.T) {
	openssl := needTool(t, "openssl")
	p := newPKI(t)
	rd := newRsyncd(t)
	wrapper, starts := rsyncWrapper(t)
	good := p.IssueClient(t, "host-a", ClientOpts{CN: "host-a"})
	for _, tc := range []struct {
		name, log, alert string
		cert             clientCert
	}{
		{"no-certificate", `client sent no certificate; --client-auth require needs one$`, "alert handshake failure", clientCert{}},
		{"wrong-cn", `client certificate CN=host-a serial=` + serialHex(good.X509) + ` refused: not in --allow-cn$`, "alert bad certificate", good},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := serveArgs(p, rd, wrapper, "--proxy-protocol", "hosts", "--client-ca", p.CA, "--allow-cn", "host-b")
			res := runInetd(t, args, func(t *testing.T, addr string) string {
				a := []string{"s_client", "-connect", addr, "-tls1_2", "-servername", "localhost", "-CAfile", p.CA, "-verify_return_error"}
				if tc.cert.Cert != "" {
					a = append(a, "-cert", tc.cert.Cert, "-key", tc.cert.Key)
				}
				out, code := runCmd(t, 30*time.Second, nil, "sh", append([]string{"-c", "exec \"$0\" \"$@\" </dev/null", openssl}, a...)...)
				return "exit " + strconv.Itoa(code) + "\n" + out
			})
			if res.code != 1 {
				t.Errorf("serve exit %d, want 1", res.code)
			}
			wantLog(t, res.log, peerRe+tc.log)
			if !strings.Contains(res.client, tc.alert) || strings.Contains(res.client, "Verify return code: 0 (ok)\n---\nDONE") {
				t.Errorf("s_client output lacks %q:\n%s", tc.alert, res.client)
			}
			if n := countStarts(t, starts); n != 0 {
				t.Fatalf("rsync was started %d times for a refused client", n)
			}
		})
	}
}

// TestClientCertCRLReload: a long-running listener picks up a reissued
// CRL by itself, so a certificate revoked after start is refused.
func TestClientCertCRLReload(t *testing.T) {
	slowTier(t, "reload and idle timing")
	p := newPKI(t)
	rsync := rsyncPath(t)
	rd := newRsyncd(t)
	if err := os.WriteFile(filepath.Join(rd.Data, "hello.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := p.IssueClient(t, "laptop", ClientOpts{CN: "laptop", Serial: 0x77})
	crl := p.WriteCRL(t, "clients.crl", time.Now().Add(24*time.Hour))
	s := startServeListening(t, serveArgs(p, rd, rsync, "--client-ca", p.CA, "--crl", crl))
	if out, code := sslClient(t, p, s.addr(), c, "localhost::data/hello.txt", t.TempDir()+"/"); code != 0 {
		t.Fatalf("before revocation: exit %d\n%s\n%s", code, out, s.Log)
	}
	p.WriteCRL(t, "clients.crl", time.Now().Add(24*time.Hour), big.NewInt(0x77))
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, code := sslClient(t, p, s.addr(), c, "localhost::data/hello.txt", t.TempDir()+"/")
		if code != 0 && strings.Contains(out, "alert bad certificate") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still admitted 15s after the CRL revoked it:\n%s", s.Log)
		}
		time.Sleep(500 * time.Millisecond)
	}
	wantLog(t, s.Log.String(), `reloaded certificates \(changed files\): `)
	wantLog(t, s.Log.String(), peerRe+`client certificate CN=laptop serial=77 refused: revoked \S+ \(--crl `+regexp.QuoteMeta(crl)+`\)$`)
}
