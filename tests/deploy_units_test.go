package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// repoRoot is the top of the source tree these tests belong to.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(self))
}

// unitDir copies the shipped units into a fresh directory, pointing ExecStart
// at the binary under test so that systemd-analyze can check it exists;
// drop-ins from systemd/examples are added under rsync-ssl@.service.d.
func unitDir(t *testing.T, dropins ...string) string {
	t.Helper()
	src := filepath.Join(repoRoot(t), "systemd")
	dir := t.TempDir()
	for _, name := range []string{"rsync-ssl.socket", "rsync-ssl@.service"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "/usr/bin/rsync-ssl-shim", shimBin)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if len(dropins) > 0 {
		d := filepath.Join(dir, "rsync-ssl@.service.d")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, name := range dropins {
			b, err := os.ReadFile(filepath.Join(src, "examples", name))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// exampleDropins lists the documented drop-ins shipped in systemd/examples.
func exampleDropins(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(repoRoot(t), "systemd", "examples", "*.conf"))
	if err != nil || len(m) == 0 {
		t.Fatalf("no drop-ins in systemd/examples: %v", err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

// TestDeployUnitsVerify runs systemd-analyze verify on the shipped units,
// alone and with each documented drop-in; any output at all is a failure.
func TestDeployUnitsVerify(t *testing.T) {
	sa := needTool(t, "systemd-analyze")
	cases := [][]string{nil}
	for _, d := range exampleDropins(t) {
		cases = append(cases, []string{d})
	}
	for _, dropins := range cases {
		name := "shipped"
		if len(dropins) > 0 {
			name = dropins[0]
		}
		t.Run(name, func(t *testing.T) {
			dir := unitDir(t, dropins...)
			out, code := runCmd(t, time.Minute, nil, sa, "verify", "--man=no",
				filepath.Join(dir, "rsync-ssl.socket"), filepath.Join(dir, "rsync-ssl@.service"))
			if code != 0 || strings.TrimSpace(out) != "" {
				t.Fatalf("systemd-analyze verify (exit %d) is not clean:\n%s", code, out)
			}
		})
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// securityScore returns systemd-analyze's offline exposure score of the
// service in dir (with whatever drop-ins sit beside it).
func securityScore(t *testing.T, sa, dir string) float64 {
	t.Helper()
	out, code := runCmd(t, time.Minute, nil, sa, "security", "--offline=true", "--no-pager",
		filepath.Join(dir, "rsync-ssl@.service"))
	m := exposureRE.FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("systemd-analyze security (exit %d) gave no score:\n%s", code, out)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestDeployUnitsSecurity holds the shipped service, and the service with
// each documented drop-in, to an exposure score of at most 2.0.
func TestDeployUnitsSecurity(t *testing.T) {
	sa := needTool(t, "systemd-analyze")
	const limit = 2.0
	score := securityScore(t, sa, unitDir(t))
	t.Logf("rsync-ssl@.service: exposure %.1f", score)
	if score > limit {
		t.Errorf("rsync-ssl@.service: exposure %.1f, want <= %.1f", score, limit)
	}
	for _, d := range exampleDropins(t) {
		s := securityScore(t, sa, unitDir(t, d))
		t.Logf("rsync-ssl@.service + %s: exposure %.1f", d, s)
		if s > limit {
			t.Errorf("rsync-ssl@.service + %s: exposure %.1f, want <= %.1f", d, s, limit)
		}
	}
}

// unitSettings parses a unit file into key -> values (in order).
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok {
			m[strings.TrimSpace(k)] = append(m[strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return m
}

// TestDeployUnitsSettings pins the settings the design depends on: port 874
// with Accept=yes, connection limits, systemd's 4096 backlog (rsyncd's own
// backlog of 5 drops simultaneous connects), the key as a credential, and a
// sandbox that still lets rsync and the shim use a loopback TCP pair.
func TestDeployUnitsSettings(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "systemd")
	sock := unitSettings(t, filepath.Join(dir, "rsync-ssl.socket"))
	want := map[string]string{"ListenStream": "874", "Accept": "yes"}
	for k, v := range want {
		if got := sock[k]; len(got) != 1 || got[0] != v {
			t.Errorf("rsync-ssl.socket: %s=%v, want %s", k, got, v)
		}
	}
	for _, k := range []string{"MaxConnections", "MaxConnectionsPerSource"} {
		if n, err := strconv.Atoi(strings.Join(sock[k], "")); err != nil || n <= 0 {
			t.Errorf("rsync-ssl.socket: %s=%v, want a positive limit", k, sock[k])
		}
	}
	if b := sock["Backlog"]; len(b) > 0 {
		if n, err := strconv.Atoi(b[len(b)-1]); err != nil || n < 4096 {
			t.Errorf("rsync-ssl.socket: Backlog=%v, want systemd's default (4096) or more", b)
		}
	}

	svc := unitSettings(t, filepath.Join(dir, "rsync-ssl@.service"))
	one := func(k, v string) {
		if got := svc[k]; len(got) == 0 || got[len(got)-1] != v {
			t.Errorf("rsync-ssl@.service: %s=%v, want %s", k, got, v)
		}
	}
	one("StandardInput", "socket")
	one("StandardError", "journal")
	one("PrivateNetwork", "yes")
	one("EnvironmentFile", "-/etc/default/rsync-ssl")
	fams := strings.Fields(strings.Join(svc["RestrictAddressFamilies"], " "))
	for _, f := range []string{"AF_INET", "AF_INET6", "AF_UNIX"} {
		if !strings.Contains(" "+strings.Join(fams, " ")+" ", " "+f+" ") {
			t.Errorf("rsync-ssl@.service: RestrictAddressFamilies=%v lacks %s (the socket pair needs it)", fams, f)
		}
	}
	exec := strings.Join(svc["ExecStart"], " ")
	if !strings.Contains(exec, "--key %d/") || !strings.Contains(strings.Join(svc["LoadCredential"], " "), "key.pem:") {
		t.Errorf("rsync-ssl@.service: the key must come from LoadCredential= via %%d; ExecStart=%s", exec)
	}
}
