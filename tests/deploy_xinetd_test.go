package tests

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDeployXinetd runs the shipped xinetd entry under a real xinetd in the
// foreground. Only the port, the paths and "disable" are changed (and the
// listener is bound to the loopback); then a module is pulled with stock
// rsync-ssl.
func TestDeployXinetd(t *testing.T) {
	xinetd := needTool(t, "xinetd")
	rsyncSSL := needTool(t, "rsync-ssl")
	needTool(t, "openssl")
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging", "xinetd", "rsync-ssl"))
	if err != nil {
		t.Fatal(err)
	}
	entry := string(b)
	if !regexp.MustCompile(`(?m)^\s*disable\s*=\s*yes\s*$`).MatchString(entry) {
		t.Fatal("the shipped xinetd entry must be disabled by default")
	}
	if !strings.Contains(entry, "--rsync-user=_rsync-ssl") {
		t.Fatal("the shipped xinetd entry must start rsync as _rsync-ssl (--rsync-user=_rsync-ssl): as root, rsync and its hooks could read the key")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: xinetd starts serve as root, which switches rsync to another user")
	}
	pki := newPKI(t)
	// Directories the unprivileged rsync user may enter, so that the
	// key's own mode is what keeps rsync's hook out; t.TempDir's are 0700.
	base, err := os.MkdirTemp("", "xinetd-entry-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	keyFile := filepath.Join(base, "key.pem")
	replaceFile(t, pki.Key, keyFile)
	os.Chmod(keyFile, 0o600)
	pki.Key = keyFile
	data, out := filepath.Join(base, "data"), filepath.Join(base, "out")
	for _, d := range []string{data, out} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(out, 0o777)
	makeTree(t, data, 4, 100)
	report := filepath.Join(out, "report")
	hook := filepath.Join(base, "hook.sh")
	writeFile(t, hook, fmt.Sprintf(`#!/bin/sh
{ echo "uid=$(id -u)"; if cat %s >/dev/null 2>&1; then echo key=read; else echo key=refused; fi; grep '^NoNewPrivs:' /proc/$$/status; } > %s.tmp 2>&1
mv %s.tmp %s
`, keyFile, report, report, report), 0o755)
	rd := &Rsyncd{Conf: filepath.Join(base, "rsyncd.conf"), Data: data}
	writeFile(t, rd.Conf, fmt.Sprintf("use chroot = no\n\n[data]\npath = %s\nread only = yes\npre-xfer exec = %s\n", data, hook), 0o644)
	port := freePort(t, "127.0.0.1")
	for _, r := range []struct{ from, to string }{
		{"--rsync-user=_rsync-ssl", "--rsync-user=nobody"},
		{"disable\t\t= yes", "disable\t\t= no\n\tbind\t\t= 127.0.0.1"},
		{"port\t\t= 874", fmt.Sprintf("port\t\t= %d", port)},
		{"server\t\t= /usr/bin/rsync-ssl-shim", "server\t\t= " + shimBin},
		{"/etc/rsync-ssl/cert.pem", pki.Cert},
		{"/etc/rsync-ssl/private/key.pem", pki.Key},
		{"/etc/rsync-ssl/rsyncd.conf", rd.Conf},
	} {
		if !strings.Contains(entry, r.from) {
			t.Fatalf("shipped xinetd entry lacks %q", r.from)
		}
		// Paths also appear in the comments above the entry: replace them all.
		entry = strings.ReplaceAll(entry, r.from, r.to)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "xinetd.conf")
	if err := os.WriteFile(conf, []byte("defaults\n{\n\tinstances = 10\n}\n\n"+entry), 0o644); err != nil {
		t.Fatal(err)
	}
	log := startBg(t, exec.Command(xinetd, "-dontfork", "-stayalive", "-pidfile", filepath.Join(dir, "pid"), "-f", conf, "-filelog", filepath.Join(dir, "xinetd.log")))
	waitPort(t, fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)

	dest := t.TempDir()
	out, code := runCmd(t, 2*time.Minute, []string{"RSYNC_SSL_TYPE=openssl", "RSYNC_SSL_CA_CERT=" + pki.CA, fmt.Sprintf("RSYNC_SSL_PORT=%d", port)},
		rsyncSSL, "-a", "rsync://localhost/data/", dest+"/")
	if code != 0 {
		xl, _ := os.ReadFile(filepath.Join(dir, "xinetd.log"))
		t.Fatalf("rsync-ssl through xinetd (exit %d):\n%s\nxinetd:\n%s\n%s", code, out, log.String(), xl)
	}
	sameTree(t, rd.Data, dest)
	rep, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("rsync's hook left no report: %v", err)
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"uid=" + nobody.Uid + "\n", "key=refused\n"} {
		if !strings.Contains(string(rep), want) {
			t.Errorf("rsync's hook under xinetd: want %q in its report:\n%s", want, rep)
		}
	}
	if !regexp.MustCompile(`(?m)^NoNewPrivs:\s*1$`).Match(rep) {
		t.Errorf("rsync's hook under xinetd runs without no_new_privs:\n%s", rep)
	}
}
