package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The fault tests interrupt a real transfer (a 16 MiB file and 60 small
// ones, rate-limited so it is still running when the fault strikes) and
// check that everything involved ends within a bound, and that every file
// at the destination is the old or the new version, never a torn one.

const faultStall = 3 * time.Second

// bgProc is a client or other program running in its own process group.
type bgProc struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	code int
}

func startProc(t *testing.T, env []string, name string, args ...string) *bgProc {
	t.Helper()
	b := &bgProc{out: &lockedBuffer{}, done: make(chan struct{})}
	b.cmd = exec.Command(name, args...)
	b.cmd.Env = append(os.Environ(), env...)
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := b.cmd.Wait()
		b.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			b.code = ee.ExitCode()
		}
		close(b.done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGCONT)
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.done
	})
	return b
}

// wait waits up to d for the program to end and returns how long it took.
func (b *bgProc) wait(t *testing.T, d time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-b.done:
		return time.Since(start)
	case <-time.After(d):
		t.Fatalf("%s still running %v after the fault; output:\n%s", what, d, b.out)
	}
	return 0
}

// procsNamed lists pids whose comm is comm and whose command line contains
// arg.
func procsNamed(comm, arg string) []int {
	var pids []int
	for _, p := range procsWithArg(arg) {
		pid, _ := strconv.Atoi(strings.Fields(p)[0])
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(b)) == comm {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

// waitProcs waits until a process named comm with arg runs.
func waitProcs(t *testing.T, comm, arg string) []int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if p := procsNamed(comm, arg); len(p) > 0 {
			return p
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s process with %q started", comm, arg)
	return nil
}

// versions is the old and new content of a tree, by name.
type versions struct{ old, new map[string]string }

// rsyncTemp matches rsync's temporary file names (.NAME.XXXXXX).
var rsyncTemp = regexp.MustCompile(`(^|/)\.[^/]+\.[A-Za-z0-9]{6}$`)

// checkOldOrNew fails the test if a file under dir is neither its old nor
// its new version; it returns rsync temporary files left behind.
func checkOldOrNew(t *testing.T, dir string, v versions) (oldN, newN int, temps []string) {
	t.Helper()
	got := treeSums(t, dir)
	for name, sum := range got {
		if sum == "dir" {
			continue
		}
		switch {
		case sum == v.new[name]:
			newN++
		case sum == v.old[name]:
			oldN++
		case rsyncTemp.MatchString(name):
			temps = append(temps, name)
		default:
			t.Errorf("%s is torn: neither the old nor the new version", name)
		}
	}
	for name := range v.old {
		if _, ok := got[name]; !ok {
			t.Errorf("%s is missing at the destination", name)
		}
	}
	return oldN, newN, temps
}

// faultRig is a server in inetd mode with an old tree at the destination
// side and a new tree at the source side.
type faultRig struct {
	p       *PKI
	rd      *Rsyncd
	s       *server
	newTree string
	oldTree string
	v       versions
	host    string // where clients connect
	netns   string // run clients in this namespace, if set
}

func newFaultRig(t *testing.T, extra ...string) *faultRig {
	t.Helper()
	rsync := rsyncPath(t)
	dir := t.TempDir()
	r := &faultRig{p: newPKI(t), rd: newRsyncd(t), host: "localhost"}
	r.oldTree = filepath.Join(dir, "old")
	oldTree := r.oldTree
	r.newTree = filepath.Join(dir, "new")
	makeTree(t, oldTree, 16, 60)
	makeTree(t, r.newTree, 16, 60)
	r.v = versions{old: treeSums(t, oldTree), new: treeSums(t, r.newTree)}
	copyTree(t, r.newTree, r.rd.Data)
	copyTree(t, oldTree, r.rd.Up)
	args := serveArgs(r.p, r.rd, rsync, append([]string{"--stall-timeout", faultStall.String()}, extra...)...)
	if len(extra) > 0 && extra[0] == "--netns" {
		return r // the caller starts the server
	}
	r.s = startMode(t, "inetd", args)
	return r
}

// client starts a rate-limited pull (into a copy of the old tree) or push
// (from the new tree) through stock rsync-ssl.
func (r *faultRig) client(t *testing.T, push bool, extra ...string) (*bgProc, string) {
	t.Helper()
	needTool(t, "rsync-ssl")
	needTool(t, "openssl")
	env := []string{"RSYNC_SSL_TYPE=openssl", "RSYNC_SSL_CA_CERT=" + r.p.CA, "RSYNC_SSL_PORT=" + strconv.Itoa(r.s.Port), "RSYNC_PORT=0"}
	args := append([]string{"-a", "-I", "--bwlimit=3000"}, extra...)
	var dest string
	if push {
		dest = r.rd.Up
		args = append(args, r.newTree+"/", r.host+"::up/")
	} else {
		dest = filepath.Join(t.TempDir(), "dest")
		os.MkdirAll(dest, 0o755)
		copyTree(t, r.rd.Up, dest) // the old tree
		args = append(args, r.host+"::data/", dest+"/")
	}
	name := "rsync-ssl"
	if r.netns != "" {
		args = append([]string{"netns", "exec", r.netns, "env"}, append(env, append([]string{"rsync-ssl"}, args...)...)...)
		name = "ip"
	}
	return startProc(t, env, name, args...), dest
}

// midTransfer waits until rsync has been started for the session and the
// transfer is under way: its rsync processes have moved midTransferBytes
// (read and written, /proc/PID/io), not a guessed time.
func (r *faultRig) midTransfer(t *testing.T) []int {
	t.Helper()
	pids := waitProcs(t, "rsync", r.rd.Conf)
	mustWaitFor(t, 30*time.Second, "the transfer to get under way", func() bool {
		var moved int64
		for _, pid := range procsNamed("rsync", r.rd.Conf) {
			moved += procIO(pid)
		}
		return moved >= midTransferBytes
	})
	return pids
}

// midTransferBytes is how much a session's rsync has moved when it counts
// as mid-transfer: well into the tree's 16 MiB file, far from its end at the
// client's rate limit.
const midTransferBytes = 2 << 20

// procIO is what a process has read and written so far (rchar + wchar), 0
// once it is gone.
func procIO(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0
	}
	var n int64
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		if k == "rchar" || k == "wchar" {
			x, _ := strconv.ParseInt(v, 10, 64)
			n += x
		}
	}
	return n
}

