package tests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func fileSum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		return "missing: " + err.Error()
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

// rssKiB is a process's resident set, 0 if it is gone.
func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// TestLoadSocketActivation runs many concurrent sessions through
// systemd-socket-activate --accept (one serve per connection), half pulls
// and half pushes of a random file, and checks every checksum. make test:
// 40 x 4 MiB; make stress (STRESS=1): 200 x 16 MiB.
func TestLoadSocketActivation(t *testing.T) {
	slowTier(t, "load")
	rsync := rsyncPath(t)
	sessions, mib := scaled(40, 200), scaled(4, 16)
	p := newPKI(t)
	rd := newRsyncd(t)
	src := filepath.Join(t.TempDir(), "load.bin")
	makeFile(t, src, mib)
	if err := os.Link(src, filepath.Join(rd.Data, "load.bin")); err != nil {
		copyFile(t, src, filepath.Join(rd.Data, "load.bin"))
	}
	want := fileSum(t, src)
	s := startMode(t, "inetd", serveArgs(p, rd, rsync))
	env := []string{"RSYNC_SSL_CA_CERT=" + p.CA, "RSYNC_SSL_PORT=" + strconv.Itoa(s.Port)}
	work := t.TempDir()

	// Sample every serve process of this test for the peak memory.
	var peakOne, peakSum, peakN atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			var sum, n int64
			for _, pid := range procsNamed("rsync-ssl-shim", rd.Conf) {
				r := int64(rssKiB(pid))
				sum += r
				n++
				if r > peakOne.Load() {
					peakOne.Store(r)
				}
			}
			if sum > peakSum.Load() {
				peakSum.Store(sum)
			}
			if n > peakN.Load() {
				peakN.Store(n)
			}
		}
	}()

	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	errs := make(chan string, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			push := i%2 == 1
			var out string
			var code int
			var got string
			if push {
				out, code = loadCmd(env, shimBin, "rsync", "-a", "--mkpath", src, fmt.Sprintf("localhost::up/s%d/", i))
				got = fileSum(t, filepath.Join(rd.Up, fmt.Sprintf("s%d", i), "load.bin"))
				os.RemoveAll(filepath.Join(rd.Up, fmt.Sprintf("s%d", i)))
			} else {
				dst := filepath.Join(work, fmt.Sprintf("s%d", i))
				out, code = loadCmd(env, shimBin, "rsync", "-a", "localhost::data/load.bin", dst+"/")
				got = fileSum(t, filepath.Join(dst, "load.bin"))
				os.RemoveAll(dst)
			}
			if code != 0 || got != want {
				failed.Add(1)
				errs <- fmt.Sprintf("session %d (push %v): exit %d, sum ok %v: %s", i, push, code, got == want, out)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(stop)
	<-sampled
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if left := procsNamed("rsync-ssl-shim", rd.Conf); len(left) > 0 {
		time.Sleep(2 * time.Second)
		if left = procsNamed("rsync-ssl-shim", rd.Conf); len(left) > 0 {
			t.Errorf("serve processes left after the load: %v", left)
		}
	}
	served := strings.Count(s.Log.String(), "rsync_exit=0")
	if served < sessions {
		t.Errorf("%d summary lines with rsync_exit=0, want %d", served, sessions)
	}
	mbps := float64(sessions*mib) / took.Seconds()
	t.Logf("%d sessions x %d MiB in %v (%.0f MiB/s); peak %d serve processes at once, peak serve RSS %d KiB, peak sum %d KiB",
		sessions, mib, took.Round(time.Millisecond), mbps, peakN.Load(), peakOne.Load(), peakSum.Load())
	if !t.Failed() {
		figure("socket activation (`systemd-socket-activate --accept --inetd`): %d concurrent sessions (half pull, half push) x %d MiB, every checksum matched, in %.1f s (%.0f MiB/s) on %d CPUs; peak %d serve processes at once; peak RSS of one serve process %.1f MiB; peak RSS of all serve processes together %.1f MiB (%.1f MiB per concurrent connection)",
			sessions, mib, took.Seconds(), mbps, runtimeCPUs(), peakN.Load(), float64(peakOne.Load())/1024, float64(peakSum.Load())/1024,
			float64(peakSum.Load())/1024/float64(max(peakN.Load(), 1)))
		record(t, "Load", fmt.Sprintf("socket-activation-%dx%dMiB", sessions, mib), fmt.Sprintf("%d concurrent rsync sessions, %d MiB each", sessions, mib),
			fmt.Sprintf("all %d checksums match; peak serve RSS %.1f MiB", sessions, float64(peakOne.Load())/1024), 10*time.Minute, took)
	}
}

// TestLoadAcceptLoop sends many sequential connections to one serve
// --listen process (listings, with a bad hello or junk every few) and
// checks that its fds, threads and memory do not grow. make test: 1,000;
// make stress: 5,000.
func TestLoadAcceptLoop(t *testing.T) {
	slowTier(t, "load")
	rsync := rsyncPath(t)
	n := scaled(1000, 5000)
	p := newPKI(t)
	rd := newRsyncd(t)
	s := startServeListening(t, serveArgs(p, rd, rsync, "--handshake-timeout", "2s"))
	pids := procsNamed("rsync-ssl-shim", rd.Conf)
	if len(pids) != 1 {
		t.Fatalf("want one serve process, found %v", pids)
	}
	pid := pids[0]
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	listing := goClient("localhost", listingRequest)
	junk := rawClient([]byte("B\x8f\x13\x00 junk"), 0, false)
	tls10 := rawClient(helloRecord(0x0301), 0, false)
	listings := 0
	one := func(i int) {
		switch i % 10 {
		case 3:
			junk(t, addr)
		case 7:
			tls10(t, addr)
		default:
			if out := listing(t, addr); !strings.Contains(out, "data") {
				t.Fatalf("connection %d: listing %q", i, out)
			}
			listings++
		}
	}
	settle := func() (int, int, int) {
		// Every listing so far has its summary line (the session is over),
		// no rsync is left, and the counts read the same twice running.
		mustWaitFor(t, 10*time.Second, fmt.Sprintf("%d summary lines", listings), func() bool {
			return strings.Count(s.Log.String(), "rsync_exit=") >= listings
		})
		mustWaitFor(t, 10*time.Second, "the last rsync to exit", func() bool { return len(procsNamed("rsync", rd.Conf)) == 0 })
		var f, r, th int
		mustWaitFor(t, 10*time.Second, "steady fd and thread counts", func() bool {
			f0, _, th0 := procStatus(t, pid)
			time.Sleep(50 * time.Millisecond)
			f, r, th = procStatus(t, pid)
			return f == f0 && th == th0
		})
		return f, r, th
	}
	warm := 200
	for i := range warm {
		one(i)
	}
	fd0, rss0, thr0 := settle()
	start := time.Now()
	type sample struct{ at, fds, rss, thr int }
	var samples []sample
	for i := range n {
		one(i)
		if (i+1)%(n/5) == 0 {
			f, r, th := procStatus(t, pid)
			samples = append(samples, sample{i + 1, f, r, th})
		}
	}
	took := time.Since(start)
	fd1, rss1, thr1 := settle()
	t.Logf("%d connections in %v; before: fds %d rss %d KiB threads %d; after: fds %d rss %d KiB threads %d; samples %v",
		n, took.Round(time.Millisecond), fd0, rss0, thr0, fd1, rss1, thr1, samples)
	if fd1 != fd0 {
		t.Errorf("fds grew from %d to %d", fd0, fd1)
	}
	if thr1 > thr0+2 {
		t.Errorf("threads grew from %d to %d", thr0, thr1)
	}
	// Go's heap settles within a few MiB; a leak of even 1 KiB per
	// connection would show as several MiB over the run.
	if rss1 > rss0+8*1024 {
		t.Errorf("RSS grew from %d KiB to %d KiB over %d connections", rss0, rss1, n)
	}
	if left := procsNamed("rsync", rd.Conf); len(left) > 0 {
		t.Errorf("rsync processes left: %v", left)
	}
	if !t.Failed() {
		figure("accept loop (`serve` on a listening socket): %d sequential connections (8 of 10 module listings, 1 junk, 1 TLS 1.0 hello) after %d warm-up, in %.1f s; fds %d → %d, threads %d → %d, RSS %.1f → %.1f MiB",
			n, warm, took.Seconds(), fd0, fd1, thr0, thr1, float64(rss0)/1024, float64(rss1)/1024)
		record(t, "Load", fmt.Sprintf("accept-loop-%d", n), fmt.Sprintf("%d sequential connections to one serve accept loop", n),
			fmt.Sprintf("fds %d→%d, threads %d→%d, RSS %.1f→%.1f MiB", fd0, fd1, thr0, thr1, float64(rss0)/1024, float64(rss1)/1024), 10*time.Minute, took)
	}
}

func makeFile(t *testing.T, p string, mib int) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1<<20)
	for range mib {
		copy(b, randBytes(len(b)))
		f.Write(b)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// loadCmd runs one load client. Unlike runCmd it is safe off the test's
// goroutine, and it allows the TLS helper a while to finish its close after
// rsync exits: on a saturated machine that takes more than runCmd's 2s.
func loadCmd(env []string, name string, args ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 30 * time.Second
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		return string(out) + err.Error(), -1
	}
	return string(out), 0
}
