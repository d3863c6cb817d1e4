package tests

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Round 2, finding 1: a descriptor serve inherits from whoever started it
// (a launcher's leak, a shell's "9<key") must not reach rsync or its hooks,
// and rsync must start with no_new_privs, so that nothing it execs can gain
// privileges through a set-user-ID or file-capability binary.
func TestSecurityInheritedDescriptors(t *testing.T) {
	start := time.Now()
	if os.Geteuid() != 0 {
		t.Skip("needs root: serve must be able to switch users")
	}
	p := newPKI(t)
	rsync := rsyncPath(t)
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	base, data, out, key := userRig(t, p, "security-fds-")
	writeFile(t, filepath.Join(data, "hello.txt"), "hello\n", 0o644)
	report := filepath.Join(out, "report")
	hook := filepath.Join(base, "hook.sh")
	writeFile(t, hook, fmt.Sprintf(`#!/bin/sh
{
echo "uid=$(id -u)"
for fd in 8 9; do
  if head -c 27 <&$fd 2>/dev/null | grep -q PRIVATE; then echo "fd$fd=key"; else echo "fd$fd=none"; fi
done
echo "fds=$(ls /proc/$$/fd | sort -n | tr '\n' ' ')"
grep '^NoNewPrivs:' /proc/$$/status | sed 's/^/hook /'
grep '^NoNewPrivs:' /proc/$PPID/status | sed 's/^/rsync /'
} > %s.tmp 2>&1
mv %s.tmp %s
`, report, report, report), 0o755)
	conf := filepath.Join(base, "rsyncd.conf")
	writeFile(t, conf, fmt.Sprintf("use chroot = no\n\n[data]\npath = %s\nread only = yes\npre-xfer exec = %s\n", data, hook), 0o644)
	rd := &Rsyncd{Conf: conf}
	pk := *p
	pk.Key = key

	// The shell opens the key on 8 and 9 without close-on-exec and
	// execs serve: what a careless launcher hands down.
	wrap := []string{"sh", "-c", `exec "$@" 9<` + key + ` 8<` + key, "sh"}
	dst := t.TempDir()
	res := serveOneVia(t, "127.0.0.1", wrap, serveArgs(&pk, rd, rsync, "--rsync-user", "nobody"), sslPull(p, clientCert{}, dst))
	if res.code != 0 || !strings.HasPrefix(res.client, "exit 0\n") {
		t.Fatalf("serve exit %d; client: %s\nlog:\n%s", res.code, res.client, res.log)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("the hook left no report: %v\n%s", err, res.log)
	}
	r := string(b)
	if !strings.HasPrefix(r, "uid="+nobody.Uid+"\n") {
		t.Errorf("hook did not run as nobody:\n%s", r)
	}
	for _, fd := range []string{"fd8", "fd9"} {
		if !strings.Contains(r, fd+"=none\n") {
			t.Errorf("%s: the hook read the key through an inherited descriptor:\n%s", fd, r)
		}
	}
	for _, who := range []string{"hook", "rsync"} {
		if !regexp.MustCompile(`(?m)^` + who + ` NoNewPrivs:\s*1$`).MatchString(r) {
			t.Errorf("%s runs without no_new_privs:\n%s", who, r)
		}
	}
	recordSecurity(t, "R2.1 inherited descriptors (TestSecurityInheritedDescriptors)",
		"serve --rsync-user nobody started with the 0600 key open on fds 8 and 9 (no close-on-exec); a pre-xfer exec hook reads them",
		"neither descriptor reaches rsync or its hook; rsync and the hook run with NoNewPrivs 1", start)
}

