package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// docDir is where the package puts its documentation.
const docDir = "usr/share/doc/rsync-ssl-shim"

// testPackageDocs extracts the .deb and checks what it documents: the
// pages links resolve where they are installed, and every unit and path of
// ours that the man page, README.Debian and the docs name is shipped.
func testPackageDocs(t *testing.T, deb string) {
	dpkgDeb := needTool(t, "dpkg-deb")
	root := t.TempDir()
	if out, code := runCmd(t, time.Minute, nil, dpkgDeb, "-x", deb, root); code != 0 {
		t.Fatalf("dpkg-deb -x (exit %d):\n%s", code, out)
	}
	t.Run("links", func(t *testing.T) { checkInstalledDocs(t, root) })
	t.Run("named-paths", func(t *testing.T) { checkNamedPaths(t, root) })
	t.Run("version", func(t *testing.T) {
		want, _ := runCmd(t, time.Minute, nil, "sh", filepath.Join(repoRoot(t), "packaging/version.sh"))
		got, _ := runCmd(t, time.Minute, nil, dpkgDeb, "-f", deb, "Version")
		if strings.TrimSpace(got) != strings.TrimSpace(want) {
			t.Errorf("the package's version is %q, packaging/version.sh says %q", got, want)
		}
		changelog := filepath.Join(root, docDir, "changelog.gz")
		out, _ := runCmd(t, time.Minute, nil, "zcat", changelog)
		if !strings.HasPrefix(out, "rsync-ssl-shim ("+strings.TrimSpace(want)+") ") {
			t.Errorf("the Debian changelog does not start with version %s:\n%s", strings.TrimSpace(want), out)
		}
	})
}

// checkInstalledDocs follows every relative link of the installed
// README.md, CHANGELOG.md and docs/*.md: each must name a file installed
// beside it (not compressed away) and, with an anchor, a heading in it.
func checkInstalledDocs(t *testing.T, root string) {
	t.Helper()
	doc := filepath.Join(root, docDir)
	pages, _ := filepath.Glob(filepath.Join(doc, "docs", "*.md"))
	pages = append(pages, filepath.Join(doc, "README.md"), filepath.Join(doc, "CHANGELOG.md"))
	for _, want := range []string{"README.md", "README.Debian", "CHANGELOG.md", "LICENSE", "NOTICE", "copyright", "docs/server.md"} {
		if _, err := os.Stat(filepath.Join(doc, want)); err != nil {
			t.Errorf("the package does not install /%s/%s: %v", docDir, want, err)
		}
	}
	repoPages, _ := filepath.Glob(filepath.Join(repoRoot(t), "docs", "*.md"))
	if len(pages) != len(repoPages)+2 {
		t.Errorf("installed %d pages under %s/docs, the tree has %d", len(pages)-2, docDir, len(repoPages))
	}
	linkRE := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	n := 0
	for _, f := range pages {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		rel, _ := filepath.Rel(root, f)
		for _, m := range linkRE.FindAllStringSubmatch(stripCode(string(text)), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			n++
			path, anchor, _ := strings.Cut(target, "#")
			dest := f
			if path != "" {
				dest = filepath.Join(filepath.Dir(f), path)
			}
			if r, _ := filepath.Rel(doc, dest); strings.HasPrefix(r, "..") {
				t.Errorf("/%s: link %q leaves /%s", rel, target, docDir)
				continue
			}
			if _, err := os.Stat(dest); err != nil {
				t.Errorf("/%s: link %q: /%s is not installed", rel, target, strings.TrimPrefix(dest, root+"/"))
				continue
			}
			if anchor != "" && strings.HasSuffix(dest, ".md") && !slices.Contains(mdAnchors(readFileT(t, dest)), anchor) {
				t.Errorf("/%s: link %q: no heading with anchor #%s", rel, target, anchor)
			}
		}
	}
	if n < 20 {
		t.Errorf("followed only %d links: the pages are missing or the scan is broken", n)
	}
}

