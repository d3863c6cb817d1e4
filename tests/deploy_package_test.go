package tests

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// debianCache holds the debootstrapped Debian roots between runs, one per
// release; each is rebuilt when debianPackages changes.
const debianCache = "/var/cache/rsync-ssl-shim-tests"

// debianPackages are added to the minimal root: systemd to boot it, rsync
// because the package depends on it (the container has no network, so apt
// must find every dependency already installed).
// stunnel4 is for make bench-installed, which boots the same root.
var debianPackages = []string{"systemd", "systemd-sysv", "dbus", "rsync", "openssl", "ca-certificates", "stunnel4"}

// debianRelease is a Debian release the package is installed on.
type debianRelease struct {
	suite, name string
}

// debianReleases are where users are: every subtest of testRelease runs on
// each (TestDeployPackage/bookworm/..., TestDeployPackage/trixie/...).
var debianReleases = []debianRelease{
	{"bookworm", "Debian 12"}, // systemd 252, rsync 3.2.7, OpenSSL 3.0
	{"trixie", "Debian 13"},   // systemd 257, rsync 3.4.1, OpenSSL 3.5
}

// TestDeployPackage builds the .deb, lints it, and installs it into a
// freshly booted Debian 12 and Debian 13 under systemd-nspawn.
func TestDeployPackage(t *testing.T) {
	slowTier(t, "booted systemd")
	deb := buildDeb(t)

	t.Run("lintian", func(t *testing.T) { lintianClean(t, "the .deb", deb) })
	t.Run("lintian-trixie", func(t *testing.T) { lintianIn(t, debianReleases[1], deb) })

	t.Run("docs", func(t *testing.T) { testPackageDocs(t, deb) })

	for _, rel := range debianReleases {
		t.Run(rel.suite, func(t *testing.T) { testRelease(t, rel, deb) })
	}
}

// buildDeb builds the package from this tree with packaging/build-deb.sh.
func buildDeb(t *testing.T) string {
	t.Helper()
	needTool(t, "dpkg-buildpackage")
	needTool(t, "dh")
	out := t.TempDir()
	res, code := runCmd(t, 5*time.Minute, nil, filepath.Join(repoRoot(t), "packaging", "build-deb.sh"), out)
	if code != 0 {
		t.Fatalf("packaging/build-deb.sh (exit %d):\n%s", code, res)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "rsync-ssl-shim_*_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("want one rsync-ssl-shim_<version>_<arch>.deb in %s, got %v\n%s", out, debs, res)
	}
	t.Logf("built %s", filepath.Base(debs[0]))
	return debs[0]
}

// lintianClean runs lintian --pedantic on a package file and fails the test
// on any error or warning it reports.
func lintianClean(t *testing.T, what, file string) {
	t.Helper()
	lintian := needTool(t, "lintian")
	out, code := runCmd(t, 5*time.Minute, nil, lintian, "--pedantic", "--display-info", "--fail-on", "none", file)
	lintianVerdict(t, what, out, code)
}

// lintianIn runs the release's own lintian (its checks and profile, in a
// cached root of that release with lintian installed, run read-only with
// systemd-nspawn) on a package file.
func lintianIn(t *testing.T, rel debianRelease, file string) {
	t.Helper()
	needTool(t, "systemd-nspawn")
	// perl-openssl-defaults by name: debootstrap does not resolve the
	// virtual package (perl-openssl-abi-3) a dependency of lintian's asks for.
	root := cachedRoot(t, rel, []string{"lintian", "perl-openssl-defaults"})
	out, code := runCmd(t, 5*time.Minute, nil, "systemd-nspawn", "-q", "--register=no", "--keep-unit", "--read-only", "--pipe",
		"--tmpfs=/tmp", "--bind-ro="+filepath.Dir(file)+":/mnt", "-D", root,
		"lintian", "--pedantic", "--display-info", "--fail-on", "none", "/mnt/"+filepath.Base(file))
	lintianVerdict(t, "the .deb with "+rel.name+"'s lintian", out, code)
}

// lintianVerdict fails the test on any error or warning in lintian's
// output, or when lintian did not run.
func lintianVerdict(t *testing.T, what, out string, code int) {
	t.Helper()
	var bad []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			bad = append(bad, line)
		}
	}
	t.Logf("lintian --pedantic --display-info on %s (exit %d):\n%s", what, code, out)
	if code != 0 || len(bad) > 0 {
		t.Fatalf("lintian reports errors or warnings on %s:\n%s", what, strings.Join(bad, "\n"))
	}
}

