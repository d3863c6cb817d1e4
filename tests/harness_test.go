package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/internal/testpki"
)

// shimBin is the binary under test, built once by TestMain.
var shimBin string

func TestMain(m *testing.M) {
	if os.Getenv("SHIM_BURST") != "" {
		// connectBurst's helper, run again inside a network namespace:
		// it needs no binary.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "rsync-ssl-shim-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shimBin = filepath.Join(dir, "rsync-ssl-shim")
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(self))
	args := []string{"build", "-o", shimBin, "-ldflags", "-X main.version=test"}
	if os.Getenv("SHIM_RACE") == "1" {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = root
	if os.Getenv("SHIM_RACE") != "1" {
		// As shipped (Makefile, debian/rules): static, without cgo.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build rsync-ssl-shim:", err)
		os.Exit(1)
	}
	code := m.Run()
	writeRobustness()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needTool returns the path of a program the test needs. Outside CI a
// missing program skips the test; under CI=true it fails it, so a green run
// never hides an untested path.
func needTool(t testing.TB, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("required program %v not installed (CI=true: a missing tool is a failure)", names)
	}
	t.Skipf("required program %v not installed", names)
	return ""
}

// PKI is a throwaway CA with a server certificate, made fresh for each test
// run so that no private key is ever committed.
type PKI struct {
	Dir           string
	CA, Cert, Key string // PEM files
	ca            *testpki.CA
}

func newPKI(t testing.TB) *PKI {
	t.Helper()
	return newNamedPKI(t, "rsync-ssl-shim test CA")
}

// newNamedPKI is newPKI with its own CA name, so that a refusal naming
// "another CA" can be told apart from ours in a log line.
func newNamedPKI(t testing.TB, caName string) *PKI {
	t.Helper()
	dir := t.TempDir()
	p := &PKI{Dir: dir, ca: testpki.NewCAWithSubject(t, "", pkix.Name{CommonName: caName}, nil)}
	p.CA = filepath.Join(dir, "ca.pem")
	testpki.WritePEM(t, p.CA, "CERTIFICATE", p.ca.Cert.Raw)
	p.Cert, p.Key = p.Issue(t, "server", CertOpts{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1", "::1"}})
	return p
}

// CertOpts describes a leaf certificate for Issue.
type CertOpts struct {
	CN        string
	DNS       []string
	IPs       []string
	NotBefore time.Time
	NotAfter  time.Time
	Client    bool
}

// Issue makes a leaf certificate signed by the CA, valid for a day unless
// told otherwise, and returns the cert and key file paths.
func (p *PKI) Issue(t testing.TB, name string, o CertOpts) (certFile, keyFile string) {
	t.Helper()
	eku := x509.ExtKeyUsageServerAuth
	if o.Client {
		eku = x509.ExtKeyUsageClientAuth
	}
	c, key := p.ca.Issue(t, testpki.Leaf{CN: o.CN, DNS: o.DNS, IPs: o.IPs, NotBefore: o.NotBefore,
		NotAfter: dayIfZero(o.NotAfter), EKU: []x509.ExtKeyUsage{eku}})
	return testpki.WritePair(t, p.Dir, name, c, key)
}

func dayIfZero(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now().Add(24 * time.Hour)
	}
	return t
}

// freePort returns a TCP port on host that was free a moment ago.
func freePort(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitPort waits until something accepts on addr, bounded by d.
func waitPort(t testing.TB, addr string, d time.Duration) {
	t.Helper()
	waitPortOr(t, addr, d, nil)
}

// waitPortOr is waitPort that shows the server's output (if out is not nil)
// when it never comes up. The probe connection is a client like any other:
// it closes without a byte, and a shim logs it as such.
func waitPortOr(t testing.TB, addr string, d time.Duration, out *lockedBuffer) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	output := ""
	if out != nil {
		output = "; output:\n" + out.String()
	}
	t.Fatalf("nothing listening on %s after %v%s", addr, d, output)
}

// lockedBuffer collects a process's output safely across goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startBg starts a long-running program in its own process group and stops
// it (and everything it started) by PID when the test ends.
func startBg(t testing.TB, cmd *exec.Cmd) *lockedBuffer {
	t.Helper()
	out := &lockedBuffer{}
	if cmd.Stdout == nil {
		cmd.Stdout = out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = out
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		pgid := cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-done
		}
		// Whatever the group started and left behind goes too.
		syscall.Kill(-pgid, syscall.SIGKILL)
	})
	return out
}

