package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// backupRecipe is the first sh block of docs/server.md's "Backups with
// client certificates": the test runs it as written.
func backupRecipe(t *testing.T) string {
	t.Helper()
	doc := readFileT(t, filepath.Join(repoRoot(t), "docs/server.md"))
	_, sec, ok := strings.Cut(doc, "### Backups with client certificates")
	m := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(sec)
	if !ok || m == nil {
		t.Fatal("docs/server.md has no \"Backups with client certificates\" recipe")
	}
	return m[1]
}

// testInstalledBackup runs the backup recipe under the shipped unit (no
// drop-ins) and checks what TestBackupIsolation checks in the lab.
func testInstalledBackup(t *testing.T, c *container, pki *PKI, rsyncSSL string) {
	// Last of all (cleanups run in reverse): undo what the recipe made, so
	// that the purge test finds the system as the package left it.
	t.Cleanup(func() {
		c.exec(t, time.Minute, "sh", "-c", "userdel backup-alpha; userdel backup-bravo; groupdel backup-alpha; groupdel backup-bravo; "+
			"rm -rf /srv/rsync-ssl /etc/rsync-ssl/clients-ca.pem /root/clients-ca.pem /usr/local/bin/backup-attack; true")
	})
	copyFileT(t, pki.CA, filepath.Join(c.root, "root/clients-ca.pem"))
	for _, f := range []string{"etc/default/rsync-ssl", "etc/rsync-ssl/rsyncd.conf"} {
		orig := readFileT(t, filepath.Join(c.root, f))
		t.Cleanup(func() { writeFile(t, filepath.Join(c.root, f), orig, 0o644) })
	}
	t.Cleanup(func() { c.exec(t, time.Minute, "systemctl", "stop", "rsync-ssl.service") })
	c.must(t, "sh", "-ec", "cd /root\n"+backupRecipe(t))
	hook := "/usr/local/bin/backup-attack"
	// Until the attack, the hook lets every session through.
	writeFile(t, filepath.Join(c.root, strings.TrimPrefix(hook, "/")), "#!/bin/sh\nexit 0\n", 0o755)
	t.Cleanup(func() { os.Remove(filepath.Join(c.root, strings.TrimPrefix(hook, "/"))) })
	conf := filepath.Join(c.root, "etc/rsync-ssl/rsyncd.conf")
	writeFile(t, conf, readFileT(t, conf)+"\tpre-xfer exec = "+hook+"\n", 0o644)

	certs := map[string]clientCert{"alpha": pki.IssueClient(t, "alpha", ClientOpts{CN: "alpha"}),
		"bravo": pki.IssueClient(t, "bravo", ClientOpts{CN: "bravo"})}
	client := func(cn string, args ...string) (string, int) {
		env := []string{"RSYNC_SSL_TYPE=openssl", "RSYNC_SSL_CA_CERT=" + pki.CA,
			"RSYNC_SSL_CERT=" + certs[cn].Cert, "RSYNC_SSL_KEY=" + certs[cn].Key}
		return c.client(t, env, append([]string{rsyncSSL}, args...)...)
	}
	uid := func(cn string) int {
		n, err := strconv.Atoi(strings.TrimSpace(c.must(t, "id", "-u", "backup-"+cn)))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	srcs := map[string]string{}
	for _, cn := range []string{"alpha", "bravo"} {
		src := t.TempDir()
		makeTree(t, src, 4, 30)
		os.Remove(filepath.Join(src, "link-to-spaces"))
		os.Remove(filepath.Join(src, "dangling-link"))
		srcs[cn] = src
		if out, code := client(cn, "-a", src+"/", "rsync://localhost/backup/"); code != 0 {
			journal, _ := c.exec(t, time.Minute, "journalctl", "--no-pager", "-n", "40", "-o", "cat", "-u", "rsync-ssl.service")
			t.Fatalf("%s: push (exit %d):\n%s\njournal:\n%s", cn, code, out, journal)
		}
		dst := t.TempDir()
		if out, code := client(cn, "-a", "rsync://localhost/backup/", dst+"/"); code != 0 {
			t.Fatalf("%s: pull (exit %d):\n%s", cn, code, out)
		}
		sameTree(t, src, dst)
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(c.root, "srv/rsync-ssl/backup", cn, "big.bin"), &st); err != nil || int(st.Uid) != uid(cn) {
			t.Errorf("%s: pushed file owned by uid %d, want backup-%s (%v)", cn, st.Uid, cn, err)
		}
	}

	t.Run("symlink-stays-in-chroot", func(t *testing.T) {
		dir := t.TempDir()
		os.Symlink("/etc/passwd", filepath.Join(dir, "passwd-link"))
		if out, code := client("alpha", "-l", filepath.Join(dir, "passwd-link"), "rsync://localhost/backup/"); code != 0 {
			t.Fatalf("push of a symlink (exit %d):\n%s", code, out)
		}
		back := t.TempDir()
		out, _ := client("alpha", "--copy-links", "rsync://localhost/backup/passwd-link", back+"/")
		got, _ := os.ReadFile(filepath.Join(back, "passwd-link"))
		if len(got) > 0 && string(got) == readFileT(t, filepath.Join(c.root, "etc/passwd")) {
			t.Fatalf("a pushed symlink to /etc/passwd came back as the server's passwd:\n%s", out)
		}
	})

	t.Run("hook-reaches-nothing", func(t *testing.T) {
		dst := t.TempDir()
		done := make(chan string, 1)
		go func() {
			out, code := client("bravo", "-a", "--bwlimit=400", "rsync://localhost/backup/", dst+"/")
			done <- fmt.Sprintf("exit %d\n%s", code, out)
		}()
		var serve int
		mustWaitFor(t, 30*time.Second, "bravo's rsync as backup-bravo", func() bool {
			serve, _ = strconv.Atoi(strings.TrimSpace(c.must(t, "systemctl", "show", "-P", "MainPID", "rsync-ssl.service")))
			out, _ := c.exec(t, time.Minute, "sh", "-c", fmt.Sprintf("grep -l '^Uid:.*\\b%d\\b' /proc/[0-9]*/status 2>/dev/null", uid("bravo")))
			return serve > 0 && strings.TrimSpace(out) != ""
		})
		// Where the hook can see and write: ProtectHome= hides /root.
		report := "/srv/rsync-ssl/attack-report"
		writeFile(t, filepath.Join(c.root, strings.TrimPrefix(hook, "/")),
			attackHook("/srv/rsync-ssl/attack", report, "/etc/rsync-ssl/private/key.pem", "/run/credentials/rsync-ssl.service", serve), 0o755)
		writeFile(t, filepath.Join(c.root, "srv/rsync-ssl/attack"), "", 0o644)
		out, code := client("alpha", "-a", "rsync://localhost/backup/", t.TempDir()+"/")
		os.Remove(filepath.Join(c.root, "srv/rsync-ssl/attack"))
		b, _ := os.ReadFile(filepath.Join(c.root, "srv/rsync-ssl/attack-report"))
		rep := string(b)
		t.Logf("alpha's hook:\n%s", rep)
		if code != 0 {
			t.Errorf("alpha's pull with the hook (exit %d):\n%s", code, out)
		}
		if strings.Contains(rep, "READ") || strings.Contains(rep, "SIGNALLED") || !strings.Contains(rep, "done") ||
			!strings.Contains(rep, "denied /etc/rsync-ssl/private/key.pem") || !strings.Contains(rep, "other ") {
			t.Errorf("alpha's hook reached the key, the credentials, serve or bravo's session, or did not try:\n%s", rep)
		}
		if r := <-done; !strings.HasPrefix(r, "exit 0\n") {
			t.Fatalf("bravo's slow pull during alpha's hook: %s", r)
		}
		sameTree(t, srcs["bravo"], dst)
	})

	t.Run("max-connections", func(t *testing.T) {
		outs := make(chan string, 4)
		for range 4 {
			go func() {
				out, code := client("bravo", "-a", "--bwlimit=400", "rsync://localhost/backup/", t.TempDir()+"/")
				outs <- fmt.Sprintf("exit %d\n%s", code, out)
			}()
		}
		mustWaitFor(t, 60*time.Second, "four sessions as backup-bravo", func() bool {
			out, _ := c.exec(t, time.Minute, "sh", "-c", fmt.Sprintf("grep -l '^Uid:.*\\b%d\\b' /proc/[0-9]*/status 2>/dev/null | wc -l", uid("bravo")))
			n, _ := strconv.Atoi(strings.TrimSpace(out))
			return n >= 4
		})
		out, code := client("alpha", "-a", "rsync://localhost/backup/", t.TempDir()+"/")
		if code == 0 || !strings.Contains(out, "@ERROR: max connections (4) reached") {
			t.Errorf("a fifth session (exit %d), want rsync's own refusal:\n%s", code, out)
		}
		for range 4 {
			if r := <-outs; !strings.HasPrefix(r, "exit 0\n") {
				t.Errorf("one of four sessions: %s", r)
			}
		}
	})
}
