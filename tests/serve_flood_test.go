package tests

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestServeFlood: with serve's own defaults, one address (127.0.0.2) holds
// 600 silent TCP connections (each one the server closes is opened again)
// and another (127.0.0.4) drips 30 TLS ClientHellos one byte a second. A
// client from a third address (127.0.0.3) must still get 20 module listings
// in a row, p95 within 1.5 s; a client from the flooding address gets its
// listing or rsync's max-connections line within the handshake timeout plus
// 3 s; serve's peak RSS stays within 128 MiB.
func TestServeFlood(t *testing.T) {
	slowTier(t, "flood")
	pki := newPKI(t)
	rd := newRsyncd(t)
	makeTree(t, rd.Data, 0, 3)
	socat := needTool(t, "socat")
	rsync := rsyncPath(t)
	s := startServeListening(t, serveArgs(pki, rd, rsync))
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	if lim := procLimit(t, s.Pid, "Max open files"); lim < 2048 {
		t.Fatalf("serve may open only %d files; the flood needs more", lim)
	}

	ctx, stop := context.WithTimeout(context.Background(), 2*time.Minute)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()

	var dials, held atomic.Int64
	for i := 0; i < 600; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			holdSilent(ctx, addr, "127.0.0.2", &dials, &held)
		}()
	}
	hello := clientHelloBytes(t)
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			drip(ctx, addr, "127.0.0.4", hello)
		}()
	}
	mustWaitFor(t, 30*time.Second, "600 silent connections from 127.0.0.2", func() bool { return dials.Load() >= 600 })
	time.Sleep(time.Second)

	list := func(src string) (string, time.Duration, error) {
		prog := fmt.Sprintf("%s - OPENSSL:%s,bind=%s,cafile=%s,commonname=localhost", socat, addr, src, pki.CA)
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, rsync, "rsync://localhost/")
		cmd.Env = append(os.Environ(), "RSYNC_CONNECT_PROG="+prog)
		cmd.WaitDelay = 2 * time.Second
		out, err := cmd.CombinedOutput()
		return string(out), time.Since(start), err
	}

	var took []time.Duration
	for i := 0; i < 20; i++ {
		out, d, err := list("127.0.0.3")
		if err != nil || !strings.Contains(out, "data") {
			t.Fatalf("listing %d from 127.0.0.3 failed after %v (%v):\n%s\nserver log (tail):\n%s", i+1, d.Round(time.Millisecond), err, out, lastLines(s.Log.String(), 30))
		}
		took = append(took, d)
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	p50, p95 := took[len(took)/2], took[(len(took)*95+99)/100-1]

	const handshakeTimeout = 10 * time.Second // serve's default
	out, d, err := list("127.0.0.2")
	floodSource := "listing"
	switch {
	case strings.Contains(out, "@ERROR: max connections"):
		floodSource = "@ERROR max connections"
	case err != nil || !strings.Contains(out, "data"):
		t.Errorf("client from the flooding address got neither its listing nor rsync's max-connections line after %v (%v):\n%s", d.Round(time.Millisecond), err, out)
	}
	if d > handshakeTimeout+3*time.Second {
		t.Errorf("client from the flooding address took %v, want within %v", d.Round(time.Millisecond), handshakeTimeout+3*time.Second)
	}
	hwm := procStatusKiB(t, s.Pid, "VmHWM")
	t.Logf("127.0.0.3 listings: p50 %v p95 %v; 127.0.0.2 client: %s in %v; silent dials %d (held now %d); serve VmHWM %.1f MiB",
		p50.Round(time.Millisecond), p95.Round(time.Millisecond), floodSource, d.Round(time.Millisecond), dials.Load(), held.Load(), float64(hwm)/1024)
	if p95 > 1500*time.Millisecond {
		t.Errorf("listing p95 %v from 127.0.0.3 under the flood, want at most 1.5 s (p50 %v)", p95, p50)
	}
	if hwm > 128*1024 {
		t.Errorf("serve's peak RSS %d KiB, want at most 128 MiB", hwm)
	}
	stop()
	wg.Wait()
	outcome := fmt.Sprintf("20 listings from a third address: p50 %v, p95 %v; the flooding address's own client: %s in %v; serve VmHWM %.1f MiB",
		p50.Round(time.Millisecond), p95.Round(time.Millisecond), floodSource, d.Round(100*time.Millisecond), float64(hwm)/1024)
	record(t, "Load", "flood-before-handshake", "600 silent connections from one address (reopened when closed), 30 ClientHellos dripped 1 byte/s from another; serve's defaults", outcome, 2*time.Minute, time.Duration(0))
	figure("flood before the handshake (serve --listen, its defaults): %s", outcome)
}

// holdSilent keeps one silent connection from src open, opening another
// whenever the server closes it, until ctx ends.
func holdSilent(ctx context.Context, addr, src string, dials, held *atomic.Int64) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		dials.Add(1)
		held.Add(1)
		go func() { <-ctx.Done(); c.Close() }()
		c.Read(make([]byte, 1)) // returns when the server closes it (or ctx does)
		held.Add(-1)
		c.Close()
		// An attacker elsewhere has CPUs of its own; on loopback it
		// shares ours, so it reconnects at a bounded pace (up to 2,400
		// connects a second from the 600).
		sleepCtx(ctx, 250*time.Millisecond)
	}
}

// drip sends hello one byte a second from src until ctx ends or the
// server closes the connection.
func drip(ctx context.Context, addr, src string, hello []byte) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return
	}
	defer c.Close()
	for _, b := range hello {
		if _, err := c.Write([]byte{b}); err != nil {
			return
		}
		if !sleepCtx(ctx, time.Second) {
			return
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// clientHelloBytes is the first flight of a Go TLS client.
func clientHelloBytes(t *testing.T) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, &tls.Config{ServerName: "localhost"}).Handshake()
	buf := make([]byte, 4096)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := b.Read(buf)
	if err != nil || n < 5 || buf[0] != 0x16 {
		t.Fatalf("capturing a ClientHello: %d bytes, %v", n, err)
	}
	return buf[:n]
}

// procStatusKiB reads a "kB" field (VmHWM, VmRSS) of /proc/PID/status.
func procStatusKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field+":" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// procLimit reads the soft limit named in /proc/PID/limits.
func procLimit(t *testing.T, pid int, name string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name) {
			f := strings.Fields(strings.TrimPrefix(l, name))
			if len(f) > 0 {
				if f[0] == "unlimited" {
					return 1 << 30
				}
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	t.Fatalf("no %q in /proc/%d/limits", name, pid)
	return 0
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
