package tests

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// installBinary puts a copy of from at path the way dpkg does: written
// beside it, then renamed over it.
func installBinary(t *testing.T, from, path string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".dpkg-new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// shimVersion builds the binary under test again with another version.
func shimVersion(t *testing.T, ver string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "rsync-ssl-shim")
	cmd := exec.Command("go", "build", "-o", out, "-ldflags", "-X main.version="+ver, ".")
	cmd.Dir = repoRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// handedTo waits for the line of PID from saying it handed the socket to a
// new process of version ver, and returns that process's PID.
func handedTo(t *testing.T, log *lockedBuffer, from int, ver string, d time.Duration) int {
	t.Helper()
	re := regexp.MustCompile(fmt.Sprintf(`rsync-ssl-shim\[%d\]: new binary at \S+ \(version %s\): handed the listening socket to PID (\d+); draining (\d+) sessions`, from, regexp.QuoteMeta(ver)))
	var m []string
	if !waitFor(func() bool { m = re.FindStringSubmatch(log.String()); return m != nil }, d) {
		t.Fatalf("PID %d did not hand the socket to version %s within %v:\n%s", from, ver, d, log)
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// firstServed waits for the first connection summary of PID and returns when
// it was seen.
func firstServed(t *testing.T, log *lockedBuffer, pid int, d time.Duration) time.Time {
	t.Helper()
	mark := fmt.Sprintf("rsync-ssl-shim[%d]: 127.0.0.1:", pid)
	if !waitFor(func() bool {
		for _, l := range strings.Split(log.String(), "\n") {
			if strings.Contains(l, mark) && strings.Contains(l, ": served ") {
				return true
			}
		}
		return false
	}, d) {
		t.Fatalf("PID %d served no connection within %v:\n%s", pid, d, log)
	}
	return time.Now()
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// TestServeHandover replaces serve's binary under a busy accept loop
// (--listen), as a package upgrade does: a binary that cannot serve changes
// nothing; a good one takes over the listening socket within seconds (by
// the poll, and at once on SIGHUP) while the old process finishes its
// transfer intact; and the newest process does not exit idle while an older
// one still serves.
func TestServeHandover(t *testing.T) {
	slowTier(t, "hand-over")
	rsync := rsyncPath(t)
	p := newPKI(t)
	rd := newRsyncd(t)
	makeTree(t, rd.Data, 8, 50)
	bin := filepath.Join(t.TempDir(), "rsync-ssl-shim")
	installBinary(t, shimBin, bin)
	v2, v3 := shimVersion(t, "test-v2"), shimVersion(t, "test-v3")
	bad := filepath.Join(t.TempDir(), "bad")
	writeFile(t, bad, "#!/bin/sh\necho 'a broken build' >&2\nexit 3\n", 0o755)

	port := freePort(t, "127.0.0.1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin, serveArgs(p, rd, rsync, "--listen", addr, "--exit-idle", "2s")...)
	// Not under systemd, whatever runs the tests.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "INVOCATION_ID=") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	log := startBg(t, cmd)
	waitPortOr(t, addr, 10*time.Second, log)
	first := cmd.Process.Pid
	// The port opens before SIGHUP is handled.
	mustWaitFor(t, 10*time.Second, "the start line", func() bool { return strings.Contains(log.String(), "serving "+addr) })
	s := &server{Host: "localhost", Port: port}
	list := func() (string, int) { return rsyncSSL(t, s, p, "openssl", "rsync://localhost/") }

	// A binary that does not start: logged, and the old process serves on.
	installBinary(t, bad, bin)
	cmd.Process.Signal(syscall.SIGHUP)
	mustWaitFor(t, 10*time.Second, "the failed hand-over line", func() bool {
		return strings.Contains(log.String(), "did not take over: it exited before serving")
	})
	if out, code := list(); code != 0 || !alive(first) {
		t.Fatalf("after a broken binary: listing exit %d, serve alive %v:\n%s\n%s", code, alive(first), out, log)
	}

	// Busy: a listing every 0.5 s, and a pull of 8 MiB at 1 MiB/s.
	var mu sync.Mutex
	var failures []string
	listings := 0
	quit, loadDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(loadDone)
		var lists sync.WaitGroup
		defer lists.Wait()
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for end := time.Now().Add(time.Minute); time.Now().Before(end); {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			lists.Add(1)
			go func() {
				defer lists.Done()
				out, code := list()
				mu.Lock()
				defer mu.Unlock()
				listings++
				if code != 0 {
					failures = append(failures, fmt.Sprintf("exit %d: %s", code, out))
				}
			}()
		}
	}()
	dest := t.TempDir()
	pulled := make(chan int, 1)
	var pullOut string
	go func() {
		out, code := rsyncSSL(t, s, p, "openssl", "-a", "--bwlimit=1024", "rsync://localhost/data/", dest+"/")
		pullOut = out
		pulled <- code
	}()
	time.Sleep(1500 * time.Millisecond)

	// A good binary, noticed by the poll alone.
	start := time.Now()
	installBinary(t, v2, bin)
	second := handedTo(t, log, first, "test-v2", 15*time.Second)
	byPoll := firstServed(t, log, second, 15*time.Second).Sub(start)
	if !strings.Contains(log.String(), fmt.Sprintf("rsync-ssl-shim[%d]: serving %s from a hand-over (took over from PID %d), version test-v2;", second, addr, first)) {
		t.Errorf("no start line of PID %d naming PID %d and its version:\n%s", second, first, log)
	}

	// Another, announced by SIGHUP, while the first process still drains.
	start = time.Now()
	installBinary(t, v3, bin)
	syscall.Kill(second, syscall.SIGHUP)
	third := handedTo(t, log, second, "test-v3", 15*time.Second)
	bySignal := firstServed(t, log, third, 15*time.Second).Sub(start)
	fmt.Printf("hand-over: rename to first connection served by the new binary: %.2f s (poll), %.2f s (SIGHUP)\n", byPoll.Seconds(), bySignal.Seconds())
	t.Logf("rename to first connection served by the new binary: %.2f s by the poll, %.2f s after SIGHUP", byPoll.Seconds(), bySignal.Seconds())
	if byPoll > 10*time.Second || bySignal > 10*time.Second {
		t.Errorf("a new binary took over after %v (poll) and %v (SIGHUP), want within 10 s", byPoll, bySignal)
	}

	// Quiet now but for the pull: the newest process (--exit-idle 2s)
	// must outlive the first one's transfer.
	close(quit)
	<-loadDone
	var code int
	select {
	case code = <-pulled:
	case <-time.After(time.Minute):
		t.Fatalf("the pull did not end within a minute:\n%s", log)
	}
	if code != 0 {
		t.Fatalf("the pull in flight across two hand-overs failed (exit %d):\n%s\n%s", code, pullOut, log)
	}
	sameTree(t, rd.Data, dest)
	if !alive(third) {
		t.Fatalf("PID %d exited while PID %d still served a transfer:\n%s", third, first, log)
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d listings failed across the hand-overs:\n%s", len(failures), listings, strings.Join(failures, "\n"))
	}
	mustWaitFor(t, 10*time.Second, "the first process to exit after its transfer", func() bool { return !alive(first) })
	mustWaitFor(t, 15*time.Second, "the newest process to exit idle once the older ones are gone", func() bool { return !alive(third) })
	out := log.String()
	for _, want := range []string{
		fmt.Sprintf("rsync-ssl-shim[%d]: exiting: every session has ended; PID %d (version test-v2) serves", first, second),
		fmt.Sprintf("rsync-ssl-shim[%d]: exiting: idle for 2s", third),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if i, j := strings.Index(out, fmt.Sprintf("rsync-ssl-shim[%d]: exiting:", first)), strings.Index(out, fmt.Sprintf("rsync-ssl-shim[%d]: exiting:", third)); i < 0 || j < i {
		t.Errorf("the newest process exited before the first one:\n%s", out)
	}
}
