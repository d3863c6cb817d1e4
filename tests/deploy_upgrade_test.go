package tests

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// newerDeb builds the package again from this tree, with a version above
// that of deb, and returns its path and version.
func newerDeb(t *testing.T, deb string) (string, string) {
	t.Helper()
	// rsync-ssl-shim_<version>_<arch>.deb
	parts := strings.Split(strings.TrimSuffix(filepath.Base(deb), ".deb"), "_")
	if len(parts) != 3 {
		t.Fatalf("cannot read the version of %s", deb)
	}
	ver := parts[1] + "+upgrade1"
	out := t.TempDir()
	res, code := runCmd(t, 5*time.Minute, nil, filepath.Join(repoRoot(t), "packaging", "build-deb.sh"), out, ver)
	if code != 0 {
		t.Fatalf("packaging/build-deb.sh %s (exit %d):\n%s", ver, code, res)
	}
	return strings.TrimSpace(res[strings.LastIndex(strings.TrimSpace(res), "\n")+1:]), ver
}

// busyLoad starts a listing every 0.5 s (each in its own goroutine, so a
// slow one does not thin the load) and checks that rsync-ssl.service is
// active (or reloading) between them, until stop is called (or 3 minutes pass). stop
// returns how many listings ran and what went wrong.
func busyLoad(t *testing.T, c *container, list func(t *testing.T) (string, int)) (stop func() (int, []string)) {
	var (
		mu       sync.Mutex
		n        int
		problems []string
		lists    sync.WaitGroup
	)
	note := func(format string, args ...any) {
		mu.Lock()
		problems = append(problems, time.Now().Format("15:04:05.000: ")+fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for end := time.Now().Add(3 * time.Minute); time.Now().Before(end); {
			select {
			case <-quit:
				lists.Wait()
				return
			case <-tick.C:
			}
			lists.Add(1)
			go func() {
				defer lists.Done()
				out, code := list(t)
				mu.Lock()
				n++
				mu.Unlock()
				if code != 0 {
					note("listing failed (exit %d): %s", code, out)
				}
			}()
			// Exit 0: active, or reloading (the postinst's reload).
			if st, code := c.exec(t, time.Minute, "systemctl", "is-active", "rsync-ssl.service"); code != 0 {
				note("rsync-ssl.service is %q", strings.TrimSpace(st))
			}
		}
		lists.Wait()
	}()
	var once sync.Once
	return func() (int, []string) {
		once.Do(func() { close(quit) })
		<-done
		mu.Lock()
		defer mu.Unlock()
		return n, problems
	}
}

// firstEntry waits (bounded) for the first journal entry that matches and
// passes ok, and returns it.
func firstEntry(t *testing.T, c *container, d time.Duration, ok func(map[string]any) bool, match ...string) map[string]any {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		for _, e := range journalEntries(t, c, match...) {
			if ok(e) {
				return e
			}
		}
	}
	return nil
}

func entryTime(e map[string]any) time.Time {
	us, _ := strconv.ParseInt(fmt.Sprint(e["__REALTIME_TIMESTAMP"]), 10, 64)
	return time.UnixMicro(us)
}

