package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// installedOpts rewrites /etc/default/rsync-ssl in the container with extra
// serve flags and stops rsync-ssl.service, so that the next connection starts
// it with them (the socket keeps listening). Undone at cleanup.
func installedOpts(t *testing.T, c *container, extra string) {
	t.Helper()
	p := filepath.Join(c.root, "etc/default/rsync-ssl")
	orig := readFileT(t, p)
	// EnvironmentFile= expands nothing: the whole value, repeated.
	writeFile(t, p, orig+"\nRSYNC_SSL_SHIM_OPTS=\"--rsyncd-conf /etc/rsync-ssl/rsyncd.conf "+extra+"\"\n", 0o644)
	restart := func() {
		// A serve that cannot start (a bad flag) fails its service five
		// times and puts the socket in "failed": start both afresh.
		c.exec(t, time.Minute, "systemctl", "stop", "rsync-ssl.service")
		c.exec(t, time.Minute, "systemctl", "reset-failed", "rsync-ssl.service", "rsync-ssl.socket")
		c.exec(t, time.Minute, "systemctl", "start", "rsync-ssl.socket")
	}
	restart()
	t.Cleanup(func() {
		writeFile(t, p, orig, 0o644)
		restart()
	})
}

// idleSession opens a TLS session to the container's port 874 from its
// namespace with our own connect helper, sends rsync's greeting and then
// nothing: a client that holds a slot without naming a module. It returns a
// function that reads what the server sent until it closed (bounded).
func idleSession(t *testing.T, c *container, caFile string) func() string {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", c.netns, shimBin, "connect", "localhost")
	cmd.Env = append(os.Environ(), "RSYNC_SSL_CA_CERT="+caFile, "RSYNC_SSL_PORT=874", "RSYNC_PORT=0")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// rsync's greeting back says the session is up and rsync runs for
	// it; the rest is read until the server ends the session.
	greeting := make(chan string, 1)
	got := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		first, _ := r.ReadString('\n')
		greeting <- first
		rest, _ := io.ReadAll(r)
		got <- first + string(rest)
	}()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		<-done
	})
	io.WriteString(in, "@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n")
	select {
	case g := <-greeting:
		if !strings.HasPrefix(g, "@RSYNCD:") {
			t.Fatalf("idle session: no rsync greeting, got %q", g)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("idle session: no rsync greeting within 30s")
	}
	return func() string {
		select {
		case s := <-got:
			return s
		case <-time.After(30 * time.Second):
			return "(still open after 30s)"
		}
	}
}

// journalEntries returns the journal entries (as field maps) that match
// every FIELD=value given.
func journalEntries(t *testing.T, c *container, match ...string) []map[string]any {
	t.Helper()
	c.exec(t, time.Minute, "journalctl", "--sync")
	out, _ := c.exec(t, time.Minute, append([]string{"journalctl", "--no-pager", "-o", "json"}, match...)...)
	var es []map[string]any
	for _, line := range strings.Split(out, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			es = append(es, m)
		}
	}
	return es
}

// localhostAddr is the address a client started here reaches "localhost"
// at: the resolver's first answer, 127.0.0.1 on some machines and ::1 on a
// fresh Debian 12, whose /etc/hosts names both.
func localhostAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.DefaultResolver.LookupIPAddr(context.Background(), "localhost")
	if err != nil || len(addrs) == 0 {
		t.Fatalf("resolve localhost: %v", err)
	}
	return addrs[0].IP.String()
}

