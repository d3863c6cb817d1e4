package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// servedSerialIn is the serial of the certificate the container's port 874
// serves to a new connection ("" if none), read by "rsync-ssl-shim check"
// without verification, so that any certificate is read.
func servedSerialIn(t *testing.T, c *container) string {
	t.Helper()
	out, _ := c.client(t, []string{"RSYNC_SSL_CA_CERT="}, shimBin, "check", "--json", "127.0.0.1:874")
	var r struct {
		Hops []struct {
			TLS *struct {
				Serial string `json:"serial"`
			} `json:"tls"`
		} `json:"hops"`
	}
	json.Unmarshal([]byte(out), &r)
	for _, h := range r.Hops {
		if h.TLS != nil {
			return h.TLS.Serial
		}
	}
	return ""
}

// untilServed polls new connections until the container serves serial, and
// returns the time from since to the end of the first connection that got
// it (each probe takes about 0.25 s: a full "check" walk), or fails after
// limit.
func untilServed(t *testing.T, c *container, serial string, since time.Time, limit time.Duration) time.Duration {
	t.Helper()
	last := ""
	for time.Since(since) < limit {
		if last = servedSerialIn(t, c); last == serial {
			return time.Since(since)
		}
		time.Sleep(50 * time.Millisecond)
	}
	journal, _ := c.exec(t, time.Minute, "journalctl", "--no-pager", "-n", "30", "-o", "cat", "-u", "rsync-ssl.service")
	t.Fatalf("%v after the renewal, new connections still get serial %q, want %s\njournal:\n%s", limit, last, serial, journal)
	return 0
}

// renewalReport prints one scenario's number for tests/bench/renewal.sh.
func renewalReport(t *testing.T, scenario string, d time.Duration) {
	t.Logf("renewal %s: new serial served %.2f s after the change", scenario, d.Seconds())
	if os.Getenv("RENEWAL_REPORT") == "1" {
		fmt.Printf("renewal: %-40s %6.2f s\n", scenario, d.Seconds())
	}
}

