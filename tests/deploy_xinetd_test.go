package tests

import (
	"fmt"
	"os"
	"os/exec"
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
	pki := newPKI(t)
	rd := newRsyncd(t)
	makeTree(t, rd.Data, 4, 100)
	port := freePort(t, "127.0.0.1")
	for _, r := range []struct{ from, to string }{
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
}