// testInstalledDefault runs, in the booted container with the package
// installed and rsync-ssl.socket enabled, what the default unit promises:
// one accept loop that exits when idle, rsync's own answer past the limits,
// idle clients ended, the journal's fields, renewals and upgrades that cut
// nothing, and the isolated units as the alternative.
func testInstalledDefault(t *testing.T, c *container, pki *PKI, env []string, data, deb string) {
	rsyncSSL := needTool(t, "rsync-ssl")
	list := func(t *testing.T) (string, int) {
		t.Helper()
		return c.client(t, env, rsyncSSL, "rsync://localhost/")
	}

	t.Run("accept-loop", func(t *testing.T) {
		installedOpts(t, c, "--exit-idle 2s")
		if out, code := list(t); code != 0 || !strings.Contains(out, "data") {
			t.Fatalf("listing through rsync-ssl.socket (exit %d):\n%s", code, out)
		}
		pid1 := strings.TrimSpace(c.must(t, "systemctl", "show", "-P", "MainPID", "rsync-ssl.service"))
		if out, code := list(t); code != 0 {
			t.Fatalf("second listing (exit %d):\n%s", code, out)
		}
		pid2 := strings.TrimSpace(c.must(t, "systemctl", "show", "-P", "MainPID", "rsync-ssl.service"))
		if pid1 == "0" || pid1 != pid2 {
			t.Fatalf("one rsync-ssl.service should serve both connections: main PID %s, then %s", pid1, pid2)
		}
		// --exit-idle: nothing runs once everyone has left, the socket stays.
		deadline := time.Now().Add(15 * time.Second)
		state := ""
		for time.Now().Before(deadline) {
			state, _ = c.exec(t, time.Minute, "systemctl", "is-active", "rsync-ssl.service")
			if strings.TrimSpace(state) == "inactive" {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if strings.TrimSpace(state) != "inactive" {
			t.Fatalf("rsync-ssl.service still %q 15s after the last connection with --exit-idle 2s", strings.TrimSpace(state))
		}
		if st, _ := c.exec(t, time.Minute, "systemctl", "is-active", "rsync-ssl.socket"); strings.TrimSpace(st) != "active" {
			t.Fatalf("rsync-ssl.socket is %q after the service exited", st)
		}
		if out, code := list(t); code != 0 {
			t.Fatalf("listing after the idle exit (exit %d):\n%s", code, out)
		}
	})

	t.Run("overload-answer", func(t *testing.T) {
		installedOpts(t, c, "--max-conns 1 --max-conns-wait 300ms --module-timeout 0")
		idleSession(t, c, pki.CA)
		out, code := list(t)
		if code != 5 || !strings.Contains(out, "@ERROR: max connections (1) reached -- try again later") {
			journal, _ := c.exec(t, time.Minute, "journalctl", "--no-pager", "-n", "20", "-o", "cat", "-u", "rsync-ssl.service")
			t.Fatalf("client past --max-conns 1 (exit %d), want rsync's max-connections line and exit 5:\n%s\njournal:\n%s", code, out, journal)
		}
		if es := journalEntries(t, c, "_SYSTEMD_UNIT=rsync-ssl.service", "RSYNC_SSL_CLIENT="+localhostAddr(t)); !anyMessage(es, "max connections (1) reached") {
			t.Fatalf("no journal entry for the refusal")
		}
	})

	t.Run("idle-bound", func(t *testing.T) {
		installedOpts(t, c, "--max-conns 2 --max-conns-wait 15s --module-timeout 2s")
		reads := []func() string{idleSession(t, c, pki.CA), idleSession(t, c, pki.CA)}
		start := time.Now()
		out, code := list(t)
		if code != 0 || !strings.Contains(out, "data") {
			t.Fatalf("honest client behind two idle sessions (exit %d after %v):\n%s", code, time.Since(start), out)
		}
		for i, r := range reads {
			if got := r(); !strings.HasPrefix(got, "@RSYNCD:") || strings.Contains(got, "still open") {
				t.Errorf("idle session %d: read %q, want rsync's greeting and then the end", i, got)
			}
		}
		es := journalEntries(t, c, "_SYSTEMD_UNIT=rsync-ssl.service")
		if n := countMessages(es, "none within 2s of the handshake"); n < 2 {
			t.Fatalf("%d journal lines for the idle sessions, want 2", n)
		}
	})

	t.Run("journal-fields", func(t *testing.T) {
		dest := t.TempDir()
		if out, code := c.client(t, env, rsyncSSL, "-a", "rsync://localhost/data/", dest+"/"); code != 0 {
			t.Fatalf("pull (exit %d):\n%s", code, out)
		}
		lo := localhostAddr(t)
		es := journalEntries(t, c, "RSYNC_SSL_CLIENT="+lo, "RSYNC_SSL_MODULE=data", "RSYNC_SSL_EXIT=0")
		if len(es) == 0 {
			t.Fatalf("journalctl RSYNC_SSL_CLIENT=%s RSYNC_SSL_MODULE=data finds no session", lo)
		}
		e := es[len(es)-1]
		for _, k := range []string{"RSYNC_SSL_BYTES_IN", "RSYNC_SSL_BYTES_OUT", "RSYNC_SSL_DATAPATH", "RSYNC_SSL_TLS"} {
			if v, _ := e[k].(string); v == "" || v == "0" {
				t.Errorf("journal entry lacks %s (got %q): %v", k, v, e)
			}
		}
		if u, _ := e["_SYSTEMD_UNIT"].(string); u != "rsync-ssl.service" {
			t.Errorf("journal entry is attributed to %q, want rsync-ssl.service", u)
		}
		// One line per event: the summary is not also on stderr.
		port, _ := e["RSYNC_SSL_CLIENT_PORT"].(string)
		all := journalEntries(t, c, "_SYSTEMD_UNIT=rsync-ssl.service")
		if n := countMessages(all, net.JoinHostPort(lo, port)+": served"); n != 1 {
			t.Errorf("the summary of %s is in the journal %d times, want once", net.JoinHostPort(lo, port), n)
		}
	})

	t.Run("status-and-start", func(t *testing.T) { testInstalledStatus(t, c, env, data) })

	t.Run("renewal", func(t *testing.T) { testInstalledRenewal(t, c, pki, env, data) })

	t.Run("upgrade-keeps-transfers", func(t *testing.T) {
		testUpgradeHandover(t, c, env, data, deb)
	})

	t.Run("key-unreadable", func(t *testing.T) {
		// A hook and a module covering /run try to read the key the way a
		// compromised rsync would; the transfer itself must still work.
		probe := filepath.Join(c.root, "usr/local/bin/keyprobe")
		writeFile(t, probe, `#!/bin/sh
# Exit 1 so that rsync shows the client what this hook saw.
echo "uid=$(id -u) groups=$(id -Gn | tr ' ' ,) creds=${CREDENTIALS_DIRECTORY:-unset}"
for f in /run/credentials/rsync-ssl.service/key.pem /etc/rsync-ssl/private/key.pem; do
	if cat "$f" >/dev/null 2>&1; then echo "READ $f"; else echo "denied $f"; fi
done
exit 1
`, 0o755)
		conf := filepath.Join(c.root, "etc/rsync-ssl/rsyncd.conf")
		orig := readFileT(t, conf)
		writeFile(t, conf, orig+`
[hooked]
	path = /srv/rsync/data
	read only = yes
	pre-xfer exec = /usr/local/bin/keyprobe

[run]
	path = /run
	read only = yes

[etc]
	path = /etc/rsync-ssl
	read only = yes
`, 0o644)
		t.Cleanup(func() {
			writeFile(t, conf, orig, 0o644)
			os.Remove(probe)
		})
		c.exec(t, time.Minute, "systemctl", "stop", "rsync-ssl.service")
		// The data transfer works (the service reads its key, as ever).
		dest := t.TempDir()
		if out, code := c.client(t, env, rsyncSSL, "-a", "rsync://localhost/data/", dest+"/"); code != 0 {
			t.Fatalf("pull (exit %d):\n%s", code, out)
		}
		sameTree(t, data, dest)
		out, _ := c.client(t, env, rsyncSSL, "-a", "rsync://localhost/hooked/", t.TempDir()+"/")
		if !strings.Contains(out, "denied /etc/rsync-ssl/private/key.pem") || strings.Contains(out, "READ ") ||
			!strings.Contains(out, "creds=unset") || strings.Contains(out, "uid=0 ") || strings.Contains(out, "_rsync-ssl-key") {
			t.Fatalf("the pre-xfer exec hook could read the key, or did not run:\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(c.root, "run/credentials/rsync-ssl.service")); err == nil {
			t.Logf("(the credentials directory exists on the host side too)")
		}
		// The shim reads the key itself (group _rsync-ssl-key); rsync,
		// as _rsync-ssl with its own groups, meets the directory's 0710.
		etcDest := t.TempDir()
		out, _ = c.client(t, env, rsyncSSL, "-r", "rsync://localhost/etc/", etcDest+"/")
		if _, err := os.Stat(filepath.Join(etcDest, "private/key.pem")); err == nil {
			t.Fatalf("a module covering /etc/rsync-ssl served the key:\n%s", out)
		}
		if !strings.Contains(out, "Permission denied") || !strings.Contains(out, "private") {
			t.Fatalf("the /etc/rsync-ssl module did not meet the key's directory (nothing refused):\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(etcDest, "cert.pem")); err != nil {
			t.Fatalf("the /etc/rsync-ssl module served nothing at all, so it proves nothing:\n%s", out)
		}
	})

	t.Run("isolated", func(t *testing.T) {
		c.must(t, "systemctl", "enable", "--now", "rsync-ssl-isolated.socket")
		t.Cleanup(func() {
			c.exec(t, time.Minute, "systemctl", "disable", "--now", "rsync-ssl-isolated.socket")
			c.exec(t, time.Minute, "systemctl", "start", "rsync-ssl.socket")
		})
		if st, _ := c.exec(t, time.Minute, "systemctl", "is-active", "rsync-ssl.socket"); strings.TrimSpace(st) == "active" {
			t.Fatalf("rsync-ssl.socket still active beside rsync-ssl-isolated.socket (Conflicts=)")
		}
		dest := t.TempDir()
		out, code := c.client(t, env, rsyncSSL, "-a", "rsync://localhost/data/", dest+"/")
		if code != 0 {
			t.Fatalf("pull through rsync-ssl-isolated.socket (exit %d):\n%s", code, out)
		}
		sameTree(t, data, dest)
		// Each instance's summary line is on its stderr stream, which
		// keeps the instance's unit: "journalctl -u" finds it.
		c.exec(t, time.Minute, "journalctl", "--sync")
		out, _ = c.exec(t, time.Minute, "journalctl", "--no-pager", "-o", "cat", "-u", "rsync-ssl-isolated@*")
		if !strings.Contains(out, "module=data") {
			t.Errorf("journalctl -u 'rsync-ssl-isolated@*' has no summary line for module data:\n%s", out)
		}
	})
}

func anyMessage(es []map[string]any, text string) bool { return countMessages(es, text) > 0 }

func countMessages(es []map[string]any, text string) int {
	n := 0
	for _, e := range es {
		if m, _ := e["MESSAGE"].(string); strings.Contains(m, text) {
			n++
		}
	}
	return n
}
