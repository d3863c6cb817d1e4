package tests

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
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
	base, err := os.MkdirTemp("", "security-fds-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	data, out := filepath.Join(base, "data"), filepath.Join(base, "out")
	for _, d := range []string{data, out} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(out, 0o777)
	key := filepath.Join(base, "key.pem")
	replaceFile(t, p.Key, key)
	os.Chmod(key, 0o600)
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