// testInstalledRenewal renews the certificate of the installed default unit
// three ways while it is busy (a listing every 0.5 s, a slow pull, silent
// connections held open): by rename, in place with "systemctl reload", and
// the way certbot does with the package's deploy hook. Every new connection
// must get the new certificate within 10 s (at once after a reload), the
// pull in flight must end byte-identical, and the service must not restart.
func testInstalledRenewal(t *testing.T, c *container, pki *PKI, env []string, data string) {
	rsyncSSL := needTool(t, "rsync-ssl")
	bash := needTool(t, "bash")
	certPath := filepath.Join(c.root, "etc/rsync-ssl/cert.pem")
	keyPath := filepath.Join(c.root, "etc/rsync-ssl/private/key.pem")
	oldCert, oldKey := readFileT(t, certPath), readFileT(t, keyPath)
	t.Cleanup(func() {
		writeFile(t, certPath, oldCert, 0o644)
		writeFile(t, keyPath, oldKey, 0o640)
		c.exec(t, time.Minute, "systemctl", "stop", "rsync-ssl.service")
	})
	c.exec(t, time.Minute, "systemctl", "stop", "rsync-ssl.service")
	// stage copies a pair into the container's /root for "install" there.
	stage := func(name, cert, key string) (string, string) {
		copyFileT(t, cert, filepath.Join(c.root, "root", name+".pem"))
		copyFileT(t, key, filepath.Join(c.root, "root", name+".key"))
		return "/root/" + name + ".pem", "/root/" + name + ".key"
	}

	// The load: listings every 0.5 s (unverified, so that they pass
	// whichever certificate is served), and every one must work.
	noVerify := []string{"RSYNC_SSL_TYPE=openssl", "RSYNC_SSL_CA_CERT="}
	stop := make(chan struct{})
	var listings, failed atomic.Int32
	var failOut atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
			out, code := c.client(t, noVerify, rsyncSSL, "rsync://localhost/")
			listings.Add(1)
			if code != 0 {
				failed.Add(1)
				failOut.Store(out)
			}
		}
	}()
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()
	// Silent connections: three TCP connects that never send a byte, each
	// replaced as the handshake timeout ends it.
	silent := exec.Command("ip", "netns", "exec", c.netns, bash, "-c",
		`for i in 1 2 3; do (while :; do exec 3<>/dev/tcp/127.0.0.1/874 && sleep 9 || sleep 1; exec 3>&-; done) & done; wait`)
	silent.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := silent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { syscall.Kill(-silent.Process.Pid, syscall.SIGKILL); silent.Wait() }()
	mustWaitFor(t, 20*time.Second, "rsync-ssl.service to run", func() bool {
		return strings.TrimSpace(c.must(t, "systemctl", "show", "-P", "MainPID", "rsync-ssl.service")) != "0"
	})
	pid := strings.TrimSpace(c.must(t, "systemctl", "show", "-P", "MainPID", "rsync-ssl.service"))

	t.Run("busy-rename", func(t *testing.T) {
		dest := t.TempDir()
		done := make(chan string, 1)
		go func() {
			out, code := c.client(t, env, rsyncSSL, "-a", "--bwlimit=800", "rsync://localhost/data/", dest+"/")
			done <- fmt.Sprintf("exit %d\n%s", code, out)
		}()
		time.Sleep(1500 * time.Millisecond)
		fresh := newNamedPKI(t, "Renewed CA")
		serial, _, _ := certFacts(t, fresh.Cert)
		cert, key := stage("renew1", fresh.Cert, fresh.Key)
		c.must(t, "install", "-m", "0640", "-g", "_rsync-ssl-key", key, "/etc/rsync-ssl/private/.key.new")
		c.must(t, "install", "-m", "0644", cert, "/etc/rsync-ssl/.cert.new")
		start := time.Now()
		c.must(t, "mv", "/etc/rsync-ssl/private/.key.new", "/etc/rsync-ssl/private/key.pem")
		c.must(t, "mv", "/etc/rsync-ssl/.cert.new", "/etc/rsync-ssl/cert.pem")
		renewalReport(t, "busy, rename, no signal", untilServed(t, c, serial, start, 10*time.Second))
		// A client that trusts only the new CA gets in.
		newEnv := []string{"RSYNC_SSL_TYPE=openssl", "RSYNC_SSL_CA_CERT=" + fresh.CA}
		if out, code := c.client(t, newEnv, rsyncSSL, "rsync://localhost/"); code != 0 {
			t.Fatalf("a client of the new CA after the renewal (exit %d):\n%s", code, out)
		}
		select {
		case r := <-done:
			if !strings.HasPrefix(r, "exit 0\n") {
				t.Fatalf("the pull in flight during the renewal: %s", r)
			}
			if time.Since(start) < time.Second {
				t.Fatalf("the pull ended before the renewal could overlap it")
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("the pull in flight did not end")
		}
		sameTree(t, data, dest)
	})

	t.Run("systemctl-reload", func(t *testing.T) {
		next, nextKey := pki.Issue(t, "reload", CertOpts{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}})
		serial, _, _ := certFacts(t, next)
		cert, key := stage("renew2", next, nextKey)
		// In place, not by rename: the same inodes, rewritten.
		c.must(t, "sh", "-c", "cat "+key+" >/etc/rsync-ssl/private/key.pem && cat "+cert+" >/etc/rsync-ssl/cert.pem")
		start := time.Now()
		c.must(t, "systemctl", "reload", "rsync-ssl.service")
		// The poll looks every 5 s; the reload must not wait for it.
		renewalReport(t, "in place, systemctl reload", untilServed(t, c, serial, start, time.Second))
		if es := journalEntries(t, c, "_SYSTEMD_UNIT=rsync-ssl.service"); !anyMessage(es, "reloaded certificates (SIGHUP): /etc/rsync-ssl/cert.pem: serial "+serial) {
			t.Errorf("the journal has no reload line naming serial %s", serial)
		}
	})

	t.Run("certbot", func(t *testing.T) {
		hook := "/usr/share/doc/rsync-ssl-shim/examples/certbot-deploy-hook"
		le := "/etc/letsencrypt"
		t.Cleanup(func() { os.RemoveAll(filepath.Join(c.root, "etc/letsencrypt")) })
		// certbot's layout and modes: live/ and archive/ 0700 root,
		// privkey 0600, live/HOST/*.pem symlinks into archive/HOST/.
		c.must(t, "install", "-d", "-m", "0755", le)
		c.must(t, "install", "-d", "-m", "0700", le+"/live", le+"/archive", le+"/renewal-hooks", le+"/renewal-hooks/deploy")
		c.must(t, "install", "-d", "-m", "0755", le+"/live/host", le+"/archive/host")
		c.must(t, "cp", hook, le+"/renewal-hooks/deploy/rsync-ssl-shim")
		var served []string
		for n := 1; n <= 2; n++ {
			next, nextKey := pki.Issue(t, fmt.Sprintf("le%d", n), CertOpts{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}})
			serial, _, _ := certFacts(t, next)
			cert, key := stage(fmt.Sprintf("le%d", n), next, nextKey)
			a := fmt.Sprintf("%s/archive/host/%%s%d.pem", le, n)
			c.must(t, "install", "-m", "0644", cert, fmt.Sprintf(a, "fullchain"))
			c.must(t, "install", "-m", "0600", key, fmt.Sprintf(a, "privkey"))
			for _, f := range []string{"fullchain", "privkey"} {
				c.must(t, "ln", "-sfn", fmt.Sprintf("../../archive/host/%s%d.pem", f, n), le+"/live/host/"+f+".pem")
			}
			// certbot runs each deploy hook with RENEWED_LINEAGE set.
			start := time.Now()
			c.must(t, "env", "RENEWED_LINEAGE="+le+"/live/host", "run-parts", "--report", le+"/renewal-hooks/deploy")
			d := untilServed(t, c, serial, start, 10*time.Second)
			renewalReport(t, fmt.Sprintf("certbot deploy hook, renewal %d", n), d)
			served = append(served, serial)
		}
		if served[0] == served[1] {
			t.Fatal("the second renewal served the first one's serial")
		}
		modes := c.must(t, "stat", "-c", "%n %U:%G %a", "/etc/rsync-ssl/private", "/etc/rsync-ssl/private/key.pem", "/etc/rsync-ssl/cert.pem")
		for _, want := range []string{"/etc/rsync-ssl/private root:_rsync-ssl-key 710", "/etc/rsync-ssl/private/key.pem root:_rsync-ssl-key 640", "/etc/rsync-ssl/cert.pem root:root 644"} {
			if !strings.Contains(modes, want) {
				t.Errorf("after the deploy hook: want %q in\n%s", want, modes)
			}
		}
	})

	stopLoad()
	if now := strings.TrimSpace(c.must(t, "systemctl", "show", "-P", "MainPID", "rsync-ssl.service")); now != pid {
		t.Errorf("rsync-ssl.service restarted during the renewals (main PID %s, then %s)", pid, now)
	}
	if n, f := listings.Load(), failed.Load(); n < 10 || f > 0 {
		out, _ := failOut.Load().(string)
		t.Errorf("%d of %d listings during the renewals failed (want none, and at least 10 tried); last:\n%s", f, n, out)
	}
}
