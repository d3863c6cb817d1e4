package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestVersionCommand: "version" of the binary "make" builds names the
// build (version, commit, Go) and the licence, and they are the version
// packaging/version.sh gives, the commit checked out and the Go that built it.
func TestVersionCommand(t *testing.T) {
	slowTier(t, "make build")
	git := needTool(t, "git")
	mk := needTool(t, "make")
	root := repoRoot(t)
	head, code := runCmd(t, time.Minute, nil, git, "-C", root, "rev-parse", "HEAD")
	if code != 0 {
		t.Fatalf("git rev-parse HEAD: %s", head)
	}
	want, _ := runCmd(t, time.Minute, nil, "sh", filepath.Join(root, "packaging/version.sh"))
	goVer, _ := runCmd(t, time.Minute, nil, "go", "env", "GOVERSION")
	bin := filepath.Join(t.TempDir(), "rsync-ssl-shim")
	if out, code := runCmd(t, 5*time.Minute, nil, mk, "-s", "-C", root, "build", "BIN="+bin); code != 0 {
		t.Fatalf("make build (exit %d):\n%s", code, out)
	}
	re := regexp.MustCompile(`^rsync-ssl-shim (\S+)\ncommit:  ([0-9a-f]{40})\ngo:      (go\S+) linux/\S+\nlicence: Apache-2.0\n$`)
	for _, arg := range []string{"version", "--version"} {
		out, code := runCmd(t, time.Minute, nil, bin, arg)
		m := re.FindStringSubmatch(out)
		if code != 0 || m == nil {
			t.Fatalf("rsync-ssl-shim %s (exit %d):\n%s\nwant it to match %s", arg, code, out, re)
		}
		if m[1] != strings.TrimSpace(want) || m[2] != strings.TrimSpace(head) || m[3] != strings.TrimSpace(goVer) {
			t.Errorf("rsync-ssl-shim %s says %s, commit %s, %s; want %s, %s, %s", arg, m[1], m[2], m[3],
				strings.TrimSpace(want), strings.TrimSpace(head), strings.TrimSpace(goVer))
		}
	}
}

