package tests

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The binary is linked statically, so it carries every Go module go.mod
// requires (direct or indirect) and the Go standard library. Each must have
// its licence in packaging/debian/copyright, or the package misstates what
// it ships. "std" stands for the standard library: it is the module name in
// $GOROOT/src/go.mod.

// goModules returns the module path and version of every require line in
// go.mod, single or in a block, direct or // indirect.
func goModules(t *testing.T, gomod string) map[string]string {
	t.Helper()
	mods := map[string]string{}
	inBlock := false
	for _, line := range strings.Split(gomod, "\n") {
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case inBlock && f[0] == ")":
			inBlock = false
		case inBlock && len(f) == 2:
			mods[f[0]] = f[1]
		case inBlock:
			t.Fatalf("go.mod: cannot read require line %q", line)
		case f[0] == "require" && len(f) == 2 && f[1] == "(":
			inBlock = true
		case f[0] == "require" && len(f) == 3:
			mods[f[1]] = f[2]
		case f[0] == "require":
			t.Fatalf("go.mod: cannot read require line %q", line)
		}
	}
	if inBlock {
		t.Fatal("go.mod: require block not closed")
	}
	return mods
}

// dep5 is a machine-readable debian/copyright file: its paragraphs, each a
// map of field name to value (continuation lines joined with "\n").
type dep5 []map[string]string

func parseDep5(t *testing.T, text string) dep5 {
	t.Helper()
	var paras dep5
	var cur map[string]string
	last := ""
	for n, line := range strings.Split(text, "\n") {
		switch {
		case strings.TrimSpace(line) == "":
			cur, last = nil, ""
		case line[0] == ' ' || line[0] == '\t':
			if cur == nil || last == "" {
				t.Fatalf("debian/copyright line %d: continuation line outside a field: %q", n+1, line)
			}
			cur[last] += "\n" + strings.TrimSpace(line)
		default:
			name, value, ok := strings.Cut(line, ":")
			if !ok {
				t.Fatalf("debian/copyright line %d: not a field: %q", n+1, line)
			}
			if cur == nil {
				cur = map[string]string{}
				paras = append(paras, cur)
			}
			if _, dup := cur[name]; dup {
				t.Fatalf("debian/copyright line %d: field %s twice in one paragraph", n+1, name)
			}
			last = name
			cur[name] = strings.TrimSpace(value)
		}
	}
	return paras
}

// licenceOf names the licence of a LICENSE file by the clauses that make it
// that licence, so that a module whose licence changes is noticed.
func licenceOf(text string) string {
	flat := strings.Join(strings.Fields(text), " ")
	switch {
	case strings.Contains(flat, "Apache License Version 2.0, January 2004") &&
		strings.Contains(flat, "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION"):
		return "apache-2.0"
	case strings.Contains(flat, "Redistribution and use in source and binary forms") &&
		strings.Contains(flat, "Neither the name of") &&
		strings.Contains(flat, "may be used to endorse or promote products derived from this software"):
		return "bsd-3-clause"
	}
	return "unknown"
}

