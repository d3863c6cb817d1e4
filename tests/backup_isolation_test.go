package tests

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// backupUsers makes the system users rsslt-alpha and rsslt-bravo for the
// length of the test and returns their uids by CN.
func backupUsers(t *testing.T) map[string]int {
	t.Helper()
	needTool(t, "useradd")
	uids := map[string]int{}
	for _, cn := range []string{"alpha", "bravo"} {
		name := "rsslt-" + cn
		runCmd(t, 30*time.Second, nil, "userdel", name)
		if out, code := runCmd(t, 30*time.Second, nil, "useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name); code != 0 {
			t.Fatalf("useradd %s: %s", name, out)
		}
		t.Cleanup(func() { runCmd(t, 30*time.Second, nil, "userdel", name) })
		out, _ := runCmd(t, 10*time.Second, nil, "id", "-u", name)
		uid, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("id -u %s: %q", name, out)
		}
		uids[cn] = uid
	}
	return uids
}

// procsOf lists the rsync processes started by serve (parent) running as
// uid. The parent matters: a container booted by another test may run its
// own rsync as the same number.
func procsOf(parent, uid int) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		_, rest, _ := strings.Cut(string(stat), ") ")
		f := strings.Fields(rest)
		if syscall.Stat(fmt.Sprintf("/proc/%d", pid), &st) == nil && int(st.Uid) == uid && strings.Contains(string(stat), "(rsync) ") &&
			len(f) > 1 && f[1] == strconv.Itoa(parent) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// attackHook is a pre-xfer exec hook that, for the alpha session while the
// flag file exists, tries what a compromised session would: the key, the
// credentials, every environment, serve's memory and root, and SIGSTOP and
// SIGTERM on every rsync of serve's that is not its own ancestor; it reports
// to report.
func attackHook(flag, report, key, creds string, servePid int) string {
	return fmt.Sprintf(`#!/bin/sh
[ "$SSL_CLIENT_S_DN_CN" = alpha ] && [ -e %[1]s ] || exit 0
exec >%[2]s 2>&1
echo "hook uid=$(id -u) caps=$(grep CapEff /proc/self/status)"
# This hook's own ancestors (its session's rsync) are its own.
mine=""; x=$$
while [ "$x" -gt 1 ]; do mine="$mine $x"; x=$(cut -d' ' -f4 /proc/$x/stat); done
# serve's rsyncs and their children (the clients of this host are not the
# point), found through /proc/PID/stat: the parent is the field after ") S".
rsyncs_under() {
	for s in /proc/[0-9]*/stat; do
		line=$(cat "$s" 2>/dev/null) || continue
		case "$line" in *"(rsync) "*) ;; *) continue ;; esac
		rest=${line#*) }
		[ "$(echo "$rest" | cut -d' ' -f2)" = "$1" ] && echo "${line%%%% *}"
	done
}
top=$(rsyncs_under %[5]d | tr '\n' ' ')
kids=""; for k in $top; do kids="$kids $(rsyncs_under $k | tr '\n' ' ')"; done
echo "targets: $top / $kids (mine:$mine)"
for p in $top $kids; do
	case " $mine " in *" $p "*) continue ;; esac
	echo "other $p"
	if kill -STOP "$p" 2>/dev/null; then echo "SIGNALLED STOP $p"; fi
	if kill -TERM "$p" 2>/dev/null; then echo "SIGNALLED TERM $p"; fi
done
for f in %[3]s %[4]s/key.pem /proc/%[5]d/root%[3]s; do
	if head -c1 "$f" >/dev/null 2>&1; then echo "READ $f"; else echo "denied $f"; fi
done
if ls %[4]s/ 2>/dev/null | grep -q .; then echo "READ listing %[4]s"; fi
if head -c1 /proc/%[5]d/environ >/dev/null 2>&1; then echo "READ serve environ"; fi
if dd if=/proc/%[5]d/mem bs=1 count=1 skip=4194304 >/dev/null 2>&1; then echo "READ serve mem"; fi
for e in /proc/[0-9]*/environ; do
	if { tr "\\0" "\\n" <"$e"; } 2>/dev/null | grep -q "^SSL_CLIENT_S_DN_CN=bravo"; then echo "READ bravo environ $e"; fi
done
echo done
`, flag, report, key, creds, servePid)
}

