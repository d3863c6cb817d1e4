package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The client-certificate recipes of docs/client-certificates.md,
// each run as written against a server started by systemd-socket-activate.

// rsyncdConf writes an rsyncd.conf with the test's globals and the given
// modules.
func rsyncdConf(t *testing.T, modules string) *Rsyncd {
	t.Helper()
	dir := t.TempDir()
	rd := &Rsyncd{Conf: filepath.Join(dir, "rsyncd.conf"), Log: filepath.Join(dir, "rsyncd.log")}
	writeFile(t, rd.Conf, fmt.Sprintf("log file = %s\nuse chroot = no\nuid = %d\ngid = %d\n\n%s",
		rd.Log, os.Getuid(), os.Getgid(), modules), 0o644)
	return rd
}

func (s *server) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// Recipe 1: one module, each host in its own tree.
func TestRecipePerHostModule(t *testing.T) {
	slowTier(t, "recipe")
	p := newPKI(t)
	rsync := rsyncPath(t)
	base := t.TempDir()
	for _, h := range []string{"host-a", "host-b"} {
		writeFile(t, filepath.Join(base, h, "whoami.txt"), h+"\n", 0o644)
	}
	rd := rsyncdConf(t, fmt.Sprintf(`[backup]
path = %s/%%SSL_CLIENT_S_DN_CN%%
read only = no
`, base))
	s := startMode(t, "inetd", serveArgs(p, rd, rsync, "--client-ca", p.CA))
	a := p.IssueClient(t, "host-a", ClientOpts{CN: "host-a"})
	b := p.IssueClient(t, "host-b", ClientOpts{CN: "host-b"})

	// host-a pushes; its files land in its own tree only.
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, 0, 50)
	if out, code := sslClient(t, p, s.addr(), a, "-a", src+"/", "localhost::backup/"); code != 0 {
		t.Fatalf("host-a push: exit %d\n%s\n%s", code, out, s.Log)
	}
	if _, err := os.Stat(filepath.Join(base, "host-a", "small")); err != nil {
		t.Fatalf("host-a's push is not in host-a's tree: %v", err)
	}
	if _, err := os.Stat(filepath.Join(base, "host-b", "small")); err == nil {
		t.Fatal("host-a's push reached host-b's tree")
	}

	// Each host pulls and sees only its own tree; host-a asking for
	// "../host-b" gets nothing (rsync strips the ".." and looks for
	// host-b inside host-a's tree).
	for _, tc := range []struct {
		cert clientCert
		path string
		want string
	}{
		{a, "localhost::backup/whoami.txt", "host-a\n"},
		{b, "localhost::backup/whoami.txt", "host-b\n"},
		{a, "localhost::backup/../host-b/whoami.txt", ""},
	} {
		dst := t.TempDir()
		out, code := sslClient(t, p, s.addr(), tc.cert, tc.path, dst+"/")
		got, _ := os.ReadFile(filepath.Join(dst, "whoami.txt"))
		if (code == 0) != (tc.want != "") || string(got) != tc.want {
			t.Errorf("%s as %s: exit %d, got %q, want %q\n%s", tc.path, tc.cert.X509.Subject.CommonName, code, got, tc.want, out)
		}
	}

	// A CN that is no safe path component is left out of the environment,
	// so rsync keeps %SSL_CLIENT_S_DN_CN% literally, finds no such
	// directory, and refuses the module: nobody lands in base itself.
	evil := p.IssueClient(t, "evil", ClientOpts{CN: "../../etc"})
	out, code := sslClient(t, p, s.addr(), evil, "-a", src+"/", "localhost::backup/")
	if code == 0 || !strings.Contains(out, "chdir failed") {
		t.Errorf("push with CN ../../etc: exit %d, want rsync's chdir refusal\n%s", code, out)
	}
	entries, _ := os.ReadDir(base)
	if len(entries) != 2 {
		t.Errorf("base holds %d entries after the refused push, want 2 (host-a, host-b)", len(entries))
	}
	wantLog(t, s.Log.String(), `127\.0\.0\.1:\d+: SSL_CLIENT_S_DN_CN left out of rsync's environment`)
}

// authorizeHook is recipe 2's hook, byte for byte as
// docs/client-certificates.md shows it (TestRecipeDocs checks that).
const authorizeHook = `#!/bin/sh
# rsync runs this before every transfer (pre-xfer exec); any exit status
# but 0 refuses the transfer. Only a verified client certificate counts.
[ "$SSL_CLIENT_VERIFY" = SUCCESS ] || exit 1
case "$RSYNC_MODULE_NAME:$SSL_CLIENT_S_DN_CN" in
projects:host-a | projects:host-b) exit 0 ;;
public:?*) exit 0 ;;
esac
echo "$SSL_CLIENT_S_DN_CN may not use $RSYNC_MODULE_NAME"
exit 1
`

