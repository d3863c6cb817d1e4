package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// vmChecks are the scenario's checks (tests/ktlsvm/scenario.sh), each of
// which must report PASS.
var vmChecks = []string{
	"pull-ossl", "push-ossl", "pull-viasocat", "push-viasocat", "pull-viashim", "push-viashim",
	"pull-rsync327", "real-address-rsync327", "hosts-deny", "real-address", "never-127", "argv-no-proxy", "datapath-ktls",
	"refused-before-rsync", "auto-ktls", "auto-tls12-bridge", "auto-tls12-pull", "ktls-tls12-refused", "auto-chacha-bridge",
	"keyupdate-ends", "close-notify-ends", "pull-after-aborts",
	"pull-helper-ktls-874", "push-helper-ktls-874", "pull-helper-ktls-876", "push-helper-ktls-876",
	"pull-helper-user-874", "push-helper-user-874", "pull-helper-user-876", "push-helper-user-876",
	"pull-helper-ktls-tickets", "push-helper-ktls-tickets", "helper-ktls-alert",
}

// TestKTLSVM boots Debian's own kernel (which has the TLS module) under
// qemu with an initramfs holding the static shim, stock rsync 3.5.0 and
// 3.2.7, openssl and socat, and runs tests/ktlsvm/scenario.sh there: pulls
// and pushes through serve --datapath ktls with every stock client, rsync
// logging the client's own address without a PROXY header, hosts deny,
// a refused client never reaching rsync, a KeyUpdate and an early
// close_notify ending a session cleanly, and the server's CPU seconds for
// the same pull on both data paths. The kernel package is fetched once
// into tests/.cache/ktls. qemu runs with TCG (-accel tcg): KVM guests
// hang on these machines, and emulation inflates every CPU number alike.
func TestKTLSVM(t *testing.T) {
	slowTier(t, "kernel TLS VM")
	needTool(t, "qemu-system-x86_64")
	for _, tool := range []string{"busybox", "apt-get", "dpkg-deb", "ldd", "gzip", "openssl", "socat", "rsync-ssl", "bash"} {
		needTool(t, tool)
	}
	rsyncPath(t)
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(self))
	old := filepath.Join(root, "tests/.cache/rsync-3.2.7")
	if _, err := os.Stat(filepath.Join(old, "usr/bin/rsync")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("rsync 3.2.7 is not unpacked at %s (make deps does it)", old)
		}
		t.Skipf("rsync 3.2.7 is not unpacked at %s (make deps does it)", old)
	}

	work := t.TempDir()
	shim := filepath.Join(work, "rsync-ssl-shim")
	build := exec.Command("go", "build", "-trimpath", "-o", shim, ".")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // the initramfs has no Go runtime libraries
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}

	files := filepath.Join(work, "files")
	if err := os.Mkdir(files, 0o755); err != nil {
		t.Fatal(err)
	}
	p := newNamedPKI(t, "ktls VM test CA")
	cert, key := p.Issue(t, "ktls-vm", CertOpts{CN: "ktls.test", DNS: []string{"ktls.test"}})
	for src, dst := range map[string]string{p.CA: "ca.pem", cert: "cert.pem", key: "key.pem"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(files, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	cache := filepath.Join(root, "tests/.cache/ktls")
	out := filepath.Join(work, "vm")
	mk := exec.Command("sh", filepath.Join(root, "tests/ktlsvm/build.sh"), cache, shim, old, files, out)
	var mkErr bytes.Buffer
	mk.Stderr = &mkErr
	kver, err := mk.Output()
	if err != nil {
		t.Fatalf("building the VM: %v\n%s", err, mkErr.String())
	}
	t.Logf("kernel %s", strings.TrimSpace(string(kver)))

	mib := 32
	if v, err := strconv.Atoi(os.Getenv("KTLS_MIB")); err == nil && v > 0 {
		mib = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	// random.trust_cpu: the emulated CPU's RDRAND seeds the kernel's
	// generator at boot; without it Go's first getrandom waits for
	// entropy an idle VM never gathers. Unknown KEY=VALUE parameters
	// reach init's environment.
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "1",
		"-nographic", "-no-reboot", "-kernel", filepath.Join(out, "vmlinuz"), "-initrd", filepath.Join(out, "initrd.gz"),
		"-append", "console=ttyS0 quiet panic=-1 random.trust_cpu=on KTLS_MIB="+strconv.Itoa(mib))
	qemu.WaitDelay = 5 * time.Second
	console, err := qemu.CombinedOutput()
	os.MkdirAll(cache, 0o755)
	os.WriteFile(filepath.Join(cache, "console.log"), console, 0o644)
	if err != nil {
		t.Fatalf("qemu: %v (console in tests/.cache/ktls/console.log)\n%s", err, tail(console, 60))
	}

	pass := map[string]bool{}
	cpu := map[string][]float64{}
	helper := map[string][]float64{}
	wall := map[string][]float64{}
	done := false
	sc := bufio.NewScanner(bytes.NewReader(console))
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "KTLS-")
		if i < 0 {
			continue
		}
		f := strings.Fields(line[i:])
		switch {
		case f[0] == "KTLS-DONE":
			done = true
		case f[0] == "KTLS-CHECK" && len(f) >= 3:
			if f[2] == "PASS" {
				pass[f[1]] = true
			} else {
				t.Errorf("VM check %s failed: %s", f[1], strings.Join(f[2:], " "))
			}
		case f[0] == "KTLS-CPU", f[0] == "KTLS-HELPER", f[0] == "KTLS-HELPERPUSH", f[0] == "KTLS-WALL":
			kv := map[string]string{}
			for _, x := range f[1:] {
				k, v, _ := strings.Cut(x, "=")
				kv[k] = v
			}
			s, err := strconv.ParseFloat(kv["cpu_s"], 64)
			w, werr := strconv.ParseFloat(kv["wall_s"], 64)
			switch {
			case f[0] == "KTLS-WALL" && werr == nil:
				wall[kv["setup"]] = append(wall[kv["setup"]], w)
			case err != nil:
			case f[0] == "KTLS-CPU":
				cpu[kv["datapath"]] = append(cpu[kv["datapath"]], s)
			case f[0] == "KTLS-HELPERPUSH":
				helper["push-"+kv["clientpath"]] = append(helper["push-"+kv["clientpath"]], s)
			default:
				helper[kv["clientpath"]] = append(helper[kv["clientpath"]], s)
				if werr == nil {
					wall["helper-"+kv["clientpath"]] = append(wall["helper-"+kv["clientpath"]], w)
				}
			}
			t.Logf("%s", strings.Join(f[1:], " "))
		}
	}
	if !done {
		t.Fatalf("the scenario did not finish (console in tests/.cache/ktls/console.log):\n%s", tail(console, 60))
	}
	k, b := vmVerdict(t, vmChecks, pass, cpu, mib, fmt.Sprintf("server CPU for a %d MiB pull under TCG (median)", mib))
	if k >= b {
		t.Errorf("the kernel path cost the server %.2f CPU-s against the bridge's %.2f", k, b)
	}
	hk, hu := median(helper["ktls"]), median(helper["user"])
	if hk == 0 || hu == 0 {
		t.Errorf("no helper CPU measurement for both of its paths: %v", helper)
	} else {
		t.Logf("helper CPU for a %d MiB pull under TCG (median): ktls %.2f s (%.0f s/GiB), user space %.2f s (%.0f s/GiB), ratio %.2f",
			mib, hk, hk/float64(mib)*1024, hu, hu/float64(mib)*1024, hk/hu)
		// Measured 0.64-0.93 over three runs; the guard is loose
		// because emulated AES dominates a pull on both paths.
		if hk > 1.2*hu {
			t.Errorf("the helper's kernel path cost %.2f CPU-s on a pull against user space's %.2f", hk, hu)
		}
	}
	if pk, pu := median(helper["push-ktls"]), median(helper["push-user"]); pk > 0 && pu > 0 {
		t.Logf("helper CPU for a %d MiB push under TCG (median): ktls %.2f s (%.0f s/GiB), user space %.2f s (%.0f s/GiB), ratio %.2f",
			mib, pk, pk/float64(mib)*1024, pu, pu/float64(mib)*1024, pk/pu)
		if pk >= 0.9*pu { // measured 0.48-0.54
			t.Errorf("the helper's kernel path cost %.2f CPU-s on a push against user space's %.2f", pk, pu)
		}
	} else {
		t.Errorf("no helper CPU measurement for a push on both of its paths: %v", helper)
	}
	if p := median(wall["plain"]); p > 0 {
		wk, wu := median(wall["helper-ktls"]), median(wall["helper-user"])
		t.Logf("pull wall time under TCG (median): plain rsync daemon %.2f s; server ktls with helper ktls %.2f s (%.2fx plain), with helper user %.2f s (%.2fx)",
			p, wk, wk/p, wu, wu/p)
	}
	if t.Failed() {
		t.Logf("console:\n%s", tail(console, 80))
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// tail is the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// vmVerdict fails the test for every scenario check that did not pass, and
// returns the median server CPU seconds of each data path, logged under
// what, per GiB of a mib-MiB pull too.
func vmVerdict(t *testing.T, checks []string, pass map[string]bool, cpu map[string][]float64, mib int, what string) (k, b float64) {
	t.Helper()
	for _, c := range checks {
		if !pass[c] {
			t.Errorf("VM check %s did not pass", c)
		}
	}
	k, b = median(cpu["ktls"]), median(cpu["bridge"])
	if k == 0 || b == 0 {
		t.Fatalf("no CPU measurement for both data paths: %v", cpu)
	}
	perGiB := func(s float64) float64 { return s / float64(mib) * 1024 }
	t.Logf("%s: ktls %.2f s (%.0f s/GiB), bridge %.2f s (%.0f s/GiB), ratio %.2f", what, k, perGiB(k), b, perGiB(b), k/b)
	return k, b
}