// TestVersionScheme: packaging/version.sh gives the release named in
// VERSION on its tag, and elsewhere a development version that dpkg sorts
// after that release and before any later one, for hashes that start with
// a digit and with a letter alike, and in commit order.
func TestVersionScheme(t *testing.T) {
	slowTier(t, "packaging")
	git := needTool(t, "git")
	dpkg := needTool(t, "dpkg")
	root := repoRoot(t)
	release := strings.TrimSpace(readFileT(t, filepath.Join(root, "VERSION")))
	repo := t.TempDir()
	writeFile(t, filepath.Join(repo, "VERSION"), release+"\n", 0o644)
	writeFile(t, filepath.Join(repo, "packaging/version.sh"), readFileT(t, filepath.Join(root, "packaging/version.sh")), 0o755)
	gitEnv := func(day int) []string {
		date := fmt.Sprintf("2027-01-%02dT12:00:00Z", day)
		return []string{"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.invalid", "GIT_COMMITTER_NAME=t",
			"GIT_COMMITTER_EMAIL=t@example.invalid", "GIT_AUTHOR_DATE=" + date, "GIT_COMMITTER_DATE=" + date}
	}
	run := func(env []string, args ...string) string {
		t.Helper()
		out, code := runCmd(t, time.Minute, env, git, append([]string{"-C", repo}, args...)...)
		if code != 0 {
			t.Fatalf("git %s (exit %d):\n%s", strings.Join(args, " "), code, out)
		}
		return strings.TrimSpace(out)
	}
	version := func() string {
		t.Helper()
		out, code := runCmd(t, time.Minute, nil, "sh", filepath.Join(repo, "packaging/version.sh"))
		if code != 0 {
			t.Fatalf("packaging/version.sh (exit %d):\n%s", code, out)
		}
		return strings.TrimSpace(out)
	}
	cmp := func(a, op, b string) bool {
		_, code := runCmd(t, time.Minute, nil, dpkg, "--compare-versions", a, op, b)
		return code == 0
	}
	var major, minor, patch int
	if _, err := fmt.Sscanf(release, "%d.%d.%d", &major, &minor, &patch); err != nil {
		t.Fatalf("VERSION %q is not MAJOR.MINOR.PATCH: %v", release, err)
	}
	later := []string{fmt.Sprintf("%d.%d.%d", major, minor, patch+1), fmt.Sprintf("%d.%d.0", major, minor+1),
		fmt.Sprintf("%d.0.0", major+1), fmt.Sprintf("%d.%d.%d~rc1", major, minor, patch+1)}

	if v := version(); v != release {
		t.Errorf("outside a git repository: %q, want %q", v, release)
	}
	run(nil, "init", "-q")
	run(nil, "add", ".")
	run(gitEnv(1), "commit", "-q", "-m", "release")
	run(nil, "tag", "v"+release)
	if v := version(); v != release {
		t.Errorf("on the tag v%s: %q, want %q", release, v, release)
	}

	devRE := regexp.MustCompile(`^` + regexp.QuoteMeta(release) + `\+git(\d{8})\.([0-9a-f]{7,})$`)
	seen := map[string]bool{} // "digit", "letter"
	prev := release
	for i := 0; i < 40 && !(seen["digit"] && seen["letter"]); i++ {
		run(gitEnv(2+i%27), "commit", "-q", "--allow-empty", "-m", fmt.Sprintf("change %d", i))
		v := version()
		m := devRE.FindStringSubmatch(v)
		if m == nil {
			t.Fatalf("after the release: %q, want %s+git<YYYYMMDD>.<hash>", v, release)
		}
		if want := fmt.Sprintf("202701%02d", 2+i%27); m[1] != want {
			t.Errorf("%s: date %s, want the commit's %s", v, m[1], want)
		}
		kind := "letter"
		if m[2][0] <= '9' {
			kind = "digit"
		}
		if seen[kind] {
			continue
		}
		seen[kind] = true
		if !cmp(v, "gt", release) {
			t.Errorf("dpkg sorts %s (hash starting with a %s) at or below the release %s", v, kind, release)
		}
		for _, l := range later {
			if !cmp(v, "lt", l) {
				t.Errorf("dpkg sorts %s (hash starting with a %s) at or above the later release %s", v, kind, l)
			}
		}
		if !cmp(v, "gt", prev) {
			t.Errorf("dpkg sorts %s at or below the earlier build %s", v, prev)
		}
		prev = v
	}
	if !seen["digit"] || !seen["letter"] {
		t.Fatalf("40 commits gave no hash starting with a %v", map[bool]string{true: "letter", false: "digit"}[seen["digit"]])
	}

	// A changed tracked file says so, and still sorts in place.
	writeFile(t, filepath.Join(repo, "VERSION"), release+"\n\n", 0o644)
	if v := version(); !strings.HasSuffix(v, ".dirty") || !cmp(v, "gt", release) || !cmp(v, "lt", later[0]) {
		t.Errorf("a changed tree: %q, want a development version ending in .dirty between %s and %s", v, release, later[0])
	}
}

// TestVersionSources: the Makefile and the package take the version from
// packaging/version.sh, and CHANGELOG.md has the release VERSION names and
// an Unreleased section above it.
func TestVersionSources(t *testing.T) {
	mk := needTool(t, "make")
	root := repoRoot(t)
	want, code := runCmd(t, time.Minute, nil, "sh", filepath.Join(root, "packaging/version.sh"))
	if code != 0 {
		t.Fatalf("packaging/version.sh (exit %d):\n%s", code, want)
	}
	got, code := runCmd(t, time.Minute, nil, mk, "-s", "-C", root, "version")
	if code != 0 || got != want {
		t.Errorf("make version (exit %d): %q, packaging/version.sh: %q", code, got, want)
	}
	if !strings.Contains(readFileT(t, filepath.Join(root, "packaging/build-deb.sh")), "packaging/version.sh") {
		t.Error("packaging/build-deb.sh does not take its version from packaging/version.sh")
	}
	release := strings.TrimSpace(readFileT(t, filepath.Join(root, "VERSION")))
	cl := readFileT(t, filepath.Join(root, "CHANGELOG.md"))
	rel := regexp.MustCompile(`(?m)^## \[` + regexp.QuoteMeta(release) + `\] - \d{4}-\d{2}-\d{2}$`).FindStringIndex(cl)
	unrel := strings.Index(cl, "\n## [Unreleased]\n")
	if rel == nil {
		t.Errorf("CHANGELOG.md has no heading \"## [%s] - YYYY-MM-DD\" for the release in VERSION", release)
	}
	if unrel < 0 || rel != nil && unrel > rel[0] {
		t.Error("CHANGELOG.md has no \"## [Unreleased]\" section above the last release")
	}
	if _, err := os.Stat(filepath.Join(root, "packaging/debian/changelog")); err == nil {
		t.Error("packaging/debian/changelog is written by build-deb.sh from the version; a committed one would go stale")
	}
}