var (
	// ourPathRE: a path of this package's: its documentation, its units,
	// anything under /etc, /lib or /usr/lib with "rsync-ssl" in its name.
	ourPathRE = regexp.MustCompile(`/(?:usr/share/doc/rsync-ssl-shim|etc|lib|usr/lib)/[A-Za-z0-9._@/*-]*`)
	// unitRE: one of our unit names (an instance stands for its template).
	unitRE = regexp.MustCompile(`\brsync-ssl(?:-[a-z]+)*(?:@[^.\s/'"*]*\*?)?\.(?:socket|service)\b`)
	// roffEscRE: the escapes between the words of a roff source.
	roffEscRE = regexp.MustCompile(`\\f[BIRP]|\\c|\\&`)
)

// adminPaths are named by the docs but made by the administrator (or the
// postinst), never shipped.
var adminPaths = []string{"/etc/rsync-ssl/cert.pem", "/etc/rsync-ssl/private/key.pem", "/etc/rsync-ssl/private",
	// docs/client-certificates.md's recipes: the client CA, its CRL, a hook.
	"/etc/rsync-ssl/clients-ca.pem", "/etc/rsync-ssl/clients.crl", "/etc/rsync-ssl/authorize",
	// docs/server.md's certbot recipe: where the admin copies the deploy hook.
	"/etc/letsencrypt/renewal-hooks/deploy/rsync-ssl-shim"}

// checkNamedPaths: every unit, /etc path of ours and documentation path the
// man page, README.Debian, README.md and docs/*.md name is in the package.
func checkNamedPaths(t *testing.T, root string) {
	t.Helper()
	repo := repoRoot(t)
	sources := map[string]string{}
	man := readFileT(t, filepath.Join(repo, "packaging/rsync-ssl-shim.8"))
	sources["rsync-ssl-shim.8"] = roffEscRE.ReplaceAllString(strings.ReplaceAll(man, `\-`, "-"), "")
	sources["README.Debian"] = readFileT(t, filepath.Join(repo, "packaging/debian/README.Debian"))
	sources["README.md"] = readFileT(t, filepath.Join(repo, "README.md"))
	pages, _ := filepath.Glob(filepath.Join(repo, "docs", "*.md"))
	for _, p := range pages {
		sources["docs/"+filepath.Base(p)] = readFileT(t, p)
	}
	shipped := map[string]bool{}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && p != root {
			shipped["/"+strings.TrimPrefix(p, root+"/")] = true
		}
		return nil
	})
	var names []string
	for n := range sources {
		names = append(names, n)
	}
	sort.Strings(names)
	checked := 0
	for _, name := range names {
		text := sources[name]
		for _, p := range ourPathRE.FindAllString(text, -1) {
			p = strings.TrimRight(p, ".,;:*")
			if !strings.HasPrefix(p, "/usr/share/doc/rsync-ssl-shim") && !strings.Contains(p, "rsync-ssl") {
				continue // not ours: /etc/passwd, /lib/systemd/system/rsync.service
			}
			if strings.HasPrefix(p, "/etc/systemd/system/") || slices.Contains(adminPaths, p) {
				continue // the administrator's drop-ins, certificate and key
			}
			checked++
			if !shipped[strings.TrimSuffix(p, "/")] && !shipped[strings.TrimSuffix(p, ".gz")+".gz"] {
				t.Errorf("%s names %s, which the package does not ship", name, p)
			}
		}
		for _, u := range unitRE.FindAllString(text, -1) {
			if i := strings.Index(u, "@"); i >= 0 {
				u = u[:i+1] + u[strings.LastIndex(u, "."):]
			}
			checked++
			if !shipped["/usr/lib/systemd/system/"+u] {
				t.Errorf("%s names the unit %s, which the package does not ship", name, u)
			}
		}
	}
	if checked < 30 {
		t.Errorf("checked only %d names: the scan is broken", checked)
	}
}