// Recipe 2: which host may use which module, decided by rsync's own
// pre-xfer exec.
func TestRecipePerModuleAuthorization(t *testing.T) {
	slowTier(t, "recipe")
	p := newPKI(t)
	rsync := rsyncPath(t)
	dir := t.TempDir()
	hook := filepath.Join(dir, "authorize")
	writeFile(t, hook, authorizeHook, 0o755)
	for _, m := range []string{"projects", "public"} {
		writeFile(t, filepath.Join(dir, m, "file.txt"), m+"\n", 0o644)
	}
	rd := rsyncdConf(t, fmt.Sprintf(`[projects]
path = %[1]s/projects
pre-xfer exec = %[2]s

[public]
path = %[1]s/public
pre-xfer exec = %[2]s
`, dir, hook))
	s := startMode(t, "inetd", serveArgs(p, rd, rsync, "--client-ca", p.CA, "--client-auth", "optional"))
	a := p.IssueClient(t, "host-a", ClientOpts{CN: "host-a"})
	c := p.IssueClient(t, "host-c", ClientOpts{CN: "host-c"})
	var none clientCert

	for _, tc := range []struct {
		who    string
		cert   clientCert
		module string
		ok     bool
	}{
		{"host-a", a, "projects", true},
		{"host-a", a, "public", true},
		{"host-c", c, "projects", false},
		{"host-c", c, "public", true},
		{"no certificate", none, "public", false},
	} {
		dst := t.TempDir()
		out, code := sslClient(t, p, s.addr(), tc.cert, "localhost::"+tc.module+"/file.txt", dst+"/")
		_, err := os.Stat(filepath.Join(dst, "file.txt"))
		if tc.ok && (code != 0 || err != nil) {
			t.Errorf("%s on %s: exit %d, want success\n%s", tc.who, tc.module, code, out)
		}
		if !tc.ok && (code == 0 || err == nil || !strings.Contains(out, "pre-xfer exec returned failure")) {
			t.Errorf("%s on %s: exit %d, want the hook's refusal\n%s", tc.who, tc.module, code, out)
		}
	}
}

// Recipe 3: pin one client key, no CA at all. The client makes a
// self-signed certificate with openssl and the admin takes its pin with the
// documented pipeline.
func TestRecipePinnedKey(t *testing.T) {
	slowTier(t, "recipe")
	openssl := needTool(t, "openssl")
	p := newPKI(t)
	rsync := rsyncPath(t)
	dir := t.TempDir()
	mk := func(name string) (clientCert, string) {
		c := clientCert{Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+".key")}
		out, code := runCmd(t, 30*time.Second, nil, openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
			"-nodes", "-keyout", c.Key, "-out", c.Cert, "-days", "3650", "-subj", "/CN="+name)
		if code != 0 {
			t.Fatalf("openssl req: %s", out)
		}
		pin, code := runCmd(t, 30*time.Second, nil, "sh", "-c",
			"openssl x509 -in \"$0\" -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | base64", c.Cert)
		if code != 0 {
			t.Fatalf("pin pipeline: %s", pin)
		}
		return c, "sha256:" + strings.TrimSpace(pin)
	}
	laptop, pin := mk("laptop")
	stranger, strangerPin := mk("stranger")

	hook, envFile := envDumper(t)
	rd := newRsyncd(t, hook)
	writeFile(t, filepath.Join(rd.Data, "hello.txt"), "hello\n", 0o644)
	s := startMode(t, "inetd", serveArgs(p, rd, rsync, "--allow-spki", "laptop="+pin))

	dst := t.TempDir()
	if out, code := sslClient(t, p, s.addr(), laptop, "localhost::data/hello.txt", dst+"/"); code != 0 {
		t.Fatalf("pinned key: exit %d\n%s\n%s", code, out, s.Log)
	}
	env := readEnv(t, envFile)
	if env["SSL_CLIENT_VERIFY"] != "SUCCESS" || env["SSL_CLIENT_S_DN_CN"] != "laptop" {
		t.Errorf("pinned client's variables:\n%s", sslVars(env))
	}

	out, code := sslClient(t, p, s.addr(), stranger, "localhost::data/hello.txt", t.TempDir()+"/")
	if code == 0 || !strings.Contains(out, "alert bad certificate") {
		t.Errorf("unpinned key: exit %d, want a bad-certificate alert\n%s", code, out)
	}
	// The refusal names the stranger's pin, ready to be added.
	wantLog(t, s.Log.String(), peerRe+`client certificate CN=stranger serial=\S+ refused: not in --allow-spki \(its key is `+regexp.QuoteMeta(strangerPin)+`\)$`)
}
