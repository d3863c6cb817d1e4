package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// README.md is the front page: short, and every command it shows works. A
// command is a line of a ```sh block (a "# ..." comment after it is not part
// of it); ```text blocks are not commands, and every other kind of code block
// is refused so that no command can hide in one. Each command is either run
// here (the client section, against a live server) or has proofs: lines that
// a test or CI step which runs it must contain. A command with no proof, or
// a proof no longer true, fails the test; so does a proof for a command the
// README no longer shows.

// readmeMaxLines keeps the front page a front page.
const readmeMaxLines = 250

// readmeRunHere names the sections whose commands this test runs itself.
var readmeRunHere = map[string]bool{"Use from a client": true}

// proof: file (from the top of the tree) must contain text.
type proof struct{ file, text string }

var readmeProofs = map[string][]proof{
	"make deps":      {{"Makefile", "\ndeps:"}, {".ci/run", "\nmake deps\n"}},
	"make demo-deps": {{"Makefile", "\ndemo-deps:\n"}, {"tests/deps_test.go", `makeVar(t, "DEMO_DEBS")`}},
	"make demo": {{"Makefile", "\ndemo: demo-deps build\n\t./tests/demo.sh ./$(BIN)\n"},
		{"tests/demo_test.go", `filepath.Join(repoRoot(t), "tests", "demo.sh")`}},
	"make test":  {{".ci/run", "\nmake test\n"}},
	"make cross": {{"Makefile", "\ncross:\n"}, {"Makefile", "\ntest: deps lint cross "}, {".ci/run", "\nmake test\n"}},
	"make deb": {{"Makefile", "\ndeb:\n\tpackaging/build-deb.sh"},
		{"tests/deploy_package_test.go", `filepath.Join(repoRoot(t), "packaging", "build-deb.sh")`}},
	// README.md "Install on Debian 12": TestDeployPackage/bookworm runs
	// these, in this order, in a booted Debian 12.
	"apt install ./rsync-ssl-shim_<version>_<arch>.deb": {{"tests/deploy_package_test.go",
		`c.must(t, "apt", "install", "-y", "/root/"+filepath.Base(deb))`}},
	"install -m 0644 server.pem /etc/rsync-ssl/cert.pem": {{"tests/deploy_package_test.go",
		`c.must(t, "install", "-m", "0644", "/root/server.pem", "/etc/rsync-ssl/cert.pem")`}},
	"install -m 0640 -g _rsync-ssl-key server.key /etc/rsync-ssl/private/key.pem": {{"tests/deploy_package_test.go",
		`c.must(t, "install", "-m", "0640", "-g", "_rsync-ssl-key", "/root/server.key", "/etc/rsync-ssl/private/key.pem")`}},
	"editor /etc/rsync-ssl/rsyncd.conf": {{"tests/deploy_package_test.go",
		"conf := filepath.Join(c.root, \"etc/rsync-ssl/rsyncd.conf\")\n\twriteFile(t, conf, readFileT(t, conf)+`\n[data]\n\tpath = /srv/rsync/data"}},
	"systemctl enable --now rsync-ssl.socket": {{"tests/deploy_package_test.go",
		`c.must(t, "systemctl", "enable", "--now", "rsync-ssl.socket")`}},
}

// mdBlock is one fenced code block of a Markdown file.
type mdBlock struct {
	section string // the heading above it
	info    string // what follows the opening ```
	line    int
	lines   []string
}

var headingRE = regexp.MustCompile(`^(#{1,6}) (.*)$`)

func mdBlocks(t *testing.T, name, text string) []mdBlock {
	t.Helper()
	var blocks []mdBlock
	var cur *mdBlock
	section := ""
	prevBlank := true
	for i, line := range strings.Split(text, "\n") {
		switch {
		case cur != nil && strings.HasPrefix(line, "```"):
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.lines = append(cur.lines, line)
		case strings.HasPrefix(line, "```"):
			cur = &mdBlock{section: section, info: strings.TrimSpace(strings.TrimPrefix(line, "```")), line: i + 1}
		case strings.HasPrefix(line, "    ") && prevBlank:
			t.Errorf("%s:%d: an indented code block; use ```sh for commands or ```text for anything else", name, i+1)
		default:
			if m := headingRE.FindStringSubmatch(line); m != nil {
				section = m[2]
			}
		}
		prevBlank = strings.TrimSpace(line) == ""
	}
	if cur != nil {
		t.Errorf("%s:%d: code block not closed", name, cur.line)
	}
	return blocks
}

