package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestServeRsyncdConfChecked: the accept loop has rsync read its
// rsyncd.conf before the first client and refuses to start, naming the
// file and in rsync's words, when rsync refuses it; its start line names
// the file. A per-connection serve, which does not pay for that check,
// carries rsync's reason in the summary instead.
func TestServeRsyncdConfChecked(t *testing.T) {
	rsync := rsyncPath(t)
	p := newPKI(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.conf")
	writeFile(t, bad, "use chroot = no\n[data\npath = "+dir+"\n", 0o644)
	base := []string{"serve", "--cert", p.Cert, "--key", p.Key, "--rsync", rsync}
	listen := func() []string {
		return []string{"--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "127.0.0.1")))}
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"syntax error", append([]string{"--rsyncd-conf", bad}, listen()...),
			`serve: rsyncd.conf ` + regexp.QuoteMeta(bad) + `: rsync refuses it: .*Badly formed line in config file: data`},
	}
	if _, err := os.Stat("/etc/rsyncd.conf"); os.IsNotExist(err) {
		cases = append(cases, struct {
			name string
			args []string
			want string
		}{"default missing", listen(), `serve: rsyncd.conf /etc/rsyncd.conf: rsync refuses it: .*unable to open config file "/etc/rsyncd.conf"`})
	} else {
		t.Log("/etc/rsyncd.conf exists here: the missing-default case is not run")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runCmd(t, 30*time.Second, nil, shimBin, append(base, tc.args...)...)
			if code != 1 || !regexp.MustCompile(tc.want).MatchString(out) {
				t.Errorf("exit %d (want 1), output does not match %q:\n%s", code, tc.want, out)
			}
			if strings.Contains(out, "serving ") {
				t.Errorf("serve started:\n%s", out)
			}
		})
	}

	t.Run("start line", func(t *testing.T) {
		rd := newRsyncd(t)
		s := startMode(t, "listen", serveArgs(p, rd, rsync))
		want := regexp.MustCompile(`serving 127\.0\.0\.1:\d+ from --listen, version \S+; rsync \S+ \([^)]*\), rsyncd\.conf ` + regexp.QuoteMeta(rd.Conf) + ` \(rsync read it in \d+ms\)`)
		mustWaitFor(t, 5*time.Second, "the start line", func() bool { return want.MatchString(s.Log.String()) })
	})

	t.Run("per connection", func(t *testing.T) {
		res := serveOne(t, "127.0.0.1", append(append([]string{}, base...), "--rsyncd-conf", bad), func(t *testing.T, addr string) string {
			out, _ := rsyncSSL(t, &server{Host: "localhost", Port: portOf(t, addr)}, p, "openssl", "rsync://localhost/")
			return out
		})
		want := `start rsync for 127.0.0.1:\d+: rsync exited with status 1 before its greeting: rsyncd.conf ` + regexp.QuoteMeta(bad) + `: rsync refuses it: .*Badly formed line`
		if !regexp.MustCompile(want).MatchString(res.log) {
			t.Errorf("summary does not match %q:\n%s", want, res.log)
		}
	})
}

func portOf(t *testing.T, addr string) int {
	_, ps, _ := net.SplitHostPort(addr)
	n, err := strconv.Atoi(ps)
	if err != nil {
		t.Error(fmt.Errorf("port of %q: %w", addr, err))
	}
	return n
}