// cachedDebian returns a debootstrapped root of the release, made once and
// kept under debianCache.
func cachedDebian(t *testing.T, rel debianRelease) string {
	slowTier(t, "booted systemd")
	t.Helper()
	return cachedRoot(t, rel, debianPackages)
}

// cachedRoot returns a debootstrapped minbase root of the release with
// packages added, made once and kept under debianCache.
func cachedRoot(t *testing.T, rel debianRelease, packages []string) string {
	t.Helper()
	debootstrap := needTool(t, "debootstrap")
	key := rel.suite + "-minbase-" + strings.Join(packages, ",")
	root := filepath.Join(debianCache, strings.NewReplacer(",", "_").Replace(key))
	if _, err := os.Stat(filepath.Join(root, ".complete")); err == nil {
		return root
	}
	if err := os.MkdirAll(debianCache, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(debianCache, "partial-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	// It becomes the container's "/": MkdirTemp's 0700 would lock every
	// service user out of the whole tree.
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, code := runCmd(t, 8*time.Minute, nil, debootstrap, "--variant=minbase",
		"--include="+strings.Join(packages, ","), rel.suite, tmp)
	if code != 0 {
		t.Fatalf("debootstrap (exit %d):\n%s", code, res)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(root)
	if err := os.Rename(tmp, root); err != nil {
		t.Fatal(err)
	}
	t.Logf("debootstrapped %s into %s in %v", rel.name, root, time.Since(start).Round(time.Second))
	return root
}

// container is a Debian root booted under systemd-nspawn in a network
// namespace of its own, reached from here only through that namespace's
// loopback.
type container struct {
	root, netns string
	leader      int // the container's PID 1, as seen from here
}

// exec runs a command inside the booted container.
func (c *container) exec(t *testing.T, d time.Duration, args ...string) (string, int) {
	t.Helper()
	full := append([]string{"-t", strconv.Itoa(c.leader), "-a", "-r", "-w",
		"env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"}, args...)
	return runCmd(t, d, nil, "nsenter", full...)
}

// must runs a command inside the container and fails the test unless it
// succeeds.
func (c *container) must(t *testing.T, args ...string) string {
	t.Helper()
	out, code := c.exec(t, 2*time.Minute, args...)
	if code != 0 {
		t.Fatalf("in container: %v (exit %d):\n%s", args, code, out)
	}
	return out
}

// client runs a program here, in the container's network namespace.
func (c *container) client(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	return runCmd(t, 3*time.Minute, env, "ip", append([]string{"netns", "exec", c.netns}, args...)...)
}

// bootContainer copies the cached root, makes a network namespace with only
// a loopback, and boots the copy in it. Everything is undone at cleanup.
func bootContainer(t *testing.T, cached string) *container {
	t.Helper()
	needTool(t, "systemd-nspawn")
	needTool(t, "nsenter")
	needTool(t, "ip")
	name := fmt.Sprintf("rsslt-%d", os.Getpid())
	c := &container{root: filepath.Join(t.TempDir(), name), netns: name}
	if res, code := runCmd(t, 3*time.Minute, nil, "cp", "-a", cached, c.root); code != 0 {
		t.Fatalf("copy the root: %s", res)
	}
	if res, code := runCmd(t, 30*time.Second, nil, "ip", "netns", "add", c.netns); code != 0 {
		t.Fatalf("ip netns add: %s", res)
	}
	t.Cleanup(func() { runCmd(t, 30*time.Second, nil, "ip", "netns", "delete", c.netns) })
	if res, code := runCmd(t, 30*time.Second, nil, "ip", "-n", c.netns, "link", "set", "lo", "up"); code != 0 {
		t.Fatalf("loopback up: %s", res)
	}

	// CAP_NET_ADMIN: nspawn keeps it only for a private network, and the
	// container's systemd needs it to bring up the loopback of each
	// PrivateNetwork=yes service (the shim's socket pair runs over it).
	cmd := exec.Command("systemd-nspawn", "-D", c.root, "-b", "--register=no", "--keep-unit", "-q",
		"--machine="+name, "--network-namespace-path=/run/netns/"+c.netns,
		"--capability=CAP_NET_ADMIN", "--console=pipe")
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		// SIGTERM asks nspawn to halt the container cleanly; past the
		// bound, killing the container's PID 1 ends its whole PID namespace.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			if c.leader > 0 {
				syscall.Kill(c.leader, syscall.SIGKILL)
			}
			cmd.Process.Kill()
			<-done
		}
		os.RemoveAll(filepath.Join("/run/systemd/nspawn/propagate", name))
		if t.Failed() {
			t.Logf("systemd-nspawn output:\n%s", log.String())
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for c.leader == 0 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		// nspawn's child becomes the container's systemd only once it has
		// set up the namespaces and exec'd it.
		if f := strings.Fields(string(b)); len(f) > 0 {
			comm, _ := os.ReadFile("/proc/" + f[0] + "/comm")
			if strings.TrimSpace(string(comm)) == "systemd" {
				c.leader, _ = strconv.Atoi(f[0])
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c.leader == 0 {
		t.Fatalf("the container did not start:\n%s", log.String())
	}
	// Until the container's systemd has its private bus up, systemctl
	// cannot even ask; then --wait waits for the boot to finish.
	var out string
	for time.Now().Before(deadline.Add(60 * time.Second)) {
		out, _ = c.exec(t, 90*time.Second, "systemctl", "is-system-running", "--wait")
		if !strings.Contains(out, "Failed to connect") && strings.TrimSpace(out) != "offline" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if state := strings.TrimSpace(out); state != "running" {
		failed, _ := c.exec(t, 30*time.Second, "systemctl", "--failed", "--no-pager")
		t.Logf("container booted %q:\n%s", state, failed)
		if state != "degraded" {
			t.Fatalf("the container did not boot: %q\n%s", state, log.String())
		}
	}
	return c
}

// snapshot lists every path of the container's file system (type and link
// target), leaving out what changes by itself or belongs to dpkg and apt.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	skip := map[string]bool{"proc": true, "sys": true, "dev": true, "run": true, "tmp": true,
		"var/tmp": true, "var/log": true, "var/cache": true, "var/lib/dpkg": true, "var/lib/apt": true,
		"var/lib/systemd/timers": true, "var/lib/systemd/catalog": true, "root": true}
	m := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if skip[rel] {
			return filepath.SkipDir
		}
		v := d.Type().String()
		if d.Type()&fs.ModeSymlink != 0 {
			l, _ := os.Readlink(p)
			v += " -> " + l
		}
		m[rel] = v
		return nil
	})
	return m
}

func readFileT(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func copyFileT(t *testing.T, from, to string) {
	t.Helper()
	writeFile(t, to, readFileT(t, from), 0o644)
}

// testRelease installs the package the way README.md ("Install on Debian 12") tells an admin
// to, pulls a module through it with stock rsync-ssl and with our own rsync
// command, proves the sandbox refuses what it should, and purges.
func testRelease(t *testing.T, rel debianRelease, deb string) {
	rsyncSSL := needTool(t, "rsync-ssl")
	needTool(t, "openssl")
	c := bootContainer(t, cachedDebian(t, rel))

	// The modules: a tree under /srv (allowed), the same kind of tree in a
	// home directory (world-readable, hidden by ProtectHome=), and an upload
	// directory that the file modes would let anyone write.
	data := filepath.Join(c.root, "srv/rsync/data")
	makeTree(t, data, 8, 300)
	makeTree(t, filepath.Join(c.root, "home/shared/data"), 0, 20)
	for _, d := range []string{"srv/rsync/open", "home/shared", "home"} {
		os.MkdirAll(filepath.Join(c.root, d), 0o755)
		os.Chmod(filepath.Join(c.root, d), 0o755)
	}
	os.Chmod(filepath.Join(c.root, "srv/rsync/open"), 0o777)
	before := snapshot(t, c.root)
	accounts := map[string]string{}
	for _, f := range []string{"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"} {
		accounts[f] = readFileT(t, filepath.Join(c.root, f))
	}

	// The admin's certificate: made here, copied in as a file would be.
	pki := newPKI(t)
	copyFileT(t, deb, filepath.Join(c.root, "root", filepath.Base(deb)))
	copyFileT(t, pki.Cert, filepath.Join(c.root, "root/server.pem"))
	copyFileT(t, pki.Key, filepath.Join(c.root, "root/server.key"))

	// README.md, "Install on Debian 12": these commands, in this order.
	start := time.Now()
	installed := c.must(t, "apt", "install", "-y", "/root/"+filepath.Base(deb))
	c.must(t, "install", "-m", "0644", "/root/server.pem", "/etc/rsync-ssl/cert.pem")
	c.must(t, "install", "-m", "0640", "-g", "_rsync-ssl-key", "/root/server.key", "/etc/rsync-ssl/private/key.pem")
	conf := filepath.Join(c.root, "etc/rsync-ssl/rsyncd.conf")
	writeFile(t, conf, readFileT(t, conf)+`
[data]
	path = /srv/rsync/data
	read only = yes

[home]
	path = /home/shared/data
	read only = yes

[open]
	path = /srv/rsync/open
	read only = no

[upload]
	path = /srv/rsync/upload
	read only = no

[chrooted]
	path = /srv/rsync/data
	read only = yes
	use chroot = yes
	uid = nobody
	gid = nogroup
`, 0o644)
	c.must(t, "systemctl", "enable", "--now", "rsync-ssl.socket")

	env := []string{"RSYNC_SSL_TYPE=openssl", "RSYNC_SSL_CA_CERT=" + pki.CA}
	pull := func(t *testing.T, module string, prog ...string) (string, string, int) {
		t.Helper()
		dest := t.TempDir()
		out, code := c.client(t, env, append(prog, "-a", "rsync://localhost/"+module+"/", dest+"/")...)
		return dest, out, code
	}
	dest, out, code := pull(t, "data", rsyncSSL)
	elapsed := time.Since(start)
	if code != 0 {
		journal, _ := c.exec(t, time.Minute, "journalctl", "--no-pager", "-n", "60", "-o", "cat")
		t.Fatalf("rsync-ssl pull (exit %d):\n%s\njournal:\n%s", code, out, journal)
	}
	sameTree(t, data, dest)
	t.Logf("%s: install to first transfer (apt install, certificate, module, enable, pull of %d entries): %v",
		rel.name, len(treeSums(t, data)), elapsed.Round(time.Millisecond))

	t.Run("kernel-tls-probe", func(t *testing.T) { testInstalledProbe(t, c) })
	t.Run("journal-prefix", func(t *testing.T) { testInstalledJournalPrefix(t, c) })
	t.Run("tls-module-on-start", func(t *testing.T) { testInstalledModuleLoad(t, c) })

	// The first install says what to do first, and the documentation it
	// points to is there, every link resolving.
	t.Run("first-steps", func(t *testing.T) {
		for _, want := range []string{"install -m 0644 server.pem /etc/rsync-ssl/cert.pem",
			"systemctl enable --now rsync-ssl.socket", "/usr/share/doc/rsync-ssl-shim/README.Debian"} {
			if !strings.Contains(installed, want) {
				t.Errorf("apt install does not say %q:\n%s", want, installed)
			}
		}
		checkInstalledDocs(t, c.root)
	})

	t.Run("verify-installed", func(t *testing.T) {
		out := c.must(t, "systemd-analyze", "verify", "--man=no", "rsync-ssl.socket", "rsync-ssl.service",
			"rsync-ssl-isolated.socket", "rsync-ssl-isolated@.service")
		if strings.TrimSpace(out) != "" {
			t.Fatalf("systemd-analyze verify inside the container is not clean:\n%s", out)
		}
		for _, svc := range []string{"rsync-ssl.service", "rsync-ssl-isolated@probe.service"} {
			sec, _ := c.exec(t, time.Minute, "systemd-analyze", "security", "--no-pager", svc)
			if m := exposureRE.FindStringSubmatch(sec); m != nil {
				t.Logf("installed %s, online analysis: exposure %s", svc, m[1])
			}
		}
	})

	t.Run("our-rsync", func(t *testing.T) {
		if _, code := runCmd(t, 30*time.Second, nil, shimBin, "rsync", "--help"); code != 0 {
			t.Skip("rsync-ssl-shim rsync --help fails: the rsync command is not built yet")
		}
		dest, out, code := pull(t, "data", shimBin, "rsync")
		if code != 0 {
			t.Fatalf("rsync-ssl-shim rsync pull (exit %d):\n%s", code, out)
		}
		sameTree(t, data, dest)
	})

	// A drop-in reaches rsync-ssl.service at its next start: stopped
	// here, the next connection starts it with the drop-in.
	dropin := func(t *testing.T, name, text string) {
		t.Helper()
		p := filepath.Join(c.root, "etc/systemd/system/rsync-ssl.service.d", name)
		writeFile(t, p, text, 0o644)
		c.must(t, "systemctl", "daemon-reload")
		c.must(t, "systemctl", "stop", "rsync-ssl.service")
		t.Cleanup(func() {
			os.Remove(p)
			os.Remove(filepath.Dir(p))
			c.exec(t, time.Minute, "systemctl", "daemon-reload")
			c.exec(t, time.Minute, "systemctl", "stop", "rsync-ssl.service")
		})
	}
	example := func(t *testing.T, name string) string {
		return readFileT(t, filepath.Join(repoRoot(t), "systemd/examples", name))
	}

	// The sandbox, not the file modes, refuses: each module is open to
	// anyone by its modes, and the documented drop-in lets the same
	// request through.
	t.Run("confined-home", func(t *testing.T) {
		_, out, code := pull(t, "home", rsyncSSL)
		if code == 0 || !strings.Contains(out, "chdir failed") {
			t.Fatalf("a module under /home was served by the shipped unit (exit %d):\n%s", code, out)
		}
		dropin(t, "home-modules.conf", example(t, "home-modules.conf"))
		dest, out, code := pull(t, "home", rsyncSSL)
		if code != 0 {
			t.Fatalf("with home-modules.conf the module is still refused (exit %d):\n%s", code, out)
		}
		sameTree(t, filepath.Join(c.root, "home/shared/data"), dest)
	})

	t.Run("confined-write", func(t *testing.T) {
		src := t.TempDir()
		makeTree(t, src, 0, 10)
		// rsync munges symlinks that it receives outside a chroot; the
		// point here is the sandbox, so send files only.
		os.Remove(filepath.Join(src, "link-to-spaces"))
		os.Remove(filepath.Join(src, "dangling-link"))
		out, code := c.client(t, env, rsyncSSL, "-rl", src+"/", "rsync://localhost/open/")
		if code == 0 || !strings.Contains(out, "Read-only file system") {
			t.Fatalf("an upload into a mode 0777 directory got through the shipped unit (exit %d):\n%s", code, out)
		}
		// docs: writable-module.conf's own instructions.
		c.must(t, "groupadd", "--system", "rsync-upload")
		c.must(t, "gpasswd", "-a", "_rsync-ssl", "rsync-upload")
		c.must(t, "install", "-d", "-g", "rsync-upload", "-m", "2775", "/srv/rsync/upload")
		t.Cleanup(func() {
			os.RemoveAll(filepath.Join(c.root, "srv/rsync/upload"))
			c.exec(t, time.Minute, "groupdel", "rsync-upload")
		})
		dropin(t, "writable-module.conf", example(t, "writable-module.conf"))
		out, code = c.client(t, env, rsyncSSL, "-rl", src+"/", "rsync://localhost/upload/")
		if code != 0 {
			t.Fatalf("upload with writable-module.conf (exit %d):\n%s", code, out)
		}
		sameTree(t, src, filepath.Join(c.root, "srv/rsync/upload"))
	})

	// rsync as _rsync-ssl cannot chroot: the mirror mode is what it says.
	// --rsync-user=root (backup-recipe) is the way to "use chroot".
	t.Run("chroot-refused-as-rsync-user", func(t *testing.T) {
		_, out, code := pull(t, "chrooted", rsyncSSL)
		if code == 0 {
			t.Fatalf("use chroot/uid worked with rsync as _rsync-ssl, so the sandbox is not what it says:\n%s", out)
		}
	})

	testInstalledDefault(t, c, pki, env, data, deb)
	t.Run("backup-recipe", func(t *testing.T) { testInstalledBackup(t, c, pki, rsyncSSL) })
	t.Run("isolated-burst", func(t *testing.T) { testIsolatedBurst(t, c, env, rsyncSSL) })

	t.Run("purge", func(t *testing.T) {
		os.Remove(filepath.Join(c.root, "root", filepath.Base(deb)))
		c.must(t, "dpkg", "--purge", "rsync-ssl-shim")
		// systemd 257 may keep a unit it no longer finds for a moment
		// (not-found inactive dead) until its garbage collection runs.
		var units string
		waitFor(func() bool {
			units, _ = c.exec(t, time.Minute, "systemctl", "list-units", "--all", "--no-legend", "--plain", "rsync-ssl*")
			return strings.TrimSpace(units) == ""
		}, 10*time.Second)
		if strings.TrimSpace(units) != "" {
			t.Errorf("units still loaded after purge:\n%s", units)
		}
		after := snapshot(t, c.root)
		var diffs []string
		for p, v := range after {
			if before[p] != v {
				diffs = append(diffs, fmt.Sprintf("left behind: %s (%s)", p, v))
			}
		}
		for p := range before {
			if _, ok := after[p]; !ok {
				diffs = append(diffs, "removed: "+p)
			}
		}
		// The package's system user and group stay after purge, as Debian's
		// policy has it (its uid may still own files); nothing else may
		// change.
		for f, want := range accounts {
			var kept []string
			for _, l := range strings.SplitAfter(readFileT(t, filepath.Join(c.root, f)), "\n") {
				if !strings.HasPrefix(l, "_rsync-ssl:") && !strings.HasPrefix(l, "_rsync-ssl-key:") {
					kept = append(kept, l)
				}
			}
			if got := strings.Join(kept, ""); got != want {
				diffs = append(diffs, f+" changed")
			}
		}
		sort.Strings(diffs)
		if len(diffs) > 0 {
			t.Fatalf("dpkg --purge did not restore the system:\n%s", strings.Join(diffs, "\n"))
		}
	})
}
