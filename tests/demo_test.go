package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDemo runs "make demo"'s script DEMO_RUNS times in a row (10 unless
// set), each on a fresh port and in a fresh temporary directory: a newcomer's
// first command must pass every time, on a loaded two-CPU machine too, and
// say what happened at every step.
func TestDemo(t *testing.T) {
	slowTier(t, "demo")
	for _, p := range []string{"rsync", "rsync-ssl", "openssl", "systemd-socket-activate", "ss", "pgrep"} {
		needTool(t, p)
	}
	runs := 10
	if s := os.Getenv("DEMO_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("DEMO_RUNS=%q: want a positive number", s)
		}
		runs = n
	}
	script := filepath.Join(repoRoot(t), "tests", "demo.sh")
	var took []string
	for i := 1; i <= runs; i++ {
		env := []string{"DEMO_PORT=" + strconv.Itoa(freePort(t, "127.0.0.1")), "TMPDIR=" + t.TempDir()}
		start := time.Now()
		out, code := runCmd(t, 3*time.Minute, env, "bash", script, shimBin)
		d := time.Since(start)
		if code != 0 {
			t.Fatalf("run %d of %d: demo exited %d after %v:\n%s", i, runs, code, d.Round(time.Millisecond), out)
		}
		// Every step has its header and its own "ok:" line.
		for s := 1; s <= 11; s++ {
			if !strings.Contains(out, fmt.Sprintf("== %d. ", s)) {
				t.Fatalf("run %d: no step %d:\n%s", i, s, out)
			}
		}
		if n := strings.Count(out, "\n   ok: "); n != 12 {
			t.Fatalf("run %d: %d \"ok:\" lines, want 12 (one per step, two for step 6):\n%s", i, n, out)
		}
		for _, want := range []string{"all 5 connections ended", "each of the 5 connections has its summary: 4 served, 1 refused", "logged no error or warning",
			"Done: every step worked."} {
			if !strings.Contains(out, want) {
				t.Fatalf("run %d: output lacks %q:\n%s", i, want, out)
			}
		}
		took = append(took, d.Round(time.Millisecond).String())
	}
	t.Logf("%d demo runs in a row passed, each took: %s", runs, strings.Join(took, " "))
}