// shCommand is a line of a sh block without its trailing comment.
func shCommand(line string) string {
	if i := strings.Index(line, " #"); i >= 0 {
		line = line[:i]
	}
	return strings.TrimSpace(line)
}

func TestReadme(t *testing.T) {
	root := repoRoot(t)
	readme := readFileT(t, filepath.Join(root, "README.md"))
	if n := strings.Count(readme, "\n"); n > readmeMaxLines {
		t.Errorf("README.md has %d lines; the front page keeps to %d, the rest belongs in docs/", n, readmeMaxLines)
	}
	if !strings.HasPrefix(lastSection(readme), "## Licence\n") || strings.Count(strings.TrimSpace(strings.TrimPrefix(lastSection(readme), "## Licence\n")), "\n") != 0 {
		t.Errorf("README.md's last section is not a one-line licence:\n%s", lastSection(readme))
	}

	// "make TARGET" in the text names a target that exists.
	makefile := readFileT(t, filepath.Join(root, "Makefile"))
	for _, m := range regexp.MustCompile("`make ([a-z-]+)`").FindAllStringSubmatch(readme, -1) {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(m[1]) + `:`).MatchString(makefile) {
			t.Errorf("README.md mentions `make %s`, and the Makefile has no such target", m[1])
		}
	}

	var runHere []mdBlock
	shown := map[string]bool{}
	for _, b := range mdBlocks(t, "README.md", readme) {
		switch b.info {
		case "text":
			continue
		case "sh":
		default:
			t.Errorf("README.md:%d: code block of kind %q: commands go in ```sh, anything else in ```text", b.line, b.info)
			continue
		}
		if readmeRunHere[b.section] {
			runHere = append(runHere, b)
			continue
		}
		for _, l := range b.lines {
			cmd := shCommand(l)
			if cmd == "" {
				continue
			}
			shown[cmd] = true
			proofs, ok := readmeProofs[cmd]
			if !ok {
				t.Errorf("README.md (%s) shows %q, which no test runs: run it here or add its proof to readmeProofs", b.section, cmd)
			}
			for _, p := range proofs {
				if !strings.Contains(readFileT(t, filepath.Join(root, p.file)), p.text) {
					t.Errorf("README.md shows %q, but %s no longer contains what runs it:\n%s", cmd, p.file, p.text)
				}
			}
		}
	}
	for cmd := range readmeProofs {
		if !shown[cmd] {
			t.Errorf("readmeProofs has %q, which README.md no longer shows", cmd)
		}
	}
	for section := range readmeRunHere {
		if !slices.ContainsFunc(runHere, func(b mdBlock) bool { return b.section == section }) {
			t.Errorf("README.md has no ```sh block under %q", section)
		}
	}
	t.Run("client", func(t *testing.T) {
		for _, b := range runHere {
			runClientBlock(t, b)
		}
	})
}

// lastSection returns the README from its last "## " heading on.
func lastSection(md string) string {
	i := strings.LastIndex(md, "\n## ")
	if i < 0 {
		return ""
	}
	return strings.TrimRight(md[i+1:], "\n") + "\n"
}