// Round 2, finding 7: serve holds CAP_SETUID, CAP_SETGID and CAP_KILL only
// to start and stop rsync as another user. While it serves, no thread of
// serve has them effective; and stopping serve still stops an rsync that
// runs as another user (CAP_KILL raised for the signal only).
func TestSecurityCapabilitiesLowered(t *testing.T) {
	start := time.Now()
	if os.Geteuid() != 0 {
		t.Skip("needs root: serve must be able to switch users")
	}
	needTool(t, "setpriv")
	p := newPKI(t)
	rsync := rsyncPath(t)
	daemon, err := user.Lookup("daemon")
	if err != nil {
		t.Skipf("no user daemon: %v", err)
	}
	base, data, out, key := userRig(t, p, "security-caps-")
	uid, gid := atoi(t, daemon.Uid), atoi(t, daemon.Gid)
	if err := os.Chown(key, uid, gid); err != nil {
		t.Fatal(err)
	}
	makeTree(t, data, 32, 0)
	report := filepath.Join(out, "report")
	hook := filepath.Join(base, "hook.sh")
	// The hook reports rsync's PID, serve's PID and every serve thread's
	// effective set; the pull it precedes is slow (--bwlimit), so the
	// session is still running when serve is told to stop.
	writeFile(t, hook, fmt.Sprintf(`#!/bin/sh
rsync=$PPID
serve=$rsync
n=0
while [ $n -lt 5 ] && [ "$(cat /proc/$serve/comm)" != rsync-ssl-shim ]; do
  rsync=$serve; serve=$(awk '{print $4}' /proc/$serve/stat); n=$((n+1))
done
{
echo "rsync=$rsync"
echo "serve=$serve"
for f in /proc/$serve/task/*/status; do grep '^CapEff:' $f; done
} > %s.tmp 2>&1
mv %s.tmp %s
`, report, report, report), 0o755)
	conf := filepath.Join(base, "rsyncd.conf")
	writeFile(t, conf, fmt.Sprintf("use chroot = no\n\n[data]\npath = %s\nread only = yes\npre-xfer exec = %s\n", data, hook), 0o644)
	rd := &Rsyncd{Conf: conf}
	pk := *p
	pk.Key, pk.Cert = key, filepath.Join(base, "cert.pem")
	replaceFile(t, p.Cert, pk.Cert)
	os.Chmod(pk.Cert, 0o644)

	var rsyncPID int
	var reportText string
	client := func(t *testing.T, addr string) string {
		done := make(chan string, 1)
		go func() {
			out, code := sslClient(t, p, addr, clientCert{}, "-a", "--bwlimit=1000", "localhost::data/", t.TempDir()+"/")
			done <- fmt.Sprintf("exit %d\n%s", code, out)
		}()
		if !waitFor(func() bool { _, err := os.Stat(report); return err == nil }, 20*time.Second) {
			return "the hook never reported"
		}
		b, _ := os.ReadFile(report)
		reportText = string(b)
		var servePID int
		for _, l := range strings.Split(reportText, "\n") {
			if v, ok := strings.CutPrefix(l, "rsync="); ok {
				rsyncPID = atoi(t, v)
			}
			if v, ok := strings.CutPrefix(l, "serve="); ok {
				servePID = atoi(t, v)
			}
		}
		time.Sleep(500 * time.Millisecond) // the transfer under way
		if servePID > 0 {
			syscall.Kill(servePID, syscall.SIGTERM)
		}
		select {
		case out := <-done:
			return out
		case <-time.After(30 * time.Second):
			return "the client did not end within 30s of serve's SIGTERM"
		}
	}
	wrap := []string{"setpriv", "--reuid=" + daemon.Uid, "--regid=" + daemon.Gid, "--clear-groups",
		"--inh-caps=+setuid,+setgid,+kill", "--ambient-caps=+setuid,+setgid,+kill"}
	res := serveOneVia(t, "127.0.0.1", wrap, serveArgs(&pk, rd, rsync, "--rsync-user", "nobody"), client)
	effs := regexp.MustCompile(`(?m)^CapEff:\s*([0-9a-f]+)$`).FindAllStringSubmatch(reportText, -1)
	if len(effs) == 0 {
		t.Fatalf("no thread of serve reported:\n%s\nlog:\n%s", reportText, res.log)
	}
	for _, e := range effs {
		if os.Getenv("SHIM_RACE") == "1" {
			// A race build links cgo, where the runtime cannot
			// change every thread's capabilities at once.
			break
		}
		if strings.Trim(e[1], "0") != "" {
			t.Errorf("a thread of serve has CapEff=%s while serving, want none:\n%s", e[1], reportText)
			break
		}
	}
	if res.took > 15*time.Second {
		t.Errorf("serve took %v to stop after SIGTERM during a 32 s transfer; log:\n%s", res.took, res.log)
	}
	if rsyncPID > 0 && syscall.Kill(rsyncPID, 0) == nil {
		t.Errorf("rsync (PID %d, another user) still runs after serve stopped: it was never signalled; log:\n%s", rsyncPID, res.log)
	}
	recordSecurity(t, "R2.7 capabilities held for life (TestSecurityCapabilitiesLowered)",
		"serve with ambient CAP_SETUID/CAP_SETGID/CAP_KILL starting rsync as nobody; a hook reads every serve thread's CapEff, then serve gets SIGTERM",
		"CapEff 0 on every thread of serve while it serves; SIGTERM still stops the other user's rsync", start)
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

// userRig makes a directory tree that the user rsync runs as may enter,
// so that only the key's own mode (0600, a copy of p's key) keeps it out:
// data for the module, out (0777) for a hook's report. t.TempDir's are 0700.
func userRig(t *testing.T, p *PKI, prefix string) (base, data, out, key string) {
	t.Helper()
	base, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	data, out = filepath.Join(base, "data"), filepath.Join(base, "out")
	for _, d := range []string{data, out} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(out, 0o777)
	key = filepath.Join(base, "key.pem")
	replaceFile(t, p.Key, key)
	os.Chmod(key, 0o600)
	return base, data, out, key
}