// testUpgradeHandover installs a newer package while the server is busy (a
// listing every 0.5 s) and a slow pull is in flight: new connections must be
// served by the new binary within 10 s, the pull must end intact, and the
// service must stay active throughout, its old process exiting once its
// transfer is done.
func testUpgradeHandover(t *testing.T, c *container, env []string, data, deb string) {
	rsyncSSL := needTool(t, "rsync-ssl")
	newDeb, newVer := newerDeb(t, deb)
	copyFileT(t, newDeb, filepath.Join(c.root, "root", filepath.Base(newDeb)))
	// The service as the installed unit starts it now.
	c.exec(t, time.Minute, "systemctl", "stop", "rsync-ssl.service")

	list := func(t *testing.T) (string, int) { return c.client(t, env, rsyncSSL, "rsync://localhost/") }
	if out, code := list(t); code != 0 {
		t.Fatalf("listing before the upgrade (exit %d):\n%s", code, out)
	}
	oldPID := strings.TrimSpace(c.must(t, "systemctl", "show", "-P", "MainPID", "rsync-ssl.service"))
	if oldPID == "0" {
		t.Fatal("rsync-ssl.service has no main process after a listing")
	}
	stop := busyLoad(t, c, list)
	defer stop()

	// 8 MiB and 300 small files at 512 KiB/s: about 17 s, most of it
	// after the upgrade.
	dest := t.TempDir()
	type res struct {
		out  string
		code int
	}
	pulled := make(chan res, 1)
	go func() {
		out, code := c.client(t, env, rsyncSSL, "-a", "--bwlimit=512", "rsync://localhost/data/", dest+"/")
		pulled <- res{out, code}
	}()
	time.Sleep(2 * time.Second)

	start := time.Now()
	c.must(t, "dpkg", "-i", "/root/"+filepath.Base(newDeb))
	dpkgTook := time.Since(start)

	// The new process's start line names its version and whom it took
	// over from; its _PID is the new process.
	took := "took over from PID " + oldPID + "), version " + newVer + ";"
	startLine := firstEntry(t, c, 20*time.Second, func(e map[string]any) bool {
		m, _ := e["MESSAGE"].(string)
		return strings.Contains(m, took)
	}, "_SYSTEMD_UNIT=rsync-ssl.service")
	if startLine == nil {
		journal, _ := c.exec(t, time.Minute, "journalctl", "--no-pager", "-n", "40", "-o", "cat", "-u", "rsync-ssl.service")
		t.Fatalf("no start line %q within 20s of dpkg -i:\n%s", took, journal)
	}
	newPID := fmt.Sprint(startLine["_PID"])
	served := firstEntry(t, c, 20*time.Second, func(e map[string]any) bool {
		_, ok := e["RSYNC_SSL_CLIENT"]
		return ok
	}, "_PID="+newPID)
	if served == nil {
		t.Fatalf("PID %s (version %s) served no connection within 20s", newPID, newVer)
	}
	after := entryTime(served).Sub(start)
	t.Logf("upgrade under load: dpkg -i took %.2f s; first connection served by the new binary (PID %s) %.2f s after dpkg -i began",
		dpkgTook.Seconds(), newPID, after.Seconds())
	if after > 10*time.Second {
		t.Errorf("the new binary served its first connection %.1f s after dpkg -i, want within 10 s", after.Seconds())
	}

	if main := strings.TrimSpace(c.must(t, "systemctl", "show", "-P", "MainPID", "rsync-ssl.service")); main != newPID {
		t.Errorf("systemd's main PID is %s, want the new process %s", main, newPID)
	}
	if exe, _ := c.exec(t, time.Minute, "readlink", "/proc/"+newPID+"/exe"); strings.TrimSpace(exe) != "/usr/bin/rsync-ssl-shim" {
		t.Errorf("PID %s runs %q, want the installed /usr/bin/rsync-ssl-shim", newPID, strings.TrimSpace(exe))
	}

	var r res
	select {
	case r = <-pulled:
	case <-time.After(2 * time.Minute):
		t.Fatal("the slow pull did not end within 2 minutes")
	}
	if r.code != 0 {
		t.Fatalf("the pull in flight during the upgrade failed (exit %d):\n%s", r.code, r.out)
	}
	sameTree(t, data, dest)
	// The old process ends once its transfer has.
	mustWaitFor(t, 15*time.Second, "the old process to exit after its transfer", func() bool {
		_, code := c.exec(t, time.Minute, "test", "-e", "/proc/"+oldPID)
		return code != 0
	})
	n, problems := stop()
	if len(problems) > 0 {
		t.Errorf("during the upgrade (%d listings):\n%s", n, strings.Join(problems, "\n"))
	}
	journal, _ := c.exec(t, time.Minute, "journalctl", "--no-pager", "-o", "cat", "-u", "rsync-ssl.service", "--since", "-3min")
	for _, want := range []string{"(version " + newVer + "): handed the listening socket to PID " + newPID + "; draining ",
		"exiting: every session has ended; PID " + newPID} {
		if !strings.Contains(journal, want) {
			t.Errorf("journal lacks %q:\n%s", want, journal)
		}
	}
	if st, _ := c.exec(t, time.Minute, "systemctl", "is-active", "rsync-ssl.service"); strings.TrimSpace(st) != "active" {
		t.Errorf("rsync-ssl.service is %q after the old process exited", strings.TrimSpace(st))
	}
	if out, code := list(t); code != 0 {
		t.Errorf("listing after the upgrade (exit %d):\n%s", code, out)
	}
	t.Logf("%d listings during the upgrade, every one served", n)
}