// runClientBlock runs the front page's client commands as written, as one
// shell script in a fresh directory holding ca.pem, against a socket-activated
// server whose certificate is for localhost: server.example.org becomes
// localhost and the port comes from RSYNC_SSL_PORT, which the commands honour
// like rsync-ssl's. Every command must succeed, and the trees must match.
func runClientBlock(t *testing.T, b mdBlock) {
	needTool(t, "rsync-ssl")
	needTool(t, "openssl")
	p := newPKI(t)
	rd := newRsyncd(t)
	makeTree(t, rd.Data, 1, 50)
	s := startMode(t, "inetd", serveArgs(p, rd, rsyncPath(t)))
	work := t.TempDir()
	copyFileT(t, p.CA, filepath.Join(work, "ca.pem"))

	script := []string{"set -eu", "cd " + strconv.Quote(work)}
	for _, l := range b.lines {
		if cmd := shCommand(l); cmd != "" {
			script = append(script, "printf '+ %s\\n' "+shellQuote(cmd), strings.ReplaceAll(cmd, "server.example.org", "localhost"))
		}
	}
	env := []string{"PATH=" + filepath.Dir(shimBin) + string(os.PathListSeparator) + os.Getenv("PATH"),
		"RSYNC_SSL_PORT=" + strconv.Itoa(s.Port), "RSYNC_PORT=0"}
	out, code := runCmd(t, 3*time.Minute, env, "bash", "-c", strings.Join(script, "\n"))
	if code != 0 {
		t.Fatalf("README.md:%d, section %q: the commands failed (exit %d):\n%s\nserver log:\n%s", b.line, b.section, code, out, s.Log.String())
	}
	t.Logf("README.md:%d, as run:\n%s", b.line, out)
	sameTree(t, rd.Data, filepath.Join(work, "data"))
	if strings.Contains(strings.Join(b.lines, "\n"), "::up/data/") {
		sameTree(t, rd.Data, filepath.Join(rd.Up, "data"))
	}
	if strings.Contains(strings.Join(b.lines, "\n"), "rsync-ssl-shim check") {
		wantLines(t, out, "all 5 hops work", "ok    module", "module data: ")
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// TestDocsLinks: every relative link in README.md and docs/ names a file
// that exists, and an anchor names a heading in it.
func TestDocsLinks(t *testing.T) {
	root := repoRoot(t)
	files, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	files = append(files, filepath.Join(root, "README.md"))
	sort.Strings(files)
	linkRE := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, f := range files {
		text := readFileT(t, f)
		rel, _ := filepath.Rel(root, f)
		for _, m := range linkRE.FindAllStringSubmatch(stripCode(text), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, anchor, _ := strings.Cut(target, "#")
			dest := f
			if path != "" {
				dest = filepath.Join(filepath.Dir(f), path)
			}
			if _, err := os.Stat(dest); err != nil {
				t.Errorf("%s: link %q: %s does not exist", rel, target, path)
				continue
			}
			if anchor != "" && strings.HasSuffix(dest, ".md") && !slices.Contains(mdAnchors(readFileT(t, dest)), anchor) {
				t.Errorf("%s: link %q: no heading with anchor #%s in %s", rel, target, anchor, path)
			}
		}
	}
}

// stripCode drops fenced blocks and inline code, where "](" is not a link.
func stripCode(md string) string {
	var b strings.Builder
	fence := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "```") {
			fence = !fence
			continue
		}
		if !fence {
			b.WriteString(regexp.MustCompile("`[^`]*`").ReplaceAllString(line, "") + "\n")
		}
	}
	return b.String()
}

// mdAnchors lists the anchors GitHub gives a file's headings: lower case,
// punctuation dropped, spaces as hyphens, "-1", "-2" for repeats.
func mdAnchors(md string) []string {
	var out []string
	seen := map[string]int{}
	keep := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	fence := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "```") {
			fence = !fence
		}
		m := headingRE.FindStringSubmatch(line)
		if fence || m == nil {
			continue
		}
		a := strings.ReplaceAll(keep.ReplaceAllString(strings.ToLower(strings.TrimSpace(m[2])), ""), " ", "-")
		if n := seen[a]; n > 0 {
			out = append(out, a+"-"+strconv.Itoa(n))
		} else {
			out = append(out, a)
		}
		seen[a]++
	}
	return out
}

// TestRecipeDocs: the recipes in docs/client-certificates.md are the ones the
// recipe tests run, byte for byte where the reader copies them.
func TestRecipeDocs(t *testing.T) {
	doc := readFileT(t, filepath.Join(repoRoot(t), "docs", "client-certificates.md"))
	for what, want := range map[string]string{
		"recipe 2's hook": "```sh\n" + authorizeHook + "```\n",
		"recipe 3's pin":  "openssl x509 -in client.pem -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | base64\n",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("docs/client-certificates.md no longer shows %s as the tests run it:\n%s", what, want)
		}
	}
}