// TestBackupIsolation: serve --rsync-user root with two client
// certificates and rsyncd.conf's own isolation (uid per CN, chroot,
// writable, max connections): backups go both ways byte for byte, owned by
// each module's user; a hook of one session reads nothing of the key, the
// credentials, serve or the other session, and cannot stop it; the fifth
// session over "max connections = 4" gets rsync's own refusal; a pushed
// symlink does not lead out of the chroot.
func TestBackupIsolation(t *testing.T) {
	slowTier(t, "backup isolation")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root: serve starts rsync as root, which switches to each module's user (CI=true: not skipped)")
		}
		t.Skip("needs root: serve starts rsync as root, which switches to each module's user")
	}
	rsync := rsyncPath(t)
	uids := backupUsers(t)
	p := newPKI(t)
	certs := map[string]clientCert{"alpha": p.IssueClient(t, "alpha", ClientOpts{CN: "alpha"}),
		"bravo": p.IssueClient(t, "bravo", ClientOpts{CN: "bravo"})}

	// The key as systemd would hand it over: in a credentials directory.
	creds := t.TempDir()
	key := filepath.Join(creds, "key.pem")
	writeFile(t, key, readFileT(t, p.Key), 0o600)
	base := t.TempDir()
	for cn, uid := range uids {
		d := filepath.Join(base, "backup", cn)
		os.MkdirAll(d, 0o711)
		os.Chown(d, uid, uid)
		// Root without CAP_DAC_OVERRIDE must pass through to chroot.
		os.Chmod(d, 0o711)
	}
	os.Chmod(filepath.Join(base, "backup"), 0o755)
	os.MkdirAll(filepath.Join(base, "run"), 0o755)
	hook, flag, report := filepath.Join(base, "hook"), filepath.Join(base, "attack"), filepath.Join(base, "report")
	conf := filepath.Join(base, "rsyncd.conf")
	writeFile(t, conf, fmt.Sprintf(`lock file = %s/run/rsyncd.lock
log file = %s/rsyncd.log
timeout = 600

[backup]
	path = %s/backup/%%SSL_CLIENT_S_DN_CN%%
	uid = rsslt-%%SSL_CLIENT_S_DN_CN%%
	gid = rsslt-%%SSL_CLIENT_S_DN_CN%%
	use chroot = yes
	read only = no
	max connections = 4
	pre-xfer exec = %s
`, base, base, base, hook), 0o644)

	port := freePort(t, "127.0.0.1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(shimBin, "serve", "--cert", p.Cert, "--key", key, "--rsyncd-conf", conf, "--rsync", rsync,
		"--client-ca", p.CA, "--rsync-user", "root", "--listen", addr)
	cmd.Env = append(os.Environ(), "CREDENTIALS_DIRECTORY="+creds)
	log := startBg(t, cmd)
	waitPortOr(t, addr, 10*time.Second, log)
	writeFile(t, hook, attackHook(flag, report, key, creds, cmd.Process.Pid), 0o755)

	client := func(cn string, args ...string) (string, int) {
		return sslClient(t, p, addr, certs[cn], args...)
	}
	// Each host pushes its tree and pulls it back.
	srcs := map[string]string{}
	for cn, uid := range uids {
		src := t.TempDir()
		makeTree(t, src, 4, 30)
		os.Remove(filepath.Join(src, "link-to-spaces"))
		os.Remove(filepath.Join(src, "dangling-link"))
		srcs[cn] = src
		if out, code := client(cn, "-a", src+"/", "localhost::backup/"); code != 0 {
			t.Fatalf("%s: push (exit %d):\n%s\nserve:\n%s", cn, code, out, log.String())
		}
		dst := t.TempDir()
		if out, code := client(cn, "-a", "localhost::backup/", dst+"/"); code != 0 {
			t.Fatalf("%s: pull (exit %d):\n%s", cn, code, out)
		}
		sameTree(t, src, dst)
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(base, "backup", cn, "big.bin"), &st); err != nil || int(st.Uid) != uid {
			t.Errorf("%s: pushed file owned by uid %d, want the module's rsslt-%s (%d) (%v)", cn, st.Uid, cn, uid, err)
		}
	}

	t.Run("symlink-stays-in-chroot", func(t *testing.T) {
		dir := t.TempDir()
		os.Symlink("/etc/passwd", filepath.Join(dir, "passwd-link"))
		if out, code := client("alpha", "-l", filepath.Join(dir, "passwd-link"), "localhost::backup/"); code != 0 {
			t.Fatalf("push of a symlink (exit %d):\n%s", code, out)
		}
		back := t.TempDir()
		out, _ := client("alpha", "--copy-links", "localhost::backup/passwd-link", back+"/")
		got, _ := os.ReadFile(filepath.Join(back, "passwd-link"))
		if passwd, _ := os.ReadFile("/etc/passwd"); len(got) > 0 && bytes.Equal(got, passwd) {
			t.Fatalf("a pushed symlink to /etc/passwd pulled back with --copy-links returned the server's passwd:\n%s", out)
		}
	})

	t.Run("hook-reaches-nothing", func(t *testing.T) {
		// bravo's slow pull runs while alpha's hook attacks.
		dst := t.TempDir()
		type res struct {
			out  string
			code int
		}
		done := make(chan res, 1)
		go func() {
			out, code := client("bravo", "-a", "--bwlimit=400", "localhost::backup/", dst+"/")
			done <- res{out, code}
		}()
		mustWaitFor(t, 20*time.Second, "bravo's rsync running as rsslt-bravo", func() bool { return len(procsOf(cmd.Process.Pid, uids["bravo"])) > 0 })
		writeFile(t, flag, "", 0o644)
		out, code := client("alpha", "-a", "localhost::backup/", t.TempDir()+"/")
		os.Remove(flag)
		if code != 0 {
			rep, _ := os.ReadFile(report)
			t.Logf("alpha's hook so far:\n%s", rep)
			t.Errorf("alpha's pull with the hook (exit %d):\n%s", code, out)
		}
		rep := readFileT(t, report)
		t.Logf("alpha's hook:\n%s", rep)
		if strings.Contains(rep, "READ") || strings.Contains(rep, "SIGNALLED") || !strings.Contains(rep, "done") {
			t.Errorf("alpha's hook reached the key, the credentials, serve or bravo's session, or did not finish:\n%s", rep)
		}
		if !strings.Contains(rep, "denied "+key) || !strings.Contains(rep, "other ") {
			t.Errorf("the hook did not try the key, or found no other session's rsync:\n%s", rep)
		}
		r := <-done
		if r.code != 0 {
			t.Fatalf("bravo's slow pull during alpha's hook (exit %d):\n%s", r.code, r.out)
		}
		sameTree(t, srcs["bravo"], dst)
	})

	t.Run("max-connections", func(t *testing.T) {
		var wg sync.WaitGroup
		codes := make([]int, 4)
		outs := make([]string, 4)
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				outs[i], codes[i] = client("bravo", "-a", "--bwlimit=1m", "localhost::backup/", t.TempDir()+"/")
			}()
		}
		mustWaitFor(t, 30*time.Second, "four sessions as rsslt-bravo", func() bool { return len(procsOf(cmd.Process.Pid, uids["bravo"])) >= 4 })
		out, code := client("alpha", "-a", "localhost::backup/", t.TempDir()+"/")
		if code == 0 || !strings.Contains(out, "@ERROR: max connections (4) reached") {
			t.Errorf("a fifth session (exit %d), want rsync's own refusal:\n%s", code, out)
		}
		wg.Wait()
		for i := range 4 {
			if codes[i] != 0 {
				t.Errorf("session %d of 4 (exit %d):\n%s", i, codes[i], outs[i])
			}
		}
	})
}
