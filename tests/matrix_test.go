package tests

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rsyncVersion is one rsync the server side is tested with.
type rsyncVersion struct {
	Name  string   // as shown in the table
	Path  string   // what --rsync points at
	Extra []string // serve flags this version needs beyond the defaults
	// Gets says what this version gets, for the table.
	Gets string
	// UnixOK: this version takes an AF_UNIX pair (--pair unix).
	UnixOK bool
}

// oldRsync returns Debian 12's rsync 3.2.7, unpacked by "make deps" into
// tests/.cache (never installed over the system's rsync).
func oldRsync(t *testing.T) string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(self), ".cache", "rsync-3.2.7", "usr", "bin", "rsync")
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("rsync 3.2.7 not unpacked at %s (make deps does it): %v", p, err)
		}
		t.Skipf("rsync 3.2.7 not unpacked at %s; run make deps", p)
	}
	return p
}

// inetOnlyRsync builds the stand-in for rsync after 3.5.0 (see
// testdata/rsync-inet-only) around the system's rsync; record receives a
// line per start with the mode that start took.
func inetOnlyRsync(t *testing.T, real string) (path, record string) {
	t.Helper()
	dir := t.TempDir()
	path = filepath.Join(dir, "rsync")
	record = filepath.Join(dir, "starts")
	_, self, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-o", path,
		"-ldflags", fmt.Sprintf("-X main.realRsync=%s -X main.record=%s", real, record), ".")
	cmd.Dir = filepath.Join(filepath.Dir(self), "testdata", "rsync-inet-only")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build rsync-inet-only: %v\n%s", err, out)
	}
	return path, record
}

// listenWatch samples the listening TCP sockets every few milliseconds
// and records any that belongs to an rsync process started below the
// server under test (other rsync daemons on the machine are not ours).
type listenWatch struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	hits []string
	n    int
}

func watchListeners(t *testing.T, root int) *listenWatch {
	ss := needTool(t, "ss")
	w := &listenWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			out, _ := exec.CommandContext(ctx, ss, "-Hltnp").Output()
			cancel()
			w.mu.Lock()
			w.n++
			sc := bufio.NewScanner(strings.NewReader(string(out)))
			for sc.Scan() {
				l := sc.Text()
				m := ssPidRE.FindStringSubmatch(l)
				if m == nil || !strings.Contains(l, `(("rsync"`) {
					continue
				}
				if pid, _ := strconv.Atoi(m[1]); descends(pid, root) {
					w.hits = append(w.hits, l)
				}
			}
			w.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return w
}

var ssPidRE = regexp.MustCompile(`pid=(\d+)`)

// descends reports whether pid is root or one of its descendants, by
// walking the parent links in /proc.
func descends(pid, root int) bool {
	for i := 0; i < 64 && pid > 1; i++ {
		if pid == root {
			return true
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		// The command name in parentheses may hold spaces: the fields
		// after its closing parenthesis are state, then the parent.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 2 {
			return false
		}
		pid, _ = strconv.Atoi(f[1])
	}
	return false
}

// Stop ends sampling and returns the offending sockets and how many
// samples were taken.
func (w *listenWatch) Stop() ([]string, int) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hits, w.n
}

type matrixRow struct {
	version, mode, pair, pull, push, real, deny, listen string
}

var pairRE = regexp.MustCompile(`served .* pair=(\w+) `)

type clientRow struct {
	version, client, clientRsync, result string
}

