package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// makeVar reads a variable's words from the Makefile (a ":=" line and its
// continuations).
func makeVar(t *testing.T, name string) []string {
	t.Helper()
	mk := readFileT(t, filepath.Join(repoRoot(t), "Makefile"))
	m := regexp.MustCompile(`(?m)^` + name + `\s*:=((?:.*\\\n)*.*)$`).FindStringSubmatch(mk)
	if m == nil {
		t.Fatalf("the Makefile has no %s", name)
	}
	return strings.Fields(strings.ReplaceAll(m[1], "\\\n", " "))
}

// TestDemoDeps: every program tests/demo.sh needs comes from a package in
// the Makefile's DEMO_DEBS (what "make demo-deps" installs), as the script
// says, and DEMO_DEBS holds nothing else.
func TestDemoDeps(t *testing.T) {
	slowTier(t, "packaging")
	dpkg := needTool(t, "dpkg")
	demo := readFileT(t, filepath.Join(repoRoot(t), "tests", "demo.sh"))
	m := regexp.MustCompile(`(?m)^need="([^"]*)"`).FindStringSubmatch(demo)
	if m == nil {
		t.Fatal(`tests/demo.sh has no need="PROGRAM:PACKAGE ..." line`)
	}
	debs := makeVar(t, "DEMO_DEBS")
	used := map[string]bool{}
	for _, pair := range strings.Fields(m[1]) {
		prog, deb, ok := strings.Cut(pair, ":")
		if !ok {
			t.Fatalf("tests/demo.sh: %q is not PROGRAM:PACKAGE", pair)
		}
		if !slices.Contains(debs, deb) {
			t.Errorf("tests/demo.sh needs %s from %s, which DEMO_DEBS (%v) does not install", prog, deb, debs)
		}
		used[deb] = true
		path := needTool(t, prog)
		var owner string
		for _, p := range []string{path, "/usr" + path, strings.TrimPrefix(path, "/usr")} {
			if out, code := runCmd(t, time.Minute, nil, dpkg, "-S", p); code == 0 {
				owner, _, _ = strings.Cut(out, ":")
				break
			}
		}
		if owner != deb {
			t.Errorf("%s (%s) comes from the package %q, tests/demo.sh says %s", prog, path, owner, deb)
		}
	}
	for _, d := range debs {
		if !used[d] {
			t.Errorf("DEMO_DEBS installs %s, which no program of the demo needs", d)
		}
	}
}

// TestDepsLabQuiet: after "make deps" (which CI runs first) none of the
// daemons the test lab installs is enabled or running, and nothing listens
// on nginx's default ports: a machine evaluated as a server serves nothing
// it did not serve before. Only under CI=true, where make deps made the
// machine: elsewhere the machine's services are its owner's.
func TestDepsLabQuiet(t *testing.T) {
	if os.Getenv("CI") != "true" {
		t.Skip("checks the machine make deps set up; runs under CI=true")
	}
	systemctl := needTool(t, "systemctl")
	ss := needTool(t, "ss")
	for _, u := range makeVar(t, "LAB_UNITS") {
		out, _ := runCmd(t, time.Minute, nil, systemctl, "is-enabled", u)
		if strings.HasPrefix(strings.TrimSpace(lastLine(out)), "enabled") {
			t.Errorf("%s is enabled after make deps", u)
		}
		if err := exec.Command(systemctl, "is-active", "-q", u).Run(); err == nil {
			t.Errorf("%s is running after make deps", u)
		}
	}
	out, code := runCmd(t, time.Minute, nil, ss, "-Hltnp", "sport = :80 or sport = :443")
	if code != 0 || strings.TrimSpace(out) != "" {
		t.Errorf("after make deps (ss exit %d), something listens on port 80 or 443:\n%s", code, out)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