// escapeModule spells a module path the way the module cache does: an upper
// case letter becomes "!" and the letter in lower case.
func escapeModule(mod string) string {
	var b strings.Builder
	for _, r := range mod {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, code := runCmd(t, time.Minute, nil, "go", "env", name)
	if code != 0 || strings.TrimSpace(out) == "" {
		t.Fatalf("go env %s (exit %d): %s", name, code, out)
	}
	return strings.TrimSpace(out)
}

// TestLicenceCopyright checks packaging/debian/copyright against go.mod and
// against the licence files the modules themselves ship.
func TestLicenceCopyright(t *testing.T) {
	root := repoRoot(t)
	mods := goModules(t, readFileT(t, filepath.Join(root, "go.mod")))
	if len(mods) == 0 {
		t.Fatal("go.mod: no require lines found; the parser no longer reads it")
	}
	mods["std"] = ""
	paras := parseDep5(t, readFileT(t, filepath.Join(root, "packaging/debian/copyright")))
	if len(paras) == 0 || !strings.HasPrefix(paras[0]["Format"], "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0") {
		t.Fatal("debian/copyright does not start with a DEP-5 Format header")
	}

	// Standalone License paragraphs (a License field and no Files) hold the
	// texts; Files paragraphs name one of them.
	texts := map[string]string{}
	files := map[string]map[string]string{} // pattern -> paragraph
	for _, p := range paras[1:] {
		lic, ok := p["License"]
		if !ok {
			t.Errorf("paragraph without License: %v", p)
			continue
		}
		name, body, _ := strings.Cut(lic, "\n")
		name = strings.ToLower(strings.TrimSpace(name))
		if pats, ok := p["Files"]; ok {
			if p["Copyright"] == "" {
				t.Errorf("Files: %s has no Copyright", pats)
			}
			for _, pat := range strings.Fields(pats) {
				files[pat] = p
			}
			continue
		}
		if _, dup := texts[name]; dup {
			t.Errorf("two standalone License paragraphs for %s", name)
		}
		texts[name] = body
	}
	used := map[string]bool{}
	for pat, p := range files {
		name, body, _ := strings.Cut(p["License"], "\n")
		name = strings.ToLower(strings.TrimSpace(name))
		used[name] = true
		if strings.TrimSpace(body) == "" && strings.TrimSpace(texts[name]) == "" {
			t.Errorf("Files: %s is under %s, which has no licence text in the file", pat, name)
		}
	}
	for name := range texts {
		if !used[name] {
			t.Errorf("standalone License paragraph %s is used by no Files paragraph", name)
		}
	}
	if !strings.Contains(texts["apache-2.0"], "/usr/share/common-licenses/Apache-2.0") {
		t.Error("the Apache-2.0 paragraph does not point at /usr/share/common-licenses/Apache-2.0")
	}
	if p := files["*"]; p == nil || !strings.EqualFold(p["License"], "Apache-2.0") {
		t.Errorf("Files: * (the project itself) is not Apache-2.0: %v", p)
	}

	// Every module in go.mod, and the standard library, has its paragraph,
	// under the licence its own LICENSE file states.
	modCache, goRoot := goEnv(t, "GOMODCACHE"), goEnv(t, "GOROOT")
	for mod, ver := range mods {
		p := files[mod+"/*"]
		if p == nil {
			t.Errorf("go.mod requires %s, but debian/copyright has no \"Files: %s/*\" paragraph with its licence", mod, mod)
			continue
		}
		name, _, _ := strings.Cut(p["License"], "\n")
		dir := goRoot
		if mod != "std" {
			dir = filepath.Join(modCache, escapeModule(mod)+"@"+ver)
		}
		lic, err := os.ReadFile(filepath.Join(dir, "LICENSE"))
		if err != nil {
			t.Errorf("%s: cannot read its LICENSE (run go mod download): %v", mod, err)
			continue
		}
		if got, want := licenceOf(string(lic)), strings.ToLower(strings.TrimSpace(name)); got != want {
			t.Errorf("%s: debian/copyright says %s, its LICENSE is %s", mod, want, got)
		}
		// Apache-2.0 section 4(d): a work's NOTICE travels with every copy.
		if notice, err := os.ReadFile(filepath.Join(dir, "NOTICE")); err == nil {
			ours := strings.Join(strings.Fields(readFileT(t, filepath.Join(root, "NOTICE"))), " ")
			if !strings.Contains(ours, strings.Join(strings.Fields(string(notice)), " ")) {
				t.Errorf("%s ships a NOTICE that the project's NOTICE does not carry:\n%s", mod, notice)
			}
		}
	}
	// No file of the source matches a module's pattern, which lintian
	// reports unless told why (debian/source/lintian-overrides).
	overrides := readFileT(t, filepath.Join(root, "packaging/debian/source/lintian-overrides"))
	for mod := range mods {
		if !strings.Contains(overrides, "rsync-ssl-shim source: superfluous-file-pattern "+mod+"/* ") {
			t.Errorf("debian/source/lintian-overrides does not say that Files: %s/* names a Go module, not a file", mod)
		}
	}
	for pat := range files {
		if _, ok := mods[strings.TrimSuffix(pat, "/*")]; !ok && pat != "*" {
			t.Errorf("debian/copyright has Files: %s, which go.mod no longer requires", pat)
		}
	}

	// LICENSE is the full Apache-2.0 text, as Debian ships it.
	own := readFileT(t, filepath.Join(root, "LICENSE"))
	if licenceOf(own) != "apache-2.0" {
		t.Error("LICENSE is not the Apache License 2.0")
	}
	if canon, err := os.ReadFile("/usr/share/common-licenses/Apache-2.0"); err == nil && string(canon) != own {
		t.Error("LICENSE differs from /usr/share/common-licenses/Apache-2.0")
	}
	if !slices.Contains(strings.Split(readFileT(t, filepath.Join(root, "packaging/debian/rsync-ssl-shim.docs")), "\n"), "NOTICE") {
		t.Error("the package does not install NOTICE")
	}
}

// TestLicenceSourceLint builds the source package from the tracked files and
// runs lintian --pedantic on it: the DEP-5 checks of debian/copyright are
// source checks, which the binary package's lint does not make.
func TestLicenceSourceLint(t *testing.T) {
	slowTier(t, "source package lint")
	needTool(t, "lintian")
	dpkgSource := needTool(t, "dpkg-source")
	git := needTool(t, "git")
	root := repoRoot(t)
	work := t.TempDir()
	src := filepath.Join(work, "rsync-ssl-shim-1.0")
	if out, code := runCmd(t, time.Minute, nil, "sh", "-c",
		`mkdir -p "$2" && cd "$1" && "$3" ls-files -z | xargs -0 tar -c | tar -x -C "$2" && cp -a packaging/debian "$2/debian"`,
		"sh", root, src, git); code != 0 {
		t.Fatalf("copy the tracked files (exit %d):\n%s", code, out)
	}
	writeFile(t, filepath.Join(src, "debian", "changelog"), "rsync-ssl-shim (1.0) unstable; urgency=medium\n\n"+
		"  * Source package for lintian.\n\n -- rsync-ssl-shim maintainers <maintainers@rsync-ssl-shim.invalid>  Tue, 01 Dec 2026 00:00:00 +0000\n", 0o644)
	if out, code := runCmd(t, time.Minute, nil, "sh", "-c", `cd "$1" && "$2" -b rsync-ssl-shim-1.0`, "sh", work, dpkgSource); code != 0 {
		t.Fatalf("dpkg-source -b (exit %d):\n%s", code, out)
	}
	lintianClean(t, "the source package", filepath.Join(work, "rsync-ssl-shim_1.0.dsc"))
}

// TestLicenceVersion: the binary says its licence beside its version.
func TestLicenceVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		out, code := shim(t, nil, arg)
		if code != 0 || !strings.HasPrefix(out, "rsync-ssl-shim test\n") || !strings.HasSuffix(out, "\nlicence: Apache-2.0\n") {
			t.Errorf("rsync-ssl-shim %s (exit %d): %q, want the version line first and %q last", arg, code, out, "licence: Apache-2.0")
		}
	}
}