// cleanup waits until no serve and no rsync of this rig is left, bounded.
func (r *faultRig) gone(t *testing.T, bound time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		shims := procsNamed("rsync-ssl-shim", r.rd.Conf)
		rsyncs := procsNamed("rsync", r.rd.Conf)
		if len(shims) == 0 && len(rsyncs) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > bound {
			t.Fatalf("after %v still running: serve %v, rsync %v\nserver log:\n%s", bound, shims, rsyncs, r.s.Log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *faultRig) report(t *testing.T, name, input string, push bool, dest string, bound, took time.Duration, clientCode int) {
	t.Helper()
	oldN, newN, temps := checkOldOrNew(t, dest, r.v)
	if newN == 0 && oldN == 0 {
		t.Errorf("no file at the destination")
	}
	dir := "pull"
	if push {
		dir = "push"
	}
	outcome := fmt.Sprintf("%s: client exit %d; all ended in bound; destination: %d old, %d new, 0 torn, %d rsync temp files", dir, clientCode, oldN, newN, len(temps))
	if line := lastShimLine(r.s.Log.String()); line != "" {
		outcome += "; serve: " + normalize(line)
	}
	record(t, "Faults (inetd mode, --stall-timeout "+faultStall.String()+")", name, input, outcome, bound, took)
}

// lastShimLine is serve's last summary or error line for a session.
func lastShimLine(log string) string {
	var last string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "rsync-ssl-shim[") && (strings.Contains(l, "served") || strings.Contains(l, " with ")) &&
			!strings.Contains(l, "without sending anything") {
			last = l
		}
	}
	return last
}

func TestFaultRsyncKilled(t *testing.T) {
	slowTier(t, "fault")
	for _, push := range []bool{false, true} {
		t.Run(map[bool]string{false: "pull", true: "push"}[push], func(t *testing.T) {
			r := newFaultRig(t)
			c, dest := r.client(t, push)
			pids := r.midTransfer(t)
			start := time.Now()
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			// The client ends 4 to 6 s after the kill on an idle
			// 2-CPU machine (a push: its rsync notices between two
			// --bwlimit sleeps); the bound leaves room for a busy one.
			const bound = 15 * time.Second
			c.wait(t, bound, "the client")
			if c.code == 0 {
				t.Errorf("client exit 0 after rsync was killed")
			}
			took := max(r.gone(t, bound), time.Since(start))
			r.report(t, "rsync-kill-9", "kill -9 of rsync --daemon mid-transfer", push, dest, bound, took, c.code)
		})
	}
}

