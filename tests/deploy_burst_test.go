package tests

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testIsolatedBurst: 1,000 connects within 2 s to rsync-ssl-isolated.socket
// (systemd's default trigger limit, 200 per 2 s, would put it into the
// failed state, deaf until an admin restarts it) leave the socket active,
// and a listing works afterwards.
func testIsolatedBurst(t *testing.T, c *container, env []string, rsyncSSL string) {
	c.must(t, "systemctl", "enable", "--now", "rsync-ssl-isolated.socket")
	t.Cleanup(func() {
		c.exec(t, time.Minute, "systemctl", "disable", "--now", "rsync-ssl-isolated.socket")
		c.exec(t, time.Minute, "systemctl", "start", "rsync-ssl.socket")
	})
	n, took := connectBurst(t, c.netns, "127.0.0.1:874", 1000, 2*time.Second)
	if n < 1000 {
		t.Fatalf("only %d connects in %v; the test needs 1,000 within 2 s", n, took)
	}
	t.Logf("%d connects in %v", n, took.Round(time.Millisecond))
	time.Sleep(time.Second)
	if st, _ := c.exec(t, time.Minute, "systemctl", "is-active", "rsync-ssl-isolated.socket"); strings.TrimSpace(st) != "active" {
		status, _ := c.exec(t, time.Minute, "systemctl", "status", "--no-pager", "rsync-ssl-isolated.socket")
		t.Fatalf("rsync-ssl-isolated.socket is %q after the burst:\n%s", strings.TrimSpace(st), status)
	}
	// The burst's instances end at once (their clients are gone) or at
	// serve's first-byte bound; until then MaxConnections= may refuse a
	// client. Bounded retries.
	var out string
	start := time.Now()
	for end := time.Now().Add(90 * time.Second); time.Now().Before(end); time.Sleep(2 * time.Second) {
		var code int
		if out, code = c.client(t, env, rsyncSSL, "rsync://localhost/"); code == 0 && strings.Contains(out, "data") {
			t.Logf("listing after the burst: served %v after it", time.Since(start).Round(time.Second))
			return
		}
	}
	t.Fatalf("no listing through rsync-ssl-isolated.socket after the burst:\n%s", out)
}

// connectBurst makes up to n TCP connects to addr from inside the network
// namespace netns within d, holding them until the end, and returns how many
// succeeded and how long they took. It runs this test binary again there
// (ip netns exec), as TestConnectBurstHelper.
func connectBurst(t *testing.T, netns, addr string, n int, d time.Duration) (int, time.Duration) {
	t.Helper()
	out, code := runCmd(t, time.Minute, []string{fmt.Sprintf("SHIM_BURST=%s,%d,%s", addr, n, d)},
		"ip", "netns", "exec", netns, os.Args[0], "-test.run=^TestConnectBurstHelper$", "-test.count=1", "-test.v")
	m := burstRE.FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("the burst helper (exit %d):\n%s", code, out)
	}
	got, _ := strconv.Atoi(m[1])
	took, _ := time.ParseDuration(m[2])
	return got, took
}

var burstRE = regexp.MustCompile(`burst: (\d+) connects in (\S+)`)

// TestConnectBurstHelper is connectBurst's other half, run in the
// namespace; without SHIM_BURST it does nothing.
func TestConnectBurstHelper(t *testing.T) {
	spec := os.Getenv("SHIM_BURST")
	if spec == "" {
		t.Skip("a helper of connectBurst")
	}
	f := strings.Split(spec, ",")
	n, _ := strconv.Atoi(f[1])
	d, _ := time.ParseDuration(f[2])
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	var err error
	for len(conns) < n && time.Since(start) < d {
		var c net.Conn
		// On loopback a connect completes at once while the listener's
		// backlog has room (4096 under systemd).
		if c, err = net.DialTimeout("tcp", f[0], time.Second); err != nil {
			break
		}
		conns = append(conns, c)
	}
	fmt.Printf("burst: %d connects in %v (last error: %v)\n", len(conns), time.Since(start), err)
}
