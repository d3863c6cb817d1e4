package tests

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestServeSessionStartAndStatus: every session whose rsync starts has a
// line of its own at that moment (the summary's known part and rsync's
// PID); the accept loop tells its service manager (NOTIFY_SOCKET) what
// runs now; and docs/server.md's sample lines have the fields, in order, of
// the real ones.
func TestServeSessionStartAndStatus(t *testing.T) {
	p := newPKI(t)
	rd := newRsyncd(t)
	notify := newNotifySocket(t)
	port := freePort(t, "127.0.0.1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(shimBin, append(serveArgs(p, rd, rsyncPath(t)), "--listen", addr, "--datapath", "bridge")...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.path)
	log := startBg(t, cmd)
	waitPortOr(t, addr, 10*time.Second, log)
	// waitPortOr's probe connected and closed: a connection that never
	// reached rsync.
	notify.wait(t, "STATUS=0 in flight, 0 served since start, 1 refused; certificate expires "+time.Now().Add(24*time.Hour).UTC().Format("2006-01-02"))

	// A client that finished its handshake and has not yet named a
	// module: its rsync runs, and says so.
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(p.CA)
	pool.AppendCertsFromPEM(b)
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	started := regexp.MustCompile(`rsync-ssl-shim\[\d+\]: 127\.0\.0\.1:(\d+): started sni=localhost tls=TLSv1\.3 cipher=TLS_\w+ client=- datapath=bridge pair=tcp rsync_pid=(\d+)\n`)
	mustWaitFor(t, 10*time.Second, "the session's start line", func() bool { return started.MatchString(log.String()) })
	m := started.FindStringSubmatch(log.String())
	if m[1] != strconv.Itoa(c.LocalAddr().(*net.TCPAddr).Port) {
		t.Errorf("start line names port %s, the client is %s", m[1], c.LocalAddr())
	}
	pid, _ := strconv.Atoi(m[2])
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err != nil || strings.TrimSpace(string(comm)) != "rsync" {
		t.Errorf("rsync_pid=%d is not a running rsync (%q, %v)", pid, comm, err)
	}
	notify.wait(t, "STATUS=1 in flight, 0 served since start, 1 refused;")
	c.Close()
	notify.wait(t, "STATUS=0 in flight, 1 served since start, 1 refused;")

	// A client refused in the handshake never starts rsync.
	if raw, err := net.Dial("tcp", addr); err == nil {
		raw.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		raw.Close()
	}
	notify.wait(t, "STATUS=0 in flight, 1 served since start, 2 refused;")

	// docs/server.md shows the lines as they are.
	out, code := rsyncSSL(t, &server{Host: "localhost", Port: port}, p, "openssl", "rsync://localhost/")
	if code != 0 {
		t.Fatalf("listing (exit %d):\n%s", code, out)
	}
	summary := regexp.MustCompile(`rsync-ssl-shim\[\d+\]: \S+: served .*`)
	mustWaitFor(t, 10*time.Second, "a summary", func() bool { return summary.MatchString(log.String()) })
	doc, err := os.ReadFile(filepath.Join("..", "docs", "server.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"started", "served"} {
		re := regexp.MustCompile(`rsync-ssl-shim\[\d+\]: \S+: ` + kind + ` .*`)
		real, sample := re.FindString(log.String()), re.FindString(string(doc))
		if sample == "" {
			t.Errorf("docs/server.md has no sample %q line; the real one is:\n%s", kind, real)
		} else if fieldNames(sample) != fieldNames(real) {
			t.Errorf("docs/server.md's %q line has the fields %s, the real one %s:\n%s\n%s", kind, fieldNames(sample), fieldNames(real), sample, real)
		}
	}
}

// fieldNames is the key=value keys of a log line, in order.
func fieldNames(line string) string {
	var keys []string
	for _, m := range regexp.MustCompile(`(\w+)=`).FindAllStringSubmatch(line, -1) {
		keys = append(keys, m[1])
	}
	return strings.Join(keys, " ")
}

// notifySocket is a service manager's notification socket, as far as
// sd_notify goes: it keeps every datagram.
type notifySocket struct {
	path string
	mu   sync.Mutex
	got  []string
}

func newNotifySocket(t *testing.T) *notifySocket {
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, _, err := c.ReadFromUnix(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.got = append(n.got, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	return n
}

// wait waits for the newest message to start with prefix.
func (n *notifySocket) wait(t *testing.T, prefix string) {
	t.Helper()
	last := func() string {
		n.mu.Lock()
		defer n.mu.Unlock()
		if len(n.got) == 0 {
			return ""
		}
		return n.got[len(n.got)-1]
	}
	if !waitFor(func() bool { return strings.HasPrefix(last(), prefix) }, 10*time.Second) {
		t.Fatalf("no sd_notify message %q; the last was %q", prefix, last())
	}
}