func TestFaultClientKilled(t *testing.T) {
	slowTier(t, "fault")
	for _, push := range []bool{false, true} {
		t.Run(map[bool]string{false: "pull", true: "push"}[push], func(t *testing.T) {
			r := newFaultRig(t)
			c, dest := r.client(t, push)
			r.midTransfer(t)
			start := time.Now()
			syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.done
			const bound = 10 * time.Second
			took := r.gone(t, bound) + time.Since(start)
			r.report(t, "client-kill-9", "kill -9 of the client (rsync and its TLS helper) mid-transfer", push, dest, bound, took, c.code)
		})
	}
}

// TestFaultClientStopsReading suspends the pulling client: the server's
// writes fill the socket buffers and stop, and --stall-timeout must end the
// session.
func TestFaultClientStopsReading(t *testing.T) {
	slowTier(t, "fault")
	r := newFaultRig(t)
	c, dest := r.client(t, false)
	r.midTransfer(t)
	syscall.Kill(-c.cmd.Process.Pid, syscall.SIGSTOP)
	start := time.Now()
	bound := faultStall + 10*time.Second
	took := r.gone(t, bound) + time.Since(start)
	if !strings.Contains(r.s.Log.String(), "client stopped reading: no progress writing to it for 3s") {
		t.Errorf("serve's log does not name the stall:\n%s", r.s.Log)
	}
	syscall.Kill(-c.cmd.Process.Pid, syscall.SIGCONT)
	c.wait(t, 30*time.Second, "the resumed client")
	r.report(t, "client-stops-reading", "pulling client suspended (SIGSTOP) mid-transfer", false, dest, bound, took, c.code)
}

// TestFaultShimKilled kills serve itself: rsync must not live on.
func TestFaultShimKilled(t *testing.T) {
	slowTier(t, "fault")
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		for _, push := range []bool{false, true} {
			name := map[bool]string{false: "pull", true: "push"}[push] + "-" + map[syscall.Signal]string{syscall.SIGKILL: "kill9", syscall.SIGTERM: "term"}[sig]
			t.Run(name, func(t *testing.T) {
				r := newFaultRig(t)
				c, dest := r.client(t, push)
				r.midTransfer(t)
				shims := procsNamed("rsync-ssl-shim", r.rd.Conf)
				if len(shims) != 1 {
					t.Fatalf("want one serve process, found %v", shims)
				}
				start := time.Now()
				syscall.Kill(shims[0], sig)
				const bound = 10 * time.Second
				took := r.gone(t, bound)
				c.wait(t, bound, "the client")
				took = max(took, time.Since(start))
				what := map[syscall.Signal]string{syscall.SIGKILL: "kill -9", syscall.SIGTERM: "SIGTERM"}[sig]
				r.report(t, "serve-"+name[5:], what+" of serve mid-transfer (rsync must not outlive it)", push, dest, bound, took, c.code)
			})
		}
	}
}

// TestFaultDiskFull pushes into a module on a 20 MiB tmpfs holding the old
// tree: the new 16 MiB file's temporary copy cannot fit beside the old one.
func TestFaultDiskFull(t *testing.T) {
	slowTier(t, "fault")
	if os.Getuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	r := newFaultRig(t)
	if err := os.RemoveAll(r.rd.Up); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(r.rd.Up, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", r.rd.Up).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", r.rd.Up).Run() })
	copyTree(t, r.oldTree, r.rd.Up)

	c, _ := r.client(t, true)
	start := time.Now()
	const bound = 30 * time.Second
	c.wait(t, bound, "the client")
	if c.code == 0 {
		t.Errorf("push into a full filesystem reported success:\n%s", c.out)
	}
	if !strings.Contains(c.out.String(), "No space left on device") {
		t.Errorf("the client was not told the disk is full:\n%s", c.out)
	}
	took := max(r.gone(t, bound), time.Since(start))
	r.report(t, "disk-full", "push of a new 16 MiB file into a module on a 20 MiB tmpfs holding the old one", true, r.rd.Up, bound, took, c.code)
}