// TestVersionMatrix runs every server-side rsync (3.2.7, 3.5.0, and the
// stand-in for rsync after 3.5.0) behind every systemd start mode, and
// every stock client type with rsync 3.2.7 and 3.5.0 on the client. Each
// cell proves pull, push, that rsync logged the client's real address
// (127.0.0.7, while the shim talks to rsync over 127.0.0.1 or AF_UNIX),
// that "hosts deny" on that address refuses it, and that no rsync process
// listened on any port at any sampled moment. With UPDATE_MATRIX=1 it
// rewrites the tables in docs/versions.md.
func TestVersionMatrix(t *testing.T) {
	slowTier(t, "version matrix")
	sys := rsyncPath(t)
	old := oldRsync(t)
	inetOnly, inetRecord := inetOnlyRsync(t, sys)
	p := newPKI(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, 2, 100)

	versions := []rsyncVersion{
		{Name: "3.2.7 (Debian 12 main)", Path: old, UnixOK: true,
			Gets: "PROXY v2, `proxy protocol` alone; loopback TCP pair (AF_UNIX with --pair unix)"},
		{Name: "3.5.0 (Debian 12 security)", Path: sys, UnixOK: true,
			Gets: "PROXY v2 with `proxy protocol hosts`; loopback TCP pair (AF_UNIX with --pair unix)"},
		{Name: "after 3.5.0 (PR #1075)", Path: inetOnly, Extra: []string{"--proxy-protocol", "hosts"},
			Gets: "PROXY v2 with `proxy protocol hosts`; loopback TCP pair"},
	}
	// The watcher can fail: a plain rsync daemon started here is caught.
	t.Run("watcher sees a listening rsync", func(t *testing.T) {
		rd := newRsyncd(t)
		port := freePort(t, "127.0.0.1")
		cmd := exec.Command(sys, "--daemon", "--no-detach", "--address=127.0.0.1", "--port="+strconv.Itoa(port), "--config="+rd.Conf)
		startBg(t, cmd)
		waitPort(t, fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
		w := watchListeners(t, cmd.Process.Pid)
		time.Sleep(100 * time.Millisecond)
		if hits, _ := w.Stop(); len(hits) == 0 {
			t.Fatal("the listening-socket watcher missed a listening rsync daemon")
		}
	})

	var (
		mu   sync.Mutex
		rows []matrixRow
	)
	type cell struct {
		mode string
		pair []string // extra serve flags choosing the pair
	}
	for _, v := range versions {
		cells := []cell{{"inetd", nil}, {"listenfds", nil}, {"acceptno", nil}}
		if v.UnixOK {
			cells = append(cells, cell{"inetd", []string{"--pair", "unix"}})
		}
		for _, c := range cells {
			mode := c.mode
			name := v.Name + "/" + mode
			if c.pair != nil {
				name += "/" + strings.Join(c.pair, "=")
			}
			t.Run(name, func(t *testing.T) {
				row := matrixRow{version: v.Name, mode: modeName(mode), pair: "?"}
				defer func() {
					mu.Lock()
					rows = append(rows, row)
					mu.Unlock()
				}()
				rd := newRsyncd(t, "hosts deny = 127.0.0.7")
				copyTree(t, src, rd.Data)
				s := startMode(t, mode, serveArgs(p, rd, v.Path, append(append([]string{}, v.Extra...), c.pair...)...))
				w := watchListeners(t, s.Pid)
				defer func() {
					if m := pairRE.FindStringSubmatch(s.Log.String()); m != nil {
						row.pair = m[1] + " (auto)"
						if c.pair != nil {
							row.pair = m[1] + " (--pair " + m[1] + ")"
						}
					}
				}()

				dst := filepath.Join(t.TempDir(), "pulled")
				out, code := rsyncSSL(t, s, p, "openssl", "-a", "localhost::data/", dst+"/")
				row.pull = verdict(code == 0)
				if code != 0 {
					t.Errorf("pull: exit %d\n%s\nserver:\n%s", code, out, s.Log)
				} else {
					sameTree(t, src, dst)
				}
				out, code = rsyncSSL(t, s, p, "openssl", "-a", src+"/", "localhost::up/")
				row.push = verdict(code == 0)
				if code != 0 {
					t.Errorf("push: exit %d\n%s", code, out)
				} else {
					sameTree(t, src, rd.Up)
				}
				out, code = socatPull(t, s, p, "127.0.0.7", "-a", "rsync://localhost/data/", t.TempDir()+"/")
				log := rd.LogText(t)
				denied := code != 0 && regexp.MustCompile(`rsync denied on module data from \S+ \(127\.0\.0\.7\)`).MatchString(log)
				row.deny = verdict(denied)
				row.real = verdict(strings.Contains(log, "(127.0.0.7)"))
				if !denied {
					t.Errorf("hosts deny = 127.0.0.7 did not refuse the client from 127.0.0.7 (exit %d):\n%s\nrsync log:\n%s", code, out, log)
				}
				hits, samples := w.Stop()
				row.listen = fmt.Sprintf("never (%d samples)", samples)
				if len(hits) > 0 {
					row.listen = "LISTENED"
					t.Errorf("an rsync listened during the session:\n%s", strings.Join(hits, "\n"))
				}
			})
		}
	}

	// The stand-in must really have been handed AF_INET sockets: every
	// start took inetd mode.
	if b, err := os.ReadFile(inetRecord); err != nil || strings.Contains(string(b), "standalone") || !strings.Contains(string(b), "inetd") {
		t.Errorf("rsync after 3.5.0 starts: %q (%v), want inetd mode only", b, err)
	}

	// Forcing --pair unix on such an rsync: it takes its standalone path,
	// and the --address guard keeps it from listening.
	t.Run("after 3.5.0/forced unix pair", func(t *testing.T) {
		row := matrixRow{version: "after 3.5.0 (PR #1075)", mode: modeName("inetd"), pair: "unix (forced)", real: "-", deny: "-"}
		defer func() { mu.Lock(); rows = append(rows, row); mu.Unlock() }()
		rd := newRsyncd(t)
		s := startMode(t, "inetd", serveArgs(p, rd, inetOnly, "--proxy-protocol", "hosts", "--pair", "unix"))
		w := watchListeners(t, s.Pid)
		out, code := rsyncSSL(t, s, p, "openssl", "localhost::")
		hits, samples := w.Stop()
		row.pull, row.push = "refused", "refused"
		row.listen = fmt.Sprintf("never (%d samples)", samples)
		if code == 0 {
			t.Errorf("listing over an AF_UNIX pair worked against rsync after 3.5.0:\n%s", out)
		}
		if len(hits) > 0 {
			row.listen = "LISTENED"
			t.Errorf("rsync listened:\n%s", strings.Join(hits, "\n"))
		}
		want := "rsync exited with status 10 before its greeting (see rsync's log; an rsync newer than 3.5.0 does not take an AF_UNIX socket as its inetd stdin: use --pair tcp)"
		if !waitFor(func() bool { return strings.Contains(s.Log.String(), want) }, 5*time.Second) {
			t.Errorf("serve's log lacks %q:\n%s", want, s.Log)
		}
		if log := rd.LogText(t); !strings.Contains(log, "unable to bind any inbound sockets") {
			t.Errorf("rsync's log does not show the refused bind:\n%s", log)
		}
	})

	// Clients: stock rsync-ssl of both types, with rsync 3.2.7 and 3.5.0
	// on the client side, against each server version.
	var crows []clientRow
	oldBin := t.TempDir()
	if err := os.Symlink(old, filepath.Join(oldBin, "rsync")); err != nil {
		t.Fatal(err)
	}
	for _, v := range versions {
		rd := newRsyncd(t)
		copyTree(t, src, rd.Data)
		s := startMode(t, "inetd", serveArgs(p, rd, v.Path, v.Extra...))
		for _, client := range []string{"openssl", "stunnel"} {
			for _, cv := range []struct{ name, pathDir string }{{"3.2.7", oldBin}, {"3.5.0", ""}} {
				t.Run(fmt.Sprintf("%s/client %s rsync %s", v.Name, client, cv.name), func(t *testing.T) {
					r := clientRow{version: v.Name, client: "rsync-ssl (" + client + ")", clientRsync: cv.name, result: "fails"}
					defer func() { crows = append(crows, r) }()
					args := []string{"-a", "localhost::data/", t.TempDir() + "/"}
					if cv.pathDir != "" {
						// rsync-ssl runs "rsync" from PATH; put 3.2.7 first.
						t.Setenv("PATH", cv.pathDir+":"+os.Getenv("PATH"))
					}
					out, code := rsyncSSL(t, s, p, client, args...)
					if code != 0 {
						t.Fatalf("pull: exit %d\n%s", code, out)
					}
					dst := args[2]
					sameTree(t, src, dst)
					ver, _ := runCmd(t, 10*time.Second, nil, "rsync", "--version")
					if !strings.Contains(ver, "version "+cv.name) {
						t.Fatalf("client rsync is not %s: %s", cv.name, strings.SplitN(ver, "\n", 2)[0])
					}
					r.result = "pull works, SHA-256 match"
				})
			}
		}
	}

	// Our own client, with the system's rsync on the client side.
	for _, v := range versions {
		rd := newRsyncd(t)
		copyTree(t, src, rd.Data)
		s := startMode(t, "inetd", serveArgs(p, rd, v.Path, v.Extra...))
		t.Run(v.Name+"/client rsync-ssl-shim", func(t *testing.T) {
			r := clientRow{version: v.Name, client: "rsync-ssl-shim rsync", clientRsync: "3.5.0", result: "fails"}
			defer func() { crows = append(crows, r) }()
			dst := t.TempDir()
			out, code := runCmd(t, 2*time.Minute, []string{"RSYNC_SSL_CA_CERT=" + p.CA, fmt.Sprintf("RSYNC_SSL_PORT=%d", s.Port)},
				shimBin, "rsync", "-a", "localhost::data/", dst+"/")
			if code != 0 {
				t.Fatalf("pull: exit %d\n%s\nserver:\n%s", code, out, s.Log)
			}
			sameTree(t, src, dst)
			r.result = "pull works, SHA-256 match"
		})
	}

	table := renderMatrix(versions, rows, crows)
	t.Logf("\n%s", table)
	if os.Getenv("UPDATE_MATRIX") == "1" && !t.Failed() {
		updateVersionsMatrix(t, table)
	}
}

func modeName(m string) string {
	switch m {
	case "inetd":
		return "Accept=yes, fd 0"
	case "listenfds":
		return "Accept=yes, LISTEN_FDS"
	case "acceptno":
		return "Accept=no (accept loop)"
	}
	return m
}

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

func renderMatrix(versions []rsyncVersion, rows []matrixRow, crows []clientRow) string {
	var b strings.Builder
	b.WriteString("| server rsync | started by | pair | pull | push | real client address in rsync's log | `hosts deny` on it | rsync listening |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].version < rows[j].version })
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.version, r.mode, r.pair, r.pull, r.push, r.real, r.deny, r.listen)
	}
	b.WriteString("\n| server rsync | client | client rsync | result |\n|---|---|---|---|\n")
	for _, r := range crows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.version, r.client, r.clientRsync, r.result)
	}
	b.WriteString("\n| server rsync | what it gets with the defaults |\n|---|---|\n")
	for _, v := range versions {
		fmt.Fprintf(&b, "| %s | %s |\n", v.Name, v.Gets)
	}
	return b.String()
}

// updateVersionsMatrix replaces the text between the matrix markers in
// docs/versions.md with table.
func updateVersionsMatrix(t *testing.T, table string) {
	_, self, _, _ := runtime.Caller(0)
	readme := filepath.Join(filepath.Dir(filepath.Dir(self)), "docs", "versions.md")
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- version-matrix:begin -->\n", "<!-- version-matrix:end -->"
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("docs/versions.md lacks the %q/%q markers", begin, end)
	}
	s = s[:i+len(begin)] + table + s[j:]
	if err := os.WriteFile(readme, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