// runCmd runs a program to completion under a time bound and returns its
// combined output and exit code.
func runCmd(t testing.TB, d time.Duration, env []string, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %v: timed out after %v\n%s", name, args, d, out)
	}
	code := 0
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			t.Fatalf("%s %v: %v", name, args, err)
		}
	}
	return string(out), code
}

// Tree is a test file tree: a 64 MiB random file, many small files,
// symlinks, and names with spaces and UTF-8.
func makeTree(t testing.TB, dir string, bigMiB, small int) {
	t.Helper()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "small"), 0o755))
	if bigMiB > 0 {
		f, err := os.Create(filepath.Join(dir, "big.bin"))
		must(err)
		_, err = io.CopyN(f, rand.Reader, int64(bigMiB)<<20)
		must(err)
		must(f.Close())
	}
	buf := make([]byte, 8192)
	for i := 0; i < small; i++ {
		n := 1 + i%8000
		rand.Read(buf[:n])
		sub := filepath.Join(dir, "small", fmt.Sprintf("d%02d", i%20))
		must(os.MkdirAll(sub, 0o755))
		must(os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d.dat", i)), buf[:n], 0o644))
	}
	must(os.WriteFile(filepath.Join(dir, "name with spaces.txt"), []byte("spaces\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "ünïcødé-日本語.txt"), []byte("utf-8\n"), 0o644))
	must(os.Symlink("name with spaces.txt", filepath.Join(dir, "link-to-spaces")))
	must(os.Symlink("missing/target", filepath.Join(dir, "dangling-link")))
}

// treeSums maps every entry below dir to its SHA-256 (files) or link target
// (symlinks), so two trees can be compared exactly.
func treeSums(t testing.TB, dir string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			sums[rel] = "link:" + target
		case d.Type().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			sums[rel] = hex.EncodeToString(h.Sum(nil))
		case d.IsDir():
			sums[rel] = "dir"
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sums
}

// sameTree fails the test unless both trees hold the same names with the
// same contents.
func sameTree(t testing.TB, want, got string) {
	t.Helper()
	a, b := treeSums(t, want), treeSums(t, got)
	var diffs []string
	for k, v := range a {
		if b[k] != v {
			diffs = append(diffs, fmt.Sprintf("%s: want %.16s got %.16s", k, v, b[k]))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			diffs = append(diffs, k+": unexpected")
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		if len(diffs) > 20 {
			diffs = append(diffs[:20], fmt.Sprintf("... %d more", len(diffs)-20))
		}
		t.Fatalf("trees %s and %s differ:\n%s", want, got, strings.Join(diffs, "\n"))
	}
	if len(a) < 2 {
		t.Fatalf("tree %s is empty", want)
	}
}

// Rsyncd is an rsyncd.conf with a read-only module "data", a writable
// module "up" and a log file, for rsync started by the shim or by stunnel.
type Rsyncd struct {
	Conf, Log, Data, Up string
}

// newRsyncd writes the configuration; extra lines go into the global section
// (for "hosts deny" and friends).
func newRsyncd(t testing.TB, extra ...string) *Rsyncd {
	t.Helper()
	dir := t.TempDir()
	r := &Rsyncd{
		Conf: filepath.Join(dir, "rsyncd.conf"),
		Log:  filepath.Join(dir, "rsyncd.log"),
		Data: filepath.Join(dir, "data"),
		Up:   filepath.Join(dir, "up"),
	}
	for _, d := range []string{r.Data, r.Up} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`# written by the integration tests
log file = %s
pid file = %s
use chroot = no
uid = %d
gid = %d
%s

[data]
path = %s
read only = yes

[up]
path = %s
read only = no
# Without chroot rsync munges uploaded symlinks by default; the tests
# compare link targets byte for byte, and only trusted tests write here.
munge symlinks = no
`, r.Log, filepath.Join(dir, "rsyncd.pid"), os.Getuid(), os.Getgid(), strings.Join(extra, "\n"), r.Data, r.Up)
	if err := os.WriteFile(r.Conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

// LogText returns rsync's log so far.
func (r *Rsyncd) LogText(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(r.Log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// writeFile writes body to path, making its directory, or fails the test.
func writeFile(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds or d has passed, and reports whether
// it held.
func waitFor(cond func() bool, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}

// mustWaitFor is waitFor that fails the test, naming what it waited for.
func mustWaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !waitFor(cond, d) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}
